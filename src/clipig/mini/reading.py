"""Reading a picture of the mini world from its pixels, without a model: named colours, connected regions
and the shape of an outline. The world's tests check with it that every caption says what is drawn; the
quality benchmark and the first image's test, that a render shows the shapes of its prompt."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import world

READ_SIZE = 128  # pictures are read at this size (smaller ones resized bilinearly: smoother outlines)


def nearest_colour(image: np.ndarray) -> np.ndarray:
    """[H, W] index into world.COLOURS of each pixel's nearest named colour."""
    names = np.array(list(world.COLOURS.values()), dtype=np.float32)
    return np.linalg.norm(image[:, :, None, :].astype(np.float32) - names, axis=-1).argmin(-1)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """Connected regions (8-neighbourhood) of a boolean mask, by propagating the largest label."""
    m = torch.from_numpy(mask).float()[None, None]
    labels = torch.arange(1, m.numel() + 1, dtype=torch.float32).view_as(m) * m
    while True:
        grown = F.max_pool2d(labels, 3, 1, 1) * m
        if torch.equal(grown, labels):
            break
        labels = grown
    labels = labels[0, 0].numpy()
    return [labels == v for v in np.unique(labels) if v > 0]


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    m = torch.from_numpy(mask).float()[None, None]
    return (-F.max_pool2d(-m, 2 * radius + 1, 1, radius))[0, 0].numpy() > 0.5


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region it encloses (not connected to the image border) filled."""
    border = np.zeros_like(mask)
    border[[0, -1]] = border[:, [0, -1]] = True
    outside = [c for c in components(~mask) if (c & border).any()]
    return ~np.any(outside, axis=0) if outside else np.ones_like(mask)


def shape_of(mask: np.ndarray) -> str | None:
    """Circle, square, triangle, star or cross from the outline: the distance from the centre to the edge in
    each direction gives a profile; its corners (runs above the middle of its range) and their depth tell."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    angles = np.radians(np.arange(360))[:, None]
    steps = np.arange(0, mask.shape[0], 0.5)[None]
    py = np.clip(np.round(cy + steps * np.sin(angles)).astype(int), 0, mask.shape[0] - 1)
    px = np.clip(np.round(cx + steps * np.cos(angles)).astype(int), 0, mask.shape[1] - 1)
    profile = np.argmin(mask[py, px], axis=1) * 0.5  # the first step outside the shape
    profile = np.convolve(np.concatenate([profile[-4:], profile, profile[:4]]), np.ones(9) / 9, "valid")
    lo, hi = profile.min(), profile.max()
    if lo == 0:
        return None  # the centre lies outside: no shape of the world (a crescent, a ring)
    if hi / lo < 1.2:
        return "circle"
    above = profile > (lo + hi) / 2
    corners = int(np.sum(above & ~np.roll(above, 1)))
    return {3: "triangle", 5: "star"}.get(corners, "square" if hi / lo < 1.8 else "cross")


def shapes_shown(image: np.ndarray, caption: world.Caption) -> bool | None:
    """Whether `image` ([H, W, 3] uint8) shows the shapes the caption names: for each named colour, its largest
    regions (as many as the caption has things of that colour; holes filled) have the outlines of those
    things' shapes. None when the caption leaves a thing's colour open."""
    things = [(caption.colour, caption.shape)] * caption.count
    if caption.kind == "pair":
        things = [(caption.colour, caption.shape), (caption.colour2, caption.shape2)]
    if any(colour is None for colour, _ in things):
        return None
    if image.shape[0] != READ_SIZE:
        image = np.asarray(Image.fromarray(image).resize((READ_SIZE, READ_SIZE), Image.BILINEAR))
    colours, names = nearest_colour(image), list(world.COLOURS)
    for colour in {c for c, _ in things}:
        wanted = sorted(shape for c, shape in things if c == colour)
        regions = sorted(components(colours == names.index(colour)), key=np.sum, reverse=True)[:len(wanted)]
        if sorted(str(shape_of(fill_holes(r))) for r in regions) != wanted:
            return False
    return True
