"""`clipig bench --quality`: do the pictures show their prompts? A referee that did not make them judges.

Every prompt of PROMPTS (captions of the mini world) is rendered with the critic (`mini`) under each row of
ROWS (a reference configuration of benchmarks/quality/, with a parameterization or an ensemble over it); the
final image, as its PNG would hold it, is scored by the referee (`mini-referee`, a model trained on its own
seed) against every caption of the prompt's form (`world.space`: 280 captions for `a red circle on a blue
background`). Per row:

- top-1: the prompt ranks first among all captions of its form (ties count against it); 1-word: it beats
  every caption that differs from it in one word (the first image's test); mean rank;
- per attribute: the prompt beats every caption that differs from it in that attribute only;
- outline: read from the pixels without a model (`reading.shapes_shown`), the largest region of each thing's
  colour has the outline of its shape;
- own outline: how much more the rendering critic likes the thing's outline as drawn than the outline the
  world would draw in its place, both painted clean (`own_outline_preference`; single things only): near 0
  or above, the critic does not pull the drawing towards the world's shapes;
- the critic's similarity to the prompt beside the referee's, and the referee's similarity for real scenes
  of the prompt (drawn by the world): a critic far above the referee means the picture fools the critic
  more than it shows the prompt.

Every table also has the row `drawn`: the same verdicts on scenes the world draws for each prompt (at 32, 64
and 128 pixels), the ceiling a render can reach with this referee. `--seeds N` renders every prompt with N
seeds (the rates are over all renders), `--prompts FILE` judges other captions of the world (one a line),
`--set PATH=VALUE` changes every render (e.g. `--set precision=bf16`).

    clipig bench --quality [--quick] [--seeds N] [--prompts FILE] [--set PATH=VALUE ...] [--model mini]
                           [--referee mini-referee] [--epochs N] [--save DIR] [ROW ... | all]
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
ENSEMBLE = "model: [mini, mini-2]"  # two rendering critics of the mini world
ENSEMBLE3 = "model: [mini, mini-2, mini-3]"  # all three
STARTS = "starts: {count: 4, epochs: 40}"
SMOOTH = "parameterization: {type: polygons, squash: tanh, harmonics: 8, corners: 32}"
RESIDUAL = "residual_gradient: .5"  # the skip gradient method
WAVE3 = "parameterization: {type: polygons, squash: tanh, harmonics: 8, corners: 32, lowest_wave: 3}"
DENSE = "parameterization: {type: pyramid, levels: 0, step: 1, upsample: cubic, squash: tanh}"  # DAS's pyramid
# the rows of the table: name -> (reference configuration in CONFIG_DIR, YAML merged over it)
ROWS = {
    "plain": ("plain", ""),
    "walkthrough": ("walkthrough", ""),
    "noise-blur": ("noise-blur", ""),
    "fft": ("walkthrough", "parameterization: fft"),
    "fft-decorrelated": ("walkthrough", "parameterization: {type: fft, decorrelate: true}"),
    "pyramid": ("walkthrough", "parameterization: pyramid"),
    "ensemble": ("walkthrough", ENSEMBLE),
    # the pyramid at the critic's input size (64) for 60% of the epochs, then at twice that
    "coarse-to-fine": ("walkthrough", "parameterization: pyramid\nresolution: 64 if t < .6 else 128"),
    # the pyramid from 8x8 to 16 to 32 pixels, below the critic's input size (the first image's schedule)
    "coarse-32": ("walkthrough", "parameterization: pyramid\nresolution: 8 if t < .15 else 16 if t < .4 else 32"),
    # the first image's experiment: 16 then 32 pixels, 24 views turned by any angle, scaled and shifted
    "all-angles": ("all-angles", ""),
    # the levers of issue 22 over the first image's experiment (docs/benchmarks.md, "Levers")
    "tanh": ("all-angles", "parameterization: {type: pyramid, squash: tanh}"),
    "dense-pyramid": ("all-angles", DENSE),
    "angles-ensemble": ("all-angles", ENSEMBLE),
    "dense-ensemble": ("all-angles", ENSEMBLE + "\n" + DENSE),
    "overview": ("overview", ""),
    # Direct Ascent Synthesis: every size, bicubic, tanh, grey start, SGD, 100 steps of 32 rolled views
    "das": ("das", ""),
    "das-ensemble": ("das", ENSEMBLE),
    # a drawing: three polygons over a background colour, milder views (docs/quality.md, "Drawing")
    "polygons": ("polygons", ""),
    "polygons-ensemble": ("polygons", ENSEMBLE),
    # the drawing begun from four seeds, the start with the lowest loss after 40 epochs kept (`starts`)
    "polygons-starts": ("polygons", STARTS),
    "polygons-starts-ensemble": ("polygons", ENSEMBLE + "\n" + STARTS),
    # smooth outlines: each polygon's log radius a sum of 8 waves, 32 corners evenly around (`harmonics`)
    "polygons-smooth-ensemble": ("polygons", ENSEMBLE + "\n" + SMOOTH),
    # smooth outlines, every view shifted by one random colour (docs/quality.md, "Colour jitter")
    "jitter": ("jitter", ""),
    "jitter-ensemble": ("jitter", ENSEMBLE),
    # the jitter with half the gradient through the critics' residual branches (docs/quality.md, "Residual")
    "residual": ("jitter", RESIDUAL),
    "residual-ensemble": ("jitter", ENSEMBLE + "\n" + RESIDUAL),
    # that with outlines from the third wave on: no eggs, ovals or lenses (docs/quality.md, "Outlines")
    "wave3-ensemble": ("jitter", ENSEMBLE + "\n" + RESIDUAL + "\n" + WAVE3),
    # that with a third critic (docs/quality.md, "Ensembles"): the first image's recipe
    "wave3-ensemble3": ("jitter", ENSEMBLE3 + "\n" + RESIDUAL + "\n" + WAVE3),
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
DRAWN = "drawn"  # the row of scenes the world draws for each prompt: the ceiling
DRAWN_SIZES = (32, 64, 128)
SEED_STRIDE = 1000  # seed of prompt i in its j-th render: i + SEED_STRIDE * j


def attribute(slot: str) -> str:
    return slot.rstrip("2")  # the second thing of a pair counts with the first


def critic_similarity(critic, image: torch.Tensor, text: str) -> float:
    """The rendering critic's similarity of an image to a text (an ensemble: the weighted mean of its models')."""
    return sum(w * float(c.similarity(c.encode_image(image[None]), c.encode_text([text]))[0, 0])
               for c, (_, w) in zip(critic.critics, critic.select()))


def own_outline_preference(critic, image: torch.Tensor, caption: world.Caption) -> float | None:
    """How much more the rendering critic likes the picture's own outline of the thing than the world's:
    the largest region of the thing's colour (as the reader finds it) and the outline the world would draw
    that covers it best (`reading.best_outline` at the turns the world draws, `world.TURN`), each painted
    in the named colours on the named background at the picture's size, the critic's similarity to the
    prompt for the first minus that for the second. At 0 or above, nothing in the critic's gradient pulls
    the drawing towards the world's outline: only other critics will. None unless the caption is one plain
    thing of a named colour on a named background."""
    if caption.kind != "single" or caption.texture or None in (caption.colour, caption.background):
        return None
    region = reading.thing_region(np.asarray(to_pil(image)), caption.colour)
    if region is None:
        return None
    world_mask = reading.best_outline(region, caption.shape, np.arange(-world.TURN, world.TURN + 1, 3.0))[1]
    thing, ground = (torch.tensor(world.COLOURS[c], dtype=torch.float32)[:, None, None] / 255
                     for c in (caption.colour, caption.background))
    size = image.shape[-2:]

    def painted(mask: np.ndarray) -> torch.Tensor:
        cover = torch.nn.functional.interpolate(torch.from_numpy(mask).float()[None, None], size=size,
                                                mode="area")[0]
        return quantize(ground + cover * (thing - ground))
    text = caption.text()
    return critic_similarity(critic, painted(region), text) - critic_similarity(critic, painted(world_mask), text)


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
              "outline": reading.shapes_shown(np.asarray(to_pil(image)), caption),
              "own outline": own_outline_preference(critic, image, caption)}
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
    the prompt (the text of every feature), the seed, the CPU, `--model` (unless the row or file names its models),
    `--set` and the epochs over it."""
    import json

    from ..config.loader import load, load_data
    base, extra = source(row)
    texts = [extra] if extra else []
    data = load_data([base], texts)
    targets = data["targets"]
    overrides = [f"targets[{i}].features[{j}].text={json.dumps(prompt)}"
                 for i, target in enumerate(targets) for j in range(len(target["features"]))]
    overrides += ["device=cpu", "verbose=0", f"seed={seed}"]
    overrides += [] if "model" in data else [f"model={json.dumps(args.model)}"]
    overrides += args.overrides
    config = load([base], texts=texts, overrides=overrides)
    if not (args.epochs or args.quick):
        return config
    epochs = args.epochs or max(1, round(config.epochs() * QUICK_EPOCHS))
    return load([base], texts=texts, overrides=[*overrides, f"epochs={epochs}"])


def source(row: str) -> tuple[Path, str]:
    """(configuration file, YAML merged over it) of a row: one of ROWS, or an experiment file of one's own."""
    if row in ROWS:
        base, extra = ROWS[row]
        return CONFIG_DIR / f"{base}.yaml", extra
    return Path(row), ""


def render(config) -> tuple[torch.Tensor, object]:
    """The final image of an experiment, quantized to 8 bits like its PNG, and the critic that made it."""
    from ..run.engine import open_run
    engine = open_run(config)
    engine.run()
    return quantize(engine.image()), engine.critic


def renders(prompts: list[str], seeds: int):
    """(prompt index, prompt, seed, file name suffix) of every render: each prompt with each of `seeds` seeds."""
    for j in range(seeds):
        for i, prompt in enumerate(prompts):
            yield i, prompt, i + SEED_STRIDE * j, f"{i:02d}" + (f"-s{j}" if j else "")


def run_row(row: str, referee, args, save: Path | None) -> dict:
    """The verdicts of one row on every render; `seconds` per picture."""
    start, verdicts, label = time.monotonic(), [], row if row in ROWS else Path(row).stem
    for i, prompt, seed, name in renders(args.prompt_list, args.seeds):
        image, critic = render(experiment(row, prompt, args, seed))
        if save:
            to_pil(image).save(save / f"{label}-{name}.png")
        caption = world.parse(prompt)
        verdict = judge(referee, critic, image, caption)
        verdict["real"] = real_similarity(referee, caption, i)
        verdicts.append(verdict)
    return {"name": label, "seconds": (time.monotonic() - start) / len(verdicts), "verdicts": verdicts}


def drawn_row(referee, args, save: Path | None) -> dict:
    """The verdicts on scenes the world draws for every prompt and seed, at each of DRAWN_SIZES: what a
    picture that shows its prompt gets from the referee (the ceiling of the table)."""
    from ..critic.models import open_critic
    from ..mini.evaluate import to_tensor
    critic, verdicts = open_critic(args.model), []
    for i, prompt, seed, name in renders(args.prompt_list, args.seeds):
        caption, rng = world.parse(prompt), np.random.default_rng(seed)
        for size in DRAWN_SIZES:
            image = quantize(to_tensor(world.render(world.scene_for(caption, rng), size)))
            if save:
                to_pil(image).save(save / f"{DRAWN}-{name}-{size}.png")
            verdict = judge(referee, critic, image, caption)
            verdict["real"] = real_similarity(referee, caption, i)
            verdicts.append(verdict)
    return {"name": DRAWN, "seconds": 0.0, "verdicts": verdicts}


def summary(result: dict) -> list[str]:
    v = result["verdicts"]
    first = sum(all(all(a) for a in x["attributes"].values()) for x in v) / len(v)
    cells = [result["name"], f"{top1(result) * 100:.0f}%", f"{first * 100:.0f}%",
             f"{statistics.mean(x['rank'] for x in v):.1f}"]
    for name in ATTRIBUTES:
        tests = [ok for x in v for ok in x["attributes"].get(name, [])]
        cells.append(f"{sum(tests) / len(tests) * 100:.0f}%" if tests else "-")
    outlines = [x["outline"] for x in v if x.get("outline") is not None]
    cells.append(f"{sum(outlines) / len(outlines) * 100:.0f}%" if outlines else "-")
    own = [x["own outline"] for x in v if x.get("own outline") is not None]
    cells.append(f"{statistics.mean(own):+.1f}" if own else "-")
    cells += [f"{statistics.mean(x['critic'] for x in v):.1f}", f"{statistics.mean(x['referee'] for x in v):.1f}",
              f"{statistics.mean(x['real'] for x in v):.1f}",
              "-" if result["name"] == DRAWN else f"{result['seconds']:.1f}"]
    return cells


def top1(result: dict) -> float:
    return sum(x["rank"] == 1 for x in result["verdicts"]) / len(result["verdicts"])


def report(results: list[dict], args, info: dict, table) -> str:
    headers = ["configuration", "top-1", "1-word", "mean rank", *ATTRIBUTES, "outline", "own outline", "critic sim",
               "referee sim", "referee real", "s/picture"]
    prompts = args.prompts or f"the {len(PROMPTS)} benchmark prompts"
    out = [f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['threads']}",
           "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
           f"date: {info['date']}",
           f"mode: {'quick' if args.quick else 'full'}; critic {args.model}, referee {args.referee}; "
           f"{len(args.prompt_list)} prompts ({prompts}) x {args.seeds} seed(s) per configuration, each ranked "
           f"among all captions of its form; `{DRAWN}`: scenes the world draws for them at "
           f"{', '.join(map(str, DRAWN_SIZES))} pixels (the ceiling)"
           + "".join(f"; --set {o}" for o in args.overrides), "",
           table(headers, [summary(r) for r in results])]
    rendered = [r for r in results if r["name"] != DRAWN]
    if rendered:
        best = max(rendered, key=top1)
        out += ["", f"referee top-1: {top1(best) * 100:.0f}% ({best['name']}); drawn scenes: "
                    f"{top1(results[-1]) * 100:.0f}%"]
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    from ..run import threads
    p = argparse.ArgumentParser(prog="clipig bench --quality", description=(
        "Render the quality prompts with the critic under the reference configurations and let the referee "
        "rank every final image among all captions of its prompt's form."))
    p.add_argument("rows", nargs="*", metavar="ROW", help=(
        f"rows of the table (default: {', '.join(DEFAULT_ROWS)}; also: "
        f"{', '.join(r for r in ROWS if r not in DEFAULT_ROWS)}; `all`: every row; or an experiment file "
        f"FILE.yaml of one's own, its text replaced by each prompt)"))
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_EPOCHS * 100:.0f}%% of each configuration's epochs (a few minutes)")
    p.add_argument("--model", default="mini",
                   help="the critic that renders where the row or experiment file names none (default: mini)")
    p.add_argument("--referee", default="mini-referee", help="the model that judges (default: mini-referee)")
    p.add_argument("--epochs", type=int, help="epochs of every render (default: the configuration's)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="render every prompt with N seeds; the rates are over all renders (default: 1)")
    p.add_argument("--prompts", metavar="FILE", help=(
        "captions of the mini world to render instead of the benchmark's, one a line (# comments)"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a parameter of every render, e.g. --set precision=bf16 (repeatable)")
    p.add_argument("--save", metavar="DIR", help="also write the final images into DIR")
    threads.add_option(p)
    return p


def main(argv: list[str], table, info: dict) -> int:
    """Run `clipig bench --quality ARGV`; `table` and `info` (the machine) come from clipig.bench."""
    from ..critic.models import load_critic
    from ..run import threads
    args = parser().parse_args(argv)
    threads.configure(args.threads)
    rows = list(ROWS) if args.rows == ["all"] else args.rows or list(DEFAULT_ROWS)
    unknown = [r for r in rows if r not in ROWS and r != DRAWN and not (r.endswith(".yaml") and Path(r).is_file())]
    if unknown:
        parser().error(f"unknown row {unknown[0]!r}; the rows are {', '.join(ROWS)} (or all)")
    if args.seeds < 1:
        parser().error("--seeds must be at least 1")
    args.prompt_list = read_prompts(args.prompts, parser()) if args.prompts else list(PROMPTS)
    _check_overrides(args, rows, parser())
    save = Path(args.save) if args.save else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    referee = load_critic(args.referee, "cpu")
    results = []
    for row in [r for r in rows if r != DRAWN]:
        print(f"  {row}: {len(args.prompt_list)} prompts x {args.seeds} seed(s) ...", file=sys.stderr, flush=True)
        results.append(run_row(row, referee, args, save))
    results.append(drawn_row(referee, args, save))
    print(report(results, args, info, table))
    return 0


def read_prompts(path: str, p: argparse.ArgumentParser) -> list[str]:
    """The captions of a --prompts file (one a line; blank lines and # comments skipped); each must be a
    caption of the mini world."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        p.error(f"--prompts: cannot read {path}: {e.strerror or e}")
    prompts = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if world.parse(text) is None:
            p.error(f"{path}:{number}: {text!r} is not a caption of the mini world (docs/mini.md, \"The world\")")
        prompts.append(text)
    if not prompts:
        p.error(f"--prompts: {path} holds no caption")
    return prompts


def _check_overrides(args, rows: list[str], p: argparse.ArgumentParser) -> None:
    """Refuse a --set that no row's experiment accepts before any render starts (the message of the loader)."""
    from ..config.errors import ConfigError
    for row in [r for r in rows if r != DRAWN]:
        try:
            experiment(row, args.prompt_list[0], args, 0)
        except ConfigError as e:
            p.error(f"row {row}: {e}")
