"""Registries of named plugins (transforms, constraints, parameterizations): each a function (or class) plus
its parameter declarations.

The parameter declarations are the single source for validation, the generated reference and the CLI.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from .values import Param


@dataclass
class PluginSpec:
    name: str
    fn: Callable
    params: dict[str, Param]  # in declaration order; the first one takes the shorthand `name: value`
    doc: str
    direct: bool = False  # True: the entry's value is the single parameter itself (`noise: 0.1`)
    random: bool = False  # draws random numbers per view
    keeps_resolution: bool = True  # usable as post-processing
    flags: dict = field(default_factory=dict)

    @property
    def first(self) -> str:
        return next(iter(self.params))


class Registry(dict):
    """name -> PluginSpec."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def add(self, name: str, params: dict[str, Param] | Param, *, direct_name: str | None = None,
            doc: str | None = None, **flags) -> Callable[[Callable], Callable]:
        """Decorator: register `fn` under `name`. A single Param (not a dict) declares a direct value."""
        def register(fn: Callable) -> Callable:
            direct = isinstance(params, Param)
            declared = {(direct_name or _first_arg(fn)): params} if direct else dict(params)
            spec = PluginSpec(name=name, fn=fn, params=declared, doc=doc or inspect.getdoc(fn) or "",
                              direct=direct, random=flags.pop("random", False),
                              keeps_resolution=flags.pop("keeps_resolution", True), flags=flags)
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self[name] = spec
            return fn
        return register


def _first_arg(fn: Callable) -> str:
    names = [p for p in inspect.signature(fn).parameters if p not in ("images", "views", "rng")]
    return names[0]


TRANSFORMS = Registry("transform")
CONSTRAINTS = Registry("constraint")
PARAMETERIZATIONS = Registry("parameterization")
