"""The trained image: an RGB pixel plane, its initialisation and resizing during training."""

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


class Pixels(torch.nn.Module):
    """The image being trained: one [3, H, W] parameter (values meant to lie in [0, 1], not clamped)."""

    def __init__(self, tensor: torch.Tensor):
        super().__init__()
        self.data = torch.nn.Parameter(tensor.detach().clone())

    @property
    def resolution(self) -> list[int]:
        return [self.data.shape[2], self.data.shape[1]]

    def resize(self, width: int, height: int, interpolation: str) -> bool:
        """Change the resolution; True if it changed (the optimizer then needs the new parameter)."""
        if [width, height] == self.resolution:
            return False
        with torch.no_grad():
            self.data = torch.nn.Parameter(resize(self.data[None], width, height, interpolation)[0])
        return True

    def image(self) -> torch.Tensor:
        """The current image, clamped to [0, 1], detached, on the CPU."""
        return self.data.detach().clamp(0, 1).float().cpu()
