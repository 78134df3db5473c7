"""The shipped mini CLIPs (trained on the mini world by clipig.mini.train): open_clip's `CLIP` at a small
size, with the standard BPE tokenizer.

Only the token-embedding rows of the tokens the world's words use are trained and stored (the checkpoint's
`vocab`, see clipig.mini.train.vocabulary);
on loading, every other token of the 49408 gets the shared row of "a token the world does not know". So the
loaded model is an ordinary open_clip CLIP with the ordinary tokenizer, and the critic treats it like any
other. Checkpoints are stored in float16 next to a JSON file with their sha256 and provenance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .views import OPENAI_MEAN, OPENAI_STD

HERE = Path(__file__).resolve().parent / "checkpoints"
CHECKPOINTS = {name: HERE / f"{name}.pt" for name in ("mini", "mini-2", "mini-3", "mini-referee")}
TOKENIZER = "ViT-B-32"  # open_clip's name for the standard CLIP BPE tokenizer
BPE_VOCAB = 49408
CONTEXT = 20
# the size of the shipped models (the defaults of `python -m clipig.mini.train`; a checkpoint stores its own)
SIZE = {"image_size": 64, "patch_size": 8, "width": 96, "layers": 3, "text_width": 96, "text_layers": 2,
        "embed_dim": 64, "resnet": 16}  # resnet N: open_clip's ModifiedResNet of width N instead of the ViT


def tokenizer():
    import open_clip
    return open_clip.get_tokenizer(TOKENIZER, context_length=CONTEXT)


def build(size: dict, vocab_size: int = BPE_VOCAB) -> torch.nn.Module:
    from open_clip.model import CLIP
    vision = dict(image_size=size["image_size"], patch_size=size["patch_size"], width=size["width"],
                  layers=size["layers"], head_width=32)
    if size.get("resnet"):  # OpenAI's RN50 design, small: learns shapes far faster on a CPU than the ViT
        vision = dict(image_size=size["image_size"], layers=(1, 1, 1, 1), width=size["resnet"], head_width=32)
    model = CLIP(embed_dim=size["embed_dim"], vision_cfg=vision,
                 text_cfg=dict(context_length=CONTEXT, vocab_size=vocab_size, width=size["text_width"],
                               heads=size["text_width"] // 32, layers=size["text_layers"]))
    model.visual.image_mean, model.visual.image_std = OPENAI_MEAN, OPENAI_STD
    return model


class Compact:
    """Maps BPE token ids to rows of a small embedding: the world's tokens to 1.., all others to row 0."""

    def __init__(self, vocab: list[int]):
        self.vocab = torch.tensor(vocab)
        self.table = torch.zeros(BPE_VOCAB, dtype=torch.long)
        self.table[self.vocab] = torch.arange(len(vocab))
        self.table[0] = 0  # padding (BPE id 0) shares the unknown row; the pooling never reads it

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]


def save(model: torch.nn.Module, size: dict, vocab: list[int], path: Path) -> None:
    """Write the float16 checkpoint (the compact token embedding, the vocabulary and the size)."""
    state = {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state.pop("attn_mask", None)  # rebuilt by the model
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"size": size, "vocab": vocab, "state_dict": state}, path)


def provenance(path: Path, info: dict) -> dict:
    """Write PATH.json: `info` plus the checkpoint's size and sha256; returns it."""
    info = {**info, "file": path.name, "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def expand(checkpoint: dict) -> torch.nn.Module:
    """The full-vocabulary float32 CLIP of a compact checkpoint."""
    size, vocab, state = checkpoint["size"], checkpoint["vocab"], dict(checkpoint["state_dict"])
    rows = state["token_embedding.weight"].float()
    full = rows[0].repeat(BPE_VOCAB, 1)
    full[torch.tensor(vocab)] = rows
    state["token_embedding.weight"] = full
    return _loaded(build(size), state)


def compact(checkpoint: dict) -> torch.nn.Module:
    """The float32 CLIP of a checkpoint with its compact vocabulary, as the training holds it (`--init`)."""
    return _loaded(build(checkpoint["size"], len(checkpoint["vocab"])), checkpoint["state_dict"])


def _loaded(model: torch.nn.Module, state: dict) -> torch.nn.Module:
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    return model


def read(path) -> dict | None:
    """The checkpoint in a file that `python -m clipig.mini.train` wrote, or None for any other file."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip of plain tensors: some other kind of checkpoint
        return None
    return data if isinstance(data, dict) and {"size", "vocab", "state_dict"} <= set(data) else None


class ChecksumError(Exception):
    pass


def load(name: str) -> torch.nn.Module:
    """A shipped checkpoint (a name of CHECKPOINTS) as an open_clip CLIP; its sha256 is checked first."""
    path = CHECKPOINTS[name]
    info = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != info["sha256"]:
        raise ChecksumError(f"{path} is damaged: its sha256 is {digest}, {path.with_suffix('.json').name} "
                            f"says {info['sha256']}. Reinstall clipig (or `git checkout {path.name}`).")
    import io
    return expand(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
