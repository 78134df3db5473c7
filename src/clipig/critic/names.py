"""The model-name grammar, in one place: what a `model` name means, read without loading anything.

  * ``mini``, ``mini-2``, ``mini-3``, ``mini-referee``: small CLIPs trained on the mini world, shipped in the package
  * OpenAI names: ``RN50 ... ViT-L/14@336px``
  * open_clip ``ARCH/TAG`` names, e.g. ``ViT-B-32/laion2b_s34b_b79k``
  * ``hf-hub:ORG/NAME``: an open_clip model on the Hugging Face hub (its ``open_clip_config.json`` and weights),
    e.g. the robust ``hf-hub:chs20/fare2-clip``
  * checkpoint files: ``/path/ViT-B-32.pt`` (OpenAI JIT/state dict, the architecture read from the file name) or
    ``ARCH:/path/file.pt|.safetensors``
  * ``random:ARCH`` or ``random:ARCH:SEED`` (random weights of a seed, 0 by default; no download) and
    ``random:tiny`` (a very small CLIP for tests)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .mini import CHECKPOINTS as SHIPPED
from .weights import CHECKPOINT_SUFFIXES, OPENAI_NAMES

HUB_PREFIX = "hf-hub:"
HUB_REPO = r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*"  # ORG/NAME of a Hugging Face repository


@dataclass(frozen=True)
class ModelName:
    """A parsed model name. kind: shipped | random | openai | pretrained (open_clip ARCH/TAG) | hub | file |
    unknown; `arch` the open_clip architecture (when the name tells it), `tag` the pretrained tag, `path` the
    file or the hub's ORG/NAME, `seed` the random weights' seed."""
    name: str
    kind: str
    arch: str | None = None
    tag: str | None = None
    path: str | None = None
    seed: int = 0


def parse(name: str) -> ModelName:
    """What `name` means (open_clip's lists of architectures and pretrained tags are read, nothing loaded)."""
    import open_clip
    name = name.strip()
    if name in SHIPPED:
        return ModelName(name, "shipped")
    if name.startswith("random:"):
        spec = name[len("random:"):]
        arch, _, seed = spec.rpartition(":") if re.fullmatch(r".+:\d+", spec) else (spec, "", "0")
        return ModelName(name, "random", OPENAI_NAMES.get(arch, arch), seed=int(seed))
    if name in OPENAI_NAMES:
        return ModelName(name, "openai", OPENAI_NAMES[name], "openai")
    if name.startswith(HUB_PREFIX):
        repo = name[len(HUB_PREFIX):].strip()
        return ModelName(name, "hub" if re.fullmatch(HUB_REPO, repo) else "unknown", path=repo)
    arch, sep, rest = name.partition(":")
    if sep and (arch in OPENAI_NAMES or arch in open_clip.list_models()):
        return ModelName(name, "file", OPENAI_NAMES.get(arch, arch), path=rest)
    if tuple(name.split("/", 1)) in set(open_clip.list_pretrained()):
        arch, tag = name.split("/", 1)
        return ModelName(name, "pretrained", arch, tag)
    if (os.path.exists(os.path.expanduser(name)) or name.lower().endswith(CHECKPOINT_SUFFIXES)
            or name.startswith(("/", ".", "~", "\\"))):
        return ModelName(name, "file", path=name)
    return ModelName(name, "unknown")
