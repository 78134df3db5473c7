"""The mini world: captions say what the pixels show, and the grammar round-trips."""

import math

import numpy as np
import pytest

from clipig.mini import world
from clipig.mini.reading import components, erode, fill_holes, nearest_colour, shape_of, shapes_shown

SIZE = 128  # render larger than the model's input, so that the measurements are sharp


def things_seen(image: np.ndarray, background: int) -> list[dict]:
    """The things on the background: colour index, mask (holes filled), centre, farthest radius and whether
    striped (much of the filled outline is background). Thin anti-aliased fringes, where two colours mix
    into a third, are dropped."""
    colours = nearest_colour(image)
    seen = []
    for index in set(np.unique(colours)) - {background}:
        for part in components(colours == index):
            if part.sum() < 12 or erode(part, 2).sum() < 0.1 * part.sum():
                continue
            mask = fill_holes(part)
            ys, xs = np.nonzero(mask)
            seen.append({"colour": index, "mask": mask, "x": xs.mean() / SIZE, "y": ys.mean() / SIZE,
                         "extent": np.hypot(ys - ys.mean(), xs - xs.mean()).max() / SIZE,
                         "striped": part.sum() < 0.92 * mask.sum()})
    return seen


def check(caption: world.Caption, image: np.ndarray) -> None:
    names = list(world.COLOURS)
    colours = nearest_colour(image)
    background = np.bincount(colours[[0, -1, 0, -1], [0, 0, -1, -1]], minlength=len(names)).argmax()
    if not caption.place:  # a thing may cover some corners, but not all of them after a named place
        background = np.bincount(colours.ravel(), minlength=len(names)).argmax()
    if caption.background:
        assert names[background] == caption.background
    seen = things_seen(image, background)
    wanted = [(caption.colour, caption.shape)] * caption.count
    if caption.kind == "pair":
        wanted = [(caption.colour, caption.shape), (caption.colour2, caption.shape2)]
    assert len(seen) == len(wanted)
    for colour, shape in wanted:
        matches = [s for s in seen if (colour is None or names[s["colour"]] == colour)
                   and shape_of(s["mask"]) == shape]
        assert matches, (colour, shape, [(names[s["colour"]], shape_of(s["mask"])) for s in seen])
    for thing in seen:
        if caption.size == "small":
            assert thing["extent"] < 0.2
        if caption.size == "big":
            assert thing["extent"] > 0.25
        if caption.place:
            column, row = world.PLACES[caption.place]
            assert (int(thing["x"] * 3), int(thing["y"] * 3)) == (column, row)
        assert thing["striped"] == (caption.texture == "striped")


@pytest.mark.slow
def test_captions_say_what_the_pixels_show():
    rng = np.random.default_rng(7)
    kinds = set()
    for _ in range(60):
        caption, scene = world.sample(rng)
        kinds.add(caption.kind)
        check(caption, world.render(scene, SIZE))
    assert kinds == {"single", "count", "pair"}


@pytest.mark.parametrize("text", [
    "a red circle on a blue background", "a big striped orange triangle on a green background",
    "a small white cross in the top left corner on a black background", "three purple triangles",
    "a yellow square and a red circle on a blue background", "two small green crosses on a white background"])
def test_each_form_is_drawn_as_said(text):
    caption = world.parse(text)
    assert caption is not None and caption.text() == text
    rng = np.random.default_rng(3)
    for _ in range(4):
        check(caption, world.render(world.scene_for(caption, rng), SIZE))


def test_the_checks_see_a_wrong_caption():
    """The pixel checks are strict enough to catch a caption that lies about one word."""
    rng = np.random.default_rng(5)
    scene = world.scene_for(world.parse("a red star on a blue background"), rng)
    image = world.render(scene, SIZE)
    for lie in ("a red circle on a blue background", "a green star on a blue background",
                "a red star on a yellow background", "two red stars on a blue background"):
        with pytest.raises(AssertionError):
            check(world.parse(lie), image)


def test_grammar_round_trip_and_one_word_changes():
    caption = world.parse("an orange star on a blue background")
    assert caption == world.Caption(shape="star", colour="orange", background="blue")
    neighbours = world.neighbours(caption)
    assert len(neighbours) == 4 + 6 + 6  # other shapes, colours (not blue), backgrounds (not orange)
    assert all(sum(a != b for a, b in zip(n.text().split(), caption.text().split())) <= 2 for n in neighbours)
    assert len(world.space(caption)) == 5 * 8 * 7
    assert world.parse("a red circle on a red background") is None  # never drawn: invisible
    assert world.parse("a spoon with a curly handle") is None
    assert world.parse("a striped red star on a blue background") is None  # stripes only on wide shapes
    rng = np.random.default_rng(0)
    for _ in range(300):
        caption = world.sample_caption(rng)
        assert world.parse(caption.text()) == caption


def test_scenes_are_deterministic_from_the_seed():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [world.render(world.sample(rng)[1], 32) for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(draw(1), draw(1)))
    assert not all(np.array_equal(a, b) for a, b in zip(draw(1), draw(2)))


def test_every_word_is_a_known_token():
    from clipig.critic import mini as model
    from clipig.mini import train
    vocab = set(train.vocabulary())
    tokens = model.tokenizer()([" ".join(world.words())])[0]
    assert set(tokens.tolist()) <= vocab
    assert max(vocab) == 49407 and math.isfinite(len(vocab))


@pytest.mark.slow
def test_shapes_shown_reads_the_shapes_of_drawn_scenes():
    """The reader the quality benchmark and the first image's test use: drawn scenes of random captions,
    resized from 64 pixels as renders are, show their caption's shapes, and never another shape's caption."""
    rng, shown, wrong, read = np.random.default_rng(3), 0, 0, 0
    for _ in range(24):
        caption, scene = world.sample(rng)
        image = world.render(scene, 64)
        if shapes_shown(image, caption) is None:
            assert caption.colour is None
            continue
        read += 1
        shown += shapes_shown(image, caption)
        wrong += shapes_shown(image, world.variants(caption, "shape")[0])
    assert read > 20 and shown >= 0.95 * read and wrong == 0, (read, shown, wrong)
