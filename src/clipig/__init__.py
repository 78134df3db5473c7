"""CLIPig: images made by backpropagation, with CLIP as the art critic and YAML experiments as the language.

The Python API (docs/python.md): `render`, `Run`, `rate` and `ConfigError`, loaded when first used, so that
importing a part of clipig (`clipig.config.schema`) does not load the engine."""

import sys

__version__ = "0.1.0"
__all__ = ["render", "Run", "rate", "ConfigError", "__version__"]

if "torch" not in sys.modules:  # OpenMP reads its wait policy once, when torch loads: passive on a busy machine
    from .run.threads import choose_wait_policy
    choose_wait_policy()

from . import image  # noqa: E402,F401  (fills the registries, after the OpenMP setting above)


def __getattr__(name: str):
    if name == "ConfigError":
        from .config.errors import ConfigError
        return ConfigError
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'clipig' has no attribute {name!r}")
