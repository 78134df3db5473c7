"""What a run's state holds as plain data (tensors on the CPU, dicts, lists, numbers), so that a state file can
be read with `torch.load(weights_only=True)`; the engine captures and restores it (Engine.state_dict)."""

from __future__ import annotations

import torch


def plain(value):
    """Tensors (on the CPU), dicts, lists and tuples, and objects (a target's statistics: counts, tensors,
    `Recent` windows) as dicts of their attributes."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if hasattr(value, "__dict__"):
        return {k: plain(v) for k, v in vars(value).items()}
    return value


def put_back(target, data, device):
    """Put data made by `plain` back into the same structure; returns what goes where `target` was."""
    if isinstance(target, torch.Tensor):
        return data.to(device)
    if isinstance(target, list):
        return [put_back(t, d, device) for t, d in zip(target, data)]
    if hasattr(target, "__dict__"):
        for k, v in data.items():
            setattr(target, k, put_back(getattr(target, k), v, device))
        return target
    return data


def random_state(rng: torch.Generator, expr_rng) -> dict:
    """Every random generator a run draws from."""
    return {"torch": rng.get_state(), "device": str(rng.device), "expressions": expr_rng.getstate()}


def set_random_state(rng: torch.Generator, expr_rng, state: dict, reseed: int) -> None:
    """Put generators back; a CPU generator's state does not fit a CUDA one: then `rng` is seeded with
    `reseed` (the run goes on deterministically, but not identically)."""
    if state["device"] == str(rng.device):
        rng.set_state(state["torch"])
    else:
        rng.manual_seed(reseed)
    expr_rng.setstate(state["expressions"])
