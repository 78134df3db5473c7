"""Transforms: documented behaviour on tiny hand-made images, randomness, shapes and gradient flow."""

import pytest
import torch

from clipig.config.expressions import time_variables
from clipig.config.registry import TRANSFORMS
from clipig.config.schema import parse_plugin_params
from clipig.image import transforms as T

# A typical YAML value of every transform: run on small batches and checked for gradients.
EXAMPLES = {
    "add": 0.1, "blur": {"kernel_size": 3}, "border": {"size": 1, "color": 0.5}, "bwnoise": 0.1,
    "center_crop": 6, "clamp": "0 1", "contrast": 0.5, "crop": "0.25 0.25 0.5 0.5", "edge": {},
    "fnoise": 0.1, "mean": 0.5, "mul": 0.9, "noise": 0.1, "pad": {"size": 2, "mode": "wrap"}, "quantize": 0.1,
    "random_crop": 6, "random_perspective": {}, "random_rotate": "-20 20", "random_scale": "0.8 1.2",
    "random_shift": "0 1", "random_translate": "0.2 0.2", "repeat": 2, "resize": "12 10",
    "rnoise": {"std": 0.1, "resolution": 4}, "rotate": {"degree": 30}, "saturation": 0.5, "shift": 0.25,
}
RESIZING = {"center_crop", "crop", "pad", "random_crop", "repeat", "resize"}
COVERED: set[str] = set()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # the hand-made random images are the same in every run


def covers(*names):
    """Marks a test as the behaviour test of these transforms (see `test_every_transform_is_tested`)."""
    COVERED.update(names)
    return lambda fn: fn


def args(name, raw, **variables):
    """The evaluated parameters of a transform entry written as `name: raw` in YAML."""
    params = parse_plugin_params(TRANSFORMS[name], raw, name)
    return {k: (v(variables) if v is not None else None) for k, v in params.items()}


def run(name, images, raw="example", seed=0, **variables):
    spec = TRANSFORMS[name]
    kw = args(name, EXAMPLES[name] if raw == "example" else raw, **variables)
    if spec.random:
        kw["rng"] = torch.Generator().manual_seed(seed)
    return spec.fn(images, **kw)


def dot(size=9, x=4, y=4):
    image = torch.zeros(1, 3, size, size)
    image[..., y, x] = 1.0
    return image


def where(image):
    """(x, y) of the brightest pixel of the first channel."""
    i = int(image[0, 0].flatten().argmax())
    return i % image.shape[-1], i // image.shape[-1]


def ramp(w=8, h=8, n=1):
    """An image whose pixels all differ: value = (y * w + x) / (w * h), channels offset slightly."""
    base = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w) / (h * w)
    return (base + torch.tensor([0.0, 0.1, 0.2]).view(1, 3, 1, 1)).expand(n, -1, -1, -1).contiguous()


# --- registry -----------------------------------------------------------------------------------------------

def test_every_transform_is_tested():
    assert set(EXAMPLES) == set(TRANSFORMS), "add an example (shape and gradient tests) for each transform"
    assert set(TRANSFORMS) <= COVERED, f"transforms without behaviour test: {set(TRANSFORMS) - COVERED}"


def test_resolution_and_random_flags():
    assert {n for n, s in TRANSFORMS.items() if not s.keeps_resolution} == RESIZING
    assert {n for n, s in TRANSFORMS.items() if s.random} == {
        "bwnoise", "fnoise", "noise", "random_crop", "random_perspective", "random_rotate", "random_scale",
        "random_shift", "random_translate", "rnoise"}
    for name, spec in TRANSFORMS.items():
        assert spec.doc, name
        assert all(p.doc and set(p.groups) == {"learnrate", "resolution", "time"} for p in spec.params.values())


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_runs_on_single_images_and_batches(name, n):
    images = torch.rand(n, 3, 16, 16)
    out = run(name, images)
    assert out.shape[:2] == (n, 3) and torch.isfinite(out).all()
    if name not in RESIZING:
        assert out.shape == images.shape


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_gradient_flows(name):
    images = (torch.rand(2, 3, 12, 12) * 0.8 + 0.1).requires_grad_()
    out = run(name, images)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    assert torch.isfinite(images.grad).all()
    assert (images.grad.abs().sum() == 0) == (name == "quantize")  # floor: no gradient, as in the original


@pytest.mark.parametrize("name", sorted(n for n, s in TRANSFORMS.items() if s.random))
def test_random_transforms_are_reproducible_and_differ_per_view(name):
    images = ramp(16, 16, n=4)
    state = torch.get_rng_state()
    torch.manual_seed(1)
    a = run(name, images, seed=3)
    torch.manual_seed(2)
    b = run(name, images, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(name, images, seed=4))
    assert all(not torch.equal(a[0], a[i]) for i in range(1, 4))
    torch.set_rng_state(state)


def test_parameters_take_expressions():
    assert args("noise", "0.1 * t", **time_variables(50, 101))["std"] == [0.05] * 3
    assert args("pad", {"size": 1, "mode": "'wrap' if t > .5 else 'edge'"}, **time_variables(90, 100))["mode"] == "wrap"
    assert args("resize", "width * 2, height", width=8, height=6)["size"] == [16, 6]


# --- geometry -----------------------------------------------------------------------------------------------

@covers("shift")
def test_shift_wraps_fractions_and_pixels():
    assert where(run("shift", dot(8, 3, 3), 0.5)) == (7, 7)  # the centre moves to the bottom-right corner
    assert where(run("shift", dot(8, 4, 4), 0.5)) == (0, 0)
    assert where(run("shift", dot(8, 1, 5), "2 -3")) == (3, 2)  # pixels
    assert where(run("shift", dot(8, 1, 5), "-2 0")) == (7, 5)
    assert where(run("shift", dot(8, 1, 5), "1 -1")) == (2, 4)  # 1 and -1 are pixels, not the whole size
    assert where(run("shift", dot(8, 1, 5), "0.3 -0.3")) == (3, 3)  # 2.4 and -2.4 pixels are cut to 2 and -2


@covers("random_shift")
def test_random_shift_moves_whole_pixels_with_wraparound():
    out = run("random_shift", ramp(8, 8, n=6), "0 1")
    for view in out:
        x, y = where(view[None] * -1)  # the darkest pixel, 0, was at the top-left
        assert torch.equal(view, torch.roll(ramp(8, 8)[0], (y, x), dims=(1, 2)))
    assert torch.equal(run("random_shift", ramp(8, 8, n=2), "0 0 3 3"), torch.roll(ramp(8, 8, n=2), 3, dims=2))


@covers("random_translate")
def test_random_translate_fills_with_zeros_within_the_range():
    ones = torch.ones(8, 3, 10, 10)
    out = run("random_translate", ones, "0.3 0.2")
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    counts = out[:, 0].sum(dim=(1, 2))
    assert (counts >= (10 - 3) * (10 - 2)).all() and (counts < 100).any()  # |dx| <= 3, |dy| <= 2, no wrap
    assert torch.equal(run("random_translate", ramp(n=2), 0), ramp(n=2))


@covers("rotate")
def test_rotate_turns_counter_clockwise_on_screen_around_a_whole_pixel_point():
    # 8x8: the centre 0.5 is the point (4, 4), the corner between four pixels
    assert where(run("rotate", dot(8, 5, 3), {"degree": 90})) == (3, 2)  # right of the centre -> above it
    assert where(run("rotate", dot(8, 5, 3), {"degree": -90})) == (4, 5)
    assert where(run("rotate", dot(8, 5, 3), {"degree": 180})) == (2, 4)
    # 9x9: centre 0.5 * 9 = 4.5 is cut to 4 (as the original does)
    assert where(run("rotate", dot(9, 6, 4), {"degree": 90})) == (4, 1)
    assert torch.allclose(run("rotate", ramp(), {"degree": 0}), ramp())


def test_rotate_is_torchvisions_rotate():
    """As the original: torchvision's rotate with its defaults (nearest pixel, black outside)."""
    import torchvision.transforms.functional as VF
    image = torch.rand(1, 3, 32, 30)
    for degree, center in ((90, [0.5, 0.5]), (30, [0.4, 0.55]), (-17, [0.2, 0.9]), (133.3, [0.1, 0.3])):
        pixel = [int(center[0] * 30), int(center[1] * 32)]
        assert torch.equal(run("rotate", image, {"degree": degree, "center": center})[0],
                           VF.rotate(image[0], degree, center=pixel))


def test_rotation_chains_sample_the_nearest_pixel_unless_a_step_is_smooth():
    image = torch.rand(1, 3, 16, 16)
    rotated = run("rotate", image, {"degree": 17})
    assert torch.isin(rotated, torch.cat([image.flatten(), torch.zeros(1)])).all()  # only source values
    views = T.Views(image)
    T.rotate.__wrapped__(views, degree=17, center=[0.5, 0.5])
    T.random_scale.__wrapped__(views, scale=[0.9, 0.9], rng=torch.Generator())
    assert not torch.isin(views.tensor(), image.flatten()).all()  # random_scale: bilinear for the chain


@covers("random_rotate")
def test_random_rotate_within_the_range():
    out = run("random_rotate", dot(9, 6, 4).expand(3, -1, -1, -1), "90 90")
    assert all(where(v[None]) == (4, 1) for v in out)
    angles = run("random_rotate", dot(9, 6, 4).expand(8, -1, -1, -1), "0 90")
    assert all(where(v[None])[0] >= 4 and where(v[None])[1] <= 4 for v in angles)  # upper right quadrant


@covers("random_scale")
def test_random_scale_half_and_double():
    square = torch.zeros(1, 3, 16, 16)
    square[..., 4:12, 4:12] = 1.0
    half = run("random_scale", square, "0.5 0.5")
    assert half.sum() == pytest.approx(square.sum() / 4)
    assert half[0, 0, 8, 8] == 1 and half[0, 0, 4, 4] == 0
    double = run("random_scale", square, "2 2")
    assert double[0, 0, 1:15, 1:15].min() == 1


@covers("random_perspective")
def test_random_perspective_moves_the_corners_inwards():
    images = torch.ones(4, 3, 16, 16)
    assert torch.allclose(run("random_perspective", images, {"distortion": 0}), images, atol=1e-5)
    assert torch.allclose(run("random_perspective", images, {"distortion": 0.8, "probability": 0}), images, atol=1e-5)
    out = run("random_perspective", images, {"distortion": "0.6 0.8"})
    corners = out[..., [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners.amin(dim=-1) < 0.5).all()  # every view has a corner outside of the projected image
    assert torch.allclose(out[..., 7:9, 7:9], torch.ones(1), atol=1e-4)  # the middle stays inside
    assert (out <= 1 + 1e-5).all() and (out >= 0).all()


@covers("center_crop")
def test_center_crop_picks_the_centre():
    image = ramp()
    assert torch.equal(run("center_crop", image, 4), image[..., 2:6, 2:6])
    assert torch.equal(run("center_crop", image, "4 2"), image[..., 3:5, 2:6])  # width 4, height 2


@covers("crop")
def test_crop_fractions_and_pixels():
    image = ramp()
    assert torch.equal(run("crop", image, "0.25 0.5 0.5 0.25"), image[..., 4:6, 2:6])
    assert torch.equal(run("crop", image, "2 4 4 2"), image[..., 4:6, 2:6])
    assert torch.equal(run("crop", image, "0 0 1 1"), image[..., :1, :1])  # 1 is a pixel, not the whole width
    assert torch.equal(run("crop", ramp(10, 10), "0.35 0.19 0.55 5.9"), ramp(10, 10)[..., 1:6, 3:8])  # cut down


@covers("random_crop")
def test_random_crop_windows_are_slices_of_the_input():
    image = ramp(10, 10)
    out = run("random_crop", image.expand(6, -1, -1, -1), "4 3")
    assert out.shape == (6, 3, 3, 4)
    for view in out:
        i = int((image[0, 0] == view[0, 0, 0]).flatten().nonzero())
        y, x = divmod(i, 10)
        assert torch.equal(view, image[0, :, y:y + 3, x:x + 4])
    assert run("random_crop", image, 12).shape == (1, 3, 12, 12)  # larger than the image: padded


@covers("pad")
def test_pad_modes():
    image = ramp(3, 3)
    fill = run("pad", image, {"size": "1 2", "color": "0.5 0.6 0.7"})
    assert fill.shape == (1, 3, 7, 5) and torch.allclose(fill[..., 2:5, 1:4], image)
    assert torch.allclose(fill[0, :, 0, 0], torch.tensor([0.5, 0.6, 0.7]))
    edge = run("pad", image, {"size": 1, "mode": "edge"})
    assert torch.equal(edge[..., 0, 1:4], image[..., 0, :]) and torch.equal(edge[..., 0, 0], image[..., 0, 0])
    wrap = run("pad", image, {"size": 1, "mode": "wrap"})
    assert torch.equal(wrap[..., 1:4, 0], image[..., :, -1]) and torch.equal(wrap[..., 0, 1:4], image[..., -1, :])
    assert torch.equal(wrap[..., 0, 0], image[..., -1, -1])
    assert torch.equal(run("pad", image, {"size": 3, "mode": "wrap"}), image.repeat(1, 1, 3, 3))


@covers("repeat")
def test_repeat_tiles_right_and_down():
    image = ramp(4, 4)
    out = run("repeat", image, 2)
    assert out.shape == (1, 3, 8, 8)
    for y in (0, 4):
        for x in (0, 4):
            assert torch.equal(out[..., y:y + 4, x:x + 4], image)
    assert run("repeat", image, "3 1").shape == (1, 3, 4, 12)


@covers("resize")
def test_resize_changes_the_resolution():
    assert run("resize", ramp(), "12 10").shape == (1, 3, 10, 12)  # width 12, height 10
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(run("resize", flat, 4), torch.full((1, 3, 4, 4), 0.3))


@covers("border")
def test_border_draws_on_the_edges():
    image = torch.rand(1, 3, 6, 6)
    out = run("border", image, {"size": "1 2", "color": "1 0 0"})
    assert torch.equal(out[..., 2:4, 1:5], image[..., 2:4, 1:5])
    assert torch.equal(out[0, :, 0, 3], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out[0, :, 3, 5], torch.tensor([1.0, 0.0, 0.0]))


# --- colour -------------------------------------------------------------------------------------------------

@covers("add", "mul", "mean")
def test_add_mul_mean():
    image = ramp()
    assert torch.allclose(run("add", image, "0.1 0 -0.1"), image + torch.tensor([0.1, 0, -0.1]).view(1, 3, 1, 1))
    assert torch.allclose(run("mul", image, 2), image * 2)
    means = run("mean", image, "0.2 0.5 0.8").mean(dim=(2, 3))
    assert torch.allclose(means, torch.tensor([[0.2, 0.5, 0.8]]))
    assert torch.allclose(run("mean", image, "0.2 0.5 0.8").std(dim=(2, 3)), image.std(dim=(2, 3)))


@covers("clamp")
def test_clamp():
    image = torch.linspace(-1, 2, 48).view(1, 3, 4, 4)
    out = run("clamp", image, "0 1")
    assert out.min() == 0 and out.max() == 1
    inside = (image >= 0) & (image <= 1)
    assert torch.equal(out[inside], image[inside])


@covers("contrast")
def test_contrast_blends_with_the_mean_gray():
    image = torch.rand(2, 3, 8, 8)
    flat = run("contrast", image, 0)
    assert torch.allclose(flat, flat[..., :1, :1, :1].expand_as(flat))  # one gray value per view
    assert not torch.allclose(flat[0], flat[1])
    assert torch.equal(run("contrast", image, None), image)  # `- contrast:` is the default 1.0
    assert torch.allclose(run("contrast", image, 0.5) - flat, 0.5 * (image - flat), atol=1e-6)
    assert run("contrast", image, 3).max() == 1 and run("contrast", image, 3).min() == 0  # clamped, as torchvision
    assert torch.equal(run("contrast", image, 1.7), torchvision_functional().adjust_contrast(image, 1.7))


@covers("saturation")
def test_saturation_blends_with_gray():
    image = torch.rand(2, 3, 8, 8)
    gray = run("saturation", image, 0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.allclose(gray[:, 0], 0.2989 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2], atol=1e-4)
    assert torch.allclose(run("saturation", image, 1), image)
    assert torch.allclose(run("saturation", image, 0.5) - gray, 0.5 * (image - gray), atol=1e-6)
    assert run("saturation", image, 5).max() == 1 and run("saturation", image, 5).min() == 0  # clamped
    assert torch.equal(run("saturation", image, 1.7), torchvision_functional().adjust_saturation(image, 1.7))


def torchvision_functional():
    from torchvision.transforms.v2 import functional
    return functional


@covers("quantize")
def test_quantize_floors_to_multiples_of_the_step_without_gradient():
    image = torch.rand(1, 3, 8, 8, requires_grad=True)
    out = run("quantize", image, "0.25 0.5 0.1")
    for c, step in enumerate((0.25, 0.5, 0.1)):
        q = out[0, c] / step
        assert torch.allclose(q, q.round(), atol=1e-4)
        below = image[0, c] - out[0, c]
        assert below.min() >= -1e-6 and below.max() < step  # floor, not round
    assert torch.equal(run("quantize", torch.full((1, 3, 1, 1), 0.29), 0.1), torch.full((1, 3, 1, 1), 0.2))
    out.sum().backward()
    assert torch.equal(image.grad, torch.zeros_like(image))


@covers("edge")
def test_edge_is_the_difference_to_the_blur():
    assert run("edge", torch.full((1, 3, 8, 8), 0.7), {}).abs().max() < 1e-6
    image = torch.rand(1, 3, 8, 8)
    expected = (image - T.gaussian_blur(image, [5, 5])).abs() * torch.tensor([1.0, 2.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(run("edge", image, {"kernel_size": 5, "amount": "1 2 0"}), expected)


@covers("blur")
def test_blur_spreads_a_dot_and_keeps_flat_images():
    out = run("blur", dot(9), {"kernel_size": 3, "sigma": 1})
    assert out.sum() == pytest.approx(3.0) and 0 < out[0, 0, 4, 4] < 1 and out[0, 0, 3, 4] > 0
    flat = torch.full((1, 3, 8, 8), 0.4)
    assert torch.allclose(run("blur", flat, {"kernel_size": 5}), flat)



@pytest.mark.parametrize("size, kernel, sigma", [
    ((40, 60), (39, 21), (5.0, 2.0)),  # large kernels: banded matrix products
    ((224, 224), (51, 51), None),
    ((96, 64), (3, 5), (0.8, 1.5)),  # small kernels: torchvision's convolution
])
def test_gaussian_blur_equals_torchvisions_values_and_gradients(size, kernel, sigma):
    from torchvision.transforms.v2 import functional as TF
    image = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(3), requires_grad=True)
    sigmas = sigma or [0.3 * ((k - 1) * 0.5 - 1) + 0.8 for k in kernel]
    ours, theirs = T.gaussian_blur(image, kernel, sigma), TF.gaussian_blur(image, list(kernel), list(sigmas))
    assert (ours - theirs).abs().max() < 1e-5  # measured 1.4e-6 and 2.9e-6 for the matrix path
    weights = torch.rand_like(ours)
    (g_ours,), (g_theirs,) = (torch.autograd.grad((out * weights).sum(), image) for out in (ours, theirs))
    assert (g_ours - g_theirs).abs().max() < 1e-5

# --- noise --------------------------------------------------------------------------------------------------

@covers("noise")
def test_noise_statistics():
    out = run("noise", torch.zeros(4, 3, 32, 32), "0.1 0.2 0")
    std = out.transpose(0, 1).reshape(3, -1).std(dim=1)
    assert std[0] == pytest.approx(0.1, rel=0.1) and std[1] == pytest.approx(0.2, rel=0.1) and std[2] == 0
    assert out.mean().abs() < 0.01


@covers("bwnoise")
def test_bwnoise_is_gray():
    out = run("bwnoise", torch.full((4, 3, 32, 32), 0.5), 0.2)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert out.std().item() == pytest.approx(0.2, rel=0.1)


@covers("rnoise")
def test_rnoise_has_the_given_resolution():
    flat = run("rnoise", torch.zeros(4, 3, 16, 16), {"std": 0.5, "resolution": 1})
    assert torch.allclose(flat, flat[..., :1, :1].expand_as(flat))  # one value per view and channel
    assert flat[:, :, 0, 0].std() > 0.1
    coarse = run("rnoise", torch.zeros(2, 3, 16, 16), {"std": "0.5 0.5 0", "resolution": "4 2"})
    assert (coarse[:, :, :, 1:] - coarse[:, :, :, :-1]).abs().max() < coarse.abs().max()  # smooth
    assert coarse[:, 2].abs().max() == 0


@covers("fnoise")
def test_fnoise_changes_pixels_and_roughly_keeps_the_mean():
    image = ramp(16, 16, n=2)
    out = run("fnoise", image, 0.05)
    assert (out - image).abs().mean() > 0.01
    assert torch.allclose(out.mean(dim=(2, 3)), image.mean(dim=(2, 3)), atol=0.02)
    assert torch.allclose(run("fnoise", image, 0), image, atol=1e-6)


# --- through the loader, the targets and post-processing ----------------------------------------------------

CATALOGUE = """
epochs: 2
resolution: 24
targets:
  - batch_size: 3
    features:
      - text: a curly spoon
    transforms:
{transforms}
      - resize: 24
postproc:
{postproc}
"""


def test_the_whole_catalogue_runs_in_the_engine(tiny):
    import yaml
    from conftest import make_engine

    def entries(names):
        return "\n".join("      - " + yaml.safe_dump({n: EXAMPLES[n]}, default_flow_style=True).strip()[1:-1]
                         for n in names)

    targets = entries(sorted(EXAMPLES))
    postproc = entries(sorted(n for n in EXAMPLES if n not in RESIZING)).replace("      -", "  -")
    engine = make_engine(CATALOGUE.format(transforms=targets, postproc=postproc))
    engine.run()
    assert engine.image().shape == (3, 24, 24) and torch.isfinite(engine.image()).all()
