"""`clipig rank CONFIG.yaml --runs 512 --epochs 20 --keep 6 --final-epochs 300 -o DIR/`

Renders the experiment with seeds 0, 1, 2, ... (plus the config's seed) for `--epochs` epochs, rates each
image against the experiment's features, continues the best `--keep` for `--final-epochs` more and writes
DIR/ranking.csv. The runs follow one schedule of epochs + final-epochs epochs (expressions of time see the
same `t`): a short run stops after `--epochs`, its continuation goes on from the short run's state file, so a
final image is exactly the image of one uninterrupted run of that seed (`clipig replay` confirms it). Finished
runs are kept in DIR/runs/ and DIR/final/, so the same command resumes; the short runs' states are removed
when they are no longer needed (a missing one only costs rendering the short run again).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from . import workers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipig rank", description=(
        "Render many runs of an experiment with different seeds, keep the best and continue them."))
    p.add_argument("files", nargs="+", metavar="CONFIG.yaml", help="experiment files, merged in order")
    p.add_argument("--runs", type=int, default=512, help="number of short runs (default: 512)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of each short run (default: 20)")
    p.add_argument("--keep", type=int, default=6, help="how many of the best runs to continue (default: 6)")
    p.add_argument("--final-epochs", type=int, help="epochs to continue the best (default: the config's epochs)")
    p.add_argument("-o", "--output", help="output folder (default: CONFIG-rank/)")
    workers.add_options(p)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from ..config.errors import ConfigError
    from ..config.loader import load_data
    from ..config.schema import plain, validate

    data = plain(load_data(args.files, overrides=workers.overrides(args)))
    config = validate(data)
    if not any(t.features for t in config.targets):
        raise ConfigError("rank needs an experiment with at least one feature to rate the runs against")
    for name in ("runs", "epochs"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1")
    final = config.epochs() if args.final_epochs is None else args.final_epochs
    short, keep = args.epochs, max(0, args.keep) if final > 0 else 0
    data.update(epochs=short + final, start_epoch=0)
    validate(data)
    root = Path(args.output or f"{Path(args.files[-1]).stem}-rank/")
    first_seed = config.seed() if config.seed is not None else 0
    # a run's name never depends on --runs, so that more runs find the finished ones
    jobs = [{"name": f"runs/run-{i:04d}", "data": {**data, "seed": first_seed + i},
             "stop_at": short if final else None, "meta": {"run": i}} for i in range(args.runs)]
    records, failed = workers.run_jobs(root, jobs, args)
    ranked = sorted(records.values(), key=lambda r: (-r["sim"], r["run"]))

    finals = [{"name": f"final/run-{r['run']:04d}", "meta": {"run": r["run"], "from": r["key"]},
               "from": r["name"], "data": {**data, "seed": r["seed"]}} for r in ranked[:keep]]
    final_records, final_failed = workers.run_jobs(root, finals, args, "final runs") if finals else ({}, [])
    by_run = {r["run"]: r for r in final_records.values()}
    for r in ranked:  # states of short runs that nothing continues any more
        if r["run"] in by_run or r not in ranked[:keep]:
            (root / f"{r['name']}.state").unlink(missing_ok=True)

    path = root / "ranking.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "seed", "sim", "final_sim", "file"])
        for r in ranked:
            done = by_run.get(r["run"])
            writer.writerow([r["run"], r["seed"], f"{r['sim']:.4f}", f"{done['sim']:.4f}" if done else "",
                             (done or r)["file"]])
    if not args.quiet:
        print(f"best {len(by_run)} of {len(ranked)} runs:", file=sys.stderr)
        for r in ranked[:keep]:
            done = by_run.get(r["run"])
            after = f" -> {done['sim']:.2f}  {done['file']}" if done else "  (final run failed)"
            print(f"  #{r['run']:<5} seed {r['seed']:<6} sim {r['sim']:.2f}{after}", file=sys.stderr)
        print(f"saved {path}", file=sys.stderr)
    if failed or final_failed:
        print(f"{len(failed) + len(final_failed)} runs failed: {', '.join(failed + final_failed)}", file=sys.stderr)
        return 1
    return 0
