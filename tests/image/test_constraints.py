"""Constraints: measures, goals, above/below and the l1/l2 losses on tiny hand-made images, and gradient flow."""

import pytest
import torch

from clipig.config.registry import CONSTRAINTS
from clipig.config.schema import parse_plugin_params
from clipig.image import constraints as C
from clipig.image import transforms as T

MEASURES = {"contrast", "edge_mean", "mean", "saturation", "std"}
# Arguments that give every constraint a loss (and so a gradient) on random images in [0.1, 0.9].
EXAMPLES = {
    "blur": {}, "border": {"size": 1, "color": 1}, "contrast": {"above": 2}, "edge_mean": {"above": 1},
    "mean": {"above": 1}, "noise": {"std": 0.1}, "normalize": {"min": 0.2, "max": 0.7},
    "saturation": {"above": 1}, "std": {"below": 0},
}
COVERED: set[str] = set()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # the hand-made random images are the same in every run


def covers(*names):
    """Marks a test as the behaviour test of these constraints (see `test_every_constraint_is_tested`)."""
    COVERED.update(names)
    return lambda fn: fn


def args(name, raw=None, **variables):
    params = parse_plugin_params(CONSTRAINTS[name], raw or {}, name)
    return {k: (v(variables) if v is not None else None) for k, v in params.items()}


def loss(name, images, raw=None, seed=0):
    """The loss before the constraint's fixed strength (tested separately below), averaged over the views."""
    spec = CONSTRAINTS[name]
    per_view = C.constraint_loss(spec, images, args(name, raw), torch.Generator().manual_seed(seed))
    assert per_view.shape == (images.shape[0],)
    return per_view.mean() / spec.flags["strength"]


def test_losses_are_scaled_by_the_documented_strength():
    strengths = {name: spec.flags["strength"] for name, spec in CONSTRAINTS.items()}
    assert strengths == {**{name: 100.0 for name in CONSTRAINTS}, "normalize": 10.0, "contrast": 1.0}
    image = torch.full((1, 3, 4, 4), 0.2)
    assert C.constraint_loss(CONSTRAINTS["mean"], image, args("mean", {"above": 0.5})).item() == pytest.approx(9.0)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_losses_are_per_view(name):
    """One loss per view, each the loss of that view alone (the engine sums them, as the original does)."""
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    spec, a = CONSTRAINTS[name], args(name, EXAMPLES[name])
    together = C.constraint_loss(spec, images, a, torch.Generator().manual_seed(0))
    alone = [C.constraint_loss(spec, images[i:i + 1], a, torch.Generator().manual_seed(0))[0] for i in range(3)]
    if name == "noise":  # random: only the first view draws the same noise
        alone = alone[:1]
    assert torch.allclose(together[:len(alone)], torch.stack(alone), rtol=1e-5)


def value(name, images, **kw):
    """The measured value [N, 3] of a measure."""
    return CONSTRAINTS[name].fn(images, **kw)


def gray(*values):
    """A [1, 3, 1, len] image whose pixels are the given gray values."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1).expand(1, 3, 1, -1).contiguous()


# --- registry -----------------------------------------------------------------------------------------------

def test_every_constraint_is_tested():
    assert set(EXAMPLES) == set(CONSTRAINTS)
    assert set(CONSTRAINTS) <= COVERED, f"constraints without behaviour test: {set(CONSTRAINTS) - COVERED}"


def test_parameters_of_every_constraint():
    for name, spec in CONSTRAINTS.items():
        assert {"weight", "start", "end", "loss"} <= set(spec.params), name
        assert ({"above", "below"} <= set(spec.params)) == (name in MEASURES) == bool(spec.flags.get("measure"))
        assert spec.doc and all(p.doc for p in spec.params.values()), name
    defaults = args("mean")
    assert (defaults["weight"], defaults["loss"]) == (1.0, "l2")
    assert (defaults["start"].value, defaults["end"].value) == (0.0, 1.0)
    assert args("mean", {"loss": "mae"})["loss"] == "l1" and args("mean", {"loss": "mse"})["loss"] == "l2"
    assert args("normalize")["min"] == [0.0] * 3
    assert args("normalize")["max"] == [1.0] * 3 and args("border")["size"] == [1, 1]
    assert args("edge_mean")["kernel_size"] == [3, 3] and args("blur")["sigma"] is None
    assert {n for n, s in CONSTRAINTS.items() if s.random} == {"noise"}


def test_parameters_take_expressions():
    assert args("mean", {"above": "0.5 * sim", "weight": "1 - t"}, sim=0.4, t=0.25)["above"] == [0.2] * 3
    assert args("mean", {"weight": "1 - t"}, t=0.25)["weight"] == 0.75


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_gradient_flows(name):
    images = (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1).requires_grad_()
    result = loss(name, images, EXAMPLES[name])
    assert result.shape == () and result > 0
    result.backward()
    assert torch.isfinite(images.grad).all()
    if name == "noise":  # (image - (image + noise)) does not depend on the image: as in the original
        assert images.grad.abs().sum() == 0
    else:
        assert images.grad.abs().sum() > 0


def test_goal_constraints_are_differentiated_through_the_goal():
    """blur: the gradient of mean((x - blur(x))^2) is 2 (I - B)^T (I - B) x / n, not 2 (x - blur(x)) / n."""
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)).requires_grad_()
    loss("blur", image).backward()
    x = image.detach().clone().requires_grad_()
    ((x - T.gaussian_blur(x, [3, 3])) ** 2).mean().backward()
    assert torch.allclose(image.grad, x.grad, atol=1e-7)
    difference = 2 * (image.detach() - T.gaussian_blur(image.detach(), [3, 3])) / image.numel()
    assert not torch.allclose(image.grad, difference, atol=1e-5)


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_runs_on_single_images_and_batches(name, n):
    assert torch.isfinite(loss(name, torch.rand(n, 3, 16, 16), EXAMPLES[name]))


# --- measures -----------------------------------------------------------------------------------------------

@covers("mean")
def test_mean_above_and_below():
    image = torch.full((2, 3, 4, 4), 0.5)
    assert torch.allclose(value("mean", image), torch.full((2, 3), 0.5))
    assert loss("mean", image, {"above": 0.7}).item() == pytest.approx(0.04)
    assert loss("mean", image, {"above": 0.7, "loss": "l1"}).item() == pytest.approx(0.2)
    assert loss("mean", image, {"below": 0.7}) == 0 and loss("mean", image, {"above": 0.3}) == 0
    assert loss("mean", image, {"below": "0.4 0.5 0.6", "loss": "l1"}).item() == pytest.approx(0.1 / 3)
    assert loss("mean", image, {}) == 0  # neither above nor below


@covers("saturation")
def test_saturation_of_gray_and_red():
    assert torch.allclose(value("saturation", torch.rand(2, 1, 4, 4).expand(2, 3, 4, 4)), torch.zeros(2, 3), atol=1e-6)
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1
    assert torch.allclose(value("saturation", red), torch.tensor([[2 / 3, 1 / 3, 1 / 3]]))
    assert loss("saturation", red, {"below": 0.5, "loss": "l1"}).item() == pytest.approx((2 / 3 - 0.5) / 3)


@covers("std")
def test_std_per_channel():
    image = gray(0.0, 1.0, 0.0, 1.0)
    image[:, 2] = 0.5
    assert torch.allclose(value("std", image), torch.tensor([[1, 1, 0]]) * torch.tensor([0.0, 1, 0, 1]).std())
    assert loss("std", image, {"above": 0.0}) == 0


@covers("contrast")
def test_contrast_is_the_spread_between_bright_and_dark_pixels():
    assert torch.allclose(value("contrast", gray(0, 1, 0, 1)), torch.ones(1, 3))
    assert torch.allclose(value("contrast", gray(0.2, 0.8, 0.5, 0.5)), torch.full((1, 3), 0.6))
    assert torch.allclose(value("contrast", gray(0.1, 0.2, 0.3, 0.9)), torch.full((1, 3), 0.9 - 0.2))
    assert torch.allclose(value("contrast", torch.full((2, 3, 4, 4), 0.3)), torch.zeros(2, 3))  # flat: 0
    assert loss("contrast", gray(0.4, 0.6), {"above": 0.5}).item() == pytest.approx(0.09)


@covers("edge_mean")
def test_edge_mean():
    assert torch.allclose(value("edge_mean", torch.full((1, 3, 8, 8), 0.6), kernel_size=[3, 3], sigma=None),
                          torch.zeros(1, 3), atol=1e-6)
    image = torch.rand(2, 3, 8, 8)
    expected = (image - T.gaussian_blur(image, [5, 5], [2.0, 2.0])).abs().mean(dim=(2, 3))
    assert torch.allclose(value("edge_mean", image, kernel_size=[5, 5], sigma=[2.0, 2.0]), expected)
    raw = {"below": 0, "kernel_size": 5, "sigma": 2}
    assert loss("edge_mean", image, raw).item() == pytest.approx((expected ** 2).mean().item())


# --- goals --------------------------------------------------------------------------------------------------

@covers("blur")
def test_blur_loss_is_the_difference_to_the_blurred_image():
    assert loss("blur", torch.full((1, 3, 8, 8), 0.2)).item() == pytest.approx(0, abs=1e-12)
    image = torch.rand(1, 3, 8, 8)
    expected = ((image - T.gaussian_blur(image, [3, 3])) ** 2).mean()
    assert loss("blur", image).item() == pytest.approx(expected.item())
    assert loss("blur", image, {"kernel_size": 5}) > 0


@covers("border")
def test_border_loss_only_counts_the_border():
    image = torch.full((1, 3, 6, 6), 0.5)
    image[..., 0, :] = image[..., -1, :] = image[..., :, 0] = image[..., :, -1] = 1.0
    assert loss("border", image, {"color": 1}) == 0
    image[..., 2:4, 2:4] = 0.0  # the inside does not matter
    assert loss("border", image, {"color": 1}) == 0
    flat = torch.full((1, 3, 6, 6), 0.5)
    assert loss("border", flat, {"color": 0}).item() == pytest.approx(0.25 * 20 / 36)  # 20 border pixels
    assert loss("border", flat, {"size": "2 0", "color": 1, "loss": "l1"}).item() == pytest.approx(0.5 * 24 / 36)


@covers("noise")
def test_noise_loss_is_the_noise_power_and_reproducible():
    image = torch.rand(4, 3, 32, 32)
    assert loss("noise", image, {"std": 0.1}).item() == pytest.approx(0.01, rel=0.1)
    assert loss("noise", image, {"std": 0.2, "loss": "l1"}).item() == pytest.approx(0.2 * (2 / torch.pi) ** 0.5,
                                                                                  rel=0.1)
    assert torch.equal(loss("noise", image, {"std": 0.1}, seed=5), loss("noise", image, {"std": 0.1}, seed=5))
    assert not torch.equal(loss("noise", image, {"std": 0.1}, seed=5), loss("noise", image, {"std": 0.1}, seed=6))


@covers("normalize")
def test_normalize_moves_each_channel_into_the_range():
    assert loss("normalize", gray(0.0, 0.5, 1.0)).item() == pytest.approx(0, abs=1e-12)
    image = gray(0.25, 0.5, 0.75)
    goal = CONSTRAINTS["normalize"].fn(image, min=[0.0, 0.0, 0.2], max=[1.0, 0.5, 0.4])
    assert torch.allclose(goal[0, :, 0], torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.25, 0.5], [0.2, 0.3, 0.4]]))
    assert loss("normalize", image).item() == pytest.approx((0.25 ** 2 * 2) / 3)
    flat = torch.full((1, 3, 2, 2), 0.3)  # no range: moved to `min`, no division by zero
    assert torch.allclose(CONSTRAINTS["normalize"].fn(flat, min=[0.1] * 3, max=[1.0] * 3), torch.full_like(flat, 0.1))


def test_all_constraints_run_in_the_engine(tiny):
    import yaml
    from conftest import make_engine

    constraints = "\n".join("      - " + yaml.safe_dump({n: raw}, default_flow_style=True).strip()[1:-1]
                            for n, raw in sorted(EXAMPLES.items()))
    engine = make_engine("epochs: 2\nresolution: 16\ntargets:\n  - batch_size: 2\n    transforms:\n"
                         "      - noise: 0.1\n    constraints:\n" + constraints)
    engine.run()
    losses = [c["loss"]["mean"] for c in engine.statistics()[0]["constraints"]]
    assert len(losses) == len(EXAMPLES) and all(v is not None and v >= 0 for v in losses)
