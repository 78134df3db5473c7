"""`residual_gradient`: the gradient through the residual branches of the critics' image towers scaled by a
factor (the skip gradient method), the features unchanged; at 1 the hooks do nothing."""

import pytest
import torch
from conftest import make_engine

from clipig.config.errors import ConfigError
from clipig.critic import residual
from clipig.critic.models import load_critic

RUN = """
epochs: 6
resolution: 64
learnrate: 3
targets:
  - batch_size: 4
    features:
      - text: a curly spoon
    transforms:
      - random_rotate:
          degree: -10 10
"""


def features_and_gradient(critic, images, factor):
    pixels = images.clone().requires_grad_(True)
    with residual.residual_gradient(factor):
        features = critic.encode_image(pixels)
    (features * torch.linspace(-1, 1, features.shape[1])).sum().backward()
    return features.detach(), pixels.grad


def blended(factor):
    """The same scaling written another way, as a reference: the value `x`, the gradient `factor` times x's."""
    return lambda x: x.detach() + factor * (x - x.detach())


def reference_gradient(critic, images, factor):
    blend = blended(factor)
    handles = [module.register_forward_pre_hook(lambda m, args: (blend(args[0]), *args[1:])) if pre else
               module.register_forward_hook(lambda m, args, out: blend(out))
               for module, pre in residual.residual_branches(critic.model.visual)]
    try:
        return features_and_gradient(critic, images, 1.0)[1]
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("name, branches", [("random:tiny", 4), ("mini", 4)])  # a ViT of 2 blocks, a ResNet of 4
@pytest.mark.parametrize("factor", [0.0, 0.5])
def test_the_branches_gradient_is_scaled_and_the_features_kept(name, branches, factor):
    critic = load_critic(name, "cpu")
    assert critic.residual_branches == branches == len(residual.residual_branches(critic.model.visual))
    images = torch.rand(2, 3, critic.input_size, critic.input_size, generator=torch.Generator().manual_seed(1))
    plain_features, plain = features_and_gradient(critic, images, 1.0)
    features, scaled = features_and_gradient(critic, images, factor)
    assert torch.equal(features, plain_features)
    assert not torch.allclose(scaled, plain, rtol=0.05, atol=0)
    torch.testing.assert_close(scaled, reference_gradient(critic, images, factor), rtol=1e-4, atol=1e-7)


def test_outside_its_scope_the_gradient_is_plain(tiny):
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    before = features_and_gradient(tiny, images, 1.0)[1]
    features_and_gradient(tiny, images, 0.3)
    assert torch.equal(features_and_gradient(tiny, images, 1.0)[1], before)


def image(*overrides):
    engine = make_engine(RUN, *overrides)
    engine.run()
    return engine.image()


def test_a_run_follows_residual_gradient_also_in_split_passes():
    plain, half = image(), image("residual_gradient=.5")
    assert (half - plain).abs().mean() > 1e-3
    assert torch.equal(image("residual_gradient=1"), plain)
    # passes of two views are checkpointed and recomputed in the backward pass: the factor holds there too
    torch.testing.assert_close(image("residual_gradient=.5", "views_per_pass=2"), half, rtol=0, atol=2e-4)
    scheduled = image("residual_gradient=.5 + .5 * (t > .5)")  # .5 for the first half, then 1
    assert (scheduled - half).abs().mean() > 1e-4 and (scheduled - plain).abs().mean() > 1e-4


@pytest.mark.parametrize("value", ["1.5", "-.1", "2 * t"])
def test_a_factor_outside_0_to_1_names_the_parameter(value):
    with pytest.raises(ConfigError, match=r"residual_gradient.*in the range \[0, 1\]"):
        image(f"residual_gradient={value}")


def test_a_model_without_known_residual_blocks_is_refused(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "residual_branches", 0)
    with pytest.raises(ConfigError, match="residual_gradient.*no residual blocks"):
        make_engine(RUN, "residual_gradient=.5")
    make_engine(RUN)  # at 1 it asks nothing of the model
