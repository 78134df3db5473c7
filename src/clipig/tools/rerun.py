"""Commands about finished or stopped runs: `clipig info`, `clipig replay` and `clipig resume`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config.errors import ConfigError
from ..run import threads


def info(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="clipig info", description=(
        "Print how images were made: the provenance CLIPig writes into every PNG (configuration, seed, epochs, "
        "runtime, device, precision, versions, models and their weight checksums)."))
    p.add_argument("files", nargs="+", metavar="IMAGE.png")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--config", action="store_true", help="print only the configuration (YAML)")
    shown.add_argument("--json", action="store_true", help="print the run record as JSON")
    args = p.parse_args(argv)
    from ..config.recorded import read
    from ..files.provenance import summary
    for i, file in enumerate(args.files):
        record = read(file)
        if args.json:
            print(json.dumps({"file": file, **record["run"], "config": record["config"]}, indent=1))
        elif args.config:
            print(record["config"], end="")
        else:
            print(("\n" if i else "") + summary(file, record))
            print(f"render it again: clipig {file}    replay and compare: clipig replay {file}\n")
            print(record["config"], end="")
    return 0


def _config_of(text: str, file: str, overrides: list[str]):
    """A recorded configuration (from a PNG or a state file) with overrides, errors naming the file."""
    from ..config.loader import apply_override, parse_yaml
    from ..config.schema import validate
    data = parse_yaml(text, file)
    for assignment in overrides:
        apply_override(data, assignment)
    return validate(data)


def replay(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="clipig replay", description=(
        "Render an image again from the provenance in its PNG, to the same epoch, and compare: on the same machine, "
        "device and precision the pixels are identical, byte for byte; otherwise it says how far they are. "
        "Exit code 0: identical, 1: different."))
    p.add_argument("file", metavar="IMAGE.png")
    p.add_argument("-o", "--output", metavar="OUT.png", help="also save the replayed image (never overwrites)")
    p.add_argument("--device", help="device to replay on (default: the recorded one)")
    threads.add_option(p, "the recorded number")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    from ..config.recorded import read
    from ..files.output import png_text, reserve, save_png, to_pil
    from ..files.runner import Progress
    from ..run.engine import open_run

    record = read(args.file)
    run = record["run"]
    if run.get("continued") or run.get("init_image_tensor"):  # (the name in images of earlier versions)
        raise ConfigError("the run continued from a picture of the live editor or the Python API (after edits), "
                          "which is not stored: it cannot be replayed", file=args.file)
    device = args.device or run.get("device", "auto")
    if args.device is None and device.startswith("cuda") and not torch.cuda.is_available():
        print(f"note: recorded on {device}, replaying on the CPU: expect small differences", file=sys.stderr)
        device = "cpu"
    threads.configure(args.threads or run.get("threads"))
    config = _config_of(record["config"], args.file, [f"device={device}", "verbose=0"])
    until = int(run.get("epoch", config.epochs()))

    def stop_there(event):
        if event.kind == "epoch" and event.epoch >= until:
            event.stop()

    engine = open_run(config, [Progress(0 if args.quiet else 1), stop_there])
    for model, member in zip(run.get("models", []), engine.facts().models):
        if model.get("sha256") != member["sha256"]:
            print(f"note: the weights of {model['name']} differ from the recorded ones (sha256 "
                  f"{model.get('sha256', '?')[:12]}...): expect a different image", file=sys.stderr)
    if engine.epoch < until:
        engine.run()
    replayed = np.asarray(to_pil(engine.image()))
    with Image.open(args.file) as image:
        original = np.asarray(image.convert("RGB"))
    if args.output:
        path = reserve(Path(args.output))
        save_png(engine.image(), path, png_text(engine.facts(), "done" if engine.epoch >= engine.epochs else "stopped",
                                                config))
        print(f"saved {path}", file=sys.stderr)
    where = f"epoch {engine.epoch} on {engine.device}, precision {engine.precision}"
    if replayed.shape != original.shape:
        print(f"different: the replay is {replayed.shape[1]}x{replayed.shape[0]}, the image "
              f"{original.shape[1]}x{original.shape[0]} ({where})")
        return 1
    diff = np.abs(replayed.astype(np.int16) - original.astype(np.int16))
    if not diff.any():
        print(f"identical: the replay gives the same pixels, byte for byte ({where})")
        return 0
    mse = float((diff.astype(np.float64) ** 2).mean())
    print(f"different ({where}): {np.count_nonzero(diff) / diff.size:.2%} of the values differ, max "
          f"{int(diff.max())}/255, mean {float(diff.mean()):.3f}/255, PSNR {10 * np.log10(255 ** 2 / mse):.1f} dB")
    return 1


def resume(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="clipig resume", description=(
        "Continue a run from the state file beside its image (NAME.png -> NAME.state): an interrupted or failed "
        "run goes on in the same files, exactly as if it had never stopped; a finished one, given more --epochs, "
        "goes on into a new image (NAME-1.png), keeping the finished one."))
    p.add_argument("file", metavar="IMAGE.png|IMAGE.state")
    p.add_argument("--epochs", type=int, help="train to this many epochs in all (may extend a finished run)")
    p.add_argument("--device", help="device (default: the run's; another device goes on, but not identically)")
    threads.add_option(p)
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="progress and statistics")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="no output")
    args = p.parse_args(argv)
    from ..files.runner import run_to_files
    from ..files.statefile import SUFFIX, load, state_path

    file = Path(args.file)
    path = file if file.suffix == SUFFIX else state_path(file)
    state = load(path)
    overrides = [f"{k}={json.dumps(v)}" for k, v in (("epochs", args.epochs), ("device", args.device))
                 if v is not None]
    overrides += ["verbose=2"] if args.verbose else ["verbose=0"] if args.quiet else []
    config = _config_of(state["config"], str(path), overrides)
    epochs = config.epochs()
    if state["epoch"] >= epochs:
        raise ConfigError(f"the run is at epoch {state['epoch']} of {state['epochs']}: nothing to do; "
                          f"give --epochs N with N above {state['epoch']} to go on", file=str(path))
    threads.configure(args.threads)
    image = path.with_suffix(".png")
    finished = state["reason"] == "done"
    return run_to_files(config, image, state, continues=None if finished else image)
