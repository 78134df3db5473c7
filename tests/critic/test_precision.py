"""Precision of the CLIP pass on the CPU: bf16 agrees with fp32 (features, pixel gradients, whole runs),
`auto` resolves by the CPU's flags, fp32 is the pass it always was, fp16 is refused, and the optional
`compile: true` (torch.compile; needs a C compiler) changes nothing but the speed.

Tolerances (measured with random:tiny, 8 epochs, 64²: loss differences below 0.001, mean absolute pixel
difference about 1e-4, feature cosine > 0.9999) leave a margin of about 10x."""

import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import make_engine

from clipig.config.errors import ConfigError
from clipig.critic import fast_vision, precision
from clipig.critic.precision import cpu_flags as read_flags  # the reader itself: the tests' CPU has no bf16

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


def features_and_gradient(critic, images, bf16: bool):
    pixels = images.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        features = critic.encode_image(pixels)
    (features * torch.linspace(-1, 1, features.shape[1])).sum().backward()
    return features.detach(), pixels.grad


def cosine(a, b):
    return F.cosine_similarity(a.flatten(1), b.flatten(1)).min()


@pytest.mark.parametrize("name", ["random:tiny", pytest.param("random:ViT-B/32", marks=pytest.mark.slow), "mini"])
def test_bf16_features_and_pixel_gradients_match_fp32(name):
    """The bf16 pass (weights cast once, attention as two products) against fp32: features of ViTs and ResNets,
    and the pixel gradients of ViTs agree to cosine > 0.999 (measured >= 0.99993), and the gradient reaching
    the pixels is float32. A ResNet's pixel gradient is only as stable as its ReLUs: in fp32, input noise of a
    quarter of an 8-bit step (1e-3) already moves it to cosine 0.995; bf16 measured 0.991 (mini)."""
    from clipig.critic.models import load_critic
    critic = load_critic(name, "cpu")
    count = 1 if "ViT-B" in name else 6  # ViT-B/32 in emulated bf16 (CPUs without bf16 instructions): 68 s at 6
    images = torch.rand(count, 3, critic.input_size, critic.input_size, generator=torch.Generator().manual_seed(0))
    fp32, fp32_grad = features_and_gradient(critic, images, False)
    bf16, bf16_grad = features_and_gradient(critic, images, True)
    assert bf16.dtype == bf16_grad.dtype == torch.float32
    assert cosine(fp32, bf16) > 0.999
    assert cosine(fp32_grad, bf16_grad) > (0.999 if critic.model.visual.__class__.__name__ == "VisionTransformer"
                                           else 0.98)


def test_bf16_casts_the_frozen_weights_once(tiny):
    """Under CPU autocast the layers use bf16 copies made at the first call and kept; outside it (fp32) the
    parameters themselves, so that the fp32 pass is the one it always was."""
    block = tiny.model.visual.transformer.resblocks[0]
    assert fast_vision.frozen(block.mlp.c_fc, "weight") is block.mlp.c_fc.weight
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = fast_vision.frozen(block.mlp.c_fc, "weight")
        assert first.dtype == torch.bfloat16 and torch.equal(first, block.mlp.c_fc.weight.bfloat16())
        assert fast_vision.frozen(block.mlp.c_fc, "weight") is first


def test_fp32_runs_the_layers_as_before(tiny, monkeypatch):
    """An fp32 run through the sped-up layers is, byte for byte, the run through the layers' own forward and
    torch's attention kernel (what the fp32 pass was before bf16 got its own path)."""
    patched_losses, patched_image = run(tiny, "precision=fp32")
    for module in tiny.model.visual.modules():
        if "forward" in vars(module) and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            monkeypatch.delattr(module, "forward")
    monkeypatch.setattr(fast_vision, "short_attention", None)  # would fail if the fp32 pass called it
    plain_losses, plain_image = run(tiny, "precision=fp32")
    assert patched_losses == plain_losses
    assert torch.equal(patched_image, plain_image)


def test_bf16_run_matches_fp32(tiny):
    fp32_losses, fp32_image = run(tiny, "precision=fp32")
    bf16_losses, bf16_image = run(tiny, "precision=bf16")
    assert len(fp32_losses) == len(bf16_losses) == 8
    assert max(abs(a - b) for a, b in zip(fp32_losses, bf16_losses)) < LOSS_TOLERANCE
    assert (fp32_image - bf16_image).abs().mean() < PIXEL_TOLERANCE
    assert fp32_losses[-1] < fp32_losses[0] and bf16_losses[-1] < bf16_losses[0]  # both actually train


@pytest.mark.parametrize("flags, expected", [
    ({"fpu", "avx2", "avx512f", "avx512_bf16"}, "bf16"),  # AVX-512 BF16 (e.g. AMD Zen 4/5, Intel Cooper Lake)
    ({"fpu", "avx2", "avx512f", "amx_tile", "amx_bf16"}, "bf16"),  # AMX (Intel Sapphire Rapids and later)
    ({"fpu", "avx2", "avx512f"}, "fp32"),  # AVX-512 without bf16: emulated, slower than fp32
    (set(), "fp32"),  # no /proc/cpuinfo (macOS) or no flags
])
def test_auto_follows_the_cpu_flags(tiny, monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    auto = make_engine(SPOON, "precision=auto")
    assert auto.precision == expected == auto.facts().precision
    assert make_engine(SPOON, "precision=fp32").precision == "fp32"  # what is asked for, whatever the CPU
    assert make_engine(SPOON, "precision=bf16").precision == "bf16"
    assert precision.resolve("auto", torch.device("cuda")) == "fp16"  # a GPU keeps fp16 autocast


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert read_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512_bf16"}
    assert read_flags(str(tmp_path / "missing")) == frozenset()


def test_auto_is_exactly_fp32_without_native_bf16(tiny):
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
