"""Image files and URLs as tensors: `load_image` (URLs are downloaded once into the user cache)."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import pathlib

import torch

from .weights import ModelError, cache_dir, download, one_line

IMAGE_TIMEOUT = 30
IMAGE_MAX_BYTES = 50 * 2**20


class ImageError(ModelError, ValueError):
    """An image could not be found, downloaded or decoded."""


def is_url(source: str) -> bool:
    return str(source).lower().startswith(("http://", "https://"))


def source_key(source: str):
    """What identifies an image source for caching: the URL, or a file's path, mtime and size."""
    if is_url(source):
        return source
    with contextlib.suppress(OSError):
        stat = os.stat(source)
        return (os.path.abspath(source), stat.st_mtime_ns, stat.st_size)
    return source


def _fetch_image(url: str) -> pathlib.Path:
    dest = cache_dir() / "img" / hashlib.md5(url.encode()).hexdigest()
    if not dest.is_file():
        try:
            download(url, dest, timeout=IMAGE_TIMEOUT, max_bytes=IMAGE_MAX_BYTES)
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise ImageError(f"Could not download image {url}: {one_line(e)}") from e
    return dest


def load_image(source: str, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Path or URL -> [3,H,W] float in [0,1]; resized to `size` ((w, h) or square int) ignoring aspect."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    path = _fetch_image(source) if is_url(source) else pathlib.Path(source).expanduser()
    try:
        with Image.open(path) as img:
            image = img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"Image not found: {source}") from None
    except (OSError, Image.DecompressionBombError) as e:
        if is_url(source):
            path.unlink(missing_ok=True)  # do not keep e.g. an HTML error page in the cache
        raise ImageError(f"Could not read image {source}: {one_line(e)}") from None
    if size is not None:
        width, height = (size, size) if isinstance(size, int) else size
        image = image.resize((int(width), int(height)), Image.BICUBIC)
    return pil_to_tensor(image).float() / 255.0
