"""Runs together: several runs stepped epoch by epoch, with one CLIP pass (per model) for the views of all.

Runs of one experiment that differ only in their seed (`clipig rank`, `clipig batch`, `--repeat`) show the
same critic views of the same size; one large batch keeps the matrix units busier than several small ones.
Each run keeps its own image, optimizer, random generators, statistics, listeners and files; only the
critic's pass is shared, and the runs' losses go backward together (each run's gradient comes from its own
loss alone). A run's picture is the one it gives alone, byte for byte on the same machine and precision: the
critic computes each view independently of the views beside it (tested; the final projection of a ViT, a
small matrix product whose rounding depends on its row count, is done for each run apart).

`Engine.run` is a group of one; `Engine.prepare`, `score` and `conclude` are the parts of an epoch.
`--together N` (`add_option`, for `clipig --repeat`, `rank` and `batch`) sets how many runs share the pass;
by default (`group_size`) as many as fit a pass of `AUTOMATIC_VIEWS` views (or of a fixed `views_per_pass`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import torch

from ..config.expressions import time_variables
from . import allocator, starts
from .passes import out_of_memory
from .threads import positive_int

# Views of all runs in one pass with automatic --together: on a CPU the matrix products of a pass of about 40
# views run near the peak (docs/benchmarks.md); a GPU takes many more at once.
AUTOMATIC_VIEWS = {"cpu": 40, "cuda": 256}


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--together", type=positive_int, metavar="N", help=(
        "runs that share one process and one CLIP pass per epoch (each keeps its own image, random numbers and "
        "files, and gives the image it gives alone); default: automatic, as many as fill a pass of about "
        f"{AUTOMATIC_VIEWS['cpu']} views on a CPU ({AUTOMATIC_VIEWS['cuda']} on a GPU) or of a fixed "
        "views_per_pass; 1: one at a time"))


def views_per_epoch(config) -> int:
    """The views of one run's first epoch (at most; a target's batch size where it is an expression of
    time: at the first epoch)."""
    variables = {**time_variables(config.start_epoch(), config.epochs()), "epochs": config.epochs()}
    total = 0
    for target in config.targets:
        try:
            total += int(target.batch_size(variables))
        except Exception:  # noqa: BLE001 - an expression that needs more than time: one view
            total += 1
    return max(1, total)


def group_size(config, together: int | None, device: str | None = None) -> int:
    """How many runs of `config` share a pass: `together`, else automatic (see `add_option`)."""
    if together:
        return together
    kind = device or config.device()
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    plan = config.views_per_pass() or AUTOMATIC_VIEWS["cuda" if kind.startswith("cuda") else "cpu"]
    return max(1, plan // views_per_epoch(config))


@dataclass
class Epoch:
    """What the parts of one run's epoch hand on to each other."""
    variables: dict
    active: list  # the active targets
    views: list  # their views at the (first) critic's input size, as the constraints see them
    seen: list  # per active target: whether its views need CLIP
    critiqued: list  # (target, views.Shown) of the targets whose views go through CLIP
    loss: torch.Tensor | None = None
    backward: bool = False  # whether the loss goes backward (some weight is not zero)
    features: list = field(default_factory=list)


def step(engines: list) -> dict:
    """One epoch of each run, their views through CLIP in one pass. A run whose own part fails (an expression,
    a NaN) is undone to the start of its epoch and returned as {engine: error}; the others go on. An error
    of the shared part (the CLIP pass, the backward pass, running out of memory) is raised."""
    epochs, failed = {}, {}
    each(engines, failed, lambda e: epochs.__setitem__(e, e.prepare()))
    live = [e for e in engines if e not in failed]
    if len({e.residual for e in live}) > 1:
        raise ValueError("runs together need the same residual_gradient in each epoch")
    critiqued = [(n, target, shown) for n, e in enumerate(live) for target, shown in epochs[e].critiqued]
    if critiqued:
        owners, targets, shown = zip(*critiqued)
        features = iter(live[0].critique(list(targets), list(shown), list(owners) if len(live) > 1 else None))
        for e in live:
            epochs[e].features = [next(features) for _ in epochs[e].critiqued]
    each(live, failed, lambda e: e.score(epochs[e], epochs[e].features))
    live = [e for e in live if e not in failed]
    going = [e for e in live if epochs[e].backward]
    if going:
        torch.autograd.backward([epochs[e].loss for e in going],
                                inputs=[p for e in going for p in e.canvas.parameters() if p.requires_grad])
    each(live, failed, lambda e: e.conclude(epochs[e]))
    for e in failed:
        e._undo()
    return failed


def each(engines: list, failed: dict, part) -> None:
    """`part(engine)` for each run that has not failed, inside its expressions' generator; its error (other
    than running out of memory, which concerns them all) is kept in `failed`."""
    for engine in engines:
        if engine in failed:
            continue
        try:
            with engine.drawing():
                part(engine)
        except Exception as error:  # noqa: BLE001 - that run fails; the group goes on
            if out_of_memory(error):
                raise
            failed[engine] = error


class Together:
    """Runs several engines (of one critic, device and precision) to their ends; see the module doc."""

    def __init__(self, engines: list, choose: bool = True):
        first = engines[0]
        for e in engines[1:]:
            if (e.critic.critics, e.precision, e.config.compile()) != (first.critic.critics, first.precision,
                                                                         first.config.compile()):
                raise ValueError("runs together need the same models, precision and compile setting")
        self.engines = list(engines)
        self.choose = choose  # each run at its first epoch goes on as the best of its `starts`

    def run(self) -> list:
        """Train every run until its `epochs` or a stop; per run its reason (as `Engine.run` returns it) or the
        error that ended it (after its `end` event: listeners save what exists). Ctrl-C ends them all, and is
        raised after their `end` events, as is any error of a run alone."""
        outcomes: dict = {}
        for e in self.engines if self.choose else ():
            starts.choose(e, Together)
        for e in self.engines:
            e.started_at = time.monotonic()
            e.emit("start")
        live = list(self.engines)
        try:
            while live:
                for e in [e for e in live if e.epoch >= e.epochs or e.stop_requested.is_set()]:
                    live.remove(e)
                    self._end(e, outcomes, "done" if e.epoch >= e.epochs else e.stop_reason)
                if not live:
                    break
                group, failed = list(live), {}
                group[0].passes.retrying(lambda: failed.update(step(group)), lambda: [e._undo() for e in group],
                                         group[0].epoch, group[0].device)
                for e in group:
                    if e in failed:
                        live.remove(e)
                        self._fail(e, outcomes, failed[e])
                    else:
                        with e.drawing():
                            e.emit("epoch")
        except BaseException as error:
            for e in live:
                e._undo()  # an epoch that did not finish leaves no trace: the state is that of its start
                self._fail(e, outcomes, error)
            if len(self.engines) == 1 or not isinstance(error, Exception):
                raise
        finally:
            allocator.release()  # the memory the epochs reused, back to the system
        return [outcomes[e] for e in self.engines]

    def _end(self, engine, outcomes: dict, reason: str) -> None:
        try:
            engine.guard.finish()  # the check of the last epoch, where it is read one epoch later (CUDA)
        except Exception as error:  # noqa: BLE001
            engine._undo()
            self._fail(engine, outcomes, error)
            return
        outcomes[engine] = reason
        engine.emit("end", reason=reason)

    @staticmethod
    def _fail(engine, outcomes: dict, error: BaseException) -> None:
        outcomes[engine] = error
        engine.emit("end", reason="interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
