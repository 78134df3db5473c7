"""Never out of memory: the views of an epoch go through CLIP in passes that fit the free memory.

Most of an epoch's memory is what CLIP keeps for the backward pass, about the same for every view. A pass of
`n` views runs forward without keeping it (`torch.utils.checkpoint`) and forward again, keeping it, during the
backward pass, one pass at a time: the gradients of the passes add up to the gradient of one big pass, and the
loss still sees the features of all views at once. `views_per_pass: 0` (automatic) measures what one view
keeps, per model, view size and precision, and fits the passes into the free memory (CUDA: the device's
free memory; CPU: the available RAM); an out-of-memory error halves the pass and repeats the epoch.
"""

from __future__ import annotations

import gc
import logging
import math
import weakref

import torch
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)
USABLE = 0.7  # share of the free memory a pass may take (the rest: gradients, workspace, other tensors)
_PER_VIEW: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # critic -> {(shape, precision): bytes}


def out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError))
            or "can't allocate memory" in text or "out of memory" in text)


def free_memory(device: torch.device) -> float:
    """Bytes this process could still allocate: CUDA free + torch's cached memory, or the available RAM
    (the smaller of the system's and a container's cgroup limit)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    available = [_meminfo("MemAvailable")]
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            used = int(open("/sys/fs/cgroup/memory.current").read())
            stat = dict(line.split() for line in open("/sys/fs/cgroup/memory.stat"))
            available.append(int(limit) - used + int(stat.get("inactive_file", 0)))
    except (OSError, ValueError):
        pass
    known = [a for a in available if a is not None]
    return float(min(known)) if known else math.inf


def _meminfo(field: str) -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def kept_bytes(encode, views: torch.Tensor) -> int:
    """Bytes of the tensors that `encode(views)` keeps for its backward pass (weights not counted)."""
    seen, total = set(), 0

    def pack(tensor):
        nonlocal total
        storage = tensor.untyped_storage()
        if not isinstance(tensor, torch.nn.Parameter) and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        encode(views)
    return total


def bytes_per_view(critic, shape: tuple, autocast, precision: str, device) -> float:
    """What one more view of `shape` keeps for the backward pass in a critic at a precision (`autocast()`: its
    context): measured with 1 and 2 views, once per critic, shape and precision."""
    cache = _PER_VIEW.setdefault(critic, {})
    if (shape, precision) not in cache:
        def encode(views):
            with autocast():
                return critic.encode_seen(views)
        one, two = (kept_bytes(encode, torch.zeros(n, *shape, device=device, requires_grad=True)) for n in (1, 2))
        cache[shape, precision] = float(max(two - one, 1))
    return cache[shape, precision]


def whole_runs(parts: list[int], size: int) -> list[list[int]]:
    """The passes of runs of `parts` views each, at most `size` views a pass: consecutive whole runs while
    they fit, a run larger than a pass in passes of `size` of its own. Per pass, its runs' view counts."""
    passes, room = [], 0
    for n in parts:
        if n > size:
            passes += [[min(size, n - i)] for i in range(0, n, size)]
            room = 0
        elif n <= room:
            passes[-1].append(n)
            room -= n
        else:
            passes.append([n])
            room = size - n
    return passes


class Passes:
    """How a run splits its views into passes (`views_per_pass`; 0 = automatic), at a precision
    (`autocast()`: its context, `precision`: its name)."""

    def __init__(self, views_per_pass: int, autocast, precision: str):
        self.fixed, self.autocast, self.precision = views_per_pass, autocast, precision
        self.sizes: dict = {}  # the automatic size per critic, decided at its first epoch
        self.size: int | None = None  # the smallest of them (what an out-of-memory error halves)
        self.largest = 0  # the largest pass tried (since the last step down)

    def encode(self, encode, views, critic, parts: list[int] | None = None) -> torch.Tensor:
        """Features of all `views` (a list of batches of one view size, as the critic sees them) of one
        critic, in passes of at most `views_per_pass` views: each pass is checkpointed, so only one pass keeps
        its activations at a time. `parts`: the number of views of each run sharing the pass (runs together):
        a pass then holds whole runs (`encode(views, parts)`), and a run larger than a pass is split as it is
        alone, so that each run's views meet the critic in the passes they meet alone."""
        views = views[0] if len(views) == 1 else torch.cat(views)
        size = self.fixed or self._automatic(views, critic)
        if size >= len(views) or not views.requires_grad:
            self.largest = max(self.largest, len(views))
            return encode(views, parts) if parts else encode(views)
        self.largest = max(self.largest, size)
        features, start = [], 0
        for runs in whole_runs(parts or [len(views)], size):
            part = views[start:start + sum(runs)]
            start += len(part)
            features.append(checkpoint(encode, part, *([runs] if len(runs) > 1 else []), use_reentrant=False,
                                       preserve_rng_state=False))
        return torch.cat(features)

    def _automatic(self, views, critic) -> int:
        if critic not in self.sizes:
            per_view = bytes_per_view(critic, tuple(views.shape[1:]), self.autocast, self.precision, views.device)
            self.sizes[critic] = max(1, int(free_memory(views.device) * USABLE // per_view))
            self.size = min(self.sizes.values()) if self.size is None else min(self.size, self.sizes[critic])
        return min(self.sizes[critic], self.size)

    def retrying(self, step, undo, epoch: int, device: torch.device) -> None:
        """step(); in automatic mode an out-of-memory error calls undo(), halves the pass and repeats the
        epoch, until it fits or a single view per pass does not."""
        if self.fixed:
            return step()
        while True:
            try:
                return step()
            except (MemoryError, RuntimeError) as e:
                if not out_of_memory(e) or (self.size or 0) <= 1:
                    raise
            # outside the except block, so that the failed step's tensors are freed
            undo()
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            self.size, self.largest = max(1, min(self.size, self.largest or self.size) // 2), 0
            log.warning("out of memory at epoch %d: retrying with %d views per pass", epoch, self.size)
