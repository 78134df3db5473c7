"""Where CLIP weights come from: the user cache, downloads (URLs, the Hugging Face hub) and checkpoint formats
(OpenAI JIT archives and state dicts, open_clip files). Every function here returns a model on the CPU."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
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

from ..config.errors import UserError

OPENAI_NAMES = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}
HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_CONFIG = "open_clip_config.json"  # what makes a hub repository an open_clip model
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
MODEL_TIMEOUT = 60  # seconds without data before a weight download is aborted


class ModelError(UserError, Exception):
    """User-facing error; str() is the complete message."""


def cache_dir() -> pathlib.Path:
    """$CLIPIG_CACHE or ~/.cache/clipig, created on demand."""
    path = pathlib.Path(os.environ.get("CLIPIG_CACHE") or pathlib.Path.home() / ".cache" / "clipig").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    failed = "; ".join(one_line(e) for e in errors) or "no download source known"
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


def _hub_files(name: str, repo: str) -> pathlib.Path:
    """The folder (a snapshot of the hub cache in cache_dir()/hf) that holds an open_clip hub model's config
    and weights, downloaded once; offline, a clear message."""
    errors: list[BaseException] = []
    for local_only in (True, False):
        if not local_only and not _hub_reachable(errors):
            break
        try:
            config = _hf_download(f"{repo}/{HUB_CONFIG}", local_only)
            weights = _hf_download(f"{repo}/", local_only)
        except Exception as e:  # noqa: BLE001 - not cached, offline, no such repository: said below
            if not local_only:
                errors.append(e)
            continue
        if pathlib.Path(config).parent != pathlib.Path(weights).parent:  # an update between the two downloads
            raise ModelError(f"The hub's files of {name!r} are of two revisions; please retry.")
        return pathlib.Path(config).parent
    raise _download_error(name, errors)


def build_from_hub(name: str, repo: str):
    """(model, tokenizer name) of an open_clip model on the Hugging Face hub (`hf-hub:ORG/NAME`): its config
    and weights come from the cache, or are downloaded into it once."""
    import open_clip
    folder = f"local-dir:{_hub_files(name, repo)}"
    return open_clip.create_model(folder, device="cpu"), folder


# ---------------------------------------------------------------- checkpoint formats

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


def build_pretrained(name: str, arch: str, tag: str):
    """(model, tokenizer architecture) of an open_clip ARCH/TAG (or OpenAI) pretrained model, fetched if needed."""
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


def build_from_file(source: str, arch: str | None):
    """(model, tokenizer architecture) of a local checkpoint; `arch` None: told by the file or its name."""
    import open_clip
    path = pathlib.Path(source).expanduser()
    if not path.is_file():
        raise ModelError(f"Checkpoint file not found: {path}")
    openai_files = {OPENAI_NAMES[n].replace("-336", "-336px") for n in OPENAI_NAMES}
    if _is_torchscript(path) or arch in OPENAI_NAMES or (arch is None and path.stem in openai_files):
        return _load_openai(path), "ViT-B-32"
    arch = arch or _arch_from_filename(path)
    if arch is None:
        from . import mini as mini
        checkpoint = mini.read(path)
        if checkpoint is not None:  # a mini CLIP of one's own (python -m clipig.mini.train -o PATH)
            return mini.expand(checkpoint), mini.TOKENIZER
        raise ModelError(f"Cannot tell the architecture of {path} from its file name.\n"
                         f"Name it explicitly as ARCH:/path, e.g. 'ViT-B-32:{path}' (see `clipig models`).")
    return open_clip.create_model(arch, pretrained=str(path), device="cpu"), arch


# ---------------------------------------------------------------- listing

def is_cached(arch: str, tag: str) -> bool:
    from huggingface_hub import try_to_load_from_cache
    cfg = _pretrained_cfg(arch, tag)
    if cfg.get("url") and (cache_dir() / "models" / cfg["url"].rsplit("/", 1)[-1]).is_file():
        return True
    if not cfg.get("hf_hub"):
        return False
    repo_id, filenames = _split_hub(cfg["hf_hub"])
    return any(isinstance(try_to_load_from_cache(repo_id, f, cache_dir=cache_dir() / "hf"), str) for f in filenames)
