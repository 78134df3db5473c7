"""`clipig bench` as a smoke test: quick mode with the tiny CLIP, no timing assertions."""

import subprocess
import sys
from pathlib import Path

import pytest

from clipig.bench import speed as bench


def test_reference_configurations_exist_and_validate():
    from clipig.config.loader import load
    names = [path.stem for path in sorted(bench.BENCH_DIR.glob("*.yaml"))]
    assert set(bench.REFERENCE) <= set(names)
    for name in bench.REFERENCE:
        config = load([bench.BENCH_DIR / f"{name}.yaml"], overrides=["model=random:tiny", "device=cpu"])
        assert config.targets


@pytest.mark.slow
def test_quick_run_prints_the_table_and_the_figures(capsys):
    code = bench.main(["--quick", "--model", "random:tiny", "--epochs", "2", "--warmup", "0", "--repeats", "1",
                       "curly-spoon", "animal-method1", "hires-1024"])
    out = capsys.readouterr().out
    assert code == 0
    for text in ("GEMM peak", "curly-spoon", "animal-method1", "hires-1024@224", "critic efficiency",
                 "pipeline overhead", "resolution scaling", "peak memory", "GiB", "hires-1024 fft",
                 "hires-1024 pyramid", "parameterization share", "animal-method1+random:tiny:1", "ensemble of two",
                 "bfloat16", "× best floor", "of bf16 peak", "bf16 at batch 10", "best-precision floor",
                 "Ranking throughput", "4 together", "runs together / one at a time"):
        assert text in out, text
    assert "error:" not in out
    figures = out[out.index("| figure"):]
    assert "n/a" not in figures  # every figure was measured


@pytest.mark.slow
def test_profile_shows_operators_and_functions(capsys):
    code = bench.main(["--quick", "--model", "random:tiny", "--epochs", "1", "--warmup", "0", "--repeats", "1",
                       "--no-memory", "--no-sweep", "--profile", "1", "curly-spoon"])
    out = capsys.readouterr().out
    assert code == 0
    assert "curly-spoon: operators (torch.profiler" in out and "curly-spoon: Python functions (cProfile" in out


def test_timed_critic_sees_forward_and_backward(tiny):
    import torch

    from clipig.critic.models import open_critic
    ensemble, log = bench.timed(open_critic(["random:tiny", "random:tiny:1"]))
    first, second = ensemble.critics
    images = torch.rand(2, 3, 100, 100, requires_grad=True)
    (first.encode_image([images]).sum() + second.encode_image(images).sum()).backward()
    seconds, calls = bench.take(log)
    assert seconds > 0 and [c["critic"].name for c in calls] == ["random:tiny", "random:tiny:1"]
    assert calls[0]["shape"] == (2, 3, tiny.input_size, tiny.input_size)  # resized before the clock starts
    assert all(c["backward_end"] >= c["backward_start"] for c in calls)
    with torch.no_grad():
        first.encode_image(images)  # feature caching etc. pass through untimed
    assert bench.take(log) == (0.0, [])
    assert first.input_size == tiny.input_size and ensemble.names == ["random:tiny", "random:tiny:1"]


def test_ensemble_partner():
    assert bench.ensemble_partner("random:ViT-B/32") == "random:ViT-B/32:1"
    assert bench.ensemble_partner("random:tiny:1") == "random:tiny:2"
    assert bench.ensemble_partner("ViT-B/32") == "random:ViT-B/32:1"
    assert bench.ensemble_partner("ViT-B-32/laion2b_s34b_b79k") == "random:ViT-B-32:1"
    assert bench.ensemble_partner("/models/my.pt") is None
    assert bench.ensemble_partner("ViT-L-14:/models/my.pt") == "random:ViT-L-14:1"  # the name tells the arch
    assert bench.ensemble_partner("mini") is None


def test_unknown_configuration_is_an_error():
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--model", "random:tiny", "no-such-config"])


@pytest.mark.slow
def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "clipig.bench", "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).parent, timeout=60)
    assert result.returncode == 0
    assert "--quick" in result.stdout


def test_emulated_bf16_peak_is_measured_once_and_small(monkeypatch):
    """Without AMX or AVX-512 BF16 torch emulates bfloat16 about a hundred times slower (a 2048² product takes
    20 s on AVX2): the bench's peak samples it once at 512², where it once ran 2048² next to every measurement
    (a fresh `make test` took 75 minutes on such a machine)."""
    import torch

    from clipig.bench import speed
    calls = []
    monkeypatch.setattr(speed, "gemm_rate", lambda size, repeats, dtype=None: calls.append((size, dtype)) or 1.0)
    monkeypatch.setattr("clipig.critic.precision.native_bf16", lambda: False)
    peak = speed.Peak()
    for _ in range(3):
        peak.sample()
    assert [c for c in calls if c[1] == torch.bfloat16] == [(512, torch.bfloat16)]
    monkeypatch.setattr("clipig.critic.precision.native_bf16", lambda: True)
    peak.sample()
    assert calls[-1] == (2048, torch.bfloat16)
