"""CPU threads for torch: all the cores this process may use by default, or `--threads N`; and the allocator
that keeps freed memory (`allocator`), set up at the same place by every entry point."""

from __future__ import annotations

import argparse
import math
import os

from . import allocator

QUIET = 0.5  # cores that other processes may keep busy for OpenMP's idle threads to spin a moment (below)


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


def choose_wait_policy(environ=os.environ, busy=None) -> str | None:
    """Set OMP_WAIT_POLICY before torch loads (OpenMP reads it once), unless the user set it: PASSIVE (idle
    threads sleep at once) where other processes keep QUIET cores or more busy now, or where that cannot be
    told; else it stays unset, OpenMP's default: idle threads spin a moment before they sleep, which on a quiet
    machine spares the wake-ups between small operations (the first image 1.6x faster; beside a busy process
    spinning is 1.7x slower: docs/benchmarks.md, "The OpenMP wait policy"). The policy in force, or None."""
    if "OMP_WAIT_POLICY" not in environ:
        others = (busy or others_busy)()
        if others is None or others >= QUIET:
            environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return environ.get("OMP_WAIT_POLICY")


def others_busy(interval: float = 0.1) -> float | None:
    """Cores that other processes keep busy now: `OtherLoad` over `interval` seconds while this process waits."""
    import time
    load = OtherLoad()
    time.sleep(interval)
    return load.cores()


class OtherLoad:
    """How many cores other processes kept busy while we ran (from /proc/stat minus our own CPU time); None
    where that file cannot be read."""

    def __init__(self, stat: str = "/proc/stat"):
        self.stat = stat
        self.start = self._read()

    def _read(self):
        import resource
        import time
        try:
            with open(self.stat) as f:
                fields = f.readline().split()[1:]
        except OSError:
            return None
        busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))  # all but idle and iowait
        own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own

    def cores(self) -> float | None:
        end = self._read()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        return max(0.0, ((end[1] - self.start[1]) - (end[2] - self.start[2])) / (end[0] - self.start[0]))
