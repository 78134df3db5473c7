"""The training loop. It only orchestrates: schedule -> views -> one CLIP pass (per model of an ensemble) ->
losses -> step -> post-processing -> events. The CLI, the GUI, the batch tools and the tests are listeners
of its events (run.events); `open_run` opens a run for all of them, new or going on from a state."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any, Callable

import torch

from ..config.errors import ConfigError
from ..config.expressions import drawing_from, learnrate_variables, resolution_variables, time_variables
from ..config.timing import is_on
from ..critic.critic import Ensemble
from ..critic.precision import autocast, resolve
from ..critic.residual import residual_gradient
from ..critic.views import Shown
from ..image.parameterizations import create, rebuilt
from ..image.start import cover, initial_pixels
from .events import Event, Facts
from .guard import Guard
from . import together
from .passes import Passes
from .state import plain, put_back, random_state, set_random_state
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


def open_run(config, listeners: list[Callable[[Event], Any]] = (), device=None, state: dict | None = None) -> "Engine":
    """The one way to open a run (CLI, GUI, workers, benchmarks, the Python API): the critic of the config's
    `model` (one model or an ensemble) on `device` (default: the config's), and the engine; with `state`, the
    run goes on from it (see Engine.load_state_dict: a captured state, or a picture and an epoch)."""
    from ..critic.models import open_critic
    engine = Engine(config, open_critic(config.model(), device or config.device()), listeners)
    if state is not None:
        engine.load_state_dict(state)
    return engine


def epoch_variables(epoch: int, epochs: int) -> dict:
    """The time variables (and `epochs`) of an epoch."""
    return {**time_variables(epoch, epochs), "epochs": epochs}


class Engine:
    """Runs one experiment (a validated config Node) epoch by epoch and tells its listeners."""

    def __init__(self, config, critic, listeners: list[Callable[[Event], Any]] = (), seed: int | None = None):
        self.config = config
        self.listeners = list(listeners)
        if seed is None:
            seed = config.seed() if config.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
        self.seed = self.chosen_seed = seed  # chosen_seed: that of the start it goes on as (`starts`)
        self.critic = critic if isinstance(critic, Ensemble) else Ensemble([critic], [1.0])  # one model, or several
        self.device = critic.device
        self.epochs = config.epochs()
        self.epoch = self.first_epoch = config.start_epoch()
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
        self.continued = False  # from a picture no configuration holds (the live editor's continuation)
        self.loss: torch.Tensor | None = None
        self.learnrate = self.learnrate_scale = 0.0  # of the last epoch
        self.targets = [Target(t, i, self.critic, self.device) for i, t in enumerate(config.targets)]
        self.canvas = self._canvas_at(self.epoch)  # what is trained
        self.reshapes = not (config.resolution.is_constant  # the canvas may need rebuilding during the run
                             and config.interpolation.is_constant
                             and all(v.is_constant for v in config.parameterization.params.values()))
        self.optimizer = self._optimizer()
        self.autocast = self._autocast(config.precision())
        self.residual = 1.0  # the epoch's `residual_gradient`
        self._check_residual()
        self.passes = Passes(config.views_per_pass(), self.autocast, self.precision)
        self.guard = Guard(self._keep, self._restore, lambda: list(self.canvas.parameters()),
                           deferred=self.device.type == "cuda")
        self.at_epoch_start = self._random_state()  # the generators as the next epoch starts with them
        self._set_fair()

    # --- set-up helpers -------------------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        cls, base, extra = OPTIMIZERS[self.config.optimizer()]
        self.base_learnrate = base
        return cls(self.canvas.parameters(), lr=base, **extra)

    def _autocast(self, precision: str):
        self.precision = resolve(precision, self.device)
        if self.device.type == "cpu" and self.precision == "fp16":
            raise ConfigError("fp16 is only available on CUDA; use bf16 or fp32 on the CPU", "precision"
                              ).located(*self.config.precision.loc)
        return autocast(self.precision, self.device)

    def _check_residual(self) -> None:
        param = self.config.residual_gradient
        if param.is_constant and param() == 1.0:
            return
        for critic in self.critic.critics:
            if not critic.residual_branches:
                raise ConfigError(f"model {critic.name!r} has no residual blocks CLIPig knows (open_clip's vision "
                                  "transformers and ResNets); leave residual_gradient at 1 for it",
                                  "residual_gradient").located(*param.loc)

    def _canvas_at(self, epoch: int, picture: torch.Tensor | None = None):
        """The parameterization at an epoch's resolution, showing the start picture of `init`, or `picture`
        (unclamped [3, H, W], scaled to cover the resolution)."""
        variables = self.variables(epoch)
        with drawing_from(self.expr_rng):
            resolution, _ = self.config.resolution(variables), self.config.interpolation(variables)
        if picture is None:
            image = initial_pixels(self.config.init, resolution, torch.Generator().manual_seed(self.seed))
        else:
            image = cover(picture.to(torch.float32), *resolution)
        with drawing_from(self.expr_rng):
            return create(self.config.parameterization, variables, image, self.device)

    def _keep_drawing(self, saved: dict | None) -> None:
        """A drawing continued from its picture (the live editor's `drawing`: the `parameterization` of a
        state) goes on with its own polygons rather than ones fitted to the picture, where the configuration
        still draws the same type, number and options of them (`softness` and the resolution may change)."""
        canvas = self.canvas
        if saved is None or canvas.exact or set(saved["options"]) != set(canvas.options):  # another type
            return
        drawing = type(canvas)(*canvas.resolution, canvas.device, **saved["options"])
        try:
            drawing.load_state_dict(saved["tensors"])
        except RuntimeError:  # the same options, other tensors: another type
            return
        if drawing.adapted(*canvas.resolution, canvas.options):  # the options it was saved with, to those now
            self.canvas = drawing

    def _set_fair(self) -> None:
        """`feature_scale: fair`: the factors come from the start picture."""
        fair = [t for t in self.targets if t.node.feature_scale() == "fair" and t.features]
        if fair:
            with torch.no_grad():
                picture = Shown(self.canvas.image()[None])
                for target, features in zip(fair, self.critique(fair, [picture] * len(fair))):
                    target.set_fair(features)

    # --- the loop -------------------------------------------------------------------------------------------

    def variables(self, epoch: int) -> dict:
        """Time variables (and `epochs`) of an epoch."""
        return epoch_variables(epoch, self.epochs)

    def emit(self, kind: str, **data) -> None:
        event = Event(kind, self.epoch, self.epochs, self.epochs_done, self.runtime, self.seed, self.device,
                      self.config, self.image, self.statistics, self.stop, self.facts, self.state_dict,
                      **{"loss": self.loss, "learnrate": self.learnrate, "learnrate_scale": self.learnrate_scale,
                         **data})
        for listener in self.listeners:
            listener(event)

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to stop after the current epoch (thread-safe); `reason` is what `run` returns."""
        self.stop_reason = reason
        self.stop_requested.set()

    def run(self) -> str:
        """Train until `epochs` or a stop; returns the reason: done or the stop's. Ctrl-C ("interrupted") and errors
        ("failed", e.g. an expression that divides by zero at some epoch) end the run too, and are re-raised
        after the `end` event, so that listeners still save what exists: the state of the last epoch that
        finished (its image, statistics and random generators)."""
        outcome = together.Together([self]).run()[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def step(self) -> None:
        """One epoch: post-processing, views of all active targets through CLIP in one batch per model, the
        losses summed over all views, one optimizer step; the epoch counters move on."""
        failed = together.step([self])
        if failed:
            raise failed[self]

    def drawing(self):
        """The block in which the run's expressions draw from its own generator (also those evaluated without
        the generator at hand)."""
        return drawing_from(self.expr_rng)

    # --- the parts of an epoch (together.step runs them for one run or several) ---------------------------

    def prepare(self) -> "together.Epoch":
        """The schedule of the epoch, the post-processing and the views of the active targets."""
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
        self.residual = config.residual_gradient(variables)
        self.guard.start()
        self.postprocess(variables)

        picture = self.canvas.image()
        active = [t for t in self.targets if t.is_active(variables)]
        shown = [Shown(t.views(picture, variables, self.rng, self.expr_rng)) for t in active]
        views = [s.at(self.critic.critics[0].input_size) for s in shown]  # as the constraints see them
        seen = [t.needs_critic(variables) for t in active]  # targets that need CLIP
        return together.Epoch(variables, active, views, seen, [(t, s) for t, s, need in zip(active, shown, seen) if need])

    def score(self, epoch: "together.Epoch", features: list[dict]) -> None:
        """The loss of the epoch: summed over the views of the active targets (`features`: CLIP's, of the
        targets that need them, in the order of `epoch.critiqued`)."""
        features = iter(features)
        loss, weighted = torch.zeros((), device=self.device), False
        for target, v, need in zip(epoch.active, epoch.views, epoch.seen):
            part, any_weight = target.loss(next(features) if need else None, v, epoch.variables, self.rng,
                                           self.expr_rng)
            loss, weighted = loss + part, weighted or any_weight
        self.optimizer.zero_grad(set_to_none=True)
        epoch.loss = loss
        epoch.backward = weighted and loss.requires_grad  # all weights zero: no step at all (not even momentum)

    def conclude(self, epoch: "together.Epoch") -> None:
        """After the backward pass: the check of the guard, the optimizer step; the epoch counters move on."""
        loss = epoch.loss
        self.guard.check(self.epoch, loss, self.learnrate, [g["lr"] for g in self.optimizer.param_groups])
        if loss.requires_grad:
            self.optimizer.step()
        self.loss = loss.detach()
        self.epoch += 1
        self.epochs_done += 1
        self.guard.verify()
        self.at_epoch_start = self._random_state()

    def critique(self, targets: list, views: list, owners: list | None = None) -> list[dict]:
        """CLIP features of each target's views (`views.Shown`) for each model it uses ({member: [B, D]}): one
        pass per model for all the views that model sees, split into passes that fit the memory (Passes).
        `owners`: the run each target belongs to, when several runs share the pass (see `Ensemble.encode`)."""
        compiled = self.config.compile()

        def encode(critic, batches, parts):
            def seen(part, *parts):  # inside the checkpoint of a split pass, so its recomputation scales alike
                with residual_gradient(self.residual):
                    return critic.encode_seen(part, compiled, *parts)

            with self.autocast():
                return self.passes.encode(seen, batches, critic, parts)
        return self.critic.encode(views, [t.uses for t in targets], encode=encode, owners=owners)

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

    # --- what the guard and the out-of-memory retry go back to ---------------------------------------------

    def _keep(self) -> tuple:
        return (self.epoch, self.epochs_done, {k: v.detach().clone() for k, v in self.canvas.state_dict().items()},
                [t.stats.snapshot() for t in self.targets])

    def _restore(self, kept: tuple) -> None:
        self.epoch, self.epochs_done, tensors, stats = kept
        self.canvas.load_state_dict(tensors)
        for target, saved in zip(self.targets, stats):
            target.stats = saved

    def _undo(self) -> None:
        """Back to the start of the epoch that did not finish: its image, statistics and random generators."""
        self.optimizer.zero_grad(set_to_none=True)
        self.guard.rewind()
        set_random_state(self.rng, self.expr_rng, self.at_epoch_start, self.seed + self.epoch)

    def _random_state(self) -> dict:
        return random_state(self.rng, self.expr_rng)

    # --- what listeners read --------------------------------------------------------------------------------

    def image(self, unclamped: bool = False) -> torch.Tensor:
        """The current image [3, H, W] on the CPU: in [0, 1], or `unclamped`, the values the parameterization
        holds (what continuing starts from)."""
        with torch.no_grad():
            image = self.canvas.unclamped() if unclamped else self.canvas.image()
        return image.detach().to("cpu", torch.float32, copy=unclamped)  # never the parameter's own memory

    def statistics(self) -> list[dict]:
        """Per-target statistics (see Target.statistics)."""
        return [t.statistics() for t in self.targets]

    def facts(self) -> Facts:
        return Facts(self.seed, self.epoch, self.epochs, self.epochs_done, self.first_epoch, self.runtime,
                     self.device, self.precision, tuple({"name": c.name, "sha256": c.checksum}
                                                        for c in self.critic.critics),
                     self.statistics(), self.continued, None if self.chosen_seed == self.seed else self.chosen_seed)

    @property
    def runtime(self) -> float:
        return self.runtime_before + (0.0 if self.started_at is None else time.monotonic() - self.started_at)

    # --- the state: what the next epoch depends on ----------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything the next epoch depends on, as plain data (run.state): the parameterization's options and
        tensors, the optimizer's state, every random generator, the epoch, the targets' statistics and what
        listeners keep (`state_dict()` of a listener, e.g. the video's file and frame count)."""
        return {
            "seed": self.seed, "epoch": self.epoch, "epochs": self.epochs, "runtime": self.runtime,
            "first_epoch": self.first_epoch, "continued": self.continued,
            "parameterization": {"options": dict(self.canvas.options), "tensors": plain(self.canvas.state_dict())},
            "optimizer": plain(self.optimizer.state_dict()),
            "random": self._random_state(),
            "targets": [{"fair": None if t.fair is None else t.fair.cpu(), "weights": list(t.weights),
                         "constraint_weights": list(t.constraint_weights), "stats": plain(t.stats)}
                        for t in self.targets],
            "listeners": {type(x).__name__: x.state_dict() for x in self.listeners if hasattr(x, "state_dict")},
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from a state: one that `state_dict` captured (in a fresh Engine of the same configuration the
        run continues exactly as if it had never stopped), or just {"epoch": N, "image": [3, H, W]} (an
        unclamped picture, scaled to cover the canvas: the live editor's continuation after edits)."""
        self.epoch = state["epoch"]
        if "parameterization" not in state:  # as a run of the configuration that starts at this epoch
            self.expr_rng.seed(self.seed)
            self.canvas = self._canvas_at(self.epoch, state["image"])
            self._keep_drawing(state.get("drawing"))
            self.optimizer = self._optimizer()
            self.at_epoch_start = self._random_state()
            self.first_epoch, self.runtime_before, self.continued = self.epoch, 0.0, True
            self._set_fair()
            return
        self.runtime_before = state["runtime"]
        self.first_epoch = state.get("first_epoch", self.config.start_epoch())
        self.continued = state.get("continued", False)
        saved, canvas = state["parameterization"], self.canvas
        if saved["options"] != canvas.options:  # options that changed during the run (expressions of time)
            canvas = type(canvas)(*canvas.resolution, canvas.device, **saved["options"])
        canvas.load_state_dict(saved["tensors"])  # also its resolution
        self.canvas = canvas
        self.optimizer = self._optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.at_epoch_start = state["random"]
        set_random_state(self.rng, self.expr_rng, state["random"], self.seed + self.epoch)
        for target, data in zip(self.targets, state["targets"]):
            target.fair = None if data["fair"] is None else data["fair"].to(self.device)
            target.weights = list(data["weights"])
            target.constraint_weights = list(data["constraint_weights"])
            put_back(target.stats, data["stats"], self.device)
        for listener in self.listeners:
            saved = state["listeners"].get(type(listener).__name__)
            if saved is not None and hasattr(listener, "load_state_dict"):
                listener.load_state_dict(saved)
