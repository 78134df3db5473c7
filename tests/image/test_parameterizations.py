"""Parameterizations: each shows the image it was set to, trains through its own tensors, keeps the picture
through resizing, post-processing and continuing, and is chosen and recorded through `parameterization`."""

import pytest
import torch
import yaml
from conftest import make_engine

from clipig.config.errors import ConfigError
from clipig.config.loader import load
from clipig.config.registry import PARAMETERIZATIONS
from clipig.files.output import save_png, sidecar_text
from clipig.image.parameterizations import create, rebuilt
from clipig.image.start import resize
from clipig.run.engine import open_run

TYPES = sorted(PARAMETERIZATIONS)
KINDS = [f"{{type: {name}, decorrelate: {d}}}" for name in TYPES for d in ("false", "true")]

SPOON = """
epochs: 3
resolution: 24
targets:
  - batch_size: 2
    features:
      - text: a curly spoon
    transforms:
      - random_shift: 0 1
"""


def canvas_of(kind: str, width: int = 37, height: int = 29, **extra):
    """A fresh parameterization of `kind` (as written in YAML) at width x height."""
    config = load(texts=[f"resolution: {width} {height}\nparameterization: {kind}\n"],
                  overrides=[f"{k}={v}" for k, v in extra.items()])
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(3))
    return config.parameterization, create(config.parameterization, {"epoch": 0, "epochs": 1}, image, "cpu")


def picture(width: int = 37, height: int = 29, seed: int = 1) -> torch.Tensor:
    """A smooth test image in [0.1, 0.9] with some fine detail."""
    g = torch.Generator().manual_seed(seed)
    coarse = resize(torch.rand(1, 3, 4, 5, generator=g), width, height, "cubic")[0]
    return (0.1 + 0.7 * coarse + 0.1 * torch.rand(3, height, width, generator=g)).clamp(0, 1)


def test_the_registry_has_the_promised_types():
    assert TYPES == ["fft", "pixels", "pyramid"]


@pytest.mark.parametrize("kind", KINDS)
def test_gives_back_the_image_it_was_set_to(kind):
    _, canvas = canvas_of(kind)
    image = picture()
    canvas.set_image(image)
    assert torch.allclose(canvas.image(), image, atol=1e-5)
    outside = image * 3 - 1  # values beyond [0, 1] are kept (post-processing and continuing rely on it)
    canvas.set_image(outside)
    assert torch.allclose(canvas.unclamped(), outside, atol=1e-5)
    assert torch.equal(canvas.image(), canvas.unclamped().clamp(0, 1))


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_tensor(kind):
    _, canvas = canvas_of(kind)
    canvas.set_image(picture())
    weights = torch.randn(3, 29, 37, generator=torch.Generator().manual_seed(0))
    (canvas.image() * weights).sum().backward()
    tensors = list(canvas.parameters())
    assert tensors and all(t.grad is not None and t.grad.abs().sum() > 0 for t in tensors)
    assert "size" not in dict(canvas.named_parameters())  # the resolution is state, not trained


@pytest.mark.parametrize("kind", KINDS)
def test_an_optimizer_step_moves_pixels_about_as_far_as_with_pixels(kind):
    """`learnrate: 1` means about the same step size with every type (a random-direction step)."""
    _, canvas = canvas_of(kind, 64, 48)
    canvas.set_image(picture(64, 48))
    before = canvas.unclamped().detach().clone()
    for t in canvas.parameters():
        t.grad = torch.randn(t.shape, generator=torch.Generator().manual_seed(5))
    torch.optim.Adam(canvas.parameters(), lr=0.01).step()
    step = (canvas.unclamped().detach() - before).pow(2).mean().sqrt().item()
    assert 0.005 < step < 0.02


@pytest.mark.parametrize("kind", KINDS)
def test_resizing_keeps_the_picture(kind):
    choice, canvas = canvas_of(kind)
    image = picture()
    canvas.set_image(image)
    bigger = rebuilt(canvas, choice, [50, 40], "linear", {"epoch": 0, "epochs": 1})
    assert bigger is not canvas and bigger.resolution == [50, 40]
    expected = resize(image[None], 50, 40, "linear")[0]
    assert torch.allclose(bigger.image(), expected.clamp(0, 1), atol=1e-5)
    assert rebuilt(bigger, choice, [50, 40], "linear", {"epoch": 0, "epochs": 1}) is bigger  # nothing changed


@pytest.mark.parametrize("kind", KINDS)
def test_post_processing_edits_the_image_it_shows(kind, tiny):
    """No targets, so only post-processing changes the image: a border drawn, the rest as it was."""
    engine = make_engine(f"parameterization: {kind}\nresolution: 20 16\nepochs: 1\n"
                         "postproc:\n  - border: {size: 2, color: 0.1 0.2 0.3}\n")
    before = engine.image()
    engine.step()
    after = engine.image()
    assert torch.allclose(after[:, 2:-2, 2:-2], before[:, 2:-2, 2:-2], atol=1e-5)
    assert torch.allclose(after[:, :2, :], torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 2, 20), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_an_init_image_comes_out_as_that_image(kind, tiny, tmp_path):
    image = picture(24, 24)
    save_png(image, tmp_path / "start.png")
    engine = make_engine(f"parameterization: {kind}\nresolution: 24\nepochs: 1\n",
                         f"init.image={tmp_path / 'start.png'}", "init.mean=0", "init.std=1")  # image * std + mean
    assert torch.allclose(engine.image(), (image * 255).round() / 255, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_continuing_from_the_unclamped_image_continues_exactly(kind, tiny):
    """The live editor (stop, edit, continue) and its snapshots go on through open_run(state={epoch, image}): the
    run shows the unclamped picture, starts at the epoch and trains exactly as a run of the configuration that
    started there from `init.image_tensor` (the original's way, still read from files)."""
    from clipig.config.loader import load
    from clipig.run.engine import open_run
    first = make_engine(SPOON + f"parameterization: {kind}\n")
    first.run()
    state = first.image(unclamped=True)
    config = load(texts=[SPOON + f"parameterization: {kind}\n"], overrides=["model=random:tiny", "verbose=0",
                                                                             "seed=0", "epochs=5"])
    second = open_run(config, state={"epoch": 3, "image": state})
    assert torch.allclose(second.image(unclamped=True), state, atol=1e-5)
    assert second.epoch == 3 and second.facts().continued and second.facts().first_epoch == 3
    second.image(unclamped=True)[0, 0, 0] += 1  # a copy, never the trained tensor itself
    assert torch.allclose(second.image(unclamped=True), state, atol=1e-5)
    old_way = make_engine(SPOON + f"parameterization: {kind}\n", "epochs=5", "start_epoch=3",
                          f"init.image_tensor={state.tolist()}")
    second.run()
    old_way.run()
    assert torch.equal(second.image(unclamped=True), old_way.image(unclamped=True))


@pytest.mark.parametrize("kind", KINDS)
def test_the_state_loads_at_its_own_resolution(kind):
    _, canvas = canvas_of(kind)
    canvas.set_image(picture())
    _, other = canvas_of(kind, 16, 16)
    other.load_state_dict(canvas.state_dict())
    assert other.resolution == [37, 29]
    assert torch.equal(other.image(), canvas.image())


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_with_resolution_and_option_changes_keeps_the_picture(kind, tiny):
    """The resolution grows at epoch 2 and an option changes by expression at epoch 3; with learnrate 0 only
    these changes touch the image: the picture is resampled once and then kept."""
    options = {"fft": "decay: '1 if t < .5 else 1.5'", "pyramid": "levels: '2 if t < .5 else 4'",
               "pixels": "decorrelate: 't >= .5'"}
    name = yaml.safe_load(kind)["type"]
    text = (SPOON.replace("resolution: 24", "resolution: 16 if t < .3 else 24")
            + f"parameterization:\n  type: {name}\n  {options[name]}\nlearnrate: 0\n")
    engine = make_engine(text, "epochs=6")
    start = engine.image(unclamped=True)
    seen = []
    engine.listeners.append(lambda e: seen.append((engine.canvas, engine.image())) if e.kind == "epoch" else None)
    engine.run()
    canvases = [c for c, _ in seen]
    assert [c.resolution for c in canvases[1:3]] == [[16, 16], [24, 24]]
    assert len({id(c) for c in canvases}) == 3 and canvases[3].options != canvases[2].options
    expected = resize(start[None], 24, 24, "cubic")[0].clamp(0, 1)
    assert torch.allclose(seen[2][1], expected, atol=1e-5)
    assert torch.allclose(seen[5][1], expected, atol=1e-5)


def test_options_are_validated_with_paths():
    with pytest.raises(ConfigError, match=r"parameterization\.type: unknown value 'ftt'.*did you mean 'fft'"):
        load(texts=["parameterization: ftt\n"])
    with pytest.raises(ConfigError, match=r"parameterization\.decay: must be at least 0"):
        load(texts=["parameterization: {type: fft, decay: -1}\n"])
    with pytest.raises(ConfigError, match=r"unknown parameter 'levels' of fft.*known: decay, decorrelate"):
        load(texts=["parameterization: {type: fft, levels: 3}\n"])
    with pytest.raises(ConfigError, match=r"parameterization\.levels: expression 'lr' uses unknown variable"):
        load(texts=["parameterization: {type: pyramid, levels: lr}\n"])
    config = load(texts=["parameterization: {decorrelate: true}\n"])
    assert config.parameterization.name == "pixels"  # the default type


def test_the_sidecar_records_it_and_renders_the_same_again(tiny, tmp_path):
    engine = make_engine(SPOON + "parameterization: {type: fft, decorrelate: true}\n")
    engine.run()
    text = sidecar_text(engine.config, engine.facts())
    assert yaml.safe_load(text)["parameterization"] == {"type": "fft", "decay": 1.0, "decorrelate": True}
    again = open_run(load(texts=[text], overrides=["verbose=0"]))
    again.run()
    assert torch.equal(again.image(), engine.image())
