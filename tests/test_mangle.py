"""Bad input: mangled experiment files render or fail with a clear message, never with a traceback.

tests/mangle.py deletes every key of the examples and benchmarks and replaces every value by empty, null,
lists, maps, huge numbers, nan, broken expressions, unicode, ... (`python tests/mangle.py` runs all of
them); here a fixed sample of those cases runs, and one case of each kind of failure that the sweep found.
"""

from pathlib import Path

import mangle
import pytest

from clipig.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_sample_of_mangled_examples_renders_or_explains(tmp_path, tiny):
    files = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("src/clipig/bench/configs/*.yaml")])
    sample = list(mangle.cases(files))[::101]
    assert len(sample) > 150
    bad = []
    with mangle.one_epoch():
        for file, path, replacement, data in sample:
            outcome, rc, text = mangle.run(data, tmp_path)
            if outcome == "bad":
                bad.append(f"{file.name} {path} = {replacement!r}: exit {rc}: {mangle.summary(text)}")
    assert not bad, "\n".join(bad)


def test_the_sweep_stops_every_run_after_its_first_epoch(tmp_path, tiny):
    """Else each sampled case renders all its epochs (the sweep's minutes become hours)."""
    from clipig.config.loader import load
    from clipig.run.engine import open_run
    epochs = []
    data = load([], texts=["epochs: 5\nresolution: 16\nmodel: random:tiny\ndevice: cpu\n" + TARGET])
    with mangle.one_epoch():
        open_run(data, [lambda e: epochs.append(e.epoch) if e.kind == "epoch" else None]).run()
    assert len(epochs) == 1


TARGET = "targets:\n  - features:\n      - text: a\n"
SIZE = "epochs: 1\nresolution: 16\n"


@pytest.mark.parametrize("text, rc, message", [
    # an empty text for a number: was an IndexError
    ("epochs: ''\n", 2, "x.yaml:1: epochs: expected int, got an empty text"),
    ("resolution: ' '\nepochs: 1\n", 2, "x.yaml:1: resolution: expected list of length 2 of int, got an empty text"),
    # numbers beyond what torch takes: were OverflowError / TypeError from torch
    ("resolution: 1e308\n", 2, "x.yaml:1: resolution: 1e+308 is too large (at most 9223372036854775807"),
    ("resolution: 1000000000000000000000\n", 2, "x.yaml:1: resolution: 1e+21 is too large"),
    ("learnrate: -1e300\n", 2, "x.yaml:1: learnrate: -1e+300 is too large (at most 3.4e+38: the image arithmetic"),
    (SIZE + "targets:\n  - batch_size: 10**30\n    features:\n      - text: a\n", 2,
     "x.yaml:4: targets[0].batch_size: 1e+30 is too large"),
    # sizes that fit 64 bits but no memory: out of memory, exit 1
    ("resolution: 2**40\n" + TARGET, 1, "error: sizes too large for any memory (a tensor of [3, 1099511627776, "
     "1099511627776])"),
    (SIZE + "targets:\n  - batch_size: 2**62\n    features:\n      - text: a\n    transforms:\n      - noise: 0.1\n", 1,
     "error: sizes too large for any memory"),
    (SIZE + TARGET + "    transforms:\n      - repeat: 2**62\n", 1, "error: sizes too large for any memory"),
    # a product of two allowed numbers that float32 cannot hold: the run stops before the step (finite.py)
    (SIZE + TARGET + "optimizer: sgd\nlearnrate: 3e38\nlearnrate_scale: 1e10\n", 1,
     "error: the run became numerically invalid at epoch 0: the learning rate (base * learnrate * "
     "learnrate_scale = 3e+49) is beyond the float32 range"),
])
def test_each_kind_of_failure_the_sweep_found(text, rc, message, tmp_path, tiny, capsys):
    config = tmp_path / "x.yaml"
    config.write_text(text + "model: random:tiny\nverbose: 0\n")
    assert main([str(config), "-o", f"{tmp_path}/"]) == rc
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
