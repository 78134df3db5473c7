"""The Python API: the same experiment, settings, image, files and messages as the command line."""

import csv
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

import clipig
from clipig.cli import main
from clipig.config.loader import load
from clipig.run.engine import open_run

TINY = {"model": "random:tiny", "device": "cpu", "quiet": True}
CLI_TINY = ["--model", "random:tiny", "--device", "cpu", "-q"]
EXPERIMENT = """
epochs: 4
resolution: 24
targets:
  - batch_size: 2
    features:
      - text: a curly spoon
    transforms:
      - noise: 0.1*ti
      - random_shift: -.2 .2
"""


@pytest.fixture
def experiment(tmp_path):
    (tmp_path / "experiments").mkdir()
    path = tmp_path / "experiments" / "spoon.yaml"
    path.write_text(EXPERIMENT)
    return path


def pixels(path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def body(sidecar_path) -> dict:
    """A sidecar's configuration (its header, with dates and runtimes, is comments), but the `output` the CLI
    was given."""
    data = yaml.safe_load(sidecar_path.read_text())
    del data["output"]
    return data


def test_the_image_and_files_are_the_clis(experiment, tmp_path, tiny):
    assert main([str(experiment), "-o", f"{tmp_path}/cli/", "--seed", "3", *CLI_TINY]) == 0
    run = clipig.render(experiment, seed=3, **TINY)
    assert run.image.tobytes() == pixels(tmp_path / "cli" / "spoon.png")
    assert run.tensor.shape == (3, 24, 24) and run.epoch == run.epochs == 4
    assert not (tmp_path / "spoon.png").exists()  # nothing written unless asked

    first, second = run.save(f"{tmp_path}/api/"), run.save(f"{tmp_path}/api/")
    assert (first.name, second.name) == ("spoon.png", "spoon-1.png")  # never overwritten
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["spoon.png", "spoon.state", "spoon.yaml"]
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == [
        "spoon-1.png", "spoon-1.state", "spoon-1.yaml", "spoon.png", "spoon.state", "spoon.yaml"]
    assert pixels(first) == pixels(tmp_path / "cli" / "spoon.png")
    assert body(first.with_suffix(".yaml")) == body(tmp_path / "cli" / "spoon.yaml")
    assert run.config == yaml.safe_load(first.with_suffix(".yaml").read_text())
    header = first.with_suffix(".yaml").read_text().split("\n\n")[0]
    assert "# finished: 4 of 4 epochs (4 in this run)" in header and "a curly spoon" in header
    assert main(["replay", str(first), "-q"]) == 0  # the provenance in the PNG renders the same pixels


def test_settings_mean_the_command_lines_options(experiment, tmp_path, tiny):
    assert main([str(experiment), "-o", f"{tmp_path}/c.png", "--seed", "1", "-e", "2", "-r", "16", "12", "-lr", "2",
                 "-opt", "sgd", "--set", "targets[0].batch_size=3", *CLI_TINY]) == 0
    run = clipig.render(experiment, seed=1, epochs=2, resolution="16 12", learnrate=2, optimizer="sgd",
                        set={"targets[0].batch_size": 3}, **TINY)
    assert {k: v for k, v in run.config.items() if k != "output"} == body(tmp_path / "c.yaml")
    assert run.tensor.shape == (3, 12, 16) and run.config["targets"][0]["batch_size"] == 3
    assert run.image.tobytes() == pixels(tmp_path / "c.png")


def test_an_experiment_is_a_file_text_dict_or_a_list_merged_like_files(experiment, tiny):
    as_dict = yaml.safe_load(EXPERIMENT)
    kept = yaml.safe_load(EXPERIMENT)
    runs = [clipig.render(e, seed=2, **TINY) for e in (experiment, str(experiment), EXPERIMENT, as_dict)]
    assert len({r.image.tobytes() for r in runs}) == 1
    merged = clipig.Run([as_dict, "targets:\n  - name: second\n    features:\n      - text: a fork\n"],
                        set={"targets[1].batch_size": 3}, **TINY)
    assert [(t["name"], t["batch_size"]) for t in merged.config["targets"]] == [("target", 2), ("second", 3)]
    assert as_dict == kept  # merging and `set` leave the caller's dict alone


def test_mistakes_raise_the_clis_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\ntargets:\n  - batchsize: 3\n")
    assert main([str(bad), *CLI_TINY]) == 2
    printed = capsys.readouterr().err.strip()
    with pytest.raises(clipig.ConfigError) as raised:
        clipig.Run(bad, **TINY)
    assert printed == f"error: {raised.value}" and str(raised.value).startswith(f"{bad}:3: targets[0].batchsize:")
    assert raised.value._render_traceback_() == [f"ConfigError: {raised.value}"]  # IPython shows this line
    with pytest.raises(clipig.ConfigError, match="resolution: must be at least 1"):
        clipig.Run("resolution: 0\n", **TINY)
    with pytest.raises(clipig.ConfigError, match="unknown setting 'epoch'"):
        clipig.Run("epochs: 3\n", epoch=2, **TINY)
    with pytest.raises(clipig.ConfigError, match="file not found"):
        clipig.Run(tmp_path / "missing.yaml", **TINY)


def test_running_in_steps_is_one_run_and_on_epoch_can_stop_it(experiment, tiny):
    whole = clipig.render(experiment, seed=5, **TINY)
    seen = []

    def listener(event):
        seen.append(event.epoch)
        if event.epoch == 3:
            event.stop()

    run = clipig.Run(experiment, seed=5, on_epoch=listener, **TINY)
    assert run.run(1).epoch == 1
    assert run.run().epoch == 3  # stopped by the listener
    assert run.run().epoch == 4 and seen == [1, 2, 3, 4]
    assert run.image.tobytes() == whole.image.tobytes()
    with pytest.raises(clipig.ConfigError, match="at epoch 4 of 4: nothing to do"):
        run.run()


def test_an_interrupted_run_goes_on_where_it_stopped(experiment, tiny):
    """The kernel's interrupt (KeyboardInterrupt) ends `run()`; the next `run()` goes on to the same pixels."""
    whole = clipig.render(experiment, seed=5, **TINY)
    epochs = []

    def interrupt(event):
        epochs.append(event.epoch)
        if len(epochs) == 2:
            raise KeyboardInterrupt

    run = clipig.Run(experiment, seed=5, on_epoch=interrupt, **TINY)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert run.run().epoch == 4 and run.image.tobytes() == whole.image.tobytes()


def test_change_goes_on_from_the_pixels_as_the_live_editor_does(experiment, tiny):
    kept = []
    run = clipig.Run(experiment, seed=4, on_epoch=lambda event: kept.append(event.image(unclamped=True)), **TINY)
    before = run.run(2) and kept[-1]
    run.change(epochs=6, set={"targets[0].transforms[0].noise": 0.3})
    assert run.epoch == 2 and torch.equal(run.tensor, before.clamp(0, 1))
    run.run()
    changed = load([experiment], overrides=["model=random:tiny", "device=cpu", "verbose=0", "seed=4", "epochs=6",
                                            "targets[0].transforms[0].noise=0.3"])
    live_editor = open_run(changed, state={"epoch": 2, "image": before})
    live_editor.run()
    assert torch.equal(run.tensor, live_editor.image())
    assert run.config["epochs"] == 6 and run.config["targets"][0]["transforms"][0]["noise"] == 0.3
    with pytest.raises(clipig.ConfigError):
        run.change(set={"targets[0].transforms[0].noise": "1/"})
    assert run.config["targets"][0]["transforms"][0]["noise"] == 0.3  # a refused change leaves the run as it was
    experiment.write_text(EXPERIMENT.replace("a curly spoon", "a fork"))
    run.change()  # the experiment's file is read again, the settings so far stay
    assert run.config["targets"][0]["features"][0]["text"] == "a fork" and run.config["epochs"] == 6
    run.change(EXPERIMENT.replace("epochs: 4", "epochs: 9").replace("a curly spoon", "a knife"))  # replaced
    assert run.config["targets"][0]["features"][0]["text"] == "a knife" and run.config["model"] == "random:tiny"
    assert run.config["epochs"] == 6 and run.config["targets"][0]["transforms"][0]["noise"] == 0.3


def test_resume_from_a_state_or_a_png(experiment, tmp_path, tiny):
    whole = clipig.render(experiment, seed=6, **TINY)
    saved = clipig.Run(experiment, seed=6, **TINY).run(2).save(f"{tmp_path}/")
    assert "# stopped at epoch 2 of 4 epochs" in saved.with_suffix(".yaml").read_text()
    resumed = clipig.Run.resume(saved, **TINY)
    assert resumed.epoch == 2 and resumed.run().image.tobytes() == whole.image.tobytes()  # exactly
    assert clipig.Run.resume(saved.with_suffix(".state"), epochs=5, **TINY).run().epoch == 5

    saved.with_suffix(".state").unlink()
    from_png = clipig.Run.resume(saved, **TINY)  # the PNG's pixels at its epoch, its recorded experiment
    assert from_png.epoch == 2 and from_png.image.tobytes() == pixels(saved) and from_png.seed == 6
    assert from_png.run().epoch == 4


def test_rate_is_clipig_rate(experiment, tmp_path, tiny):
    run = clipig.render(experiment, seed=0, **TINY)
    path = run.save(f"{tmp_path}/")
    texts = ["a curly spoon", "a fork"]
    assert main(["rate", str(path), "-t", *texts, "-m", "random:tiny", "-d", "cpu", "-o", str(tmp_path / "r.csv")]) == 0
    with open(tmp_path / "r.csv") as f:
        cli = {k: float(v) for k, v in list(csv.DictReader(f))[0].items() if k != "image"}
    assert clipig.rate(run, texts, model="random:tiny", device="cpu") == cli
    assert clipig.rate(path, texts, model="random:tiny", device="cpu") == cli
    assert clipig.rate(run.image, texts, model="random:tiny", device="cpu") == cli


def test_the_public_names():
    assert clipig.__all__ == ["render", "Run", "rate", "ConfigError", "__version__"]
    from clipig.config.errors import ConfigError
    assert clipig.ConfigError is ConfigError
    with pytest.raises(AttributeError):
        clipig.engine  # noqa: B018


@pytest.mark.slow
def test_outside_a_notebook_nothing_of_jupyter_is_imported(experiment):
    """`import clipig.config.schema` loads no engine; a render outside a kernel shows the CLI's progress bar and
    imports nothing of IPython or the notebook display."""
    code = (f"import sys\nimport clipig.config.schema\nprint('clipig.run.engine' in sys.modules)\n"
            f"import clipig\nclipig.render({str(experiment)!r}, model='random:tiny', device='cpu', verbose=1)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets', 'ipykernel')\n"
            "             or m == 'clipig.api.notebook'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split("\n")[:2] == ["False", "[]"], result.stderr
    assert "4/4" in result.stderr  # the progress bar


@pytest.mark.slow
def test_in_a_kernel_the_image_emerges_a_few_times_a_second(monkeypatch, capsys, tiny):
    """Inside a Jupyter kernel a render shows its image in one place, updated at most 4 times a second and
    last with the final image, enlarged to whole pixels; then the statistics table."""
    import time
    from types import SimpleNamespace

    import IPython

    from clipig.api import notebook
    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: SimpleNamespace(kernel=object()))
    monkeypatch.setattr(notebook, "display", lambda image, display_id: shown.append(image) or SimpleNamespace(
        update=shown.append))
    started = time.monotonic()
    run = clipig.render(EXPERIMENT.replace("resolution: 24", "resolution: 8"), epochs=20, model="random:tiny",
                        device="cpu", verbose=2)
    seconds = time.monotonic() - started
    assert 2 <= len(shown) <= seconds / 0.25 + 2
    assert shown[-1].size == (notebook.SHOWN, notebook.SHOWN) and shown[-1].resize((8, 8), 0).tobytes() == run.image.tobytes()
    out = capsys.readouterr()
    assert "20/20" in out.err and "target 'target'" in out.out and "a curly spoon" in out.out
