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
    def __init__(self, features: int, constraints: int, models: int, device):
        self.trained = Accumulator(features, device)  # loss of each feature on the views it was trained with
        self.similarity = Accumulator(features, device)  # similarity of each active feature to every view
        self.per_model = [Accumulator(features, device) for _ in range(models)] if models > 1 else []
        self.constraints = Accumulator(max(constraints, 1), device)
        self.epochs = 0


class Target:
    """One target of the experiment, ready to run. With several models (an ensemble) every similarity and
    feature loss is the weighted mean over the models the target uses (`models`, weights summing to 1)."""

    def __init__(self, node, index: int, critic, device):
        self.node, self.index = node, index
        self.name = node.name()
        self.features = node.features
        self.constraints = node.constraints
        self.device = device
        self.models = critic.select(node.model() if node.model is not None else None)  # [(member, weight)]
        self.model_names = [critic.names[m] for m, _ in self.models]
        self.uses = {m for m, _ in self.models}
        self.vectors = [self._vectors(critic.critics[m], device) for m, _ in self.models]  # per model [F, D]
        self.normed = [F.normalize(v, dim=-1) for v in self.vectors]
        self.fair: torch.Tensor | None = None
        self.weights: list = [None] * len(self.features)  # last applied (feature * target weight); None: never
        self.window, self.total = self._stats(), self._stats()
        self.uses_sim = _uses_sim(node.weight, *(v for c in node.constraints for v in c.params.values()))

    def _vectors(self, critic, device) -> torch.Tensor:
        """[F, D] target features of one model (computed once: the critic caches them)."""
        texts = [(i, f.text()) for i, f in enumerate(self.features) if f.text is not None]
        images = [(i, f.image()) for i, f in enumerate(self.features) if f.image is not None]
        vectors = [None] * len(self.features)
        if texts:
            for (i, _), v in zip(texts, critic.encode_text([t for _, t in texts])):
                vectors[i] = v
        if images:
            for (i, _), v in zip(images, critic.encode_image_files([s for _, s in images])):
                vectors[i] = v
        return torch.stack(vectors).to(device).float() if vectors else torch.zeros(0, critic.embed_dim, device=device)

    def _stats(self) -> TargetStats:
        return TargetStats(len(self.features), len(self.constraints), len(self.models), self.device)

    def _mean(self, per_model: list[torch.Tensor]) -> torch.Tensor:
        """The weighted mean over the target's models (one model: its value itself)."""
        if len(per_model) == 1:
            return per_model[0]
        return sum(w * value for (_, w), value in zip(self.models, per_model))

    def cosines(self, features: dict) -> list[torch.Tensor]:
        """Per model, [B, F] cosine similarity of the views' CLIP features ({member: [B, D]}) to the features."""
        return [F.normalize(features[m].float(), dim=-1) @ normed.T for (m, _), normed in zip(self.models, self.normed)]

    def similarity(self, features: dict) -> torch.Tensor:
        """[B, F] similarity (cosine * 100) of views to the features: the weighted mean over the models."""
        return self._mean(self.cosines(features)) * 100.0

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
        """The weighted loss of this target for its views and their CLIP `features` ({member: [B, D]} of the
        models it uses; None when no feature is active); updates the statistics."""
        active = self.active_features(variables)
        cosines = None if features is None else self.cosines(features)
        cos = views.new_zeros(views.shape[0], len(self.features)) if features is None else self._mean(cosines)
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
            feature_loss, trained = self._feature_loss(features, cosines, detached, active, variables,
                                                       target_weight)
            total = total + target_weight * feature_loss
        per_model = [c.detach() * 100.0 for c in cosines] if active and len(self.models) > 1 else []
        for stats in (self.window, self.total):
            self._record(stats, detached, per_model, active, trained, constraint_losses, constraint_mask)
        return total

    def _feature_loss(self, features: dict, cosines, sim, active, variables, target_weight: float):
        """The feature loss and what was trained: (per view and feature losses [B, A], mask [B, A], indices).
        Each loss is the weighted mean of the models' losses."""
        feats = [features[m] for m, _ in self.models]
        batch = feats[0].shape[0]
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
            mixed = [(w[:, None] * normed[idx]).sum(0, keepdim=True) for normed in self.normed]
            per_view = self._mean([_loss(f, m, losses[0], F.normalize(f.float(), dim=-1) @
                                         F.normalize(m, dim=-1).T)[:, 0] for f, m in zip(feats, mixed)])
            per_feature = per_view[:, None].expand(batch, len(active))
            mask = torch.ones(batch, len(active), device=self.device)
            return per_view.mean(), (per_feature, mask, idx)
        per_feature = torch.stack([self._mean([_loss(f, v[i:i + 1], loss, c[:, i:i + 1])[:, 0]
                                               for f, v, c in zip(feats, self.vectors, cosines)])
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

    def _record(self, stats: TargetStats, sim, per_model, active, trained, constraint_losses,
                constraint_mask) -> None:
        stats.epochs += 1
        stats.constraints.add(constraint_losses, constraint_mask)
        if not active:
            return
        full_mask = torch.zeros_like(sim)
        full_mask[:, active] = 1
        stats.similarity.add(sim, full_mask)
        for accumulator, model_sim in zip(stats.per_model, per_model):
            accumulator.add(model_sim, full_mask)
        per_feature, mask, idx = trained
        values, counted = torch.zeros_like(sim), torch.zeros_like(sim)
        values[:, idx] = per_feature.detach().float()
        counted[:, idx] = mask
        stats.trained.add(values, counted)

    def statistics(self, stats: TargetStats | None = None) -> dict:
        """Host copy of the statistics: per feature weight, training count and share, loss and similarity (with
        several models also the similarity of each, under "models")."""
        stats = stats or self.total
        trained, similarity = stats.trained.read(), stats.similarity.read()
        per_model = [a.read() for a in stats.per_model]
        views = sum(t["count"] for t in trained) or 1
        features = [{"label": label, "weight": self.weights[i], "count": trained[i]["count"],
                     "share": trained[i]["count"] / views, "loss": _triple(trained[i]),
                     "similarity": _triple(similarity[i]),
                     **({"models": {n: _triple(m[i]) for n, m in zip(self.model_names, per_model)}} if per_model
                        else {})} for i, label in enumerate(self.labels())]
        constraints = [{"label": entry.name, "loss": _triple(c)}
                       for entry, c in zip(self.constraints, stats.constraints.read())]
        return {"name": self.name, "epochs": stats.epochs, "features": features, "constraints": constraints}

    def reset_window(self) -> None:
        self.window = self._stats()


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
