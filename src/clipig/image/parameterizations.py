"""The parameterization registry: what the optimizer trains, and how it becomes the image.

Every entry is a `Parameterization`: a torch module whose trainable tensors map to the image signal, which
`squash` brings into [0, 1]. With `clamp` (the default) the image `[3, H, W]` is the signal itself
(`unclamped()`) and CLIP sees it clamped to [0, 1] (`image()`), as the original CLIPig clamps its pixels;
`tanh` (or `sigmoid`, the same curve) bends it into (0, 1), so `unclamped()` and `image()` agree and the
gradient never stops. `set_image()` makes the tensors show a given image exactly (init, post-processing,
continuing; through the inverse of the squash, with 0 and 1 held a little inside);
a resolution or option change builds a new parameterization that shows the resampled picture
(`rebuilt`). `state_dict()`/`load_state_dict()` hold the tensors and the resolution.

Learning rates: the tensors are scaled so that `learnrate: 1` gives about the step size of `pixels` with
every type: an optimizer step that moves each parameter by the base step size in a random direction moves
each pixel by about that much (root mean square). Coherent gradients move the coarse structure of `fft` and
`pyramid` faster than single pixels, which is their point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config.params import TIME, at_least
from ..config.registry import PARAMETERIZATIONS
from ..config.values import Param
from .start import resize


def P(type: str, default=None, doc: str = "", **kw) -> Param:
    """An option: expressions may use the time variables; a change during the run rebuilds the
    parameterization from the current picture (like a resolution change)."""
    return Param(type, default, groups=TIME, doc=doc, **kw)


SQUASH_EDGE = 1 / 1024  # set_image holds a squashed image this far inside (0, 1): 0 and 1 stay finite
COMMON = {
    "decorrelate": P("bool", False, doc=(
        "Train the colours in a decorrelated space: brightness and two colour-opponent axes (blue-yellow, "
        "red-green), scaled like the colour spread of natural photos (about 1 : 0.3 : 0.15). A step then "
        "mostly changes brightness and only a little the hue, which avoids the colourful noise of plain RGB "
        "training. The image shown is the same; only the training's directions change.")),
    "squash": P("str", "clamp", choices=("clamp", "tanh"), aliases={"sigmoid": "tanh"}, doc=(
        "How the trained signal becomes pixels in [0, 1]. `clamp`: the signal is the image, clamped for CLIP as "
        "in the original CLIPig; a value pushed outside [0, 1] gets no gradient there and stays where it is. "
        "`tanh`: `1/2 + 1/2 tanh(2 s - 1)`, a smooth curve into (0, 1) (Direct Ascent Synthesis squashes its "
        "sum of resolutions so), through which every value keeps a gradient and can come back. `sigmoid` "
        "(lucent, aphantasia) names the same curve: `1/2 + 1/2 tanh(x)` is `sigmoid(2 x)`. The curve has slope "
        "1 in the middle of the range, so `learnrate: 1` moves mid-range pixels as far as `clamp` does; "
        "near 0 and 1 steps get smaller. Setting an image (init, post-processing, continuing) inverts the "
        "curve; values at 0 or 1 are held 1/1024 inside the range.")),
}


def parameterization(name: str, params: dict[str, Param] | None = None):
    """Register a Parameterization class under `name`; every entry also has the common options."""
    return PARAMETERIZATIONS.add(name, {**(params or {}), **COMMON})


def _colour_basis() -> torch.Tensor:
    """[3, 3]: RGB = basis @ decorrelated. Columns: brightness, blue-yellow and red-green (orthonormal axes),
    scaled by their spread; brightness by sqrt(3), so that a unit step there moves each channel by 1."""
    axes = F.normalize(torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]]), dim=1)
    return axes.T * (math.sqrt(3) * torch.tensor([1.0, 0.3, 0.15]))


COLOURS = _colour_basis()


class Parameterization(torch.nn.Module):
    """Base class: subclasses create their tensors in `allocate` and map them to the image signal
    (`signal`, differentiable) and back (`set_signal`, exact unless `exact` is false)."""

    exact = True  # set_image shows any image exactly (a drawing only fits its colours to it)

    def __init__(self, width: int, height: int, device, decorrelate: bool = False, squash: str = "clamp",
                 **options):
        super().__init__()
        self.options = {**options, "decorrelate": decorrelate, "squash": squash}
        self.squashed = squash != "clamp"
        self.device = torch.device(device)
        self.colours = COLOURS.to(self.device) if decorrelate else None
        self.register_buffer("size", torch.tensor([width, height]))
        self.allocate(width, height)

    @property
    def resolution(self) -> list[int]:
        return [int(v) for v in self.size]

    def allocate(self, width: int, height: int) -> None:
        raise NotImplementedError

    def adapted(self, width: int, height: int, options: dict) -> bool:
        """Take on another resolution and options keeping the tensors, where the type can (a drawing); else
        False (the caller builds a new parameterization from the picture)."""
        return False

    def signal(self) -> torch.Tensor:
        raise NotImplementedError

    def set_signal(self, signal: torch.Tensor) -> None:
        raise NotImplementedError

    def unclamped(self) -> torch.Tensor:
        """The image [3, H, W] before clamping, differentiable (what post-processing edits); squashed, already
        in (0, 1)."""
        signal = self.signal()
        rgb = signal if self.colours is None else torch.einsum("ij,jhw->ihw", self.colours, signal)
        return 0.5 + 0.5 * torch.tanh(2 * rgb - 1) if self.squashed else rgb

    def image(self) -> torch.Tensor:
        """The image [3, H, W] in [0, 1], differentiable: what CLIP sees."""
        image = self.unclamped()
        return image if self.squashed else image.clamp(0, 1)

    @torch.no_grad()
    def set_image(self, image: torch.Tensor) -> None:
        """Make the tensors show `image` [3, H, W] (at this resolution) exactly."""
        if list(image.shape) != [3, *self.resolution[::-1]]:
            raise ValueError(f"expected an image of shape [3, {self.size[1]}, {self.size[0]}], got "
                             f"{list(image.shape)}")
        signal = image.to(self.device, torch.float32)
        if self.squashed:  # the inverse of the squash
            signal = 0.5 + 0.5 * torch.atanh(2 * signal.clamp(SQUASH_EDGE, 1 - SQUASH_EDGE) - 1)
        if self.colours is not None:
            signal = torch.einsum("ij,jhw->ihw", torch.linalg.inv(self.colours), signal)
        self.set_signal(signal)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load tensors saved by `state_dict()`, at the resolution they were saved with."""
        width, height = (int(v) for v in state_dict["size"])
        if [width, height] != self.resolution:
            self.size = torch.tensor([width, height], device=self.size.device)
            self.allocate(width, height)
        return super().load_state_dict(state_dict, strict, assign)

    def _zeros(self, *shape: int) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.zeros(*shape, device=self.device))


@parameterization("pixels")
class Pixels(Parameterization):
    """The image is trained as it is: one value per pixel and channel. This is the original CLIPig."""

    def allocate(self, width, height):
        self.data = self._zeros(3, height, width)

    def signal(self):
        return self.data

    def set_signal(self, signal):
        self.data.copy_(signal)


@parameterization("fft", {
    "decay": P("float", 1.0, check=at_least(0), doc=(
        "How fast the scale of the spectrum falls with the frequency: each frequency `f` is multiplied by "
        "`1 / f ** decay` (with `f` at least one cycle per image), so larger values favour smooth, large "
        "shapes; 0 scales all frequencies alike.")),
})
class Fourier(Parameterization):
    """The image is trained as its Fourier spectrum (real FFT of each colour plane), each frequency
    multiplied by a scale that falls with the frequency (`decay`). A step of the optimizer then changes large
    shapes more than fine detail, as natural images do. The scale is normalised so that `learnrate: 1`
    moves pixels about as far as with `pixels` (a step in a random direction: root mean square);
    `decay` changes the balance between coarse and fine, not the overall step size."""

    def allocate(self, width, height):
        fy = torch.fft.fftfreq(height, device=self.device)[:, None]
        fx = torch.fft.rfftfreq(width, device=self.device)[None, :]
        frequency = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / max(width, height))
        scale = frequency ** -float(self.options["decay"])
        # columns other than 0 and (for even widths) the last stand for two coefficients of the full spectrum
        count = torch.full((width // 2 + 1,), 2.0, device=self.device)
        count[0] = 1.0
        if width % 2 == 0:
            count[-1] = 1.0
        # a random unit step of the real and imaginary parts moves each pixel by about 1 (Parseval)
        self.scale = scale / torch.sqrt(2.0 * (scale * scale * count).sum() / (width * height))
        self.spectrum = self._zeros(3, height, width // 2 + 1, 2)

    def signal(self):
        height, width = self.scale.shape[0], int(self.size[0])
        return torch.fft.irfft2(torch.view_as_complex(self.spectrum) * self.scale, s=(height, width), norm="ortho")

    def set_signal(self, signal):
        self.spectrum.copy_(torch.view_as_real(torch.fft.rfft2(signal, norm="ortho") / self.scale))


@parameterization("pyramid", {
    "levels": P("int", 6, check=at_least(0), doc=(
        "The number of images, from the full size down (never below one pixel); 0: every size that `step` "
        "gives, down to one pixel.")),
    "step": P("int", 0, check=at_least(0), doc=(
        "The sizes of the images. 0: each half the size of the one before (full, half, a quarter, ...). "
        "`k`: each `k` pixels smaller than the one before along the longer side (the other side in "
        "proportion); with `step: 1` and `levels: 0`, an image at every size from the full one down to "
        "one pixel, as Direct Ascent Synthesis has them. Many large images cost time: the parameters and "
        "the work grow with the sum of the images' areas (see [parameterizations](parameterizations.md)).")),
    "upsample": P("str", "linear", choices=("nearest", "linear", "cubic"),
                  aliases={"bilinear": "linear", "bicubic": "cubic"}, doc=(
        "How each image is enlarged to the size of the next: `linear` (bilinear), `cubic` (bicubic, as in "
        "Direct Ascent Synthesis) or `nearest`.")),
})
class Pyramid(Parameterization):
    """The image is trained as a sum of images at several resolutions (`levels` of them; each half the size
    of the one before, or `step` pixels smaller), summed from the coarsest up: the sum so far is enlarged
    (`upsample`) to the next size and that image is added, as in Direct Ascent Synthesis (which enlarges
    each image to the full size at once). The coarse levels let a step change large areas at once, the fine
    ones keep the detail. The sum is scaled by `1 / sqrt(levels)`, so that `learnrate: 1` moves pixels about
    as far as with `pixels`. Setting an image stores it as a Laplacian pyramid: each level holds what the
    coarser ones lack."""

    def allocate(self, width, height):
        self.sizes = pyramid_sizes(width, height, self.options["levels"], self.options["step"])
        self.mode = {"linear": "bilinear", "cubic": "bicubic"}.get(self.options["upsample"], "nearest")
        self.weight = 1.0 / math.sqrt(len(self.sizes))
        self.levels = torch.nn.ParameterList([self._zeros(3, h, w) for w, h in self.sizes])

    def signal(self):
        image = self.levels[-1][None]
        for k in range(len(self.levels) - 2, -1, -1):
            image = self._upsample(image, self.levels[k].shape[-2:]) + self.levels[k]
        return image[0] * self.weight

    def set_signal(self, signal):
        blurred = [signal[None] / self.weight]
        for w, h in self.sizes[1:]:
            blurred.append(F.interpolate(blurred[-1], size=(h, w), mode="bilinear", align_corners=False,
                                         antialias=True))
        self.levels[-1].copy_(blurred[-1][0])
        for level, fine, coarse in zip(self.levels[:-1], blurred[:-1], blurred[1:]):
            level.copy_((fine - self._upsample(coarse, fine.shape[-2:]))[0])

    def _upsample(self, image: torch.Tensor, size) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(image, size=tuple(size), mode="nearest-exact")
        return F.interpolate(image, size=tuple(size), mode=self.mode, align_corners=False)


@parameterization("polygons", {
    "count": P("int", 3, check=at_least(1), doc="The number of polygons."),
    "corners": P("int", 12, check=at_least(3), doc=(
        "The corners of each polygon. A five-pointed star needs 10, a cross 12; spare corners can lie on an "
        "edge.")),
    "softness": P("float", 1.0, check=at_least(0.01), doc=(
        "The width of the polygons' edges in pixels: the edge fades over about this many pixels, and only "
        "there do the corners get a gradient. Larger values let a polygon feel further, and draw blurred. An "
        "expression of the time changes it during the run and keeps the drawing.")),
    "radial": P("bool", False, doc=(
        "Place each polygon's corners by angle and distance around its centre, in the order of their angles: "
        "the polygon can never cross itself and stays star-shaped around its centre (a circle, a square, a "
        "star, a cross are; a crescent is not). Neighbouring corners lie at most 0.45 of a turn apart, and at "
        "least 0.55 / (corners - 1) of one. Off: every corner moves freely.")),
    "harmonics": P("int", 0, check=at_least(0), doc=(
        "Draw each polygon's outline as a smooth curve: its distance from the centre (the logarithm of it) is "
        "a sum of the first `harmonics` waves around the turn, and its `corners` lie evenly around it, so "
        "the polygon is star-shaped and its outline has no detail finer than a wave. Each wave's step is "
        "smaller by its number, so the coarse ones lead. 5 to 8 waves draw circles, squares, triangles, "
        "five-pointed stars and crosses that the mini world's pixel reader recognises; `corners` should be "
        "at least four times `harmonics`. 0: the corners are free (or `radial`).")),
    "lowest_wave": P("int", 1, check=at_least(1), doc=(
        "With `harmonics`: the first wave of the outline (the waves run from this one up to `harmonics`). "
        "Wave 1 makes an outline an egg, wave 2 an oval or a lens; from 3 on, an outline cannot be "
        "stretched one way, and keeps the balance of a regular polygon, a circle, a star or a cross (in the "
        "mini world it drew more outlines the pixel reader recognises: [quality](quality.md)). Above "
        "`harmonics`: no waves, circles.")),
})
class Polygons(Parameterization):
    """The image is drawn: `count` filled polygons of `corners` corners each over a background colour, each
    polygon in a colour and with an opacity of its own, later ones over earlier ones (a drawing for CLIP
    to judge, like CLIPDraw's strokes or pixray's drawers, with filled shapes). Training moves the corners
    and changes the colours, so the picture keeps flat colours and clean outlines, whatever the critic
    asks for; at any resolution (a change of the resolution or of `softness` keeps the drawing; of `count`
    or `corners` starts it again from the picture). The polygons start as regular ones on a ring around the
    middle. With Adam, `learnrate: 1` moves each polygon's centre and each corner by up to about 3% of the
    image's longer side a step, and a colour by up to 9%: larger steps than a pixel's; the mini world's
    drawings were best at `learnrate: .15` ([quality](quality.md#drawing-instead-of-pixels)). The work and
    memory of a step grow with pixels x polygons x corners.

    The drawing cannot show every image: setting one (the `init` picture, continuing from a PNG) keeps the
    polygons where they are (on the ring, at the start) and takes their colours from it: the background its
    median colour, each polygon the colour under its centre. `clipig resume` goes on exactly from the saved
    state, and the live editor continues with the drawing's own polygons (unless an edit changes their
    number, corners or colours' options). Post-processing, which edits pixels, is not available."""

    exact = False
    GEOMETRY, COLOUR, OPACITY = 3.0, 9.0, 3.0  # step sizes against pixels' (the optimizer's base rate)
    RADIUS, SPREAD, TURN = 5.0, 10.0, 10.0  # radial: log radius, angles' logits, the turn in radians

    def allocate(self, width, height):
        count, corners = int(self.options["count"]), int(self.options["corners"])
        longer = max(width, height)
        middle = torch.tensor([width / longer / 2, height / longer / 2], device=self.device)
        ring = 2 * math.pi * torch.arange(count, device=self.device) / count - math.pi / 2
        centres = middle + (0.2 if count > 1 else 0.0) * torch.stack([torch.cos(ring), torch.sin(ring)], -1)
        turn = 2 * math.pi * torch.arange(corners, device=self.device) / corners
        shape = 0.15 * torch.stack([torch.cos(turn), torch.sin(turn)], -1)
        self.background = self._zeros(3)
        self.fills = self._zeros(count, 3)
        self.centres = torch.nn.Parameter(centres / self.GEOMETRY)
        if self.options["harmonics"]:  # the log radius's mean, and the cosine and sine of each wave
            first, last = int(self.options["lowest_wave"]), int(self.options["harmonics"])
            waves = torch.arange(first, max(first, last + 1), device=self.device).float()
            at, self.even = turn[:, None] * waves, turn  # the corners' angles, evenly around
            self.waves = torch.cat([torch.ones_like(turn)[:, None], torch.cos(at) / waves, torch.sin(at) / waves], 1)
            self.corners = torch.nn.Parameter(torch.zeros(count, self.waves.shape[1], device=self.device))
            self.turn = torch.nn.Parameter(torch.zeros(count, device=self.device))
        elif self.options["radial"]:  # log radius (of 0.15) and the logits of the angles between corners
            self.corners = torch.nn.Parameter(torch.zeros(count, corners, 2, device=self.device))
            self.turn = torch.nn.Parameter(torch.zeros(count, device=self.device))
        else:
            self.corners = torch.nn.Parameter(shape.repeat(count, 1, 1) / self.GEOMETRY)
        self.opacity = torch.nn.Parameter(torch.full((count,), 2.0 / self.OPACITY, device=self.device))

    ADAPTABLE = ("softness",)  # options a drawing can change and keep its tensors

    def adapted(self, width, height, options) -> bool:
        if any(options[k] != self.options[k] for k in options if k not in self.ADAPTABLE):
            return False
        self.size = torch.tensor([width, height], device=self.size.device)
        self.options = dict(options)
        return True

    def outlines(self) -> torch.Tensor:
        """The corners [count, corners, 2] in units of the longer side, (0, 0) the top left corner."""
        if self.options["harmonics"]:
            radius = 0.15 * torch.exp(self.corners @ self.waves.T * self.RADIUS)
            angle = self.even + (self.turn * self.TURN)[:, None]
        elif self.options["radial"]:
            radius = 0.15 * torch.exp(self.corners[..., 0] * self.RADIUS)
            k = self.corners.shape[1]  # each step between corners at most 0.45 of a turn, the centre stays in
            even = 0.55 * k / (k - 1)
            steps = even / k + (1 - even) * torch.softmax(self.corners[..., 1] * self.SPREAD, -1)
            angle = 2 * math.pi * (steps.cumsum(-1) - steps[:, :1]) + (self.turn * self.TURN)[:, None]
        else:
            return (self.centres[:, None, :] + self.corners) * self.GEOMETRY
        offsets = radius[..., None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        return self.centres[:, None, :] * self.GEOMETRY + offsets

    def signal(self):
        width, height = self.resolution
        coverage = polygon_coverage(self.outlines(), width, height, float(self.options["softness"]))
        coverage = coverage * torch.sigmoid(self.opacity * self.OPACITY)[:, None, None]
        image = (self.background * self.COLOUR)[:, None, None].expand(3, height, width)
        for cover, fill in zip(coverage, self.fills * self.COLOUR):
            image = image + cover * (fill[:, None, None] - image)
        return image

    def set_signal(self, signal):
        width, height = self.resolution
        self.background.copy_(signal.flatten(1).median(1).values / self.COLOUR)
        at = (self.centres * self.GEOMETRY * max(width, height)).floor().long()
        x, y = at[:, 0].clamp(0, width - 1), at[:, 1].clamp(0, height - 1)
        self.fills.copy_(signal[:, y, x].T / self.COLOUR)


def polygon_coverage(outlines: torch.Tensor, width: int, height: int, softness: float) -> torch.Tensor:
    """How much of each pixel each polygon covers, [count, H, W] in (0, 1), from its corners [count, k, 2]
    (units of the longer side): the signed distance of the pixel's centre to the outline (positive inside,
    by the even-odd rule), through a sigmoid over `softness` pixels. Which edge is nearest and what is inside
    are found without the gradient; only the distance to the nearest edge is differentiated (half the work
    and a fraction of the memory of differentiating every edge's distance)."""
    longer = max(width, height)
    xs = ((torch.arange(width, device=outlines.device) + 0.5) / longer).repeat(height)  # [P], row by row
    ys = ((torch.arange(height, device=outlines.device) + 0.5) / longer).repeat_interleave(width)
    ends = outlines.roll(-1, 1)
    edges = (outlines[..., 0], outlines[..., 1], ends[..., 0] - outlines[..., 0], ends[..., 1] - outlines[..., 1])
    with torch.no_grad():
        ax, ay, ex, ey = (e[..., None] for e in edges)  # [n, k, 1]: each edge from (ax, ay) by (ex, ey)
        nearest = _squared_distance(ax, ay, ex, ey, xs, ys).argmin(1)  # [n, P]
        spans = (ay > ys) != (ay + ey > ys)  # a ray to the right crosses the outline an odd number of times
        meets = ax + ex * (ys - ay) / torch.where(ey == 0, torch.ones_like(ey), ey)  # from inside
        inside = (spans & (xs < meets)).sum(1) % 2 == 1
    distance = _squared_distance(*(e.gather(1, nearest) for e in edges), xs, ys).add(1e-12).sqrt()
    return torch.sigmoid(torch.where(inside, distance, -distance) * (longer / softness)).view(-1, height, width)


def _squared_distance(ax, ay, ex, ey, xs, ys) -> torch.Tensor:
    """Squared distance of the points (xs, ys) to the segments from (ax, ay) by (ex, ey) (broadcast)."""
    ox, oy = xs - ax, ys - ay
    along = ((ox * ex + oy * ey) / (ex * ex + ey * ey).clamp_min(1e-12)).clamp(0, 1)
    dx, dy = ox - along * ex, oy - along * ey
    return dx * dx + dy * dy


def pyramid_sizes(width: int, height: int, levels: int, step: int) -> list[tuple[int, int]]:
    """(width, height) of a pyramid's images, the full size first: halving (`step` 0) or `step` pixels less
    along the longer side each; `levels` of them at most (0: down to one pixel)."""
    sizes, longer = [(width, height)], max(width, height)
    while (not levels or len(sizes) < levels) and max(sizes[-1]) > 1:
        w, h = sizes[-1]
        if step:
            side = max(1, max(w, h) - step)
            sizes.append((max(1, round(width * side / longer)), max(1, round(height * side / longer))))
        else:
            sizes.append((max(1, round(w / 2)), max(1, round(h / 2))))
    return sizes


def create(choice, variables: dict, image: torch.Tensor, device) -> Parameterization:
    """The parameterization `choice` (the validated `parameterization` entry) showing `image` [3, H, W]."""
    canvas = choice.spec.fn(image.shape[-1], image.shape[-2], device, **choice.arguments(variables))
    canvas.set_image(image)
    return canvas


def rebuilt(canvas: Parameterization, choice, resolution: list[int], interpolation: str,
            variables: dict) -> Parameterization:
    """`canvas` if it has this resolution and these options, else a new one showing its picture resampled
    to `resolution` (the optimizer then needs the new tensors); a drawing keeps its tensors where it can."""
    options = choice.arguments(variables)
    if (canvas.resolution == list(resolution) and canvas.options == options) or canvas.adapted(*resolution, options):
        return canvas
    with torch.no_grad():
        image = resize(canvas.unclamped()[None], *resolution, interpolation)[0]
    return create(choice, variables, image, canvas.device)
