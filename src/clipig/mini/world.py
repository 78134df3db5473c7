"""The mini world: scenes of simple shapes drawn with PIL, deterministic from a seed, captioned in English.

A caption is a `Caption` (the words the caption says, by slot); a scene is what is drawn (`Scene`, a
background and things). `sample` draws a random caption and a scene for which it is true, `render` paints
the scene, `caption.text()` writes it. The grammar (docs/mini.md):

    single:  a [SIZE] [striped] COLOUR SHAPE [PLACE] [on a BACKGROUND background]
    count:   two|three COLOUR SHAPEs [on a BACKGROUND background]
    pair:    a COLOUR SHAPE and a COLOUR SHAPE [on a BACKGROUND background]

(`a` becomes `an` before a vowel). Words a caption leaves out are not promised: `a red circle` may lie on
any background, at any place and size, but it is never striped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
PLURALS = {s: s + ("es" if s.endswith("ss") else "s") for s in SHAPES}
TURN = 15  # things other than circles are turned by up to this many degrees either way
COLOURS = {
    "red": (215, 35, 35), "green": (40, 170, 60), "blue": (35, 75, 225), "yellow": (245, 220, 45),
    "white": (245, 245, 245), "black": (20, 20, 20), "purple": (140, 50, 185), "orange": (250, 140, 25),
}
SIZES = {"small": (0.10, 0.14), "big": (0.27, 0.33)}  # radius ranges, as fractions of the image size
ANY_SIZE = (0.10, 0.33)  # a size the caption does not name
PLACE_SIZE = (0.10, 0.15)  # things at a named place are small enough to fit into their third of the image
COUNTS = {"two": 2, "three": 3}
PLACES = {  # the third of the image (column, row) where the centre lies
    "in the top left corner": (0, 0), "at the top": (1, 0), "in the top right corner": (2, 0),
    "on the left": (0, 1), "in the middle": (1, 1), "on the right": (2, 1),
    "in the bottom left corner": (0, 2), "at the bottom": (1, 2), "in the bottom right corner": (2, 2),
}
TEXTURES = ("striped",)
STRIPED_SHAPES = ("circle", "square", "triangle")  # stars and crosses are too thin for stripes
KINDS = {"single": 0.6, "count": 0.15, "pair": 0.25}  # how often `sample` draws each form
MENTION = {"size": 0.3, "texture": 0.15, "place": 0.25, "background": 0.9, "colour": 0.95}
JITTER = 14  # colours vary by up to this much per channel (0..255), so names cover a small range
SUPERSAMPLE = 4
EXTENT = 1.2  # the farthest point of any shape, in radii


@dataclass(frozen=True)
class Caption:
    """The words of a caption by slot; None: the caption does not say."""
    shape: str
    colour: str | None = None
    background: str | None = None
    size: str | None = None
    texture: str | None = None
    place: str | None = None
    count: int = 1
    shape2: str | None = None  # the second thing of a pair
    colour2: str | None = None

    @property
    def kind(self) -> str:
        return "pair" if self.shape2 else "count" if self.count > 1 else "single"

    def text(self) -> str:
        if self.kind == "pair":
            words = ["a", self.colour, self.shape, "and", "a", self.colour2, self.shape2]
        elif self.kind == "count":
            number = next(k for k, v in COUNTS.items() if v == self.count)
            words = [number, self.size, self.colour, PLURALS[self.shape]]
        else:
            words = ["a", self.size, self.texture, self.colour, self.shape, self.place]
        if self.background:
            words += ["on", "a", self.background, "background"]
        words = [w for w in words if w]
        return " ".join("an" if w == "a" and nxt[0] in "aeiou" else w for w, nxt in zip(words, words[1:] + [""]))

    def slots(self) -> list[str]:
        """The attributes this caption names (those a one-word change can alter)."""
        names = ("shape", "colour", "background", "size", "texture", "place", "shape2", "colour2")
        return [n for n in names if getattr(self, n)] + (["count"] if self.kind == "count" else [])

    def valid(self) -> bool:
        colours = {self.colour, self.colour2} - {None}
        if self.background in colours:
            return False
        if self.texture and (self.place or self.size == "small" or self.shape not in STRIPED_SHAPES):
            return False  # stripes need room: striped things are big circles, squares or triangles
        if self.place and self.size == "big":
            return False  # things at a named place are small enough to fit into their third
        return not (self.kind == "pair" and (self.colour, self.shape) == (self.colour2, self.shape2))


def words() -> list[str]:
    """Every word a caption of the world can contain."""
    phrases = [*SHAPES, *PLURALS.values(), *COLOURS, *SIZES, *TEXTURES, *COUNTS, *PLACES, "a an and on background"]
    return sorted({w for p in phrases for w in p.split()})


def choices(slot: str, caption: Caption) -> tuple:
    """The values a slot of this caption can take."""
    if slot in ("shape", "shape2"):
        return SHAPES
    if slot in ("colour", "colour2", "background"):
        return tuple(COLOURS)
    if slot == "size":
        return tuple(SIZES) if caption.kind == "single" else ("small",)
    if slot == "place":
        return tuple(PLACES)
    if slot == "count":
        return (2, 3)
    return (*TEXTURES, None)  # a striped thing's one-word change: the same thing, plain


def variants(caption: Caption, slot: str) -> list[Caption]:
    """The valid captions that differ from `caption` in `slot` only (a one-word change)."""
    current = getattr(caption, slot)
    return [c for c in (replace(caption, **{slot: v}) for v in choices(slot, caption) if v != current) if c.valid()]


def neighbours(caption: Caption) -> list[Caption]:
    """All valid captions that differ from `caption` in one named attribute."""
    return [v for slot in caption.slots() for v in variants(caption, slot)]


def space(caption: Caption) -> list[Caption]:
    """Every valid caption of the same form (the same slots named) as `caption`, itself included."""
    result = [caption]
    for slot in caption.slots():
        result = [c for r in result for c in [r, *(replace(r, **{slot: v}) for v in choices(slot, r)
                                                     if v != getattr(r, slot))]]
    return sorted({c for c in result if c.valid()}, key=lambda c: c.text())


_PATTERNS = [(kind, re.compile(p)) for kind, p in (
    ("pair", r"an? (?P<colour>\w+) (?P<shape>\w+) and an? (?P<colour2>\w+) (?P<shape2>\w+)"),
    ("count", r"(?P<count>two|three) (?:(?P<size>small) )?(?:(?P<colour>\w+) )?(?P<shape>\w+)"),
    ("single", r"an? (?:(?P<size>small|big) )?(?:(?P<texture>striped) )?(?:(?P<colour>\w+) )?(?P<shape>\w+)"
               r"(?: (?P<place>" + "|".join(PLACES) + "))?"),
)]


def parse(text: str) -> Caption | None:
    """The Caption of a text of the grammar (None when it is not one)."""
    text = " ".join(text.lower().strip().rstrip(".").split())
    for kind, pattern in _PATTERNS:
        match = re.fullmatch(pattern.pattern + r"(?: on an? (?P<background>\w+) background)?", text)
        if not match:
            continue
        slots = {k: v for k, v in match.groupdict().items() if v}
        if kind == "count":
            slots["count"] = COUNTS[slots["count"]]
            plural = {p: s for s, p in PLURALS.items()}
            if slots["shape"] not in plural:
                continue
            slots["shape"] = plural[slots["shape"]]
        caption = Caption(**slots)
        known = all(getattr(caption, s) in SHAPES for s in ("shape", "shape2") if getattr(caption, s)) and all(
            getattr(caption, c) in COLOURS for c in ("colour", "colour2", "background") if getattr(caption, c))
        if known and caption.valid() and caption.text() == text:
            return caption
    return None


# --- scenes -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Thing:
    shape: str
    colour: tuple  # RGB 0..255
    x: float  # centre, fraction of the image
    y: float
    radius: float  # fraction of the image size
    angle: float  # degrees
    striped: bool = False


@dataclass(frozen=True)
class Scene:
    background: tuple  # RGB
    things: tuple


def sample_caption(rng: np.random.Generator) -> Caption:
    """A random caption of the world (forms and optional words by KINDS and MENTION)."""
    kind = rng.choice(list(KINDS), p=list(KINDS.values()))
    mention = {k: rng.random() < p for k, p in MENTION.items()}
    while True:
        colours = rng.choice(list(COLOURS), size=3, replace=False)
        shapes = rng.choice(SHAPES, size=2)
        slots = dict(shape=str(shapes[0]), colour=str(colours[0]),
                     background=str(colours[2]) if mention["background"] else None)
        if kind == "pair":
            slots.update(shape2=str(shapes[1]), colour2=str(colours[1] if rng.random() < 0.7 else colours[0]))
        elif kind == "count":
            slots.update(count=int(rng.choice([2, 3])), size="small" if mention["size"] else None)
        else:
            striped = mention["texture"] and slots["shape"] in STRIPED_SHAPES
            place = mention["place"] and not striped
            size = str(rng.choice(["small"] if place else ["big"] if striped else list(SIZES)))
            slots.update(colour=slots["colour"] if mention["colour"] else None,
                         size=size if mention["size"] else None,
                         texture="striped" if striped else None,
                         place=str(rng.choice(list(PLACES))) if place else None)
        caption = Caption(**slots)
        if caption.valid():
            return caption


def _colour(name: str | None, rng: np.random.Generator, avoid: set) -> tuple:
    if name is None:
        name = str(rng.choice([c for c in COLOURS if c not in avoid]))
    rgb = np.array(COLOURS[name]) + rng.integers(-JITTER, JITTER + 1, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def scene_for(caption: Caption, rng: np.random.Generator) -> Scene:
    """A random scene of which `caption` is true."""
    background_name = caption.background or str(rng.choice(
        [c for c in COLOURS if c not in {caption.colour, caption.colour2}]))
    avoid = {background_name}
    background = _colour(background_name, rng, avoid)
    if caption.kind == "pair":
        specs = [(caption.shape, caption.colour), (caption.shape2, caption.colour2)]
        radius_range = (0.12, 0.2)
    else:
        colour = caption.colour or str(rng.choice([c for c in COLOURS if c not in avoid]))
        specs = [(caption.shape, colour)] * caption.count
        radius_range = (0.1, 0.14 if caption.size else 0.17) if caption.count > 1 else PLACE_SIZE if caption.place \
            else SIZES["big"] if caption.texture else SIZES.get(caption.size, ANY_SIZE)
    while True:  # place the things without overlap
        things = []
        for shape, colour in specs:
            radius = rng.uniform(*radius_range)
            if caption.place:
                column, row = PLACES[caption.place]
                centre = (np.array([column, row]) + 0.5) / 3 + rng.uniform(-0.04, 0.04, 2)
                x, y = np.clip(centre, EXTENT * radius + 0.01, 0.99 - EXTENT * radius).tolist()
            else:
                x, y = rng.uniform(EXTENT * radius + 0.01, 0.99 - EXTENT * radius, 2).tolist()
            angle = 0.0 if shape == "circle" else rng.uniform(-TURN, TURN)
            things.append(Thing(shape, _colour(colour, rng, avoid), x, y, radius, angle,
                                striped=caption.texture == "striped"))
        if all(math.dist((a.x, a.y), (b.x, b.y)) > (a.radius + b.radius) * EXTENT + 0.03
               for i, a in enumerate(things) for b in things[i + 1:]):
            return Scene(background, tuple(things))


def sample(rng: np.random.Generator) -> tuple[Caption, Scene]:
    caption = sample_caption(rng)
    return caption, scene_for(caption, rng)


def outline(thing: Thing, size: float) -> list[tuple[float, float]]:
    """The polygon of a thing (circles: 64 points) in pixels of an image of `size`."""
    if thing.shape == "circle":
        points = [(1.0, a) for a in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    elif thing.shape == "square":
        points = [(1.1, math.pi / 4 + k * math.pi / 2) for k in range(4)]  # half side 0.78
    elif thing.shape == "triangle":
        points = [(1.2, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    elif thing.shape == "star":
        points = [(1.15 if k % 2 == 0 else 0.48, -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    else:  # cross: arms of half width 0.32
        w = 0.32
        corners = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
                   (-w, -w), (-w, -1)]
        points = [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    turn = math.radians(thing.angle)
    r = thing.radius * size
    return [(thing.x * size + r * d * math.cos(a + turn), thing.y * size + r * d * math.sin(a + turn))
            for d, a in points]


def render(scene: Scene, size: int, with_mask: bool = False, outline_of=outline):
    """The scene as an [size, size, 3] uint8 array (drawn at SUPERSAMPLE times the size, then reduced);
    `with_mask`: also the [size, size] float coverage of the things (0: background, 1: a thing's colour).
    `outline_of(thing, size)` draws the things (another one: things of no shape of the world)."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), scene.background)
    cover = Image.new("L", (big, big), 0)
    for thing in scene.things:
        mask = Image.new("L", (big, big), 0)
        ImageDraw.Draw(mask).polygon(outline_of(thing, big), fill=255)
        if thing.striped:  # diagonal stripes inside an outline, in the thing's colour
            half = max(1, round(thing.radius * big * 0.35))
            yy, xx = np.mgrid[0:big, 0:big]
            stripes = np.where(((xx + yy) // half) % 2 == 0, np.asarray(mask), 0).astype(np.uint8)
            mask = Image.fromarray(stripes)
            ImageDraw.Draw(mask).polygon(outline_of(thing, big), outline=255, width=max(1, round(half * 0.45)))
        image.paste(thing.colour, (0, 0), mask)
        cover.paste(255, (0, 0), mask)
    pixels = np.asarray(image.reduce(SUPERSAMPLE))
    if not with_mask:
        return pixels
    return pixels, np.asarray(cover.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0
