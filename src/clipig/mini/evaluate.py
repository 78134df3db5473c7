"""Zero-shot accuracy of a CLIP on fresh scenes of the world, per attribute.

For each attribute, scenes are drawn for captions of one form and the model picks among the true caption
and every caption that differs from it in that attribute only (top-1). The scenes come from their own
seed, so every model is judged on the same pictures.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from . import world

EVAL_SEED = 20261124


def _basic(rng, **extra) -> world.Caption:
    while True:
        colours = rng.choice(list(world.COLOURS), size=2, replace=False)
        caption = world.Caption(shape=str(rng.choice(world.SHAPES)), colour=str(colours[0]),
                                background=str(colours[1]), **extra)
        if caption.valid():
            return caption


def _pair(rng) -> world.Caption:
    colours = rng.choice(list(world.COLOURS), size=3, replace=False)
    shapes = rng.choice(world.SHAPES, size=2, replace=False)
    return world.Caption(shape=str(shapes[0]), colour=str(colours[0]), shape2=str(shapes[1]),
                         colour2=str(colours[1]), background=str(colours[2]))


def tasks(rng: np.random.Generator) -> dict:
    """attribute -> a function giving (true caption, candidate captions) for a fresh draw."""
    def slot(name, **extra):
        def task():
            caption = _basic(rng, **extra)
            return caption, [caption, *world.variants(caption, name)]
        return task

    def size():
        return slot("size", size=str(rng.choice(list(world.SIZES))))()

    def place():
        return slot("place", place=str(rng.choice(list(world.PLACES))))()

    def count():
        caption = _basic(rng, count=int(rng.choice([1, 2, 3])))
        return caption, [replace(caption, count=n) for n in (1, 2, 3)]

    def texture():
        caption = _basic(rng, size="big", texture=str(rng.choice(["striped", ""])) or None)
        return caption, [replace(caption, texture=t) for t in ("striped", None)]

    def binding():
        caption = _pair(rng)
        return caption, [caption, replace(caption, colour=caption.colour2, colour2=caption.colour)]

    def pair():
        caption = _pair(rng)
        return caption, [caption, *world.neighbours(caption)]

    return {"shape": slot("shape"), "colour": slot("colour"), "background": slot("background"), "size": size,
            "place": place, "count": count, "texture": texture, "pair": pair, "binding": binding}


@torch.no_grad()
def zero_shot(encode_image, encode_text, image_size: int, scenes: int = 300, seed: int = EVAL_SEED,
              attributes=None) -> dict[str, float]:
    """attribute -> top-1 accuracy over `scenes` fresh scenes. `encode_image` takes [B, 3, H, W] pixels in
    [0, 1], `encode_text` a list of strings; both return features."""
    rng = np.random.default_rng(seed)
    result = {}
    for name, task in tasks(rng).items():
        if attributes and name not in attributes:
            continue
        draws = [task() for _ in range(scenes)]
        images = torch.stack([to_tensor(world.render(world.scene_for(c, rng), image_size)) for c, _ in draws])
        image_features = F.normalize(encode_image(images).float(), dim=-1)
        texts = sorted({c.text() for _, candidates in draws for c in candidates})
        text_features = dict(zip(texts, F.normalize(encode_text(texts).float(), dim=-1)))
        correct = 0
        for features, (caption, candidates) in zip(image_features, draws):
            scores = torch.stack([text_features[c.text()] for c in candidates]) @ features
            truth = candidates.index(caption)
            correct += int(all(scores[truth] > s for i, s in enumerate(scores) if i != truth))  # ties fail
        result[name] = correct / scenes
    return result


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [3, H, W] float in [0, 1]."""
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
