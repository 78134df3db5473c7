"""`residual_gradient`: the gradient through the residual branches of the critics' image towers scaled by a
factor, so that more of it flows through the skip connections (the skip gradient method, docs/quality.md).

`install` hooks every residual branch of an open_clip image tower once, when a critic is loaded; the hooks
read the factor in effect (`residual_gradient(g)`, set around the engine's CLIP pass) as the forward pass
runs, and at 1, the default, do nothing: the plain pass, bit for bit."""

from __future__ import annotations

import contextlib
import contextvars

import torch
from torch import nn

_RESIDUAL_GRADIENT = contextvars.ContextVar("residual_gradient", default=1.0)


@contextlib.contextmanager
def residual_gradient(factor: float):
    """Within: the gradient through every residual branch of the critics' towers is scaled by `factor`
    (1: unchanged); the features are not. The factor is taken when the forward pass runs."""
    token = _RESIDUAL_GRADIENT.set(float(factor))
    try:
        yield
    finally:
        _RESIDUAL_GRADIENT.reset(token)


class _ScaleGradient(torch.autograd.Function):
    """The identity whose gradient is multiplied by a factor."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _scaled(x: torch.Tensor) -> torch.Tensor | None:
    factor = _RESIDUAL_GRADIENT.get()
    if factor == 1.0 or not (torch.is_grad_enabled() and x.requires_grad):
        return None
    return _ScaleGradient.apply(x, factor)


def _scale_input(module, args):
    scaled = _scaled(args[0])
    return None if scaled is None else (scaled, *args[1:])


def _scale_output(module, args, output):
    return _scaled(output)


def residual_branches(visual: nn.Module) -> list[tuple[nn.Module, bool]]:
    """(module, whether its input (else its output) is in the branch) of each residual branch of an open_clip
    image tower: the layer scales after a ViT block's attention and MLP (`x + ls(f(x))`), and the last
    convolution of a ResNet bottleneck (its branch is added in place to the shortcut, so its input is taken)."""
    from open_clip.modified_resnet import Bottleneck
    from open_clip.transformer import ResidualAttentionBlock
    found = []
    for block in visual.modules():
        if isinstance(block, ResidualAttentionBlock):
            found += [(block.ls_1, False), (block.ls_2, False)]
        elif isinstance(block, Bottleneck):
            found.append((block.conv3, True))
    return found


def install(visual: nn.Module) -> int:
    """Hook each residual branch of an image tower; returns how many there are."""
    branches = residual_branches(visual)
    for module, pre in branches:
        module.register_forward_pre_hook(_scale_input) if pre else module.register_forward_hook(_scale_output)
    return len(branches)
