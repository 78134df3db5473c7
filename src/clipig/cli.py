"""Command line: `clipig [render] A.yaml [B.yaml ...] [-o OUT] [--set PATH=VALUE ...]` and the other commands."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import threads

COMMANDS = ("render", "models", "docs", "gui", "rate", "rank", "batch", "bench")


def render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipig render", description=(
        "Render YAML experiments to an image. Several files merge in order (lists such as targets append); "
        "--set overrides apply last."))
    p.add_argument("files", nargs="+", metavar="FILE.yaml", help="experiment files, merged in order")
    add_config_options(p)
    return p


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="directory ending with '/' or file name ending with '.png'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a parameter, e.g. --set targets[0].batch_size=4 (repeatable)")
    p.add_argument("--model", help="shorthand for --set model=M")
    p.add_argument("--device", help="shorthand for --set device=D")
    p.add_argument("--epochs", help="shorthand for --set epochs=N")
    p.add_argument("--seed", help="shorthand for --set seed=S")
    threads.add_option(p)
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="progress and statistics (verbose: 2)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="no output (verbose: 0)")


def overrides_of(args) -> list[str]:
    """All overrides: --set first, then the shorthand flags (they win)."""
    result = list(args.overrides)
    for name in ("output", "model", "device", "epochs", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            result.append(f"{name}={_yaml_scalar(value)}")
    if getattr(args, "verbose", False):
        result.append("verbose=2")
    if getattr(args, "quiet", False):
        result.append("verbose=0")
    return result


def _yaml_scalar(text: str) -> str:
    """Keep strings like `ViT-B/32` or `out/` strings when read back as YAML."""
    import json
    return text if text.lstrip("-").replace(".", "", 1).isdigit() else json.dumps(text)


class Progress:
    """Listener: a progress bar (verbose >= 1) and, at verbose 2, the statistics every 4 seconds and at the end
    (the original's rhythm)."""

    def __init__(self, verbose: int, stats_every: float = 4.0, stream=None):
        self.verbose, self.stats_every, self.stream = verbose, stats_every, stream or sys.stderr
        self.bar = None
        self.last_bar = self.last_stats = 0.0

    def __call__(self, event) -> None:
        if self.verbose < 1:
            return
        from tqdm import tqdm

        from .report import run_line, statistics_table
        engine, now = event.engine, time.monotonic()
        if event.kind == "start":
            self.bar = tqdm(total=engine.epochs, initial=engine.epoch, unit="epoch", file=self.stream,
                            dynamic_ncols=True, mininterval=0.25)
            self.last_stats = now
        elif event.kind == "epoch" and self.bar is not None:
            self.bar.update(1)
            if now - self.last_bar > 0.25:
                self.bar.set_postfix(loss=f"{float(event.data['loss']):.4f}", refresh=False)
                self.last_bar = now
            if self.verbose >= 2 and now - self.last_stats >= self.stats_every:
                self.bar.write(run_line(engine) + "\n" + statistics_table(engine.statistics()), file=self.stream)
                self.last_stats = now
        elif event.kind == "end" and self.bar is not None:
            self.bar.close()
            if self.verbose >= 2:
                print(run_line(engine) + "\n" + statistics_table(engine.statistics()), file=self.stream)


def render(argv: list[str]) -> int:
    args = render_parser().parse_args(argv)
    from .config.loader import load
    from .critic import load_critic, resolve_device
    from .engine import Engine
    from .output import OutputWriter, output_path

    threads.configure(args.threads)
    config = load(args.files, overrides=overrides_of(args))
    wanted = output_path(config.output(), args.files[-1])
    critic = load_critic(config.model(), resolve_device(config.device()))
    writer = OutputWriter(config, wanted)
    engine = Engine(config, critic=critic, listeners=[Progress(config.verbose()), writer])
    try:
        engine.run()
    except KeyboardInterrupt:
        print(f"\ninterrupted at epoch {engine.epoch}; saved {writer.path}", file=sys.stderr)
        return 130
    if config.verbose() >= 1:
        print(f"saved {writer.path}", file=sys.stderr)
    return 0


def models(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="clipig models", description="List known CLIP models and which are cached.") \
        .parse_args(argv)
    from .critic import known_models
    for m in known_models():
        print(f"{m['name']:<45} {m['source']:<10} {'cached' if m['cached'] else ''}")
    return 0


def docs(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="clipig docs", description="Write the generated reference documentation.")
    p.add_argument("-o", "--output", default="docs/", help="directory to write into (default: docs/)")
    args = p.parse_args(argv)
    from .docs import write_docs
    for path in write_docs(Path(args.output)):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .config.errors import ConfigError
    from .config.expressions import ExpressionError
    from .critic import ImageError, ModelError
    command = argv[0] if argv and argv[0] in COMMANDS else "render"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    try:
        handler = {"render": render, "models": models, "docs": docs}.get(command)
        if handler is None:
            module = __import__(f"clipig.tools.{command}", fromlist=["main"]) if command in (
                "rate", "rank", "batch") else __import__(f"clipig.{command}", fromlist=["main"])
            handler = module.main
        return handler(rest)
    except (ConfigError, ExpressionError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(f"error: out of memory ({_allocation(e)}). Lower `resolution`, `batch_size` or the sizes in the "
              "transforms (resize, pad, rnoise resolution), or use a smaller model.", file=sys.stderr)
        return 1


def _out_of_memory(error: BaseException) -> bool:
    import torch
    text = str(error).lower()
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError))
            or "can't allocate memory" in text or "out of memory" in text)


def _allocation(error: BaseException) -> str:
    """'tried to allocate 120.0 GB' from torch's message, when it says so."""
    import re
    match = re.search(r"allocate (\d+) bytes", str(error))
    return f"tried to allocate {int(match.group(1)) / 1e9:.1f} GB" if match else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
