"""Videos of a run (`video: {file, every, fps}`, `--video NAME.mp4`): MP4 (H.264, with the FFmpeg that comes
with PyAV), animated GIF or WebP (Pillow).

Frames are scaled to the final resolution of the run (width and height rounded up to even numbers, which
H.264 needs). MP4 frames are encoded as they come, into a fragmented MP4 that stays playable if the process
is killed; GIF and WebP frames are kept in memory until the end of the run. A resumed run re-encodes the frames
of the video so far and goes on in the same file.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ..config.errors import ConfigError

FORMATS = (".mp4", ".gif", ".webp")


def frame_of(image, size: tuple[int, int]) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [h, w, 3] uint8 of `size` (w, h)."""
    from .output import to_pil
    picture = to_pil(image)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(picture)


class Mp4:
    """H.264 through PyAV, frame by frame."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float):
        import av
        self.container = av.open(str(path), "w", format="mp4",
                                 options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000),
                                                options={"crf": "18", "preset": "medium"})
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"

    def add(self, frame: np.ndarray) -> None:
        import av
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class Animation:
    """Animated GIF or WebP through Pillow, written at the end."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float):
        self.path, self.fps, self.frames = path, fps, []

    def add(self, frame: np.ndarray) -> None:
        self.frames.append(Image.fromarray(frame))

    def close(self) -> None:
        if not self.frames:
            return
        extra = {"lossless": False, "quality": 90} if self.path.suffix.lower() == ".webp" else {"optimize": False}
        first, *rest = self.frames
        with open(self.path, "wb") as f:
            first.save(f, format=self.path.suffix[1:].upper(), save_all=True, append_images=rest, loop=0,
                       duration=max(1, round(1000 / self.fps)), **extra)


def encoder(path: Path, size: tuple[int, int], fps: float):
    return Mp4(path, size, fps) if path.suffix.lower() == ".mp4" else Animation(path, size, fps)


def read_frames(path: Path):
    """The frames of a video this module wrote, as [h, w, 3] uint8 arrays."""
    if path.suffix.lower() == ".mp4":
        import av
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        return
    from PIL import ImageSequence
    with Image.open(path) as image:
        for frame in ImageSequence.Iterator(image):
            yield np.asarray(frame.convert("RGB"))


def video_bytes(frames: list[np.ndarray], fps: float, suffix: str = ".mp4") -> bytes:
    """Encode frames (all of one size) to a video in memory (for the GUI's download of its snapshots)."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"snapshots{suffix}"
        out = encoder(path, (frames[0].shape[1], frames[0].shape[0]), fps)
        for frame in frames:
            out.add(frame)
        out.close()
        return path.read_bytes()


def check_file(value) -> None:
    """The `video.file` Value names a known format or a directory."""
    name = value()
    if not name.endswith(("/", os.sep)) and Path(name).suffix.lower() not in FORMATS:
        raise ConfigError(f"must end with .mp4, .gif or .webp (or '/' for a directory), got {name!r}", "video.file"
                          ).located(*value.loc)


class VideoWriter:
    """Listener: a frame at the start, every `every` epochs and at the end. `image_of()` is the run's image
    path (the video of `video.file: DIR/` is named after it). A resumed run (`load_state_dict`) starts with the
    frames of the video so far: `in_place`, it replaces that video at the end (a run that goes on in its own
    files), else it goes into a new file (a finished run trained longer into a new image)."""

    def __init__(self, config, image_of, in_place: bool = True):
        check_file(config.video.file)
        self.file, self.every, self.fps = config.video.file(), config.video.every(), config.video.fps()
        self.image_of, self.in_place = image_of, in_place
        self.previous: Path | None = None  # the video this run goes on with
        self.target: Path | None = None  # the video's name
        self.path: Path | None = None  # the file being written (beside `target` while it replaces `previous`)
        self.out = None
        self.size = (0, 0)
        self.frames = 0
        self.last_epoch = -1

    def state_dict(self) -> dict:
        return {"path": str(self.target) if self.target else None, "frames": self.frames, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        if state.get("path") and Path(state["path"]).is_file():
            self.previous, self.last_epoch = Path(state["path"]), state["last_epoch"]

    def __call__(self, event) -> None:
        if event.kind == "start":
            self._open(event)
        if self.out is None:
            return
        due = event.kind in ("start", "end") or event.epoch % self.every == 0
        if due and event.epoch != self.last_epoch:
            self.out.add(frame_of(event.image(), self.size))
            self.frames += 1
            self.last_epoch = event.epoch
        if event.kind == "end":
            self._close()

    def _open(self, event) -> None:
        from ..run.engine import epoch_variables
        from .output import reserve
        width, height = event.config.resolution(epoch_variables(max(event.epochs - 1, 0), event.epochs))
        self.size = (width + width % 2, height + height % 2)
        if self.previous is not None and self.in_place:
            self.target = self.previous
            self.path = self.target.with_name(f".{self.target.name}.part{self.target.suffix}")
        else:
            wanted = Path(self.file)
            if self.file.endswith(("/", os.sep)):
                wanted = wanted / (Path(self.image_of() or "clipig").stem + ".mp4")
            self.target = self.path = reserve(wanted)
        self.frames = 0
        self.out = encoder(self.path, self.size, self.fps)
        for frame in read_frames(self.previous) if self.previous is not None else ():
            self.out.add(frame if frame.shape[1::-1] == self.size else
                         np.asarray(Image.fromarray(frame).resize(self.size, Image.Resampling.BICUBIC)))
            self.frames += 1

    def _close(self) -> None:
        self.out.close()
        self.out = None
        if self.path != self.target:
            os.replace(self.path, self.target)
            self.path = self.target
