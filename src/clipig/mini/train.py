"""Train a mini CLIP on fresh scenes of the world: `python -m clipig.mini.train --seed 1 -o mini.pt`.

Contrastive (CLIP's symmetric cross-entropy; captions that are equal within a batch count as matches of
each other), AdamW with warm-up and cosine decay, on views augmented like CLIPig's (shift with wrap-around,
rotation and scaling with black corners, noise, blur). Half of every batch are one-word twins of the other
half. Training-only read-outs help both towers learn early what matters: linear probes of the caption's
attributes on both towers' features, and (for the ViT, `--size resnet=0`) a per-patch prediction of where
things are. `--init` goes on from a checkpoint. `--adversarial` and `--fooled` make a model hard to fool
(docs/mini.md): views moved within a small radius to fool it, and pictures an optimiser made against it
shown as pictures of no caption. Batch `i` is drawn from the seed and `i` alone, so a run is reproducible.
At the end the float16 checkpoint is written, loaded back as the critic loads it, and its zero-shot
accuracy printed per attribute and stored in the provenance (PATH.json).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..critic import mini
from ..critic.views import OPENAI_MEAN, OPENAI_STD
from ..image.geometry import turn
from ..image.parameterizations import Polygons
from ..image.transforms import blur_each
from . import evaluate, world

FOOL_STEP = 0.02  # each step of the optimiser-made pictures moves their pixels by this much (RMS)
FOOL_POOL, FOOL_RESTART = 4, 0.01  # pool size (times the pictures per step); share started again per use
DRAWING_LR = 0.0015  # Adam's step of the drawings of `--fool-drawing` (CLIPig's `learnrate: .15` of them)
SHAPE_TWINS = 0.5  # share of the one-word twins that differ in the shape
WARP = (0.15, 0.4)  # `--misshapen`: the range of the largest relative change of a thing's radius
PROBES = {"shape": world.SHAPES, "colour": tuple(world.COLOURS), "background": tuple(world.COLOURS),
          "size": tuple(world.SIZES), "place": tuple(world.PLACES), "count": (1, 2, 3),
          "texture": ("striped", "plain"), "shape2": world.SHAPES, "colour2": tuple(world.COLOURS)}


def vocabulary() -> list[int]:
    """BPE ids of every token of the world's words (with start, end and padding), ascending; the end token,
    49407, stays the largest, as open_clip's text pooling (argmax of the ids) needs. Each word is tokenized
    on its own: all words in one text would not fit into the context."""
    ids = mini.tokenizer()(world.words())
    return sorted(set(ids.flatten().tolist()) | {0})


def batch(seed: int, step: int, size: int, image_size: int):
    """(images [B, 3, S, S] in [0, 1], their things' coverage [B, 1, S, S], Captions, whether each names a
    place) of training step `step`.
    Half the captions are random, the other half differ from one of those in one word (each with a scene
    of its own; half of the time in the shape, the hardest to learn), so that every batch asks for the fine
    distinctions."""
    rng = np.random.default_rng([seed, step])
    captions = [world.sample_caption(rng) for _ in range(size - size // 2)]
    for caption in captions[:size // 2]:
        options = world.variants(caption, "shape") if rng.random() < SHAPE_TWINS else world.neighbours(caption)
        captions.append(options[rng.integers(len(options))] if options else world.sample_caption(rng))
    drawn = [world.render(world.scene_for(c, rng), image_size, with_mask=True) for c in captions]
    images = torch.stack([evaluate.to_tensor(image) for image, _ in drawn])
    masks = torch.stack([torch.from_numpy(mask) for _, mask in drawn])[:, None]
    return images, masks, captions, torch.tensor([c.place is not None for c in captions])


def augment(images: torch.Tensor, masks: torch.Tensor, placed: torch.Tensor, g: torch.Generator):
    """Views as CLIPig makes them. Half are rotated (-20..20 degrees), scaled (0.85..1.15) and moved (8%)
    with black outside; a quarter of those without a named place are shifted with wrap-around; half get
    noise (std up to 0.12), a third blur (sigma 0.4..1.2 pixels). The masks move with the images."""
    images = torch.cat([images, masks], 1)
    n, _, h, w = images.shape
    u = lambda lo, hi: uniform(n, lo, hi, g)  # noqa: E731
    angle, scale = torch.deg2rad(u(-20, 20)), u(0.85, 1.15)
    moved = turn(images, angle, scale, u(-0.16, 0.16), u(-0.16, 0.16))
    images = torch.where((torch.rand(n, generator=g) < 0.5)[:, None, None, None], moved, images)
    wrap = (torch.rand(n, generator=g) < 0.25) & ~placed
    shifts = torch.randint(0, h, (n, 2), generator=g)
    images = torch.stack([img.roll(tuple(s.tolist()), (1, 2)) if flag else img
                          for img, s, flag in zip(images, shifts, wrap)])
    images, masks = images[:, :3], images[:, 3:]
    blurred = blur_each(images, u(0.4, 1.2))
    images = torch.where((torch.rand(n, generator=g) < 1 / 3)[:, None, None, None], blurred, images)
    noise = torch.randn(images.shape, generator=g) * u(0, 0.12)[:, None, None, None]
    return images + noise * (torch.rand(n, generator=g) < 0.5)[:, None, None, None], masks


def uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    """`n` numbers drawn evenly from lo..hi."""
    return lo + (hi - lo) * torch.rand(n, generator=g)


def warped(rng: np.random.Generator):
    """An outline function like `world.outline` whose things have no shape of the world: the outline,
    taken at many points, with each point's distance from the centre changed by a few random waves (two to
    five a turn: an oval, a dent, a bulge) or, half the time for shapes with corners, drawn most of the way
    towards the circle of the same mean radius (corners rounded off, arms shortened)."""
    waves = rng.normal(size=(2, 4)) / np.arange(2, 6)
    size = rng.uniform(*WARP)
    rounding = rng.uniform(0.6, 1.0) if rng.random() < 0.5 else 0.0

    def outline_of(thing: world.Thing, side: float) -> list[tuple[float, float]]:
        points = np.array(world.outline(thing, side))
        edges = np.roll(points, -1, 0) - points
        steps = np.maximum(1, np.ceil(np.linalg.norm(edges, axis=1) / (thing.radius * side * 0.05))).astype(int)
        dense = np.concatenate([p + np.linspace(0, 1, k, endpoint=False)[:, None] * e
                                for p, e, k in zip(points, edges, steps)])
        centre = np.array([thing.x, thing.y]) * side
        offset = dense - centre
        radius, angle = np.hypot(*offset.T), np.arctan2(offset[:, 1], offset[:, 0])
        if rounding and thing.shape != "circle":
            radius = (1 - rounding) * radius + rounding * radius.mean()
        else:
            k = np.arange(2, 6)[:, None]
            wave = (waves[0, :, None] * np.cos(k * angle) + waves[1, :, None] * np.sin(k * angle)).sum(0)
            radius = radius * np.exp(size * wave / np.abs(wave).max())
        return list(map(tuple, centre + offset / np.hypot(*offset.T)[:, None] * radius[:, None]))
    return outline_of


def twin_loss(drawn: torch.Tensor, twins: torch.Tensor, text: torch.Tensor, scale) -> torch.Tensor:
    """`--twin-weight`: each caption (text features [N, D]) against its drawn scene and the scene's warped twin
    (image features [N, D] each), the two-way cross-entropy of its similarities to both: log 2 where the
    model cannot tell them apart, towards 0 as the caption prefers the drawn scene."""
    caption = F.normalize(text, dim=-1)
    gap = ((F.normalize(twins, dim=-1) - F.normalize(drawn, dim=-1)) * caption).sum(-1)
    return F.softplus(scale * gap).mean()


def misshapen(seed: int, step: int, count: int, image_size: int):
    """(drawn scenes [N, 3, S, S], their coverage, their Captions, the same scenes with `warped` things): the
    model learns that a thing of no shape of the world is no picture of its caption, however right its
    colours and place."""
    rng = np.random.default_rng([seed, step, 3])
    captions = [world.sample_caption(rng) for _ in range(count)]
    scenes = [world.scene_for(c, rng) for c in captions]
    drawn = [world.render(scene, image_size, with_mask=True) for scene in scenes]
    odd = [world.render(scene, image_size, outline_of=warped(rng)) for scene in scenes]
    return (torch.stack([evaluate.to_tensor(image) for image, _ in drawn]),
            torch.stack([torch.from_numpy(mask) for _, mask in drawn])[:, None], captions,
            torch.stack([evaluate.to_tensor(image) for image in odd]))


class Batches(torch.utils.data.Dataset):
    """Step `i`'s batch, drawn and augmented from the seed and `i` alone: a DataLoader's worker process
    draws the next batches while the model trains on this one."""

    def __init__(self, seed: int, steps: int, size: int, image_size: int, augmented: bool, misshapen: int = 0):
        self.seed, self.steps, self.size, self.image_size, self.augmented = seed, steps, size, image_size, augmented
        self.misshapen = misshapen

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        """(captioned images, their coverage, their Captions, images of no caption): the last `misshapen`
        captioned images are scenes of which the images of no caption are `warped` twins."""
        images, masks, captions, placed = batch(self.seed, step, self.size, self.image_size)
        odd = torch.zeros(0, *images.shape[1:])
        if self.misshapen:
            scenes, covers, more, odd = misshapen(self.seed, step, self.misshapen, self.image_size)
            images, masks, captions = torch.cat([images, scenes]), torch.cat([masks, covers]), [*captions, *more]
            placed = torch.cat([placed, torch.tensor([c.place is not None for c in more])])
        if self.augmented:
            seed = int(np.random.SeedSequence([self.seed, step, 2]).generate_state(1)[0])
            n = len(images)
            images, masks = augment(torch.cat([images, odd]), torch.cat([masks, torch.zeros_like(odd[:, :1])]),
                                    torch.cat([placed, placed[n - len(odd):]]), torch.Generator().manual_seed(seed))
            images, masks, odd = images[:n], masks[:n], images[n:]
        return images, masks, captions, odd


def _as_is(item):
    """The DataLoader's collate function: a batch is made whole by `Batches`."""
    return item


def labels(caption: world.Caption) -> list[int]:
    """The index of each PROBES attribute's value in the caption, -100 where it does not say."""
    said = {"shape": caption.shape, "colour": caption.colour, "background": caption.background,
            "size": caption.size, "place": caption.place, "shape2": caption.shape2, "colour2": caption.colour2,
            "count": caption.count if caption.kind != "pair" else None,
            "texture": (caption.texture or "plain") if caption.kind == "single" else None}
    return [PROBES[slot].index(said[slot]) if said[slot] is not None else -100 for slot in PROBES]


def coverage_loss(head: torch.nn.Linear, tokens: torch.Tensor, masks: torch.Tensor, patch: int) -> torch.Tensor:
    """Each patch token predicts how much of each quarter of its patch the things cover (a training-only
    read-out): the image tower learns early where things are, whatever their colours."""
    n, grid = masks.shape[0], masks.shape[-1] // patch
    target = F.avg_pool2d(masks, patch // 2).view(n, grid, 2, grid, 2).permute(0, 1, 3, 2, 4).reshape(n, -1, 4)
    return F.binary_cross_entropy_with_logits(head(tokens), target)


class Probes(torch.nn.Module):
    """Linear read-outs of the caption's attributes from the image and from the text features: an auxiliary
    loss of the training (not part of the checkpoint) that shows both towers early what matters."""

    def __init__(self, dim: int, shape_weight: float = 1.0):
        super().__init__()
        self.weights = [shape_weight if slot == "shape" else 1.0 for slot in PROBES]
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, len(values)) for values in PROBES.values())

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        features = F.normalize(features, dim=-1)
        losses = [self.weights[i] * F.cross_entropy(head(features), targets[:, i]) for i, head in enumerate(self.heads)
                  if (targets[:, i] >= 0).any()]
        return torch.stack(losses).sum()


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, captions: list[str]):
    """Symmetric cross-entropy of the scaled cosine similarities; equal captions share the target mass.
    Images beyond the captions (optimiser-made pictures, `Fooled`) match no caption: they compete with the
    drawn scenes for every caption, so a picture that fools the model costs it."""
    n = len(captions)
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    index = torch.tensor([ids[c] for c in captions])
    same = (index[:, None] == index[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    extra = torch.zeros(n, len(image) - n)
    return (F.cross_entropy(logits[:n], target) + F.cross_entropy(logits.T, torch.cat([target, extra], 1))) / 2


class Fooled:
    """A pool of pictures that an optimiser makes against the model being trained, as CLIPig renders: from
    noise, pixels moved step by step to raise their similarity to a caption of the world through noisy views.
    Every training step takes some of them on a few steps against the current model (so each picture is
    optimised for hundreds of steps over the training, like a render) and shows them beside the drawn
    scenes as pictures of no caption; a few start again from noise each time. Pictures of another size than
    the model's input (`picture_size`) are seen through turned and resized views, as CLIPig sees a picture."""

    def __init__(self, size: int, image_size: int, seed: int, picture_size: int = 0, turn: float = 10.0):
        self.turn = turn
        self.rng, self.g = np.random.default_rng([seed, 11]), torch.Generator().manual_seed(seed + 11)
        self.captions = [world.sample_caption(self.rng) for _ in range(size)]
        self.image_size = image_size
        self.images = self._noise(size, picture_size or image_size)

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """What the model sees of pictures: noisy; pictures of another size than its input are shifted (5%)
        and turned (by up to `turn` degrees, 10 as CLIPig's walk-through; 180 as the first image) with black
        corners, and resized to its input."""
        n = len(images)
        if images.shape[-1] != self.image_size:
            u = lambda lo, hi: uniform(n, lo, hi, self.g)  # noqa: E731
            images = self._shown(turn(images, torch.deg2rad(u(-self.turn, self.turn)), 1, u(-0.1, 0.1), u(-0.1, 0.1)))
        strength = 0.1 * torch.rand(n, 1, 1, 1, generator=self.g)
        return images + strength * torch.randn(images.shape, generator=self.g)

    def _noise(self, n: int, size: int) -> torch.Tensor:
        return (0.5 + 0.1 * torch.randn(n, 3, size, size, generator=self.g)).clamp(0, 1)

    def step(self, model, count: int, steps: int, encode_text) -> tuple[torch.Tensor, list]:
        """`count` pictures of the pool, each moved `steps` steps further; (pictures, their captions)."""
        index = torch.randperm(len(self.captions), generator=self.g)[:count]
        for i in index[torch.rand(count, generator=self.g) < FOOL_RESTART].tolist():  # start again
            self.captions[i] = world.sample_caption(self.rng)
            self._restart(i)
        captions = [self.captions[i] for i in index.tolist()]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            text = F.normalize(encode_text([c.text() for c in captions]), dim=-1)
        made = self._moved(model, index, text, steps)
        model.train(was_training)
        return made, captions

    def _restart(self, i: int) -> None:
        self.images[i] = self._noise(1, self.images.shape[-1])[0]

    def _moved(self, model, index: torch.Tensor, text: torch.Tensor, steps: int) -> torch.Tensor:
        """The pictures `index` moved `steps` steps towards their captions' features `text`, as shown."""
        images = self.images[index]
        for _ in range(steps):
            images.requires_grad_(True)
            grad, = torch.autograd.grad((F.normalize(image_features(model, self.views(images)), dim=-1) * text).sum(),
                                        images)
            rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
            images = (images.detach() + FOOL_STEP * grad / rms).clamp(0, 1)
        self.images[index] = images
        return self._shown(images)

    def drawn(self, captions: list, rng: np.random.Generator, alike: bool = False) -> torch.Tensor:
        """Drawn scenes of `captions` at the model's input; `alike` (with `--made-weight`): drawn at the pool's
        size and resized as its pictures are shown, so that only what is drawn tells them apart."""
        side = self.images.shape[-1] if alike else self.image_size
        return self._shown(torch.stack([evaluate.to_tensor(world.render(world.scene_for(c, rng), side))
                                        for c in captions]))

    def _shown(self, images: torch.Tensor) -> torch.Tensor:
        """Pictures at the model's input size (bilinear, antialiased)."""
        if images.shape[-1] == self.image_size:
            return images
        return F.interpolate(images, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)


class FooledDrawings(Fooled):
    """The pool as drawings (`--fool-drawing`): each picture three polygons over a background colour, the
    drawing CLIPig's `parameterization: polygons` (squashed by tanh) renders, moved by Adam at that
    drawing's step size (`learnrate: .15`), its colours started from noise as a render's `init: {std: .3}`. A
    model trained against them learns what a drawing that only looks like its caption to it lacks."""

    def __init__(self, size: int, image_size: int, seed: int, picture_size: int = 0, turn: float = 10.0,
                 harmonics: int = 0):
        self.harmonics = harmonics
        super().__init__(size, image_size, seed, picture_size, turn)
        self.drawings = [self._drawing() for _ in range(size)]

    def _drawing(self):
        side = self.images.shape[-1]
        outline = ({"corners": 32, "harmonics": self.harmonics, "lowest_wave": 3} if self.harmonics
                   else {"corners": 12, "harmonics": 0})
        canvas = Polygons(side, side, "cpu", squash="tanh", count=3, softness=1.0, radial=False, **outline)
        canvas.set_image((0.5 + 0.3 * torch.randn(3, side, side, generator=self.g)).clamp(0, 1))
        return canvas, torch.optim.Adam(canvas.parameters(), lr=DRAWING_LR)

    def _restart(self, i: int) -> None:
        self.drawings[i] = self._drawing()

    def _moved(self, model, index: torch.Tensor, text: torch.Tensor, steps: int) -> torch.Tensor:
        chosen = [self.drawings[i] for i in index.tolist()]
        tensors = [t for canvas, _ in chosen for t in canvas.parameters()]
        for _ in range(steps):
            images = torch.stack([canvas.image() for canvas, _ in chosen])
            loss = -(F.normalize(image_features(model, self.views(images)), dim=-1) * text).sum()
            for tensor, grad in zip(tensors, torch.autograd.grad(loss, tensors)):
                tensor.grad = grad
            for _, optimizer in chosen:
                optimizer.step()
        with torch.no_grad():
            return self._shown(torch.stack([canvas.image() for canvas, _ in chosen]))


def adversarial(model, images: torch.Tensor, text: torch.Tensor, texts: list[str], radius: float, steps: int,
                g: torch.Generator) -> torch.Tensor:
    """The views moved, each within an L2 ball (pixels in [0, 1]) of a radius drawn from 0..`radius`, to
    where the contrastive loss of the current image tower against the (fixed) text features is largest:
    projected gradient ascent from a random start. Training on them makes the image tower robust to small
    changes, so that its gradients point to what the world draws instead of to patterns that fool it; the
    radii from 0 up keep it accurate on the drawn scenes too."""
    radii = radius * torch.rand(len(images), 1, 1, 1, generator=g)

    def project(delta):
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return delta * (radii / norm).clamp(max=1.0)

    def unit(x):
        return x / x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    was_training = model.training
    model.eval()  # the search reads the batch-norm statistics, it does not update them
    text, scale = text.detach(), model.logit_scale.exp().detach()
    delta = unit(torch.randn(images.shape, generator=g)) * radii * torch.rand(len(images), 1, 1, 1, generator=g)
    for _ in range(steps):
        delta.requires_grad_(True)
        grad, = torch.autograd.grad(contrastive_loss(image_features(model, images + delta), text, scale, texts), delta)
        delta = project(delta.detach() + 2.5 / steps * radii * unit(grad))
    model.train(was_training)
    return images + delta


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the batch workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    size = {**mini.SIZE, **args.size}
    vocab = vocabulary()
    compact, tokenize = mini.Compact(vocab), mini.tokenizer()
    model = mini.build(size, len(vocab))
    if args.init:  # go on from a checkpoint (its size and vocabulary)
        checkpoint = torch.load(args.init, map_location="cpu", weights_only=True)
        size, vocab = checkpoint["size"], checkpoint["vocab"]
        compact, model = mini.Compact(vocab), mini.compact(checkpoint)
    probes, cover = Probes(size["embed_dim"], args.shape_probe), torch.nn.Linear(size["width"], 4)
    if size.get("resnet"):
        args.coverage = 0.0  # the per-patch read-out needs the ViT's patch tokens
    model.visual.output_tokens = bool(args.coverage)  # (features, patch tokens) while training
    parameters = [*model.named_parameters(), *probes.named_parameters(), *cover.named_parameters()]
    decay = [p for n, p in parameters if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in parameters if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    warmup = max(1, int(args.steps * 0.1))
    g = torch.Generator().manual_seed(args.seed)
    drawings = args.fool_drawing or args.fool_harmonics
    pool = functools.partial(FooledDrawings, harmonics=args.fool_harmonics) if drawings else Fooled
    fooled = (pool(args.fooled * FOOL_POOL, size["image_size"], args.seed, args.fool_size, args.fool_turn)
              if args.fooled else None)
    encode_text = encoders(model, compact, tokenize)[1]
    start, cpu_start, running, gaps = time.monotonic(), cpu_seconds(), [], {}
    batches = torch.utils.data.DataLoader(Batches(args.seed, args.steps, args.batch, size["image_size"], args.augment,
                                                  args.misshapen),
                                          batch_size=None, collate_fn=_as_is, num_workers=args.workers)
    for step, (images, masks, captions, odd) in enumerate(batches):
        made = torch.zeros(0, *images.shape[1:])
        if fooled:  # optimiser-made pictures, and drawn scenes of their captions beside them
            made, made_captions = fooled.step(model, args.fooled, args.fool_steps, encode_text)
            drawn = fooled.drawn(made_captions, np.random.default_rng([args.seed, step, 1]), bool(args.made_weight))
            images, captions = torch.cat([images, drawn]), [*captions, *made_captions]
        texts = [c.text() for c in captions]
        tokens = compact(tokenize(texts))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, warmup)
        text = model.encode_text(tokens)
        if args.adversarial:
            images = adversarial(model, images, text, texts, args.adversarial, args.adversarial_steps, g)
        features = model.visual((torch.cat([images, made, odd]) - _mean()) / _std())
        features, patches = features if args.coverage else (features, None)
        loss = contrastive_loss(features, text, model.logit_scale.exp(), texts)
        image = features[:len(captions)]
        # pictures of no caption beside drawn scenes of their captions: (name, scenes at, count, pictures at, weight)
        for name, first, count, at, weight in (
                ("made", len(captions) - len(made), len(made), len(captions), args.made_weight),
                ("odd", len(masks) - len(odd), len(odd), len(captions) + len(made), args.twin_weight)):
            if not count:
                continue
            with torch.no_grad():  # their similarity to their captions minus the drawn scenes' (printed)
                pair = F.normalize(features[[*range(first, first + count), *range(at, at + count)]], dim=-1)
                sims = 100 * (pair * F.normalize(text[first:first + count], dim=-1).repeat(2, 1)).sum(-1)
                gaps.setdefault(name, []).append(float(sims[count:].mean() - sims[:count].mean()))
            if weight:
                loss = loss + weight * twin_loss(features[first:first + count], features[at:at + count],
                                                 text[first:first + count], model.logit_scale.exp())
        if args.coverage:
            loss = loss + args.coverage * coverage_loss(cover, patches[:len(masks)], masks, size["patch_size"])
        if args.probes:
            targets = torch.tensor([labels(c) for c in captions])
            loss = loss + args.probes * (probes(image, targets) + probes(text, targets)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        running.append(float(loss.detach()))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}  loss {np.mean(running):.3f}  scale "
                  f"{model.logit_scale.exp().item():.1f}"
                  + "".join(f"  {name}-drawn {np.mean(values):+.1f}" for name, values in gaps.items())
                  + f"  {time.monotonic() - start:.0f} s", flush=True)
            running, gaps = [], {}
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            model.eval()
            model.visual.output_tokens = False
            accuracy = evaluate.zero_shot(*encoders(model, compact, tokenize), size["image_size"], 100,
                                          attributes=("shape", "colour", "background"))
            model.train()
            model.visual.output_tokens = bool(args.coverage)
            print("  zero-shot (100 scenes): " + ", ".join(f"{k} {v * 100:.0f}%" for k, v in accuracy.items()),
                  flush=True)
    wall, cpu = time.monotonic() - start, cpu_seconds() - cpu_start
    path = Path(args.output)
    mini.save(model, size, vocab, path)
    accuracy = evaluate_checkpoint(path, args.eval_scenes)
    print("zero-shot top-1 on fresh scenes: "
          + ", ".join(f"{k} {v * 100:.1f}%" for k, v in accuracy.items()))
    info = {"seed": args.seed, "steps": args.steps, "init": _provenance_of(args.init), "batch": args.batch, "lr": args.lr, "augment": args.augment,
            "adversarial": args.adversarial, "adversarial_steps": args.adversarial_steps,
            "fooled": args.fooled, "fool_steps": args.fool_steps, "fool_size": args.fool_size, "fool_turn": args.fool_turn,
            "fool_drawing": args.fool_drawing, "misshapen": args.misshapen, "twin_weight": args.twin_weight,
            "fool_harmonics": args.fool_harmonics, "made_weight": args.made_weight,
            "probes": args.probes, "shape_probe": args.shape_probe, "coverage": args.coverage,
            "weight_decay": args.weight_decay, "size": size, "eval_scenes": args.eval_scenes,
            "eval_seed": evaluate.EVAL_SEED, "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
            "train_wall_s": round(wall), "train_cpu_s": round(cpu), "threads": args.threads, "workers": args.workers,
            "date": datetime.date.today().isoformat(), "command": "python -m clipig.mini.train " + shlex.join(
                sys.argv[1:] if args.argv is None else args.argv),
            "machine": f"{_cpu_name()}, {os.cpu_count()} cores", "torch": torch.__version__,
            "python": platform.python_version()}
    info = mini.provenance(path, info)
    print(f"wrote {path} ({info['bytes'] / 2**20:.2f} MiB) and {path.with_suffix('.json').name}; "
          f"training {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU")
    return info


def _provenance_of(checkpoint: str | None) -> dict | None:
    """The provenance of the checkpoint a run started from (its JSON file), or None."""
    if not checkpoint:
        return None
    path = Path(checkpoint).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {"file": Path(checkpoint).name}


def encoders(model, compact, tokenize):
    """encode_image(pixels in [0, 1]) and encode_text(strings) of a model being trained."""
    return (lambda images: image_features(model, images),
            lambda texts: model.encode_text(compact(tokenize(texts))))


def evaluate_checkpoint(path: Path, scenes: int) -> dict:
    """Accuracy of a written checkpoint, loaded and run as the critic runs it."""
    from ..critic.critic import Critic
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    critic = Critic(path.stem, mini.expand(checkpoint), mini.tokenizer(), "cpu")
    return evaluate.zero_shot(critic.encode_image, critic.encode_text, critic.input_size, scenes)


def image_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """The image tower's features of pixels in [0, 1] (without the patch tokens it may give while training)."""
    features = model.visual((pixels - _mean()) / _std())
    return features[0] if isinstance(features, tuple) else features


def _mean():
    return torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)


def _std():
    return torch.tensor(OPENAI_STD).view(1, 3, 1, 1)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _size_option(text: str) -> tuple[str, int]:
    key, _, value = text.partition("=")
    if key not in mini.SIZE or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected KEY=N with KEY one of {', '.join(mini.SIZE)}, got {text!r}")
    return key, int(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clipig.mini.train", description=(
        "Train a mini CLIP (open_clip's architecture) on the world's scenes and write a float16 checkpoint "
        "with its provenance and zero-shot accuracy."))
    p.add_argument("-o", "--output", required=True, help="checkpoint file (.pt); PATH.json is written beside it")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from the weights of this checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the scenes and their order")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--batch", type=int, default=256, help="scenes per step (default 256)")
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate (default 1.5e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--size", type=_size_option, action="append", default=[], metavar="KEY=N",
                   help=f"model size, repeatable (defaults: {', '.join(f'{k}={v}' for k, v in mini.SIZE.items())})")
    p.add_argument("--probes", type=float, default=1.0, help=(
        "weight of the auxiliary attribute read-outs (default 1; 0: contrastive loss only)"))
    p.add_argument("--shape-probe", type=float, default=1.0, help=(
        "weight of the shape's read-out among the others (default 1)"))
    p.add_argument("--coverage", type=float, default=1.0, help=(
        "weight of the auxiliary per-patch coverage read-out (default 1; 0: none)"))
    p.add_argument("--no-augment", dest="augment", action="store_false", help="train on the drawn scenes as they are")
    p.add_argument("--adversarial", type=float, default=0.0, metavar="RADIUS", help=(
        "train on views moved within this L2 radius (pixels in [0, 1]) to fool the model (default 0: off); "
        "makes renders show their prompts instead of fooling the critic"))
    p.add_argument("--adversarial-steps", type=int, default=2, help="gradient steps of that search (default 2)")
    p.add_argument("--fooled", type=int, default=0, metavar="N", help=(
        "show N optimiser-made pictures per step as pictures of no caption (default 0: none)"))
    p.add_argument("--fool-steps", type=int, default=4, help="optimiser steps of those pictures per training step")
    p.add_argument("--fool-size", type=int, default=0, metavar="PIXELS", help=(
        "size of those pictures; at another size than the model's input, they are seen as CLIPig sees a picture, "
        "through shifted and turned views resized to the input (default: the input size, noisy views only)"))
    p.add_argument("--fool-turn", type=float, default=10.0, metavar="DEGREES", help=(
        "those views of pictures of another size are turned by up to this many degrees (default 10)"))
    p.add_argument("--fool-drawing", action="store_true", help=(
        "those pictures are drawings of three polygons, as `parameterization: polygons` renders (default: pixels)"))
    p.add_argument("--fool-harmonics", type=int, default=0, metavar="H", help=(
        "those pictures are drawings with smooth outlines of waves 3 to H over 32 corners, the first image's "
        "drawing (implies --fool-drawing; default 0: 12 free corners)"))
    p.add_argument("--made-weight", type=float, default=0.0, metavar="W", help=(
        "with --fooled: also this weight on each of those pictures' captions preferring its drawn scene to the "
        "picture (two-way cross-entropy, as --twin-weight), the scene drawn at the pictures' size and resized "
        "as they are (default 0: they only compete among all pictures)"))
    p.add_argument("--misshapen", type=int, default=0, metavar="N", help=(
        "also show N drawn scenes per step beside twins whose things have no shape of the world (warped "
        "outlines), the twins as pictures of no caption (default 0: none)"))
    p.add_argument("--twin-weight", type=float, default=0.0, metavar="W", help=(
        "with --misshapen: also this weight on each drawn scene's caption preferring the scene to its twin "
        "(two-way cross-entropy; default 0: the twins only compete among all pictures)"))
    p.add_argument("--threads", type=int, default=2, help="torch threads of the training (default 2)")
    p.add_argument("--workers", type=int, default=1, help=(
        "processes that draw the next batches meanwhile (default 1; 0: the training draws them itself). "
        "The result does not depend on it"))
    p.add_argument("--eval-scenes", type=int, default=300, help="fresh scenes per attribute for the accuracy")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=0, help="also print the accuracy every N steps (100 scenes)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    for weight, needs in (("made_weight", "fooled"), ("twin_weight", "misshapen")):
        if getattr(args, weight) and not getattr(args, needs):
            p.error(f"--{weight.replace('_', '-')} weighs the pictures of --{needs}: give --{needs} N too")
    args.size, args.argv = dict(args.size), argv
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
