"""Training a mini CLIP (`python -m clipig.mini.train`): reproducible, loadable, and the two ways it is made
hard to fool (views moved within a radius to fool it; pictures an optimiser makes against it)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipig.critic import mini
from clipig.critic.models import load_critic
from clipig.mini import evaluate, reading, train, world


def trained_at_init():
    """The shipped `mini` as the training holds it (compact vocabulary), with its encoders."""
    checkpoint = torch.load(mini.CHECKPOINTS["mini"], map_location="cpu", weights_only=True)
    net = mini.compact(checkpoint)
    return net.eval(), train.encoders(net, mini.Compact(checkpoint["vocab"]), mini.tokenizer())


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_short_training_is_reproducible_and_loads_by_its_path(tmp_path):
    argv = ["--seed", "5", "--steps", "2", "--batch", "8", "--threads", "1", "--eval-scenes", "4",
            "--adversarial", "1", "--fooled", "2", "--fool-steps", "1", "--misshapen", "2", "--twin-weight", "1",
            "--made-weight", "1",
            "--log-every", "1"]
    for name, workers in (("a.pt", "1"), ("b.pt", "0")):  # batches drawn by a worker process or by the training
        assert train.main([*argv, "--workers", workers, "-o", str(tmp_path / name)]) == 0
    assert train.main([*argv[:1], "6", *argv[2:], "-o", str(tmp_path / "c.pt")]) == 0
    unweighed = [arg if arg != "--made-weight" else "--twin-weight" for arg in argv]  # the pool's weight left out
    assert train.main([*unweighed, "--workers", "1", "-o", str(tmp_path / "d.pt")]) == 0
    a, b, c, d = (weights(tmp_path / n) for n in ("a.pt", "b.pt", "c.pt", "d.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(a[k], d[k]) for k in a)
    critic = load_critic(str(tmp_path / "a.pt"), "cpu")
    assert critic.input_size == 64 and critic.encode_text(["a red circle"]).shape == (1, 64)


def test_views_moved_to_fool_the_model_stay_within_their_radius_and_do_fool_it():
    net, (encode_image, encode_text) = trained_at_init()
    rng = np.random.default_rng(0)
    captions = [world.sample_caption(rng) for _ in range(8)]
    texts = [c.text() for c in captions]
    images = torch.stack([evaluate.to_tensor(world.render(world.scene_for(c, rng), 64)) for c in captions])
    with torch.no_grad():
        text = encode_text(texts)
        scale = net.logit_scale.exp()
        before = train.contrastive_loss(encode_image(images), text, scale, texts)
    moved = train.adversarial(net, images, text, texts, 1.5, 3, torch.Generator().manual_seed(0))
    assert ((moved - images).flatten(1).norm(dim=1) <= 1.5 + 1e-4).all()
    with torch.no_grad():
        after = train.contrastive_loss(encode_image(moved), text, scale, texts)
    assert after > 3 * before, (before, after)  # descending instead would lower it


# 128: larger pictures, seen through turned, resized views; 32: smaller ones turned by any angle (--fool-turn)
@pytest.mark.parametrize("picture_size, turn", [(0, 10), (128, 10), (32, 180)])
def test_the_optimiser_made_pictures_come_closer_to_their_captions(picture_size, turn):
    net, (encode_image, encode_text) = trained_at_init()
    pool = train.Fooled(6, 64, seed=0, picture_size=picture_size, turn=turn)
    assert pool.images.shape[-1] == (picture_size or 64)
    start = F.interpolate(pool.images, size=64, mode="bilinear", antialias=True, align_corners=False)

    def similarity(images, captions):
        with torch.no_grad():
            return (F.normalize(encode_image(images), dim=-1)
                    * F.normalize(encode_text([c.text() for c in captions]), dim=-1)).sum(-1)

    torch.manual_seed(0)
    made, captions = pool.step(net, 6, 20, encode_text)
    order = [pool.captions.index(c) for c in captions]  # which pictures of the pool were taken
    gain = similarity(made, captions) - similarity(start[order], captions)
    assert (gain > 0).sum() >= 5 and gain.mean() > 0.1, gain  # noisy views: one may fall back
    assert made.shape[-1] == 64 and made.min() >= 0 and made.max() <= 1  # shown at the model's input size
    kept = pool.images[order]
    assert kept.shape[-1] == (picture_size or 64)
    assert torch.allclose(F.interpolate(kept, size=64, mode="bilinear", antialias=True, align_corners=False), made)


@pytest.mark.parametrize("turn, moved", [(10, False), (180, True)])
def test_views_of_made_pictures_are_turned_by_up_to_fool_turn_degrees(turn, moved):
    """A bright top-left quarter stays there when turned by up to 10 degrees, and reaches the opposite
    quarter of some views when turned by any angle."""
    pool = train.Fooled(1, 64, seed=0, picture_size=32, turn=turn)
    pictures = torch.zeros(64, 3, 32, 32)
    pictures[..., :16, :16] = 1
    views = pool.views(pictures)
    assert views.shape[-1] == 64
    corner, opposite = views[..., :24, :24].mean(), views[..., 40:, 40:].mean()
    assert (corner < 0.5 and opposite > 0.1) if moved else (corner > 0.8 and opposite < 0.05), (corner, opposite)


def test_a_made_picture_that_matches_a_caption_costs_the_model():
    """Extra images match no caption: the more one looks like a caption to the model, the higher the loss;
    without extra images the loss is CLIP's."""
    torch.manual_seed(0)
    image, text, scale = torch.randn(4, 8), torch.randn(4, 8), torch.tensor(10.0)
    texts = ["a", "b", "c", "d"]
    plain = train.contrastive_loss(image, text, scale, texts)
    labels = torch.arange(4)
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    assert torch.isclose(plain, (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2)
    unlike = train.contrastive_loss(torch.cat([image, -text[:1]]), text, scale, texts)
    like = train.contrastive_loss(torch.cat([image, text[:1]]), text, scale, texts)
    assert plain < unlike < like


# 0: twelve free corners (`--fool-drawing`); 8: the first image's smooth outlines (`--fool-harmonics 8`)
@pytest.mark.parametrize("harmonics", [0, 8])
def test_drawings_made_against_the_model_come_closer_to_their_captions_and_stay_drawings(harmonics):
    """`--fool-drawing`: the pool's pictures are polygon drawings moved by their own optimisers; the model's
    weights get no gradient from making them, and what the training is shown is what the drawings show."""
    net, (encode_image, encode_text) = trained_at_init()
    pool = train.FooledDrawings(6, 64, seed=0, picture_size=96, turn=30, harmonics=harmonics)

    def similarity(images, captions):
        with torch.no_grad():
            return (F.normalize(encode_image(images), dim=-1)
                    * F.normalize(encode_text([c.text() for c in captions]), dim=-1)).sum(-1)

    def shown(index):
        with torch.no_grad():
            return pool._shown(torch.stack([pool.drawings[i][0].image() for i in index]))

    start = shown(range(6))
    made, captions = pool.step(net, 6, 20, encode_text)
    order = [pool.captions.index(c) for c in captions]
    gain = similarity(made, captions) - similarity(start[order], captions)
    assert (gain > 0).sum() >= 5 and gain.mean() > 0.1, gain
    assert torch.equal(made, shown(order)) and made.shape[-1] == 64
    assert all(p.grad is None for p in net.parameters())
    drawing = pool.drawings[order[0]][0]
    assert isinstance(drawing, train.Polygons) and drawing.options["squash"] == "tanh"
    assert (drawing.options["harmonics"], drawing.options["corners"]) == ((8, 32) if harmonics else (0, 12))
    assert drawing.options.get("lowest_wave", 1) == (3 if harmonics else 1)


def test_the_drawn_scenes_beside_the_pool_are_shown_as_its_pictures_with_made_weight():
    """`--made-weight`: the scene beside a pool picture is drawn at the pool's size and resized as the picture
    is (so resizing cannot tell them apart); without it, drawn at the model's input as before."""
    pool = train.Fooled(4, 64, seed=0, picture_size=96)
    caption = world.parse("a red square on a blue background")
    plain, alike = (pool.drawn([caption], np.random.default_rng(0), alike=flag) for flag in (False, True))
    assert plain.shape == alike.shape == (1, 3, 64, 64)

    def scene(side):
        return evaluate.to_tensor(world.render(world.scene_for(caption, np.random.default_rng(0)), side))[None]

    assert torch.equal(plain, scene(64))
    assert torch.equal(alike, pool._shown(scene(96))) and not torch.equal(alike, plain)


@pytest.mark.parametrize("argv", [["--made-weight", "1"], ["--twin-weight", "1"]])
def test_a_weight_without_its_pictures_is_refused(argv, capsys):
    with pytest.raises(SystemExit):
        train.main([*argv, "-o", "unused.pt"])
    assert "give --" in capsys.readouterr().err


def test_the_twin_loss_rewards_a_caption_that_prefers_its_drawn_scene_to_the_twin():
    """`--twin-weight`: log 2 where scene and twin look alike to the model, less the further the twin is from
    the caption, and its gradient moves the twin away from the caption and the scene towards it."""
    g = torch.Generator().manual_seed(0)
    text, drawn = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    alike = train.twin_loss(drawn, drawn.clone(), text, 20.0)
    assert alike == pytest.approx(np.log(2), abs=1e-5)
    assert train.twin_loss(text, -text, text, 20.0) < 1e-6  # the scene is the caption, the twin its opposite
    twins = drawn.clone().requires_grad_()
    scenes = drawn.clone().requires_grad_()
    train.twin_loss(scenes, twins, text, 20.0).backward()
    assert ((twins.grad * text).sum(-1) > 0).all() and ((scenes.grad * text).sum(-1) < 0).all()


def test_misshapen_twins_keep_the_scene_and_lose_its_shapes():
    """`--misshapen`: each twin is its drawn scene with the things warped; the pixel reader finds the
    caption's shapes in the drawn scenes and in few twins, while the twin keeps its scene's colours."""
    drawn, masks, captions, odd = train.misshapen(seed=1, step=0, count=12, image_size=64)
    assert drawn.shape == odd.shape == (12, 3, 64, 64) and masks.shape == (12, 1, 64, 64) and len(captions) == 12

    def shown(images):
        return [reading.shapes_shown((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), caption)
                for image, caption in zip(images, captions)]
    judged = [(a, b) for a, b in zip(shown(drawn), shown(odd)) if a is not None]
    assert all(a for a, _ in judged) and sum(b for _, b in judged) <= len(judged) // 4, judged
    changed = (drawn - odd).abs().amax(1) > 0.1
    assert 0.005 < changed.float().mean() < 0.2  # the things' edges moved, the rest of the scene is as it was
    corners = [(0, 0), (0, -1), (-1, 0), (-1, -1)]
    assert all(torch.equal(drawn[:, :, y, x], odd[:, :, y, x]) for y, x in corners)
