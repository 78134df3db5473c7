"""CPU threads for torch: all the cores this process may use by default, or `--threads N`; and the allocator
that keeps freed memory (`allocator`), set up at the same place by every entry point."""

from __future__ import annotations

import argparse
import math
import os

from . import allocator


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def add_option(parser: argparse.ArgumentParser, default: str = "all cores") -> None:
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help=f"CPU threads for torch (default: {default}; fewer to share the machine)")


def cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """Whole CPUs a container's cgroup (v2) quota allows, or None without a quota."""
    try:
        quota, period = open(path).read().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def configure(threads: int | None = None) -> int:
    """Set torch's thread count: `threads`, else torch's default (the cores of this process's affinity)
    capped by a container's CPU quota: more threads than the quota allows wait for each other. Also keeps
    freed memory for reuse (`allocator`)."""
    import torch

    allocator.keep_freed_memory()
    if not threads:
        quota = cpu_quota()
        threads = min(torch.get_num_threads(), quota) if quota else None
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def usable_cores() -> int:
    """Cores this process may run on (affinity and container quota)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return min(cores, cpu_quota() or cores)
