"""Targets at run time: their views, feature losses (select all/best/worst/mix), constraints and statistics.

Statistics stay on the device and are only read (copied to the host) when a listener asks for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config.expressions import similarity_variables
from .config.timing import is_on
from .constraints import constraint_loss
from .geometry import Views, as_tensor


class Accumulator:
    """Running count/sum/min/max of per-view values for several columns, kept on the device."""

    def __init__(self, columns: int, device):
        self.count = torch.zeros(columns, device=device)
        self.sum = torch.zeros(columns, device=device)
        self.min = torch.full((columns,), float("inf"), device=device)
        self.max = torch.full((columns,), float("-inf"), device=device)

    def add(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        """values, mask: [views, columns]; only masked entries count."""
        values, mask = values.detach().float(), mask.float()
        self.count += mask.sum(0)
        self.sum += (values * mask).sum(0)
        self.min = torch.minimum(self.min, torch.where(mask > 0, values, float("inf")).amin(0))
        self.max = torch.maximum(self.max, torch.where(mask > 0, values, float("-inf")).amax(0))

    def read(self) -> list[dict]:
        count, total, lo, hi = (t.tolist() for t in (self.count, self.sum, self.min, self.max))
        return [{"count": int(c), "mean": s / c if c else None, "min": lo_ if c else None, "max": hi_ if c else None}
                for c, s, lo_, hi_ in zip(count, total, lo, hi)]


class TargetStats:
    def __init__(self, features: int, constraints: int, device):
        self.trained = Accumulator(features, device)  # loss of each feature on the views it was trained with
        self.similarity = Accumulator(features, device)  # similarity of each active feature to every view
        self.constraints = Accumulator(max(constraints, 1), device)
        self.epochs = 0


class Target:
    """One target of the experiment, ready to run."""

    def __init__(self, node, index: int, critic, device):
        self.node, self.index = node, index
        self.name = node.name()
        self.features = node.features
        self.constraints = node.constraints
        texts = [(i, f.text()) for i, f in enumerate(self.features) if f.text is not None]
        images = [(i, f.image()) for i, f in enumerate(self.features) if f.image is not None]
        vectors = [None] * len(self.features)
        if texts:
            for (i, _), v in zip(texts, critic.encode_text([t for _, t in texts])):
                vectors[i] = v
        if images:
            for (i, _), v in zip(images, critic.encode_image_files([s for _, s in images])):
                vectors[i] = v
        self.vectors = torch.stack(vectors).to(device).float() if vectors else torch.zeros(0, critic.embed_dim,
                                                                                          device=device)
        self.normed = F.normalize(self.vectors, dim=-1)
        self.fair: torch.Tensor | None = None
        self.weights: list = [None] * len(self.features)  # last applied (feature * target weight); None: never
        self.window = TargetStats(len(self.features), len(self.constraints), device)
        self.total = TargetStats(len(self.features), len(self.constraints), device)
        self.device = device
        self.uses_sim = _uses_sim(node.weight, *(v for c in node.constraints for v in c.params.values()))

    def labels(self) -> list[str]:
        return [f.text() if f.text is not None else f.image() for f in self.features]

    def is_active(self, variables: dict) -> bool:
        return bool(self.features or self.constraints) and is_on(self.node, variables)

    def active_features(self, variables: dict) -> list[int]:
        return [i for i, f in enumerate(self.features) if is_on(f, variables)]

    def views(self, pixels: torch.Tensor, variables: dict, rng: torch.Generator, expr_rng) -> torch.Tensor:
        """The batch of transformed views of the [3, H, W] pixels. Consecutive geometric transforms are
        folded into one resampling (see geometry.py); views are expanded to the batch at the first random
        transform, so deterministic ones run once."""
        batch = self.node.batch_size(variables)
        views = Views(pixels[None])
        for entry in self.node.transforms:
            if not is_on(entry.entry, variables):
                continue
            args = entry.arguments(variables, expr_rng)
            if entry.spec.random:
                views = expand(views, batch)
                args["rng"] = rng
            geometry = entry.spec.flags.get("geometry")
            views = geometry(Views.of(views), **args) if geometry else entry.spec.fn(as_tensor(views), **args)
        return as_tensor(expand(views, batch))

    def loss(self, features, views: torch.Tensor, variables: dict, rng, expr_rng) -> torch.Tensor:
        """The weighted loss of this target for its views and their CLIP `features` [B, D] (None when no
        feature is active); updates the statistics."""
        active = self.active_features(variables)
        if features is None:
            cos = views.new_zeros(views.shape[0], len(self.features))
        else:
            cos = F.normalize(features.float(), dim=-1) @ self.normed.T  # [B, F]
        sim = cos * 100.0
        detached = sim.detach()
        if self.fair is None and features is not None and self.node.feature_scale() == "fair":
            mean_sim = detached.mean(0)
            self.fair = torch.where(mean_sim.abs() > 1e-6, mean_sim.mean() / mean_sim, torch.ones_like(mean_sim))
        target_vars = {**variables, **similarity_variables(_mean_item(detached, active, self.uses_sim))}
        target_weight = self.node.weight(target_vars)
        total = views.new_zeros((), dtype=torch.float32)
        count = len(self.constraints)
        constraint_losses = torch.zeros(1, max(count, 1), device=self.device)
        constraint_mask = torch.zeros(1, max(count, 1), device=self.device)
        for j, entry in enumerate(self.constraints):
            if not is_on(entry.params, target_vars):
                continue
            args = entry.arguments(target_vars, expr_rng)
            value = constraint_loss(entry.spec, views, args, rng)
            total = total + target_weight * args["weight"] * value
            constraint_losses[0, j], constraint_mask[0, j] = value.detach(), 1
        trained = None
        if active:
            feature_loss, trained = self._feature_loss(features, cos, detached, active, variables, target_weight)
            total = total + target_weight * feature_loss
        for stats in (self.window, self.total):
            self._record(stats, detached, active, trained, constraint_losses, constraint_mask)
        return total

    def _feature_loss(self, features, cos, sim, active, variables, target_weight: float):
        """The feature loss and what was trained: (per view and feature losses [B, A], mask [B, A], indices)."""
        batch = features.shape[0]
        weights, scales, losses = [], [], []
        for i in active:
            f = self.features[i]
            needed = _uses_sim(f.weight, f.scale, f.loss)
            fvars = {**variables, **similarity_variables(_mean_item(sim, [i], needed))}
            weights.append(f.weight(fvars))
            scales.append(f.scale(fvars))
            losses.append(f.loss(fvars))
        for i, w in zip(active, weights):
            self.weights[i] = w * target_weight
        idx = torch.tensor(active, device=self.device)
        w = torch.tensor(weights, device=self.device)
        select = self.node.select()
        if select == "mix":
            mixed = (w[:, None] * self.normed[idx]).sum(0, keepdim=True)
            per_view = _loss(features, mixed, losses[0], F.normalize(features.float(), dim=-1) @
                             F.normalize(mixed, dim=-1).T)[:, 0]
            per_feature = per_view[:, None].expand(batch, len(active))
            mask = torch.ones(batch, len(active), device=self.device)
            return per_view.mean(), (per_feature, mask, idx)
        per_feature = torch.stack([_loss(features, self.vectors[i:i + 1], loss, cos[:, i:i + 1])[:, 0]
                                   for i, loss in zip(active, losses)], dim=1)  # [B, A]
        if select == "all":
            mask = torch.ones_like(per_feature)
        else:
            scaled = sim[:, idx] * torch.tensor(scales, device=self.device)
            if self.fair is not None:
                scaled = scaled * self.fair[idx]
            choice = scaled.argmax(1) if select == "best" else scaled.argmin(1)
            mask = F.one_hot(choice, len(active)).float()
        return (per_feature * mask * w).sum(1).mean(), (per_feature, mask, idx)

    def _record(self, stats: TargetStats, sim, active, trained, constraint_losses, constraint_mask) -> None:
        stats.epochs += 1
        stats.constraints.add(constraint_losses, constraint_mask)
        if not active:
            return
        full_mask = torch.zeros_like(sim)
        full_mask[:, active] = 1
        stats.similarity.add(sim, full_mask)
        per_feature, mask, idx = trained
        values, counted = torch.zeros_like(sim), torch.zeros_like(sim)
        values[:, idx] = per_feature.detach().float()
        counted[:, idx] = mask
        stats.trained.add(values, counted)

    def statistics(self, stats: TargetStats | None = None) -> dict:
        """Host copy of the statistics: per feature weight, training count and share, loss and similarity."""
        stats = stats or self.total
        trained, similarity = stats.trained.read(), stats.similarity.read()
        views = sum(t["count"] for t in trained) or 1
        features = [{"label": label, "weight": self.weights[i], "count": trained[i]["count"],
                     "share": trained[i]["count"] / views, "loss": _triple(trained[i]),
                     "similarity": _triple(similarity[i])} for i, label in enumerate(self.labels())]
        constraints = [{"label": entry.name, "loss": _triple(c)}
                       for entry, c in zip(self.constraints, stats.constraints.read())]
        return {"name": self.name, "epochs": stats.epochs, "features": features, "constraints": constraints}

    def reset_window(self) -> None:
        self.window = TargetStats(len(self.features), len(self.constraints), self.device)


def expand(views, batch: int):
    """Views (lazy or a tensor) with `batch` entries."""
    if isinstance(views, Views):
        views.batch = batch
        return views
    return views.expand(batch, -1, -1, -1) if views.shape[0] != batch else views


def _triple(acc: dict) -> dict:
    return {k: acc[k] for k in ("mean", "min", "max")}


def _uses_sim(*values) -> bool:
    return any(v is not None and v.names & {"similarity", "sim"} for v in values)


def _mean_item(sim: torch.Tensor, columns, needed: bool) -> float:
    """Mean similarity of `columns`, read from the device only when an expression needs it."""
    return float(sim[:, columns].mean()) if needed and columns else 0.0


def _loss(features: torch.Tensor, targets: torch.Tensor, loss: str, cos: torch.Tensor) -> torch.Tensor:
    """Per view and target loss [B, T]: cosine (1 - cos), l1 or l2 of the raw feature vectors."""
    if loss == "cosine":
        return 1.0 - cos
    diff = features.float()[:, None, :] - targets[None, :, :]
    return diff.abs().mean(-1) if loss == "l1" else (diff * diff).mean(-1)
