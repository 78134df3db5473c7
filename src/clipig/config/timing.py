"""`start`/`end` values: an int is an epoch, a float a fraction of the run, `"23.5%"` a percentage; and
`is_on`, the one answer to "is this on at this epoch" for targets, features, constraints, transforms and
post-processing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TimePoint:
    value: float
    kind: str  # "epoch" | "fraction"

    def epoch(self, epochs: int) -> float:
        return self.value if self.kind == "epoch" else self.value * epochs

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


def is_active(start: TimePoint, end: TimePoint, epoch: int, epochs: int) -> bool:
    """Active from `start` (inclusive) until `end` (exclusive); `end: 1.0` lasts to the final epoch."""
    return start.epoch(epochs) <= epoch < end.epoch(epochs) or (end.kind == "fraction" and end.value >= 1.0
                                                                  and start.epoch(epochs) <= epoch)


def is_on(node, variables: dict) -> bool:
    """Whether a target, feature, constraint, transform or postproc entry is on at `variables["epoch"]` (of
    `variables["epochs"]`): its `active` flag, where it has one, and its `start`/`end`, which may be
    expressions of the variables."""
    active = node.get("active")
    if active is not None and not active(variables):
        return False
    return is_active(node["start"](variables), node["end"](variables), variables["epoch"], variables["epochs"])
