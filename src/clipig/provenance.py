"""How an image was made: the versions and the models' weight checksums that go into the run record of every
PNG (see clipig.config.recorded), and the text `clipig info` prints of it."""

from __future__ import annotations

import hashlib
import platform
import weakref
from pathlib import Path

from . import __version__

_CHECKSUMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def weights_checksum(critic) -> str:
    """sha256 of the model's weights as loaded (names, shapes, dtypes and values), computed once per critic."""
    import torch
    if critic not in _CHECKSUMS:
        digest = hashlib.sha256()
        for name, tensor in critic.model.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        _CHECKSUMS[critic] = digest.hexdigest()
    return _CHECKSUMS[critic]


def versions() -> dict:
    import open_clip
    import torch
    return {"clipig": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}


def summary(path: str | Path, info: dict) -> str:
    """The human-readable lines of `clipig info`."""
    from .report import duration
    run = info["run"]
    if not run:
        return f"{path}: CLIPig image (no run record)"
    v = run.get("versions", {})
    state = "finished" if run.get("reason") == "done" else f"{run.get('reason')} at epoch"
    lines = [f"{path}: {state} {run.get('epoch')} of {run.get('epochs')} epochs, seed {run.get('seed')}",
             f"made {run.get('created')} in {duration(run.get('runtime') or 0.0)} on {run.get('device_name')}, "
             f"precision {run.get('precision')}",
             f"clipig {v.get('clipig')}, torch {v.get('torch')}, open_clip {v.get('open_clip')}, "
             f"python {v.get('python')}"]
    lines += [f"model {m['name']}  sha256 {m['sha256']}" for m in run.get("models", [])]
    if run.get("init_image_tensor"):
        lines.append("started from init.image_tensor (not stored): rendering the config again starts from noise")
    return "\n".join(lines)
