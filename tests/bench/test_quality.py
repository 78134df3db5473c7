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


@pytest.mark.slow
def test_the_table_has_a_row_per_configuration_and_the_best_top1(capsys):
    from clipig.bench.speed import main
    assert main(["--quality", "plain", "fft", "ensemble", "coarse-to-fine", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("|") and re.search(r"\d%", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["plain", "fft", "ensemble", "coarse-to-fine"]
    best = max(int(r.split("|")[2].strip().rstrip("%")) for r in rows)
    header = next([c.strip() for c in line.split("|")] for line in out.splitlines()
                  if line.startswith("| configuration"))
    column = header.index("outline")  # the pixel reader's share of prompts whose shapes show
    assert all(re.fullmatch(r"\d+%", r.split("|")[column].strip()) for r in rows), rows
    assert re.search(rf"^referee top-1: {best}% \(", out, re.M)


def test_unknown_rows_are_refused_with_the_list(capsys):
    from clipig.bench.speed import main
    with pytest.raises(SystemExit) as e:
        main(["--quality", "fancy"])
    assert e.value.code == 2
    assert "pyramid" in capsys.readouterr().err
