import hashlib
import io
import logging
import time
import urllib.error
import urllib.request

import pytest
import torch
from PIL import Image

from clipig.critic import images, views, weights
from clipig.critic import models as critic
from clipig.critic.images import ImageError
from clipig.critic.names import parse
from clipig.critic.weights import ModelError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A private cache dir and a fresh critic cache for every test; no real network."""
    monkeypatch.setenv("CLIPIG_CACHE", str(tmp_path / "cache"))
    critic.clear_cache()
    yield tmp_path / "cache"
    critic.clear_cache()


@pytest.fixture
def tiny():
    return critic.load_critic("random:tiny")


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def serve(monkeypatch, payloads: dict) -> list:
    """Patch urlopen to serve `payloads` (url -> bytes or exception); returns the list of requested urls."""
    calls = []

    def urlopen(request, timeout=None):
        url = getattr(request, "full_url", request)
        calls.append(url)
        payload = payloads.get(url, urllib.error.URLError("no network in tests"))
        if isinstance(payload, Exception):
            raise payload
        return FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def png_bytes(color=(255, 0, 0), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_checkpoint() -> bytes:
    """An OpenAI-format state dict of the tiny CLIP (what a downloaded ViT-B-32.pt would contain)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = critic._tiny_clip()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------- loading

def test_random_weights_are_deterministic_and_leave_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = critic.load_critic("random:tiny")
    assert torch.equal(torch.get_rng_state(), state)
    assert critic.load_critic("random:tiny") is first  # cached per (name, device)
    critic.clear_cache()
    second = critic.load_critic("random:tiny")
    assert second is not first
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_tiny_attributes(tiny):
    assert (tiny.name, tiny.device, tiny.input_size, tiny.embed_dim) == ("random:tiny", torch.device("cpu"), 224, 32)
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())


def test_random_openai_arch_without_warning_noise(caplog):
    with caplog.at_level(logging.WARNING):
        model = critic.load_critic("random:ViT-B/32")
    assert (model.input_size, model.embed_dim) == (224, 512)
    assert not any("No pretrained weights" in r.getMessage() for r in caplog.records)


def test_unknown_model_names_suggest_close_matches():
    with pytest.raises(ModelError, match="ViT-B/32"):
        critic.load_critic("ViT-B/33")
    with pytest.raises(ModelError, match="laion2b_s34b_b79k"):
        critic.load_critic("ViT-B-32/laion2b_s34b_b79")
    with pytest.raises(ModelError, match="pretrained tag"):
        critic.load_critic("ViT-B-32")
    with pytest.raises(ModelError, match="random:ViT-B-32"):
        critic.load_critic("random:ViT-B-33")


def test_resolve_device():
    assert critic.resolve_device("cpu") == torch.device("cpu")
    assert critic.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelError, match="auto, cpu, cuda"):
        critic.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            critic.resolve_device("cuda:1")


def test_local_checkpoints(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    path.write_bytes(tiny_checkpoint())
    model = critic.load_critic(str(path))
    assert model.embed_dim == 32
    other = tmp_path / "weights.pt"
    other.write_bytes(path.read_bytes())
    with pytest.raises(ModelError, match="ARCH:/path"):
        critic.load_critic(str(other))
    with pytest.raises(ModelError, match="not found"):
        critic.load_critic(str(tmp_path / "missing.pt"))
    with pytest.raises(ModelError, match="not found"):
        critic.load_critic(f"ViT-B-32:{tmp_path / 'missing.safetensors'}")


def test_open_clip_checkpoints_are_routed_to_create_model(tmp_path, monkeypatch):
    import open_clip

    calls = []
    monkeypatch.setattr(open_clip, "create_model", lambda arch, pretrained=None, device="cpu", **kw:
                        calls.append((arch, pretrained)) or critic._tiny_clip())
    explicit = tmp_path / "weights.safetensors"
    inferred = tmp_path / "ViT-B-16-quickgelu_finetuned.pt"
    for path in (explicit, inferred):
        path.write_bytes(b"fake")
    critic.load_critic(f"ViT-L-14:{explicit}")
    critic.load_critic(str(inferred))
    assert calls == [("ViT-L-14", str(explicit)), ("ViT-B-16-quickgelu", str(inferred))]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_detection(tmp_path):
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "jit.pt"))
    torch.save({"w": torch.zeros(1)}, tmp_path / "state.pt")
    assert weights._is_torchscript(tmp_path / "jit.pt")
    assert not weights._is_torchscript(tmp_path / "state.pt")


# ---------------------------------------------------------------- downloads

def test_offline_download_gives_helpful_error(monkeypatch, cache):
    serve(monkeypatch, {})
    with pytest.raises(ModelError) as info:
        critic.load_critic("ViT-B/32")
    message = str(info.value)
    for part in ("'ViT-B/32'", "no network in tests", str(cache / "models"), "--model /path/to/ViT-B-32.pt",
                 "random:ViT-B/32"):
        assert part in message
    assert not list((cache / "models").iterdir())


def test_checksum_mismatch_leaves_no_file(monkeypatch, tmp_path):
    url = "https://example.com/clip/models/" + "0" * 64 + "/ViT-B-32.pt"
    serve(monkeypatch, {url: b"not the weights"})
    with pytest.raises(ModelError, match="Checksum mismatch"):
        weights.download(url, tmp_path / "models" / "ViT-B-32.pt", weights._expected_sha256(url))
    assert not list((tmp_path / "models").iterdir())


def test_expected_sha256():
    sha = "ab" * 32
    assert weights._expected_sha256(f"https://openaipublic.azureedge.net/clip/models/{sha}/RN50.pt") == sha
    url = "https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/rn50-quickgelu-cc12m-f000538c.pt"
    assert weights._expected_sha256(url) == "f000538c"
    assert weights._expected_sha256("https://dl.fbaipublicfiles.com/MMPT/metaclip/b32_400m.pt") is None


def test_interrupted_download_leaves_no_file(monkeypatch, tmp_path):
    class Broken(FakeResponse):
        def read(self, n=-1):
            raise ConnectionResetError("connection lost")

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=None: Broken(b"x" * 10))
    with pytest.raises(ConnectionResetError):
        weights.download("https://example.com/file.pt", tmp_path / "file.pt")
    assert not list(tmp_path.iterdir())


def test_fake_download_lands_atomically_and_is_reused(monkeypatch, cache):
    data = tiny_checkpoint()
    sha = hashlib.sha256(data).hexdigest()
    url = f"https://openaipublic.example/clip/models/{sha}/ViT-B-32.pt"
    monkeypatch.setattr(weights, "_pretrained_cfg", lambda arch, tag: {"url": url})
    calls = serve(monkeypatch, {url: data})
    first = critic.load_critic("ViT-B/32")
    assert calls == [url]
    assert first.embed_dim == 32
    assert [p.name for p in (cache / "models").iterdir()] == ["ViT-B-32.pt"]
    assert (cache / "models" / "ViT-B-32.pt").read_bytes() == data
    assert {"name": "ViT-B/32", "source": "openai", "cached": True} in critic.known_models()

    critic.clear_cache()
    serve(monkeypatch, {})  # offline now: the cached file must be used
    second = critic.load_critic("ViT-B/32")
    assert torch.equal(first.encode_text(["a cat"]), second.encode_text(["a cat"]))


def test_known_models():
    models = critic.known_models()
    names = {m["name"]: m for m in models}
    assert names["ViT-L/14@336px"] == {"name": "ViT-L/14@336px", "source": "openai", "cached": False}
    assert names["ViT-B-32/laion2b_s34b_b79k"]["source"] == "open_clip"
    assert names["random:tiny"]["cached"]
    assert "ViT-B-32/openai" not in names


# ---------------------------------------------------------------- encoding

def test_gradient_flows_to_pixels_only(tiny):
    pixels = torch.rand(2, 3, 224, 224, requires_grad=True)
    features = tiny.encode_image(pixels)
    assert features.shape == (2, 32) and features.dtype == torch.float32
    features.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.model.parameters())


def test_encode_image_normalises_and_resizes(tiny):
    pixels = torch.rand(1, 3, 224, 224)
    mean = torch.tensor(views.OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(views.OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(tiny.encode_image(pixels), tiny.model.encode_image((pixels - mean) / std), atol=1e-5)
        small = torch.rand(3, 3, 100, 120)
        assert tiny.encode_image(small).shape == (3, 32)


def test_forward_backward_is_fast(tiny):
    pixels = torch.rand(4, 3, 224, 224, requires_grad=True)
    tiny.encode_image(pixels).sum().backward()  # warm-up
    start = time.perf_counter()
    for _ in range(5):
        tiny.encode_image(pixels).sum().backward()
    assert (time.perf_counter() - start) / 5 < 0.5  # typically ~10 ms; generous for loaded CI machines


def test_encode_text_is_cached(tiny, monkeypatch):
    calls = []
    original = tiny.model.encode_text
    monkeypatch.setattr(tiny.model, "encode_text", lambda tokens: calls.append(len(tokens)) or original(tokens))
    first = tiny.encode_text(["a cat", "a dog", "a cat"])
    assert first.shape == (3, 32) and not first.requires_grad
    assert torch.equal(first[0], first[2]) and not torch.equal(first[0], first[1])
    second = tiny.encode_text(["a dog", "a cat"])
    assert calls == [2]
    assert torch.equal(second, first[[1, 0]])
    assert tiny.encode_text([]).shape == (0, 32)


def test_similarity(tiny):
    images = tiny.encode_image(torch.rand(3, 3, 224, 224))
    texts = tiny.encode_text(["a", "b", "c", "d"])
    sim = tiny.similarity(images, texts)
    assert sim.shape == (3, 4)
    assert sim.abs().max() <= 100.0 + 1e-3
    assert torch.allclose(tiny.similarity(texts, texts).diagonal(), torch.full((4,), 100.0))


# ---------------------------------------------------------------- images

def test_load_image(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes((255, 0, 0), (40, 30)))
    image = images.load_image(str(path))
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert torch.allclose(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert images.load_image(str(path), 16).shape == (3, 16, 16)
    assert images.load_image(str(path), (20, 10)).shape == (3, 10, 20)
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    assert images.load_image(str(tmp_path / "gray.png")).shape == (3, 8, 8)


def test_load_image_errors(tmp_path):
    with pytest.raises(ImageError, match="not found.*nope.png"):
        images.load_image(str(tmp_path / "nope.png"))
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="Could not read image"):
        images.load_image(str(tmp_path / "text.png"))
    assert issubclass(ImageError, ModelError)


def test_url_images_are_cached(tiny, monkeypatch, cache):
    url = "https://example.com/cat.png"
    calls = serve(monkeypatch, {url: png_bytes((0, 0, 255))})
    image = images.load_image(url, 32)
    assert image.shape == (3, 32, 32) and image[2].min() == 1.0
    assert (cache / "img" / hashlib.md5(url.encode()).hexdigest()).is_file()
    features = tiny.encode_image_files([url, url])
    assert features.shape == (2, 32) and torch.equal(features[0], features[1])
    assert calls == [url]
    assert torch.equal(tiny.encode_image_files([url]), features[:1])
    assert calls == [url]


def test_url_image_errors(monkeypatch, cache):
    big, html = "https://example.com/big.png", "https://example.com/page.png"
    serve(monkeypatch, {big: b"x" * 2000, html: b"<html></html>"})
    monkeypatch.setattr(images, "IMAGE_MAX_BYTES", 1000)
    with pytest.raises(ImageError, match="larger than"):
        images.load_image(big)
    with pytest.raises(ImageError, match="Could not read image"):
        images.load_image(html)
    with pytest.raises(ImageError, match="no network"):
        images.load_image("https://example.com/offline.png")
    assert not list((cache / "img").iterdir())


def test_encode_image_files_matches_encode_image(tiny, tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(png_bytes((10, 200, 30), (50, 70)))
    features = tiny.encode_image_files([str(path)])
    with torch.no_grad():
        expected = tiny.encode_image(images.load_image(str(path), 224)[None])
    assert torch.allclose(features, expected)


# ---------------------------------------------------------------- the fast path (clipig.critic.fast_vision)

def _features_and_gradient(model, pixels, autocast=False):
    pixels = pixels.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        features = model.encode_image(pixels).float()
    (features * torch.linspace(-1, 1, features.shape[1])).sum().backward()
    return features.detach(), pixels.grad


def _plain_and_fast(build):
    """Two copies of one model with the same weights, the second sped up."""
    from clipig.critic import fast_vision
    plain, fast = build().eval().requires_grad_(False), build().eval().requires_grad_(False)
    fast.load_state_dict(plain.state_dict())
    return plain, fast, fast_vision.speed_up(fast.visual)


def _assert_same(plain, fast, pixels, feature_tol, grad_tol, autocast=False):
    f0, g0 = _features_and_gradient(plain, pixels, autocast)
    f1, g1 = _features_and_gradient(fast, pixels, autocast)
    assert (f1 - f0).abs().max() <= feature_tol * f0.abs().max()
    assert (g1 - g0).abs().max() <= grad_tol * g0.abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tiny", "ViT-B-32"])
def test_vit_fast_path_gives_the_same_features_and_pixel_gradients(arch):
    def build():  # the architecture's widths and heads, at most 3 blocks: what holds for one holds for each
        model = critic.random_model(parse(f"random:{arch}"))[0]
        model.visual.transformer.resblocks = model.visual.transformer.resblocks[:3]
        return model

    plain, fast, changed = _plain_and_fast(build)
    blocks = len(plain.visual.transformer.resblocks)
    assert changed == ["patch embedding as matmul", "final projection per run",
                       f"{blocks} attention blocks with one in-projection + SDPA",
                       f"{2 * blocks} layers with bf16 weights cast once"]  # the MLPs' two layers
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    _assert_same(plain, fast, pixels, 1e-5, 1e-4)  # float32 rounding: measured 8e-7 and 2e-6 (ViT-B-32)
    _assert_same(plain, fast, pixels, 0.05, 0.1, autocast=True)  # bf16 autocast: measured 0.010 and 0.012
    assert list(plain.state_dict()) == list(fast.state_dict())  # the same parameters under the same names


def test_resnet_runs_channels_last_with_the_same_features():
    from open_clip.model import CLIP

    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return CLIP(embed_dim=32, vision_cfg=dict(image_size=64, layers=(1, 1, 1, 1), width=16),
                        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))

    plain, fast, changed = _plain_and_fast(build)
    assert changed == ["channels_last", "23 layers with bf16 weights cast once"]  # convolutions, attention pool
    assert fast.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_same(plain, fast, torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), 1e-5, 1e-4)


def test_the_critic_uses_the_fast_path(tiny):
    from clipig.critic.fast_vision import PatchEmbedding
    assert isinstance(tiny.model.visual.conv1, PatchEmbedding) and len(tiny.speedups) == 4
    assert "final projection per run" in tiny.speedups


# ---------------------------------------------------------------- models on the Hugging Face hub

TINY_CFG = {"embed_dim": 32, "quick_gelu": True,
            "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


def hub_cache(cache, repo: str, mean=(0.5, 0.5, 0.5)) -> torch.nn.Module:
    """Put an open_clip model of tiny size into the hub cache as the hub client leaves a download there
    (refs/main names the snapshot that holds `open_clip_config.json` and the weights); returns the model."""
    import json

    from open_clip.model import CLIP
    from safetensors.torch import save_file
    torch.manual_seed(7)
    model = CLIP(**TINY_CFG)
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / "hf" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    (snapshot / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": list(mean), "std": [0.25, 0.25, 0.25]}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snapshot / "open_clip_model.safetensors"))
    return model


def test_hub_names_are_read():
    assert parse("hf-hub:chs20/fare2-clip").kind == "hub" and parse("hf-hub:chs20/fare2-clip").path == "chs20/fare2-clip"
    assert parse("hf-hub:fare2-clip").kind == "unknown"
    with pytest.raises(ModelError, match=r"expected hf-hub:ORG/NAME"):
        critic.load_critic("hf-hub:no slash")


def test_a_hub_model_loads_from_the_cache_without_network(monkeypatch, cache):
    """`model: hf-hub:ORG/NAME` with the files in the cache: no request at all, the model's own weights,
    preprocessing and tokenizer."""
    calls = serve(monkeypatch, {})
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    original = hub_cache(cache, "robust-org/tiny-clip", mean=(0.25, 0.5, 0.75))
    loaded = critic.load_critic("hf-hub:robust-org/tiny-clip")
    assert calls == []
    assert loaded.name == "hf-hub:robust-org/tiny-clip" and loaded.input_size == 64
    assert torch.equal(loaded._mean.flatten(), torch.tensor([0.25, 0.5, 0.75]))
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    features = loaded.encode_text(["a red circle"])
    assert features.shape == (1, 32) and torch.isfinite(features).all()


def test_a_hub_model_offline_and_not_cached_gives_a_clear_message(monkeypatch, cache):
    serve(monkeypatch, {})
    with pytest.raises(ModelError) as info:
        critic.load_critic("hf-hub:robust-org/not-here")
    message = str(info.value)
    for part in ("'hf-hub:robust-org/not-here'", "no network in tests", str(cache / "hf"), "random:ViT-B/32"):
        assert part in message
