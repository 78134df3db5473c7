"""The training loop: real properties with the tiny random CLIP and fixed seeds."""

import re

import pytest
import torch
import torch.nn.functional as F
from conftest import make_engine

SPOON = """
epochs: {epochs}
resolution: 64
targets:
  - batch_size: {batch}
    features:
      - text: a curly spoon
        weight: {weight}
    transforms:
      - random_rotate:
          degree: -5 5
      - noise: 0.02
"""


def similarity_to(engine, text: str) -> float:
    """CLIP similarity of the current image (resized to the critic input) to `text`."""
    critic = engine.critic.critics[0]
    image = F.interpolate(engine.image()[None], size=(critic.input_size,) * 2, mode="bilinear")
    with torch.no_grad():
        return float(critic.similarity(critic.encode_image(image), critic.encode_text([text]))[0, 0])


def test_feature_loss_falls(tiny):
    engine = make_engine(SPOON.format(epochs=50, batch=2, weight=1.0))
    losses = []
    engine.listeners.append(lambda e: losses.append(float(e.loss)) if e.kind == "epoch" else None)
    engine.run()
    assert len(losses) == 50
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


@pytest.mark.parametrize("weight, direction", [(1.0, 1), (-1.0, -1)])
def test_weight_sign_moves_similarity(tiny, weight, direction):
    engine = make_engine(SPOON.format(epochs=30, batch=2, weight=weight))
    before = similarity_to(engine, "a curly spoon")
    engine.run()
    after = similarity_to(engine, "a curly spoon")
    assert (after - before) * direction > 1.0


def test_select_best_trains_only_the_best_feature_and_counts_it(tiny):
    text = """
epochs: 1
resolution: 32
targets:
  - batch_size: 6
    select: best
    features:
      - text: a curly spoon
      - text: a red apple
      - text: the sea
    transforms:
      - random_shift: 0 1
      - noise: 0.3
"""
    engine = make_engine(text, "views_per_pass=6")  # automatic mode would probe the critic first
    seen = []
    encode = tiny.encode_seen

    class Spy:
        def __getattr__(self, name):
            return getattr(tiny, name)

        def encode_seen(self, images, compiled=False, parts=None):
            features = encode(images, compiled, parts)
            seen.append(features.detach())
            return features

    engine.critic.critics[0] = Spy()
    engine.run()
    target = engine.targets[0]
    sims = F.normalize(seen[0], dim=-1) @ target.normed[0].T
    expected = torch.bincount(sims.argmax(1), minlength=3).tolist()
    stats = engine.statistics()[0]["features"]
    assert [f["count"] for f in stats] == expected
    assert sum(expected) == 6
    assert sum(f["share"] for f in stats) == pytest.approx(1.0)


def test_select_worst_and_mix_and_fair_run(tiny):
    for select in ("worst", "mix"):
        text = f"""
epochs: 3
resolution: 32
targets:
  - batch_size: 2
    select: {select}
    feature_scale: fair
    features:
      - text: a
      - text: b
        weight: 2
"""
        engine = make_engine(text)
        engine.run()
        stats = engine.statistics()[0]["features"]
        # no random transform: one view per epoch whatever the batch size; mix trains both features on it
        assert sum(f["count"] for f in stats) == (3 if select == "worst" else 6)
        assert engine.statistics()[0]["views"] == 3
        assert engine.targets[0].fair is not None
        assert stats[1]["weight"] == 2.0


def test_same_seed_same_image_other_seed_other_image(tiny):
    images = []
    for seed in (1, 1, 2):
        engine = make_engine(SPOON.format(epochs=3, batch=2, weight=1.0), f"seed={seed}")
        engine.run()
        images.append(engine.image())
    assert torch.equal(images[0], images[1])
    assert not torch.equal(images[0], images[2])


def test_resolution_changes_during_training(tiny):
    text = """
epochs: 4
resolution: 16 if t < .5 else 32
targets:
  - features:
      - text: a
"""
    engine = make_engine(text)
    sizes = []
    engine.listeners.append(lambda e: sizes.append(tuple(e.image().shape)) if e.kind == "epoch" else None)
    engine.run()
    assert sizes == [(3, 16, 16), (3, 16, 16), (3, 32, 32), (3, 32, 32)]


def test_mean_constraint_pushes_the_mean_up(tiny):
    text = """
epochs: 20
resolution: 16
learnrate: 5
targets:
  - constraints:
      - mean:
          above: .8
"""
    engine = make_engine(text)
    before = engine.image().mean()
    engine.run()
    assert engine.image().mean() > before + 0.2


def test_postproc_draws_the_border_at_the_start_of_each_epoch(tiny):
    text = """
epochs: 2
resolution: 16
targets:
  - features:
      - text: a
postproc:
  - border:
      size: 2
      color: 0.15 0.1 0.05
"""
    color = torch.tensor([0.15, 0.1, 0.05])[:, None].expand(3, 16)
    engine = make_engine(text, "learnrate=0")
    engine.run()
    image = engine.image()
    assert torch.allclose(image[:, 0, :], color) and torch.allclose(image[:, :, -2], color)
    engine = make_engine(text)  # the last step comes after the last post-processing (as in the original)
    engine.run()
    assert not torch.allclose(engine.image()[:, 0, :], color, atol=1e-3)


def test_target_end_and_feature_schedule(tiny):
    text = """
epochs: 10
resolution: 16
targets:
  - end: 50%
    features:
      - text: a
  - features:
      - text: b
        start: 6
"""
    engine = make_engine(text)
    engine.run()
    first, second = engine.statistics()
    assert first["epochs"] == 5
    assert second["features"][0]["count"] == 4


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprob", "sparse_adam", "adadelta"])
def test_every_optimizer_changes_the_pixels(tiny, optimizer):
    engine = make_engine(SPOON.format(epochs=2, batch=1, weight=1.0), f"optimizer={optimizer}")
    before = engine.image()
    engine.run()
    assert not torch.equal(before, engine.image())


def test_learnrate_zero_keeps_the_pixels(tiny):
    engine = make_engine(SPOON.format(epochs=3, batch=1, weight=1.0), "learnrate=0")
    before = engine.image()
    engine.run()
    assert torch.equal(before, engine.image())


def test_init_image_tensor_and_start_epoch_continue(tiny):
    first = make_engine(SPOON.format(epochs=4, batch=1, weight=1.0))
    first.run()
    from clipig.config.loader import load_data
    from clipig.config.schema import validate
    from clipig.run.engine import open_run
    data = load_data(texts=[SPOON.format(epochs=6, batch=1, weight=1.0)],
                     overrides=["model=random:tiny", "verbose=0", "seed=0", "start_epoch=4"])
    data["init"] = {"image_tensor": first.image().tolist()}
    second = open_run(validate(data))
    assert torch.allclose(second.image(), first.image(), atol=1e-6)
    epochs = []
    second.listeners.append(lambda e: epochs.append(e.epoch) if e.kind == "epoch" else None)
    second.run()
    assert epochs == [5, 6]


def test_stop_request_ends_after_the_current_epoch(tiny):
    engine = make_engine(SPOON.format(epochs=50, batch=1, weight=1.0))
    engine.listeners.append(lambda e: e.stop() if e.kind == "epoch" and e.epoch == 3 else None)
    assert engine.run() == "stopped"
    assert engine.epoch == 3


def test_runtime_expression_error_stops_with_a_clear_message(tiny):
    from clipig.config.errors import ConfigError
    text = SPOON.format(epochs=10, batch=1, weight="1 / (epoch - 2)")
    engine = make_engine(text)
    with pytest.raises(ConfigError, match=r"targets\[0\]\.features\[0\]\.weight.*epoch 2"):
        engine.run()


def test_start_epoch_past_the_end_is_a_config_error(tiny):
    from clipig.config.errors import ConfigError
    with pytest.raises(ConfigError, match=r"start_epoch: 5 is past the end of training \(epochs: 2\)"):
        make_engine("epochs: 2\nstart_epoch: 5\ntargets:\n  - features:\n      - text: a\n")


def test_a_feature_never_active_shows_no_weight(tiny):
    from clipig.files.report import statistics_table
    engine = make_engine("epochs: 3\nresolution: 32\ntargets:\n  - features:\n      - text: a\n"
                         "      - text: b\n        start: 5\n")
    engine.run()
    features = engine.statistics()[0]["features"]
    assert features[0]["weight"] == 1.0 and features[1]["weight"] is None
    assert re.search(r"^\s+b\s+-\s+0 ", statistics_table(engine.statistics()), re.M)


# --- the original's semantics (see docs/differences.md; tests/test_fidelity.py compares with its numbers) ----

def losses_of(text, critic, *overrides):
    engine = make_engine(text, *overrides)
    losses = []
    engine.listeners.append(lambda e: losses.append(float(e.loss)) if e.kind == "epoch" else None)
    engine.run()
    return engine, losses


def test_views_are_added_up_and_a_deterministic_target_has_one_view(tiny):
    text = "epochs: 2\nresolution: 16\ntargets:\n  - batch_size: {batch}\n    features:\n      - text: a\n{more}"
    _, one = losses_of(text.format(batch=1, more=""), "learnrate=0")
    engine, same = losses_of(text.format(batch=3, more=""), "learnrate=0")
    assert same == pytest.approx(one) and engine.statistics()[0]["views"] == 2  # no random transform: 1 view
    rotate = "    transforms:\n      - random_rotate: 0 0\n"  # random, but all three views are the same
    engine, three = losses_of(text.format(batch=3, more=rotate), "learnrate=0")
    assert three == pytest.approx([3 * x for x in one], rel=1e-5) and engine.statistics()[0]["views"] == 6


def test_batch_sizes_may_change_with_time(tiny):
    """Two targets with the same feature trade views over the run (Disco Diffusion's overview and inner views):
    `batch_size` is evaluated every epoch; a fraction is cut to a whole number."""
    target = "  - batch_size: {}\n    features:\n      - text: a\n    transforms:\n      - random_rotate: 0 0\n"
    text = "epochs: 3\nresolution: 16\ntargets:\n" + target.format("3 - 2 * t") + target.format("1.5 + 2 * t")
    engine = make_engine(text)
    engine.run()
    assert [s["views"] for s in engine.statistics()] == [3 + 2 + 1, 1 + 2 + 3]


def test_every_transform_result_and_postproc_result_is_clamped(tiny):
    seen = []

    class Spy:
        def __getattr__(self, name):
            return getattr(tiny, name)

        def encode_seen(self, images, compiled=False, parts=None):
            seen.append(images.detach())
            return tiny.encode_seen(images, compiled, parts)

    text = "epochs: 1\nresolution: 16\ntargets:\n  - features:\n      - text: a\n    transforms:\n" \
           "      - mul: 3\n      - add: -1.5\n"
    engine = make_engine(text)
    engine.critic.critics[0] = Spy()
    engine.run()
    start = make_engine(text).image()
    expected = (start * 3).clamp(0, 1) - 1.5  # clamped after mul: nothing is left above 0 after add -1.5
    assert (expected <= 0).all() and seen[0].max() == 0
    data = {"epochs": 1, "resolution": 4, "learnrate": 0, "targets": [{"features": [{"text": "a"}]}],
            "postproc": [{"add": 0.0}], "init": {"image_tensor": torch.full((3, 4, 4), 1.7).tolist()}}
    import yaml
    engine = make_engine(yaml.safe_dump(data))
    assert float(engine.image(unclamped=True).max()) == pytest.approx(1.7)  # image_tensor: not clamped at the start
    engine.run()
    assert float(engine.image(unclamped=True).max()) == 1.0  # the post-processing clamped the trained values


def test_fair_factors_are_inverse_similarities_over_their_largest(tiny):
    engine = make_engine("epochs: 1\nresolution: 16\ntargets:\n  - feature_scale: fair\n    features:\n"
                         "      - text: a\n      - text: b\n      - text: c\n")
    target = engine.targets[0]
    with torch.no_grad():
        start = engine.critic.critics[0].encode_image(engine.canvas.image()[None])
    s = (target.normed[0] @ F.normalize(start, dim=-1).T)[:, 0]
    assert torch.allclose(target.fair, (1 / s) / (1 / s).max(), rtol=1e-5)
    assert float(target.fair.max()) == 1.0


def test_select_all_trains_every_feature_on_every_view(tiny):
    engine = make_engine("epochs: 2\nresolution: 16\ntargets:\n  - batch_size: 2\n    features:\n"
                         "      - text: a\n      - text: b\n    transforms:\n      - noise: 0.1\n")
    engine.run()
    stats = engine.statistics()[0]
    assert stats["views"] == 4 and [(f["count"], f["share"]) for f in stats["features"]] == [(4, 1.0), (4, 1.0)]


def test_the_learnrate_variable_is_the_optimizers_rate(tiny):
    text = "epochs: 1\nresolution: 16\noptimizer: sgd\nlearnrate: 2\nlearnrate_scale: 0.5\ntargets:\n" \
           "  - features:\n      - text: a\n    transforms:\n      - add: lr / 1000\n"
    engine = make_engine(text)
    seen = []
    engine.listeners.append(lambda e: seen.append(e.learnrate) if e.kind == "epoch" else None)
    engine.run()
    assert seen == [10.0]
    assert engine.optimizer.param_groups[0]["lr"] == 10.0
