"""The config language: lists, expressions, variables, start/end, merging, overrides and error messages."""

import re

import pytest

from clipig.config.errors import ConfigError
from clipig.config.expressions import learnrate_variables, resolution_variables, similarity_variables, time_variables
from clipig.config.loader import load, load_data
from clipig.config.schema import to_data, validate
from clipig.config.timing import is_on, parse_time
from clipig.config.values import split_items


def cfg(text: str, *overrides: str):
    return load(texts=[text], overrides=list(overrides))


@pytest.mark.parametrize("text, items", [
    ("640 480", ["640", "480"]),
    ("640, 480", ["640", "480"]),
    ("-.1 .1", ["-.1", ".1"]),
    ("0 -1", ["0", "-1"]),
    ("0 - 1", ["0 - 1"]),
    ("0.1*ti", ["0.1*ti"]),
    ("0 if t < .4 else 1.", ["0 if t < .4 else 1."]),
    ("pow(224, 1.2) 3", ["pow(224, 1.2)", "3"]),
    ("{0: 8, 1: 16}.get(int(t*16), 224)", ["{0: 8, 1: 16}.get(int(t*16), 224)"]),
    ("a -b", ["a", "-b"]),
])
def test_list_items_split_like_a_user_means(text, items):
    assert split_items(text) == items


def test_lists_broadcast_and_accept_all_spellings():
    assert cfg("resolution: 512").resolution() == [512, 512]
    assert cfg("resolution: 640, 480").resolution() == [640, 480]
    assert cfg("resolution: 640 480").resolution() == [640, 480]
    assert cfg("resolution: [640, 480]").resolution() == [640, 480]
    assert cfg("resolution:\n  - 224 * 3\n  - pow(224, 1.2)").resolution() == [672, 661]
    assert cfg("init:\n  mean: 0.3").init.mean() == [0.3, 0.3, 0.3]
    with pytest.raises(ConfigError, match="expected 2 values"):
        cfg("resolution: 1 2 3")


def test_expressions_are_cast_to_the_declared_type():
    assert cfg("resolution: 224*1.5").resolution() == [336, 336]
    assert cfg("epochs: 10*2.5").epochs() == 25
    assert cfg("learnrate: 1/4").learnrate() == 0.25


def test_defaults_are_filled():
    c = cfg("targets:\n  - features:\n      - text: a")
    assert c.epochs() == 300 and c.optimizer() == "adam" and c.model() == [{"name": "ViT-B/32", "weight": 1.0}]
    t = c.targets[0]
    assert t.batch_size() == 1 and t.select() == "all" and t.name() == "target"
    assert t.features[0].loss() == "cosine" and t.features[0].weight() == 1.0
    data = to_data(c)
    assert data["targets"][0]["features"][0] == {"text": "a", "start": 0.0, "end": 1.0, "weight": 1.0,
                                                  "scale": 1.0, "loss": "cosine"}


def test_optimizer_and_loss_aliases():
    assert cfg("optimizer: rmsprob").optimizer() == "rmsprop"
    c = cfg("targets:\n  - features:\n      - image: x.png\n        loss: L2\n      - text: b\n        loss: mae")
    assert c.targets[0].features[0].loss() == "l2" and c.targets[0].features[1].loss() == "l1"


def time_vars(epoch, epochs=101):
    """Variables of an epoch; with the default 101 epochs t is epoch / 100."""
    return {**time_variables(epoch, epochs), "epochs": epochs}


def test_time_variables_in_expressions():
    c = cfg("resolution: 224 if t < .2 else 448")
    assert c.resolution(time_vars(10)) == [224, 224]
    assert c.resolution(time_vars(30)) == [448, 448]
    c = cfg("resolution: \"{0: 8, 1: 8, 2: 16, 3: 32}.get(int(t*16), 224)\"")
    assert [c.resolution(time_vars(e, 160))[0] for e in (0, 15, 25, 35, 45, 159)] == [8, 8, 16, 32, 224, 224]
    c = cfg("learnrate_scale: 1 - .95 * pow(t, 5.)")
    assert c.learnrate_scale(time_vars(0)) == 1.0
    assert c.learnrate_scale(time_vars(50)) == pytest.approx(1 - .95 * .5 ** 5)
    for name, value in [("epoch", 30), ("time", .3), ("t2", .09), ("time3", .027), ("ti", .7), ("ti2", .49),
                        ("time_inverse", .7), ("ts(0, 1)", .3), ("time_step(.5, 1)", 0.0)]:
        assert cfg(f"learnrate: {name}").learnrate(time_vars(30)) == pytest.approx(value), name


def test_resolution_learnrate_and_similarity_variables():
    c = cfg("targets:\n  - features:\n      - text: a\n        weight: sim / 100 + lr * width\n"
            "    transforms:\n      - noise: lrs * height / 1000")
    variables = {**time_vars(5), **resolution_variables(20, 10), **learnrate_variables(2.0, 0.5),
                 **similarity_variables(50.0)}
    assert c.targets[0].features[0].weight(variables) == pytest.approx(0.5 + 40)
    assert c.targets[0].transforms[0].params["std"](variables) == [0.005] * 3


def test_variables_are_exactly_those_of_the_parameter():
    with pytest.raises(ConfigError, match="unknown variable 'width'") as e:
        cfg("resolution: width * 2")
    assert "resolution" in str(e.value) and "epoch" in str(e.value)
    with pytest.raises(ConfigError, match="unknown variable 'sim'"):
        cfg("targets:\n  - transforms:\n      - noise: sim")
    with pytest.raises(ConfigError, match="unknown variable 'lr'"):
        cfg("learnrate: lr * 2")


@pytest.mark.parametrize("raw, value, kind", [(10, 10, "epoch"), ("10", 10, "epoch"), (0.5, 0.5, "fraction"),
                                              ("23.5%", 0.235, "fraction"), ("10%", 0.1, "fraction")])
def test_start_end_int_float_percent(raw, value, kind):
    point = parse_time(raw)
    assert (point.value, point.kind) == (pytest.approx(value), kind)


def is_active(start, end, epoch, epochs):
    return is_on({"start": start, "end": end}, {"epoch": epoch, "epochs": epochs})


def test_active_range_includes_both_ends():
    start, end = parse_time(0.0), parse_time("10%")
    assert [is_active(start, end, e, 200) for e in (0, 19, 20)] == [True, True, False]  # t = e / 199 <= 0.1
    assert is_active(parse_time(0.0), parse_time(1.0), 199, 200)
    assert [is_active(parse_time(1.0), parse_time(1.0), e, 10) for e in (8, 9)] == [False, True]  # t(9) = 1
    assert not is_active(parse_time("50%"), parse_time(1.0), 149, 300)
    assert is_active(parse_time("50%"), parse_time(1.0), 150, 301)  # t = 150 / 300
    assert [is_active(parse_time(2), parse_time(3), e, 10) for e in (1, 2, 3, 4)] == [False, True, True, False]
    assert [is_active(parse_time(0.5), parse_time(4), e, 11) for e in (4, 5)] == [False, False]  # t(5) = .5 > 4


def test_merge_appends_lists_and_overrides_apply_last(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("epochs: 10\ninit:\n  mean: .2\ntargets:\n  - name: one\n    features:\n      - text: x\n")
    b.write_text("epochs: 20\ninit:\n  std: .3\ntargets:\n  - name: two\n    features:\n      - text: y\n")
    c = load([a, b], overrides=["targets[1].batch_size=4", "targets[0].features[0].text=\"a dog\"",
                                "resolution=64 32"])
    assert c.epochs() == 20
    assert c.init.mean() == [0.2] * 3 and c.init.std() == [0.3] * 3
    assert [t.name() for t in c.targets] == ["one", "two"]
    assert c.targets[1].batch_size() == 4
    assert c.targets[0].features[0].text() == "a dog"
    assert c.resolution() == [64, 32]


def test_override_of_a_missing_index_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"index \[3\] does not exist"):
        cfg("targets:\n  - features:\n      - text: a", "targets[3].batch_size=2")


def test_unknown_key_suggests_the_closest_and_names_file_and_line(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("epochs: 3\ntargets:\n  - batchsize: 4\n    features:\n      - text: a\n")
    with pytest.raises(ConfigError) as e:
        load([f])
    message = str(e.value)
    assert f"{f}:3" in message and "targets[0].batchsize" in message and "'batch_size'" in message


def test_transform_parameter_errors_name_the_full_path(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("targets:\n  - features:\n      - text: a\n    transforms:\n      - noise: .1\n"
                 "      - random_shift: 0 1\n      - random_rotate:\n          degree: -30 nope(\n")
    with pytest.raises(ConfigError) as e:
        load([f])
    assert "targets[0].transforms[2].random_rotate.degree" in str(e.value)
    assert f"{f}:8" in str(e.value)


def test_unknown_transform_and_postproc_that_changes_resolution():
    with pytest.raises(ConfigError, match="unknown transform 'random_rotation'.*did you mean 'random_rotate'"):
        cfg("targets:\n  - transforms:\n      - random_rotation: {degree: 1}")
    with pytest.raises(ConfigError, match="'center_crop' changes the resolution"):
        cfg("postproc:\n  - center_crop: 10")


def test_invalid_yaml_reports_the_line():
    with pytest.raises(ConfigError, match="invalid YAML") as e:
        cfg("targets:\n  - features:\n      - text: a curly spoon\n  transforms:\n    - random_shift: 0 1\n")
    assert e.value.line == 4


def test_feature_needs_text_or_image():
    with pytest.raises(ConfigError, match="exactly one of text or image"):
        cfg("targets:\n  - features:\n      - weight: 2")


def test_constant_expression_errors_show_at_load_time():
    with pytest.raises(ConfigError, match="division by zero"):
        cfg("learnrate: 1/0")


def test_runtime_expression_error_names_parameter_expression_and_epoch():
    c = cfg("learnrate: 1 / (t - .5)")
    with pytest.raises(ConfigError) as e:
        c.learnrate(time_vars(50))
    assert "learnrate" in str(e.value) and "1 / (t - .5)" in str(e.value) and "epoch 50" in str(e.value)


def test_shorthands_of_multi_parameter_transforms():
    c = cfg("postproc:\n  - blur: 3 .35\n    end: 50%\n  - blur: 5")
    first, second = c.postproc
    assert first.params["kernel_size"]() == [3, 3] and first.params["sigma"]() == [0.35, 0.35]
    assert second.params["kernel_size"]() == [5, 5] and second.params["sigma"] is None
    assert str(first.entry.end()) == "50%"
    c = cfg("targets:\n  - transforms:\n      - random_rotate: -30 30")
    assert c.targets[0].transforms[0].params["degree"]() == [-30.0, 30.0]


def test_required_transform_parameter():
    with pytest.raises(ConfigError, match="random_rotate needs 'degree'"):
        cfg("targets:\n  - transforms:\n      - random_rotate:\n          center: 0 1")


def test_validate_needs_a_mapping():
    with pytest.raises(ConfigError):
        validate(["a"])
    assert load_data(texts=["epochs: 3"])["epochs"] == 3


@pytest.mark.parametrize("text, path, allowed", [
    ("interpolation: nearst", "interpolation", "nearest, linear, cubic (did you mean 'nearest'?)"),
    ("targets:\n  - features:\n      - text: x\n        loss: cosin", "targets[0].features[0].loss", "cosine"),
    ("targets:\n  - transforms:\n      - pad:\n          size: 1\n          mode: reflect",
     "targets[0].transforms[0].pad.mode", "fill, edge, wrap"),
])
def test_a_mistyped_choice_lists_the_allowed_values(text, path, allowed):
    with pytest.raises(ConfigError) as error:
        cfg(text)
    message = str(error.value)
    assert path in message and "unknown value" in message and allowed in message
    assert "variable" not in message


def test_start_end_and_switches_accept_expressions():
    from clipig.config.timing import TimePoint
    config = cfg("targets:\n  - start: 1/2\n    end: 100*2\n    active: 1 > 2\n    features:\n      - text: a\n"
                 "        start: '0 if t < .5 else 3'\n")
    target = config.targets[0]
    assert target.start() == TimePoint(0.5, "fraction") and target.end() == TimePoint(200.0, "epoch")
    assert target.active() is False
    start = target.features[0].start
    assert not start.is_constant and start({"t": 0.7}) == TimePoint(3.0, "epoch")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.start: expression 'lr/2' uses unknown variable 'lr'"):
        cfg("targets:\n  - start: lr/2\n")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.active: expected true or false, got 'maybe'"):
        cfg("targets:\n  - active: maybe\n")


def at_epoch(epoch: int, epochs: int) -> dict:
    return {**time_variables(epoch, epochs), "epochs": epochs}


def test_a_feature_that_starts_by_expression_is_trained_only_from_then():
    config = cfg("epochs: 10\ntargets:\n  - features:\n      - text: a\n        start: '0 if epoch < 0 else 4'\n")
    feature = config.targets[0].features[0]
    assert [is_on(feature, at_epoch(e, 10)) for e in range(10)] == [False] * 4 + [True] * 6


def test_one_answer_for_targets_features_constraints_transforms_and_postproc():
    """The same start/end (an epoch, a fraction, a percentage, an expression) means the same epochs for every
    kind of entry (both ends inclusive: epoch 7 and `t = 7/9 <= 0.8`), and `active: false` turns off those
    that have it."""
    config = cfg("""
epochs: 10
targets:
  - start: 2
    end: 80%
    features:
      - {text: a, start: 0.2, end: '4*2-1'}
    transforms:
      - {noise: 0.1, start: '20%', end: 0.8}
      - {blur: 3, active: false}
    constraints:
      - mean: {above: 0.1, start: 'epoch - epoch + 2', end: 7}
postproc:
  - {blur: 3, start: 2, end: 0.8}
""")
    target = config.targets[0]
    nodes = [target, target.features[0], target.transforms[0].entry, target.constraints[0].params,
             config.postproc[0].entry]
    for node in nodes:
        assert [is_on(node, at_epoch(e, 10)) for e in range(10)] == [False] * 2 + [True] * 6 + [False] * 2
    assert not any(is_on(target.transforms[1].entry, at_epoch(e, 10)) for e in range(10))


@pytest.mark.parametrize("text, message", [
    ("resolution: 16.5", "resolution: expected whole numbers, got 16.5"),
    ("epochs: 2.5", "epochs: expected whole numbers, got 2.5"),
    ("targets:\n  - transforms:\n      - rotate:\n          degree: 10 20",
     "targets[0].transforms[0].rotate.degree: expected a single float, got 2 values: '10 20'"),
])
def test_number_mistakes_are_named(text, message):
    with pytest.raises(ConfigError) as error:
        cfg(text)
    assert message in str(error.value)


@pytest.mark.parametrize("entry, path", [
    ("transforms:\n      - blur:\n          kernel_size: -3", "targets[0].transforms[0].blur.kernel_size"),
    ("transforms:\n      - border:\n          size: -1", "targets[0].transforms[0].border.size"),
    ("constraints:\n      - edge_mean:\n          kernel_size: -1\n          above: .1",
     "targets[0].constraints[0].edge_mean.kernel_size"),
])
def test_sizes_must_not_be_negative(entry, path):
    with pytest.raises(ConfigError, match=re.escape(path) + ": must be at least"):
        cfg("targets:\n  - " + entry)


def test_kernel_size_zero_is_no_blur():
    """`kernel_size: 31*ti` (the walk-through's) is 0 at the last epoch, where t is 1: like 1, no blur."""
    assert cfg("targets:\n  - constraints:\n      - blur:\n          kernel_size: 0").targets[0] \
        .constraints[0].params["kernel_size"]() == [0, 0]
