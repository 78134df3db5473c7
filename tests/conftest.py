"""Shared fixtures: the tiny random CLIP, the shipped mini critics and a helper to run small experiments."""

import os  # noqa: I001

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # two test processes share the cores: idle threads sleep
import clipig  # noqa: E402, F401  (before torch, so that OpenMP reads the setting above)

import pytest
import torch

from clipig.config.loader import load
from clipig.critic import precision
from clipig.critic.models import load_critic
from clipig.run.engine import open_run

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _user_cache(tmp_path_factory, monkeypatch):
    """Keep every test away from the real ~/.cache."""
    monkeypatch.setenv("CLIPIG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _cpu_without_native_bf16(monkeypatch):
    """`precision: auto` as on a CPU without native bf16 (fp32), so that the tests compute alike on every
    machine; the tests of `auto` fake the flags they need."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())


@pytest.fixture
def tiny():
    """The tiny random CLIP, the same object the engines of the test use (the critic cache holds it)."""
    return load_critic("random:tiny", "cpu")


@pytest.fixture
def mini():
    """`mini`, the shipped critic trained on the mini world (loaded once: the critic cache holds it)."""
    return load_critic("mini", "cpu")


@pytest.fixture
def referee():
    """`mini-referee`, the shipped model that judges and never optimises."""
    return load_critic("mini-referee", "cpu")


def make_engine(text: str, *overrides: str, listeners=()):
    """An Engine for YAML `text` (model random:tiny, cpu, verbose 0, seed 0 unless overridden)."""
    config = load(texts=[text], overrides=["model=random:tiny", "device=cpu", "verbose=0", "seed=0",
                                           *overrides])
    return open_run(config, list(listeners))


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (make test): a worker per core this process may use, the container's CPU quota counted, as
    CLIPig counts them for its threads (xdist alone would count the host's cores)."""
    from clipig.run.threads import usable_cores
    return usable_cores()
