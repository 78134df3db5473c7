"""Side by side: the original CLIPig and this one on the same deterministic experiments.

    CLIPIG_ORIGINAL=/path/to/original-clipig python -m clipig.bench.fidelity [NAME ...]
    CLIPIG_ORIGINAL=/path/to/original-clipig python -m clipig.bench.fidelity --record-golden

Both programs run with the same CLIP weights (open_clip ViT-B-32-quickgelu with random weights of a fixed
seed, saved to a file once) and the same start image (a generated pattern, `init.image` with `mean: 0,
std: 1`), on experiments without random transforms. For each experiment the table gives the mean and the
largest absolute difference of the two PNGs in grey levels (0-255) and the largest relative difference of the
per-epoch losses. Without $CLIPIG_ORIGINAL (as in CI) it says so and exits 0.

`--record-golden` runs the original on the small configurations of GOLDEN with the tiny random CLIP of the
tests (`random:tiny`) and writes what it computed (per view and epoch losses, feature counts, start and final
images) to tests/golden/; tests/test_fidelity.py compares this program against those numbers without the
original.

Each program runs in a worker process of its own (`--worker original|clipig`), with $FIDELITY_THREADS torch
threads (default 2; 1 is much faster on a machine busy with other work). The worker for the original gives it
a stand-in for OpenAI's `clip` package (open_clip models, see `fake_clip`); nothing of the original is copied
here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[3]  # the checkout (the golden numbers live in its tests/)
GOLDEN_DIR = ROOT / "tests" / "golden"
WORKER = [sys.executable, "-m", "clipig.bench.fidelity", "--worker"]
WEIGHTS_SEED = 1234
BASE = {"epochs": 6, "resolution": 64, "verbose": 0, "snapshot_interval": 0,
        "init": {"image": "{start}", "mean": 0, "std": 1}}
TARGET = {"features": [{"text": "a curly spoon"}]}
THREE = [{"text": "a curly spoon"}, {"text": "a red apple"}, {"text": "the sea at night"}]


def target(**kw) -> dict:
    return {**TARGET, **kw}


def experiment(*targets, **kw) -> dict:
    return {"targets": list(targets or [TARGET]), **kw}


# --- the side-by-side experiments (ViT-B/32 with random weights, 64² unless said) -------------------------

EXPERIMENTS = {
    "plain": experiment(),
    "select-all": experiment(target(features=THREE)),
    "select-best": experiment(target(features=THREE, select="best")),
    "select-worst": experiment(target(features=THREE, select="worst")),
    "select-mix": experiment(target(select="mix", features=[
        {"text": "a curly spoon", "weight": 1}, {"text": "a red apple", "weight": 2},
        {"text": "the sea at night", "weight": -0.5}])),
    "mix-l2-sgd": experiment(target(select="mix", features=[
        {"text": "a curly spoon", "loss": "l2"}, {"text": "a red apple", "weight": 3}]), optimizer="sgd"),
    "fair-best": experiment(target(features=THREE, select="best", feature_scale="fair",
                                   transforms=[{"add": 0.03}])),  # else all similarities tie at epoch 0
    "fair-sim-weight": experiment(target(feature_scale="fair", features=[
        {"text": "a curly spoon", "weight": "sim / 10"}, {"text": "a red apple", "weight": "sim / 20"}]),
        optimizer="sgd"),
    "scale-best": experiment(target(select="best", features=[
        {"text": "a curly spoon", "scale": 0.7}, {"text": "a red apple", "scale": 1.3}])),
    "loss-l1-sgd": experiment(target(features=[{"text": "a curly spoon", "loss": "l1"}]), optimizer="sgd"),
    "loss-l2-sgd": experiment(target(features=[{"text": "a curly spoon", "loss": "l2"}]), optimizer="sgd"),
    "feature-start-end": experiment(target(features=[
        {"text": "a curly spoon", "end": 2}, {"text": "a red apple", "start": 0.5},
        {"text": "the sea at night", "start": 1, "end": "60%"}])),
    "targets-batch-sgd": experiment(
        target(batch_size=3, transforms=[{"random_rotate": {"degree": "0 0"}}]),
        target(batch_size=2, features=[{"text": "a red apple"}], transforms=[{"pad": {"size": 8}}]),
        optimizer="sgd"),
    "target-weight-start-end": experiment(
        target(weight=2, end=3), target(features=[{"text": "a red apple"}], start=0.5, weight="sim / 10"),
        target(features=[{"text": "the sea"}], active=False), optimizer="sgd"),
    "opt-adam-lr": experiment(learnrate=2, learnrate_scale="1 - t"),
    "opt-sgd": experiment(optimizer="sgd"),
    "opt-rmsprob": experiment(optimizer="rmsprob"),
    "opt-adadelta": experiment(optimizer="adadelta", learnrate="0.5 + t"),
    "opt-sparse-adam": experiment(optimizer="sparse_adam"),
    "resolution-change": experiment(resolution=["32 if t < .5 else 64"] * 2, epochs=8),
    "resolution-nearest": experiment(resolution=["64 if t < .5 else 48", "40 if t < .5 else 64"],
                                     interpolation="nearest", epochs=8,
                                     init={"image": "{start}", "mean": 0, "std": 1, "resolution": 48}),
    "init-resolution": experiment(init={"image": "{start}", "mean": 0, "std": 1, "resolution": 24}),
    "init-mean-std": experiment(init={"image": "{start}", "mean": [0.2, 0.3, 0.1], "std": 0.5}),
    "init-constant": experiment(init={"mean": [0.3, 0.5, 0.7], "std": 0}),
    "postproc": experiment(postproc=[{"blur": {"kernel_size": 3}, "end": 2},
                                     {"add": 0.01, "start": "50%"}, {"mul": 1.02, "start": 0.2, "end": 0.8}]),
    "postproc-quantize": experiment(postproc=[{"quantize": 0.05, "start": 3}]),
    "transforms-pad-crop": experiment(target(transforms=[
        {"pad": {"size": [6, 3], "mode": "edge"}}, {"crop": "0.1 0.2 40 0.7"}])),
    "transforms-pad-wrap-fill": experiment(target(transforms=[
        {"pad": {"size": 5, "mode": "wrap"}}, {"pad": {"size": [2, 4], "color": [0.2, 0.5, 0.9]}}])),
    "transforms-repeat-center-crop": experiment(target(transforms=[{"repeat": 2}, {"center_crop": 100}])),
    "transforms-resize-shift": experiment(target(transforms=[{"resize": [48, 80]}, {"shift": "0.3 -7"}])),
    "transforms-colour": experiment(target(transforms=[{"mul": [1.2, 0.9, 1]}, {"add": -0.1}, {"mean": 0.4}])),
    "transforms-out-of-range": experiment(target(transforms=[{"mul": 1.6}, {"add": -0.5}, {"mean": 0.5},
                                                             {"pad": {"size": 4, "color": 1.5}}])),
    "transforms-mul-fifth": experiment(target(transforms=[{"mul": 0.2}]), epochs=10),
    "transforms-contrast-saturation": experiment(target(transforms=[{"contrast": 1.7}, {"saturation": 0.3}])),
    "transforms-quantize": experiment(target(transforms=[{"quantize": 0.1}, {"add": 0.01}])),
    "transforms-border-blur-clamp": experiment(target(transforms=[
        {"border": {"size": 3, "color": 0.8}}, {"blur": {"kernel_size": 5}}, {"clamp": "0.1 0.9"}])),
    "transforms-rotate": experiment(target(transforms=[{"rotate": {"degree": 20, "center": "0.4 0.55"}}])),
    "transforms-random-fixed": experiment(target(batch_size=2, transforms=[
        {"random_shift": "0.25 0.25"}, {"random_rotate": {"degree": "10 10", "center": "0.5 0.5"}}])),
    "constraints-blur-border": experiment(target(constraints=[
        {"blur": {"kernel_size": 7, "weight": 0.5}}, {"border": {"size": 2, "color": 0.1, "weight": 3}}]),
        optimizer="sgd"),
    "constraints-std-normalize": experiment(target(constraints=[
        {"std": {"below": 0.05, "weight": 5}}, {"normalize": {"min": 0.1, "max": 0.8}}]), optimizer="sgd"),
    "constraints-contrast-edge": experiment(target(constraints=[
        {"contrast": {"above": 0.9}}, {"edge_mean": {"below": 0.0}}]), optimizer="sgd"),
    "constraints-noise": experiment(target(constraints=[{"noise": {"std": 0.1, "weight": 10}}])),
    "constraint-mean-two-sided": experiment(target(constraints=[{"mean": {"above": 0.3, "weight": 2}}]),
                                            optimizer="sgd"),
    "constraint-only-target": experiment(
        target(), {"constraints": [{"saturation": {"below": 0.0, "weight": 10}}], "batch_size": 3}),
    "constraints-sim-weight": experiment(target(constraints=[
        {"saturation": {"below": 0.01, "weight": "sim / 10"}}, {"std": {"below": 0.01, "weight": "1 + t"}}]),
        optimizer="sgd"),
    "entry-several-expressions": experiment(target(transforms=[
        {"center_crop": "width*3/4"}, {"mul": "1-t/4", "add": ["0.05 * ti"]}])),  # the original splits at spaces
    "learnrate-expressions": experiment(learnrate="0.5 + width / 128", learnrate_scale="ti2"),
    "time-step-weight": experiment(target(features=[
        {"text": "a curly spoon", "weight": "ts(0.5, 0)"}, {"text": "a red apple", "weight": "ts(0.2, 0.6)"}],
        transforms=[{"add": ["ts(0.2, 0.6) * 0.1"]}])),
    "walkthrough-mul-fifth": experiment(target(
        transforms=[{"repeat": 3}, {"center_crop": 100}, {"mul": "1./5."}],
        constraints=[{"blur": {"kernel_size": 11}}, {"saturation": {"below": .01, "weight": 10.}}]),
        postproc=[{"border": {"size": 1, "color": "0.15 0.1 0.05"}}], epochs=8),
    "postproc-border-clamp": experiment(postproc=[{"border": {"size": 2, "color": "0.1 0.2 0.3"}, "start": 2},
                                                  {"clamp": "0.05 0.95"}, {"mean": 0.45, "end": "50%"}]),
}

# Deliberate departures (docs/differences.md): the experiment shows the difference, it is not a failure.
DEPARTURES = {
    "constraint-mean-two-sided": "above/below are one-sided (the original pushes towards the value)",
}

# --- the golden configurations (tiny random CLIP, tests/test_fidelity.py) ---------------------------------

GOLDEN_BASE = {**BASE, "epochs": 5, "resolution": 32}
GOLDEN = {
    "select-best": experiment(target(features=THREE, select="best", batch_size=3,
                                     transforms=[{"random_rotate": {"degree": "0 0"}}, {"add": 0.02}])),
    "select-worst": experiment(target(features=THREE, select="worst")),
    "select-mix": experiment(target(select="mix", features=[
        {"text": "a curly spoon", "loss": "l2"}, {"text": "a red apple", "weight": 2},
        {"text": "the sea at night", "weight": -0.5}])),
    "fair-best-scale": experiment(target(features=[
        {"text": "a curly spoon"}, {"text": "a red apple", "scale": 1.2}, {"text": "the sea at night"}],
        select="best", feature_scale="fair")),
    "fair-sim-weight": experiment(target(feature_scale="fair", features=[
        {"text": "a curly spoon", "weight": "sim / 10"}, {"text": "a red apple", "weight": "sim / 20",
                                                          "scale": 2}])),
    "loss-l1": experiment(target(features=[{"text": "a curly spoon", "loss": "l1"}])),
    "loss-l2": experiment(target(features=[{"text": "a curly spoon", "loss": "l2"}])),
    "targets": experiment(
        target(batch_size=2, weight=2, end=2, transforms=[{"random_rotate": {"degree": "0 0"}}]),
        target(features=[{"text": "a red apple"}], start=0.5, weight="sim / 10", batch_size=3),
        target(features=[{"text": "the sea"}], active=False),
        target(features=[{"text": "a cat", "start": 2, "end": "75%"}, {"text": "a dog", "end": 1}])),
    "opt-adam": experiment(learnrate=2, learnrate_scale="1 - t"),
    "opt-sgd": experiment(optimizer="sgd", learnrate_scale="1 - t / 2"),
    "opt-rmsprob": experiment(optimizer="rmsprob"),
    "opt-adadelta": experiment(optimizer="adadelta", learnrate=0.5),
    "opt-sparse-adam": experiment(optimizer="sparse_adam"),
    "resolution": experiment(resolution=["16 if t < .5 else 32"] * 2),
    "init-image": experiment(init={"image": "{start}", "mean": [0.2, 0.3, 0.1], "std": 0.5, "resolution": 12}),
    "init-noise": experiment(init={"mean": [0.3, 0.5, 0.7], "std": [0.05, 0.1, 0.2], "resolution": 8},
                             resolution=48, epochs=1),
    "postproc": experiment(postproc=[{"add": 0.05, "start": 1, "end": 2}, {"mul": 0.9, "start": "75%"},
                                     {"blur": {"kernel_size": 3}, "end": 0.3}]),
    "transforms": experiment(target(transforms=[
        {"mul": 1.6}, {"add": -0.5}, {"mean": 0.5}, {"pad": {"size": [3, 5], "mode": "edge"}}, {"crop": "2 0.1 30 0.8"},
        {"contrast": 1.3}]), postproc=[{"quantize": 0.05, "start": 3}]),
    "constraints": experiment(target(constraints=[
        {"blur": {"kernel_size": 5}}, {"border": {"size": 2, "color": 0.1, "weight": 3}},
        {"normalize": {"min": 0.1, "max": 0.8}}, {"std": {"below": 0.05, "weight": 5}}]), optimizer="sgd"),
}


def config_data(exp: dict, base: dict, start: Path) -> dict:
    data = {**base, **exp}
    text = json.dumps(data).replace("{start}", str(start))
    return json.loads(text)


def start_image(path: Path) -> Path:
    """A deterministic 80x60 pattern: smooth colour waves and a checker, no two rows or columns alike."""
    from PIL import Image
    y, x = np.mgrid[0:60, 0:80].astype(np.float64)
    r = 0.5 + 0.35 * np.sin(x * 0.13 + y * 0.05)
    g = 0.45 + 0.3 * np.cos(y * 0.21 - x * 0.04)
    b = 0.25 + 0.5 * (((x // 9) + (y // 7)) % 2) * (x / 80)
    rgb = np.clip(np.stack([r, g, b], -1) * 255 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def vit_weights(path: Path) -> Path:
    """open_clip ViT-B-32-quickgelu with random weights of WEIGHTS_SEED, as a state dict file."""
    if not path.is_file():
        import open_clip
        import torch
        torch.manual_seed(WEIGHTS_SEED)
        model = open_clip.create_model("ViT-B-32-quickgelu")
        torch.save(model.state_dict(), path)
    return path


# --- the workers --------------------------------------------------------------------------------------------

def fake_clip(model_spec: str) -> types.ModuleType:
    """A stand-in for OpenAI's `clip` package: `load` gives an open_clip model and CLIP's preprocessing."""
    import open_clip
    import torchvision.transforms as T

    def load(name, device="cpu", jit=False):
        if model_spec == "random:tiny":
            from clipig.critic.models import random_model
            from clipig.critic.names import parse
            model = random_model(parse("random:tiny"))[0]
        else:
            arch, path = model_spec.split(":", 1)
            model = open_clip.create_model(arch, pretrained=path)
        preprocess = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                                T.ToTensor(), T.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                          (0.26862954, 0.26130258, 0.27577711))])
        return model.to(device).eval(), preprocess

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    module = types.ModuleType("clip")
    module.load, module.available_models = load, lambda: ["ViT-B/32"]
    module.tokenize = lambda texts, context_length=77, truncate=False: tokenizer(texts)
    return module


def run_original(config: Path, out: Path) -> dict:
    """One experiment through the original's own functions (as its clipig.py calls them)."""
    import torch
    from src.parameters import convert_params, load_yaml_config, set_parameter_defaults
    from src.training import ImageTraining
    torch.autograd.set_detect_anomaly(False)  # switched on by the original's import: only slower, same numbers
    parameters = convert_params(load_yaml_config(str(config)))
    set_parameter_defaults(parameters)
    parameters.update(output=str(out), device="cpu")
    trainer = ImageTraining(parameters)
    losses: dict[int, list] = {}
    record = {"start": None}
    get_loss, setup = trainer._get_target_loss, trainer.setup_targets

    def target_loss(*args):
        loss = get_loss(*args)
        losses.setdefault(trainer.epoch, []).append(float(loss))
        return loss

    def setup_targets():
        if record["start"] is None:
            record["start"] = trainer.pixel_model.forward().detach().clone()
        setup()

    trainer._get_target_loss, trainer.setup_targets = target_loss, setup_targets
    torch.manual_seed(0)
    trainer.train()
    trainer.save_image()
    stats = [{"views": t["count"], "counts": [q.count for q in t["feature_losses"]]} for t in trainer.targets]
    return {"losses": [losses.get(e, []) for e in range(parameters["epochs"])], "stats": stats,
            "start": record["start"]}


def run_clipig(config: Path, out: Path, model: str) -> dict:
    from clipig.config.loader import load
    from clipig.files.output import save_png
    from clipig.run.engine import open_run
    data = load([config], overrides=[f"model={json.dumps(model)}", "device=cpu", "seed=0",
                                     "precision=fp32"])
    losses = []
    engine = open_run(data, [lambda e: losses.append(float(e.loss)) if e.kind == "epoch" else None])
    start = engine.image()
    engine.run()
    save_png(engine.image(), out)
    stats = [{"views": t.get("views"), "counts": [f["count"] for f in t["features"]]}
             for t in engine.statistics()]
    return {"losses": losses, "stats": stats, "start": start}


def worker(program: str, model: str, directory: Path) -> None:
    import torch
    torch.set_num_threads(int(os.environ.get("FIDELITY_THREADS", "2")))
    from clipig.files.output import save_png  # before the original's folder (with its clipig.py) is on the path
    if program == "original":
        sys.modules["clip"] = fake_clip(model)
        sys.path.append(os.environ["CLIPIG_ORIGINAL"])
    for config in sorted(directory.glob("*.yaml")):
        name = config.stem
        out = directory / f"{name}.{program}.png"
        began = time.monotonic()
        try:
            result = (run_original(config, out) if program == "original" else
                      run_clipig(config, out, model))
            start = result.pop("start")
            if start is not None:
                save_png(start.float().cpu(), directory / f"{name}.{program}.start.png")
            result["seconds"] = time.monotonic() - began
        except Exception as e:  # noqa: BLE001  (a failing experiment is a row of the table, not the end)
            result = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
        (directory / f"{name}.{program}.json").write_text(json.dumps(result))
        print(f"{program}: {name} {result.get('seconds', 0):.1f}s {result.get('error', '')}", file=sys.stderr)


def run_workers(configs: dict, model: str, directory: Path, start: Path, base: dict) -> None:
    for name, exp in configs.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(config_data(exp, base, start), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for program in ("original", "clipig"):
        subprocess.run([*WORKER, program, "--model", model, "--dir", str(directory)],
                       env=env, check=True)


# --- comparing ----------------------------------------------------------------------------------------------

def grey_levels(a: Path, b: Path) -> tuple[float, int]:
    from PIL import Image
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.int16)
    if x.shape != y.shape:
        return float("inf"), 255
    diff = np.abs(x - y)
    return float(diff.mean()), int(diff.max())


def loss_difference(original: dict, ours: dict) -> float:
    """Largest relative difference of the per-epoch losses (the original's summed over its views)."""
    theirs = [sum(views) for views in original["losses"]]
    worst = 0.0
    for a, b in zip(theirs, ours["losses"]):
        worst = max(worst, abs(a - b) / max(abs(a), 1e-6))
    return worst


def table(directory: Path, names) -> tuple[str, bool]:
    rows = ["| experiment | mean diff (grey levels) | max diff | loss rel. diff | original s | clipig s | |",
            "|---|---|---|---|---|---|---|"]
    ok = True
    for name in names:
        original = json.loads((directory / f"{name}.original.json").read_text())
        ours = json.loads((directory / f"{name}.clipig.json").read_text())
        if "error" in original or "error" in ours:
            rows.append(f"| {name} | - | - | - | original: {original.get('error', 'ok')} | "
                        f"clipig: {ours.get('error', 'ok')} | |")
            ok = ok and "error" not in ours
            continue
        mean, worst = grey_levels(directory / f"{name}.original.png", directory / f"{name}.clipig.png")
        note = DEPARTURES.get(name, "")
        if mean > 1.0 and not note:
            ok, note = False, "DIFFERS"
        rows.append(f"| {name} | {mean:.3f} | {worst} | {loss_difference(original, ours):.1e} | "
                    f"{original['seconds']:.1f} | {ours['seconds']:.1f} | {note} |")
    return "\n".join(rows), ok


def record_golden(directory: Path) -> None:
    """Run the original on GOLDEN with the tiny CLIP; keep its numbers and images under tests/golden/."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    start = GOLDEN_DIR / "start.png"
    start_image(start)
    for name, exp in GOLDEN.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(config_data(exp, GOLDEN_BASE, start),
                                                               sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([*WORKER, "original", "--model", "random:tiny", "--dir",
                    str(directory)], env=env, check=True)
    golden = {}
    for name, exp in GOLDEN.items():
        result = json.loads((directory / f"{name}.original.json").read_text())
        if "error" in result:
            raise SystemExit(f"{name}: the original failed: {result['error']}")
        result.pop("seconds")
        golden[name] = {"config": config_data(exp, GOLDEN_BASE, Path("{start}")), **result}
        for suffix in ("png", "start.png"):
            (directory / f"{name}.original.{suffix}").replace(GOLDEN_DIR / f"{name}.{suffix}")
    (GOLDEN_DIR / "original.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {len(golden)} configurations to {GOLDEN_DIR}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="experiments to run (default: all)")
    p.add_argument("--record-golden", action="store_true", help="write tests/golden/ from the original")
    p.add_argument("--keep", help="folder for the configs, images and results (default: a temporary one)")
    p.add_argument("--tiny", action="store_true", help="with the tiny random CLIP of the tests: quick, coarse")
    p.add_argument("--worker", choices=("original", "clipig"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.model, Path(args.dir))
        return 0
    if not os.environ.get("CLIPIG_ORIGINAL"):
        print("$CLIPIG_ORIGINAL is not set (a checkout of the original CLIPig): nothing to compare.")
        return 0
    directory = Path(args.keep or tempfile.mkdtemp(prefix="clipig-fidelity-"))
    directory.mkdir(parents=True, exist_ok=True)
    if args.record_golden:
        record_golden(directory)
        return 0
    names = args.names or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiments: {', '.join(unknown)}; known: {', '.join(EXPERIMENTS)}")
    model = "random:tiny" if args.tiny else f"ViT-B-32-quickgelu:{vit_weights(directory / 'vit-random.pt')}"
    run_workers({n: EXPERIMENTS[n] for n in names}, model, directory, start_image(directory / "start.png"), BASE)
    text, ok = table(directory, names)
    print(text)
    print(f"\nfiles in {directory}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
