"""Reading a picture of the mini world from its pixels, without a model: named colours, connected regions
and the shape of an outline. The world's tests check with it that every caption says what is drawn; the
quality benchmark and the first image's test, that a render shows the shapes of its prompt."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from . import world

READ_SIZE = 128  # pictures are read at this size (others are resized bilinearly: smoother outlines)


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


def best_outline(mask: np.ndarray, shape: str, turns: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """The outline of `shape` that covers the region best, by intersection over union: drawn as the world
    draws it, with the region's area and centre, at the best of `turns` (degrees; by default every turn in
    steps of 3 degrees). (That intersection over union, the outline's mask.)"""
    ys, xs = np.nonzero(mask)
    size, (cy, cx) = mask.shape[0], (ys.mean(), xs.mean())
    area, period = _UNIT[shape]
    radius = np.sqrt(len(xs) / area) / size
    best = (0.0, np.zeros_like(mask))
    for angle in np.arange(0, period, 3.0) if turns is None else turns:
        outline = world.outline(world.Thing(shape, (0, 0, 0), cx / size, cy / size, radius, angle), size)
        drawn = Image.new("L", mask.shape[::-1], 0)
        ImageDraw.Draw(drawn).polygon(outline, fill=1)
        drawn = np.asarray(drawn, dtype=bool)
        overlap = (drawn & mask).sum() / (drawn | mask).sum()
        if overlap > best[0]:
            best = (overlap, drawn)
    return best


def shape_of(mask: np.ndarray) -> str | None:
    """The shape of the world whose outline covers the region best (`best_outline`); None when that is
    below the shape's MATCH, that is worse than drawn scenes of the shape are read: a blob, a bean or a
    ring is no shape of the world."""
    overlap, found = max(((best_outline(mask, shape)[0], shape) for shape in world.SHAPES), key=lambda x: x[0])
    return found if overlap >= MATCH[found] else None


def largest_regions(colours: np.ndarray, colour: str, count: int) -> list[np.ndarray]:
    """The `count` largest regions of the named colour (at most; holes filled) in a `nearest_colour` map."""
    regions = sorted(components(colours == list(world.COLOURS).index(colour)), key=np.sum, reverse=True)
    return [fill_holes(r) for r in regions[:count]]


def thing_region(image: np.ndarray, colour: str) -> np.ndarray | None:
    """The largest region of the named colour in `image` ([H, W, 3] uint8, read at READ_SIZE), its holes
    filled; None when no pixel has that colour."""
    regions = largest_regions(nearest_colour(at_read_size(image)), colour, 1)
    return regions[0] if regions else None


def at_read_size(image: np.ndarray) -> np.ndarray:
    """The [H, W, 3] picture at READ_SIZE (resized bilinearly unless it has that size)."""
    if image.shape[:2] != (READ_SIZE, READ_SIZE):
        image = np.asarray(Image.fromarray(image).resize((READ_SIZE, READ_SIZE), Image.BILINEAR))
    return image


def _unit_outlines() -> dict[str, tuple[float, float]]:
    """Area of each shape's outline at radius 1 (shoelace formula) and the turn after which it repeats."""
    result = {}
    for shape, period in zip(world.SHAPES, (3.0, 90.0, 120.0, 72.0, 90.0)):
        x, y = np.array(world.outline(world.Thing(shape, (0, 0, 0), 0.0, 0.0, 1.0, 0.0), 1.0)).T
        result[shape] = (0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))), period)
    return result


# the least intersection over union of a region and a shape's outline that counts as that shape: about the
# least that drawn scenes of the shape reach at 32 pixels, read at READ_SIZE (thin arms blur most)
MATCH = {"circle": 0.9, "square": 0.88, "triangle": 0.82, "star": 0.75, "cross": 0.82}
_UNIT = _unit_outlines()


def shapes_shown(image: np.ndarray, caption: world.Caption) -> bool | None:
    """Whether `image` ([H, W, 3] uint8) shows the shapes the caption names: for each named colour, its largest
    regions (as many as the caption has things of that colour; holes filled) have the outlines of those
    things' shapes. None when the caption leaves a thing's colour open."""
    things = [(caption.colour, caption.shape)] * caption.count
    if caption.kind == "pair":
        things = [(caption.colour, caption.shape), (caption.colour2, caption.shape2)]
    if any(colour is None for colour, _ in things):
        return None
    colours = nearest_colour(at_read_size(image))
    for colour in {c for c, _ in things}:
        wanted = sorted(shape for c, shape in things if c == colour)
        if sorted(str(shape_of(r)) for r in largest_regions(colours, colour, len(wanted))) != wanted:
            return False
    return True
