"""`starts`: a run begun from several seeds goes on as the start with the lowest loss over the second half of
the starting epochs, and its picture is byte for byte that of a plain run of the chosen seed; its recorded
seed stays its own, so that it gives the same picture again."""

from __future__ import annotations

import clipig
import torch

EXPERIMENT = """
model: random:tiny
resolution: 16
epochs: 8
verbose: 0
targets:
  - batch_size: 2
    features: [{text: a cat}]
    transforms: [{noise: .3}, {random_rotate: {degree: -90 90}}]
"""


def plain(seed: int, epochs: int = 8):
    losses = []
    run = clipig.render(EXPERIMENT, seed=seed, epochs=epochs, quiet=True,
                        on_epoch=lambda event: losses.append(float(event.loss)))
    return run, losses


def test_the_start_with_the_lowest_loss_goes_on_exactly_as_its_seed_alone():
    chosen = set()
    for seed in (10, 20, 30):
        run = clipig.render(EXPERIMENT + "starts: {count: 3, epochs: 4}\n", seed=seed, quiet=True)
        second_half = {s: sum(plain(s, 4)[1][2:]) for s in range(seed, seed + 3)}
        best = min(second_half, key=second_half.get)
        assert run._engine.chosen_seed == best and run.seed == seed and run.epoch == 8
        assert torch.equal(run.tensor, plain(best)[0].tensor)
        assert run._engine.facts().chosen_seed == (None if best == seed else best)  # in the PNG's provenance
        chosen.add(best - seed)
    assert chosen != {0}  # some start other than the run's own seed was chosen (the adoption is tested)


def test_one_start_is_the_run_itself():
    run = clipig.render(EXPERIMENT + "starts: {count: 1}\n", seed=5, quiet=True)
    assert torch.equal(run.tensor, plain(5)[0].tensor)
