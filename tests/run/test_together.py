"""Runs together (clipig.run.together): several runs in one CLIP pass per epoch, each giving its own picture."""

import pytest
import torch
from conftest import make_engine
from PIL import Image

from clipig.cli import main
from clipig.config.loader import load
from clipig.run import passes
from clipig.run.together import Together, group_size

# two targets (one of them only half of the time), a resolution change (a new optimizer), best-of selection,
# random transforms, a random expression and post-processing: every piece of a run's state
EXPERIMENT = """
epochs: 5
resolution: 24 if t < .5 else 32
learnrate: 1 + random()/10
targets:
  - batch_size: 3
    select: best
    features:
      - text: a curly spoon
    transforms:
      - random_shift: 0 1
      - noise: 0.1*ti
  - batch_size: 2
    end: 50%
    features:
      - text: the sea
    transforms:
      - random_scale: .8 1.2
postproc:
  - blur: {kernel_size: 3}
    end: 30%
"""


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_run_together_gives_its_picture_alone_byte_for_byte(tiny, precision):
    def engines():
        return [make_engine(EXPERIMENT, f"seed={seed}", f"precision={precision}") for seed in (0, 1, 2)]
    alone = engines()
    for engine in alone:
        assert engine.run() == "done"
    together = engines()
    seen = []
    encode = tiny.encode_seen
    tiny.encode_seen = lambda views, compiled=False, parts=None: seen.append((len(views), parts)) or encode(
        views, compiled, parts)
    try:
        assert Together(together).run() == ["done"] * 3
    finally:
        del tiny.encode_seen
    assert seen[0] == (15, [5, 5, 5]) and seen[-1] == (9, [3, 3, 3])  # one pass for the three runs
    for a, b in zip(alone, together):
        assert torch.equal(a.image(unclamped=True), b.image(unclamped=True))
        assert a.statistics() == b.statistics() and a.epoch == b.epoch == 5
    assert not torch.equal(alone[0].image(), alone[1].image())


def test_passes_hold_whole_runs():
    assert passes.whole_runs([5, 5, 5], 10) == [[5, 5], [5]]
    assert passes.whole_runs([5, 5, 5], 100) == [[5, 5, 5]]
    assert passes.whole_runs([3, 7, 2], 4) == [[3], [4], [3], [2]]  # the run of 7 is split as it is alone
    assert passes.whole_runs([7], 3) == [[3], [3], [1]]


def test_runs_together_with_small_passes_give_the_pictures_alone(tiny):
    """views_per_pass 4 splits a run's 5 views alone (4 + 1) and so together; the runs' passes never mix."""
    alone = make_engine(EXPERIMENT, "seed=1", "views_per_pass=4")
    alone.run()
    together = [make_engine(EXPERIMENT, f"seed={seed}", "views_per_pass=4") for seed in (0, 1)]
    Together(together).run()
    assert torch.equal(alone.image(unclamped=True), together[1].image(unclamped=True))


def test_a_run_that_fails_ends_alone(tiny):
    """A run whose own part fails (here its post-processing at epoch 2) ends at the start of that epoch; the
    others go on to their end, with the pictures they give alone."""
    engines = [make_engine(EXPERIMENT, f"seed={seed}") for seed in (0, 1, 2)]
    ends = []
    for e in engines:
        e.listeners.append(lambda event: ends.append((event.seed, event.reason)) if event.kind == "end" else None)
    postprocess = engines[1].postprocess

    def failing(variables):
        if variables["epoch"] == 2:
            raise ZeroDivisionError("in the post-processing")
        postprocess(variables)
    engines[1].postprocess = failing
    outcomes = Together(engines).run()
    assert outcomes[0] == outcomes[2] == "done" and isinstance(outcomes[1], ZeroDivisionError)
    assert engines[1].epoch == 2 and ends == [(1, "failed"), (0, "done"), (2, "done")]
    alone = make_engine(EXPERIMENT, "seed=2")
    alone.run()
    assert torch.equal(alone.image(unclamped=True), engines[2].image(unclamped=True))


def test_automatic_group_size_fills_the_pass():
    config = load(texts=[EXPERIMENT], overrides=["device=cpu"])
    assert group_size(config, None) == 40 // 5 and group_size(config, 3) == 3
    assert group_size(load(texts=[EXPERIMENT], overrides=["device=cpu", "views_per_pass=12"]), None) == 2
    assert group_size(load(texts=[EXPERIMENT], overrides=["device=cpu", "views_per_pass=3"]), None) == 1


def test_repeat_together_writes_the_images_of_runs_one_at_a_time(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(EXPERIMENT)
    args = [str(config), "--model", "random:tiny", "--device", "cpu", "-q", "--seed", "3", "--repeat", "3"]
    assert main([*args, "-o", f"{tmp_path}/one/", "--together", "1"]) == 0
    assert main([*args, "-o", f"{tmp_path}/all/"]) == 0
    for name in ("exp.png", "exp-1.png", "exp-2.png"):
        with Image.open(tmp_path / "one" / name) as a, Image.open(tmp_path / "all" / name) as b:
            assert a.tobytes() == b.tobytes()
    assert "seed: 5" in (tmp_path / "all" / "exp-2.yaml").read_text()
