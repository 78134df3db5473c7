"""Time in a run: `t` of an epoch, `start`/`end` values (an int is an epoch, a float a time `t`, `"23.5%"` a
percentage of the run), and `is_on`, the one answer to "is this on at this epoch" for targets, features,
constraints, transforms and post-processing."""

from __future__ import annotations

from dataclasses import dataclass


def run_time(epoch: int, epochs: int) -> float:
    """`t` of an epoch: 0 at the first epoch, exactly 1 at the last (`epoch / (epochs - 1)`)."""
    return epoch / max(1, epochs - 1)


@dataclass(frozen=True)
class TimePoint:
    value: float
    kind: str  # "epoch" | "fraction"

    def __str__(self) -> str:
        return str(int(self.value)) if self.kind == "epoch" else f"{self.value * 100:g}%"


def parse_time(raw) -> TimePoint:
    """Parse a start/end value; raises ValueError with a message for the user."""
    if isinstance(raw, bool):
        raise ValueError(f"expected an epoch (int), a fraction (float) or a percentage like '23.5%', got {raw!r}")
    if isinstance(raw, int):
        return TimePoint(float(raw), "epoch")
    if isinstance(raw, float):
        return TimePoint(raw, "fraction")
    if isinstance(raw, str):
        text = raw.strip()
        try:
            if text.endswith("%"):
                return TimePoint(float(text[:-1]) / 100.0, "fraction")
            return parse_time(int(text)) if text.lstrip("+-").isdigit() else parse_time(float(text))
        except ValueError:
            pass
    raise ValueError(f"expected an epoch (int), a fraction (float) or a percentage like '23.5%', got {raw!r}")


def is_on(entry, variables: dict) -> bool:
    """Whether a target, feature, constraint, transform or postproc entry is on at `variables["epoch"]` (of
    `variables["epochs"]`): its `active` flag, where it has one, and its `start`/`end` (both inclusive: an
    epoch bound is compared with the epoch, a fraction with `t` of the epoch). `entry` holds the values
    (expressions of the variables, evaluated here) or, for a constraint, whose bounds may read the similarity
    of each view, its evaluated arguments."""
    def value(name):
        v = entry.get(name)
        return v(variables) if callable(v) else v
    active = value("active")
    if active is not None and not active:
        return False
    start, end = value("start"), value("end")
    epoch, t = variables["epoch"], run_time(variables["epoch"], variables["epochs"])
    return start.value <= (epoch if start.kind == "epoch" else t) and (epoch if end.kind == "epoch" else t) <= end.value
