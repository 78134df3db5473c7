"""What a model sees of a picture, defined once for the engine, `clipig rate`, the benchmarks and the mini
training: views resized to the model's input (`fit`: bicubic, antialiased, as torchvision's resize that the
original uses), clamped to [0, 1] (`seen`), normalised with the model's mean and std; and the 8-bit values a
PNG holds (`quantize`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def fit(views, size: int) -> torch.Tensor:
    """One batch of `views` (a [B,3,H,W] batch or a list of batches of any sizes) at size x size; views
    already at that size pass unchanged."""
    parts = [views] if torch.is_tensor(views) else list(views)
    parts = [v if tuple(v.shape[-2:]) == (size, size) else
             F.interpolate(v, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
             for v in parts]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def seen(views, size: int) -> torch.Tensor:
    """What a model of input `size` sees of `views`: resized, then clamped to [0, 1]."""
    return fit(views, size).clamp(0, 1)


def to_bytes(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [0, 1] (clamped first) -> [H, W, 3] uint8 on the CPU: the pixels of the image's PNG."""
    return (image.detach().clamp(0, 1).permute(1, 2, 0).cpu() * 255.0 + 0.5).to(torch.uint8)


def quantize(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] -> the 8-bit values its PNG holds (`to_bytes`), as floats in [0, 1] on the CPU."""
    return to_bytes(image).permute(2, 0, 1).to(torch.float32) / 255.0


class Shown:
    """One batch of views as each input size sees it, resized from the original views once per size."""

    def __init__(self, views: torch.Tensor):
        self.views, self.sizes = views, {}

    def __len__(self) -> int:
        return self.views.shape[0]

    def at(self, size: int) -> torch.Tensor:
        if size not in self.sizes:
            self.sizes[size] = seen(self.views, size)
        return self.sizes[size]
