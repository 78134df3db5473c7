"""`parameterization: polygons`: a drawing of filled polygons over a background colour. It draws what its
corners say (read by the mini world's pixel reader), every tensor gets a gradient, setting an image fits the
colours and keeps the polygons, a resolution change keeps the drawing, post-processing is refused, and the
live editor continues a drawing with its own polygons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from conftest import make_engine

from clipig.config.errors import ConfigError
from clipig.config.loader import load
from clipig.files.output import to_pil
from clipig.image.parameterizations import create, polygon_coverage
from clipig.mini import reading, world


def drawing(kind: str = "polygons", width: int = 48, height: int = 48, image: torch.Tensor | None = None):
    config = load(texts=[f"resolution: {width} {height}\nparameterization: {kind}\n"])
    image = torch.full((3, height, width), 0.5) if image is None else image
    return create(config.parameterization, {"epoch": 0, "epochs": 1}, image, "cpu")


def star(x: float, y: float, radius: float) -> torch.Tensor:
    """The world's five-pointed star [10, 2] around (x, y)."""
    return torch.tensor([[x + radius * (1.15 if k % 2 == 0 else 0.48) * math.cos(-math.pi / 2 + k * math.pi / 5),
                          y + radius * (1.15 if k % 2 == 0 else 0.48) * math.sin(-math.pi / 2 + k * math.pi / 5)]
                         for k in range(10)])


def rgb(name: str) -> torch.Tensor:
    return torch.tensor(world.COLOURS[name], dtype=torch.float32) / 255


def draw(canvas, outline: torch.Tensor, fill: str, background: str) -> None:
    """Make the first polygon `outline` (units of the longer side) in `fill`, the others invisible."""
    with torch.no_grad():
        canvas.centres.zero_()
        canvas.corners[0].copy_(outline / canvas.GEOMETRY)
        canvas.fills[0].copy_(rgb(fill) / canvas.COLOUR)
        canvas.background.copy_(rgb(background) / canvas.COLOUR)
        canvas.opacity.copy_(torch.tensor([20.0] + [-20.0] * (len(canvas.opacity) - 1)) / canvas.OPACITY)


def test_a_star_drawn_by_its_corners_is_read_as_a_star():
    canvas = drawing("{type: polygons, corners: 10, softness: 0.5}", 128, 128)
    draw(canvas, star(0.5, 0.45, 0.3), "yellow", "blue")
    pixels = np.asarray(to_pil(canvas.image().detach()))
    assert reading.shapes_shown(pixels, world.parse("a yellow star on a blue background"))
    assert not reading.shapes_shown(pixels, world.parse("a yellow circle on a blue background"))
    assert np.abs(pixels[2, 2].astype(int) - world.COLOURS["blue"]).max() <= 1  # the background around it


def test_coverage_is_the_area_and_lies_where_the_corners_say():
    """A square of side 0.25 (units of the longer side) at (0.25, 0.2) on a 64 x 32 picture: 256 pixels, its
    middle at pixel (16, 12.8); the edge spreads over `softness` pixels and keeps the area along the sides (the
    corners add a little outside, more with softer edges)."""
    square = torch.tensor([[0.125, 0.075], [0.375, 0.075], [0.375, 0.325], [0.125, 0.325]])
    for softness, corners in ((0.3, 0.02), (1.0, 0.06)):
        cover = polygon_coverage(square[None], 64, 32, softness)[0]
        assert cover.shape == (32, 64)
        assert 256 < float(cover.sum()) < 256 * (1 + corners)
        ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(64) + 0.5, indexing="ij")
        assert float((cover * xs).sum() / cover.sum()) == pytest.approx(16, abs=0.1)
        assert float((cover * ys).sum() / cover.sum()) == pytest.approx(12.8, abs=0.1)
    crossed = torch.tensor([[0.1, 0.1], [0.4, 0.4], [0.4, 0.1], [0.1, 0.4]])  # a bow tie: two triangles
    cover = polygon_coverage(crossed[None], 64, 32, 0.3)[0]
    assert float(cover.sum()) == pytest.approx(2 * (0.15 * 0.3 / 2) * 64 ** 2, rel=0.03)


def _crossings(outline: torch.Tensor) -> int:
    """How many pairs of non-neighbouring edges of the closed outline [k, 2] cross."""
    k, crossed = len(outline), 0
    for i in range(k):
        for j in range(i + 2, k - (i == 0)):
            a, b, c, d = outline[i], outline[(i + 1) % k], outline[j], outline[(j + 1) % k]
            side = lambda p, q, r: float((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))
            crossed += side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0
    return crossed


def test_radial_polygons_start_as_the_free_ones_and_never_cross_themselves():
    """`radial` corners are angles and distances around the centre, in the order of their angles: whatever the
    tensors hold, no edge crosses another (free corners with the same random values do)."""
    free, radial = drawing("{type: polygons, corners: 8}"), drawing("{type: polygons, corners: 8, radial: true}")
    assert torch.allclose(free.outlines(), radial.outlines(), atol=1e-6)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for canvas in (free, radial):
            canvas.corners.copy_(torch.randn(canvas.corners.shape, generator=generator) * 0.3)
    assert sum(_crossings(outline) for outline in free.outlines().detach()) > 0
    assert all(_crossings(outline) == 0 for outline in radial.outlines().detach())
    angles = (radial.outlines() - radial.centres[:, None] * radial.GEOMETRY).detach()
    turns = torch.atan2(angles[..., 1], angles[..., 0]).diff(dim=1).remainder(2 * math.pi)
    assert float(turns.sum(1).max()) < 2 * math.pi  # one way round, once


def yellow_on_blue(draw) -> torch.Tensor:
    """A 64×64 goal: blue, with what `draw(ImageDraw.Draw)` draws in yellow."""
    image = Image.new("RGB", (64, 64), world.COLOURS["blue"])
    draw(ImageDraw.Draw(image))
    return torch.tensor(np.array(image)).permute(2, 0, 1).float() / 255


def fit(goal: torch.Tensor, kind: str) -> np.ndarray:
    """The pixels of one yellow polygon on blue (`kind`: its options), its outline trained by its gradient
    from the circle it starts as to cover the yellow of `goal`."""
    canvas = drawing(f"{{type: polygons, count: 1, corners: 40, {kind}}}", 64, 64)
    with torch.no_grad():
        canvas.fills[0].copy_(rgb("yellow") / canvas.COLOUR)
        canvas.background.copy_(rgb("blue") / canvas.COLOUR)
    optimizer = torch.optim.Adam([canvas.corners, canvas.centres, canvas.turn], lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        (canvas.image() - goal).pow(2).sum().backward()
        optimizer.step()
    return np.asarray(to_pil(canvas.image().detach()))


def fitted(shape: str, harmonics: int, lowest: int = 1) -> bool:
    """Whether a smooth polygon fitted to the world's drawing of a yellow `shape` on blue (turned by 20
    degrees, off the middle) is then read as that shape."""
    thing = world.Thing(shape, world.COLOURS["yellow"], 0.45, 0.5, 0.28, 20.0)
    goal = yellow_on_blue(lambda draw: draw.polygon(world.outline(thing, 64), fill=world.COLOURS["yellow"]))
    pixels = fit(goal, f"harmonics: {harmonics}, lowest_wave: {lowest}")
    return reading.shapes_shown(pixels, world.parse(f"a yellow {shape} on a blue background"))


def test_smooth_outlines_draw_the_world_shapes_with_enough_waves():
    """`harmonics`: an outline of 8 waves, trained by its gradient from the circle it starts as, becomes a star
    and a cross the pixel reader recognises; with 2 waves it has no star's points."""
    assert fitted("star", 8) and fitted("cross", 8)
    assert not fitted("star", 2)


def test_outlines_from_the_third_wave_cannot_be_stretched_into_an_oval():
    """`lowest_wave: 3`: fitted to an oval twice as wide as high, the outline stays about as high as wide,
    where one with every wave becomes the oval; stars and crosses are still drawn."""
    goal = yellow_on_blue(lambda draw: draw.ellipse((10, 22, 54, 42), fill=world.COLOURS["yellow"]))
    oval = goal[2].numpy() < 0.5  # yellow has no blue

    def overlap(pixels: np.ndarray) -> float:
        thing = pixels[..., 2] < 128
        return (thing & oval).sum() / (thing | oval).sum()

    every, balanced = (overlap(fit(goal, f"harmonics: 8, lowest_wave: {k}")) for k in (1, 3))
    assert every > 0.9 and balanced < 0.75, (every, balanced)
    assert fitted("star", 8, lowest=3) and fitted("cross", 8, lowest=3)


@pytest.mark.parametrize("kind", ["polygons", "{type: polygons, squash: tanh, decorrelate: true}",
                                  "{type: polygons, radial: true}", "{type: polygons, harmonics: 3}",
                                  "{type: polygons, harmonics: 5, lowest_wave: 3}"])
def test_every_tensor_gets_a_gradient(kind):
    canvas = drawing(kind, 40, 30, image=torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(1)))
    target = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(2))
    (canvas.image() - target).pow(2).sum().backward()
    named = dict(canvas.named_parameters())
    turned = "radial" in kind or "harmonics" in kind
    assert set(named) == {"background", "fills", "centres", "corners", "opacity"} | ({"turn"} if turned else set())
    assert all(t.grad is not None and (t.grad.abs() > 0).all() for t in named.values())


def test_setting_an_image_fits_the_colours_and_keeps_the_polygons():
    canvas = drawing("{type: polygons, count: 2}", 40, 40)
    corners, centres = canvas.outlines().detach().clone(), canvas.centres.detach().clone()
    image = rgb("blue")[:, None, None].expand(3, 40, 40).clone()
    x, y = (canvas.centres[0] * canvas.GEOMETRY * 40).long().tolist()
    image[:, y - 1:y + 2, x - 1:x + 2] = rgb("red")[:, None, None]
    canvas.set_image(image)
    assert torch.equal(canvas.outlines(), corners) and torch.equal(canvas.centres, centres)
    assert torch.allclose(canvas.background * canvas.COLOUR, rgb("blue"))
    assert torch.allclose(canvas.fills * canvas.COLOUR, torch.stack([rgb("red"), rgb("blue")]))


def test_a_resolution_change_keeps_the_drawing(tiny):
    """With learnrate 0 the drawing stays; at 32 pixels it is the same polygons drawn larger, and the optimizer
    keeps its tensors (no new canvas)."""
    engine = make_engine("parameterization: polygons\nresolution: 16 if t < .5 else 32\nepochs: 4\nlearnrate: 0\n"
                         "targets:\n  - features:\n      - text: a curly spoon\n")
    first, seen = engine.canvas, []
    engine.listeners.append(lambda e: seen.append(engine.image()) if e.kind == "epoch" else None)
    engine.run()
    assert engine.canvas is first and [s.shape[-1] for s in seen] == [16, 16, 32, 32]
    again = drawing("polygons", 32, 32)
    again.load_state_dict(first.state_dict())
    assert torch.equal(seen[-1], again.image().detach())


def test_post_processing_is_refused_with_its_place():
    with pytest.raises(ConfigError, match=r"<config>:4: postproc\[0\]: post-processing edits pixels, which "
                                          r"`parameterization: polygons` cannot show"):
        load(texts=["parameterization: polygons\nepochs: 3\npostproc:\n  - border: {size: 2}\n"])
    with pytest.raises(ConfigError, match=r"parameterization\.corners: must be at least 3"):
        load(texts=["parameterization: {type: polygons, corners: 2}\n"])


def test_continued_from_its_picture_a_drawing_goes_on_with_its_polygons(tiny):
    """The live editor continues from the picture and, with it, the parameterization's tensors (`drawing`):
    the polygons go on where they were, also with a changed `softness`; without them, or when the edit
    changes the number of corners or how colours are trained, they start again on the ring."""
    from clipig.run.engine import open_run
    text = ("parameterization: {type: polygons, count: 2}\nresolution: 32\nepochs: 6\n"
            "targets:\n  - features:\n      - text: a curly spoon\n")
    first = make_engine(text, "epochs=3")
    first.run()
    state = {"epoch": 3, "image": first.image(unclamped=True), "drawing": first.state_dict()["parameterization"]}
    again = open_run(load(texts=[text], overrides=["model=random:tiny", "verbose=0"]), state=state)
    assert torch.equal(again.canvas.outlines(), first.canvas.outlines())
    assert torch.equal(again.image(), first.image())
    softer = open_run(load(texts=[text.replace("count: 2", "count: 2, softness: 3")],
                           overrides=["model=random:tiny", "verbose=0"]), state=state)
    assert torch.equal(softer.canvas.outlines(), first.canvas.outlines()) and softer.canvas.options["softness"] == 3
    saved = state["drawing"]
    for kind, given in (("{type: polygons, count: 2}", None), ("{type: polygons, count: 2, corners: 8}", saved),
                        ("{type: polygons, count: 2, decorrelate: true}", saved)):  # colours mean another thing
        restarted = open_run(load(texts=[text.replace("{type: polygons, count: 2}", kind)],
                                  overrides=["model=random:tiny", "verbose=0"]), state={**state, "drawing": given})
        assert torch.equal(restarted.canvas.outlines(), drawing(kind, 32, 32).outlines())  # on the ring again
