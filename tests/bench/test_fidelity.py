"""Same experiment, same picture: CLIPig against numbers recorded from the original CLIPig.

tests/golden/original.json holds, for small deterministic configurations run by the original with the tiny
random CLIP of these tests (`random:tiny`, same weights), what it computed: each epoch's loss of every view,
how many views each target had and each feature was trained with; tests/golden/NAME.start.png and NAME.png
are its start and final pictures. `python -m clipig.bench.fidelity --record-golden` writes them (it needs the
original). The configurations cover select, fair, scale, the feature losses, targets with weight, start, end
and batch sizes, every optimizer with learnrate expressions, a resolution change, init and post-processing.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_engine
from PIL import Image

from clipig.files.output import to_pil

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
GOLDEN = json.loads((GOLDEN_DIR / "original.json").read_text())
START = GOLDEN_DIR / "start.png"


def config_text(name: str) -> str:
    return yaml.safe_dump(GOLDEN[name]["config"]).replace("{start}", str(START))


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def grey_levels(image: torch.Tensor, path: Path) -> np.ndarray:
    """|difference| per pixel and channel, in grey levels, of a picture and a PNG."""
    ours, theirs = np.asarray(to_pil(image), dtype=np.int16), png(path)
    assert ours.shape == theirs.shape
    return np.abs(ours - theirs)


def run(name: str, critic):
    engine = make_engine(config_text(name))
    start = engine.image()
    losses, views = [], []

    def listen(event):
        if event.kind == "epoch":
            losses.append(float(event.loss))
            views.append(sum(t["views"] for t in event.statistics()))

    engine.listeners.append(listen)
    engine.run()
    return engine, start, losses, np.diff([0] + views).tolist()


@pytest.mark.parametrize("name", [n for n in GOLDEN if n != "init-noise"])
def test_same_numbers_and_picture_as_the_original(name, tiny):
    golden = GOLDEN[name]
    engine, start, losses, views = run(name, tiny)
    assert grey_levels(start, GOLDEN_DIR / f"{name}.start.png").max() <= 1, "start picture"
    assert views == [len(v) for v in golden["losses"]], "views per epoch"
    expected = [sum(v) for v in golden["losses"]]
    assert losses == pytest.approx(expected, rel=2e-3, abs=1e-4), "loss of each epoch"
    ours_stats = [t.statistics() for t in engine.targets if t.node.active()]  # the original skips the others
    assert len(ours_stats) == len(golden["stats"])
    for ours, theirs in zip(ours_stats, golden["stats"]):
        assert ours["views"] == theirs["views"]
        assert [f["count"] for f in ours["features"]] == theirs["counts"], "views each feature was trained with"
    assert grey_levels(engine.image(), GOLDEN_DIR / f"{name}.png").mean() <= 1.0, "final picture"


def test_noise_start_like_the_original(tiny):
    """The original's noise is not seeded: compare what the noise is made of. Per channel mean and standard
    deviation, and the correlation of neighbours (8x8 noise scaled to 48x48 is smooth)."""
    engine = make_engine(config_text("init-noise"))
    ours = engine.image()
    theirs = torch.from_numpy(png(GOLDEN_DIR / "init-noise.start.png") / 255.0).float().permute(2, 0, 1)
    assert ours.shape == theirs.shape == (3, 48, 48)
    for image in (ours, theirs):
        assert image.flatten(1).mean(1) == pytest.approx([0.3, 0.5, 0.7], abs=0.05)
        assert neighbours(image) > 0.9
    ratio = ours.flatten(1).std(1) / theirs.flatten(1).std(1)
    assert ((ratio > 0.6) & (ratio < 1.6)).all()


def neighbours(image: torch.Tensor) -> float:
    """Correlation of horizontally neighbouring pixels."""
    a, b = image[..., :-1].flatten(), image[..., 1:].flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
