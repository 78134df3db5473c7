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

from ..config.errors import UserError

FLOAT32_MAX = torch.finfo(torch.float32).max  # also catches inf and (through the comparison) NaN


class NonFiniteError(UserError, RuntimeError):
    """str() names the epoch and the values that went bad."""

    def __init__(self, epoch: int, problems: list[str]):
        self.epoch = epoch
        super().__init__(f"the run became numerically invalid at epoch {epoch}: {'; '.join(problems)}. The last "
                         f"finite image is saved. Look for values (weights, learnrate, transform parameters) that "
                         f"grow too large or expressions that divide by numbers near zero.")


class Guard:
    """Checks the epochs of one run (see the module doc). It knows the run only through what it is given:
    `keep()` a snapshot of the image and statistics (and the epoch counters), `restore(snapshot)` to put one
    back, `parameters()` the image's tensors, and `deferred` (read each check one epoch later)."""

    def __init__(self, keep, restore, parameters, deferred: bool = False):
        self.keep, self.restore, self.parameters, self.deferred = keep, restore, parameters, deferred
        self.current: tuple | None = None  # (epoch, learnrate, loss, gradients, `before` of the epoch)
        self.pending: tuple | None = None  # (the same, flags, event): an epoch whose check is not read yet
        self.before = None  # the snapshot at the start of the epoch

    def start(self) -> None:
        """At the start of the epoch, before the post-processing: the snapshot to go back to."""
        self.before = self.keep()

    def rewind(self) -> None:
        """An epoch that did not finish (an error, a second Ctrl-C, running out of memory): undo its
        post-processing and statistics, so that it can be run again as if it had not started."""
        if self.before is not None:
            self.restore(self.before)
            self.before = None

    def check(self, epoch: int, loss: torch.Tensor, learnrate: float, learnrates: list[float]) -> None:
        """Before the optimizer step: a learning rate beyond float32 stops at once; the rest is kept for `verify`."""
        if not all(abs(lr) <= FLOAT32_MAX for lr in learnrates):
            raise NonFiniteError(epoch, [f"the learning rate (base * learnrate * learnrate_scale = "
                                         f"{learnrate:g}) is beyond the float32 range of the optimizer"])
        gradients = [p.grad.detach() for p in self.parameters() if p.grad is not None]
        self.current = (epoch, learnrate, loss.detach(), gradients, self.before)

    def verify(self) -> None:
        """After the optimizer step."""
        tensors = [self.current[2], *self.current[3], *self.parameters()]
        flags, done = torch.stack([torch.isfinite(t).all() for t in tensors]), None
        if self.deferred and flags.device.type == "cuda":  # (a test defers on the CPU too)
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
        image = sum(_count(p) for p in self.parameters())
        self.restore(before)  # also the epoch counters (CUDA: the next epoch has been counted already)
        problems = [f"loss = {float(loss):g}"] if _count(loss) else []
        problems += [f"{n} of the image's {g.numel()} gradient values are NaN or infinite"
                     for g in gradients if (n := _count(g))]
        if not problems and image:
            problems.append(f"the optimizer step (learnrate {learnrate:g}) and post-processing made {image} "
                            f"of the image's values NaN or infinite")
        raise NonFiniteError(epoch, problems or ["a value became NaN or infinite"])


def _count(tensor: torch.Tensor) -> int:
    return int((~torch.isfinite(tensor)).sum())
