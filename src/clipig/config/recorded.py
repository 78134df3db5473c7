"""The record CLIPig writes into every PNG as text chunks (iTXt, compressed, readable by any PNG tool), read
back: the configuration goes where a YAML file is expected (`clipig IMAGE.png`), the run record to
`clipig info` and `clipig replay`. The writing side is `clipig.output.png_text`.

  clipig:config  the complete configuration as in the sidecar YAML (seed included, header comments on the run)
  clipig:run     JSON: versions, seed, epochs done, runtime, device, precision, threads, models and checksums
"""

from __future__ import annotations

import json

from .errors import ConfigError

CONFIG_KEY = "clipig:config"
RUN_KEY = "clipig:run"


def read(path, name: str | None = None) -> dict:
    """{'config': YAML text, 'run': dict} of a PNG written by CLIPig (a path or a binary file, called `name` in
    messages); ConfigError naming the file otherwise."""
    name = name or str(path)
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            kind, text = image.format, dict(getattr(image, "text", None) or {})
    except FileNotFoundError:
        raise ConfigError("file not found", file=name) from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ConfigError(f"cannot read the image: {e}", file=name) from None
    if kind != "PNG" or CONFIG_KEY not in text:
        raise ConfigError("this image has no CLIPig provenance (it was not written by CLIPig, or by a version "
                          "before 0.1.0 that did not record it); its sidecar .yaml may still be there",
                          file=name)
    try:
        run = json.loads(text.get(RUN_KEY) or "{}")
    except ValueError:
        run = {}
    return {"config": text[CONFIG_KEY], "run": run}
