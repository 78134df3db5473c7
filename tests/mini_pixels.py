"""Reading a picture of the mini world from its pixels: named colours, connected regions and the shape of
an outline (for the world's tests, and to check what a render shows)."""

import numpy as np
import torch
import torch.nn.functional as F

from clipig.mini import world


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


def shape_of(mask: np.ndarray) -> str:
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
    if hi / lo < 1.2:
        return "circle"
    above = profile > (lo + hi) / 2
    corners = int(np.sum(above & ~np.roll(above, 1)))
    return {3: "triangle", 5: "star"}.get(corners, "square" if hi / lo < 1.8 else "cross")
