"""The training loop. It only orchestrates: schedule -> views -> one CLIP pass (per model of an ensemble) ->
losses -> step -> post-processing -> events. The CLI, the GUI, the batch tools and the tests are listeners
of its events; `open_run` opens a run for all of them."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .config.errors import ConfigError
from .config.expressions import drawing_from, learnrate_variables, resolution_variables, time_variables
from .config.timing import is_on
from .critic import Ensemble, fit
from .finite import Guard
from .memory import Passes
from .parameterizations import create, rebuilt
from .pixels import initial_pixels
from .targets import Target

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
    """What listeners receive: plain numbers, and functions for what costs something to read (the image and
    the statistics), so a listener pays only for what it uses. kind is start | epoch | end."""
    kind: str
    epoch: int  # epochs done in the schedule (the next epoch to train)
    epochs: int
    epochs_done: int  # epochs trained by this run
    runtime: float  # seconds since the run started
    seed: int
    device: torch.device
    config: Any  # the experiment (validated config)
    image: Callable[..., torch.Tensor]  # [3, H, W] on the CPU in [0, 1]; unclamped=True: the state to continue from
    statistics: Callable[..., list]  # per-target statistics
    stop: Callable[[], None]  # ask the run to stop after this epoch
    loss: torch.Tensor | None = None  # the loss of the last epoch (on the device); None before the first
    learnrate: float = 0.0  # the learning rate of the last epoch (base rate * learnrate * learnrate_scale)
    learnrate_scale: float = 1.0
    reason: str | None = None  # end: done | stopped | interrupted | failed
    engine: Any = None  # the Engine, for listeners that keep its state (autosave, video)


def open_run(config, listeners: list[Callable[[Event], Any]] = (), device=None) -> "Engine":
    """The one way to open a run (CLI, GUI, workers, benchmarks): the critic of the config's `model` (one model
    or an ensemble) on `device` (default: the config's), and the engine."""
    from .critic import open_critic
    return Engine(config, open_critic(config.model(), device or config.device()), listeners)


class Engine:
    """Runs one experiment (a validated config Node) epoch by epoch and tells its listeners."""

    def __init__(self, config, critic, listeners: list[Callable[[Event], Any]] = ()):
        self.config = config
        self.listeners = list(listeners)
        self.seed = config.seed() if config.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
        self.critic = critic if isinstance(critic, Ensemble) else Ensemble([critic], [1.0])  # one model, or several
        self.device = critic.device
        self.epochs = config.epochs()
        self.epoch = config.start_epoch()
        if self.epoch > self.epochs:
            raise ConfigError(f"{self.epoch} is past the end of training (epochs: {self.epochs})", "start_epoch"
                              ).located(*config.start_epoch.loc)
        self.expr_rng = random.Random(self.seed)
        self.rng = torch.Generator(device=self.device).manual_seed(self.seed)
        self.stop_requested = threading.Event()
        self.stop_reason = "stopped"
        self.started_at: float | None = None
        self.runtime_before = 0.0  # seconds of the runs this one continues (clipig resume)
        self.epochs_done = 0
        self.loss: torch.Tensor | None = None
        self.learnrate = self.learnrate_scale = 0.0  # of the last epoch
        self.targets = [Target(t, i, self.critic, self.device) for i, t in enumerate(config.targets)]
        variables = self.variables(self.epoch)
        with drawing_from(self.expr_rng):
            resolution, interpolation = config.resolution(variables), config.interpolation(variables)
        init_rng = torch.Generator().manual_seed(self.seed)
        image = initial_pixels(config.init, resolution, init_rng)
        with drawing_from(self.expr_rng):
            self.canvas = create(config.parameterization, variables, image, self.device)  # what is trained
        self.reshapes = not (config.resolution.is_constant  # the canvas may need rebuilding during the run
                             and config.interpolation.is_constant
                             and all(v.is_constant for v in config.parameterization.params.values()))
        self.optimizer = self._optimizer()
        self.autocast = self._autocast(config.precision())
        self.passes = Passes(config.views_per_pass())
        self.guard = Guard(self)
        fair = [t for t in self.targets if t.node.feature_scale() == "fair" and t.features]
        if fair:  # the fair factors come from the start picture
            with torch.no_grad():
                picture = self.fit(self.canvas.image()[None])
                for target, features in zip(fair, self.critique(fair, [picture] * len(fair))):
                    target.set_fair(features)

    # --- set-up helpers -------------------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        cls, base, extra = OPTIMIZERS[self.config.optimizer()]
        self.base_learnrate = base
        return cls(self.canvas.parameters(), lr=base, **extra)

    def _autocast(self, precision: str):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if precision == "auto" and self.device.type == "cuda":
            dtype = torch.float16
        self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
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
        event = Event(kind, self.epoch, self.epochs, self.epochs_done, self.runtime, self.seed, self.device,
                      self.config, self.image, self.statistics, self.stop,
                      **{"loss": self.loss, "learnrate": self.learnrate,
                         "learnrate_scale": self.learnrate_scale, "engine": self, **data})
        for listener in self.listeners:
            listener(event)

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to stop after the current epoch (thread-safe); `reason` is what `run` returns."""
        self.stop_reason = reason
        self.stop_requested.set()

    def run(self) -> str:
        """Train until `epochs` or a stop; returns the reason: done or the stop's. Ctrl-C ("interrupted") and errors
        ("failed", e.g. an expression that divides by zero at some epoch) end the run too, and are re-raised
        after the `end` event, so that listeners still save what exists."""
        self.started_at = time.monotonic()
        self.emit("start")
        reason = "done"
        try:
            with drawing_from(self.expr_rng):  # also expressions evaluated without the generator at hand
                while self.epoch < self.epochs:
                    if self.stop_requested.is_set():
                        reason = self.stop_reason
                        break
                    self.passes.step(self)
                    self.epoch += 1
                    self.epochs_done += 1
                    self.emit("epoch")
                self.guard.finish()
        except BaseException as e:
            self.guard.rewind()  # an epoch that did not finish leaves no trace: the state is that of its start
            self.emit("end", reason="interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            raise
        self.emit("end", reason=reason)
        return reason

    def step(self) -> None:
        """One epoch: post-processing, views of all active targets through CLIP in one batch per model, the
        losses summed over all views, one optimizer step."""
        config, epoch = self.config, self.epoch
        variables = self.variables(epoch)
        if self.reshapes:
            canvas = rebuilt(self.canvas, config.parameterization, config.resolution(variables),
                             config.interpolation(variables), variables)
            if canvas is not self.canvas:
                self.canvas = canvas
                self.optimizer = self._optimizer()
        variables.update(resolution_variables(*self.canvas.resolution))
        learnrate_scale = config.learnrate_scale(variables)
        learnrate = self.base_learnrate * config.learnrate(variables) * learnrate_scale
        variables.update(learnrate_variables(learnrate, learnrate_scale))
        for group in self.optimizer.param_groups:
            group["lr"] = learnrate
        self.learnrate, self.learnrate_scale = learnrate, learnrate_scale
        self.guard.keep()
        self.postprocess(variables)

        picture = self.canvas.image()
        active = [t for t in self.targets if t.is_active(variables)]
        views = [self.fit(t.views(picture, variables, self.rng, self.expr_rng)) for t in active]
        seen = [t.needs_critic(variables) for t in active]  # targets that need CLIP
        critiqued = [(t, v) for t, v, s in zip(active, views, seen) if s]
        features = iter(self.critique(*zip(*critiqued)) if critiqued else ())
        loss, weighted = torch.zeros((), device=self.device), False
        for target, v, s in zip(active, views, seen):
            part, any_weight = target.loss(next(features) if s else None, v, variables, self.rng, self.expr_rng)
            loss, weighted = loss + part, weighted or any_weight
        self.optimizer.zero_grad(set_to_none=True)
        if weighted and loss.requires_grad:  # all weights zero: no step at all (not even the momentum's)
            loss.backward()
        self.guard.check(loss)
        if loss.requires_grad:
            self.optimizer.step()
        self.loss = loss.detach()
        self.guard.verify()

    def fit(self, views: torch.Tensor) -> torch.Tensor:
        """Views as CLIP and the constraints see them: resized (bicubic) to the CLIP input size (of the first
        model; other members of an ensemble resize to theirs), clamped to [0, 1]."""
        return fit(views, self.critic.critics[0].input_size).clamp(0, 1)

    def critique(self, targets: list, views: list) -> list[dict]:
        """CLIP features of each target's views for each model it uses ({member: [B, D]}): one pass per model
        for all the views that model sees, split into passes that fit the memory (memory.Passes)."""
        compiled = self.config.compile()

        def encode(critic, batches):
            with self.autocast():
                return self.passes.encode(lambda part: critic.encode_image(part, compiled), batches, self, critic)
        return self.critic.encode(views, [t.uses for t in targets], encode=encode)

    def postprocess(self, variables: dict) -> None:
        """The post-processing transforms edit the unclamped image at the start of an epoch (the result of
        each is clamped to [0, 1], as in the original), which the parameterization then shows."""
        entries = [e for e in self.config.postproc if is_on(e.entry, variables)]
        if not entries:
            return
        with torch.no_grad():
            image = self.canvas.unclamped()[None]
            for entry in entries:
                args = entry.arguments(variables, self.expr_rng)
                if entry.spec.random:
                    args["rng"] = self.rng
                image = entry.spec.fn(image, **args).clamp(0, 1)
            self.canvas.set_image(image[0])

    # --- what listeners read --------------------------------------------------------------------------------

    def image(self, unclamped: bool = False) -> torch.Tensor:
        """The current image [3, H, W] on the CPU: in [0, 1], or `unclamped`, the values the parameterization
        holds (what continuing starts from, through `init.image_tensor`)."""
        with torch.no_grad():
            image = self.canvas.unclamped() if unclamped else self.canvas.image()
        return image.detach().to("cpu", torch.float32, copy=unclamped)  # never the parameter's own memory

    def statistics(self) -> list[dict]:
        """Per-target statistics (see Target.statistics)."""
        return [t.statistics() for t in self.targets]

    @property
    def runtime(self) -> float:
        return self.runtime_before + (0.0 if self.started_at is None else time.monotonic() - self.started_at)
