"""`clipig bench --quality`: do the pictures show their prompts? A referee that did not make them judges.

Every prompt of PROMPTS (captions of the mini world) is rendered with the critic (`mini`) under each row of
ROWS (a reference configuration of benchmarks/quality/, with a parameterization or an ensemble over it); the
final image, as its PNG would hold it, is scored by the referee (`mini-referee`, a model trained on its own
seed) against every caption of the prompt's form (`world.space`: 280 captions for `a red circle on a blue
background`). Per row:

- top-1: the prompt ranks first among all captions of its form (ties count against it); mean rank;
- per attribute: the prompt beats every caption that differs from it in that attribute only;
- outline: read from the pixels without a model (`reading.shapes_shown`), the largest region of each thing's
  colour has the outline of its shape;
- the critic's similarity to the prompt beside the referee's, and the referee's similarity for real scenes
  of the prompt (drawn by the world): a critic far above the referee means the picture fools the critic
  more than it shows the prompt.

    clipig bench --quality [--quick] [--model mini] [--referee mini-referee] [--epochs N] [ROW ... | all]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..critic.views import quantize
from ..files.output import to_pil
from ..mini import reading, world

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "quality"
# the rows of the table: name -> (reference configuration in CONFIG_DIR, YAML merged over it)
ROWS = {
    "plain": ("plain", ""),
    "walkthrough": ("walkthrough", ""),
    "noise-blur": ("noise-blur", ""),
    "fft": ("walkthrough", "parameterization: fft"),
    "fft-decorrelated": ("walkthrough", "parameterization: {type: fft, decorrelate: true}"),
    "pyramid": ("walkthrough", "parameterization: pyramid"),
    "ensemble": ("walkthrough", "model: [mini, mini-2]"),
    # the pyramid at the critic's input size (64) for 60% of the epochs, then at twice that
    "coarse-to-fine": ("walkthrough", "parameterization: pyramid\nresolution: 64 if t < .6 else 128"),
    # the pyramid from 8x8 to 16 to 32 pixels, below the critic's input size (the first image's schedule)
    "coarse-32": ("walkthrough", "parameterization: pyramid\nresolution: 8 if t < .15 else 16 if t < .4 else 32"),
    # the first image's experiment: 16 then 32 pixels, 24 views turned by any angle, scaled and shifted
    "all-angles": ("all-angles", ""),
}
DEFAULT_ROWS = ("plain", "walkthrough", "noise-blur")
PROMPTS = (
    "a red circle on a blue background", "a yellow star on a blue background",
    "a green square on a white background", "a white triangle on a black background",
    "a blue cross on a yellow background", "an orange circle on a purple background",
    "a purple star on a green background", "a black square on an orange background",
    "a red triangle on a yellow background", "a white cross on a red background",
    "a green circle on a black background", "a yellow square on a purple background",
    "a big blue star on a white background", "a small red square on a green background",
    "a yellow circle in the top left corner on a blue background", "a white star on the right on a black background",
    "a red cross at the bottom on a white background", "two green circles on a red background",
    "three white squares on a blue background", "a big striped orange circle on a blue background",
    "a red circle and a blue square on a white background", "a yellow star and a green triangle on a black background",
    "a white cross and an orange circle on a purple background", "a blue triangle and a red star on a yellow background",
)
ATTRIBUTES = ("shape", "colour", "background", "size", "place", "count", "texture")
QUICK_EPOCHS = 0.4  # share of each configuration's epochs in --quick mode
REAL_SCENES = 4


def attribute(slot: str) -> str:
    return slot.rstrip("2")  # the second thing of a pair counts with the first


def critic_similarity(critic, image: torch.Tensor, text: str) -> float:
    """The rendering critic's similarity of an image to a text (an ensemble: the weighted mean of its models')."""
    return sum(w * float(c.similarity(c.encode_image(image[None]), c.encode_text([text]))[0, 0])
               for c, (_, w) in zip(critic.critics, critic.select()))


def judge(referee, critic, image: torch.Tensor, caption: world.Caption) -> dict:
    """The referee's verdict on one image [3, H, W] in [0, 1] for its prompt."""
    captions = world.space(caption)
    texts = [c.text() for c in captions]
    sims = referee.similarity(referee.encode_image(image[None]), referee.encode_text(texts))[0]
    by_text = dict(zip(texts, sims.tolist()))
    own = by_text[caption.text()]
    result = {"rank": sum(v >= own for v in by_text.values()),  # ties count against the prompt
              "of": len(texts), "attributes": {},
              "referee": own, "critic": critic_similarity(critic, image, caption.text()),
              "outline": reading.shapes_shown(np.asarray(to_pil(image)), caption)}
    for slot in caption.slots():
        rivals = [by_text[v.text()] for v in world.variants(caption, slot)]
        result["attributes"].setdefault(attribute(slot), []).append(all(own > r for r in rivals))
    return result


def real_similarity(referee, caption: world.Caption, seed: int) -> float:
    """The referee's mean similarity of the prompt to scenes the world draws for it."""
    from ..mini.evaluate import to_tensor
    rng = np.random.default_rng(seed)
    images = torch.stack([to_tensor(world.render(world.scene_for(caption, rng), referee.input_size))
                          for _ in range(REAL_SCENES)])
    return float(referee.similarity(referee.encode_image(images), referee.encode_text([caption.text()])).mean())


def experiment(row: str, prompt: str, args, seed: int):
    """The validated experiment of a row for one prompt: the reference configuration, the row's YAML, then
    the prompt, the seed, the CPU, `--model` (unless the row names its models) and the epochs over it."""
    import json

    from ..config.loader import load
    base, extra = ROWS[row]
    overrides = [f"targets[0].features[0].text={json.dumps(prompt)}", "device=cpu", "verbose=0", f"seed={seed}"]
    overrides += [] if "model:" in extra else [f"model={json.dumps(args.model)}"]
    overrides += args.overrides
    config = load([CONFIG_DIR / f"{base}.yaml"], texts=[extra] if extra else [], overrides=overrides)
    if not (args.epochs or args.quick):
        return config
    epochs = args.epochs or max(1, round(config.epochs() * QUICK_EPOCHS))
    return load([CONFIG_DIR / f"{base}.yaml"], texts=[extra] if extra else [], overrides=[*overrides, f"epochs={epochs}"])


def render(config) -> tuple[torch.Tensor, object]:
    """The final image of an experiment, quantized to 8 bits like its PNG, and the critic that made it."""
    from ..run.engine import open_run
    engine = open_run(config)
    engine.run()
    return quantize(engine.image()), engine.critic


def run_row(row: str, referee, args, save: Path | None) -> dict:
    start, verdicts = time.monotonic(), []
    for i, prompt in enumerate(PROMPTS):
        image, critic = render(experiment(row, prompt, args, i))
        if save:
            to_pil(image).save(save / f"{row}-{i:02d}.png")
        caption = world.parse(prompt)
        verdict = judge(referee, critic, image, caption)
        verdict["real"] = real_similarity(referee, caption, i)
        verdicts.append(verdict)
    return {"name": row, "seconds": time.monotonic() - start, "verdicts": verdicts}


def summary(result: dict) -> list[str]:
    v = result["verdicts"]
    top1 = sum(x["rank"] == 1 for x in v) / len(v)
    cells = [result["name"], f"{top1 * 100:.0f}%", f"{statistics.mean(x['rank'] for x in v):.1f}"]
    for name in ATTRIBUTES:
        tests = [ok for x in v for ok in x["attributes"].get(name, [])]
        cells.append(f"{sum(tests) / len(tests) * 100:.0f}%" if tests else "-")
    outlines = [x["outline"] for x in v if x.get("outline") is not None]
    cells.append(f"{sum(outlines) / len(outlines) * 100:.0f}%" if outlines else "-")
    cells += [f"{statistics.mean(x['critic'] for x in v):.1f}", f"{statistics.mean(x['referee'] for x in v):.1f}",
              f"{statistics.mean(x['real'] for x in v):.1f}", f"{result['seconds']:.0f}"]
    return cells


def report(results: list[dict], args, info: dict, table) -> str:
    headers = ["configuration", "top-1", "mean rank", *ATTRIBUTES, "outline", "critic sim", "referee sim",
               "referee real", "seconds"]
    out = [f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['threads']}",
           "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
           f"date: {info['date']}",
           f"mode: {'quick' if args.quick else 'full'}; critic {args.model}, referee {args.referee}; "
           f"{len(PROMPTS)} prompts per configuration, each ranked among all captions of its form", "",
           table(headers, [summary(r) for r in results])]
    best = max(results, key=lambda r: sum(x["rank"] == 1 for x in r["verdicts"]))
    top1 = sum(x["rank"] == 1 for x in best["verdicts"]) / len(best["verdicts"])
    out += ["", f"referee top-1: {top1 * 100:.0f}% ({best['name']})"]
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    from ..run import threads
    p = argparse.ArgumentParser(prog="clipig bench --quality", description=(
        "Render the quality prompts with the critic under the reference configurations and let the referee "
        "rank every final image among all captions of its prompt's form."))
    p.add_argument("rows", nargs="*", metavar="ROW", help=(
        f"rows of the table (default: {', '.join(DEFAULT_ROWS)}; also: "
        f"{', '.join(r for r in ROWS if r not in DEFAULT_ROWS)}; `all`: every row)"))
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_EPOCHS * 100:.0f}%% of each configuration's epochs (a few minutes)")
    p.add_argument("--model", default="mini", help="the critic that renders (default: mini)")
    p.add_argument("--referee", default="mini-referee", help="the model that judges (default: mini-referee)")
    p.add_argument("--epochs", type=int, help="epochs of every render (default: the configuration's)")
    p.add_argument("--save", metavar="DIR", help="also write the final images into DIR")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a parameter in every render, e.g. --set precision=bf16 (repeatable)")
    threads.add_option(p)
    return p


def main(argv: list[str], table, info: dict) -> int:
    """Run `clipig bench --quality ARGV`; `table` and `info` (the machine) come from clipig.bench."""
    from ..critic.models import load_critic
    from ..run import threads
    args = parser().parse_args(argv)
    threads.configure(args.threads)
    rows = list(ROWS) if args.rows == ["all"] else args.rows or list(DEFAULT_ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser().error(f"unknown row {unknown[0]!r}; the rows are {', '.join(ROWS)} (or all)")
    save = Path(args.save) if args.save else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    referee = load_critic(args.referee, "cpu")
    results = []
    for row in rows:
        print(f"  {row}: {len(PROMPTS)} prompts ...", file=sys.stderr, flush=True)
        results.append(run_row(row, referee, args, save))
    print(report(results, args, info, table))
    return 0
