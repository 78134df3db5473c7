"""The start image from the `init` section, and resizing (the trained tensors: parameterizations.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.errors import ConfigError

MODES = {"nearest": "nearest", "linear": "bilinear", "cubic": "bicubic"}


def resize(images: torch.Tensor, width: int, height: int, interpolation: str = "cubic") -> torch.Tensor:
    """Resize [N, 3, H, W] images with `nearest`, `linear` or `cubic` interpolation (antialiased when shrinking)."""
    if images.shape[-1] == width and images.shape[-2] == height:
        return images
    mode = MODES[interpolation]
    extra = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    return F.interpolate(images, size=(height, width), mode=mode, **extra)


def initial_pixels(init, resolution: list[int], generator: torch.Generator) -> torch.Tensor:
    """The [3, H, W] start image from the `init` section, as the original CLIPig makes it: an image file
    (scaled to cover `init.resolution` and cropped at the centre) or normal noise at `init.resolution`, then
    `* std + mean`, scaled (bicubic) to the training `resolution` and clamped to [0, 1]. An `image_tensor` is
    only scaled and cropped to the resolution."""
    width, height = resolution
    if init.image_tensor is not None:
        return cover(_tensor_from_list(init.image_tensor()), width, height)
    w, h = init.resolution() if init.resolution is not None else resolution
    mean = torch.tensor(init.mean(), dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(init.std(), dtype=torch.float32).view(3, 1, 1)
    if init.image is not None:
        from ..critic.images import ImageError, load_image
        try:
            start = cover(load_image(init.image()), w, h)
        except ImageError as e:
            raise ConfigError(str(e), init.image.path) from None
    else:
        start = torch.randn(3, h, w, generator=generator)
    return resize((start * std + mean)[None], width, height, "cubic")[0].clamp(0, 1)


def cover(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[3, h, w] scaled (bicubic, keeping the aspect ratio) to cover width x height, then cropped at the
    centre."""
    h, w = image.shape[-2:]
    if (w, h) == (width, height):
        return image
    factor = max(width / w, height / h)
    sw, sh = max(width, int(w * factor + 1e-6)), max(height, int(h * factor + 1e-6))
    image = resize(image[None], sw, sh, "cubic")[0]
    top, left = int(round((sh - height) / 2.0)), int(round((sw - width) / 2.0))
    return image[:, top:top + height, left:left + width]


def _tensor_from_list(data) -> torch.Tensor:
    try:
        tensor = torch.tensor(data, dtype=torch.float32)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"expected a [3, H, W] nested list of numbers: {e}", "init.image_tensor") from None
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ConfigError(f"expected shape [3, H, W], got {list(tensor.shape)}", "init.image_tensor")
    return tensor
