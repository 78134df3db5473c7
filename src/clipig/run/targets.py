"""Targets at run time: their views, feature losses (select all/best/worst/mix), constraints and statistics.

The loss of a target is computed per view and summed over its views (as in the original CLIPig): for each
view, the feature losses (weighted, as `select` says) plus the constraint losses (times their weights), all
times the target's weight. Similarities are 100 * cosine, times the `fair` factors and the feature `scale`s;
they choose the feature of `best`/`worst` and are the `sim` of the expressions. Expressions that read `sim`
are evaluated per view; all others once per epoch.

With an ensemble (several models), a target's similarities and losses are the weighted means over the
models it uses (`targets[].model`): each model compares its own features of the views with its own target
features.

Statistics stay on the device and are only read (copied to the host) when a listener asks for them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..config.expressions import similarity_variables
from ..config.timing import is_on
from ..image.constraints import constraint_loss
from ..image.geometry import Views, as_tensor

WINDOW = 30  # the statistics' loss and similarity figures are taken over a target's last 30 views


class Recent:
    """The last WINDOW rows of per-view values with a mask of the entries that count, kept on the device."""

    def __init__(self, columns: int, device):
        self.values = torch.zeros(0, columns, device=device)
        self.mask = torch.zeros(0, columns, device=device)

    def add(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        self.values = torch.cat([self.values, values.detach().float()])[-WINDOW:]
        self.mask = torch.cat([self.mask, mask.float()])[-WINDOW:]

    def read(self) -> list[dict]:
        """Per column mean/min/max of the counted entries (None where there are none)."""
        mask = self.mask > 0
        count = mask.sum(0)
        total = (self.values * mask).sum(0)
        lo = torch.where(mask, self.values, float("inf")).amin(0) if len(mask) else total
        hi = torch.where(mask, self.values, float("-inf")).amax(0) if len(mask) else total
        return [{"mean": s / c if c else None, "min": a if c else None, "max": b if c else None}
                for c, s, a, b in zip(count.tolist(), total.tolist(), lo.tolist(), hi.tolist())]


class TargetStats:
    """A target's statistics. Updates replace the tensors (never change them in place), so that a `snapshot`
    stays as it was taken."""

    def __init__(self, features: int, constraints: int, models: int, device):
        self.epochs = self.views = 0
        self.per_model = [Recent(features, device) for _ in range(models)] if models > 1 else []
        self.trained = torch.zeros(features, device=device)  # views each feature was trained with
        self.applied = torch.zeros(max(constraints, 1), device=device)  # views each constraint was applied to
        self.loss = Recent(features, device)  # feature loss on the views it was trained with
        self.similarity = Recent(features, device)  # similarity of each feature to every view
        self.constraints = Recent(max(constraints, 1), device)  # constraint loss times its weight

    def snapshot(self) -> "TargetStats":
        """The statistics as they are now, for going back to (an epoch that did not finish): no copies."""
        kept = copy.copy(self)
        kept.per_model = [copy.copy(r) for r in self.per_model]
        kept.loss, kept.similarity, kept.constraints = map(copy.copy, (self.loss, self.similarity, self.constraints))
        return kept


class Target:
    """One target of the experiment, ready to run."""

    def __init__(self, node, index: int, critic, device):
        self.node, self.index = node, index
        self.name = node.name()
        self.features = node.features
        self.constraints = node.constraints
        self.models = critic.select(node.model() if node.model is not None else None)  # [(member, weight)]
        self.model_names = [critic.names[m] for m, _ in self.models]
        self.uses = {m for m, _ in self.models}
        self.normed = [F.normalize(self._vectors(critic.critics[m], device), dim=-1) for m, _ in self.models]
        self.fair: torch.Tensor | None = None  # feature_scale: fair factors, see set_fair
        self.weights: list = [None] * len(self.features)  # last weight each feature was used with; None: never
        self.constraint_weights: list = [None] * len(self.constraints)
        self.stats = TargetStats(len(self.features), len(self.constraints), len(self.models), device)
        self.device = device
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

    def _mean(self, per_model: list) -> torch.Tensor:
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

    def needs_critic(self, variables: dict) -> bool:
        """Whether the views must go through CLIP: for active features, or for a `sim` the weights read."""
        return bool(self.features) and (self.uses_sim or bool(self.active_features(variables)))

    def set_fair(self, picture_features: dict) -> None:
        """`feature_scale: fair`: factors that give every feature the same similarity to the start picture
        (its CLIP features {member: [1, D]}): 1 / similarity, divided by the largest of them, as in the
        original."""
        if self.node.feature_scale() != "fair" or not self.features:
            return
        inverse = 1.0 / self._mean(self.cosines(picture_features))[0]
        fair = inverse / inverse.max()
        self.fair = torch.where(torch.isfinite(fair), fair, torch.ones_like(fair))

    def views(self, pixels: torch.Tensor, variables: dict, rng: torch.Generator, expr_rng) -> torch.Tensor:
        """The batch of transformed views of the [3, H, W] picture. The result of each transform is clamped
        to [0, 1], as in the original (geometric ones keep the range anyway, so consecutive ones are still
        folded into one resampling, see geometry.py). Views are expanded to the batch size at the first
        random transform: a target without an (active) random transform has one view whatever its
        batch size, since more would all be the same."""
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
            views = geometry(Views.of(views), **args) if geometry else entry.spec.fn(as_tensor(views),
                                                                                      **args).clamp(0, 1)
        return as_tensor(views)

    def loss(self, features, views: torch.Tensor, variables: dict, rng, expr_rng) -> tuple[torch.Tensor, bool]:
        """The loss of this target, summed over its `views` (as CLIP sees them) with their CLIP `features`
        ({member: [B, D]} of the models it uses; None when CLIP was not needed), and whether any weight was
        non-zero; updates the statistics."""
        n = views.shape[0]
        active = self.active_features(variables)
        cos = sim = cosines = None
        if features is not None:
            features = [F.normalize(features[m].float(), dim=-1) for m, _ in self.models]
            cosines = [f @ normed.T for f, normed in zip(features, self.normed)]  # per model [B, F]
            cos = self._mean(cosines)
            sim = self._similarity(cos, variables, expr_rng)
        view_sim = sim.mean(1) if sim is not None else None
        variables = {**variables, **similarity_variables(0.0)}  # a target without features: `sim` is 0
        target_weight = per_view(self.node.weight, variables, view_sim if self.uses_sim else None, expr_rng)
        per_view_loss = views.new_zeros(n, dtype=torch.float32)
        weighted = False
        losses, applied = [], []
        for j, entry in enumerate(self.constraints):
            loss, mask, weight = self._constraint(entry, views, variables, view_sim, rng, expr_rng)
            per_view_loss = per_view_loss + loss
            losses.append(loss.detach())
            applied.append(mask)
            if weight is not None:
                self.constraint_weights[j] = weight
                weighted = weighted or weight != 0
        trained = None
        if active and features is not None:
            feature_loss, trained, any_weight = self._feature_loss(features, cosines, sim, active, variables,
                                                                   expr_rng)
            per_view_loss = per_view_loss + feature_loss
            weighted = weighted or any_weight
        weighted = weighted and nonzero(target_weight)
        per_model = [100.0 * c.detach() for c in cosines] if cosines is not None and len(cosines) > 1 else []
        self._record(n, sim, per_model, trained, losses, applied)
        return (per_view_loss * target_weight).sum(), weighted

    def _similarity(self, cos: torch.Tensor, variables: dict, expr_rng) -> torch.Tensor:
        """100 * cos, times the fair factors and the feature scales ([B, F]); a scale that reads `sim` sees
        the similarity before it."""
        sim = 100.0 * cos.detach()
        if self.fair is not None:
            sim = sim * self.fair
        scales = [per_view(f.scale, variables, sim[:, i] if _uses_sim(f.scale) else None, expr_rng)
                  for i, f in enumerate(self.features)]
        if any(isinstance(s, torch.Tensor) or s != 1.0 for s in scales):
            sim = sim * torch.stack([torch.as_tensor(s, device=sim.device, dtype=sim.dtype).expand(sim.shape[0])
                                     for s in scales], 1)
        return sim

    def _constraint(self, entry, views, variables, view_sim, rng, expr_rng):
        """Per view loss (times the constraint's weight) [B], the mask of the views it applied to, and its
        (last) weight; evaluated per view where its parameters read `sim`."""
        n = views.shape[0]
        if view_sim is None or not _uses_sim(*entry.params.values()):
            args = entry.arguments(variables, expr_rng)
            if not is_on(args, variables):
                return views.new_zeros(n), torch.zeros(n, device=self.device), None
            loss = args["weight"] * constraint_loss(entry.spec, views, args, rng)
            return loss, torch.ones(n, device=self.device), args["weight"]
        losses, mask, weight = [], [], None
        for v, s in enumerate(view_sim.tolist()):
            args = entry.arguments({**variables, **similarity_variables(s)}, expr_rng)
            on = is_on(args, variables)
            losses.append(args["weight"] * constraint_loss(entry.spec, views[v:v + 1], args, rng)[0] if on else
                          views.new_zeros(()))
            mask.append(float(on))
            weight = args["weight"] if on else weight
        return torch.stack(losses), torch.tensor(mask, device=self.device), weight

    def _feature_loss(self, features: list, cosines: list, sim, active, variables, expr_rng):
        """Per view feature loss [B], what was trained (losses [B, A], mask [B, A], feature indices) and
        whether any weight was non-zero. `features`, `cosines`: per model; each loss is the weighted mean of
        the models' losses."""
        n = features[0].shape[0]
        idx = torch.tensor(active, device=self.device)
        weights = [per_view(self.features[i].weight, variables, sim[:, i] if _uses_sim(self.features[i].weight)
                            else None, expr_rng) for i in active]
        loss_names = [f.loss({**variables, **similarity_variables(float(sim[:, i].mean()) if _uses_sim(f.loss)
                                                                 else 0.0)}) for i, f in enumerate(self.features)]
        for i, w in zip(active, weights):
            self.weights[i] = float(w[-1]) if isinstance(w, torch.Tensor) else w
        w = torch.stack([torch.as_tensor(x, device=self.device, dtype=torch.float32).expand(n) for x in weights], 1)
        any_weight = any(nonzero(x) for x in weights)
        select = self.node.select()
        if select == "mix":  # one feature: the weighted mean of the active ones, with the first feature's loss
            norm = w.abs().sum(1, keepdim=True)
            mixed_loss = self._mean([feature_losses(f, (w @ normed[idx]) / norm.clamp(min=1e-30), loss_names[0],
                                                    pairwise=True) for f, normed in zip(features, self.normed)])
            mixed_loss = torch.where(norm[:, 0] > 0, mixed_loss, 0.0)
            mask = (norm > 0).float().expand(n, len(active))
            return mixed_loss, (mixed_loss[:, None].expand(n, len(active)), mask, idx), any_weight
        losses = torch.stack([self._mean([feature_losses(f, normed[i:i + 1], loss_names[i], c[:, i:i + 1])[:, 0]
                                          for f, normed, c in zip(features, self.normed, cosines)])
                              for i in active], 1)  # [B, A]
        if select == "all":
            mask = torch.ones_like(losses)
        else:
            choice = sim[:, idx].argmax(1) if select == "best" else sim[:, idx].argmin(1)
            mask = F.one_hot(choice, len(active)).float()
        return (losses * mask * w).sum(1), (losses, mask, idx), any_weight

    def _record(self, n: int, sim, per_model, trained, losses, applied) -> None:
        stats = self.stats
        stats.epochs += 1
        stats.views += n
        if losses:
            loss, mask = torch.stack(losses, 1), torch.stack(applied, 1)
            stats.applied = stats.applied + mask.sum(0)
            stats.constraints.add(loss, mask)
        if sim is not None:
            stats.similarity.add(sim, torch.ones_like(sim))
            for window, model_sim in zip(stats.per_model, per_model):
                window.add(model_sim, torch.ones_like(model_sim))
        if trained is not None:
            per_feature, mask, idx = trained
            values = torch.zeros(n, len(self.features), device=self.device)
            counted = torch.zeros_like(values)
            values[:, idx] = per_feature.detach().float()
            counted[:, idx] = mask
            stats.trained = stats.trained + counted.sum(0)
            stats.loss.add(values, counted)

    def statistics(self) -> dict:
        """Host copy of the statistics: per feature the weight it was last used with, on how many views it was
        trained and their share of the target's views, its loss (on the views it was trained with) and
        similarity (to every view) over the last WINDOW views; per constraint the same without similarity."""
        stats = self.stats
        views = max(1, stats.views)
        trained, loss, similarity = stats.trained.tolist(), stats.loss.read(), stats.similarity.read()
        per_model = [window.read() for window in stats.per_model]
        features = [{"label": label, "weight": self.weights[i], "count": int(trained[i]),
                     "share": trained[i] / views, "loss": loss[i], "similarity": similarity[i],
                     **({"models": {name: m[i] for name, m in zip(self.model_names, per_model)}} if per_model
                        else {})} for i, label in enumerate(self.labels())]
        applied, closs = stats.applied.tolist(), stats.constraints.read()
        constraints = [{"label": entry.name, "weight": self.constraint_weights[j], "count": int(applied[j]),
                        "share": applied[j] / views, "loss": closs[j]} for j, entry in enumerate(self.constraints)]
        return {"name": self.name, "epochs": stats.epochs, "views": stats.views, "features": features,
                "constraints": constraints}


def feature_losses(features: torch.Tensor, targets: torch.Tensor, loss: str, cos: torch.Tensor | None = None,
                   pairwise: bool = False) -> torch.Tensor:
    """Losses of normalised view features [B, D] against target features [T, D] ([B, T]), or row by row
    (`pairwise`, [B]): cosine is 1 - cosine similarity, l1 and l2 are 100 times the mean absolute and squared
    difference of the vectors (as in the original)."""
    if loss == "cosine":
        if cos is None:
            cos = F.cosine_similarity(features, targets, dim=-1) if pairwise else features @ F.normalize(
                targets, dim=-1).T
        return 1.0 - cos
    diff = features - targets if pairwise else features[:, None, :] - targets[None, :, :]
    return 100.0 * (diff.abs().mean(-1) if loss == "l1" else (diff * diff).mean(-1))


def per_view(value, variables: dict, sims: torch.Tensor | None, expr_rng):
    """The value (a float); evaluated for each view's similarity when `sims` [B] is given (a tensor [B])."""
    if sims is None:
        return value(variables, expr_rng)
    return torch.tensor([value({**variables, **similarity_variables(s)}, expr_rng) for s in sims.tolist()],
                        device=sims.device, dtype=torch.float32)


def nonzero(weight) -> bool:
    """Whether a weight (a float, or per view a tensor) is not zero; a float is read without the device."""
    return bool(weight.ne(0).any()) if isinstance(weight, torch.Tensor) else weight != 0


def expand(views, batch: int):
    """Views (lazy or a tensor) with `batch` entries."""
    if isinstance(views, Views):
        views.batch = batch
        return views
    return views.expand(batch, -1, -1, -1) if views.shape[0] != batch else views


def _uses_sim(*values) -> bool:
    return any(v is not None and v.names & {"similarity", "sim"} for v in values)
