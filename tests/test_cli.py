"""The command line: rendering, file naming, sidecar, errors without tracebacks, Ctrl-C, spec examples."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clipig.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "spec"
TINY = ["--model", "random:tiny", "--device", "cpu", "-q"]

SMALL = """
epochs: 2
resolution: 32
targets:
  - batch_size: 2
    features:
      - text: a curly spoon
    transforms:
      - noise: 0.1*ti
"""


def write(tmp_path, text=SMALL, name="demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_render_never_overwrites_and_writes_the_sidecar(tmp_path, tiny):
    config = write(tmp_path)
    out = tmp_path / "images"
    for _ in range(3):
        assert main([str(config), "-o", f"{out}/", *TINY]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"demo{n}.{suffix}" for n in ("-1", "-2", "")
                                                     for suffix in ("png", "state", "yaml")]
    sidecar = (out / "demo.yaml").read_text()
    assert re.search(r"^# finished: 2 of 2 epochs", sidecar, re.M)
    assert re.search(r"^# runtime: .*s per epoch\) on cpu, \d+ threads$", sidecar, re.M)
    assert "a curly spoon" in sidecar.split("\n\n")[0]  # the statistics table is in the header
    data = yaml.safe_load(sidecar)
    assert data["targets"][0]["transforms"] == [{"noise": "0.1*ti", "active": True, "start": 0.0, "end": 1.0}]
    assert data["learnrate"] == 1.0 and data["optimizer"] == "adam" and isinstance(data["seed"], int)


def test_render_with_the_sidecar_reproduces_the_image(tmp_path, tiny):
    from PIL import Image
    config = write(tmp_path)
    assert main([str(config), "-o", f"{tmp_path}/a.png", *TINY]) == 0
    assert main([str(tmp_path / "a.yaml"), "-o", f"{tmp_path}/b.png", *TINY]) == 0
    assert Image.open(tmp_path / "a.png").tobytes() == Image.open(tmp_path / "b.png").tobytes()


def test_explicit_png_name_and_existing_user_file(tmp_path, tiny):
    config = write(tmp_path)
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my precious")
    assert main([str(config), "-o", str(mine), *TINY]) == 0
    assert mine.read_bytes() == b"my precious"
    assert (tmp_path / "mine-1.png").stat().st_size > 0


def test_sidecar_never_overwrites_the_users_config(tmp_path, tiny):
    config = write(tmp_path)
    before = config.read_text()
    assert main([str(config), "-o", f"{tmp_path}/", *TINY]) == 0
    assert (tmp_path / "demo.png").exists()
    assert config.read_text() == before


def test_bad_output_name(tmp_path, capsys):
    config = write(tmp_path)
    assert main([str(config), "-o", str(tmp_path / "x.jpg"), *TINY]) == 2
    assert "output" in capsys.readouterr().err


def test_user_mistakes_exit_2_with_a_message_and_no_traceback(tmp_path, capsys):
    config = write(tmp_path, "targets:\n  - batchsize: 3\n")
    assert main([str(config), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{config}:2" in err and "batch_size" in err and "Traceback" not in err
    assert main([str(tmp_path / "missing.yaml"), *TINY]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main([str(config), "--set", "nonsense", *TINY]) == 2
    assert "PATH=VALUE" in capsys.readouterr().err


def test_multiple_files_merge_and_set_overrides(tmp_path, tiny):
    a = write(tmp_path, SMALL, "a.yaml")
    b = write(tmp_path, "targets:\n  - name: second\n    features:\n      - text: b\n", "b.yaml")
    assert main([str(a), str(b), "-o", f"{tmp_path}/merged.png", "--set", "targets[1].batch_size=3",
                 "--epochs", "1", *TINY]) == 0
    data = yaml.safe_load((tmp_path / "merged.yaml").read_text())
    assert [t["name"] for t in data["targets"]] == ["target", "second"]
    assert data["targets"][1]["batch_size"] == 3 and data["epochs"] == 1


def test_models_lists_random_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "random:tiny" in out and "ViT-B/32" in out


@pytest.mark.slow
def test_missing_weights_give_a_short_message(tmp_path):
    config = write(tmp_path)
    result = subprocess.run([sys.executable, "-m", "clipig", str(config), "-o", f"{tmp_path}/", "--model",
                             "ViT-B/32", "-q"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CLIPIG_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 1
    assert "random:ViT-B/32" in result.stderr and "Traceback" not in result.stderr
    assert str(tmp_path / "cache") in result.stderr


@pytest.mark.slow
def test_ctrl_c_saves_the_image_and_sidecar(tmp_path):
    config = write(tmp_path, SMALL.replace("epochs: 2", "epochs: 100000").replace("resolution: 32",
                                                                                 "resolution: 32\nsnapshot_interval: 0"))
    proc = subprocess.Popen([sys.executable, "-m", "clipig", str(config), "-o", f"{tmp_path}/out/", "--model",
                             "random:tiny", "-q"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CLIPIG_CACHE": str(tmp_path / "cache")})
    image = tmp_path / "out" / "demo.png"
    deadline = time.monotonic() + 90
    while not (image.exists() and image.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    sidecar = (tmp_path / "out" / "demo.yaml").read_text()
    assert re.search(r"^# interrupted at epoch \d+ of 100000", sidecar, re.M)
    assert image.stat().st_size > 100
    assert "Traceback" not in err


def spec_examples():
    for path in sorted(SPEC.glob("*.md")):
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)):
            yield pytest.param(block, id=f"{path.stem}-{i}")


def _expected_to_fail(block: str) -> bool:
    try:
        yaml.safe_load(block)
    except yaml.YAMLError:
        return True  # the two walk-through examples with wrong indentation
    return "a_list" in block or "/path/to/" in block


@pytest.mark.parametrize("block", list(spec_examples()))
def test_every_spec_example_renders_or_gives_a_clear_error(block, tmp_path, tiny, capsys):
    config = write(tmp_path, block, "example.yaml")
    rc = main([str(config), "-o", f"{tmp_path}/", "--set", "epochs=3", *TINY])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if _expected_to_fail(block):
        assert rc == 2 and "error:" in err
    else:
        assert rc == 0, err
        assert (tmp_path / "example.png").exists()


EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))
HEAVY = {"das-real-clip.yaml"}  # 336 pyramid levels at 336² and 32 views: about 10 s even with random:tiny
OTHER_TYPES = ["fft", "pyramid", "{type: fft, decorrelate: true}"]  # at a low resolution, to stay fast


@pytest.mark.parametrize("example", [pytest.param(e, marks=pytest.mark.slow) if e in HEAVY else e for e in EXAMPLES])
def test_every_example_renders(example, tmp_path, tiny, capsys):
    rc = main([str(ROOT / "examples" / example), "-o", f"{tmp_path}/", "--set", "epochs=3", *TINY])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / example.replace(".yaml", ".png")).exists()


@pytest.mark.parametrize("kind", OTHER_TYPES)
@pytest.mark.parametrize("example", [pytest.param(e, marks=pytest.mark.slow) if e in HEAVY else e for e in EXAMPLES])
def test_every_example_renders_with_every_parameterization(example, kind, tmp_path, tiny, capsys):
    rc = main([str(ROOT / "examples" / example), "-o", f"{tmp_path}/", "--set", "epochs=2", "--set",
               "resolution=40", "--set", f"parameterization={kind}", *TINY])
    assert rc == 0, capsys.readouterr().err
    recorded = yaml.safe_load((tmp_path / example).read_text())["parameterization"]  # the sidecar
    assert recorded["type"] == kind.split(",")[0].removeprefix("{type: ")


def test_a_fourier_decorrelated_config_renders(tmp_path, tiny, capsys):
    config = write(tmp_path, SMALL + "parameterization:\n  type: fft\n  decorrelate: true\n  decay: 1.2\n")
    assert main([str(config), "-o", f"{tmp_path}/", *TINY]) == 0, capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "demo.yaml").read_text())["parameterization"] == {
        "type": "fft", "decay": 1.2, "decorrelate": True}


@pytest.mark.parametrize("kind", OTHER_TYPES[:2])
@pytest.mark.parametrize("block", [b for b in spec_examples() if not _expected_to_fail(b.values[0])])
def test_every_spec_example_renders_with_every_parameterization(block, kind, tmp_path, tiny, capsys):
    config = write(tmp_path, block, "example.yaml")
    rc = main([str(config), "-o", f"{tmp_path}/out/", "--set", "epochs=2", "--set", "resolution=40", "--set",
               f"parameterization={kind}", *TINY])
    assert rc == 0, capsys.readouterr().err


def test_a_numbered_output_name_counts_on(tmp_path, tiny):
    config = write(tmp_path)
    for _ in range(2):
        assert main([str(config), "-o", f"{tmp_path}/zz-1.png", *TINY]) == 0
    assert (tmp_path / "zz-1.png").exists() and (tmp_path / "zz-2.png").exists()
    assert not (tmp_path / "zz-1-1.png").exists()


def test_a_run_that_fails_half_way_keeps_its_image(tmp_path, tiny, capsys):
    config = write(tmp_path, "resolution: 32\nepochs: 5\ntargets:\n  - features:\n      - text: a\n"
                             "    transforms:\n      - noise: 1/(2-epoch)\n", "e9.yaml")
    assert main([str(config), "-o", f"{tmp_path}/out/", *TINY]) == 2
    assert (f"{config}:7: targets[0].transforms[0].noise: expression '1/(2-epoch)' failed at epoch 2"
            in capsys.readouterr().err)
    assert (tmp_path / "out" / "e9.png").stat().st_size > 0
    assert "# failed at epoch 2 of 5 epochs" in (tmp_path / "out" / "e9.yaml").read_text()


def test_running_out_of_memory_is_a_message(tmp_path, tiny, capsys):
    # 10⁷ x 10⁷ pixels: 1.2 PB, more than any address space, so the allocation fails even with overcommit
    config = write(tmp_path, "resolution: 10000000\nepochs: 1\ntargets:\n  - features:\n      - text: a\n")
    assert main([str(config), "-o", f"{tmp_path}/out/", *TINY]) == 1
    err = capsys.readouterr().err
    assert re.search(r"error: out of memory \(tried to allocate \d+\.\d GB\)\. Lower `resolution`", err)
    assert "Traceback" not in err


@pytest.mark.parametrize("interval, tick, saved", [
    ("2", 0.25, [0, 2, 4, 6, 6]),  # an int counts epochs: at the start, every 2 epochs and at the end
    ("1", 0.25, [0, 1, 2, 3, 4, 5, 6, 6]),
    ("1.0", 0.25, [0, 4, 6]),  # a float counts seconds: 4 epochs of 0.25 s
    ("0.5", 0.25, [0, 2, 4, 6, 6]),
    ("2.0", 1.0, [0, 2, 4, 6, 6]),
    ("0", 1.0, [0, 6]),  # 0 disables snapshots: the image is written when training starts and ends
    ("0.0", 1.0, [0, 6]),
])
def test_snapshot_interval_int_is_epochs_float_is_seconds(interval, tick, saved, tiny, monkeypatch, tmp_path):
    import types

    from clipig.config.loader import load
    from clipig.files import output
    from clipig.run.engine import Engine
    clock, written = [0.0], []
    monkeypatch.setattr(output, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(output, "save_png", lambda image, path, text=None: written.append(engine.epochs_done))

    def ticks(event):
        if event.kind == "epoch":
            clock[0] += tick
    config = load(texts=[SMALL.replace("epochs: 2", f"epochs: 6\nsnapshot_interval: {interval}")],
                  overrides=["model=random:tiny", "device=cpu", "verbose=0", "seed=0"])
    engine = Engine(config, critic=tiny, listeners=[ticks, output.OutputWriter(config, tmp_path / "s.png")])
    engine.run()
    assert written == saved


@pytest.mark.parametrize("command", [["render"], *[[c] for c in ("models", "docs", "gui", "rate", "rank", "batch",
                                                                  "bench", "info", "replay", "resume")],
                                     ["bench", "--quality"]])
def test_every_command_prints_its_help(command, capsys):
    """`clipig COMMAND --help` prints a usage and exits 0 (argparse formats help texts with %: a bare percent
    sign in one of them raised a TypeError here)."""
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
    assert exit.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_the_real_clip_recipe_of_direct_ascent_synthesis_validates(tmp_path, tiny, capsys):
    """examples/das-real-clip.yaml asks for what it says (three ViT-B/32 checkpoints, every size bicubic, tanh,
    a grey start, SGD, 32 rolled views) and renders with random:tiny at a tiny size."""
    from clipig.config.loader import load
    path = ROOT / "examples" / "das-real-clip.yaml"
    config = load([path])
    assert [m["name"] for m in config.model()] == ["ViT-B/32", "ViT-B-32/laion2b_s34b_b79k", "ViT-B-32/laion400m_e32"]
    assert config.parameterization.arguments({}) == {"levels": 0, "step": 1, "upsample": "cubic", "squash": "tanh",
                                                     "decorrelate": False}
    rc = main([str(path), "-o", f"{tmp_path}/", "--set", "epochs=2", "--set", "resolution=24", *TINY])
    assert rc == 0, capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "das-real-clip.yaml").read_text())["parameterization"]["step"] == 1
