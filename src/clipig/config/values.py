"""Typed parameter declarations (`Param`) and validated values (`Value`).

A `Param` declares a type, default, list length, expression variable groups and a doc string.
`Param.parse(raw, path)` turns what the user wrote into a `Value`: a constant, or expressions that are
evaluated each time the value is needed (`value(variables)`), cast to the declared type.
"""

from __future__ import annotations

import io
import keyword
import math
import random
import tokenize
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError
from .expressions import VARIABLE_GROUPS, Expression, ExpressionError, compile_expression
from .timing import parse_time

TYPE_NAMES = {"int": "int", "float": "float", "str": "str", "bool": "bool", "time": "int, float",
              "number": "int, float", "list": "list", "models": "str, or a list of str and {name, weight}",
              "names": "str or list of str"}


@dataclass
class Param:
    """One parameter of the registry."""

    type: str  # int | float | str | bool | time | number | list | models | names
    default: Any = None  # None: no default
    length: int | tuple[int, ...] | None = None  # list lengths allowed (first is the broadcast length)
    groups: tuple[str, ...] = ()  # expression variable groups
    doc: str = ""
    choices: tuple[str, ...] | None = None  # for str; aliases map to canonical names via `aliases`
    aliases: dict[str, str] = field(default_factory=dict)
    check: Callable[[Any], str | None] | None = None  # returns an error message for a bad value
    required: bool = False  # must be given (for parameters without default inside transforms/constraints)

    @property
    def lengths(self) -> tuple[int, ...]:
        return () if self.length is None else (self.length,) if isinstance(self.length, int) else self.length

    def type_text(self) -> str:
        base = TYPE_NAMES[self.type]
        if not self.lengths:
            return base
        return f"list of length {' or '.join(map(str, self.lengths))} of {base}"

    def variables(self) -> set[str]:
        return {name for group in self.groups for name in VARIABLE_GROUPS[group]}

    def parse(self, raw: Any, path: str) -> "Value":
        """Validate `raw` (what the YAML holds) and return a Value; raises ConfigError."""
        if self.type in ("models", "names"):
            return Value(self, raw, path, [raw], constant=model_list(raw, path, self.type == "models"))
        if self.type == "list":
            if not isinstance(raw, list):
                raise ConfigError(f"expected a list, got {raw!r}", path)
            return Value(self, raw, path, [raw], constant=raw)
        if self.type == "bool":
            if isinstance(raw, str) and raw.strip().lower() in BOOL_WORDS:
                return Value(self, raw, path, [raw], constant=BOOL_WORDS[raw.strip().lower()])
            if isinstance(raw, str) and not raw.strip().isidentifier():
                return self._expression(raw, path, f"expected true, false or an expression, got {raw!r}")
            if not isinstance(raw, bool):
                raise ConfigError(f"expected true or false, got {raw!r}", path)
            return Value(self, raw, path, [raw], constant=raw)
        if self.type == "time":
            try:
                return Value(self, raw, path, [raw], constant=parse_time(raw))
            except ValueError as e:
                if isinstance(raw, str) and not raw.strip().endswith("%"):
                    return self._expression(raw, path, str(e))
                raise ConfigError(str(e), path) from None
        if self.type == "str":
            return self._parse_str(raw, path)
        items = self._items(raw, path)
        if self.lengths:
            if len(items) == 1:
                items = items * self.lengths[0]
            if len(items) not in self.lengths:
                raise ConfigError(f"expected {' or '.join(map(str, self.lengths))} values "
                                  f"(or a single one for all), got {len(items)}: {raw!r}", path)
        value = Value(self, raw, path, items)
        if all(not isinstance(item, Expression) for item in items):
            value.constant = value.evaluate({})
        return value

    def _expression(self, text: str, path: str, expected: str) -> "Value":
        """A one-item value written as an expression (bool and time parameters); constant when it reads no
        variables."""
        try:
            expr = compile_expression(text)
        except ExpressionError as e:
            raise ConfigError(f"{expected} ({e})", path) from None
        self._check_names(expr, path)
        value = Value(self, text, path, [expr])
        if not expr.names and not expr.random:
            value.constant = value.evaluate({})
        return value

    def _parse_str(self, raw: Any, path: str) -> "Value":
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise ConfigError(f"expected a text, got {raw!r}", path)
        text = str(raw)
        if self.choices is None:
            return Value(self, raw, path, [text], constant=text)
        name = self.canonical(text)
        if name is not None:
            return Value(self, raw, path, [name], constant=name)
        if self.groups and not text.strip().isidentifier():  # a bare name is a mistyped choice, not a formula
            try:
                expr = compile_expression(text)
            except ExpressionError:
                expr = None
            if expr is not None and expr.names:
                self._check_names(expr, path)
                return Value(self, raw, path, [expr])
        raise ConfigError(f"unknown value {text!r}; allowed: {', '.join(self.choices)}"
                          + _suggest(text, list(self.choices) + list(self.aliases)), path)

    def canonical(self, text: str) -> str | None:
        key = text.strip().lower()
        key = self.aliases.get(key, key)
        return key if key in self.choices else None

    def _items(self, raw: Any, path: str) -> list:
        if isinstance(raw, bool) or raw is None or isinstance(raw, dict):
            raise ConfigError(f"expected {self.type_text()}, got {raw!r}", path)
        if isinstance(raw, (int, float)):
            return [self._item(raw, path)]
        if isinstance(raw, list):
            if not self.lengths:
                raise ConfigError(f"expected a single {self.type}, got a list {raw!r}", path)
            parts = []
            for item in raw:
                if isinstance(item, (list, dict)) or isinstance(item, bool) or item is None:
                    raise ConfigError(f"expected numbers or expressions in the list, got {item!r}", path)
                parts.extend(split_items(item) if isinstance(item, str) else [item])
            return [self._item(p, path) for p in parts]
        parts = split_items(str(raw))
        if not parts:
            raise ConfigError(f"expected {self.type_text()}, got an empty text", path)
        if not self.lengths and len(parts) > 1:
            raise ConfigError(f"expected a single {self.type}, got {len(parts)} values: {raw!r}", path)
        return [self._item(p, path) for p in parts]

    def _item(self, item: Any, path: str):
        number = item if not isinstance(item, str) else _number(item)
        if number is not None:
            if self.type == "int" and isinstance(number, float) and not number.is_integer():
                raise ConfigError(f"expected whole numbers, got {number!r}", path)
            return number
        try:
            expr = compile_expression(item)
        except ExpressionError as e:
            raise ConfigError(f"invalid expression {item!r}: {e}", path) from None
        self._check_names(expr, path)
        if not expr.names and not expr.random:
            try:
                return expr.evaluate({})  # constant: fold it now, so a mistake shows at load time
            except ExpressionError as e:
                raise ConfigError(f"expression {item!r} failed: {e}", path) from None
        return expr

    def _check_names(self, expr: Expression, path: str) -> None:
        allowed = self.variables()
        unknown = sorted(set(expr.names) - allowed)
        if unknown:
            groups = ", ".join(g.replace("_", " ") for g in self.groups) or "none"
            names = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"expression {expr.source!r} uses unknown variable {', '.join(map(repr, unknown))}; "
                              f"variable groups allowed here: {groups} ({names})"
                              + _suggest(unknown[0], sorted(allowed)), path)

    def cast(self, value: Any, path: str) -> Any:
        try:
            if self.type == "int":
                return _to_int(value)
            if self.type == "float":
                return float(value)
            if self.type == "number":
                return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value)
            if self.type == "bool":
                if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
                    return bool(value)
                raise ValueError("expected true or false")
            if self.type == "time":
                return parse_time(value)
            if self.type == "str":
                name = self.canonical(str(value))
                if name is None:
                    raise ValueError(f"unknown value {value!r}; allowed: {', '.join(self.choices)}")
                return name
        except (TypeError, ValueError, OverflowError) as e:
            raise ConfigError(f"cannot use {value!r} as {self.type}: {e}", path) from None
        return value


def model_list(raw: Any, path: str, weighted: bool) -> list:
    """A model name or a non-empty list of them as [name, ...]; `weighted`: items may also be `{name, weight}`,
    and the result is [{"name": ..., "weight": ...}, ...] (weight a positive constant, 1 by default)."""
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ConfigError("expected a model name or a list of them, got an empty list", path)
    positive = Param("float", check=lambda v: None if v > 0 else "a model weight must be positive")
    result = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(raw, list) else path
        name, weight = item, 1.0
        if weighted and isinstance(item, dict):
            unknown = [k for k in item if k not in ("name", "weight")]
            if unknown:
                raise ConfigError(f"unknown key {unknown[0]!r}; a model item has `name` and `weight`"
                                  + suggest(str(unknown[0]), ("name", "weight")), where)
            name = item.get("name")
            if item.get("weight") is not None:
                value = positive.parse(item["weight"], f"{where}.weight")
                if not value.is_constant:
                    raise ConfigError(f"a model weight must be a constant, got {item['weight']!r}", f"{where}.weight")
                weight = value()
        if not isinstance(name, str) or not name.strip():
            allowed = "a name or {name, weight}" if weighted else "a name"
            raise ConfigError(f"expected a model name ({allowed}), got {name!r}", where)
        result.append({"name": name.strip(), "weight": weight} if weighted else name.strip())
    return result


BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class Value:
    """A validated parameter value; call it with the expression variables to get the typed result."""

    loc: tuple = (None, None)  # (file, line) it came from, set by the schema

    def __init__(self, param: Param, raw: Any, path: str, items: list, constant: Any = None):
        self.param, self.raw, self.path, self.items = param, raw, path, items
        self.constant = constant
        if constant is not None and param.check:
            self._checked(constant, {})

    @property
    def is_constant(self) -> bool:
        return self.constant is not None

    @property
    def names(self) -> set[str]:
        """The variables the expressions of this value read."""
        return {n for item in self.items if isinstance(item, Expression) for n in item.names}

    def __call__(self, variables: dict | None = None, rng: random.Random | None = None) -> Any:
        if self.constant is not None:
            return self.constant
        return self.evaluate(variables or {}, rng)

    def evaluate(self, variables: dict, rng: random.Random | None = None) -> Any:
        try:
            return self._evaluate(variables, rng)
        except ConfigError as e:  # during the run: say where the value came from
            raise e.located(*self.loc) from None

    def _evaluate(self, variables: dict, rng: random.Random | None) -> Any:
        results = []
        for item in self.items:
            if isinstance(item, Expression):
                try:
                    item = item.evaluate(variables, rng)
                except ExpressionError as e:
                    epoch = f" at epoch {variables['epoch']}" if "epoch" in variables else ""
                    raise ConfigError(f"expression {item.source!r} failed{epoch}: {e}", self.path) from None
            if self.param.type in ("int", "float") and isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"expression gave {item}, which is not a finite number", self.path)
            results.append(_in_range(self.param.cast(item, self.path), self.path))
        result = results if self.param.lengths else results[0]
        return self._checked(result, variables)

    def _checked(self, result: Any, variables: dict) -> Any:
        message = self.param.check(result) if self.param.check else None
        if message:
            epoch = f" (at epoch {variables['epoch']})" if "epoch" in variables else ""
            raise ConfigError(f"{message}, got {result!r}{epoch}", self.path)
        return result

    def __repr__(self) -> str:
        return f"Value({self.path}={self.raw!r})"


FLOAT32_MAX = 3.4028234663852886e38
INT64_MAX = 2 ** 63 - 1


def _in_range(value: Any, path: str) -> Any:
    """Numbers that torch can take: ints within 64 bits, floats within the float32 range of the pixels."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        raise ConfigError(f"{value:.3g} is too large (at most {INT64_MAX}, a 64-bit integer)", path)
    if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ConfigError(f"{value:.3g} is too large (at most {FLOAT32_MAX:.3g}: the image arithmetic is float32)",
                          path)
    return value


def split_items(text: str) -> list[str]:
    """Split a list written as `640, 480`, `640 480` or `-.1 .1` into item texts; `0 if t < .4 else 1.` stays one.

    Top-level commas always separate. Without commas, two operands next to each other separate
    (`0 1`), and so does a sign written straight before an operand after a space (`0 -1`, `a -b`);
    `a - b` and `a-b` stay one expression.
    """
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text.strip()).readline)
                  if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT,
                                    tokenize.DEDENT, tokenize.COMMENT)]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [p for p in text.replace(",", " ").split() if p]
    line = text.strip()
    cuts, depth = [], 0
    for i, tok in enumerate(tokens):
        if tok.string in "([{" and tok.type == tokenize.OP:
            depth += 1
        elif tok.string in ")]}" and tok.type == tokenize.OP:
            depth -= 1
        if depth or i == 0:
            continue
        prev = tokens[i - 1]
        if tok.string == ",":
            cuts.append((tok.start[1], tok.end[1]))
        elif _ends_operand(prev) and (_starts_operand(tok) or _is_sign_start(tokens, i)):
            cuts.append((tok.start[1], tok.start[1]))
    parts, pos = [], 0
    for a, b in cuts:
        parts.append(line[pos:a])
        pos = b
    parts.append(line[pos:])
    return [p.strip() for p in parts if p.strip()]


def _ends_operand(tok) -> bool:
    if tok.type == tokenize.NAME:
        return not keyword.iskeyword(tok.string) or tok.string in ("True", "False", "None")
    return tok.type in (tokenize.NUMBER, tokenize.STRING) or tok.string in (")", "]", "}")


def _starts_operand(tok) -> bool:
    if tok.type == tokenize.NAME:
        return not keyword.iskeyword(tok.string) or tok.string in ("True", "False", "None", "not")
    return tok.type in (tokenize.NUMBER, tokenize.STRING) or tok.string in ("(", "[", "{")


def _is_sign_start(tokens, i) -> bool:
    tok = tokens[i]
    if tok.string not in ("-", "+") or i + 1 >= len(tokens):
        return False
    spaced_before = tokens[i - 1].end[1] < tok.start[1]
    glued_after = tokens[i + 1].start[1] == tok.end[1]
    return spaced_before and glued_after and _starts_operand(tokens[i + 1])


def _number(text: str):
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text) if text.lower().lstrip("+-") not in ("inf", "nan", "infinity") else None
    except ValueError:
        return None


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        nearest = round(value)
        return int(nearest) if abs(value - nearest) < 1e-6 else int(value)
    return int(value)


def _suggest(word: str, options: list[str]) -> str:
    import difflib
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def suggest(word: str, options) -> str:
    """` (did you mean 'x'?)` for the closest option, or an empty string."""
    return _suggest(word, list(options))
