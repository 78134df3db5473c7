"""CLIPig: images made by backpropagation, with CLIP as the art critic and YAML experiments as the language."""

import os
import sys

__version__ = "0.1.0"

if "torch" not in sys.modules:  # OpenMP reads this once, when torch loads: idle threads sleep instead of
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning, which a shared machine punishes ~3x

from . import image  # noqa: E402,F401  (fills the registries, after the OpenMP setting above)
