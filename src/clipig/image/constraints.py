"""The constraint registry: losses computed on a target's transformed views without CLIP.

Two shapes of constraint:
- a *measure* (`mean`, `std`, `saturation`, ...) returns one value per view and channel `[N, 3]`; the loss
  grows where it is below `above` or above `below`;
- a *goal* (`blur`, `border`, `noise`, `normalize`) returns the image the views should look like; the loss
  is the difference to it (differentiated through the goal as well, as in the original: so `noise`, whose
  difference does not depend on the image, only adds to the loss value).
Every constraint also has `weight`, `start`, `end` and `loss` (`l1`/`mae`, `l2`/`mse`). Losses are per view
(`[N]`): the engine sums them over the views.

The loss is multiplied by a fixed strength (100; `normalize` 10, `contrast` 1, as in the original CLIPig)
so that `weight: 1` is comparable to a feature loss and the documented examples behave as described.
"""

from __future__ import annotations

import torch

from ..config.params import CONSTRAINT_VARS, LOSS_DOC, at_least, timing
from ..config.registry import CONSTRAINTS
from ..config.values import Param
from . import transforms as T


def P(type: str, default=None, length=None, doc: str = "", **kw) -> Param:
    """A constraint parameter: expressions may use learnrate, resolution, similarity and time."""
    return Param(type, default, length=length, groups=CONSTRAINT_VARS, doc=doc, **kw)


def common_params() -> dict[str, Param]:
    return {
        "weight": P("float", 1.0, doc="A multiplier for the loss of the constraint."),
        **timing("the constraint", CONSTRAINT_VARS),  # evaluated per view where they read `sim`
        "loss": P("str", "l2", choices=("l1", "l2"), aliases={"mae": "l1", "mse": "l2"},
                  doc=LOSS_DOC.format(what="image")),
    }


def constraint(name: str, params: dict[str, Param] | None = None, measure: bool = False, strength: float = 100.0,
               **flags):
    """Register a constraint; a measure gets `above`/`below`, every constraint the common parameters."""
    declared = {}
    if measure:
        declared["above"] = P("float", length=3, doc=(
            "If given, the loss grows while the value is below it (and is 0 above it: see differences.md)."))
        declared["below"] = P("float", length=3, doc=(
            "If given, the loss grows while the value is above it (and is 0 below it)."))
    declared.update(params or {})
    declared.update(common_params())
    return CONSTRAINTS.add(name, declared, measure=measure, strength=strength, **flags)


def loss_of(difference: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean absolute (l1) or squared (l2) difference of each view: [N, ...] -> [N]."""
    difference = difference.flatten(1)
    return difference.abs().mean(1) if loss == "l1" else (difference * difference).mean(1)


def constraint_loss(spec, images: torch.Tensor, args: dict, rng=None) -> torch.Tensor:
    """The loss of one constraint entry on each of the views `images` ([N], times its strength, without
    `weight`)."""
    return spec.flags["strength"] * _raw_loss(spec, images, args, rng)


def _raw_loss(spec, images: torch.Tensor, args: dict, rng=None) -> torch.Tensor:
    fn_args = {k: v for k, v in args.items() if k not in ("weight", "start", "end", "loss", "above", "below")}
    if spec.random:
        fn_args["rng"] = rng
    if not spec.flags.get("measure"):
        return loss_of(images - spec.fn(images, **fn_args), args["loss"])
    value = spec.fn(images, **fn_args)  # [N, 3]
    total = images.new_zeros(images.shape[0])
    if args.get("above") is not None:
        above = torch.tensor(args["above"], dtype=value.dtype, device=value.device)
        total = total + loss_of(torch.relu(above - value), args["loss"])
    if args.get("below") is not None:
        below = torch.tensor(args["below"], dtype=value.dtype, device=value.device)
        total = total + loss_of(torch.relu(value - below), args["loss"])
    return total


BLUR_PARAMS = T.blur_params(P)


@constraint("blur", BLUR_PARAMS)
def blur(images, kernel_size, sigma):
    """Adds the difference between the image and a blurred version to the loss. Areas CLIP is excited
    about keep changing and stand out of the blur, unexciting areas get blurred a lot."""
    return T.gaussian_blur(images, kernel_size, sigma)


@constraint("border", {
    "size": P("int", [1, 1], length=2, check=at_least(0), doc=(
        "Width and height of the border in pixels; one number for both.")),
    "color": P("float", [0.0, 0.0, 0.0], length=3, doc="The colour (RGB in [0, 1], or one number for gray)."),
})
def border(images, size, color):
    """Adds the difference to the image with a border of the given size and colour drawn on its edges."""
    return T.border(images, size, color)


@constraint("noise", {
    "std": P("float", length=3, required=True, check=at_least(0), doc=(
        "The standard deviation of the noise: one value, or three for red, green and blue.")),
}, random=True)
def noise(images, std, rng):
    """Adds the difference to a noisy version of the image (normal noise around zero, drawn per view)."""
    return T.noise(images, std, rng)


@constraint("normalize", strength=10.0, params={
    "min": P("float", [0.0, 0.0, 0.0], length=3, doc="The desired lowest value; one number for all channels."),
    "max": P("float", [1.0, 1.0, 1.0], length=3, doc="The desired highest value; one number for all channels."),
})
def normalize(images, min, max):
    """Adds the difference to a normalized image: each channel of each view moved and stretched linearly
    so that its lowest and highest values become `min` and `max`."""
    low = images.amin(dim=(2, 3), keepdim=True)
    span = images.amax(dim=(2, 3), keepdim=True) - low
    span = torch.where(span > 0, span, torch.ones_like(span))
    lo, hi = T.rgb(min, images), T.rgb(max, images)
    return lo + (images - low) / span * (hi - lo)


@constraint("mean", measure=True)
def mean(images):
    """Pushes the mean colour above or below a threshold."""
    return images.mean(dim=(2, 3))


@constraint("saturation", measure=True)
def saturation(images):
    """Pushes the saturation above or below a threshold. The saturation is the mean absolute difference of
    each colour channel to the mean of all channels."""
    return (images - images.mean(dim=1, keepdim=True)).abs().mean(dim=(2, 3))


@constraint("std", measure=True)
def std(images):
    """Pushes the standard deviation of each colour channel above or below a threshold."""
    return images.std(dim=(2, 3))


def masked_mean(images: torch.Tensor, mask: torch.Tensor, otherwise: torch.Tensor) -> torch.Tensor:
    """Per view and channel the mean of the pixels where `mask` is true; `otherwise` [N, 3] where none is."""
    mask = mask.to(images.dtype)
    count = mask.sum(dim=(2, 3))
    return torch.where(count > 0, (images * mask).sum(dim=(2, 3)) / count.clamp(min=1), otherwise)


@constraint("contrast", measure=True, strength=1.0)
def contrast(images):
    """Pushes the contrast above or below a threshold. The contrast of a channel is the mean of its pixels
    above the channel mean minus the mean of its pixels below it (0 for a flat channel)."""
    mean = images.mean(dim=(2, 3))
    above = masked_mean(images, images > mean[..., None, None], mean)
    return above - masked_mean(images, images < mean[..., None, None], mean)


@constraint("edge_mean", BLUR_PARAMS, measure=True)
def edge_mean(images, kernel_size, sigma):
    """Pushes the mean edge value above or below a threshold; the edges are `abs(image - blur(image))`, as
    in the `edge` transform."""
    return T.edge(images, kernel_size, sigma, [1.0, 1.0, 1.0]).mean(dim=(2, 3))

