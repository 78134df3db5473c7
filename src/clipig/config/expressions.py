"""Safe evaluation of expressions in config values.

A config value such as ``0.1 * ti`` or ``0 if t < .4 else 1.`` is parsed with
``ast.parse(source, mode="eval")`` and run by a small tree-walking interpreter;
``eval``, ``exec`` and ``compile`` are never used. The language is a tiny
subset of Python expressions:

- literals: int, float, bool, str, None, lists ``[..]``, tuples ``(..)``,
  dicts ``{k: v}``
- operators: unary ``+ - not``, binary ``+ - * / // % **``, comparisons
  (also chained, ``in``, ``is``), ``and``, ``or``, ``a if cond else b``
- subscripts ``x[i]`` and slices ``x[a:b:c]`` of lists, tuples, dicts, strings
- calls of the functions in :data:`FUNCTIONS`: all of :mod:`math` plus
  ``pow abs min max int float round bool len sum clamp mix``, and the
  functions of :mod:`random` (``random uniform randint randrange choice
  gauss triangular ...``, :data:`RANDOM_FUNCTIONS`), which draw from the
  run's seeded generator; by bare name like the original CLIPig
  (``sin(t)``, ``uniform(-1, 1)``) or qualified (``math.sin(t)``,
  ``random.uniform(-1, 1)``: a qualified name is resolved when the
  expression is compiled, it is not attribute access on a module object);
  function variables such as ``ts(a, b)``; and the one method
  ``<dict>.get(key[, default])``
- names: the variables of the current context (:data:`VARIABLE_GROUPS`) and
  the math constants ``pi e tau inf nan`` (:data:`CONSTANTS`, reserved).

Everything else (other attribute access, names starting with ``_``, lambda,
comprehensions, f-strings, keyword or starred arguments, ``:=``, bit
operators) is rejected by :func:`compile_expression`. Cost is bounded: source
length, node count and nesting depth are limited, and huge powers, products,
repetitions and factorials raise :class:`ExpressionError` ("too expensive").

Time: ``t = epoch / (epochs - 1)``, so ``t`` is 0.0 at the first epoch and
exactly 1.0 at the last one (as in the original CLIPig).
"""
from __future__ import annotations

import ast
import contextlib
import contextvars
import difflib
import functools
import math
import operator
import random
import warnings
from typing import Any, Callable, Mapping

from .errors import UserError

MAX_SOURCE_LENGTH = 2000
MAX_NODES = 500
MAX_DEPTH = 100
MAX_INT_BITS = 4096  # results of * and **
MAX_RESULT_BITS = 10000  # results of function calls, e.g. factorial(1000)
MAX_SEQUENCE = 10000  # elements of strings/lists built by + and *
MAX_POW_EXPONENT = 10000
MAX_FACTORIAL = 1000


class ExpressionError(UserError, ValueError):
    """User-facing error; str() is a clear one-line message (no traceback needed)."""


def _short(source: str) -> str:
    return repr(source if len(source) <= 80 else source[:77] + "...")


def _too_expensive(what: str):
    raise ExpressionError(f"too expensive: {what}")


# --- checked operations --------------------------------------------------

_SEQUENCES = (str, list, tuple)


def _mul(a, b):
    if isinstance(a, int) and isinstance(b, int):
        if a.bit_length() + b.bit_length() > MAX_INT_BITS:
            _too_expensive(f"product would exceed {MAX_INT_BITS} bits")
    elif isinstance(a, _SEQUENCES) and isinstance(b, int) or isinstance(b, _SEQUENCES) and isinstance(a, int):
        seq, n = (a, b) if isinstance(a, _SEQUENCES) else (b, a)
        if len(seq) * n > MAX_SEQUENCE:
            _too_expensive(f"repetition would exceed {MAX_SEQUENCE} elements")
        if n > 1 and not isinstance(seq, str) and any(isinstance(x, (list, tuple, dict)) for x in seq):
            # [[0] * 10000] * 10000 would be cheap to build but very expensive to compare or hash
            raise ExpressionError("repeating nested lists, tuples or dicts is not allowed")
    return a * b


def _add(a, b):
    if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES) and len(a) + len(b) > MAX_SEQUENCE:
        _too_expensive(f"concatenation would exceed {MAX_SEQUENCE} elements")
    return a + b


def _mod(a, b):
    if isinstance(a, str):
        raise ExpressionError("string formatting with % is not allowed")
    return a % b


def _pow(base, exponent, mod=None):
    if mod is not None:  # modular power: cost grows with the sizes of exponent and modulus
        if isinstance(exponent, int) and isinstance(mod, int) and (
                max(abs(exponent), abs(mod)).bit_length() > MAX_INT_BITS // 4):
            _too_expensive(f"modular power with more than {MAX_INT_BITS // 4} bits")
        return pow(base, exponent, mod)
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if exponent > MAX_POW_EXPONENT or (
                abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_INT_BITS):
            _too_expensive(f"power would exceed {MAX_INT_BITS} bits")
    result = base ** exponent
    if isinstance(result, complex):
        raise ExpressionError("power gives a complex number (negative base, fractional exponent)")
    return result


def _check_size(value):
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        _too_expensive(f"integer with more than {MAX_RESULT_BITS} bits")
    if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_SEQUENCE:
        _too_expensive(f"more than {MAX_SEQUENCE} elements")
    return value


# --- functions -------------------------------------------------------------

def _factorial(n):
    if n > MAX_FACTORIAL:
        _too_expensive(f"factorial of more than {MAX_FACTORIAL}")
    return math.factorial(n)


def _limit_n(func):
    @functools.wraps(func)
    def wrapper(n, *args):
        if n > MAX_SEQUENCE:
            _too_expensive(f"{func.__name__}() with n > {MAX_SEQUENCE}")
        return func(n, *args)
    return wrapper


def _round(number, ndigits=None):
    if isinstance(ndigits, int) and abs(ndigits) > 1000:
        _too_expensive("round() with more than 1000 digits")
    return round(number, ndigits)


def _prod(iterable):
    return functools.reduce(_mul, iterable, 1)


def _lcm(*integers):
    result = 1
    for i in integers:
        result = _check_size(math.lcm(result, i))
    return result


def _sum(iterable, start=0):
    if not isinstance(start, (int, float)):
        raise ExpressionError("sum() only adds numbers")
    return sum(iterable, start)


def clamp(x, lo, hi):
    return min(max(x, lo), hi)


def mix(a, b, f):
    return a + (b - a) * f


def _math_doc(name: str) -> str:
    for line in (getattr(math, name).__doc__ or "").splitlines():
        if line.strip() and not line.startswith(name + "("):
            return line.strip()
    return f"math.{name}"


_MATH = {n: getattr(math, n) for n in dir(math) if not n.startswith("_")}
_CONSTANTS = {n: v for n, v in _MATH.items() if not callable(v)}
CONSTANTS: dict[str, str] = {n: f"math.{n} = {v!r}" for n, v in _CONSTANTS.items()}

_FUNCTIONS: dict[str, Callable] = {n: v for n, v in _MATH.items() if callable(v)}
_FUNCTIONS.update(
    factorial=_factorial, comb=_limit_n(math.comb), perm=_limit_n(math.perm),
    prod=_prod, lcm=_lcm, pow=_pow, abs=abs, min=min, max=max, int=int,
    float=float, round=_round, bool=bool, len=len, sum=_sum, clamp=clamp, mix=mix,
)
FUNCTIONS: dict[str, str] = {n: _math_doc(n) for n in _FUNCTIONS if n in _MATH and n != "pow"}
FUNCTIONS.update({
    "pow": "pow(x, y[, mod]): x ** y (modulo mod)",
    "abs": "absolute value", "min": "smallest of the arguments or of one sequence",
    "max": "largest of the arguments or of one sequence",
    "int": "convert to integer (truncates)", "float": "convert to float",
    "round": "round(x[, ndigits]): round to nearest", "bool": "convert to True/False",
    "len": "length of a list, tuple, dict or string", "sum": "sum(numbers[, start])",
    "clamp": "clamp(x, lo, hi): x limited to the range [lo, hi]",
    "mix": "mix(a, b, f): linear mix a + (b - a) * f, a at f=0, b at f=1",
})
# the functions of Python's `random` module (those that return a value and leave the generator's seed alone),
# run as methods of the random.Random passed to Expression.evaluate: the run's generator, seeded by `seed`
RANDOM_FUNCTIONS: dict[str, str] = {
    "random": "random(): float in [0, 1)",
    "uniform": "uniform(a, b): float between a and b",
    "randint": "randint(a, b): integer with a <= n <= b",
    "randrange": "randrange([start,] stop[, step]): integer from range(start, stop, step)",
    "choice": "choice(sequence): one element of a list, tuple or string",
    "choices": "choices(population[, weights]): a list with one element, drawn by the weights",
    "sample": "sample(population, k): k different elements",
    "getrandbits": f"getrandbits(k): integer of k random bits (k <= {MAX_RESULT_BITS})",
    "triangular": "triangular(low, high[, mode]): float from the triangular distribution",
    "gauss": "gauss(mean, std): normally distributed float",
    "normalvariate": "normalvariate(mean, std): normally distributed float",
    "lognormvariate": "lognormvariate(mean, std): float whose logarithm is normally distributed",
    "expovariate": "expovariate(lambd): exponentially distributed float with mean 1/lambd",
    "gammavariate": "gammavariate(alpha, beta): gamma distribution",
    "betavariate": "betavariate(alpha, beta): beta distribution, between 0 and 1",
    "paretovariate": "paretovariate(alpha): Pareto distribution",
    "weibullvariate": "weibullvariate(alpha, beta): Weibull distribution",
    "vonmisesvariate": "vonmisesvariate(mu, kappa): angle from the von Mises distribution",
}
_RNG_FUNCTIONS = frozenset(RANDOM_FUNCTIONS)
# qualified names: `math.sin` is `sin`, `random.uniform` is `uniform`
_MODULES = {"math": frozenset(_MATH), "random": _RNG_FUNCTIONS}
_RNG: contextvars.ContextVar = contextvars.ContextVar("clipig_expression_rng", default=random.Random(0))


@contextlib.contextmanager
def drawing_from(rng: random.Random):
    """Expressions evaluated without an explicit generator draw from `rng` inside this block (a run's own
    generator, so that runs are reproducible however many ran before them in the process)."""
    token = _RNG.set(rng)
    try:
        yield
    finally:
        _RNG.reset(token)

# --- variables -------------------------------------------------------------


def _group(*entries) -> dict[str, str]:
    group = {}
    for name, alias, doc in entries:
        group[name] = doc
        if alias:
            group[alias] = f"alias of {name}"
    return group


VARIABLE_GROUPS: dict[str, dict[str, str]] = {
    "time": _group(
        ("epoch", None, "int, the current epoch, counting from 0"),
        ("time", "t", "float, epoch / (epochs - 1): 0.0 at the first epoch, exactly 1.0 at the last"),
        *((f"time{n}", f"t{n}", f"time ** {n}") for n in range(2, 6)),
        ("time_inverse", "ti", "1 - time"),
        *((f"time_inverse{n}", f"ti{n}", f"(1 - time) ** {n}") for n in range(2, 6)),
        ("time_step", "ts", "function ts(a, b): 0 before time a, 1 after time b, linear in between,"
                            " i.e. clamp((t-a)/(b-a), 0, 1); ts(.5, 0) falls from 1 to 0 during"
                            " the first half; a == b gives a step"),
    ),
    "resolution": _group(
        ("resolution", "res", "[width, height] of the image in pixels"),
        ("width", None, "image width in pixels"), ("height", None, "image height in pixels"),
    ),
    "learnrate": _group(
        ("learnrate", "lr", "the learning rate the optimizer uses in this epoch: its base rate (e.g. 0.01"
                            " for adam) * `learnrate` * `learnrate_scale`"),
        ("learnrate_scale", "lrs", "the current value of `learnrate_scale`"),
    ),
    "target_feature": _group(("similarity", "sim", "similarity of the current view to this feature:"
                              " 100 * cosine similarity (-100..100), times the feature's `fair` factor"
                              " and `scale`")),
    "target_constraint": _group(("similarity", "sim", "mean similarity of the current view to all"
                                 " features of the target (each as for a feature's `sim`)")),
}
CALLABLE_VARIABLES = frozenset({"time_step", "ts"})


def time_variables(epoch: int, epochs: int) -> dict:
    """All variables of the "time" group; ``t = epoch / (epochs - 1)``: 0 at the first epoch, 1 at the last."""
    from .timing import run_time
    t = run_time(epoch, epochs)

    def time_step(a, b):
        if a == b:
            return 0. if t < a else 1.
        return clamp((t - a) / (b - a), 0., 1.)

    time_step.__qualname__ = "time_step"  # for error messages

    variables = {"epoch": int(epoch), "time": t, "t": t}
    for n in range(2, 6):
        variables[f"time{n}"] = variables[f"t{n}"] = t ** n
    variables["time_inverse"] = variables["ti"] = 1. - t
    for n in range(2, 6):
        variables[f"time_inverse{n}"] = variables[f"ti{n}"] = (1. - t) ** n
    variables["time_step"] = variables["ts"] = time_step
    return variables


def resolution_variables(width: int, height: int) -> dict:
    return {"resolution": [width, height], "res": [width, height], "width": width, "height": height}


def learnrate_variables(learnrate: float, learnrate_scale: float) -> dict:
    return {"learnrate": learnrate, "lr": learnrate,
            "learnrate_scale": learnrate_scale, "lrs": learnrate_scale}


def similarity_variables(similarity: float) -> dict:
    return {"similarity": similarity, "sim": similarity}


# --- compiling ---------------------------------------------------------------

_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_}
_BINARY = {ast.Add: _add, ast.Sub: operator.sub, ast.Mult: _mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: _mod, ast.Pow: _pow}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Is: operator.is_, ast.IsNot: operator.is_not,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_OPERATOR_SYMBOLS = {ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|",
                     ast.BitXor: "^", ast.MatMult: "@", ast.Invert: "~"}
_COMPREHENSIONS = "comprehensions are not allowed"
_FORBIDDEN = {
    ast.Lambda: "lambda is not allowed", ast.ListComp: _COMPREHENSIONS,
    ast.SetComp: _COMPREHENSIONS, ast.DictComp: _COMPREHENSIONS,
    ast.GeneratorExp: _COMPREHENSIONS, ast.JoinedStr: "f-strings are not allowed",
    ast.Set: "set literals are not allowed", ast.Starred: "starred expressions (*x) are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed", ast.Slice: "only simple slices x[a:b:c] are allowed",
}


def _close(word: str, options) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1, cutoff=.75)
    return f" (did you mean {close[0]}?)" if close else ""


class _Qualified(ast.NodeTransformer):
    """`math.sin` -> `sin`, `random.uniform` -> `uniform`: qualified names of the offered modules become the
    bare names, before validation; any other attribute stays and is refused by `_validate`."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.attr in _MODULES.get(node.value.id, ()):
            return ast.copy_location(ast.Name(id=node.attr, ctx=ast.Load()), node)
        return self.generic_visit(node)


def _validate(node: ast.AST, depth: int, names: set, uses_rng: list) -> None:
    """Raise ExpressionError unless ``node`` only uses the allowed language; collect variable names and the
    random functions called."""
    if depth > MAX_DEPTH:
        raise ExpressionError(f"too deeply nested (more than {MAX_DEPTH} levels)")
    kind = type(node)
    children: list = []
    if kind is ast.Constant:
        if not (node.value is None or isinstance(node.value, (int, float, str))):
            raise ExpressionError(f"{type(node.value).__name__} literals are not allowed")
    elif kind is ast.Name:
        if node.id.startswith("_"):
            raise ExpressionError(f"names starting with _ are not allowed ({node.id!r})")
        if node.id in _FUNCTIONS or node.id in _RNG_FUNCTIONS:
            raise ExpressionError(f"function {node.id!r} must be called, e.g. {node.id}(...)")
        if node.id not in _CONSTANTS:
            names.add(node.id)
    elif kind is ast.Attribute:
        module = node.value.id if isinstance(node.value, ast.Name) else None
        if module in _MODULES:
            raise ExpressionError(f"{module} has no function or constant {node.attr!r}"
                                  + _close(node.attr, _MODULES[module]))
        raise ExpressionError(f"attribute access is not allowed ('.{node.attr}'); "
                              "the only method is <dict>.get(key[, default])")
    elif kind is ast.Call:
        if node.keywords:
            raise ExpressionError("keyword arguments are not allowed")
        func, children = node.func, list(node.args)
        if isinstance(func, ast.Name):
            if func.id.startswith("_"):
                raise ExpressionError(f"names starting with _ are not allowed ({func.id!r})")
            if func.id in CALLABLE_VARIABLES:
                names.add(func.id)
            elif func.id in _RNG_FUNCTIONS:
                uses_rng.append(func.id)
            elif func.id not in _FUNCTIONS:
                known = sorted({*_FUNCTIONS, *_RNG_FUNCTIONS})
                close = difflib.get_close_matches(func.id, known, n=3, cutoff=.75)
                hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(known)}"
                raise ExpressionError(f"unknown function {func.id!r} ({hint})")
        elif isinstance(func, ast.Attribute) and func.attr == "get":
            if not 1 <= len(node.args) <= 2:
                raise ExpressionError(".get() takes a key and an optional default")
            children.append(func.value)
        else:
            _validate(func, depth + 1, names, uses_rng)
            raise ExpressionError("only functions can be called")
    elif kind in (ast.List, ast.Tuple):
        children = node.elts
    elif kind is ast.Dict:
        if None in node.keys:
            raise ExpressionError("dict unpacking (**) is not allowed")
        children = node.keys + node.values
    elif kind in (ast.UnaryOp, ast.BinOp):
        if type(node.op) not in _UNARY and type(node.op) not in _BINARY:
            symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
            raise ExpressionError(f"operator {symbol} is not allowed")
        children = [node.operand] if kind is ast.UnaryOp else [node.left, node.right]
    elif kind is ast.BoolOp:
        children = node.values
    elif kind is ast.Compare:
        children = [node.left, *node.comparators]
    elif kind is ast.IfExp:
        children = [node.test, node.body, node.orelse]
    elif kind is ast.Subscript:
        children = [node.value]
        if isinstance(node.slice, ast.Slice):
            children += [n for n in (node.slice.lower, node.slice.upper, node.slice.step) if n]
        else:
            children.append(node.slice)
    else:
        raise ExpressionError(_FORBIDDEN.get(kind, f"{kind.__name__} is not allowed"))
    for child in children:
        _validate(child, depth + 1, names, uses_rng)


class Expression:
    """A validated expression; evaluate it with :meth:`evaluate`."""

    def __init__(self, source: str, tree: ast.expr, names: frozenset, random: bool = False):
        self.source = source
        self.names: frozenset[str] = names
        self.random = random  # calls a random function: not a constant even without variables
        self._tree = tree

    def __repr__(self):
        return f"Expression({self.source!r})"

    def evaluate(self, variables: Mapping[str, Any], rng: random.Random | None = None) -> Any:
        """Evaluate with the given variables; raises only ExpressionError."""
        try:
            return _Evaluator(variables, _RNG.get() if rng is None else rng).visit(self._tree)
        except ExpressionError as e:
            message = str(e)
        except ZeroDivisionError:
            message = "division by zero"
        except OverflowError as e:
            message = f"numeric overflow ({e})"
        except (RecursionError, MemoryError):
            message = "too expensive"
        except KeyError as e:
            message = f"key {e.args[0]!r} not found" if e.args else "key not found"
        except Exception as e:  # never let a raw Python exception escape
            message = str(e) or type(e).__name__
        message = " ".join(message.splitlines())
        raise ExpressionError(f"{message} in expression {_short(self.source)}")


class _Evaluator:
    def __init__(self, variables: Mapping[str, Any], rng: random.Random):
        self.variables, self.rng = variables, rng

    def visit(self, node):
        return getattr(self, type(node).__name__)(node)

    def Constant(self, node):
        return node.value

    def Name(self, node):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        try:
            return self.variables[node.id]
        except KeyError:
            available = ", ".join(sorted(self.variables)) or "none"
            raise ExpressionError(f"unknown variable {node.id!r} (available: {available})") from None

    def List(self, node):
        return [self.visit(e) for e in node.elts]

    def Tuple(self, node):
        return tuple(self.visit(e) for e in node.elts)

    def Dict(self, node):
        return {self.visit(k): self.visit(v) for k, v in zip(node.keys, node.values)}

    def UnaryOp(self, node):
        return _UNARY[type(node.op)](self.visit(node.operand))

    def BinOp(self, node):
        return _BINARY[type(node.op)](self.visit(node.left), self.visit(node.right))

    def BoolOp(self, node):
        for value_node in node.values:
            value = self.visit(value_node)
            if bool(value) is isinstance(node.op, ast.Or):
                break  # short-circuit: first true value for `or`, first false for `and`
        return value

    def Compare(self, node):
        left = self.visit(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = self.visit(right_node)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def IfExp(self, node):
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def Subscript(self, node):
        value = self.visit(node.value)
        if not isinstance(value, (list, tuple, dict, str)):
            raise ExpressionError(f"cannot index a {type(value).__name__}")
        s = node.slice
        if isinstance(s, ast.Slice):
            key = slice(*(self.visit(n) if n else None for n in (s.lower, s.upper, s.step)))
        else:
            key = self.visit(s)
        return value[key]

    def Call(self, node):
        args = [self.visit(a) for a in node.args]
        func = node.func
        if isinstance(func, ast.Attribute):  # validated: <dict>.get(key[, default])
            receiver = self.visit(func.value)
            if not isinstance(receiver, dict):
                raise ExpressionError(f".get() needs a dict, not a {type(receiver).__name__}")
            return receiver.get(*args)
        if func.id in _RNG_FUNCTIONS:
            if func.id == "getrandbits" and args and isinstance(args[0], int) and args[0] > MAX_RESULT_BITS:
                _too_expensive(f"getrandbits() of more than {MAX_RESULT_BITS} bits")
            return _check_size(getattr(self.rng, func.id)(*args))
        if func.id in _FUNCTIONS:
            return _check_size(_FUNCTIONS[func.id](*args))
        value = self.Name(func)
        if not callable(value):
            raise ExpressionError(f"{func.id!r} is not a function")
        return _check_size(value(*args))


def compile_expression(source: str) -> Expression:
    """Parse and validate ``source``; raises ExpressionError. Results are cached."""
    if not isinstance(source, str):
        raise ExpressionError(f"expression must be a string, not {type(source).__name__}")
    if len(source) > MAX_SOURCE_LENGTH:
        raise ExpressionError(f"expression is too long ({len(source)} > {MAX_SOURCE_LENGTH} "
                              f"characters): {_short(source)}")
    return _compile(source)


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> Expression:
    stripped = source.strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences
            tree = ast.parse(stripped, mode="eval")
    except SyntaxError as e:
        column = f" at column {e.offset}" if e.offset else ""
        raise ExpressionError(f"invalid syntax{column} in expression {_short(stripped)}: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ExpressionError(f"cannot parse expression {_short(stripped)}: "
                              f"{str(e) or type(e).__name__}") from None
    if sum(isinstance(n, ast.expr) for n in ast.walk(tree)) > MAX_NODES:
        raise ExpressionError(f"expression is too complex (more than {MAX_NODES} elements): "
                              f"{_short(stripped)}")
    names: set[str] = set()
    uses_rng: list[str] = []
    body = _Qualified().visit(tree).body
    try:
        _validate(body, 0, names, uses_rng)
    except ExpressionError as e:
        raise ExpressionError(f"{e} in expression {_short(stripped)}") from None
    return Expression(source, body, frozenset(names), bool(uses_rng))
