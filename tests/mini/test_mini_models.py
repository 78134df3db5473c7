"""The shipped mini CLIPs: loaded offline and checksummed, listed, ordinary open_clip models, and they know
their world."""

import json
import shutil

import numpy as np
import pytest
import torch

from clipig.critic import mini as model
from clipig.critic import models as critic_module
from clipig.critic.models import known_models, load_critic
from clipig.critic.weights import ModelError
from clipig.mini import evaluate, train, world


@pytest.mark.parametrize("name", list(model.CHECKPOINTS))
def test_checkpoints_are_small_checksummed_and_documented(name):
    path = model.CHECKPOINTS[name]
    info = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size == info["bytes"] <= 5 * 2**20
    for key in ("seed", "steps", "accuracy", "date", "command", "sha256", "train_wall_s", "train_cpu_s"):
        assert key in info, key
    assert info["command"].startswith("python -m clipig.mini.train ")
    assert min(info["accuracy"][a] for a in ("colour", "background")) >= 0.9
    # the critic that renders first and the referee know shapes best; the other critics of ensembles less
    assert info["accuracy"]["shape"] >= (0.9 if name in ("mini", "mini-referee") else 0.85)


def test_the_models_are_trained_apart():
    """Every shipped model, and every stage of one, from a seed of its own: no critic is the referee's twin."""
    def seeds(info):
        return [info["seed"], *(seeds(info["init"]) if info.get("init") else [])]
    infos = [json.loads(path.with_suffix(".json").read_text()) for path in model.CHECKPOINTS.values()]
    every = [s for info in infos for s in seeds(info)]
    assert len(every) == len(set(every)) >= len(infos)
    assert len({info["sha256"] for info in infos}) == len(infos)


def test_a_damaged_checkpoint_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "mini.pt"
    shutil.copy(model.CHECKPOINTS["mini"], copy)
    shutil.copy(model.CHECKPOINTS["mini"].with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setitem(model.CHECKPOINTS, "mini", copy)
    monkeypatch.setattr(critic_module, "_CRITICS", {})
    with pytest.raises(ModelError, match="sha256"):
        load_critic("mini", "cpu")


def test_listed_and_loaded_like_any_open_clip_model(mini, capsys):
    from open_clip.model import CLIP

    from clipig.cli import main
    names = {m["name"]: m for m in known_models()}
    assert names["mini"]["cached"] and names["mini-referee"]["cached"]
    assert main(["models"]) == 0
    assert "mini-referee" in capsys.readouterr().out
    assert isinstance(mini.model, CLIP)
    assert mini.input_size == 64
    assert mini.model.token_embedding.num_embeddings == 49408  # the standard tokenizer's vocabulary


def test_a_mini_checkpoint_of_ones_own_loads_by_its_path(mini, tmp_path):
    """What `python -m clipig.mini.train -o my.pt` writes is a model like any checkpoint file (by path, with
    no sha256 beside it); a file that is not one still gets the usual message."""
    checkpoint = torch.load(model.CHECKPOINTS["mini"], map_location="cpu", weights_only=True)
    torch.save(checkpoint, tmp_path / "my.pt")
    own = load_critic(str(tmp_path / "my.pt"), "cpu")
    texts = ["a red circle on a blue background", "a green star"]
    assert torch.allclose(own.encode_text(texts), mini.encode_text(texts), atol=1e-6)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(own.encode_image(images), mini.encode_image(images), atol=1e-5)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="architecture"):
        load_critic(str(tmp_path / "other.pt"), "cpu")


def test_words_outside_the_world_share_one_embedding(mini):
    """Unknown tokens all read the same row, so `dog` and `cat` (one BPE token each) are the same text."""
    dog, cat, red = mini.encode_text(["a dog on a blue background", "a cat on a blue background",
                                      "a red on a blue background"])
    assert torch.equal(dog, cat)
    assert not torch.allclose(dog, red)


def test_zero_shot_on_fresh_scenes(mini, referee):
    for critic in (mini, referee):
        accuracy = evaluate.zero_shot(critic.encode_image, critic.encode_text, critic.input_size, scenes=60,
                                      seed=1, attributes=("shape", "colour", "background"))
        assert min(accuracy.values()) >= 0.8, accuracy


def test_views_like_clipig_makes_them_are_still_recognised(mini):
    """The critic is trained on augmented views: a drawn scene at 128² (resized by the critic), shifted,
    rotated and noisy, still matches its caption better than the same caption with the colours swapped."""
    import torchvision.transforms.v2.functional as TF
    rng = np.random.default_rng(4)
    wins = 0
    for _ in range(12):
        caption = evaluate._basic(rng)
        swapped = world.Caption(shape=caption.shape, colour=caption.background, background=caption.colour)
        image = evaluate.to_tensor(world.render(world.scene_for(caption, rng), 128))
        angle = float(rng.uniform(-20, 20))
        view = TF.rotate(image, angle) + 0.08 * torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(0))
        sims = mini.similarity(mini.encode_image(view[None]), mini.encode_text([caption.text(), swapped.text()]))
        wins += int(sims[0, 0] > sims[0, 1])
    assert wins >= 11


def test_rate_works_with_the_referee(tmp_path, capsys):
    from PIL import Image

    from clipig.cli import main
    rng = np.random.default_rng(2)
    caption = world.parse("a yellow star on a blue background")
    Image.fromarray(world.render(world.scene_for(caption, rng), 128)).save(tmp_path / "star.png")
    code = main(["rate", str(tmp_path / "star.png"), "--model", "mini-referee", "--device", "cpu",
                 "-t", caption.text(), "a blue star on a yellow background", "a yellow circle on a blue background"])
    assert code == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split()
    values = [float(v) for v in row[1:]]
    assert values[0] > max(values[1:])


def test_every_word_of_the_world_has_its_own_embedding_row():
    """Each token of each word is in the stored vocabulary (a word outside it would read the shared row of
    unknown words, so `a red square` and `a white star` would be the same text)."""
    import open_clip
    vocab = set(train.vocabulary())
    full = open_clip.get_tokenizer(model.TOKENIZER)
    for word in world.words():
        assert set(full([word])[0].tolist()) <= vocab, word


def test_a_tie_is_not_a_correct_answer():
    """A model that gives every caption the same features scores 0, not 100% (the true caption is listed
    first among the candidates)."""
    same = lambda texts: torch.ones(len(texts), 4)  # noqa: E731
    accuracy = evaluate.zero_shot(lambda images: torch.ones(len(images), 4), same, 16, scenes=5,
                                  attributes=("shape", "colour"))
    assert accuracy == {"shape": 0.0, "colour": 0.0}
