"""Long runs: provenance in every PNG, replay, exact resume, rank/batch continuation, video, memory passes and
the NaN/inf guard (all with the tiny random CLIP on the CPU)."""

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import make_engine
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from clipig.cli import main
from clipig.files.statefile import load as load_state
from clipig.run import guard as finite
from clipig.run import passes as memory
from clipig.run.engine import Engine
from clipig.tools import workers

TINY = ["--model", "random:tiny", "--device", "cpu", "-q"]

# every piece of state matters here: a resolution change (new optimizer), `fair` scales, best-of selection,
# random transforms, a random expression and post-processing
EXPERIMENT = """
epochs: 8
resolution: 32 if t < .5 else 40
learnrate: 1 + random()/10
snapshot_interval: 0
targets:
  - batch_size: 3
    feature_scale: fair
    select: best
    features:
      - text: a curly spoon
      - text: the sea
    transforms:
      - random_shift: 0 1
      - noise: 0.1*ti
postproc:
  - blur: {kernel_size: 3}
    end: 30%
"""


def write(tmp_path, text=EXPERIMENT, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def pixels(path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


# ---------------------------------------------------------------- provenance

def test_render_info_render_from_the_png_gives_the_same_image(tmp_path, tiny, capsys):
    config = write(tmp_path)
    assert main([config, "-o", f"{tmp_path}/a.png", "--seed", "7", *TINY]) == 0
    text = Image.open(tmp_path / "a.png").text
    run = json.loads(text["clipig:run"])
    assert (run["seed"], run["epoch"], run["epochs"], run["reason"], run["device"]) == (7, 8, 8, "done", "cpu")
    assert run["precision"] == "fp32" and run["threads"] == torch.get_num_threads() and run["runtime"] > 0
    assert run["versions"]["torch"] == torch.__version__ and run["versions"]["open_clip"]
    assert [m["name"] for m in run["models"]] == ["random:tiny"] and re.fullmatch(r"[0-9a-f]{64}",
                                                                                   run["models"][0]["sha256"])
    body = text["clipig:config"].split("\n\n", 1)[1]
    assert body == (tmp_path / "a.yaml").read_text().split("\n\n", 1)[1]  # the complete config, as in the sidecar

    capsys.readouterr()
    assert main(["info", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "finished 8 of 8 epochs, seed 7" in out and "precision fp32" in out
    assert f"random:tiny  sha256 {run['models'][0]['sha256']}" in out and f"torch {torch.__version__}" in out
    assert main(["info", "--config", str(tmp_path / "a.png")]) == 0
    recorded = capsys.readouterr().out
    assert yaml.safe_load(recorded)["seed"] == 7 and yaml.safe_load(recorded)["resolution"] == "32 if t < .5 else 40"

    (tmp_path / "b.yaml").write_text(recorded)
    assert main([str(tmp_path / "a.png"), "-o", f"{tmp_path}/c.png", "-q"]) == 0  # a PNG where a YAML goes
    assert main([str(tmp_path / "b.yaml"), "-o", f"{tmp_path}/d.png", "-q"]) == 0  # `info --config` output
    assert pixels(tmp_path / "c.png") == pixels(tmp_path / "a.png") == pixels(tmp_path / "d.png")


def test_snapshots_carry_provenance_and_other_pngs_are_refused(tmp_path, tiny, capsys):
    seen = {}

    def spy(event):  # after the writer has saved the snapshot of epoch 4
        if event.kind == "epoch" and event.epoch == 4:
            seen.update(json.loads(Image.open(tmp_path / "s.png").text["clipig:run"]))

    from clipig.files.output import OutputWriter
    engine = make_engine(EXPERIMENT.replace("snapshot_interval: 0", "snapshot_interval: 2"))
    engine.listeners = [OutputWriter(engine.config, tmp_path / "s.png"), spy]
    engine.run()
    assert (seen["reason"], seen["epoch"], seen["epochs"]) == ("running", 4, 8)

    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    for command in (["info"], ["replay"], []):
        assert main([*command, str(tmp_path / "plain.png"), *(TINY if not command else [])]) == 2
        assert "plain.png: this image has no CLIPig provenance" in capsys.readouterr().err


def test_a_run_continued_from_a_picture_says_so_and_is_not_replayed(tmp_path, tiny, capsys):
    """The live editor's continuation after edits starts from a picture no configuration holds: its PNG and
    sidecar say so, `clipig info` explains, `clipig replay` refuses instead of rendering something else."""
    from clipig.config.loader import load
    from clipig.files.output import OutputWriter
    from clipig.run.engine import open_run
    config = load(texts=[EXPERIMENT], overrides=["model=random:tiny", "device=cpu", "verbose=0"])
    open_run(config, [OutputWriter(config, tmp_path / "c.png")], state={"epoch": 5, "image": torch.rand(3, 9, 9)}).run()
    assert ("# (continued at epoch 5 from a picture of the live editor or the Python API, not stored)"
            in (tmp_path / "c.yaml").read_text())
    assert main(["info", str(tmp_path / "c.png")]) == 0
    assert "continued from a picture of the live editor or the Python API (not stored)" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "c.png"), "-q"]) == 2
    assert "c.png: the run continued from a picture of the live editor" in capsys.readouterr().err


def test_replay_is_identical_and_says_how_far_a_changed_image_is(tmp_path, tiny, capsys):
    assert main([write(tmp_path), "-o", f"{tmp_path}/a.png", *TINY]) == 0
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "a.png"), "-q"]) == 0
    assert "identical: the replay gives the same pixels, byte for byte (epoch 8 on cpu, precision fp32)" in \
        capsys.readouterr().out

    with Image.open(tmp_path / "a.png") as image:
        info, array = PngInfo(), np.asarray(image.convert("RGB")).copy()
        for key, value in image.text.items():
            info.add_itxt(key, value)
    array[0, :10] ^= 0x10
    Image.fromarray(array).save(tmp_path / "changed.png", pnginfo=info)
    assert main(["replay", str(tmp_path / "changed.png"), "-q", "-o", f"{tmp_path}/replayed.png"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"different \(epoch 8 .*\): 0\.\d+% of the values differ, max 16/255", out)
    assert pixels(tmp_path / "replayed.png") == pixels(tmp_path / "a.png")


# ---------------------------------------------------------------- resume

def interrupt_at(monkeypatch, epoch: int, at_once: bool) -> None:
    """Ctrl-C at `epoch`: once (the run ends after that epoch) or twice in the middle of its CLIP pass."""
    critique = Engine.critique

    def interrupted(self, targets, views, owners=None):
        if self.epoch == epoch:
            os.kill(os.getpid(), signal.SIGINT)
            if at_once:
                os.kill(os.getpid(), signal.SIGINT)
        return critique(self, targets, views, owners)

    monkeypatch.setattr(Engine, "critique", interrupted)


@pytest.mark.parametrize("at_once, settings", [
    (False, []),
    (True, []),
    (False, ["--set", "parameterization={type: fft, decorrelate: true}"]),
    (True, ["--set", "parameterization={type: pyramid, levels: '3 if t < .5 else 4'}"]),  # rebuilt at epoch 4
    (False, ["--model", "[random:tiny, random:tiny]"]),  # one model named twice
    (True, ["--model", "[random:tiny, {name: 'random:tiny:1', weight: 2}]", "--set", "parameterization=fft"]),
    (False, ["--set", "parameterization={type: polygons, softness: '2 if t < .5 else 1'}", "--set", "postproc=[]"]),
], ids=["ctrl-c", "ctrl-c-twice", "fft", "pyramid", "tiny-twice", "ensemble-fft", "polygons"])
def test_interrupted_and_resumed_equals_uninterrupted_byte_for_byte(tmp_path, tiny, monkeypatch, capsys, at_once,
                                                                    settings):
    config, args = write(tmp_path), ["--seed", "3", *TINY, *settings]
    assert main([config, "-o", f"{tmp_path}/whole.png", *args]) == 0
    stop = random.Random(f"{at_once} {settings}").randrange(4 if "pyramid" in str(settings) else 1, 7)
    with monkeypatch.context() as patch:
        interrupt_at(patch, stop, at_once)
        assert main([config, "-o", f"{tmp_path}/cut.png", *args]) == 130
    assert f"interrupted at epoch {stop + (not at_once)}" in capsys.readouterr().err
    state = load_state(tmp_path / "cut.state")
    assert (state["epoch"], state["reason"]) == (stop + (not at_once), "interrupted")
    assert pixels(tmp_path / "cut.png") != pixels(tmp_path / "whole.png")

    assert main(["resume", str(tmp_path / "cut.png"), "-q"]) == 0
    assert pixels(tmp_path / "cut.png") == pixels(tmp_path / "whole.png")
    assert sorted(p.name for p in tmp_path.glob("cut*")) == ["cut.png", "cut.state", "cut.yaml"]
    assert re.search(r"^# finished: 8 of 8 epochs \(\d+ in this run\)", (tmp_path / "cut.yaml").read_text(), re.M)
    assert load_state(tmp_path / "cut.state")["reason"] == "done"


def test_the_time_per_epoch_counts_the_epochs_of_the_runs_a_resumed_run_continues():
    from clipig.config.loader import load
    from clipig.files.output import sidecar_text
    from clipig.run.events import Facts
    config = load(texts=["epochs: 8\nstart_epoch: 2\n"])
    facts = Facts(seed=1, epoch=6, epochs=8, epochs_done=1, first_epoch=2, runtime=80.0, device="cpu",
                  precision="fp32", models=(), statistics=[], continued=False)  # 4 epochs in 80 s, 1 in this run
    assert "# runtime: 1m20s (20.000s per epoch) on cpu" in sidecar_text(config, facts, "stopped")


def test_epochs_extend_a_finished_run_into_a_new_image(tmp_path, tiny, capsys):
    config = write(tmp_path, EXPERIMENT.replace("epochs: 8", "epochs: 6"))
    assert main([config, "-o", f"{tmp_path}/a.png", "--video", f"{tmp_path}/a.mp4", "--set", "video.every=2",
                 *TINY]) == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("a.png", "a.yaml", "a.mp4")}
    assert main(["resume", str(tmp_path / "a.state")]) == 2
    assert "a.state: the run is at epoch 6 of 6: nothing to do; give --epochs N" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "a.png"), "--epochs", "9", "-q"]) == 0
    assert {name: (tmp_path / name).read_bytes() for name in before} == before  # a finished run is never lost
    run = json.loads(Image.open(tmp_path / "a-1.png").text["clipig:run"])
    assert (run["epoch"], run["epochs"]) == (9, 9) and (tmp_path / "a-1.state").is_file()
    assert re.search(r"^# finished: 9 of 9 epochs \(3 in this run\)", (tmp_path / "a-1.yaml").read_text(), re.M)
    assert len(frames(tmp_path / "a.mp4")) == 4 and len(frames(tmp_path / "a-1.mp4")) == 6  # + epochs 8 and 9


def test_a_half_finished_job_goes_on_from_its_state(tmp_path, tiny, monkeypatch):
    data = yaml.safe_load(EXPERIMENT) | {"model": "random:tiny", "device": "cpu", "verbose": 0, "seed": 5}
    job = {"name": "runs/run-0", "data": data, "meta": {}}
    whole = workers.render_job(job)

    started = []
    run = Engine.run
    monkeypatch.setattr(Engine, "run", lambda self: started.append(self.epoch) or run(self))
    half = {**job, "stop_at": 5, "state": str(tmp_path / "runs/run-0.state")}
    workers.render_job(half)  # as a run killed after epoch 5 leaves it (its state, no record)
    assert load_state(tmp_path / "runs/run-0.state")["epoch"] == 5

    records, failed = workers.run_jobs(tmp_path, [job], type("Args", (), {"backend": "local", "workers": 1,
                                                                          "quiet": True})())
    assert not failed and started == [0, 5]
    assert pixels(tmp_path / "runs/run-0.png") == Image.open(__import__("io").BytesIO(whole["png"])).tobytes()


# ---------------------------------------------------------------- video

def frames(path) -> list:
    from clipig.files.video import read_frames
    return list(read_frames(path))


def test_video_frames_and_a_resumed_video(tmp_path, tiny, monkeypatch):
    config = write(tmp_path)
    assert main([config, "-o", f"{tmp_path}/a.png", "--video", f"{tmp_path}/a.mp4", "--set", "video.every=4",
                 *TINY]) == 0
    video = frames(tmp_path / "a.mp4")
    assert len(video) == 3 and video[0].shape == (40, 40, 3)  # epochs 0, 4, 8 at the final resolution
    final = np.asarray(Image.open(tmp_path / "a.png"), dtype=float)  # H.264 blurs the colours of noise a bit
    assert np.abs(video[-1].mean((0, 1)) - final.mean((0, 1))).max() < 2
    assert np.abs(video[-1] - final).mean() < np.abs(video[0] - final).mean()

    for suffix in ("gif", "webp"):  # frames that look the same after encoding may be merged (longer shown)
        assert main([config, "-o", f"{tmp_path}/g.png", "--set", f"video={{file: {tmp_path}/g.{suffix}, every: 3}}",
                     *TINY]) == 0
        with Image.open(tmp_path / f"g.{suffix}") as animation:
            assert animation.is_animated and 2 <= animation.n_frames <= 5 and animation.size == (40, 40)

    with monkeypatch.context() as patch:
        interrupt_at(patch, 5, at_once=False)
        assert main([config, "-o", f"{tmp_path}/r.png", "--video", f"{tmp_path}/r.mp4", *TINY]) == 130
    assert len(frames(tmp_path / "r.mp4")) == 7  # epochs 0 to 6
    assert main(["resume", str(tmp_path / "r.png"), "-q"]) == 0
    assert len(frames(tmp_path / "r.mp4")) == 9 and not list(tmp_path.glob(".r.mp4*"))


def test_a_bad_video_name_is_a_config_error(tmp_path, tiny, capsys):
    assert main([write(tmp_path), "-o", f"{tmp_path}/", "--video", "v.avi", *TINY]) == 2
    assert "video.file: must end with .mp4, .gif or .webp" in capsys.readouterr().err


# ---------------------------------------------------------------- memory

MANY_VIEWS = """
epochs: 3
resolution: 48
targets:
  - batch_size: 6
    features: [{text: a curly spoon}]
    transforms: [{random_shift: 0 1}, {random_crop: 32}, {noise: 0.1}]
  - batch_size: 5
    features: [{text: the sea}]
    constraints: [{mean: {above: .6}}]
"""


def test_views_per_pass_equals_one_pass(tiny, monkeypatch):
    monkeypatch.setattr(memory, "free_memory", lambda device: 1e15)  # automatic: all views fit
    one = make_engine(MANY_VIEWS, "views_per_pass=0")
    split = make_engine(MANY_VIEWS, "views_per_pass=1")
    for engine in (one, split):
        engine.run()
    assert (one.passes.largest, split.passes.largest) == (7, 1)  # 6 views, and 1 of the deterministic target
    assert torch.allclose(one.image(unclamped=True), split.image(unclamped=True), atol=1e-5)
    def numbers(engine):
        return [f[k][m] for t in engine.statistics() for f in t["features"] for k in ("loss", "similarity")
                for m in ("mean", "min", "max")]
    assert numbers(one) == pytest.approx(numbers(split), rel=1e-5)


PASSES = """
epochs: 1
resolution: 224
targets:
  - batch_size: 32
    features: [{text: a}]
    transforms: [{noise: 0.1}]  # a random transform: 32 different views
"""


def epoch_memory(views_per_pass: int) -> int:
    """How far the resident memory of a fresh process grows (bytes) while it trains one epoch of 32 views through a
    ViT-S/32 (random weights; it keeps about 9 MB per view for the backward pass, much more than the views
    themselves). The process's peak is reset (/proc/self/clear_refs) once the model is open and the memory its
    creation freed is given back, so that neither the imports nor the model count."""
    code = f"""
import ctypes
from clipig.config.loader import load
from clipig.run.engine import open_run

def kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

config = load(texts=[{PASSES!r}], overrides=["model=random:ViT-S-32", "device=cpu", "seed=0",
                                            "views_per_pass={views_per_pass}", "precision=fp32"])  # fp32 on every CPU
engine = open_run(config)
ctypes.CDLL("libc.so.6").malloc_trim(0)
before = kib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
engine.run()
assert engine.passes.largest == {views_per_pass}
print(kib("VmHWM") - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1]) * 1024


@pytest.mark.slow
def test_smaller_passes_lower_the_peak_memory():
    small, large = epoch_memory(4), epoch_memory(32)
    assert large > 250 * 2**20  # 32 views keep about 290 MB at once
    assert small < large - 200 * 2**20  # passes of 4 keep about 36 MB at once


class BackwardRunsOut(torch.autograd.Function):
    """The identity, whose backward pass runs out of memory (after the losses and statistics of the epoch)."""

    @staticmethod
    def forward(ctx, features):
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("where, fits, steps", [("forward", 6, [3]), ("backward", 6, [3]), ("forward", 2, [3, 1])])
def test_automatic_passes_step_down_after_running_out_of_memory(tiny, monkeypatch, caplog, where, fits, steps):
    monkeypatch.setattr(memory, "free_memory", lambda device: 1e15)  # "everything fits"
    encode = tiny.encode_seen

    def limited(images, compiled=False, parts=None):  # the device can only take `fits` views at once
        if len(images) > fits and torch.is_grad_enabled():
            if where == "forward":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return BackwardRunsOut.apply(encode(images, compiled, parts))
        return encode(images, compiled, parts)

    text = MANY_VIEWS + "postproc:\n  - blur: {kernel_size: 3}\n"  # the retried epoch must not blur twice
    monkeypatch.setattr(tiny, "encode_seen", limited)
    engine = make_engine(text)
    with caplog.at_level(logging.WARNING, "clipig.run.passes"):
        assert engine.run() == "done"
    assert engine.passes.size == steps[-1] and engine.passes.largest == steps[-1]  # 7 views did not fit, 7 // 2 ...
    assert re.findall(r"out of memory at epoch (\d+): retrying with (\d+) views per pass", caplog.text) == [
        ("0", str(n)) for n in steps]
    monkeypatch.setattr(tiny, "encode_seen", encode)
    fixed = make_engine(text, f"views_per_pass={steps[-1]}")
    fixed.run()
    # the retried epoch drew the same random numbers, from the same image, and counted once
    assert torch.allclose(engine.image(unclamped=True), fixed.image(unclamped=True), atol=1e-6)
    assert [(t["epochs"], t["views"]) for t in engine.statistics()] == [(3, 18), (3, 3)]
    assert engine.statistics()[0]["features"][0]["similarity"] == pytest.approx(
        fixed.statistics()[0]["features"][0]["similarity"], rel=1e-5)


def test_automatic_passes_fit_the_measured_size_into_free_memory(tiny, monkeypatch):
    engine = make_engine(MANY_VIEWS)
    per_view = memory.bytes_per_view(engine.critic.critics[0], (3, 224, 224), engine.autocast, engine.precision,
                                      engine.device)
    assert 10_000 < per_view < 50 * 2**20
    monkeypatch.setattr(memory, "free_memory", lambda device: per_view * 3 / memory.USABLE + 1)
    engine.run()
    assert engine.passes.size == 3 and engine.passes.largest == 3


# ---------------------------------------------------------------- NaN and infinity

LARGE_RATE = "learnrate=1 if epoch < 3 else 1e30"


@pytest.mark.parametrize("settings, message", [  # finite numbers whose products are too large for float32
    ((LARGE_RATE, "learnrate_scale=1 if epoch < 3 else 1e30"),
     "(base * learnrate * learnrate_scale = 1e+58) is beyond the float32 range"),
    ((LARGE_RATE, "targets[0].features[0].weight=1 if epoch < 3 else 3e38"),
     "the optimizer step (learnrate 1e+28) and post-processing made"),
])
@pytest.mark.parametrize("deferred", [False, True], ids=["cpu", "read-one-epoch-later-as-on-cuda"])
def test_a_nan_from_an_expression_stops_cleanly_and_keeps_the_last_finite_image(tmp_path, tiny, capsys, monkeypatch,
                                                                                settings, message, deferred):
    init = finite.Guard.__init__
    monkeypatch.setattr(finite.Guard, "__init__", lambda self, *args, **kwargs: init(self, *args, **kwargs) or
                        setattr(self, "deferred", deferred))
    text = "epochs: 6\nresolution: 32\nseed: 1\ntargets:\n  - features: [{text: a spoon}]\n    transforms: [{noise: .1}]\n"
    config = write(tmp_path, text)
    sets = [arg for setting in settings for arg in ("--set", setting)]
    assert main([config, "-o", f"{tmp_path}/bad.png", *sets, *TINY]) == 1
    err = capsys.readouterr().err
    assert "the run became numerically invalid at epoch 3: " in err and message in err and "Traceback" not in err
    assert "# failed at epoch 3 of 6 epochs (3 in this run)" in (tmp_path / "bad.yaml").read_text()
    assert main([config, "-o", f"{tmp_path}/good.png", *sets, "--epochs", "3", *TINY]) == 0
    assert pixels(tmp_path / "bad.png") == pixels(tmp_path / "good.png")  # the image after epochs 0, 1, 2
    assert load_state(tmp_path / "bad.state")["reason"] == "failed"
