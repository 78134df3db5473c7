"""The arithmetic of the CLIP pass: `precision` (auto, fp32, bf16, fp16) resolved for a device, and the
autocast context that runs it.

`auto` is bf16 on CPUs that multiply bfloat16 natively (AMX or AVX-512 BF16, told by the CPU's flags), fp32 on
other CPUs (there bf16 is emulated and slower than fp32), and fp16 on CUDA. See docs/benchmarks.md (speed and
the quality of the pictures) and docs/differences.md."""

from __future__ import annotations

import contextlib
import functools

import torch

NATIVE_BF16 = ("amx_bf16", "avx512_bf16")  # CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty without such a file, e.g. on macOS)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BF16)


def resolve(precision: str, device: torch.device) -> str:
    """fp32, bf16 or fp16: what `precision` means on `device` (`auto` as above). fp16 on the CPU is refused
    by the caller."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if device.type == "cpu" and native_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """A function that returns the context of a resolved precision: torch's autocast, or nothing for fp32."""
    dtype = DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)
