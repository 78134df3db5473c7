"""The start image from the `init` section, and resizing (the trained tensors: parameterizations.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config.errors import ConfigError

MODES = {"nearest": "nearest", "linear": "bilinear", "cubic": "bicubic"}


def resize(images: torch.Tensor, width: int, height: int, interpolation: str = "cubic") -> torch.Tensor:
    """Resize [N, 3, H, W] images with `nearest`, `linear` or `cubic` interpolation (antialiased when shrinking)."""
    if images.shape[-1] == width and images.shape[-2] == height:
        return images
    mode = MODES[interpolation]
    extra = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    return F.interpolate(images, size=(height, width), mode=mode, **extra)


def initial_pixels(init, resolution: list[int], interpolation: str, generator: torch.Generator) -> torch.Tensor:
    """The [3, H, W] start image from the `init` section: a tensor, an image file, or (low-resolution) noise."""
    width, height = resolution
    if init.image_tensor is not None:
        tensor = _tensor_from_list(init.image_tensor())
    elif init.image is not None:
        from .images import ImageError, load_image
        try:
            tensor = load_image(init.image())
        except ImageError as e:
            raise ConfigError(str(e), init.image.path) from None
    else:
        w, h = init.resolution() if init.resolution is not None else resolution
        mean = torch.tensor(init.mean(), dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(init.std(), dtype=torch.float32).view(3, 1, 1)
        return resize((mean + std * torch.randn(3, h, w, generator=generator))[None], width, height,
                      interpolation)[0]
    if init.resolution is not None:
        tensor = resize(tensor[None], *init.resolution(), interpolation)[0]
    return resize(tensor[None], width, height, interpolation)[0]


def _tensor_from_list(data) -> torch.Tensor:
    try:
        tensor = torch.tensor(data, dtype=torch.float32)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"expected a [3, H, W] nested list of numbers: {e}", "init.image_tensor") from None
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ConfigError(f"expected shape [3, H, W], got {list(tensor.shape)}", "init.image_tensor")
    return tensor
