"""The CLIP "critic": loads a frozen CLIP model and turns pixels/texts/images into features.

Model names accepted by `load_critic`:
  * OpenAI names: ``RN50 ... ViT-L/14@336px``
  * open_clip ``ARCH/TAG`` names, e.g. ``ViT-B-32/laion2b_s34b_b79k``
  * checkpoint files: ``/path/ViT-B-32.pt`` (OpenAI JIT/state dict) or ``ARCH:/path/file.pt|.safetensors``
  * ``random:ARCH`` (seeded random weights, no download) and ``random:tiny`` (a very small CLIP for tests)
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import logging
import os
import pathlib
import posixpath
import re
import sys
import tempfile
import urllib.error
import urllib.request
import warnings

import torch
import torch.nn.functional as F

from . import fast_vision

OPENAI_NAMES = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
MODEL_TIMEOUT = 60  # seconds without data before a weight download is aborted
IMAGE_TIMEOUT = 30
IMAGE_MAX_BYTES = 50 * 2**20

_CRITICS: dict[tuple[str, str], "Critic"] = {}


class ModelError(Exception):
    """User-facing error; str() is the complete message."""


class ImageError(ModelError, ValueError):
    """An image could not be found, downloaded or decoded."""


def cache_dir() -> pathlib.Path:
    """$CLIPIG_CACHE or ~/.cache/clipig, created on demand."""
    path = pathlib.Path(os.environ.get("CLIPIG_CACHE") or pathlib.Path.home() / ".cache" / "clipig").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_url(source: str) -> bool:
    return str(source).lower().startswith(("http://", "https://"))


# ---------------------------------------------------------------- downloads

def download(url: str, dest, sha256: str | None = None, timeout: float = MODEL_TIMEOUT,
             max_bytes: int | None = None) -> pathlib.Path:
    """Stream `url` into `dest` atomically (temp file in the same dir + os.replace).

    `sha256` (a full digest or a prefix) is verified while streaming; a mismatch deletes the
    temp file and raises ModelError. Network errors propagate (OSError / HTTPException)."""
    from tqdm import tqdm

    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    digest, size = hashlib.sha256(), 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "clipig"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            total = int((getattr(response, "headers", None) or {}).get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr,
                      disable=None, leave=False) as bar:
                while chunk := response.read(1 << 20):
                    size += len(chunk)
                    if max_bytes and size > max_bytes:
                        raise OSError(f"download is larger than {max_bytes / 2**20:g} MB, aborted")
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if sha256 and not digest.hexdigest().startswith(sha256.lower()):
            raise ModelError(f"Checksum mismatch for {url}\n  expected sha256 {sha256}\n"
                             f"  got      {digest.hexdigest()}\nThe download was discarded; please retry.")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest


def _expected_sha256(url: str) -> str | None:
    """OpenAI URLs contain the full sha256 as a path segment; open_clip release files end in a prefix."""
    parts = url.split("/")
    if len(parts) > 1 and re.fullmatch(r"[0-9a-f]{64}", parts[-2]):
        return parts[-2]
    match = re.search(r"-([0-9a-f]{8,64})\.pth?$", parts[-1]) if "mlfoundations" in url else None
    return match.group(1) if match else None


def _pretrained_cfg(arch: str, tag: str) -> dict:
    import open_clip
    return open_clip.get_pretrained_cfg(arch, tag) or {}


def _split_hub(hub: str) -> tuple[str, tuple[str, ...]]:
    """'org/repo/' -> ('org/repo', default file names); 'org/repo/file' -> ('org/repo', ('file',))."""
    repo_id, filename = posixpath.split(hub)
    return repo_id, (filename,) if filename else HF_FILENAMES


def _hf_download(hub: str, local_only: bool) -> str:
    """Fetch open_clip weights for an `org/repo/[file]` hub entry into cache_dir()/hf."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo_id, filenames = _split_hub(hub)
    for filename in filenames[:-1]:  # prefer .safetensors, if the repo has it
        with contextlib.suppress(EntryNotFoundError):
            return hf_hub_download(repo_id, filename, cache_dir=cache_dir() / "hf", local_files_only=local_only)
    return hf_hub_download(repo_id, filenames[-1], cache_dir=cache_dir() / "hf", local_files_only=local_only)


def _hub_reachable(errors: list[BaseException]) -> bool:
    """Whether trying the hub is worthwhile: a server answered before, or a quick probe gets an answer."""
    if errors:
        return isinstance(errors[-1], urllib.error.HTTPError)  # e.g. a 404 from a retired CDN
    from huggingface_hub.constants import ENDPOINT
    try:
        urllib.request.urlopen(urllib.request.Request(ENDPOINT, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        pass
    except (OSError, http.client.HTTPException) as e:
        errors.append(e)
        return False
    return True


def _download_error(name: str, errors: list[BaseException]) -> ModelError:
    failed = "; ".join(_one_line(e) for e in errors) or "no download source known"
    return ModelError(
        f"Could not download the weights of CLIP model {name!r}.\n"
        f"  error: {failed}\n"
        f"  weights are looked for in {cache_dir() / 'models'} and {cache_dir() / 'hf'} (set $CLIPIG_CACHE to move)\n"
        f"  to use a local checkpoint: 'model: /path/to/ViT-B-32.pt' in the config, or --model /path/to/ViT-B-32.pt\n"
        f"  to run the pipeline without weights: --model random:ViT-B/32")


def _fetch_weights(name: str, cfg: dict) -> tuple[pathlib.Path, bool]:
    """Local file for a pretrained cfg (downloaded if needed), and whether it came from cfg['url']."""
    url, hub = cfg.get("url"), cfg.get("hf_hub")
    dest = cache_dir() / "models" / url.rsplit("/", 1)[-1] if url else None
    if dest is not None and dest.is_file():
        return dest, True
    if hub:
        with contextlib.suppress(Exception):
            return pathlib.Path(_hf_download(hub, local_only=True)), False
    errors: list[BaseException] = []
    if url:
        try:
            return download(url, dest, _expected_sha256(url)), True
        except (OSError, http.client.HTTPException) as e:
            errors.append(e)
    if hub and _hub_reachable(errors):  # also the fallback when e.g. the old OpenAI CDN is gone
        try:
            return pathlib.Path(_hf_download(hub, local_only=False)), False
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    raise _download_error(name, errors)


# ---------------------------------------------------------------- model building

@contextlib.contextmanager
def _quiet_random_init():
    """Hide open_clip's 'No pretrained weights loaded' warning."""
    class _Filter(logging.Filter):
        def filter(self, record):
            return not str(record.msg).startswith("No pretrained weights loaded")
    log_filter = _Filter()
    logging.getLogger().addFilter(log_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(log_filter)


def _tiny_clip() -> torch.nn.Module:
    from open_clip.model import CLIP
    return CLIP(embed_dim=32, quick_gelu=True,
                vision_cfg=dict(image_size=224, layers=2, width=64, patch_size=32, head_width=32),
                text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))


def _build_random(arch: str):
    import open_clip
    arch = OPENAI_NAMES.get(arch, arch)
    if arch != "tiny" and arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, ["tiny", *open_clip.list_models(), *OPENAI_NAMES], n=5, cutoff=0.5)
        raise ModelError(f"Unknown architecture for random weights: {arch!r}."
                         + (f" Did you mean: {', '.join('random:' + c for c in close)}?" if close else ""))
    with torch.random.fork_rng(devices=[]), _quiet_random_init():
        torch.manual_seed(0)
        if arch == "tiny":
            return _tiny_clip(), "ViT-B-32"
        return open_clip.create_model(arch, pretrained_image=False, pretrained_text=False, device="cpu"), arch


def _load_openai(path) -> torch.nn.Module:
    """OpenAI JIT archive or OpenAI-format state dict; the architecture is read from the weights."""
    import open_clip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load deprecation noise
        return open_clip.load_openai_model(str(path), precision="fp32", device="cpu")


def _is_torchscript(path: pathlib.Path) -> bool:
    import zipfile
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") for n in archive.namelist())


def _build_pretrained(name: str, arch: str, tag: str):
    import open_clip
    cfg = _pretrained_cfg(arch, tag)
    path, from_url = _fetch_weights(name, cfg)
    if tag == "openai" and from_url:
        return _load_openai(path), arch
    preprocess = {k: cfg[k] for k in ("mean", "std") if k in cfg}
    model = open_clip.create_model(arch, pretrained=str(path), device="cpu", force_quick_gelu=bool(cfg.get("quick_gelu")),
                                   force_preprocess_cfg=preprocess)
    return model, arch


def _arch_from_filename(path: pathlib.Path) -> str | None:
    import open_clip
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    candidates = [a for a in open_clip.list_models() if re.match(re.escape(a) + r"($|[-_.])", stem, re.I)]
    return max(candidates, key=len) if candidates else None


def _build_from_file(source: str, arch: str | None):
    import open_clip
    path = pathlib.Path(source).expanduser()
    if not path.is_file():
        raise ModelError(f"Checkpoint file not found: {path}")
    openai_files = {OPENAI_NAMES[n].replace("-336", "-336px") for n in OPENAI_NAMES}
    if _is_torchscript(path) or arch in OPENAI_NAMES or (arch is None and path.stem in openai_files):
        return _load_openai(path), "ViT-B-32"
    arch = arch or _arch_from_filename(path)
    if arch is None:
        raise ModelError(f"Cannot tell the architecture of {path} from its file name.\n"
                         f"Name it explicitly as ARCH:/path, e.g. 'ViT-B-32:{path}' (see `clipig models`).")
    return open_clip.create_model(arch, pretrained=str(path), device="cpu"), arch


def _unknown_model(name: str) -> ModelError:
    import open_clip
    archs = open_clip.list_models()
    if name in archs:
        tags = [f"{name}/{t}" for t in open_clip.list_pretrained_tags_by_model(name)]
        return ModelError(f"Model {name!r} needs a pretrained tag, e.g. {', '.join(tags[:5]) or 'random:' + name}.")
    names = [*OPENAI_NAMES, *(f"{a}/{t}" for a, t in open_clip.list_pretrained()), "random:tiny"]
    by_lower = {n.lower(): n for n in names}
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), by_lower, n=5, cutoff=0.5)]
    hint = f"\nDid you mean: {', '.join(close)}?" if close else ""
    return ModelError(f"Unknown CLIP model {name!r}.{hint}\n"
                      "Use an OpenAI name (ViT-B/32), an open_clip ARCH/TAG, a checkpoint path or random:ARCH; "
                      "`clipig models` lists them.")


def _build_model(name: str):
    """(model on cpu, tokenizer architecture) for any supported model name."""
    import open_clip
    if name.startswith("random:"):
        return _build_random(name[len("random:"):])
    if name in OPENAI_NAMES:
        return _build_pretrained(name, OPENAI_NAMES[name], "openai")
    arch, sep, rest = name.partition(":")
    if sep and (arch in OPENAI_NAMES or arch in open_clip.list_models()):
        return _build_from_file(rest, arch)
    if tuple(name.split("/", 1)) in set(open_clip.list_pretrained()):
        return _build_pretrained(name, *name.split("/", 1))
    if (os.path.exists(os.path.expanduser(name)) or name.lower().endswith(CHECKPOINT_SUFFIXES)
            or name.startswith(("/", ".", "~", "\\"))):
        return _build_from_file(name, None)
    raise _unknown_model(name)


# ---------------------------------------------------------------- the critic

class Critic:
    """A frozen CLIP model plus CLIP preprocessing and feature caches."""

    def __init__(self, name: str, model: torch.nn.Module, tokenizer, device: torch.device):
        self.name, self.device, self.tokenizer = name, torch.device(device), tokenizer
        self.model = model.to(self.device).float().eval().requires_grad_(False)
        self.speedups = fast_vision.speed_up(self.model.visual)
        size = model.visual.image_size
        self.input_size = int(size if isinstance(size, int) else size[0])
        cfg = getattr(model.visual, "preprocess_cfg", None) or {}
        mean = cfg.get("mean") or getattr(model.visual, "image_mean", None) or OPENAI_MEAN
        std = cfg.get("std") or getattr(model.visual, "image_std", None) or OPENAI_STD
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._image_cache: dict[object, torch.Tensor] = {}
        self._compiled = None
        self.embed_dim = int(getattr(model.visual, "output_dim", 0) or self.encode_text([""]).shape[1])

    def __repr__(self):
        return f"Critic({self.name!r}, device={self.device}, input_size={self.input_size}, embed_dim={self.embed_dim})"

    def encode_image(self, images: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        """[B,3,H,W] pixels in [0,1] -> raw float32 features [B,D]; differentiable w.r.t. the pixels (other
        sizes are resized first, see `fit`). `compiled`: through `torch.compile` of the image tower (compiled
        once per critic)."""
        images = self.fit(images)
        pixels = (images.to(self.device, torch.float32) - self._mean) / self._std
        if compiled:
            return self._compiled_visual(pixels).float()
        return self.model.encode_image(pixels).float()

    def fit(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] images at the input size: resized (bicubic, antialiased, as torchvision's resize) unless
        they are already."""
        if tuple(images.shape[-2:]) == (self.input_size, self.input_size):
            return images
        return F.interpolate(images, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False,
                             antialias=True)

    def _compiled_visual(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._compiled is None:
            self._compiled = torch.compile(self.model.visual)
        try:
            return self._compiled(pixels)
        except RuntimeError as e:  # torch._dynamo's errors (a missing C compiler, unsupported operators)
            raise ModelError(f"torch.compile failed for {self.name}: {_one_line(e, 300)}\n"
                             "Set `compile: false` (the default) to use the normal path.") from e

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> [N,D] float32 features, cached per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            features = self.model.encode_text(self.tokenizer(missing).to(self.device)).float()
            self._text_cache.update(zip(missing, features))
        return self._stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def encode_image_files(self, sources: list[str]) -> torch.Tensor:
        """Image paths/URLs -> [N,D] features (images squashed to input_size), cached per source."""
        keys = [_source_key(s) for s in sources]
        missing = {k: s for k, s in zip(keys, sources) if k not in self._image_cache}
        if missing:
            batch = torch.stack([load_image(s, self.input_size) for s in missing.values()])
            self._image_cache.update(zip(missing, self.encode_image(batch.to(self.device))))
        return self._stack([self._image_cache[k] for k in keys])

    def similarity(self, image_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity * 100, [B,N]."""
        a = F.normalize(image_features.float(), dim=-1)
        b = F.normalize(target_features.float().to(a.device), dim=-1)
        return 100.0 * a @ b.T

    def _stack(self, rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(rows) if rows else torch.empty(0, self.embed_dim, device=self.device)


def _source_key(source: str):
    if _is_url(source):
        return source
    with contextlib.suppress(OSError):
        stat = os.stat(source)
        return (os.path.abspath(source), stat.st_mtime_ns, stat.st_size)
    return source


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'."""
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise ModelError(f"Unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N.")
    if not torch.cuda.is_available():
        raise ModelError(f"Device {device!r} was requested but CUDA is not available; use --device cpu (or auto).")
    if match.group(1) and int(match.group(1)) >= torch.cuda.device_count():
        raise ModelError(f"Device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s).")
    return torch.device(text)


def load_critic(name: str, device: str | torch.device = "cpu") -> Critic:
    """Load (or reuse) the critic for a model name on a device."""
    import open_clip
    name, device = name.strip(), resolve_device(device)
    key = (name, str(device))
    if key not in _CRITICS:
        try:
            model, tokenizer_arch = _build_model(name)
            tokenizer = open_clip.get_tokenizer(tokenizer_arch, context_length=getattr(model, "context_length", None))
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(f"Could not load CLIP model {name!r}: {_one_line(e, 400)}") from e
        _CRITICS[key] = Critic(name, model, tokenizer, device)
    return _CRITICS[key]


def clear_cache() -> None:
    """Forget all loaded critics (and with them their feature caches)."""
    _CRITICS.clear()


# ---------------------------------------------------------------- images

def _fetch_image(url: str) -> pathlib.Path:
    dest = cache_dir() / "img" / hashlib.md5(url.encode()).hexdigest()
    if not dest.is_file():
        try:
            download(url, dest, timeout=IMAGE_TIMEOUT, max_bytes=IMAGE_MAX_BYTES)
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise ImageError(f"Could not download image {url}: {_one_line(e)}") from e
    return dest


def load_image(source: str, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Path or URL -> [3,H,W] float in [0,1]; resized to `size` ((w, h) or square int) ignoring aspect."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    path = _fetch_image(source) if _is_url(source) else pathlib.Path(source).expanduser()
    try:
        with Image.open(path) as img:
            image = img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"Image not found: {source}") from None
    except (OSError, Image.DecompressionBombError) as e:
        if _is_url(source):
            path.unlink(missing_ok=True)  # do not keep e.g. an HTML error page in the cache
        raise ImageError(f"Could not read image {source}: {_one_line(e)}") from None
    if size is not None:
        width, height = (size, size) if isinstance(size, int) else size
        image = image.resize((int(width), int(height)), Image.BICUBIC)
    return pil_to_tensor(image).float() / 255.0


# ---------------------------------------------------------------- listing

def _is_cached(arch: str, tag: str) -> bool:
    from huggingface_hub import try_to_load_from_cache
    cfg = _pretrained_cfg(arch, tag)
    if cfg.get("url") and (cache_dir() / "models" / cfg["url"].rsplit("/", 1)[-1]).is_file():
        return True
    if not cfg.get("hf_hub"):
        return False
    repo_id, filenames = _split_hub(cfg["hf_hub"])
    return any(isinstance(try_to_load_from_cache(repo_id, f, cache_dir=cache_dir() / "hf"), str) for f in filenames)


def known_models() -> list[dict]:
    """All model names `load_critic` knows, with their source and whether the weights are cached."""
    import open_clip
    rows = [{"name": n, "source": "openai", "cached": _is_cached(a, "openai")} for n, a in OPENAI_NAMES.items()]
    rows += [{"name": f"{a}/{t}", "source": "open_clip", "cached": _is_cached(a, t)}
             for a, t in open_clip.list_pretrained() if t != "openai"]
    rows += [{"name": n, "source": "random", "cached": True} for n in ("random:tiny", "random:ViT-B/32")]
    return rows
