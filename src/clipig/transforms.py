"""The transform registry, shared by `targets[].transforms` and `postproc`.

Each transform is a plain function of a batch of images `[N, 3, H, W]` and explicit, already evaluated
parameters; random transforms also get `rng` (a torch.Generator on the images' device) and draw one set of
random parameters per view, for the whole batch at once. All are differentiable where the math allows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .config.registry import TRANSFORMS
from .config.schema import TRANSFORM_VARS
from .config.values import Param

transform = TRANSFORMS.add


def P(type: str, default=None, length=None, doc: str = "", **kw) -> Param:
    """A transform parameter: expressions may use the learnrate, resolution and time variables."""
    return Param(type, default, length=length, groups=TRANSFORM_VARS, doc=doc, **kw)


def rgb(values, images: torch.Tensor) -> torch.Tensor:
    """Per-channel values as a [1, 3, 1, 1] tensor on the images' device."""
    return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)


def uniform(rng: torch.Generator, n: int, low: float, high: float, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=rng, device=device)


def odd(k: int) -> int:
    """Kernel sizes must be odd: even ones (e.g. from `31*ti`) become the next odd number."""
    return max(1, int(k) | 1)


def pixels_or_fraction(value: float, size: int) -> float:
    """Numbers in [-1, 1] are fractions of `size`, larger ones pixels."""
    return value * size if -1.0 <= value <= 1.0 else value


def gaussian_blur(images: torch.Tensor, kernel_size, sigma=None) -> torch.Tensor:
    """torchvision's gaussian blur; kernels are made odd and no larger than the image."""
    h, w = images.shape[-2:]
    kx = min(odd(kernel_size[0]), w if w % 2 else w - 1)
    ky = min(odd(kernel_size[1]), h if h % 2 else h - 1)
    if kx <= 1 and ky <= 1:
        return images
    if sigma is None:
        sigma = [0.3 * ((k - 1) * 0.5 - 1) + 0.8 for k in (kx, ky)]
    sigma = [max(float(s), 1e-3) for s in sigma]
    return TF.gaussian_blur(images, [kx, ky], sigma)


def affine(images: torch.Tensor, matrices: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Resample each image with a 2x3 matrix mapping output to input pixel offsets from the image centre."""
    n, _, h, w = images.shape
    scale = torch.tensor([w / 2, h / 2], dtype=matrices.dtype, device=matrices.device)
    theta = matrices.clone()
    theta[:, :, :2] = matrices[:, :, :2] * scale[None, None, :] / scale[None, :, None]
    theta[:, :, 2] = matrices[:, :, 2] / scale[None, :]
    grid = F.affine_grid(theta.to(images.dtype), [matrices.shape[0], 3, h, w], align_corners=False)
    if n != matrices.shape[0]:
        images = images.expand(matrices.shape[0], -1, -1, -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def rotation_matrices(degrees: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Matrices (for `affine`) that rotate counter-clockwise by `degrees` around (cx, cy) in [0, 1]."""
    rad = degrees * math.pi / 180.0
    cos, sin = torch.cos(rad), torch.sin(rad)
    # pixel offsets of the rotation centre from the image centre
    ox, oy = (cx - 0.5) * w, (cy - 0.5) * h
    m = torch.zeros(len(degrees), 2, 3, device=degrees.device)
    # input = R^-1 (output - c) + c, y pointing down: a counter-clockwise turn on screen
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    m[:, 0, 2] = ox - (cos * ox - sin * oy)
    m[:, 1, 2] = oy - (sin * ox + cos * oy)
    return m


def roll(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Move each image by whole pixels (dx right, dy down), wrapping around the edges."""
    n, c, h, w = images.shape
    b = len(dx)
    xs = (torch.arange(w, device=images.device)[None, :] - dx.long()[:, None]) % w  # [b, w]
    ys = (torch.arange(h, device=images.device)[None, :] - dy.long()[:, None]) % h  # [b, h]
    images = images.expand(b, -1, -1, -1) if n != b else images
    rows = torch.gather(images, 2, ys[:, None, :, None].expand(b, c, h, w))
    return torch.gather(rows, 3, xs[:, None, None, :].expand(b, c, h, w))


# --- geometry -----------------------------------------------------------------------------------------------

@transform("random_shift", P("float", length=(2, 4), doc=(
    "The random range of translation: two numbers (min, max) for both axes, or four (x min, x max, y min, "
    "y max). Numbers in [-1, 1] are fractions of the resolution, larger ones pixels. `0 1` moves the image "
    "to every possible position.")), random=True)
def random_shift(images, shift, rng):
    """Randomly translates the pixels by whole pixels; pixels moved outside come back on the other side,
    so the image becomes a seamless texture."""
    n, _, h, w = images.shape
    xr = shift[:2]
    yr = shift[2:] if len(shift) == 4 else shift[:2]
    dx = uniform(rng, n, *[pixels_or_fraction(v, w) for v in xr], images.device).round()
    dy = uniform(rng, n, *[pixels_or_fraction(v, h) for v in yr], images.device).round()
    return roll(images, dx, dy)


@transform("shift", P("float", length=2, doc=(
    "Translation for x and y (one number for both). Numbers in [-1, 1] are fractions of the resolution, "
    "larger ones pixels.")))
def shift(images, shift):
    """Translates the image by whole pixels, wrapping the edges around: `shift: .5` moves the centre of the
    image to the former bottom-right corner."""
    h, w = images.shape[-2:]
    return torch.roll(images, (round(pixels_or_fraction(shift[1], h)), round(pixels_or_fraction(shift[0], w))),
                      dims=(2, 3))


@transform("random_rotate", {
    "degree": P("float", length=2, required=True,
                doc="The minimum and maximum counter-clockwise angle of rotation in degrees."),
    "center": P("float", [0.5, 0.5], length=2,
                doc="The minimum and maximum center of rotation (for x and y) in the range [0, 1]."),
}, random=True)
def random_rotate(images, degree, center, rng):
    """Randomly rotates each view by an angle in `degree` around a centre in `center`. The resolution is not
    changed; areas outside of the image are black (zero)."""
    n, _, h, w = images.shape
    angles = uniform(rng, n, degree[0], degree[1], images.device)
    cx = uniform(rng, n, center[0], center[1], images.device)
    cy = uniform(rng, n, center[0], center[1], images.device)
    return affine(images, rotation_matrices(angles, cx, cy, w, h))


@transform("rotate", {
    "degree": P("float", required=True, doc="The counter-clockwise angle of rotation in degrees."),
    "center": P("float", [0.5, 0.5], length=2, doc="The center of rotation (x and y) in the range [0, 1]."),
})
def rotate(images, degree, center):
    """Rotates the image counter-clockwise. The resolution is not changed; areas outside are black (zero)."""
    h, w = images.shape[-2:]
    one = torch.ones(1, device=images.device)
    return affine(images, rotation_matrices(one * degree, one * center[0], one * center[1], w, h))


@transform("random_scale", P("float", length=2, check=lambda v: None if min(v) > 0 else "scales must be positive",
                             doc="Minimum and maximum scale: 0.5 is half, 2.0 double the size."), random=True)
def random_scale(images, scale, rng):
    """Randomly scales the contents of each view around the centre; the resolution stays, areas outside of
    the image are black (zero)."""
    n = images.shape[0]
    s = uniform(rng, n, scale[0], scale[1], images.device)
    m = torch.zeros(n, 2, 3, device=images.device)
    m[:, 0, 0] = m[:, 1, 1] = 1.0 / s
    return affine(images, m)


@transform("center_crop", P("int", length=2, check=lambda v: None if min(v) > 0 else "sizes must be positive",
                            doc="Width and height of the crop; one number for a square."),
           keeps_resolution=False)
def center_crop(images, size):
    """Crops an image of the given resolution from the centre (padding with black where it is larger)."""
    return TF.center_crop(images, [size[1], size[0]])


# --- colour and noise ---------------------------------------------------------------------------------------

@transform("noise", P("float", length=3, check=lambda v: None if min(v) >= 0 else "must not be negative", doc=(
    "The standard deviation of the noise: one value, or three for red, green and blue.")), random=True)
def noise(images, std, rng):
    """Adds noise with a normal distribution around zero to each view."""
    n, c, h, w = images.shape
    return images + torch.randn(n, c, h, w, generator=rng, device=images.device, dtype=images.dtype) * rgb(std, images)


@transform("blur", {
    "kernel_size": P("int", [3, 3], length=2, doc=(
        "The size of the pixel window: an odd, positive integer (even numbers are raised to the next odd "
        "one). Two numbers define width and height separately.")),
    "sigma": P("float", length=2, doc=(
        "Gaussian standard deviation: the larger, the more blurry. Without it: "
        "`0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8`. Two numbers define x and y separately.")),
})
def blur(images, kernel_size, sigma):
    """A gaussian blur (torchvision's `gaussian_blur`)."""
    return gaussian_blur(images, kernel_size, sigma)


def border_mask(images: torch.Tensor, size) -> torch.Tensor:
    """1 inside a border of `size` (width, height) pixels, 0 elsewhere; shape [1, 1, H, W]."""
    h, w = images.shape[-2:]
    mask = torch.zeros(1, 1, h, w, dtype=images.dtype, device=images.device)
    bx, by = max(0, size[0]), max(0, size[1])
    if bx:
        mask[..., :, :bx] = 1
        mask[..., :, w - bx:] = 1
    if by:
        mask[..., :by, :] = 1
        mask[..., h - by:, :] = 1
    return mask


@transform("border", {
    "size": P("int", [1, 1], length=2, doc="Width and height of the border in pixels; one number for both."),
    "color": P("float", [0.0, 0.0, 0.0], length=3, doc="The colour (RGB in [0, 1], or one number for gray)."),
})
def border(images, size, color):
    """Draws a border on the edges of the image. The resolution is not changed."""
    mask = border_mask(images, size)
    return images * (1 - mask) + rgb(color, images) * mask
