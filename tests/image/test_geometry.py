"""Folding geometric transforms into one resampling gives the same views as applying them one by one."""

import pytest
import torch

from clipig.config.registry import TRANSFORMS
from clipig.image.geometry import Views


def chain(images, steps, seed, fused: bool):
    rng = torch.Generator().manual_seed(seed)
    views = Views(images, batch=4) if fused else images.expand(4, -1, -1, -1)
    for name, args in steps:
        spec = TRANSFORMS[name]
        extra = {"rng": rng} if spec.random else {}
        views = spec.flags["geometry"](views, **args, **extra) if fused else spec.fn(views, **args, **extra)
    return views.tensor() if fused else views


def test_integer_moves_are_exact():
    image = torch.rand(1, 3, 12, 10)
    steps = [("repeat", {"count": [3, 2]}), ("random_shift", {"shift": [0, 1]}),
             ("pad", {"size": [2, 1], "color": [.1, .2, .3], "mode": "fill"}), ("center_crop", {"size": [16, 9]}),
             ("random_crop", {"size": [8, 8]}), ("pad", {"size": [1, 1], "color": [0, 0, 0], "mode": "wrap"})]
    assert torch.equal(chain(image, steps, 3, True), chain(image, steps, 3, False))
    # black edges before and after a coloured border: the fused chain masks the black ones at once, never
    # across the colour
    steps = [("random_translate", {"offset": [.3, .3]}), ("random_translate", {"offset": [.3, .3]}),
             ("pad", {"size": [3, 3], "color": [.1, .2, .3], "mode": "fill"}),
             ("random_translate", {"offset": [.3, .3]}), ("random_translate", {"offset": [.3, .3]})]
    fused = chain(image, steps, 4, True)
    assert torch.equal(fused, chain(image, steps, 4, False))
    colour = (fused == torch.tensor([.1, .2, .3]).view(1, 3, 1, 1)).all(1)
    assert colour.any() and (fused.sum(1) == 0).any()


def test_rotation_scale_and_perspective_match_within_resampling_error():
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=(48, 48), mode="bilinear")
    steps = [("repeat", {"count": [2, 2]}), ("random_rotate", {"degree": [-30, 30], "center": [.4, .6]}),
             ("random_scale", {"scale": [.8, 1.2]}), ("random_perspective", {"distortion": [0, .3],
                                                                           "probability": 1.0}),
             ("center_crop", {"size": [40, 40]})]
    fused, stepwise = chain(image, steps, 5, True), chain(image, steps, 5, False)
    assert fused.shape == stepwise.shape == (4, 3, 40, 40)
    assert (fused - stepwise).abs().mean() < 0.02


def test_fused_views_pass_the_gradient_to_the_one_source_image():
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    steps = [("random_rotate", {"degree": [-10, 10], "center": [.5, .5]}), ("center_crop", {"size": [32, 32]})]
    chain(image, steps, 0, True).square().sum().backward()
    assert image.grad.shape == (1, 3, 64, 64)
    assert image.grad[..., 16:48, 16:48].abs().sum() > 0


def test_wrap_border_equals_circular_padding():
    from clipig.image.geometry import _wrapped
    src = torch.rand(2, 3, 5, 7)
    padded = src.index_select(-2, _wrapped(5, src.device)).index_select(-1, _wrapped(7, src.device))
    assert torch.equal(padded, torch.nn.functional.pad(src, (1, 1, 1, 1), mode="circular"))


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 3, 2, 2), (1, 3, 1, 4), (3, 2, 6)])
def test_the_fast_wrap_border_gives_index_selects_values_and_gradients_bit_for_bit(shape):
    """`wrap_border` copies slices where the pictures of before gathered with `index_select`: the same values
    and, added in the same order, the same gradients (a changed order of additions would change pictures)."""
    from clipig.image.geometry import _wrapped, wrap_border
    g = torch.Generator().manual_seed(2)
    src = (torch.randn(shape, generator=g) * 1e3).requires_grad_()  # large values: rounding would show
    h, w = shape[-2:]
    before = src.index_select(-2, _wrapped(h, src.device)).index_select(-1, _wrapped(w, src.device))
    grad = torch.randn(before.shape, generator=g) * torch.logspace(-3, 3, before.shape[-1])
    expected, = torch.autograd.grad(before, src, grad)
    now = wrap_border(src)
    assert torch.equal(now, before)
    assert torch.equal(torch.autograd.grad(now, src, grad)[0], expected)
