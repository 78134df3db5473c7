"""The state of a run, kept in a file beside its image (`NAME.png` -> `NAME.state`), so that it can go on.

A state holds everything the next epoch depends on (the engine's `state_dict`: the parameterization's options
and tensors, the optimizer's state, every random generator, the epoch, the statistics of the targets and
whatever listeners keep, e.g. the video's file and frame count) and the configuration. Given to `open_run`
with the same configuration, the run continues exactly as if it had never stopped. It is a torch zip of
plain data, read with `weights_only=True` (no code is loaded from it).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import torch

from .. import __version__
from ..config.errors import ConfigError

FORMAT = 1
SUFFIX = ".state"


def state_path(image: Path) -> Path:
    return Path(image).with_suffix(SUFFIX)


def wrapped(state: dict, config_text: str, reason: str, key: str | None = None) -> dict:
    """A run's state (Engine.state_dict) as the file holds it: with the format, the version, the configuration
    (the sidecar's text, from which `clipig resume` rebuilds the run), how the run ended and `key` (the job of
    `rank`/`batch` it belongs to)."""
    return {"format": FORMAT, "clipig": __version__, "key": key, "reason": reason, "config": config_text, **state}


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
    it ends (a run that ends in the middle of an epoch is saved as it was at the start of that epoch, so that
    resuming repeats it)."""

    def __init__(self, path_of, autosave: float, key: str | None = None):
        self.path_of, self.autosave, self.key = path_of, autosave, key
        self.last = 0.0

    def __call__(self, event) -> None:
        now = time.monotonic()
        if event.kind == "start":
            self.last = now
        elif (event.kind == "epoch" and self.autosave and now - self.last >= self.autosave) or event.kind == "end":
            self.write(event, "running" if event.kind == "epoch" else event.reason)

    def write(self, event, reason: str) -> None:
        path = self.path_of()
        if path is not None:
            save(path, of_event(event, reason, self.key))
        self.last = time.monotonic()


def of_event(event, reason: str, key: str | None = None) -> dict:
    """The state file's contents at an event of a run."""
    from .output import sidecar_text
    return wrapped(event.state(), sidecar_text(event.config, event.facts(), reason), reason, key)
