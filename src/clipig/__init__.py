"""CLIPig: images made by backpropagation, with CLIP as the art critic and YAML experiments as the language."""

__version__ = "0.1.0"
