"""Runs that fail loudly: a loss, gradient, learning rate or image that becomes NaN or infinite stops the run.

At the start of an epoch, before the post-processing, the guard keeps a copy of the image (its
parameterization's tensors) and of the statistics; after the optimizer step it checks the loss, the gradients
and the new image. When one of them went bad, the copy is put back, so the run stops with the last finite
image (saved with a "failed at epoch N" sidecar, like other failures). The same copy undoes an epoch that did
not finish (an error, a second Ctrl-C, an out-of-memory retry). On the CPU the check is read at once. On CUDA
reading a tensor makes the CPU wait for all the work queued on the GPU, so an epoch's check is copied to the
host asynchronously and read one epoch later, waiting only for that epoch's work, which the GPU has finished
by then or soon.
"""

from __future__ import annotations

import torch

FLOAT32_MAX = torch.finfo(torch.float32).max  # also catches inf and (through the comparison) NaN


class NonFiniteError(RuntimeError):
    """str() names the epoch and the values that went bad."""

    def __init__(self, epoch: int, problems: list[str]):
        self.epoch = epoch
        super().__init__(f"the run became numerically invalid at epoch {epoch}: {'; '.join(problems)}. The last "
                         f"finite image is saved. Look for values (weights, learnrate, transform parameters) that "
                         f"grow too large or expressions that divide by numbers near zero.")


class Guard:
    """Checks one engine's epochs (see the module doc)."""

    def __init__(self, engine):
        self.engine = engine
        self.deferred = engine.device.type == "cuda"
        self.current: tuple | None = None  # (epoch, learnrate, loss, gradients, `before` of the epoch)
        self.pending: tuple | None = None  # (the same, flags, event): an epoch whose check is not read yet
        self.before: tuple | None = None  # (canvas tensors, statistics) at the start of the epoch

    def keep(self) -> None:
        """At the start of the epoch, before the post-processing: the image (and statistics) to go back to."""
        engine = self.engine
        self.before = ({k: v.detach().clone() for k, v in engine.canvas.state_dict().items()},
                       [t.stats.snapshot() for t in engine.targets])

    def rewind(self) -> None:
        """An epoch that did not finish (an error, a second Ctrl-C, running out of memory): undo its
        post-processing and statistics, so that it can be run again as if it had not started."""
        if self.before is not None:
            self._restore(self.before)
            self.before = None

    def _restore(self, before) -> None:
        tensors, stats = before
        self.engine.canvas.load_state_dict(tensors)
        for target, kept in zip(self.engine.targets, stats):
            target.stats = kept

    def check(self, loss: torch.Tensor) -> None:
        """Before the optimizer step: a learning rate beyond float32 stops at once; the rest is kept for `verify`."""
        engine = self.engine
        learnrate = engine.learnrate
        if not all(abs(g["lr"]) <= FLOAT32_MAX for g in engine.optimizer.param_groups):
            raise NonFiniteError(engine.epoch, [f"the learning rate (base * learnrate * learnrate_scale = "
                                                f"{learnrate:g}) is beyond the float32 range of the optimizer"])
        gradients = [p.grad.detach() for p in engine.canvas.parameters() if p.grad is not None]
        self.current = (engine.epoch, learnrate, loss.detach(), gradients, self.before)

    def verify(self) -> None:
        """After the optimizer step."""
        tensors = [self.current[2], *self.current[3], *self.engine.canvas.parameters()]
        flags, done = torch.stack([torch.isfinite(t).all() for t in tensors]), None
        if self.deferred and self.engine.device.type == "cuda":  # (a test defers on the CPU too)
            flags = flags.to("cpu", non_blocking=True)  # into pinned memory; valid once `done` has happened
            done = torch.cuda.Event()
            done.record()
        previous, self.pending, self.before = self.pending, (*self.current, flags, done), None
        self._read(previous if self.deferred else self.pending)

    def finish(self) -> None:
        """At the end of the run: the check not read yet (CUDA)."""
        previous, self.pending = self.pending, None
        self._read(previous)

    def _read(self, pending) -> None:
        if pending is None:
            return
        epoch, learnrate, loss, gradients, before, flags, done = pending
        if done is not None:
            done.synchronize()
        if bool(flags.all()):
            return
        engine = self.engine
        image = sum(_count(p) for p in engine.canvas.parameters())
        self._restore(before)
        engine.epochs_done -= engine.epoch - epoch  # CUDA: the next epoch has been counted already
        engine.epoch = epoch
        problems = [f"loss = {float(loss):g}"] if _count(loss) else []
        problems += [f"{n} of the image's {g.numel()} gradient values are NaN or infinite"
                     for g in gradients if (n := _count(g))]
        if not problems and image:
            problems.append(f"the optimizer step (learnrate {learnrate:g}) and post-processing made {image} "
                            f"of the image's values NaN or infinite")
        raise NonFiniteError(epoch, problems or ["a value became NaN or infinite"])


def _count(tensor: torch.Tensor) -> int:
    return int((~torch.isfinite(tensor)).sum())
