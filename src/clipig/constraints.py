"""The constraint registry: losses computed on a target's transformed views without CLIP.

Two shapes of constraint:
- a *measure* (`mean`, `std`, `saturation`, ...) returns one value per view and channel `[N, 3]`; the loss
  grows where it is below `above` or above `below`;
- a *goal* (`blur`, `border`, `noise`, `normalize`) returns the image the views should look like; the loss
  is the difference to it (the goal itself is not differentiated).
Every constraint also has `weight`, `start`, `end` and `loss` (`l1`/`mae`, `l2`/`mse`).
"""

from __future__ import annotations

import torch

from .config.registry import CONSTRAINTS
from .config.schema import CONSTRAINT_VARS, LOSS_DOC, end_param, start_param
from .config.values import Param
from .transforms import gaussian_blur


def P(type: str, default=None, length=None, doc: str = "", **kw) -> Param:
    """A constraint parameter: expressions may use learnrate, resolution, similarity and time."""
    return Param(type, default, length=length, groups=CONSTRAINT_VARS, doc=doc, **kw)


def common_params() -> dict[str, Param]:
    return {
        "weight": P("float", 1.0, doc="A multiplier for the loss of the constraint."),
        "start": start_param("the constraint"),
        "end": end_param("the constraint"),
        "loss": P("str", "l2", choices=("l1", "l2"), aliases={"mae": "l1", "mse": "l2"},
                  doc=LOSS_DOC.format(what="image")),
    }


def constraint(name: str, params: dict[str, Param] | None = None, measure: bool = False, **flags):
    """Register a constraint; a measure gets `above`/`below`, every constraint the common parameters."""
    declared = {}
    if measure:
        declared["above"] = P("float", length=3, doc="If given, the loss grows while the value is below it.")
        declared["below"] = P("float", length=3, doc="If given, the loss grows while the value is above it.")
    declared.update(params or {})
    declared.update(common_params())
    return CONSTRAINTS.add(name, declared, measure=measure, **flags)


def loss_of(difference: torch.Tensor, loss: str) -> torch.Tensor:
    return difference.abs().mean() if loss == "l1" else (difference * difference).mean()


def constraint_loss(spec, images: torch.Tensor, args: dict, rng=None) -> torch.Tensor:
    """The unweighted loss of one constraint entry on the views `images`."""
    fn_args = {k: v for k, v in args.items() if k not in ("weight", "start", "end", "loss", "above", "below")}
    if spec.random:
        fn_args["rng"] = rng
    if not spec.flags.get("measure"):
        goal = spec.fn(images, **fn_args).detach()
        return loss_of(images - goal, args["loss"])
    value = spec.fn(images, **fn_args)  # [N, 3]
    total = images.new_zeros(())
    if args.get("above") is not None:
        above = torch.tensor(args["above"], dtype=value.dtype, device=value.device)
        total = total + loss_of(torch.relu(above - value), args["loss"])
    if args.get("below") is not None:
        below = torch.tensor(args["below"], dtype=value.dtype, device=value.device)
        total = total + loss_of(torch.relu(value - below), args["loss"])
    return total


@constraint("blur", {
    "kernel_size": P("int", [3, 3], length=2, doc=(
        "The size of the pixel window: an odd, positive integer (even numbers are raised to the next odd one). "
        "Two numbers define width and height separately.")),
    "sigma": P("float", length=2, doc=(
        "Gaussian standard deviation; without it `0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8`.")),
})
def blur(images, kernel_size, sigma):
    """Adds the difference between the image and a blurred version to the loss. Areas CLIP is excited
    about keep changing and stand out of the blur, unexciting areas get blurred a lot."""
    return gaussian_blur(images, kernel_size, sigma)


@constraint("mean", measure=True)
def mean(images):
    """Pushes the mean colour above or below a threshold."""
    return images.mean(dim=(2, 3))


@constraint("saturation", measure=True)
def saturation(images):
    """Pushes the saturation above or below a threshold. The saturation is the mean absolute difference of
    each colour channel to the mean of all channels."""
    return (images - images.mean(dim=1, keepdim=True)).abs().mean(dim=(2, 3))
