"""The transform registry, shared by `targets[].transforms` and `postproc`.

Each transform is a plain function of a batch of images `[N, 3, H, W]` and explicit, already evaluated
parameters; random transforms also get `rng` (a torch.Generator on the images' device) and draw one set of
random parameters per view, for the whole batch at once. All are differentiable where the math allows.
Transforms that change the resolution are registered with `keeps_resolution=False` (not for `postproc`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..config.params import TRANSFORM_VARS, at_least, in_range
from ..config.registry import TRANSFORMS
from ..config.values import Param
from . import geometry as G
from .geometry import Views

transform = TRANSFORMS.add


def P(type: str, default=None, length=None, doc: str = "", **kw) -> Param:
    """A transform parameter: expressions may use the learnrate, resolution and time variables."""
    return Param(type, default, length=length, groups=TRANSFORM_VARS, doc=doc, **kw)


def positive(v):
    return None if min(v if isinstance(v, list) else [v]) > 0 else "must be positive"


def rgb(values, images: torch.Tensor) -> torch.Tensor:
    """Per-channel values as a [1, 3, 1, 1] tensor on the images' device."""
    return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)


def uniform(rng: torch.Generator, n: int, low: float, high: float, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=rng, device=device)


def randn_like(images: torch.Tensor, rng: torch.Generator, channels: int | None = None, size=None) -> torch.Tensor:
    """Normal noise for each view: `channels` (default: as the images) at `size` (h, w; default: as the images)."""
    n, c, h, w = images.shape
    shape = (n, c if channels is None else channels, *(size or (h, w)))
    return torch.randn(shape, generator=rng, device=images.device, dtype=images.dtype)


def odd(k: int) -> int:
    """Kernel sizes must be odd: even ones (e.g. from `31*ti`) become the next odd number."""
    return max(1, int(k) | 1)


def pixels_or_fraction(value: float, size: int) -> float:
    """Numbers in [-1, 1] are fractions of `size`, larger ones pixels."""
    return value * size if -1.0 <= value <= 1.0 else value


def whole_pixels(value: float, size: int) -> int:
    """A shift: numbers in (-1, 1) are fractions of `size`, others pixels (so `1` is one pixel); cut to whole
    pixels towards zero, as the original."""
    return int(value * size if abs(value) < 1.0 else value)


def blur_params(param=None) -> dict:
    """`kernel_size` and `sigma` of a gaussian blur, declared with `param` (this module's `P` by default)."""
    param = param or P
    return {
        "kernel_size": param("int", [3, 3], length=2, check=at_least(0), doc=(
            "The size of the pixel window: an odd, positive integer (even numbers are raised to the next odd "
            "one, so 0, as `31*ti` gives at the last epoch, is 1: no blur). Two numbers define width and "
            "height separately.")),
        "sigma": param("float", length=2, doc=(
            "Gaussian standard deviation: the larger, the more blurry. Without it: "
            "`0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8`. Two numbers define x and y separately.")),
    }


def gaussian_blur(images: torch.Tensor, kernel_size, sigma=None) -> torch.Tensor:
    """torchvision's gaussian blur (reflected borders); kernels are made odd and no larger than the image.
    Large kernels run as two matrix products with banded matrices, which is the same blur computed much
    faster than torchvision's full 2-D depthwise convolution (51x51 on 20 views of 224²: 308 -> 14 ms)."""
    h, w = images.shape[-2:]
    kx = min(odd(kernel_size[0]), w if w % 2 else w - 1)
    ky = min(odd(kernel_size[1]), h if h % 2 else h - 1)
    if kx <= 1 and ky <= 1:
        return images
    if sigma is None:
        sigma = [0.3 * ((k - 1) * 0.5 - 1) + 0.8 for k in (kx, ky)]
    sigma = [max(float(s), 1e-3) for s in sigma]
    if kx * ky * 8 <= w + h:  # small kernels: the convolution is cheaper than the [h,h] and [w,w] products
        return TF.gaussian_blur(images, [kx, ky], sigma)
    rows = blur_matrix(h, ky, sigma[1], images.device, images.dtype)
    columns = blur_matrix(w, kx, sigma[0], images.device, images.dtype)
    return rows @ images @ columns.T


def blur_each(images: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """A gaussian blur of each image of [N, C, H, W] with its own `sigma` ([N], pixels), a (2 radius + 1)
    kernel and the edge pixels repeated outside: the mini training's augmentation."""
    n, c, h, w = images.shape
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [n*c, 2 radius + 1]
    flat = images.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * c)
    return flat.view_as(images)


@functools.lru_cache(maxsize=32)
def blur_matrix(n: int, kernel: int, sigma: float, device, dtype) -> torch.Tensor:
    """[n, n] matrix of a 1-D gaussian blur with reflected borders: row i holds the kernel weights of the
    source pixels that output pixel i reads."""
    radius = kernel // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    source = torch.arange(n).view(-1, 1) + offsets.long().view(1, -1)  # [n, kernel], may fall outside
    source = torch.where(source < 0, -source, source)
    source = torch.where(source >= n, 2 * (n - 1) - source, source)  # reflect, as torchvision pads
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.scatter_add_(1, source, weights.expand(n, -1).contiguous())
    return matrix.to(device=device, dtype=dtype)


# --- geometry -----------------------------------------------------------------------------------------------

def geometric(name: str, params, **flags):
    """Register a transform given by its coordinate map on `Views` (see geometry.py). In a target's chain
    consecutive geometric transforms are folded into one resampling; called on a tensor, it samples at once."""
    def register(geo):
        @functools.wraps(geo)
        def fn(images, **args):
            return geo(Views.of(images), **args).tensor()
        transform(name, params, geometry=geo, **flags)(fn)
        return fn
    return register


@geometric("random_shift", P("float", length=(2, 4), doc=(
    "The random range of translation: two numbers (min, max) for both axes, or four (x min, x max, y min, "
    "y max). Numbers in [-1, 1] are fractions of the resolution, larger ones pixels. `0 1` moves the image "
    "to every possible position.")), random=True)
def random_shift(views, shift, rng):
    """Randomly translates the pixels by whole pixels; pixels moved outside come back on the other side,
    so the image becomes a seamless texture."""
    (w, h), n = views.size, views.batch
    xr = shift[:2]
    yr = shift[2:] if len(shift) == 4 else shift[:2]
    dx = uniform(rng, n, *[pixels_or_fraction(v, w) for v in xr], views.device).trunc()
    dy = uniform(rng, n, *[pixels_or_fraction(v, h) for v in yr], views.device).trunc()
    return views.add(G.translation(dx, dy), views.size, "wrap")


@geometric("shift", P("float", length=2, doc=(
    "Translation for x and y (one number for both). Numbers between -1 and 1 (exclusive) are fractions of "
    "the resolution, others pixels; the result is cut to whole pixels.")))
def shift(views, shift):
    """Translates the image by whole pixels, wrapping the edges around: `shift: .5` moves the centre of the
    image to the former bottom-right corner."""
    w, h = views.size
    d = torch.tensor([[whole_pixels(shift[0], w), whole_pixels(shift[1], h)]],
                     dtype=torch.float32, device=views.device)
    return views.add(G.translation(d[:, 0], d[:, 1]), views.size, "wrap")


@geometric("random_translate", P("float", length=2, check=in_range(0, 1), doc=(
    "The largest translation as a fraction of width and height: `a, b` moves each view by a random "
    "dx in (-a * width, a * width) and dy in (-b * height, b * height).")), random=True)
def random_translate(views, offset, rng):
    """Randomly translates each view by whole pixels. The resolution is not changed; areas moved in from
    outside of the image are black (zero), nothing wraps around."""
    (w, h), n = views.size, views.batch
    dx = uniform(rng, n, -offset[0] * w, offset[0] * w, views.device).round()
    dy = uniform(rng, n, -offset[1] * h, offset[1] * h, views.device).round()
    return views.add(G.translation(dx, dy), views.size)


@geometric("random_rotate", {
    "degree": P("float", length=2, required=True,
                doc="The minimum and maximum counter-clockwise angle of rotation in degrees."),
    "center": P("float", [0.5, 0.5], length=2,
                doc="The minimum and maximum center of rotation (for x and y) in the range [0, 1]."),
}, random=True)
def random_rotate(views, degree, center, rng):
    """Randomly rotates each view by an angle in `degree` around a centre in `center` (cut to a whole pixel),
    sampling the nearest pixel as torchvision's rotate does. The resolution is not changed; areas outside of
    the image are black (zero)."""
    (w, h), n = views.size, views.batch
    angles = uniform(rng, n, degree[0], degree[1], views.device)
    cx = uniform(rng, n, center[0], center[1], views.device)
    cy = uniform(rng, n, center[0], center[1], views.device)
    return views.add(G.rotation(angles, (cx * w).trunc(), (cy * h).trunc()), views.size)


@geometric("rotate", {
    "degree": P("float", required=True, doc="The counter-clockwise angle of rotation in degrees."),
    "center": P("float", [0.5, 0.5], length=2, doc="The center of rotation (x and y) in the range [0, 1]."),
})
def rotate(views, degree, center):
    """Rotates the image counter-clockwise around `center` (cut to a whole pixel), sampling the nearest pixel:
    torchvision's rotate with its defaults, as in the original. The resolution is not changed; areas outside
    are black (zero)."""
    w, h = views.size
    one = torch.ones(1, device=views.device)
    return views.add(G.rotation(one * degree, one * int(center[0] * w), one * int(center[1] * h)), views.size)


@geometric("random_scale", P("float", length=2, check=positive,
                             doc="Minimum and maximum scale: 0.5 is half, 2.0 double the size."), random=True)
def random_scale(views, scale, rng):
    """Randomly scales the contents of each view around the centre (bilinear, also for the other geometric
    transforms next to it); the resolution stays, areas outside of the image are black (zero)."""
    w, h = views.size
    s = uniform(rng, views.batch, scale[0], scale[1], views.device)
    return views.add(G.scaling(s, s, w / 2, h / 2), views.size, smooth=True)


@geometric("random_perspective", {
    "distortion": P("float", [0.0, 0.5], length=2, check=in_range(0, 1), doc=(
        "Minimum and maximum strength of the distortion: how far each corner may move towards the centre, "
        "as a fraction of half the width and height (torchvision's `distortion_scale`).")),
    "probability": P("float", 1.0, check=in_range(0, 1), doc="The chance of each view to be distorted."),
}, random=True)
def random_perspective(views, distortion, probability, rng):
    """Randomly projects each view as if seen at an angle: its corners move inwards by random amounts
    (bilinear, also for the other geometric transforms next to it). The resolution is not changed; areas
    outside of the image are black (zero)."""
    (w, h), n, device = views.size, views.batch, views.device
    strength = uniform(rng, n, distortion[0], distortion[1], device)
    strength = strength * (torch.rand(n, generator=rng, device=device) < probability)
    moves = torch.rand(n, 4, 2, generator=rng, device=device)
    corners = torch.tensor([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]], device=device)
    # each corner moves towards the centre by up to `strength` times half the size
    centre = torch.tensor([w / 2, h / 2], device=device)
    moved = corners + (centre - corners) * moves * strength[:, None, None]
    return views.add(G.homography(moved, corners.expand(n, -1, -1)), views.size, smooth=True)


def crop_offsets(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left of a centred crop (torchvision's rounding; negative where the crop is larger)."""
    return tuple(int(round((s - c) / 2.0)) if c <= s else -((c - s) // 2) for s, c in zip(size, crop))


@geometric("center_crop", P("int", length=2, check=positive, doc="Width and height of the crop; one number for "
                            "a square."), keeps_resolution=False)
def center_crop(views, size):
    """Crops an image of the given resolution from the centre (padding with black where it is larger)."""
    x, y = crop_offsets(views.size, size)
    return views.add(G.translation(*torch.tensor([[-x], [-y]], dtype=torch.float32)), size)


@geometric("crop", P("float", length=4, check=lambda v: None if min(v) >= 0 and min(v[2:]) > 0 else
                     "needs x, y >= 0 and width, height > 0", doc=(
    "x and y of the top-left corner, then width and height. Numbers below 1 are fractions of the resolution, "
    "numbers from 1 on are pixels; the results are cut to whole pixels.")), keeps_resolution=False)
def crop(views, xywh):
    """Crops a fixed section from the image (black where it reaches outside)."""
    w, h = views.size
    x, y, cw, ch = (int(v * size if v < 1 else v) for v, size in zip(xywh, (w, h, w, h)))
    return views.add(G.translation(*torch.tensor([[-x], [-y]], dtype=torch.float32)), (max(1, cw), max(1, ch)))


@geometric("random_crop", P("int", length=2, check=positive, doc=(
    "Width and height of the window; one number for a square.")), random=True, keeps_resolution=False)
def random_crop(views, size, rng):
    """Crops a window of the given resolution from a random position of each view (an image smaller than the
    window is padded with black around the centre first)."""
    cw, ch = size
    w, h = views.size
    if cw > w or ch > h:
        views = center_crop.__wrapped__(views, (max(w, cw), max(h, ch)))
        w, h = views.size
    n, device = views.batch, views.device
    top = torch.randint(0, h - ch + 1, (n,), generator=rng, device=device).float()
    left = torch.randint(0, w - cw + 1, (n,), generator=rng, device=device).float()
    return views.add(G.translation(-left, -top), size)


@geometric("pad", {
    "size": P("int", length=2, required=True, check=at_least(0), doc=(
        "Columns and rows added on each side: `1, 2` adds one column left and right and two rows at the top "
        "and bottom; one number for both.")),
    "color": P("float", [0.0, 0.0, 0.0], length=3, doc="The colour of the added pixels in mode `fill`."),
    "mode": P("str", "fill", choices=("fill", "edge", "wrap"), doc=(
        "How the new pixels are filled: `fill` with `color`, `edge` repeats the outermost pixels, `wrap` "
        "continues with the image from the opposite edge.")),
}, keeps_resolution=False)
def pad(views, size, color, mode):
    """Adds pixels around the image."""
    px, py = size
    w, h = views.size
    fill = torch.tensor(color, dtype=torch.float32, device=views.device).clamp(0, 1)  # every result is in [0, 1]
    move = G.translation(*torch.tensor([[px], [py]], dtype=torch.float32))
    return views.add(move, (w + 2 * px, h + 2 * py), mode, fill)


@geometric("repeat", P("int", length=2, check=at_least(1), doc=(
    "How often the image appears along x and y; one number for both.")), keeps_resolution=False)
def repeat(views, count):
    """Tiles the image to the right and down: `repeat: 3` gives 3x3 copies at three times the resolution."""
    w, h = views.size
    return views.add(G.eye(1), (w * count[0], h * count[1]), "wrap")


@transform("resize", P("int", length=2, check=at_least(1), doc=(
    "The new width and height; one number for a square.")), keeps_resolution=False)
def resize(images, size):
    """Changes the resolution of the image (bilinear, antialiased when shrinking)."""
    return TF.resize(images, [size[1], size[0]], antialias=True)


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
    "size": P("int", [1, 1], length=2, check=at_least(0), doc=(
        "Width and height of the border in pixels; one number for both.")),
    "color": P("float", [0.0, 0.0, 0.0], length=3, doc="The colour (RGB in [0, 1], or one number for gray)."),
})
def border(images, size, color):
    """Draws a border on the edges of the image. The resolution is not changed."""
    mask = border_mask(images, size)
    return images * (1 - mask) + rgb(color, images) * mask


# --- colour -------------------------------------------------------------------------------------------------

@transform("add", P("float", length=3, doc="The value added to red, green and blue; one number for all."))
def add(images, color):
    """Adds a fixed value to all pixels."""
    return images + rgb(color, images)


@transform("mul", P("float", length=3, doc="The factor for red, green and blue; one number for all."))
def mul(images, color):
    """Multiplies all pixels by a fixed value."""
    return images * rgb(color, images)


@transform("mean", P("float", length=3, doc="The new mean of red, green and blue; one number for gray."))
def mean(images, mean):
    """Moves the mean colour of each view to the given value (the same offset for all pixels)."""
    return images + (rgb(mean, images) - images.mean(dim=(2, 3), keepdim=True))


@transform("clamp", P("float", length=2, check=lambda v: None if v[0] <= v[1] else "minimum above maximum", doc=(
    "The minimum and maximum value of all channels. Saved and displayed images only show [0, 1].")))
def clamp(images, limits):
    """Clamps the pixels into a fixed range."""
    return images.clamp(limits[0], limits[1])


@transform("contrast", P("float", 1.0, check=at_least(0), doc=(
    "The contrast factor: 0 gives a flat gray image, 1 the original, 2 twice the contrast.")))
def contrast(images, contrast):
    """Changes the contrast: each view is blended with its mean gray and clamped to [0, 1] (torchvision's
    `adjust_contrast`). Lowering it before CLIP sees the views increases the contrast of the trained image."""
    return TF.adjust_contrast(images, contrast)


@transform("saturation", P("float", 1.0, check=at_least(0), doc=(
    "The saturation factor: 0 gives a black and white image, 1 the original, 2 twice the saturation.")))
def saturation(images, saturation):
    """Changes the saturation: each pixel is blended with its gray value and clamped to [0, 1] (torchvision's
    `adjust_saturation`). Lowering it before CLIP sees the views increases the saturation of the trained
    image."""
    return TF.adjust_saturation(images, saturation)


@transform("quantize", P("float", length=3, check=positive, doc=(
    "The step size of red, green and blue; one number for all.")))
def quantize(images, step):
    """Cuts the colour values down to multiples of a step (floor). No gradient passes (the small training
    steps are lost), so in `targets[].transforms` it stops that target's training: it is meant for
    `postproc`."""
    s = rgb(step, images)
    return torch.floor(images / s) * s


@transform("edge", {
    **blur_params(),
    "amount": P("float", [1.0, 1.0, 1.0], length=3, doc="Factor of the edge value for red, green and blue."),
})
def edge(images, kernel_size, sigma, amount):
    """Keeps only the edges: `amount * abs(image - blur(image))`. Usually bad for the image quality, but
    sometimes useful."""
    return rgb(amount, images) * (images - gaussian_blur(images, kernel_size, sigma)).abs()


# --- noise --------------------------------------------------------------------------------------------------

@transform("noise", P("float", length=3, check=at_least(0), doc=(
    "The standard deviation of the noise: one value, or three for red, green and blue.")), random=True)
def noise(images, std, rng):
    """Adds noise with a normal distribution around zero to each view."""
    return images + randn_like(images, rng) * rgb(std, images)


@transform("bwnoise", P("float", check=at_least(0), doc="The standard deviation of the noise."), random=True)
def bwnoise(images, std, rng):
    """Adds gray noise (the same value for red, green and blue) with a normal distribution around zero."""
    return images + randn_like(images, rng, channels=1) * std


@transform("rnoise", {
    "std": P("float", length=3, required=True, check=at_least(0), doc=(
        "The standard deviation of the noise: one value, or three for red, green and blue.")),
    "resolution": P("int", length=2, required=True, check=at_least(1), doc=(
        "Width and height of the noise before it is scaled (bilinear) to the image; one number for both.")),
}, random=True)
def rnoise(images, std, resolution, rng):
    """Adds noise of a different resolution (normal distribution around zero), e.g. coarse blotches."""
    grain = randn_like(images, rng, size=(resolution[1], resolution[0]))
    grain = F.interpolate(grain, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return images + grain * rgb(std, images)


@transform("fnoise", P("float", length=3, check=at_least(0), doc=(
    "The standard deviation of the noise (multiplied by 15 for a look similar to `noise`): one value, or "
    "three for red, green and blue.")), random=True)
def fnoise(images, std, rng):
    """Adds noise with a normal distribution around zero to the real and imaginary parts of each view's
    2D Fourier transform (torch's unnormalized FFT, so the effect per pixel shrinks as the resolution
    grows): a different kind of grain than `noise`."""
    h, w = images.shape[-2:]
    space = torch.fft.rfft2(images)
    scale = 15.0 * rgb(std, images)
    real = randn_like(images, rng, size=space.shape[-2:]) * scale
    imag = randn_like(images, rng, size=space.shape[-2:]) * scale
    return torch.fft.irfft2(space + torch.complex(real, imag), s=(h, w))


@transform("blur", blur_params())
def blur(images, kernel_size, sigma):
    """A gaussian blur (torchvision's `gaussian_blur`)."""
    return gaussian_blur(images, kernel_size, sigma)
