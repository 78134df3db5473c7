"""Geometric transforms folded into one resampling per view.

A chain like `repeat -> random_shift -> random_rotate -> random_scale -> center_crop` does not need to
produce each intermediate image: every step is a map from its output pixel coordinates to its input pixel
coordinates (a 3x3 matrix per view, homogeneous, pixel centres at +0.5) plus what lies outside its input
(zeros, a fill colour, wrap-around or the edge pixels). `Views` collects the steps and samples the source
image once, at the final (usually CLIP-sized) resolution, so the cost follows the view size, not the image
size. Integer moves (shift, crop, repeat, pad) sample exactly at pixel centres and stay exact. Other maps
sample the nearest pixel, as torchvision's rotation does by default (the original CLIPig's), unless a step
asks for bilinear sampling (`smooth`: random_scale, random_perspective); then the whole chain is bilinear.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Step:
    matrix: torch.Tensor  # [n, 3, 3]: output pixel coords -> input pixel coords
    size: tuple[int, int]  # (width, height) of the step's input
    outside: str  # zeros | fill | wrap | edge | none
    fill: torch.Tensor | None = None  # [3] colour for "fill"
    smooth: bool = False  # bilinear sampling, not nearest


class Views:
    """A lazy batch of views of `source` [N, 3, H, W]: geometric steps are collected and sampled once."""

    def __init__(self, source: torch.Tensor, batch: int | None = None):
        self.source = source
        self.steps: list[Step] = []
        self.size = (source.shape[-1], source.shape[-2])
        self.batch = batch or source.shape[0]

    @classmethod
    def of(cls, images) -> "Views":
        return images if isinstance(images, Views) else cls(images)

    @property
    def device(self) -> torch.device:
        return self.source.device

    def add(self, matrix: torch.Tensor, size: tuple[int, int], outside: str = "zeros", fill=None,
            smooth: bool = False) -> "Views":
        """Append a step that maps the new output (of `size`) to the current size."""
        self.steps.append(Step(matrix.to(self.device, torch.float32), self.size, outside, fill, smooth))
        self.size = (int(size[0]), int(size[1]))
        return self

    def tensor(self) -> torch.Tensor:
        """Sample the views: [batch, 3, h, w]."""
        if not self.steps:
            src = self.source
            return src.expand(self.batch, -1, -1, -1) if src.shape[0] != self.batch else src
        w, h = self.size
        ys, xs = torch.meshgrid(torch.arange(h, device=self.device, dtype=torch.float32) + 0.5,
                                torch.arange(w, device=self.device, dtype=torch.float32) + 0.5, indexing="ij")
        coords = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, device=self.device)])[None]
        masks = []
        for step in reversed(self.steps):
            coords = step.matrix @ coords  # [n, 3, P]
            x, y = coords[:, 0] / coords[:, 2], coords[:, 1] / coords[:, 2]
            sw, sh = step.size
            if step.outside == "wrap":
                x, y = torch.remainder(x, sw), torch.remainder(y, sh)
            elif step.outside == "edge":
                x, y = x.clamp(0.5, sw - 0.5), y.clamp(0.5, sh - 0.5)
            elif step.outside in ("zeros", "fill"):  # "fill" is pad's mode name for a colour
                masks.append(((x >= 0) & (x <= sw) & (y >= 0) & (y <= sh), step.fill))
            coords = torch.stack([x, y, torch.ones_like(x)], 1)
        mode = "bilinear" if any(step.smooth for step in self.steps) else "nearest"
        out = self._sample(coords[:, 0], coords[:, 1], self.steps[0].outside, mode)  # [B, 3, P]
        merged = []  # steps that blacken what lies outside them, one after the other, mask once (same values)
        for inside, fill in reversed(masks):
            if fill is None and merged and merged[-1][1] is None:
                merged[-1] = (merged[-1][0] & inside, None)
            else:
                merged.append((inside, fill))
        for inside, fill in merged:
            value = 0.0 if fill is None else fill.to(out.dtype).view(1, 3, 1)
            out = torch.where(inside[:, None, :], out, value)
        if out.shape[0] != self.batch:
            out = out.expand(self.batch, -1, -1)
        return out.reshape(self.batch, 3, h, w)

    def _sample(self, x: torch.Tensor, y: torch.Tensor, outside: str, mode: str) -> torch.Tensor:
        """Samples of the source at pixel coordinates x, y [n, P] -> [n, 3, P]: a plain gather where all
        coordinates are pixel centres (exact), else grid_sample's `mode` (nearest or bilinear)."""
        src = self.source
        sh, sw = src.shape[-2:]
        ix, iy = x - 0.5, y - 0.5
        if torch.equal(ix, ix.round()) and torch.equal(iy, iy.round()):
            index = (iy.long().clamp(0, sh - 1) * sw + ix.long().clamp(0, sw - 1))  # outside is masked later
            flat = src.flatten(2)
            if src.shape[0] == 1:
                return flat[0][:, index].transpose(0, 1)
            return torch.gather(flat, 2, index[:, None, :].expand(src.shape[0], 3, -1))
        if outside == "wrap":  # neighbours across the seam come from the other side
            src = wrap_border(src)
            x, y = x + 1, y + 1
            sh, sw = src.shape[-2:]
        grid = torch.stack([x / sw * 2 - 1, y / sh * 2 - 1], -1).to(src.dtype)  # [n, P, 2]
        n, p = grid.shape[:2]
        if src.shape[0] == 1:  # one source image: all views in one call, the gradient stays [1, 3, H, W]
            out = F.grid_sample(src, grid.reshape(1, n * p, 1, 2), mode=mode, padding_mode="zeros",
                                align_corners=False)
            return out.reshape(3, n, p).transpose(0, 1)
        if n == 1 and src.shape[0] > 1:
            grid = grid.expand(src.shape[0], -1, -1)
        out = F.grid_sample(src, grid[:, :, None, :], mode=mode, padding_mode="zeros", align_corners=False)
        return out[..., 0]


def _wrapped(n: int, device) -> torch.Tensor:
    """Indices -1, 0, ..., n modulo n: a one-pixel wrap-around border."""
    return torch.arange(-1, n + 1, device=device) % n


def wrap_border(images: torch.Tensor) -> torch.Tensor:
    """[..., H, W] -> [..., H + 2, W + 2] with a one-pixel wrap-around border: the values and gradients of
    `index_select` by `_wrapped` indices (columns, then rows), bit for bit, in a third of its time (copies of
    slices instead of a gather; the gradient folds the border back in the same order of additions)."""
    if min(images.shape[-2:]) < 2:  # a side of one pixel gets three additions: keep index_select's order
        h, w = images.shape[-2:]
        return images.index_select(-2, _wrapped(h, images.device)).index_select(-1, _wrapped(w, images.device))
    return _WrapBorder.apply(images)


class _WrapBorder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images):
        out = images.new_empty(*images.shape[:-2], images.shape[-2] + 2, images.shape[-1] + 2)
        out[..., 1:-1, 1:-1] = images
        out[..., 1:-1, 0], out[..., 1:-1, -1] = images[..., :, -1], images[..., :, 0]
        out[..., 0, :], out[..., -1, :] = out[..., -2, :], out[..., 1, :]
        return out

    @staticmethod
    def backward(ctx, grad):
        inner = grad[..., 1:-1, 1:-1].clone()
        inner[..., :, 0] += grad[..., 1:-1, -1]  # columns first, as index_select's gradient adds them
        inner[..., :, -1] += grad[..., 1:-1, 0]
        top, bottom = _fold_columns(grad[..., 0, :]), _fold_columns(grad[..., -1, :])
        inner[..., 0, :] += bottom
        inner[..., -1, :] += top
        return inner


def _fold_columns(row: torch.Tensor) -> torch.Tensor:
    """A border row [..., W + 2] of the gradient with its wrapped end columns added: [..., W]."""
    folded = row[..., 1:-1].clone()
    folded[..., 0] += row[..., -1]
    folded[..., -1] += row[..., 0]
    return folded


def as_tensor(images) -> torch.Tensor:
    return images.tensor() if isinstance(images, Views) else images


def turn(images: torch.Tensor, angle: torch.Tensor, scale, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Each image of [N, C, H, W] turned by its `angle` (radians, [N]), scaled by `scale` and moved by (dx, dy)
    (in half sizes), sampled bilinearly, black outside: the mini training's augmentation (`Views` folds the
    transforms of a run's views)."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, dx], 1), torch.stack([sin, cos, dy], 1)], 1)
    return F.grid_sample(images, F.affine_grid(theta, images.shape, align_corners=False), align_corners=False)


# --- matrices (output pixel coords -> input pixel coords), [n, 3, 3] ----------------------------------------

def eye(n: int = 1, device=None) -> torch.Tensor:
    return torch.eye(3, device=device).repeat(n, 1, 1)


def translation(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Content moves by (+dx, +dy): input = output - d."""
    m = eye(len(dx), dx.device)
    m[:, 0, 2], m[:, 1, 2] = -dx, -dy
    return m


def scaling(sx: torch.Tensor, sy: torch.Tensor, cx: float, cy: float) -> torch.Tensor:
    """Content scaled by (sx, sy) around the pixel point (cx, cy)."""
    m = eye(len(sx), sx.device)
    m[:, 0, 0], m[:, 1, 1] = 1 / sx, 1 / sy
    m[:, 0, 2], m[:, 1, 2] = cx - cx / sx, cy - cy / sy
    return m


def rotation(degrees: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise (on screen, y pointing down) rotation around the pixel points (cx, cy)."""
    rad = torch.deg2rad(degrees)
    cos, sin = torch.cos(rad), torch.sin(rad)
    m = eye(len(degrees), degrees.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    m[:, 0, 2] = cx - (cos * cx - sin * cy)
    m[:, 1, 2] = cy - (sin * cx + cos * cy)
    return m


def homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Matrices [n, 3, 3] mapping the 4 points `src` [n, 4, 2] onto `dst` [n, 4, 2]."""
    n = src.shape[0]
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], -1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)  # [n, 8, 8]
    b = torch.cat([u, v], 1)[..., None]
    h = torch.linalg.solve(a, b)[..., 0]
    return torch.cat([h, torch.ones(n, 1, device=src.device, dtype=src.dtype)], 1).view(n, 3, 3)
