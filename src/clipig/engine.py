"""The training loop. It only orchestrates: schedule -> views -> one CLIP pass -> losses -> step ->
post-processing -> events. The CLI, the GUI, the batch tools and the tests are listeners of its events."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .config.errors import ConfigError
from .config.expressions import learnrate_variables, resolution_variables, time_variables
from .pixels import Pixels, initial_pixels
from .targets import Target, entry_active

# Base learning rates (the original's): `learnrate: 1.0` means about the same step size for every optimizer.
# `sparse_adam` is the original's name for a plain RMSprop (it is not torch's SparseAdam).
OPTIMIZERS = {
    "adam": (torch.optim.Adam, 0.01, {}),
    "adamw": (torch.optim.AdamW, 0.01, {}),
    "sgd": (torch.optim.SGD, 10.0, {}),
    "rmsprop": (torch.optim.RMSprop, 0.003, {"centered": True, "momentum": 0.1}),
    "sparse_adam": (torch.optim.RMSprop, 0.01, {}),
    "adadelta": (torch.optim.Adadelta, 20.0, {}),
}


@dataclass
class Event:
    """What listeners receive: kind is start | epoch | end."""
    kind: str
    engine: "Engine"
    epoch: int
    data: dict = field(default_factory=dict)


class Engine:
    """Runs one experiment (a validated config Node) epoch by epoch and tells its listeners."""

    def __init__(self, config, critic=None, listeners: list[Callable[[Event], Any]] = ()):
        from .critic import load_critic, resolve_device
        self.config = config
        self.listeners = list(listeners)
        self.seed = config.seed() if config.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
        self.device = resolve_device(config.device()) if critic is None else critic.device
        self.critic = critic or load_critic(config.model(), self.device)
        self.epochs = config.epochs()
        self.epoch = config.start_epoch()
        if self.epoch > self.epochs:
            raise ConfigError(f"{self.epoch} is past the end of training (epochs: {self.epochs})", "start_epoch"
                              ).located(*config.start_epoch.loc)
        self.expr_rng = random.Random(self.seed)
        self.rng = torch.Generator(device=self.device).manual_seed(self.seed)
        self.stop_requested = threading.Event()
        self.started_at: float | None = None
        self.epochs_done = 0
        self.loss: torch.Tensor | None = None
        self.learnrate = self.learnrate_scale = 0.0  # of the last epoch
        self.targets = [Target(t, i, self.critic, self.device) for i, t in enumerate(config.targets)]
        variables = self.variables(self.epoch)
        resolution = config.resolution(variables)
        init_rng = torch.Generator().manual_seed(self.seed)
        self.pixels = Pixels(initial_pixels(config.init, resolution, init_rng)).to(self.device)
        self.optimizer = self._optimizer()
        self.autocast = self._autocast(config.precision())
        if any(t.node.feature_scale() == "fair" and t.features for t in self.targets):
            with torch.no_grad():
                start = self.critique([self.fit(self.pixels()[None])])
            for target in self.targets:
                target.set_fair(start)

    # --- set-up helpers -------------------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        cls, base, extra = OPTIMIZERS[self.config.optimizer()]
        self.base_learnrate = base
        return cls(self.pixels.parameters(), lr=base, **extra)

    def _autocast(self, precision: str):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if precision == "auto" and self.device.type == "cuda":
            dtype = torch.float16
        if dtype is None:
            return contextlib.nullcontext
        if self.device.type == "cpu" and dtype == torch.float16:
            raise ConfigError("fp16 is only available on CUDA; use bf16 or fp32 on the CPU", "precision"
                              ).located(*self.config.precision.loc)
        return lambda: torch.autocast(self.device.type, dtype=dtype)

    # --- the loop -------------------------------------------------------------------------------------------

    def variables(self, epoch: int) -> dict:
        """Time variables (and `epochs`) of an epoch."""
        return {**time_variables(epoch, self.epochs), "epochs": self.epochs}

    def emit(self, kind: str, **data) -> None:
        event = Event(kind, self, self.epoch, data)
        for listener in self.listeners:
            listener(event)

    def stop(self) -> None:
        """Ask the loop to stop after the current epoch (thread-safe)."""
        self.stop_requested.set()

    def run(self) -> str:
        """Train until `epochs` or a stop; returns the reason: done | stopped. Ctrl-C ("interrupted") and errors
        ("failed", e.g. an expression that divides by zero at some epoch) end the run too, and are re-raised
        after the `end` event, so that listeners still save what exists."""
        self.started_at = time.monotonic()
        self.emit("start")
        reason = "done"
        try:
            while self.epoch < self.epochs:
                if self.stop_requested.is_set():
                    reason = "stopped"
                    break
                self.step()
                self.epoch += 1
                self.epochs_done += 1
                self.emit("epoch", loss=self.loss)
        except BaseException as e:
            self.emit("end", reason="interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            raise
        self.emit("end", reason=reason)
        return reason

    def step(self) -> None:
        """One epoch: post-processing, views of all active targets through CLIP in one batch, the losses
        summed over all views, one optimizer step."""
        config, epoch = self.config, self.epoch
        variables = self.variables(epoch)
        if not config.resolution.is_constant or not config.interpolation.is_constant:
            if self.pixels.resize(*config.resolution(variables), config.interpolation(variables)):
                self.optimizer = self._optimizer()
        variables.update(resolution_variables(*self.pixels.resolution))
        learnrate_scale = config.learnrate_scale(variables)
        learnrate = self.base_learnrate * config.learnrate(variables) * learnrate_scale
        variables.update(learnrate_variables(learnrate, learnrate_scale))
        for group in self.optimizer.param_groups:
            group["lr"] = learnrate
        self.learnrate, self.learnrate_scale = learnrate, learnrate_scale
        self.postprocess(variables)

        picture = self.pixels()
        active = [t for t in self.targets if t.is_active(epoch, self.epochs)]
        views = [self.fit(t.views(picture, variables, self.rng, self.expr_rng)) for t in active]
        seen = [t.needs_critic(epoch, self.epochs) for t in active]
        critiqued = [v for v, s in zip(views, seen) if s]
        features = iter(self.critique(critiqued).split([v.shape[0] for v in critiqued]) if critiqued else ())
        loss, weighted = self.pixels.data.new_zeros(()), False
        for target, v, s in zip(active, views, seen):
            part, any_weight = target.loss(next(features) if s else None, v, variables, self.rng, self.expr_rng)
            loss, weighted = loss + part, weighted or any_weight
        self.optimizer.zero_grad(set_to_none=True)
        if weighted and loss.requires_grad:  # all weights zero: no step at all (not even the momentum's)
            loss.backward()
            self.optimizer.step()
        self.loss = loss.detach()

    def fit(self, views: torch.Tensor) -> torch.Tensor:
        """Views as CLIP and the constraints see them: resized (bicubic) to the CLIP input size, clamped to
        [0, 1]."""
        return self.critic.fit(views).clamp(0, 1)

    def critique(self, views: list) -> "torch.Tensor":
        """CLIP features of all views (at the CLIP input size) in one batch."""
        batch = views[0] if len(views) == 1 else torch.cat(views)
        with self.autocast():
            return self.critic.encode_image(batch, compiled=self.config.compile()).float()

    def postprocess(self, variables: dict) -> None:
        """The post-processing transforms on the pixel parameter, at the start of an epoch; the result of each
        is clamped to [0, 1], as in the original."""
        entries = [e for e in self.config.postproc if entry_active(e, variables)]
        if not entries:
            return
        with torch.no_grad():
            image = self.pixels.data[None]
            for entry in entries:
                args = entry.arguments(variables, self.expr_rng)
                if entry.spec.random:
                    args["rng"] = self.rng
                image = entry.spec.fn(image, **args).clamp(0, 1)
            self.pixels.data.copy_(image[0])

    # --- what listeners read --------------------------------------------------------------------------------

    def image(self) -> torch.Tensor:
        """The current image [3, H, W] in [0, 1] on the CPU."""
        return self.pixels.image()

    def statistics(self) -> list[dict]:
        """Per-target statistics (see Target.statistics)."""
        return [t.statistics() for t in self.targets]

    @property
    def runtime(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at
