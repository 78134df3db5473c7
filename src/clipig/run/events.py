"""What a run tells its listeners: `Event`s of plain values, and functions for what costs something to read
(the image, the statistics, the facts for a PNG, the state to go on from). Listeners never see the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Facts:
    """A snapshot of a run's facts, for the PNG's provenance, the sidecar's header and the state file."""
    seed: int
    epoch: int  # epochs done in the schedule
    epochs: int
    epochs_done: int  # epochs trained by this run
    first_epoch: int  # where the runs this one continues began (the runtime counts from there)
    runtime: float  # seconds, the runs this one continues included
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    models: tuple  # ({"name": ..., "sha256": ...}, ...): the critic's models and their weights' checksums
    statistics: list  # per-target statistics (see Target.statistics)
    continued: bool  # started from a picture that no configuration holds (the live editor's continuation)
    chosen_seed: int | None = None  # `starts`: the seed of the start the run went on as, when not its own

    @property
    def seconds_per_epoch(self) -> float:
        trained = self.epoch - self.first_epoch
        return self.runtime / trained if trained > 0 else 0.0


@dataclass
class Event:
    """What listeners receive. kind is start | epoch | end."""
    kind: str
    epoch: int  # epochs done in the schedule (the next epoch to train)
    epochs: int
    epochs_done: int  # epochs trained by this run
    runtime: float  # seconds since the run started (the runs it continues included)
    seed: int
    device: torch.device
    config: Any  # the experiment (validated config)
    image: Callable[..., torch.Tensor]  # [3, H, W] on the CPU in [0, 1]; unclamped=True: the state to continue from
    statistics: Callable[[], list]  # per-target statistics
    stop: Callable[[], None]  # ask the run to stop after this epoch
    facts: Callable[[], Facts]  # the run's facts now
    state: Callable[[], dict]  # the run's state now: what `open_run(..., state=)` goes on from
    loss: torch.Tensor | None = None  # the loss of the last epoch (on the device); None before the first
    learnrate: float = 0.0  # the learning rate of the last epoch (base rate * learnrate * learnrate_scale)
    learnrate_scale: float = 1.0
    reason: str | None = None  # end: done | stopped | interrupted | failed
