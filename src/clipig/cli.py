"""Command line: `clipig [render] A.yaml [B.yaml ...] [-o OUT] [--set PATH=VALUE ...]` and the other commands."""

from __future__ import annotations

import argparse
import importlib
import itertools
import re
import sys
import warnings
from pathlib import Path

from .run import threads, together

COMMANDS = ("render", "models", "docs", "gui", "rate", "rank", "batch", "bench", "info", "replay", "resume")


USAGE = """clipig [render] FILE.yaml [FILE.yaml ...] [options]    (FILE '-' reads standard input)
       clipig {models,docs,gui,rate,rank,batch,bench} ...      (clipig COMMAND --help for each)"""


def render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipig", usage=USAGE, description=(
        "Render YAML experiments to an image. Several files merge in order (lists such as targets append); "
        "the options apply last. The original CLIPig's options (clipig.py) are accepted too. A PNG written by "
        "CLIPig stands for the experiment recorded in it."), epilog=(
        "other commands: models (list CLIP models), docs (write the reference), gui (live editor), rate (CLIP "
        "similarity of images), rank (many seeds, keep the best), batch (prompt grids), bench (speed), info (how "
        "a PNG was made), replay (run a PNG's experiment again and compare), resume (go on from a saved state)"))
    p.add_argument("files", nargs="+", metavar="FILE.yaml", help="experiment files (or PNGs written by CLIPig), "
                   "merged in order; '-' reads one from standard input")
    add_config_options(p)
    p.add_argument("--video", metavar="NAME.mp4", help="shorthand for --set video.file=NAME (.mp4, .gif, .webp)")
    return p


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="directory ending with '/' or file name ending with '.png'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a parameter, e.g. --set targets[0].batch_size=4 (repeatable)")
    p.add_argument("--model", help="shorthand for --set model=M")
    p.add_argument("-d", "--device", help="shorthand for --set device=D")
    p.add_argument("-e", "--epochs", help="shorthand for --set epochs=N")
    p.add_argument("-r", "--resolution", metavar="W [H]", help="shorthand for --set resolution=W,H")
    p.add_argument("-lr", "--learnrate", help="shorthand for --set learnrate=L")
    p.add_argument("-opt", "--optimizer", help="shorthand for --set optimizer=NAME")
    p.add_argument("-s", "--snapshot-interval", type=float, metavar="SECONDS",
                   help="shorthand for --set snapshot_interval=SECONDS (always seconds; 0 disables)")
    p.add_argument("--seed", help="shorthand for --set seed=S")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="render N images, named like runs of their own (x.png, x-1.png, ...); with a seed, run i "
                        "uses seed + i")
    together.add_option(p)
    threads.add_option(p)
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", type=int, metavar="N", help=(
        "-v: progress and statistics (verbose: 2); -v N: verbose N (0 silent, 1 progress bar, 2 statistics)"))
    verbosity.add_argument("-q", "--quiet", action="store_true", help="no output (verbose: 0)")


def overrides_of(args) -> list[str]:
    """All overrides: --set first, then the shorthand flags (they win)."""
    from .config.loader import shorthand_overrides
    return list(args.overrides) + shorthand_overrides(vars(args))


def original_argv(argv: list[str]) -> list[str]:
    """The original's option forms as ours: `-r W H` (one or two numbers) -> `--resolution=W H`; `-v` without
    a number -> `--verbose=2`, so that `clipig -v a.yaml` and `-r 64 a.yaml` leave the files alone."""
    result, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return result + argv[i:]
        if token in ("-r", "--resolution"):
            numbers = list(itertools.takewhile(str.isdigit, argv[i + 1:i + 3]))
            if numbers:
                result.append(f"--resolution={' '.join(numbers)}")
                i += 1 + len(numbers)
                continue
        if token in ("-v", "--verbose") and not re.fullmatch(r"-?\d+", argv[i + 1] if i + 1 < len(argv) else ""):
            token = "--verbose=2"
        result.append(token)
        i += 1
    return result


def render(argv: list[str]) -> int:
    args = render_parser().parse_intermixed_args(original_argv(argv))
    from .config.errors import ConfigError
    from .config.loader import STDIN, load_data
    from .config.schema import validate
    from .files.output import output_path
    from .files.runner import runs_to_files
    from .run.together import group_size

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {args.repeat}")
    threads.configure(args.threads)
    data = load_data(args.files, overrides=overrides_of(args))
    config = validate(data)
    wanted = output_path(config.output(), "output" if args.files[-1] == STDIN else args.files[-1])
    seed = config.seed() if config.seed is not None else None
    configs = [config] + [validate({**data, "seed": seed + i}) if seed is not None else config
                          for i in range(1, args.repeat)]
    size = group_size(config, args.together)
    for start in range(0, len(configs), size):
        code = runs_to_files(configs[start:start + size], wanted)  # the critic is opened once: load_critic keeps it
        if code:
            return code
    return 0


def models(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="clipig models", description="List known CLIP models and which are cached.") \
        .parse_args(argv)
    from .critic.models import known_models
    for m in known_models():
        print(f"{m['name']:<45} {m['source']:<10} {'cached' if m['cached'] else ''}")
    return 0


def docs(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="clipig docs", description="Write the generated reference documentation.")
    p.add_argument("-o", "--output", default="docs/", help="directory to write into (default: docs/)")
    args = p.parse_args(argv)
    from .config.docs import write_docs
    for path in write_docs(Path(args.output)):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        render_parser().print_help()
        return 2
    from .config.errors import ConfigError
    warnings.showwarning = _show_warning
    from .config.expressions import ExpressionError
    from .critic.images import ImageError
    from .critic.weights import ModelError
    command = argv[0] if argv and argv[0] in COMMANDS else "render"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    from .run.guard import NonFiniteError
    from .tools.rerun import info, replay, resume
    try:
        handler = {"render": render, "models": models, "docs": docs, "info": info, "replay": replay,
                   "resume": resume}.get(command)
        if handler is None:
            module = importlib.import_module({"rate": ".tools.rate", "rank": ".tools.rank", "batch": ".tools.batch",
                                              "bench": ".bench.speed", "gui": ".gui"}[command], __package__)
            handler = module.main
        return handler(rest)
    except (ConfigError, ExpressionError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ModelError, NonFiniteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError, OverflowError, TypeError, ValueError) as e:
        message = _resource_error(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def _show_warning(message, category, *rest, _python=warnings.showwarning) -> None:
    """Warnings about the configuration as one line `warning: file:line: path: ...`; others as Python shows them."""
    from .config.errors import ConfigWarning
    if issubclass(category, ConfigWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _python(message, category, *rest)


SIZES = ("Lower `resolution`, `batch_size` or the sizes in the transforms (resize, pad, repeat, rnoise "
         "resolution), or `views_per_pass`, or use a smaller model.")


def _resource_error(error: BaseException) -> str | None:
    """The message for torch running out of memory or of number range during the run; None for other errors."""
    from .run.passes import out_of_memory
    text = " ".join(str(error).split())
    lower = text.lower()
    if out_of_memory(error):
        match = re.search(r"allocate (\d+) bytes", text)
        size = f"tried to allocate {int(match.group(1)) / 1e9:.1f} GB" if match else type(error).__name__
        return f"out of memory ({size}). {SIZES}"
    if any(s in lower for s in ("storage size calculation overflowed", "integer multiplication overflow",
                                "overflow when unpacking long long", "int too big to convert",
                                "cannot be represented as a symint")):
        sizes = re.search(r"sizes=(\[[\d, ]+\])", text)
        return f"sizes too large for any memory ({f'a tensor of {sizes.group(1)}' if sizes else text[:120]}). {SIZES}"
    if "without overflow" in lower:  # a python number too large for a float32 tensor
        return (f"a number grew too large for the float32 image arithmetic ({text[:200]}); check the factors of "
                "the run, e.g. learnrate * learnrate_scale.")
    return None


if __name__ == "__main__":
    sys.exit(main())
