"""Models by name, as boring to call as open_clip's `create_model`: `open_critic` opens the critic of a run (one
model or an ensemble), `load_critic` builds (or reuses) the frozen `Critic` of one model name on a device. The
names mean what `names.parse` says; downloads and checkpoint formats live in `weights.py`."""

from __future__ import annotations

import contextlib
import difflib
import logging
import re

import torch

from . import weights
from .critic import Critic, Ensemble
from .mini import CHECKPOINTS as MINI_CHECKPOINTS  # trained by clipig.mini.train, shipped
from .names import HUB_PREFIX, ModelName, parse
from .weights import OPENAI_NAMES, ModelError, one_line

_CRITICS: dict[tuple[str, str], Critic] = {}


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


def random_model(name: ModelName):
    """(model, tokenizer architecture) of random weights drawn from the name's seed."""
    import open_clip
    arch = name.arch
    if arch != "tiny" and arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, ["tiny", *open_clip.list_models(), *OPENAI_NAMES], n=5, cutoff=0.5)
        raise ModelError(f"Unknown architecture for random weights: {arch!r}."
                         + (f" Did you mean: {', '.join('random:' + c for c in close)}?" if close else ""))
    with torch.random.fork_rng(devices=[]), _quiet_random_init():
        torch.manual_seed(name.seed)
        if arch == "tiny":
            return _tiny_clip(), "ViT-B-32"
        return open_clip.create_model(arch, pretrained_image=False, pretrained_text=False, device="cpu"), arch


def _unknown_model(name: str) -> ModelError:
    import open_clip
    if name.startswith(HUB_PREFIX):
        return ModelError(f"Cannot read the hub model name {name!r}: expected {HUB_PREFIX}ORG/NAME, e.g. "
                          f"{HUB_PREFIX}chs20/fare2-clip.")
    archs = open_clip.list_models()
    if name in archs:
        tags = [f"{name}/{t}" for t in open_clip.list_pretrained_tags_by_model(name)]
        return ModelError(f"Model {name!r} needs a pretrained tag, e.g. {', '.join(tags[:5]) or 'random:' + name}.")
    names = [*OPENAI_NAMES, *(f"{a}/{t}" for a, t in open_clip.list_pretrained()), "random:tiny", *MINI_CHECKPOINTS]
    by_lower = {n.lower(): n for n in names}
    close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), by_lower, n=5, cutoff=0.5)]
    hint = f"\nDid you mean: {', '.join(close)}?" if close else ""
    return ModelError(f"Unknown CLIP model {name!r}.{hint}\n"
                      "Use an OpenAI name (ViT-B/32), an open_clip ARCH/TAG, hf-hub:ORG/NAME, a checkpoint path, "
                      "random:ARCH or mini; "
                      "`clipig models` lists them.")


def _build_mini(name: str):
    from . import mini as mini
    try:
        return mini.load(name), mini.TOKENIZER
    except (OSError, mini.ChecksumError) as e:
        raise ModelError(f"Could not load the shipped model {name!r}: {one_line(e, 400)}") from None


def _build_model(name: str):
    """(model on cpu, tokenizer architecture) for any supported model name."""
    parsed = parse(name)
    if parsed.kind == "shipped":
        return _build_mini(name)
    if parsed.kind == "random":
        return random_model(parsed)
    if parsed.kind in ("openai", "pretrained"):
        return weights.build_pretrained(name, parsed.arch, parsed.tag)
    if parsed.kind == "hub":
        return weights.build_from_hub(name, parsed.path)
    if parsed.kind == "file":
        return weights.build_from_file(parsed.path, parsed.arch)
    raise _unknown_model(name)


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
    """Load (or reuse) the critic of one model name on a device."""
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
            raise ModelError(f"Could not load CLIP model {name!r}: {one_line(e, 400)}") from e
        _CRITICS[key] = Critic(name, model, tokenizer, device)
    return _CRITICS[key]


def clear_cache() -> None:
    """Forget all loaded critics (and with them their feature caches)."""
    _CRITICS.clear()


def model_weights(models) -> dict[str, float]:
    """{name: weight} of a `model` value: a name, or a list of names and `{name, weight}` items. A model named
    twice is one model with the sum of the weights."""
    result: dict[str, float] = {}
    for item in [models] if isinstance(models, str) else models:
        name, weight = (item, 1.0) if isinstance(item, str) else (item["name"], float(item.get("weight", 1.0)))
        result[name.strip()] = result.get(name.strip(), 0.0) + weight
    return result


def open_critic(models, device: str | torch.device = "cpu") -> Ensemble:
    """The critic of `models` (a name, or a list of names and `{name, weight}` items) on a device."""
    chosen = model_weights(models)
    device = resolve_device(device)
    return Ensemble([load_critic(name, device) for name in chosen], list(chosen.values()))




# ---------------------------------------------------------------- listing

def known_models() -> list[dict]:
    """All model names `load_critic` knows, with their source and whether the weights are cached."""
    import open_clip
    rows = [{"name": n, "source": "openai", "cached": weights.is_cached(a, "openai")} for n, a in OPENAI_NAMES.items()]
    rows += [{"name": f"{a}/{t}", "source": "open_clip", "cached": weights.is_cached(a, t)}
             for a, t in open_clip.list_pretrained() if t != "openai"]
    rows += [{"name": n, "source": "random", "cached": True} for n in ("random:tiny", "random:ViT-B/32")]
    rows += [{"name": n, "source": "shipped", "cached": True} for n in MINI_CHECKPOINTS]
    return rows
