"""The image layer: what is trained (parameterizations), how views of it are made (transforms, geometry),
losses on its pixels (constraints) and the start picture (start). Importing the package runs the declarations
of every transform, constraint and parameterization: the one import point that fills the registries of
config/registry.py, which the config layer only reads."""

from . import constraints, parameterizations, transforms  # noqa: F401
