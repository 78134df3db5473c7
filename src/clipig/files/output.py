"""Output files: naming that never overwrites, atomic PNG writes, the sidecar YAML, snapshots."""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
import time
from pathlib import Path

import torch
import yaml
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..config.errors import ConfigError
from ..config.recorded import CONFIG_KEY, RUN_KEY
from ..config.schema import to_data
from ..critic.views import to_bytes
from .provenance import versions
from .report import duration, statistics_table

HEADER = "# CLIPig run of "  # the first line of every sidecar
_UMASK = os.umask(0)
os.umask(_UMASK)


def output_path(output: str, config_name: str | None) -> Path:
    """The wanted image path: `dir/` + the config's name, or a `.png` file name."""
    if output.endswith(("/", os.sep)):
        return Path(output) / f"{Path(config_name).stem if config_name else 'clipig'}.png"
    if output.lower().endswith(".png"):
        return Path(output)
    raise ConfigError(f"must be a directory ending with '/' or a file name ending with '.png', got {output!r}",
                      "output")


def reserve(path: Path) -> Path:
    """Create (empty) and return the first free name of `name.png`, `name-1.png`, `name-2.png`, ...; a taken
    name that already ends in a number counts on (`name-1.png` -> `name-2.png`). Creation is exclusive, so
    parallel runs never pick the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, n, numbered = path.stem, 0, re.fullmatch(r"(.*\D)-(\d+)", path.stem)
    if numbered and os.path.exists(path):  # `zz-1.png` taken: `zz-2.png`, not `zz-1-1.png`; `zz-0` -> `zz-1`
        stem, n = numbered.group(1), int(numbered.group(2)) + 1
    while True:
        candidate = path.with_name(f"{stem}{'-' + str(n) if n else ''}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return candidate
        except FileExistsError:
            n += 1


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # as a plainly created file (mkstemp makes it private)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with __import__("contextlib").suppress(OSError):
            os.unlink(tmp)
        raise


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> the picture of its PNG (8 bits per channel, critic.views.to_bytes)."""
    return Image.fromarray(to_bytes(image).numpy())


def write_png(image: torch.Tensor, file, text: dict[str, str] | None = None) -> None:
    """Encode the image as PNG into an open binary file, with compressed text chunks (the provenance)."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value, zip=True)
    to_pil(image).save(file, format="PNG", pnginfo=info)


def save_png(image: torch.Tensor, path: Path, text: dict[str, str] | None = None) -> None:
    atomic_write(path, lambda f: write_png(image, f, text))


def sidecar_text(config, facts=None, reason: str = "done") -> str:
    """The complete configuration (every default filled in) with a comment header about the run (its `Facts`)."""
    data = to_data(config)
    if facts is not None:  # the seed drawn for the run goes where the registry has it, after start_epoch
        ordered = {}
        for key, value in data.items():
            ordered[key] = value
            if key == "start_epoch":
                ordered["seed"] = facts.seed
        data = ordered
    header = [f"{HEADER[2:]}{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}"]
    if facts is not None:
        state = "finished:" if reason == "done" else f"{reason} at epoch"
        header += [f"{state} {facts.epoch} of {facts.epochs} epochs ({facts.epochs_done} in this run)",
                   f"runtime: {duration(facts.runtime)} ({facts.seconds_per_epoch:.3f}s per epoch) on "
                   f"{where(facts.device)}", "", *statistics_table(facts.statistics).splitlines()]
        if facts.continued:
            header.append(f"(continued at epoch {facts.first_epoch} from a picture of the live editor or the Python "
                          "API, not stored)")
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
    return "".join(f"# {line}".rstrip() + "\n" for line in header) + "\n" + body


def where(device) -> str:
    """'cpu, 2 threads' or 'cuda:0 (NVIDIA H100 ...)'."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device}, {torch.get_num_threads()} threads"


def write_sidecar(path: Path, text: str, replace_own: bool = False) -> bool:
    """Write the sidecar only if it does not exist yet (`replace_own`: or is one CLIPig wrote); True if written."""
    if replace_own and path.is_file() and path.read_text(encoding="utf-8", errors="replace").startswith(HEADER):
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
        return True
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def run_info(facts, reason: str) -> dict:
    """The machine-readable half of the provenance."""
    return {
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions(),
        "seed": facts.seed,
        **({"chosen_seed": facts.chosen_seed} if facts.chosen_seed is not None else {}),
        "epoch": facts.epoch,
        "epochs": facts.epochs,
        "reason": reason,
        "runtime": round(facts.runtime, 3),
        "device": str(facts.device),
        "device_name": where(facts.device),
        "precision": facts.precision,
        "threads": torch.get_num_threads(),
        "models": [dict(m) for m in facts.models],
        "continued": facts.continued,
    }


def png_text(facts, reason: str, config) -> dict[str, str]:
    """The text chunks of a PNG written during or after a run: the configuration to record (the run's, or
    the live editor's text as written, not its continuation) and the run's `Facts`."""
    return {CONFIG_KEY: sidecar_text(config, facts, reason), RUN_KEY: json.dumps(run_info(facts, reason), indent=1)}


class OutputWriter:
    """Listener that writes the image with its provenance: snapshots while training, the image and sidecar at
    the end. `continues`: the image of the run this one continues (`clipig resume`), written again in place."""

    def __init__(self, config, wanted: Path, continues: Path | None = None):
        self.config, self.wanted, self.continues = config, wanted, continues
        self.path: Path | None = None
        interval = config.snapshot_interval()
        self.every_epochs = interval if isinstance(interval, int) else 0
        self.every_seconds = interval if isinstance(interval, float) else 0.0
        self.last_time = time.monotonic()

    def __call__(self, event) -> None:
        if event.kind == "start":
            self.path = self.continues or reserve(self.wanted)
            save_png(event.image(), self.path, png_text(event.facts(), "running", event.config))
            self.last_time = time.monotonic()
        elif event.kind == "epoch" and self.path is not None:
            due = (self.every_epochs and event.epochs_done % self.every_epochs == 0) or (
                self.every_seconds and time.monotonic() - self.last_time >= self.every_seconds)
            if due:
                save_png(event.image(), self.path, png_text(event.facts(), "running", event.config))
                self.last_time = time.monotonic()
        elif event.kind == "end" and self.path is not None:
            facts = event.facts()
            save_png(event.image(), self.path, png_text(facts, event.reason, event.config))
            write_sidecar(self.path.with_suffix(".yaml"), sidecar_text(event.config, facts, event.reason),
                          replace_own=self.continues is not None)
