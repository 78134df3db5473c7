"""CLIP ensembles: `model` as a list, weighted means over the models, per-target models, `rate` with several."""

import csv

import pytest
import torch

from clipig.cli import main
from clipig.config.errors import ConfigError
from clipig.config.loader import load
from clipig.critic.critic import Critic, Ensemble
from clipig.critic.models import load_critic, open_critic
from clipig.files.output import save_png
from clipig.run.engine import Engine, open_run
from clipig.tools import rate

A, B = "random:tiny", "random:tiny:1"  # the same architecture, weights of seeds 0 and 1

TWO_FEATURES = """
device: cpu
verbose: 0
seed: 3
epochs: {epochs}
resolution: 40
targets:
  - batch_size: 3
    features:
      - text: a curly spoon
      - text: the sea
        loss: l2
    transforms:
      - random_shift: 0 1
      - noise: 0.1
"""


def run(text: str, *overrides: str, epochs: int = 3):
    """A finished engine and the losses of its epochs."""
    engine = open_run(load(texts=[TWO_FEATURES.format(epochs=epochs) + text], overrides=list(overrides)))
    losses = []
    engine.listeners.append(lambda e: losses.append(float(e.loss)) if e.kind == "epoch" else None)
    engine.run()
    return engine, losses


def features(engine) -> list[dict]:
    return engine.statistics()[0]["features"]


def test_random_seeds_give_other_weights():
    a, b = load_critic(A), load_critic(B)
    assert torch.equal(a.encode_text(["x"]), load_critic("random:tiny:0").encode_text(["x"]))
    assert not torch.allclose(a.encode_text(["x"]), b.encode_text(["x"]))


def test_an_ensemble_of_one_model_is_that_model_alone():
    alone, alone_losses = run(f"model: {A}\n")
    for model in (f"[{A}]", f"[{{name: {A}, weight: 3}}]", f"[{A}, {A}]"):  # a model named twice counts once
        engine, losses = run(f"model: {model}\n")
        assert engine.critic.names == [A]
        assert torch.equal(engine.image(), alone.image()), model  # byte for byte
        assert losses == alone_losses
        assert features(engine) == features(alone)  # no per-model rows for one model


def test_the_ensembles_similarity_and_loss_are_the_weighted_means():
    """One epoch sees the same views in every run (same seed), before any step: the ensemble's numbers are
    the weighted means of the single models' numbers, with the weights divided by their sum."""
    single = {name: run(f"model: {name}\n", epochs=1) for name in (A, B)}
    engine, losses = run(f"model: [{A}, {{name: {B}, weight: 3}}]\n", epochs=1)
    expected = 0.25 * single[A][1][0] + 0.75 * single[B][1][0]
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert single[A][1][0] != pytest.approx(single[B][1][0], rel=1e-3)  # the models do disagree
    for i, feature in enumerate(features(engine)):
        a, b = (features(single[name][0])[i] for name in (A, B))
        for key in ("mean", "min"):
            assert feature["models"][A][key] == pytest.approx(a["similarity"][key], abs=1e-4)
            assert feature["models"][B][key] == pytest.approx(b["similarity"][key], abs=1e-4)
        assert feature["similarity"]["mean"] == pytest.approx(
            0.25 * a["similarity"]["mean"] + 0.75 * b["similarity"]["mean"], abs=1e-4)
        assert feature["loss"]["mean"] == pytest.approx(0.25 * a["loss"]["mean"] + 0.75 * b["loss"]["mean"],
                                                        rel=1e-4)


def test_select_best_and_mix_use_the_ensemble():
    for select in ("best", "mix"):
        engine, losses = run(f"model: [{A}, {B}]\n", f"targets[0].select={select}")
        assert engine.epoch == 3 and all(loss == loss for loss in losses)
        assert sum(f["count"] for f in features(engine)) > 0


def test_a_target_restricted_to_one_model_is_judged_by_it_alone(monkeypatch):
    alone, alone_losses = run(f"model: {B}\n")
    calls = []
    original = Critic.encode_seen
    monkeypatch.setattr(Critic, "encode_seen", lambda self, images, compiled=False: calls.append(self.name)
                        or original(self, images, compiled))
    engine, losses = run(f"model: [{A}, {{name: {B}, weight: 0.1}}]\n", f"targets[0].model={B}")
    assert torch.equal(engine.image(), alone.image())
    assert losses == alone_losses  # B's weight is 1 for this target: divided by the sum of its models' weights
    assert set(calls) == {B}  # A never saw a view
    assert "models" not in features(engine)[0]


def test_targets_with_different_models_in_one_run():
    second = f"model: [{A}, {B}]\ntargets:\n  - name: second\n    model: {A}\n    features:\n      - text: an apple\n"
    config = load(texts=[TWO_FEATURES.format(epochs=3), second], overrides=[f"targets[0].model=[{B}]"])
    engine = open_run(config)
    engine.run()
    first, other = engine.statistics()
    assert [t.model_names for t in engine.targets] == [[B], [A]]
    assert first["features"][0]["count"] > 0 and other["features"][0]["count"] > 0


def small_critic(size: int = 64) -> Critic:
    """A CLIP of a smaller input than random:tiny's 224 pixels."""
    from open_clip import get_tokenizer
    from open_clip.model import CLIP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIP(embed_dim=16, vision_cfg=dict(image_size=size, layers=1, width=32, patch_size=16, head_width=16),
                     text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
    return Critic("small", model, get_tokenizer("ViT-B-32"), "cpu")


def test_each_model_resizes_the_original_views_not_the_first_models():
    """The 40x40 views reach the 64-pixel model resized once (40 -> 64), not upsampled to the first model's 224
    pixels and down again (a model of 336 pixels beside one of 224 would see blurred views)."""
    from clipig.critic.views import seen
    tiny, small = load_critic(A), small_critic()
    config = load(texts=[TWO_FEATURES.format(epochs=1)], overrides=[f"model={A}", "views_per_pass=3"])
    engine = Engine(config, Ensemble([tiny, small], [1, 1]))
    made, shown = [], {}
    target_views = engine.targets[0].views
    engine.targets[0].views = lambda *a: made.append(target_views(*a)) or made[-1]
    for critic in (tiny, small):
        encode = critic.encode_seen
        critic.encode_seen = lambda pixels, compiled=False, c=critic, e=encode: shown.setdefault(
            c.name, pixels.detach()) is None or e(pixels, compiled)
    try:
        engine.run()
    finally:
        del tiny.encode_seen, small.encode_seen
    views = made[0].detach()
    assert views.shape[-1] == 40
    assert torch.equal(shown["small"], seen(views, 64))
    assert not torch.allclose(shown["small"], seen(seen(views, 224), 64), atol=1e-3)  # what it saw before
    assert torch.equal(shown[A], seen(views, 224))


def test_each_model_sees_the_shared_views_at_its_own_input_size():
    from open_clip import get_tokenizer
    from open_clip.model import CLIP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIP(embed_dim=16, vision_cfg=dict(image_size=64, layers=1, width=32, patch_size=16, head_width=16),
                     text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
    small = Critic("small", model, get_tokenizer("ViT-B-32"), "cpu")
    tiny = load_critic(A)
    shapes = {}
    for critic in (tiny, small):
        encode = critic.model.encode_image
        critic.model.encode_image = lambda pixels, c=critic, e=encode: shapes.setdefault(c.name, []).append(
            tuple(pixels.shape)) or e(pixels)
    # a fixed pass size: the automatic one would first probe each model with 1 and 2 views (memory.py)
    config = load(texts=[TWO_FEATURES.format(epochs=2)], overrides=[f"model={A}", "views_per_pass=3"])
    engine = Engine(config, Ensemble([tiny, small], [1, 1]))
    views = []
    target_views = engine.targets[0].views
    engine.targets[0].views = lambda *a: views.append(1) or target_views(*a)
    try:
        engine.run()
    finally:
        del tiny.model.encode_image
    assert shapes == {A: [(3, 3, 224, 224)] * 2, "small": [(3, 3, 64, 64)] * 2}  # one pass per model and epoch
    assert len(views) == 2  # the views are made once per epoch for both models


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError) as info:
        load(texts=[f"model: [{A}, {B}]\ntargets:\n  - model: random:tiny:2\n    features:\n      - text: a\n"])
    message = str(info.value)
    assert "<config>:3" in message and "targets[0].model" in message and f"{A}, {B}" in message
    for text, part in ((f"model: [{A}, {{name: {B}, weight: 0}}]", "model[1].weight: a model weight must be "
                        "positive"), ("model: []", "empty list"), (f"model: [{{nme: {A}}}]", "did you mean 'name'"),
                       (f"model: [{{name: {A}, weight: random()}}]", "must be a constant")):
        with pytest.raises(ConfigError, match=part.replace("[", r"\[").replace("(", r"\(")):
            load(texts=[text])


def test_factory_merges_names_and_normalises_per_target():
    ensemble = open_critic([A, {"name": B, "weight": 2}, {"name": A, "weight": 1}])
    assert ensemble.names == [A, B] and ensemble.weights == [2.0, 2.0]
    assert ensemble.select() == [(0, 0.5), (1, 0.5)]
    assert ensemble.select([B]) == [(1, 1.0)]
    assert open_critic(A).critics[0] is load_critic(A)  # one cache for all


def test_cli_renders_an_ensemble_and_shows_each_models_similarity(tmp_path, capsys):
    import yaml
    config = tmp_path / "two.yaml"
    config.write_text(TWO_FEATURES.format(epochs=2) + f"model: [{A}, {A}, {B}]\n"
                      "parameterization: {type: fft, decorrelate: true}\n")
    assert main([str(config), "-o", f"{tmp_path}/out/", "-v"]) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "out" / "two.png").is_file()
    table = err[err.index("target 'target'"):]
    assert f"\n    {B} " in table and f"\n    {A} " in table  # a row per model under each feature
    assert yaml.safe_load((tmp_path / "out" / "two.yaml").read_text())["model"] == [A, A, B]  # as written
    assert main([str(config), "-o", f"{tmp_path}/out/", "-q", "--model", f"[{B}]"]) == 0
    assert yaml.safe_load((tmp_path / "out" / "two-1.yaml").read_text())["model"] == [B]


def test_rate_with_two_models_gives_a_column_per_model_and_their_mean(tmp_path, capsys):
    image = tmp_path / "x.png"
    save_png(torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(0)), image)
    out = tmp_path / "r.csv"
    texts = ["a cat", "a dog"]
    base = [str(image), "-t", *texts, "--device", "cpu", "-o", str(out)]
    singles = {}
    for name in (A, B):
        assert rate.main([*base, "--model", name]) == 0
        singles[name] = [float(v) for v in list(csv.reader(out.open()))[1][1:]]
    assert rate.main([*base, "--model", A, "--model", B]) == 0
    head, row = list(csv.reader(out.open()))
    assert head == ["image"] + [f"{t} [{m}]" for t in texts for m in (A, B, "mean")]
    values = [float(v) for v in row[1:]]
    for i in range(2):
        a, b, mean = values[3 * i:3 * i + 3]
        assert (a, b) == pytest.approx((singles[A][i], singles[B][i]), abs=1e-4)
        assert mean == pytest.approx((a + b) / 2, abs=1e-4)
    assert "a dog [mean]" in capsys.readouterr().out


def test_rank_records_the_ensembles_similarity_as_rate_gives_it(tmp_path):
    from clipig.config.loader import load_data
    from clipig.config.schema import plain
    from clipig.tools.workers import render_job
    data = plain(load_data(texts=[TWO_FEATURES.format(epochs=2) + f"model: [{A}, {B}]\n"]))
    result = render_job({"name": "x", "data": data})
    png = tmp_path / "x.png"
    png.write_bytes(result["png"])
    out = tmp_path / "r.csv"
    assert rate.main([str(png), "-t", "a curly spoon", "the sea", "--model", A, "--model", B, "--device", "cpu",
                      "-o", str(out)]) == 0
    row = [float(v) for v in list(csv.reader(out.open()))[1][1:]]
    assert result["record"]["sims"] == pytest.approx([row[2], row[5]], abs=1e-3)  # equal weights: the mean
