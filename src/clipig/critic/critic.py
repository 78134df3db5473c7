"""A `Critic` is one frozen CLIP model with its preprocessing and feature caches; an `Ensemble` is the critic a
run sees: one or more weighted `Critic`s. `models.open_critic` opens them by name."""
from __future__ import annotations

import functools
import hashlib

import torch
import torch.nn.functional as F

from . import fast_vision, residual
from .images import load_image, source_key
from .views import OPENAI_MEAN, OPENAI_STD, Shown, seen
from .weights import ModelError, one_line

# ---------------------------------------------------------------- one model

class Critic:
    """A frozen CLIP model plus CLIP preprocessing and feature caches."""

    def __init__(self, name: str, model: torch.nn.Module, tokenizer, device: torch.device):
        self.name, self.device, self.tokenizer = name, torch.device(device), tokenizer
        self.model = model.to(self.device).float().eval().requires_grad_(False)
        self.speedups = fast_vision.speed_up(self.model.visual)
        self.residual_branches = residual.install(self.model.visual)  # for `residual_gradient`
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

    @functools.cached_property
    def checksum(self) -> str:
        """sha256 of the model's weights as loaded (names, shapes, dtypes and values)."""
        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        return digest.hexdigest()

    def __repr__(self):
        return f"Critic({self.name!r}, device={self.device}, input_size={self.input_size}, embed_dim={self.embed_dim})"

    def encode_image(self, images, compiled: bool = False) -> torch.Tensor:
        """Pixels -> raw float32 features [B,D]; differentiable w.r.t. the pixels. `images`: a [B,3,H,W] batch
        or a list of batches of any sizes, seen as the model sees them (`views.seen`: resized to its input,
        clamped) and encoded in one pass. `compiled`: through `torch.compile` of the image tower (compiled
        once per critic)."""
        return self.encode_seen(seen(images, self.input_size), compiled)

    def encode_seen(self, pixels: torch.Tensor, compiled: bool = False, parts: list[int] | None = None
                    ) -> torch.Tensor:
        """`encode_image` of views already seen at the input size (`views.seen`). `parts`: the number of views
        of each run in the batch (runs together), whose features must not depend on each other's: a ViT's
        final projection is done for each part apart (fast_vision.vision_forward)."""
        pixels = (pixels.to(self.device, torch.float32) - self._mean) / self._std
        if compiled:
            return self._compiled_visual(pixels).float()
        if parts and getattr(self.model.visual, "takes_parts", False):
            return self.model.visual(pixels, parts).float()
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


# ---------------------------------------------------------------- the critic of a run

class Ensemble:
    """The critic of a run: one or more frozen CLIP models with weights. A feature's similarity (and loss) is
    the weighted mean of the models' similarities (and losses), with the weights of the models a target uses
    normalised to sum 1. Each model sees the views resized from the original views to its own input size."""

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

    def encode(self, views: list, uses: list, compiled: bool = False, encode=None, owners: list | None = None
               ) -> list[dict[int, torch.Tensor]]:
        """CLIP features of groups of views (each a batch of views or a `views.Shown` of one): for each group,
        {member index: [B, D]} of the members in its `uses`. Every member encodes all the groups it is used by,
        each resized from the original views to its input size, in one pass (`encode(critic, batches, parts)`
        of seen batches, default `critic.encode_seen`). `owners`: the run each group belongs to when
        several runs share the pass (their groups one after the other); `parts` then counts each run's views."""
        views = [v if isinstance(v, Shown) else Shown(v) for v in views]
        features: list[dict[int, torch.Tensor]] = [{} for _ in views]
        if encode is None:
            def encode(critic, batches, parts):
                return critic.encode_seen(batches[0] if len(batches) == 1 else torch.cat(batches), compiled, parts)
        for m, critic in enumerate(self.critics):
            groups = [g for g, used in enumerate(uses) if m in used]
            if groups:
                batches = [views[g].at(critic.input_size) for g in groups]
                runs = None if owners is None else list(dict.fromkeys(owners[g] for g in groups))
                parts = runs and [sum(len(views[g]) for g in groups if owners[g] == run) for run in runs]
                encoded = encode(critic, batches, parts)
                for g, part in zip(groups, encoded.split([len(views[g]) for g in groups])):
                    features[g][m] = part
        return features
