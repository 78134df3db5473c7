"""The one import point that fills the registries (config/registry.py): importing it runs the declarations
of every transform, constraint and parameterization. The package imports it once (`clipig/__init__.py`);
the config layer only reads the registries and never imports these modules."""

from . import constraints, parameterizations, transforms  # noqa: F401
