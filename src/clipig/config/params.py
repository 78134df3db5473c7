"""Pieces of parameter declarations shared by the schema and the modules that declare plugins: expression
variable groups, checks, and the `start`/`end` parameters. Nothing here imports a plugin module."""

from __future__ import annotations

from .values import Param

TIME = ("time",)
RES_TIME = ("resolution", "time")
TRANSFORM_VARS = ("learnrate", "resolution", "time")
FEATURE_VARS = ("learnrate", "resolution", "target_feature", "time")
CONSTRAINT_VARS = ("learnrate", "resolution", "target_constraint", "time")

START_DOC = ("- an int number defines the time as epoch frame; a float number defines the time as ratio between "
             "0.0 and 1.0, where 1.0 is the final epoch; a percent (e.g. `23.5%`) defines the time as percentage "
             "of the number of epochs. An expression is evaluated each epoch and its result read the same way "
             "(`1/2` is half of the run, `100*2` epoch 200). Epochs count from 0; a ratio or percentage is "
             "compared with `t` = epoch / (epochs - 1), which is exactly 1.0 at the last epoch. Both ends are "
             "included: `start: 2, end: 3` is on at epochs 2 and 3, `end: 1.0` includes the last epoch.")
LOSS_DOC = ("The loss function used to calculate the difference (or error) between current and desired {what}. "
            "`l1` or `mae`: mean absolute error. `l2` or `mse`: mean squared error, which produces a smaller loss "
            "for small differences (below 1.0) and a larger loss for large differences.")


def at_least(n):
    return lambda v: None if all(x >= n for x in (v if isinstance(v, list) else [v])) else f"must be at least {n}"


def in_range(low: float, high: float):
    return lambda v: (None if all(low <= x <= high for x in (v if isinstance(v, list) else [v]))
                      else f"must be in the range [{low}, {high}]")


def timing(what: str, groups=TIME) -> dict[str, Param]:
    """`start` and `end` of a target, feature, transform, post-processing entry or constraint (whose bounds
    may read the variables of its `groups`); `timing.is_on` reads them."""
    return {"start": Param("time", 0.0, groups=groups, doc=f"Start of {what}; inactive before this time. {START_DOC}"),
            "end": Param("time", 1.0, groups=groups, doc=f"End of {what}; inactive after this time. {START_DOC}")}
