"""`clipig bench --quality`: the referee's verdicts and the table."""

import re

import numpy as np
import pytest

from clipig.bench import quality
from clipig.critic.models import open_critic
from clipig.mini import evaluate, world


def scene(text: str, seed: int):
    caption = world.parse(text)
    return caption, evaluate.to_tensor(world.render(world.scene_for(caption, np.random.default_rng(seed)), 64))


def test_a_drawn_scene_is_judged_as_its_caption_and_not_as_another(referee):
    """The verdict on a picture the world drew for the prompt: rank 1 and every attribute right; the same
    picture judged for a caption with another shape and background ranks that caption low."""
    critic = open_critic("mini")
    caption, image = scene("a yellow star on a blue background", 3)
    verdict = quality.judge(referee, critic, image, caption)
    assert verdict["rank"] == 1 and verdict["of"] == len(world.space(caption))
    assert all(all(v) for v in verdict["attributes"].values()), verdict["attributes"]
    assert verdict["outline"] is True  # read from the pixels: the yellow region is a star
    wrong = quality.judge(referee, critic, image, world.parse("a yellow circle on a red background"))
    assert wrong["rank"] > 5 and not all(wrong["attributes"]["shape"])
    assert wrong["outline"] is False
    assert wrong["critic"] < verdict["critic"] - 5


def test_an_ensembles_similarity_is_the_weighted_mean_of_its_models():
    _, image = scene("a red circle on a blue background", 1)
    text = "a red circle on a blue background"
    one, two = (quality.critic_similarity(open_critic(m), image, text) for m in ("mini", "mini-2"))
    both = quality.critic_similarity(open_critic([{"name": "mini", "weight": 3}, "mini-2"]), image, text)
    assert both == pytest.approx(0.75 * one + 0.25 * two, abs=1e-4)
    assert abs(one - two) > 0.1  # two models trained apart


def lens(thing, size):
    """A lens, pointed at both ends, where the world would draw `thing`: an outline of no shape of the world."""
    r, turn = thing.radius * size, np.radians(thing.angle)
    t = np.linspace(-1, 1, 33)
    x, y = np.concatenate([t, -t[1:-1]]) * 1.3, np.concatenate([1 - t ** 2, -(1 - t[1:-1] ** 2)]) * 0.6
    return list(zip(thing.x * size + r * (x * np.cos(turn) - y * np.sin(turn)),
                    thing.y * size + r * (x * np.sin(turn) + y * np.cos(turn))))


def test_the_own_outline_column_says_whether_the_critic_prefers_the_picture_s_outline_to_the_world_s():
    """A drawn square is its own best world outline (about 0); a lens where the square should be is liked less
    than the square the world would draw in its place (below 0, by a critic that knows squares); captions
    of several things, and pictures without the thing's colour, have no value."""
    critic = open_critic("mini-referee")  # the model that tells shapes apart best; here only a measure
    caption, image = scene("a purple square on a yellow background", 2)
    assert abs(quality.own_outline_preference(critic, image, caption)) < 1
    scene_ = world.scene_for(caption, np.random.default_rng(2))
    lensed = evaluate.to_tensor(world.render(scene_, 64, outline_of=lens))
    assert quality.own_outline_preference(critic, lensed, caption) < -3
    assert quality.own_outline_preference(critic, image, world.parse("a red square on a yellow background")) is None
    pair, image = scene("a red circle and a blue star", 2)
    assert quality.own_outline_preference(critic, image, pair) is None


@pytest.mark.slow
def test_the_table_has_a_row_per_configuration_and_the_best_top1(capsys, tmp_path):
    from clipig.bench.speed import main
    prompts = tmp_path / "prompts.txt"  # 2 prompts keep it short
    prompts.write_text("a red circle on a blue background\ntwo green squares on a white background\n")
    assert main(["--quality", "plain", "fft", "ensemble", "coarse-to-fine", "--epochs", "2",
                 "--prompts", str(prompts)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("|") and re.search(r"\d%", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["plain", "fft", "ensemble", "coarse-to-fine", "drawn"]
    rows = rows[:-1]
    best = max(int(r.split("|")[2].strip().rstrip("%")) for r in rows)
    header = next([c.strip() for c in line.split("|")] for line in out.splitlines()
                  if line.startswith("| configuration"))
    column = header.index("outline")  # the pixel reader's share of prompts whose shapes show
    assert all(re.fullmatch(r"\d+%", r.split("|")[column].strip()) for r in rows), rows
    own = [r.split("|")[column + 1].strip() for r in rows]  # one single thing among the prompts: a value each
    assert all(re.fullmatch(r"[+-]\d+\.\d", v) for v in own), own
    assert re.search(rf"^referee top-1: {best}% \(", out, re.M)


@pytest.mark.parametrize("row", sorted(quality.ROWS))
def test_every_row_is_a_valid_experiment_with_its_prompt_and_models(row):
    """A row's YAML merged over its configuration validates, every feature asks for the prompt, and a row
    that names its models keeps them (`--model` does not override an ensemble)."""
    import argparse
    args = argparse.Namespace(model="mini", overrides=[], epochs=0, quick=True)
    config = quality.experiment(row, "a green star on a red background", args, 5)
    assert [f.text({}) for t in config.targets for f in t.features] and all(
        f.text({}) == "a green star on a red background" for t in config.targets for f in t.features)
    names = [m["name"] for m in config.model()]
    assert names == (["mini", "mini-2", "mini-3"] if row.endswith("ensemble3") else
                     ["mini", "mini-2"] if "ensemble" in row else ["mini"])
    full = quality.experiment(row, "a green star on a red background", argparse.Namespace(
        model="mini", overrides=[], epochs=0, quick=False), 5)
    assert config.seed() == 5 and config.epochs() == round(full.epochs() * quality.QUICK_EPOCHS)


def test_an_experiment_file_that_names_its_models_keeps_them(tmp_path):
    """`--model` (default mini) renders a file of one's own only where the file names no models: a file with
    `model: [mini, mini-2]` once rendered with `mini` alone."""
    import argparse
    base = (quality.CONFIG_DIR / "polygons.yaml").read_text()
    (tmp_path / "two.yaml").write_text(base + "model: [mini, mini-2]\n")
    (tmp_path / "none.yaml").write_text(base)
    args = argparse.Namespace(model="mini", overrides=[], epochs=0, quick=False)
    names = lambda f: [m["name"] for m in quality.experiment(str(tmp_path / f), "a red star on a blue background",
                                                             args, 0).model()]
    assert names("two.yaml") == ["mini", "mini-2"] and names("none.yaml") == ["mini"]


def test_unknown_rows_are_refused_with_the_list(capsys):
    from clipig.bench.speed import main
    with pytest.raises(SystemExit) as e:
        main(["--quality", "fancy"])
    assert e.value.code == 2
    assert "pyramid" in capsys.readouterr().err


def test_prompts_of_ones_own_with_several_seeds_and_the_drawn_ceiling(tmp_path, capsys):
    """--prompts FILE (comments skipped), --seeds 2 (each prompt rendered twice: the pictures differ), --set
    over every render, an experiment file as a row; the `drawn` row judges the world's own scenes of the
    prompts, which the referee ranks first."""
    from clipig.bench.speed import main
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# mine\na red circle on a blue background\n\na white star on a black background  # two\n")
    row = tmp_path / "mine.yaml"
    row.write_text("resolution: 16\nepochs: 2\ntargets:\n  - features:\n      - text: anything\n")
    assert main(["--quality", str(row), "--prompts", str(prompts), "--seeds", "2", "--set", "learnrate=2",
                 "--save", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "2 prompts" in out and "2 seed(s)" in out and "--set learnrate=2" in out
    saved = sorted(p.name for p in (tmp_path / "out").glob("mine-*.png"))
    assert saved == ["mine-00-s1.png", "mine-00.png", "mine-01-s1.png", "mine-01.png"]
    assert (tmp_path / "out" / "mine-00.png").read_bytes() != (tmp_path / "out" / "mine-00-s1.png").read_bytes()
    drawn = next(line for line in out.splitlines() if line.startswith("| drawn"))
    mine = next(line for line in out.splitlines() if line.startswith("| mine"))
    top1 = [int(line.split("|")[2].strip().rstrip("%")) for line in (drawn, mine)]
    assert top1[0] >= 50 and top1[0] > top1[1]  # the referee knows the world's own pictures, not 2 epochs


def test_a_prompt_outside_the_world_is_refused_with_its_line(tmp_path, capsys):
    from clipig.bench.speed import main
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on a blue background\na photo of a cat\n")
    with pytest.raises(SystemExit) as e:
        main(["--quality", "plain", "--prompts", str(prompts)])
    assert e.value.code == 2
    assert f"{prompts}:2: 'a photo of a cat' is not a caption of the mini world" in capsys.readouterr().err


def test_a_bad_set_is_refused_before_any_render(capsys):
    from clipig.bench.speed import main
    with pytest.raises(SystemExit) as e:
        main(["--quality", "plain", "--set", "learnrate=fast"])
    assert e.value.code == 2 and "row plain" in capsys.readouterr().err


def test_the_held_out_captions_are_single_things_of_the_world_and_not_benchmark_prompts():
    path = quality.CONFIG_DIR / "held-out.txt"
    import argparse
    captions = quality.read_prompts(str(path), argparse.ArgumentParser())
    assert len(captions) >= 12 and not set(captions) & set(quality.PROMPTS)
    assert all(world.parse(c).kind == "single" for c in captions)
