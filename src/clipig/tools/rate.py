"""`clipig rate IMAGE... -t TEXT...`: the CLIP similarity of images to texts and reference images.

Numbers are cosine similarity * 100, the scale of the training statistics. A rated image goes through
CLIP exactly like the engine's own pixels (bilinear resize to the CLIP input size), so rating a PNG that
CLIPig wrote gives the similarity the engine measured for those pixels; reference images (`-i`) are
encoded like image features of a target. With several `--model`s every text and image gets a column per
model and one for their plain mean.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import sys
from pathlib import Path

import torch


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipig rate", description=(
        "Rate images by their CLIP similarity (cosine * 100) to texts and reference images. The original "
        "CLIPig's rate.py options (-tf -if -d -m -s -c) are accepted too."))
    p.add_argument("images", nargs="+", metavar="IMAGE", help="images to rate (paths or URLs); one that cannot "
                   "be read is left out with a warning")
    p.add_argument("-t", "--text", nargs="+", action="extend", default=[], metavar="TEXT", help="texts")
    p.add_argument("-i", "--image", nargs="+", action="extend", default=[], dest="references", metavar="IMAGE",
                   help="reference images")
    p.add_argument("-tf", "--text-file", action="append", default=[], metavar="F", help="file with one text per "
                   "line")
    p.add_argument("-if", "--image-file", action="append", default=[], metavar="F",
                   help="file with one reference image per line (relative paths from the file's folder)")
    p.add_argument("-m", "--model", action="append", metavar="MODEL", help=(
        "CLIP model (default: ViT-B/32, see `clipig models`); repeat it for several models: a column per model "
        "and one for their mean, for each text and image"))
    p.add_argument("-d", "--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("-s", "--sort", type=int, metavar="N", help="sort by column N (1 = first); negative: "
                   "descending")
    p.add_argument("-o", "--output", metavar="FILE.csv", help="also write the table as CSV (full precision)")
    p.add_argument("-c", "--cache", action="store_true",
                   help="keep image features in the user cache, keyed by file content and model")
    return p


def _cache_value(argv: list[str]) -> list[str]:
    """The original's `-c VALUE` form: `-c true`/`-c 0`/... sets the flag instead of naming an image."""
    result, skip = [], False
    for i, token in enumerate(argv):
        following = argv[i + 1].lower() if i + 1 < len(argv) else ""
        if skip:
            skip = False
        elif token in ("-c", "--cache") and following in BOOL_WORDS:
            skip = True
            if BOOL_WORDS[following]:
                result.append(token)
        else:
            result.append(token)
    return result


BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
              "off": False}


def lines(path: str) -> list[str]:
    """Non-empty lines of a text file, without `#` comments."""
    from ..config.errors import ConfigError
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the file: {e.strerror or e}", file=path) from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _cache_file(critic, path: str, how: str) -> Path:
    from ..critic.weights import cache_dir
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", critic.name).strip("_")
    return cache_dir() / "features" / model / f"{digest}.{how}.pt"


@torch.no_grad()
def image_features(critic, paths: list[str], reference: bool = False, cache: bool = False
                   ) -> tuple[torch.Tensor, list[str]]:
    """[N, D] features of the image files that could be read, and their paths: as the engine sees pixels, or
    (`reference`) as a target image feature. An unreadable file is left out with a warning."""
    from ..critic.images import ImageError
    rows, kept = [], []
    for path in paths:
        try:
            rows.append(_features(critic, path, reference, cache))
            kept.append(path)
        except (ImageError, OSError) as e:
            print(f"warning: left out {path}: {e.strerror if isinstance(e, OSError) and e.strerror else e}",
                  file=sys.stderr)
    return (torch.stack(rows) if rows else torch.empty(0, critic.embed_dim, device=critic.device)), kept


def _features(critic, path: str, reference: bool, cache: bool) -> torch.Tensor:
    from ..critic.images import load_image
    from ..files.output import atomic_write
    file = None
    if cache and not path.lower().startswith(("http://", "https://")):
        file = _cache_file(critic, path, "reference" if reference else "pixels")
        if file.is_file():
            return torch.load(file, map_location=critic.device, weights_only=True)
    if reference:
        feature = critic.encode_image_files([path])[0]
    else:
        feature = critic.encode_image(load_image(path)[None].to(critic.device))[0]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, lambda f, v=feature.cpu(): torch.save(v, f))
    return feature


def rate(critic, images: list[str], texts: list[str] = (), references: list[str] = (),
         cache: bool = False) -> tuple[torch.Tensor, list[str], list[str]]:
    """[images, texts + references] similarities (cosine * 100), the images and the column labels (the
    texts and the references that could be read)."""
    compare, references = image_features(critic, list(references), reference=True, cache=cache)
    features, images = image_features(critic, images, cache=cache)
    targets = torch.cat([critic.encode_text(list(texts)), compare])
    return critic.similarity(features, targets).cpu(), images, list(texts) + references


def columns(labels: list[str], models: list[str]) -> list[str]:
    """Column names: the labels, or with several models `label [model]` for each model and `label [mean]`."""
    if len(models) == 1:
        return list(labels)
    return [f"{label} [{name}]" for label in labels for name in [*models, "mean"]]


def rate_models(critics: list, images: list[str], texts: list[str], references: list[str],
                cache: bool = False) -> tuple[torch.Tensor, list[str], list[str]]:
    """[images, columns] similarities, the images that could be read and the column names (see `columns`):
    each model's, then their mean, per text and image."""
    results = [rate(c, images, texts, references, cache) for c in critics]
    values = torch.stack([r[0] for r in results], dim=-1)  # [I, L, M]
    _, images, labels = results[0]
    if len(critics) > 1:
        values = torch.cat([values, values.mean(-1, keepdim=True)], dim=-1).flatten(1)
    else:
        values = values[..., 0]
    return values, images, columns(labels, [c.name for c in critics])


def table(images: list[str], labels: list[str], values: list[list[float]]) -> str:
    legend = [f"{i + 1:>3}: {label}" for i, label in enumerate(labels)]
    width = max(len("image"), *(len(n) for n in images))
    head = f"{'image':<{width}}" + "".join(f"{i + 1:>8}" for i in range(len(labels)))
    rows = [f"{name:<{width}}" + "".join(f"{v:8.2f}" for v in row) for name, row in zip(images, values)]
    return "\n".join([*legend, "", head, *rows])


def main(argv: list[str]) -> int:
    args = parser().parse_args(_cache_value(argv))
    from ..config.errors import ConfigError
    from ..critic.models import load_critic
    models = list(dict.fromkeys(args.model or ["ViT-B/32"]))
    texts = args.text + [t for f in args.text_file for t in lines(f)]
    references = args.references + [str(Path(f).parent / r) if not Path(r).is_absolute() and "://" not in r
                                     else r for f in args.image_file for r in lines(f)]
    if not texts and not references:
        raise ConfigError("nothing to rate against: give texts (-t, --text-file) or images (-i, --image-file)")
    critics = [load_critic(m, args.device) for m in models]
    values, images, labels = rate_models(critics, args.images, texts, references, cache=args.cache)
    if not images or not labels:
        raise ConfigError("none of the images could be read" if not images else
                          "nothing to rate against: none of the reference images could be read")
    if args.sort is not None and not 1 <= abs(args.sort) <= len(labels):
        raise ConfigError(f"--sort {args.sort}: there are {len(labels)} columns (1 to {len(labels)})")
    rows = list(zip(images, values.tolist()))
    if args.sort:
        rows.sort(key=lambda r: r[1][abs(args.sort) - 1], reverse=args.sort < 0)
    print(table([r[0] for r in rows], labels, [r[1] for r in rows]))
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image", *labels])
            writer.writerows([name, *map(repr, row)] for name, row in rows)
        print(f"saved {args.output}", file=sys.stderr)
    return 0
