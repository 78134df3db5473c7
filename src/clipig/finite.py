"""Runs that fail loudly: a loss, gradient, learning rate or image that becomes NaN or infinite stops the run.

At the start of an epoch, before the post-processing, the guard keeps a copy of the image (its
parameterization's tensors); after the post-processing and the optimizer step it checks the loss, the gradients and the new image. When one of them went bad, the
copy is put back, so the run stops with the last finite image (saved with a "failed at epoch N" sidecar, like
other failures). On the CPU the check is read at once. On CUDA reading a tensor makes the CPU wait for all the
work queued on the GPU, so an epoch's check is copied to the host asynchronously and read one epoch later,
waiting only for that epoch's work, which the GPU has finished by then or soon.
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
        self.current: tuple | None = None  # (epoch, learnrate, loss, gradients, image before the step)
        self.pending: tuple | None = None  # (the same, flags, event): an epoch whose check is not read yet

    def keep(self) -> None:
        """At the start of the epoch, before the post-processing: the image to go back to."""
        self.before = {k: v.detach().clone() for k, v in self.engine.canvas.state_dict().items()}

    def rewind(self) -> None:
        """An epoch that did not finish (a second Ctrl-C): undo its post-processing."""
        if getattr(self, "before", None) is not None:
            self.engine.canvas.load_state_dict(self.before)
            self.before = None

    def check(self, loss: torch.Tensor, variables: dict) -> None:
        """Before the optimizer step: a learning rate beyond float32 stops at once; the rest is kept for `verify`."""
        engine = self.engine
        learnrate = engine.learnrate
        if not all(abs(g["lr"]) <= FLOAT32_MAX for g in engine.optimizer.param_groups):
            raise NonFiniteError(engine.epoch, [f"the learning rate (base * learnrate * learnrate_scale = "
                                                f"{learnrate:g}) is beyond the float32 range of the optimizer"])
        gradients = [p.grad.detach() for p in engine.canvas.parameters() if p.grad is not None]
        self.current = (engine.epoch, learnrate, loss.detach(), gradients, self.before)

    def verify(self) -> None:
        """After the optimizer step and the post-processing."""
        tensors = [self.current[2], *self.current[3], *self.engine.canvas.parameters()]
        flags, done = torch.stack([torch.isfinite(t).all() for t in tensors]), None
        if self.deferred:
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
        engine.canvas.load_state_dict(before)
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
