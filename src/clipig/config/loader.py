"""Read YAML files (remembering where each value came from), merge them, apply `--set` overrides."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from .errors import ConfigError
from .schema import Node, OneOf, schema, validate


class LocDict(dict):
    """A dict that remembers the (file, line) of each key."""
    def __init__(self, *args, loc=(None, None)):
        super().__init__(*args)
        self.loc, self.locs = loc, {}


class LocList(list):
    """A list that remembers the (file, line) of each entry."""
    def __init__(self, *args, loc=(None, None)):
        super().__init__(*args)
        self.loc, self.locs = loc, []


def _convert(node: yaml.Node, file: str, constructor: yaml.constructor.SafeConstructor):
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        result = LocDict(loc=(file, line))
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if key in result:
                raise ConfigError(f"parameter {key!r} is given twice", file=file, line=key_node.start_mark.line + 1)
            result[key] = _convert(value_node, file, constructor)
            result.locs[key] = (file, key_node.start_mark.line + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        result = LocList(loc=(file, line))
        for item in node.value:
            result.append(_convert(item, file, constructor))
            result.locs.append((file, item.start_mark.line + 1))
        return result
    return constructor.construct_object(node, deep=True)


def parse_yaml(text: str, file: str = "<config>") -> LocDict:
    """YAML text -> LocDict; invalid YAML raises ConfigError with the line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(filter(None, [e.context, e.problem]))
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=file) from None
    if node is None:
        return LocDict(loc=(file, 1))
    data = _convert(node, file, yaml.constructor.SafeConstructor())
    if not isinstance(data, dict):
        raise ConfigError("an experiment file must be a mapping of parameters (like 'epochs: 100')", file=file,
                          line=1)
    return data


STDIN = "-"  # the file name that reads the experiment from standard input


def read_yaml(path: str | Path) -> LocDict:
    """A YAML file ('-': standard input), or the configuration recorded in a PNG that CLIPig wrote."""
    if str(path) == STDIN:
        return parse_yaml(sys.stdin.read(), "<stdin>")
    path = Path(path)
    if path.suffix.lower() == ".png":
        from .recorded import read
        return parse_yaml(read(path)["config"], str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the file: {e}", file=str(path)) from None
    return parse_yaml(text, str(path))


def merge(base: dict, extra: dict) -> dict:
    """Merge `extra` on top of `base`: mappings merge recursively, lists append, other values replace."""
    for key, value in extra.items():
        old = base.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            old.extend(value)
            if hasattr(old, "locs"):
                old.locs.extend(getattr(value, "locs", [getattr(value, "loc", (None, None))] * len(value)))
        else:
            base[key] = value
        if hasattr(base, "locs") and hasattr(extra, "locs"):
            base.locs[key] = extra.locs.get(key, (None, None))
    return base


_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(-?\d+)\]")


def parse_path(path: str) -> list:
    """`targets[0].batch_size` -> ['targets', 0, 'batch_size']."""
    parts, pos = [], 0
    text = path.strip()
    while pos < len(text):
        if text[pos] == "." and parts:
            pos += 1
        m = _PATH_PART.match(text, pos)
        if not m:
            raise ConfigError(f"cannot read the parameter path {path!r} (expected e.g. targets[0].batch_size)",
                              file="--set")
        parts.append(m.group(1) if m.group(1) else int(m.group(2)))
        pos = m.end()
    if not parts or not isinstance(parts[0], str):
        raise ConfigError(f"cannot read the parameter path {path!r}", file="--set")
    return parts


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `PATH=VALUE` (VALUE is read as YAML) to the merged data."""
    if "=" not in assignment:
        raise ConfigError(f"expected PATH=VALUE, got {assignment!r}", file="--set")
    path, text = assignment.split("=", 1)
    parts = parse_path(path)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ConfigError(f"index [{part}] does not exist (the list has {size} entries)", path.strip(),
                                  file="--set")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{part!r} is not inside a mapping", path.strip(), file="--set")
            if i == 0 and isinstance(node.get(part), str) and isinstance(schema().fields.get(part), OneOf):
                node[part] = LocDict({"type": node[part]}, loc=("--set", None))  # `fft` is `{type: fft}`
            if node.get(part) is None:
                node[part] = [] if isinstance(nxt, int) else LocDict(loc=("--set", None))
            node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ConfigError(f"index [{last}] does not exist", path.strip(), file="--set")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"{last!r} is not inside a mapping", path.strip(), file="--set")
        node[last] = value
        if hasattr(node, "locs"):
            node.locs[last] = ("--set", None)


def load_data(files: list[str | Path] = (), texts: list[str] = (), overrides: list[str] = ()) -> dict:
    """Merged raw data of the files (and texts), overrides applied last."""
    data = LocDict(loc=(str(files[0]) if files else None, 1))
    for f in files:
        merge(data, read_yaml(f))
    for i, text in enumerate(texts):
        merge(data, parse_yaml(text, f"<text {i + 1}>" if len(texts) > 1 else "<config>"))
    for assignment in overrides:
        apply_override(data, assignment)
    return data


def load(files: list[str | Path] = (), texts: list[str] = (), overrides: list[str] = ()) -> Node:
    """Read, merge, override and validate: the one way from YAML to a validated experiment."""
    return validate(load_data(files, texts, overrides))


SHORTHANDS = ("output", "model", "device", "epochs", "resolution", "learnrate", "optimizer", "snapshot_interval",
              "seed", "verbose")  # the command line's shorthands for `--set NAME=VALUE`


def shorthand_overrides(settings: dict) -> list[str]:
    """Overrides of the shorthands in `settings` (None: not given), `video` (video.file) and `quiet`."""
    result = []
    for name in SHORTHANDS:
        value = settings.get(name)
        if value is not None:
            result.append(f"{name}={value!r}" if isinstance(value, (int, float)) else f"{name}={yaml_scalar(value)}")
    if settings.get("video") is not None:
        result.append(f"video.file={yaml_scalar(settings['video'])}")
    if settings.get("quiet"):
        result.append("verbose=0")
    return result


def yaml_scalar(text: str) -> str:
    """A value of the command line as YAML text: strings like `ViT-B/32` or `out/` stay strings; numbers and
    `[a, b]` (a list, e.g. an ensemble: `--model "[ViT-B/32, RN50]"`) stay what YAML reads them as."""
    if text.lstrip("-").replace(".", "", 1).isdigit() or text.strip().startswith("["):
        return text
    return json.dumps(text)
