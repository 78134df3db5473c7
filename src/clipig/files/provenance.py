"""How an image was made: the versions that go into the run record of every PNG (with the models' weight
checksums, see clipig.config.recorded), and the text `clipig info` prints of it."""

from __future__ import annotations

import platform
from pathlib import Path

from .. import __version__


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
    if run.get("continued") or run.get("init_image_tensor"):  # (the name in images of earlier versions)
        lines.append("continued from a picture of the live editor or the Python API (not stored): rendering the "
                     "config again starts from its `init`")
    return "\n".join(lines)
