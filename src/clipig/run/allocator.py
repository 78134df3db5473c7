"""glibc's allocator told to keep freed memory for the next epoch.

On the CPU torch takes its tensors from the C library's `malloc`. Every epoch allocates and frees the same
large buffers (views, activations, gradients); glibc hands blocks of more than 32 MiB back to the system at
once (`mmap`), and a freed top of its heap when more than 128 KiB, so the next epoch touches fresh pages
again and the kernel zeroes each of them on its first touch. Taking every block from the heap and handing
back only a free top of more than 1 GiB keeps those pages for reuse: 5-13% off a bf16 epoch at 224² to 448²
(docs/benchmarks.md, "The allocator"). Elsewhere than glibc on Linux, or where the user has tuned glibc's
allocator through its environment variables, nothing is changed. `release` hands it all back when a render
ends.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 1 << 30  # a free heap top larger than this goes back to the system
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's allocator as the module doc says, once per process; whether it is set."""
    global _kept
    if _kept is None:
        _kept = _mallopt() if sys.platform.startswith("linux") and not user_tuned() else False
    return _kept


def release() -> None:
    """Hand the freed memory back to the system where it was kept: at the end of a render, so that a process
    that lives on (the live editor, a batch of renders) does not hold the peak of the last one."""
    if _kept:
        ctypes.CDLL(None).malloc_trim(0)


def user_tuned(environ=os.environ) -> bool:
    return any(name in environ for name in USER_SETTINGS) or "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")


def _mallopt() -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
