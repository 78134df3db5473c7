"""The state of a run, kept in a file beside its image (`NAME.png` -> `NAME.state`), so that it can go on.

A state holds everything the next epoch depends on: the parameterization's options and tensors (its
`state_dict`, with the resolution), the
optimizer's state, every random generator (torch's and the expressions'), the epoch, the statistics of the
targets and whatever listeners keep (e.g. the video's file and frame count). Restored into a fresh Engine of
the same configuration, the run continues exactly as if it had never stopped. It is a torch zip of plain data,
read with `weights_only=True` (no code is loaded from it).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import torch

from . import __version__
from .config.errors import ConfigError

FORMAT = 1
SUFFIX = ".state"


def state_path(image: Path) -> Path:
    return Path(image).with_suffix(SUFFIX)


def random_state(engine) -> dict:
    """Every random generator the run draws from."""
    return {"torch": engine.rng.get_state(), "device": str(engine.rng.device),
            "expressions": engine.expr_rng.getstate()}


def set_random_state(engine, state: dict) -> None:
    if state["device"] == str(engine.rng.device):
        engine.rng.set_state(state["torch"])
    else:  # a CPU generator's state does not fit a CUDA one: go on deterministically, but not identically
        engine.rng.manual_seed(engine.seed + engine.epoch)
    engine.expr_rng.setstate(state["expressions"])


def _plain(value):
    """Tensors (on the CPU), dicts, lists and tuples, and objects (a target's statistics: counts, tensors,
    `Recent` windows) as dicts of their attributes: what `torch.load(weights_only=True)` reads back."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if hasattr(value, "__dict__"):
        return {k: _plain(v) for k, v in vars(value).items()}
    return value


def _set_stats(target, data, device):
    """Put statistics saved by `_plain` back into the same structure; returns what goes where `target` was."""
    if isinstance(target, torch.Tensor):
        return data.to(device)
    if isinstance(target, list):
        return [_set_stats(t, d, device) for t, d in zip(target, data)]
    if hasattr(target, "__dict__"):
        for k, v in data.items():
            setattr(target, k, _set_stats(getattr(target, k), v, device))
        return target
    return data


def capture(engine, reason: str, random: dict | None = None, key: str | None = None) -> dict:
    """The state of `engine` now (`random`: the generators as they were at the start of the epoch, for a run
    that stopped in the middle of one). `key` identifies the job for `rank`/`batch`."""
    from .output import sidecar_text
    listeners = {type(x).__name__: x.state_dict() for x in engine.listeners if hasattr(x, "state_dict")}
    return {
        "format": FORMAT, "clipig": __version__, "key": key, "reason": reason,
        "config": sidecar_text(engine.config, engine, reason),
        "seed": engine.seed, "epoch": engine.epoch, "epochs": engine.epochs, "runtime": engine.runtime,
        "parameterization": {"options": dict(engine.canvas.options),
                             "tensors": _plain(engine.canvas.state_dict())},
        "optimizer": _plain(engine.optimizer.state_dict()),
        "random": random or random_state(engine),
        "targets": [{"fair": None if t.fair is None else t.fair.cpu(), "weights": list(t.weights),
                     "constraint_weights": list(t.constraint_weights), "stats": _plain(t.stats)}
                    for t in engine.targets],
        "listeners": listeners,
    }


def restore(engine, state: dict) -> None:
    """Put a captured state into a fresh Engine of the same configuration."""
    engine.epoch, engine.runtime_before = state["epoch"], state["runtime"]
    saved, canvas = state["parameterization"], engine.canvas
    if saved["options"] != canvas.options:  # options that changed during the run (expressions of time)
        canvas = type(canvas)(*canvas.resolution, canvas.device, **saved["options"])
    canvas.load_state_dict(saved["tensors"])  # also its resolution
    engine.canvas = canvas
    engine.optimizer = engine._optimizer()
    engine.optimizer.load_state_dict(state["optimizer"])
    set_random_state(engine, state["random"])
    for target, data in zip(engine.targets, state["targets"]):
        target.fair = None if data["fair"] is None else data["fair"].to(engine.device)
        target.weights = list(data["weights"])
        target.constraint_weights = list(data["constraint_weights"])
        _set_stats(target.stats, data["stats"], engine.device)
    for listener in engine.listeners:
        saved = state["listeners"].get(type(listener).__name__)
        if saved is not None and hasattr(listener, "load_state_dict"):
            listener.load_state_dict(saved)


def save(path: Path, state: dict) -> None:
    """Write atomically: a reader (or a crash) never sees half a state."""
    from .output import atomic_write
    data, path = to_bytes(state), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def to_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load(path: str | Path) -> dict:
    """A state file, or ConfigError naming it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError("file not found (a run writes its state beside its image: NAME.png -> NAME.state)",
                          file=str(path)) from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise ConfigError(f"cannot read the state file: {' '.join(str(e).split())[:200]}", file=str(path)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"not a CLIPig state file of format {FORMAT}", file=str(path))
    return state


class StateWriter:
    """Listener: saves the state every `autosave` seconds (0: never in between) and when the run ends, however
    it ends. A run that ends in the middle of an epoch (an error, a second Ctrl-C) is saved with the random
    generators as they were at the start of that epoch, so that resuming repeats it."""

    def __init__(self, path_of, autosave: float, key: str | None = None):
        self.path_of, self.autosave, self.key = path_of, autosave, key
        self.boundary: dict | None = None
        self.last = 0.0

    def __call__(self, event) -> None:
        engine, now = event.engine, time.monotonic()
        if event.kind == "start":
            self.last = now
        elif event.kind == "epoch" and self.autosave and now - self.last >= self.autosave:
            self.write(engine, "running")
        elif event.kind == "end":
            reason = event.reason
            self.write(engine, reason, self.boundary if reason in ("interrupted", "failed") else None)
            return
        self.boundary = random_state(engine)

    def write(self, engine, reason: str, random: dict | None = None) -> None:
        path = self.path_of()
        if path is not None:
            save(path, capture(engine, reason, random, self.key))
        self.last = time.monotonic()
