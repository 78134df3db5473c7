"""The CLIP critic of a run: `open_critic` opens one model or an ensemble, as boring to call as open_clip's
`create_model`. A `Critic` is one frozen model with its preprocessing and feature caches; an `Ensemble` is
the critic the engine sees: one or more weighted `Critic`s.

Model names (resolved by `_build_model`, the one place that knows them):
  * OpenAI names: ``RN50 ... ViT-L/14@336px``
  * open_clip ``ARCH/TAG`` names, e.g. ``ViT-B-32/laion2b_s34b_b79k``
  * checkpoint files: ``/path/ViT-B-32.pt`` (OpenAI JIT/state dict) or ``ARCH:/path/file.pt|.safetensors``
  * ``random:ARCH`` or ``random:ARCH:SEED`` (random weights of a seed, 0 by default; no download) and
    ``random:tiny`` (a very small CLIP for tests)
  * ``mini``, ``mini-2`` and ``mini-referee``: small CLIPs trained on the mini world, shipped in the package (clipig.mini)
Downloads and checkpoint formats live in `weights.py`, image files in `images.py`.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re

import torch
import torch.nn.functional as F

from . import fast_vision, weights
from .images import load_image, source_key
from .mini.model import CHECKPOINTS as MINI_CHECKPOINTS  # trained by clipig.mini.train, shipped
from .weights import OPENAI_NAMES, ModelError, one_line

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_CRITICS: dict[tuple[str, str], "Critic"] = {}


# ---------------------------------------------------------------- model names

@contextlib.contextmanager
def _quiet_random_init():
    """Hide open_clip's 'No pretrained weights loaded' warning."""
    class _Filter(logging.Filter):
        def filter(self, record):
            return not str(record.msg).startswith("No pretrained weights loaded")
    log_filter = _Filter()
    logging.getLogger().addFilter(log_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(log_filter)


def _tiny_clip() -> torch.nn.Module:
    from open_clip.model import CLIP
    return CLIP(embed_dim=32, quick_gelu=True,
                vision_cfg=dict(image_size=224, layers=2, width=64, patch_size=32, head_width=32),
                text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))


def _build_random(spec: str):
    """`ARCH` or `ARCH:SEED` (seed 0 by default): random weights drawn from that seed."""
    import open_clip
    arch, _, seed = spec.rpartition(":") if re.fullmatch(r".+:\d+", spec) else (spec, "", "0")
    arch = OPENAI_NAMES.get(arch, arch)
    if arch != "tiny" and arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, ["tiny", *open_clip.list_models(), *OPENAI_NAMES], n=5, cutoff=0.5)
        raise ModelError(f"Unknown architecture for random weights: {arch!r}."
                         + (f" Did you mean: {', '.join('random:' + c for c in close)}?" if close else ""))
    with torch.random.fork_rng(devices=[]), _quiet_random_init():
        torch.manual_seed(int(seed))
        if arch == "tiny":
            return _tiny_clip(), "ViT-B-32"
        return open_clip.create_model(arch, pretrained_image=False, pretrained_text=False, device="cpu"), arch


def _unknown_model(name: str) -> ModelError:
    import open_clip
    archs = open_clip.list_models()
    if name in archs:
        tags = [f"{name}/{t}" for t in open_clip.list_pretrained_tags_by_model(name)]
        return ModelError(f"Model {name!r} needs a pretrained tag, e.g. {', '.join(tags[:5]) or 'random:' + name}.")
    names = [*OPENAI_NAMES, *(f"{a}/{t}" for a, t in open_clip.list_pretrained()), "random:tiny", *MINI_CHECKPOINTS]
    by_lower = {n.lower(): n for n in names}
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), by_lower, n=5, cutoff=0.5)]
    hint = f"\nDid you mean: {', '.join(close)}?" if close else ""
    return ModelError(f"Unknown CLIP model {name!r}.{hint}\n"
                      "Use an OpenAI name (ViT-B/32), an open_clip ARCH/TAG, a checkpoint path, random:ARCH or mini; "
                      "`clipig models` lists them.")


def _build_mini(name: str):
    from .mini import model as mini
    try:
        return mini.load(name), mini.TOKENIZER
    except (OSError, mini.ChecksumError) as e:
        raise ModelError(f"Could not load the shipped model {name!r}: {one_line(e, 400)}") from None


def _build_model(name: str):
    """(model on cpu, tokenizer architecture) for any supported model name."""
    import open_clip
    if name in MINI_CHECKPOINTS:
        return _build_mini(name)
    if name.startswith("random:"):
        return _build_random(name[len("random:"):])
    if name in OPENAI_NAMES:
        return weights.build_pretrained(name, OPENAI_NAMES[name], "openai")
    arch, sep, rest = name.partition(":")
    if sep and (arch in OPENAI_NAMES or arch in open_clip.list_models()):
        return weights.build_from_file(rest, arch)
    if tuple(name.split("/", 1)) in set(open_clip.list_pretrained()):
        return weights.build_pretrained(name, *name.split("/", 1))
    if (os.path.exists(os.path.expanduser(name)) or name.lower().endswith(weights.CHECKPOINT_SUFFIXES)
            or name.startswith(("/", ".", "~", "\\"))):
        return weights.build_from_file(name, None)
    raise _unknown_model(name)


# ---------------------------------------------------------------- one model

def fit(views, size: int) -> torch.Tensor:
    """One batch of `views` (a [B,3,H,W] batch or a list of batches of any sizes) at size x size: the one place
    where views are resized to a model's input: bicubic and antialiased, as torchvision's resize that the
    original CLIPig uses; views already at the input size pass unchanged."""
    parts = [views] if torch.is_tensor(views) else list(views)
    parts = [v if tuple(v.shape[-2:]) == (size, size) else
             F.interpolate(v, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
             for v in parts]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class Critic:
    """A frozen CLIP model plus CLIP preprocessing and feature caches."""

    def __init__(self, name: str, model: torch.nn.Module, tokenizer, device: torch.device):
        self.name, self.device, self.tokenizer = name, torch.device(device), tokenizer
        self.model = model.to(self.device).float().eval().requires_grad_(False)
        self.speedups = fast_vision.speed_up(self.model.visual)
        size = model.visual.image_size
        self.input_size = int(size if isinstance(size, int) else size[0])
        cfg = getattr(model.visual, "preprocess_cfg", None) or {}
        mean = cfg.get("mean") or getattr(model.visual, "image_mean", None) or OPENAI_MEAN
        std = cfg.get("std") or getattr(model.visual, "image_std", None) or OPENAI_STD
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._image_cache: dict[object, torch.Tensor] = {}
        self._compiled = None
        self.embed_dim = int(getattr(model.visual, "output_dim", 0) or self.encode_text([""]).shape[1])

    def __repr__(self):
        return f"Critic({self.name!r}, device={self.device}, input_size={self.input_size}, embed_dim={self.embed_dim})"

    def encode_image(self, images, compiled: bool = False) -> torch.Tensor:
        """Pixels in [0,1] -> raw float32 features [B,D]; differentiable w.r.t. the pixels. `images`: a
        [B,3,H,W] batch or a list of batches of any sizes, resized to the input size (`fit`) and encoded in
        one pass. `compiled`: through `torch.compile` of the image tower (compiled once per critic)."""
        pixels = (fit(images, self.input_size).to(self.device, torch.float32) - self._mean) / self._std
        if compiled:
            return self._compiled_visual(pixels).float()
        return self.model.encode_image(pixels).float()

    def _compiled_visual(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._compiled is None:
            self._compiled = torch.compile(self.model.visual)
        try:
            return self._compiled(pixels)
        except RuntimeError as e:  # torch._dynamo's errors (a missing C compiler, unsupported operators)
            raise ModelError(f"torch.compile failed for {self.name}: {one_line(e, 300)}\n"
                             "Set `compile: false` (the default) to use the normal path.") from e

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> [N,D] float32 features, cached per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            features = self.model.encode_text(self.tokenizer(missing).to(self.device)).float()
            self._text_cache.update(zip(missing, features))
        return self._stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def encode_image_files(self, sources: list[str]) -> torch.Tensor:
        """Image paths/URLs -> [N,D] features (images squashed to input_size), cached per source."""
        keys = [source_key(s) for s in sources]
        missing = {k: s for k, s in zip(keys, sources) if k not in self._image_cache}
        if missing:
            batch = torch.stack([load_image(s, self.input_size) for s in missing.values()])
            self._image_cache.update(zip(missing, self.encode_image(batch.to(self.device))))
        return self._stack([self._image_cache[k] for k in keys])

    def similarity(self, image_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity * 100, [B,N]."""
        a = F.normalize(image_features.float(), dim=-1)
        b = F.normalize(target_features.float().to(a.device), dim=-1)
        return 100.0 * a @ b.T

    def _stack(self, rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(rows) if rows else torch.empty(0, self.embed_dim, device=self.device)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'."""
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise ModelError(f"Unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N.")
    if not torch.cuda.is_available():
        raise ModelError(f"Device {device!r} was requested but CUDA is not available; use --device cpu (or auto).")
    if match.group(1) and int(match.group(1)) >= torch.cuda.device_count():
        raise ModelError(f"Device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s).")
    return torch.device(text)


def load_critic(name: str, device: str | torch.device = "cpu") -> Critic:
    """Load (or reuse) the critic of one model name on a device."""
    import open_clip
    name, device = name.strip(), resolve_device(device)
    key = (name, str(device))
    if key not in _CRITICS:
        try:
            model, tokenizer_arch = _build_model(name)
            tokenizer = open_clip.get_tokenizer(tokenizer_arch, context_length=getattr(model, "context_length", None))
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"Could not load CLIP model {name!r}: {one_line(e, 400)}") from e
        _CRITICS[key] = Critic(name, model, tokenizer, device)
    return _CRITICS[key]


def clear_cache() -> None:
    """Forget all loaded critics (and with them their feature caches)."""
    _CRITICS.clear()


# ---------------------------------------------------------------- the critic of a run

def model_weights(models) -> dict[str, float]:
    """{name: weight} of a `model` value: a name, or a list of names and `{name, weight}` items. A model named
    twice is one model with the sum of the weights."""
    result: dict[str, float] = {}
    for item in [models] if isinstance(models, str) else models:
        name, weight = (item, 1.0) if isinstance(item, str) else (item["name"], float(item.get("weight", 1.0)))
        result[name.strip()] = result.get(name.strip(), 0.0) + weight
    return result


class Ensemble:
    """The critic of a run: one or more frozen CLIP models with weights. A feature's similarity (and loss) is
    the weighted mean of the models' similarities (and losses), with the weights of the models a target uses
    normalised to sum 1. Each model sees the shared views resized to its own input size."""

    def __init__(self, critics: list[Critic], weights: list[float]):
        self.critics, self.weights = list(critics), [float(w) for w in weights]
        self.names = [c.name for c in self.critics]
        self.device = self.critics[0].device

    def __repr__(self):
        return "Ensemble(" + ", ".join(f"{n!r}: {w:g}" for n, w in zip(self.names, self.weights)) + ")"

    def select(self, names: list[str] | None = None) -> list[tuple[int, float]]:
        """(member index, normalised weight) of the models named (all by default); the weights sum to 1."""
        chosen = [i for i, n in enumerate(self.names) if names is None or n in names]
        total = sum(self.weights[i] for i in chosen)
        return [(i, self.weights[i] / total) for i in chosen]

    def encode(self, views: list[torch.Tensor], uses: list, compiled: bool = False,
               encode=None) -> list[dict[int, torch.Tensor]]:
        """CLIP features of groups of views: for each group, {member index: [B, D]} of the members in its
        `uses`. Every member encodes all the groups it is used by in one pass (`encode(critic, batches)`,
        default `critic.encode_image`)."""
        features: list[dict[int, torch.Tensor]] = [{} for _ in views]
        for m, critic in enumerate(self.critics):
            groups = [g for g, used in enumerate(uses) if m in used]
            if groups:
                batches = [views[g] for g in groups]
                encoded = encode(critic, batches) if encode else critic.encode_image(batches, compiled)
                for g, part in zip(groups, encoded.split([views[g].shape[0] for g in groups])):
                    features[g][m] = part
        return features


def open_critic(models, device: str | torch.device = "cpu") -> Ensemble:
    """The critic of `models` (a name, or a list of names and `{name, weight}` items) on a device."""
    chosen = model_weights(models)
    device = resolve_device(device)
    return Ensemble([load_critic(name, device) for name in chosen], list(chosen.values()))


# ---------------------------------------------------------------- listing

def known_models() -> list[dict]:
    """All model names `load_critic` knows, with their source and whether the weights are cached."""
    import open_clip
    rows = [{"name": n, "source": "openai", "cached": weights.is_cached(a, "openai")} for n, a in OPENAI_NAMES.items()]
    rows += [{"name": f"{a}/{t}", "source": "open_clip", "cached": weights.is_cached(a, t)}
             for a, t in open_clip.list_pretrained() if t != "openai"]
    rows += [{"name": n, "source": "random", "cached": True} for n in ("random:tiny", "random:ViT-B/32")]
    rows += [{"name": n, "source": "shipped", "cached": True} for n in MINI_CHECKPOINTS]
    return rows
