"""One experiment that uses every transform and every constraint, with non-default parameters and
expressions, rendered for a few epochs."""

import torch

from clipig.config.loader import load
from clipig.config.registry import CONSTRAINTS, TRANSFORMS
from clipig.run.engine import open_run

EVERYTHING = """
epochs: 4
resolution: 32 if t < .5 else 40
learnrate: 0.5 + 0.5 * ti
seed: 7
targets:
  - batch_size: 3
    select: best
    features:
      - text: a curly spoon
      - text: a fork
        weight: -0.5 + sim / 1000
    transforms:
      - add: 0.01 * t
      - blur: {kernel_size: 1 + 2 * int(t * 3), sigma: 0.5 + t}
      - border: {size: 1 + int(t), color: 0.1 0.2 ti}
      - bwnoise: 0.02 * ti
      - clamp: -0.5 1.5 - t
      - contrast: 1.1 - 0.1 * t
      - edge: {kernel_size: 3, sigma: 0.8, amount: 1 + t}
      - fnoise: 0.01 * ti
      - mean: 0.5 0.5 0.4 + 0.1 * t
      - mul: 0.9 + 0.1 * t
      - noise: 0.02 0.03 0.02*ti
      - quantize: 0.001 + 0.001 * t
      - rnoise: {std: 0.02 * ti, resolution: 4 + int(4 * t)}
      - saturation: 0.9 + 0.1 * t
      - pad: {size: 2 + int(t), color: 0.5, mode: "'wrap' if t < .5 else 'edge'"}
      - repeat: 2
      - shift: 0.1 * t
      - random_shift: 0 0.5 + 0.5 * t
      - random_translate: 0.1 * ti, 0.05
      - rotate: {degree: 10 * t, center: 0.5 0.4}
      - random_rotate: {degree: -10 * ti 10 * ti, center: 0.4 0.6}
      - random_scale: 0.8 + 0.1 * t, 1.2
      - random_perspective: {distortion: 0 0.3 * ti, probability: 0.5 + 0.5 * t}
      - crop: 0.05 0.05 0.9 0.9
      - center_crop: width - 4
      - random_crop: 24 + int(4 * t)
      - resize: 32 + int(8 * t)
    constraints:
      - blur: {kernel_size: 5, weight: 0.1 * ti, loss: l1}
      - border: {size: 2, color: 0.2, weight: 0.5, start: 1}
      - contrast: {above: 0.1 + 0.1 * t, weight: 2}
      - edge_mean: {below: 0.2, kernel_size: 3, end: 75%}
      - mean: {above: 0.3, below: 0.7 + 0.01 * sim, loss: mae}
      - noise: {std: 0.05 * ti, weight: 0.2}
      - normalize: {min: 0.05, max: 0.95 - 0.1 * t}
      - saturation: {below: 0.05 + lr / 100}
      - std: {above: 0.05, below: 0.3 + 0.1 * t}
postproc:
  - clamp: 0 1
  - blur: {kernel_size: 3}
    end: 50%
  - random_shift: 0 1
    start: 2
"""


def test_every_transform_and_constraint_in_one_experiment(tiny):
    config = load(texts=[EVERYTHING], overrides=["model=random:tiny", "device=cpu", "verbose=0"])
    target = config.targets[0]
    assert {e.name for e in target.transforms} == set(TRANSFORMS)
    assert {e.name for e in target.constraints} == set(CONSTRAINTS)
    engine = open_run(config)
    before = engine.image()
    losses = []
    engine.listeners.append(lambda e: losses.append(float(e.loss)) if e.kind == "epoch" else None)
    assert engine.run() == "done"
    image = engine.image()
    assert image.shape == (3, 40, 40) and before.shape == (3, 32, 32)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    stats = engine.statistics()[0]
    assert [c["label"] for c in stats["constraints"]] == [e.name for e in target.constraints]
    assert sum(f["count"] for f in stats["features"]) == 4 * 3
