"""Precision of the CLIP pass on the CPU: bf16 autocast agrees with fp32, fp16 is refused, and the optional
`compile: true` (torch.compile; needs a C compiler) changes nothing but the speed.

Tolerances (measured with random:tiny, 8 epochs, 64²: loss differences below 0.001, mean absolute pixel
difference about 1e-4, feature cosine > 0.9999) leave a margin of about 10x."""

import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import make_engine

from clipig.config.errors import ConfigError

SPOON = """
epochs: 8
resolution: 64
targets:
  - batch_size: 4
    features:
      - text: a curly spoon
    transforms:
      - random_rotate:
          degree: -10 10
      - noise: 0.05
    constraints:
      - blur:
          kernel_size: 5
"""

LOSS_TOLERANCE = 0.01  # absolute, per epoch; cosine losses are about 1
PIXEL_TOLERANCE = 2e-3  # mean absolute difference of the final images in [0, 1]


def run(critic, *overrides):
    engine = make_engine(SPOON, *overrides)
    losses = []
    engine.listeners.append(lambda e: losses.append(float(e.loss)) if e.kind == "epoch" else None)
    engine.run()
    return losses, engine.image()


def test_bf16_features_match_fp32(tiny):
    images = torch.rand(6, 3, tiny.input_size, tiny.input_size, generator=torch.Generator().manual_seed(0))
    fp32 = tiny.encode_image(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = tiny.encode_image(images).float()
    assert bf16.dtype == torch.float32
    assert F.cosine_similarity(fp32, bf16).min() > 0.999


def test_bf16_run_matches_fp32(tiny):
    fp32_losses, fp32_image = run(tiny, "precision=fp32")
    bf16_losses, bf16_image = run(tiny, "precision=bf16")
    assert len(fp32_losses) == len(bf16_losses) == 8
    assert max(abs(a - b) for a, b in zip(fp32_losses, bf16_losses)) < LOSS_TOLERANCE
    assert (fp32_image - bf16_image).abs().mean() < PIXEL_TOLERANCE
    assert fp32_losses[-1] < fp32_losses[0] and bf16_losses[-1] < bf16_losses[0]  # both actually train


def test_auto_is_fp32_on_cpu(tiny):
    auto_losses, auto_image = run(tiny, "precision=auto")
    fp32_losses, fp32_image = run(tiny, "precision=fp32")
    assert auto_losses == fp32_losses
    assert torch.equal(auto_image, fp32_image)


def test_fp16_on_cpu_is_a_config_error(tiny):
    with pytest.raises(ConfigError) as error:
        make_engine(SPOON, "precision=fp16")
    message = str(error.value)
    assert "fp16" in message and "precision" in message


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile needs a C compiler")
def test_compile_matches_eager(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "_compiled", None)  # compiled here, forgotten afterwards
    eager_losses, eager_image = run(tiny, "precision=fp32", "compile=false")
    assert tiny._compiled is None
    compiled_losses, compiled_image = run(tiny, "precision=fp32", "compile=true")
    assert tiny._compiled is not None  # the compiled tower was used
    assert max(abs(a - b) for a, b in zip(eager_losses, compiled_losses)) < 1e-3  # measured 2e-7
    assert (eager_image - compiled_image).abs().max() < 1e-3  # measured 1.3e-5


def test_a_failing_compiler_is_a_clear_error(tiny, monkeypatch):
    from clipig.critic.weights import ModelError

    def broken(module):
        def call(*args):
            raise RuntimeError("BackendCompilerFailed: no C compiler found")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(tiny, "_compiled", None)
    with pytest.raises(ModelError, match="torch.compile failed .*no C compiler.*\n.*compile: false"):
        run(tiny, "compile=true")
