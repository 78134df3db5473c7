"""clipig rate | rank | batch: numbers, resuming, the gallery, worker processes and Ray (with random:tiny)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from clipig.cli import main
from clipig.config.errors import ConfigError
from clipig.config.loader import load
from clipig.config.schema import validate
from clipig.critic.models import load_critic
from clipig.files.output import save_png
from clipig.run.engine import open_run
from clipig.tools import batch, rank, rate, workers

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"

RANK_CONFIG = """
model: random:tiny
device: cpu
resolution: 16
init: {resolution: 4}
targets:
  - batch_size: 2
    features:
      - text: a penguin made of piano
    transforms:
      - noise: 0.1
"""
METHOD_1 = """
model: random:tiny
device: cpu
epochs: 2
resolution: 16
init: {mean: 0.33, std: 0.03, resolution: 4}
targets:
  - batch_size: 2
    features:
      - text: a {animal} made of {thing}. a {animal} with the texture of a {thing}.
    transforms:
      - random_rotate: {degree: -30 30, center: 0 1}
      - noise: 1/10
postproc:
  - blur: {kernel_size: 3}
    end: 10%
"""
METHOD_2 = """
model: random:tiny
device: cpu
epochs: 2
resolution:
  - '{0: 8}.get(int(t*2), 16)'
targets:
  - batch_size: 2
    features:
      - text: a {animal} made of {thing}.
    transforms:
      - resize: 16
      - bwnoise: 1/5*ti
"""
ANIMALS, THINGS = ["cat", "penguin"], ["salami", "piano", "brain coral"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPIG_CACHE", str(tmp_path / "cache"))


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def batch_args(folder: Path, out: Path) -> list[str]:
    (folder / "animals.txt").write_text("# animals\n" + "\n".join(ANIMALS) + "\n")
    return [write(folder / "method-1.yaml", METHOD_1), write(folder / "method-2.yaml", METHOD_2),
            "--grid", f"animal={folder / 'animals.txt'}", "--grid", "thing=" + ",".join(THINGS), "-o", f"{out}/"]


# ---------------------------------------------------------------- rate

def test_rate_equals_the_engines_similarity(tmp_path, capsys):
    texts = ["a cat made of salami", "a penguin made of piano"]
    first = open_run(load(texts=[RANK_CONFIG], overrides=["epochs=3", "seed=5"]))
    first.run()
    png = tmp_path / "cat.png"
    save_png(first.image(), png)
    gray = tmp_path / "gray.png"
    Image.new("RGB", (20, 12), (128, 128, 128)).save(gray)

    out = tmp_path / "rate.csv"
    args = [str(png), str(gray), "-t", *texts, "--model", "random:tiny", "--device", "cpu", "-o", str(out)]
    assert rate.main([*args, "--cache"]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["image", *texts]
    rated = {row[0]: [float(v) for v in row[1:]] for row in rows[1:]}

    # the engine's own statistics for the same pixels: the image as init, no transforms, no step taken
    config = load(texts=["model: random:tiny\ndevice: cpu\nepochs: 1\nlearnrate: 0\nresolution: 16\n"
                         f"init: {{image: {png}, mean: 0, std: 1}}\ntargets:\n  - features:\n"
                         + "".join(f"      - text: {t}\n" for t in texts)])
    engine = open_run(config)
    engine.run()
    measured = [f["similarity"]["mean"] for f in engine.statistics()[0]["features"]]
    assert rated[str(png)] == pytest.approx(measured, abs=1e-3)

    # cached features give the same numbers; --sort orders the rows
    assert list((tmp_path / "cache" / "features").rglob("*.pt"))
    capsys.readouterr()
    assert rate.main([*args, "--cache", "--sort", "-1"]) == 0
    sorted_rows = list(csv.reader(out.open()))[1:]
    assert [float(r[1]) for r in sorted_rows] == sorted((float(r[1]) for r in rows[1:]), reverse=True)
    assert {r[0]: r[1:] for r in sorted_rows} == {r[0]: r[1:] for r in rows[1:]}
    table = capsys.readouterr().out
    assert "  1: a cat made of salami" in table and f"{rated[str(png)][0]:.2f}" in table


def test_rate_takes_the_original_flags_and_leaves_out_unreadable_images(tmp_path, capsys):
    gray, dark = tmp_path / "gray.png", tmp_path / "dark.png"
    Image.new("RGB", (20, 12), (128, 128, 128)).save(gray)
    Image.new("RGB", (12, 20), (20, 30, 40)).save(dark)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    (tmp_path / "texts.txt").write_text("a cat\n\na dog\n")
    (tmp_path / "refs.txt").write_text("dark.png\nmissing.png\n")
    out = tmp_path / "rate.csv"
    # rate.py -tf FILE -if FILE -d DEVICE -m MODEL -s N -c, with an unreadable and a missing image
    assert rate.main([str(gray), str(broken), str(dark), str(tmp_path / "missing.png"), "-tf",
                      str(tmp_path / "texts.txt"), "-if", str(tmp_path / "refs.txt"), "-d", "cpu", "-m",
                      "random:tiny", "-s", "-3", "-c", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: left out {broken}: " in err and f"warning: left out {tmp_path / 'missing.png'}" in err
    assert err.count("warning:") == 3  # the missing reference too
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["image", "a cat", "a dog", str(dark)]
    assert [r[0] for r in rows[1:]] == [str(dark), str(gray)]  # -s -3: by the third column, descending
    assert float(rows[1][3]) == pytest.approx(100.0, abs=1e-3)  # the image is its own reference
    critic = load_critic("random:tiny", "cpu")
    values, images, labels = rate.rate(critic, [str(dark), str(gray)], ["a cat", "a dog"], [str(dark)])
    # the same values (a tolerance: another batch of images may take other kernels, whose last bits differ),
    # written in full: each is a float32 value as it is, which a CSV rounded to a few decimals is not
    assert [float(v) for r in rows[1:] for v in r[1:]] == pytest.approx(values.flatten().tolist(), rel=1e-5, abs=1e-4)
    written = [float(v) for r in rows[1:] for v in r[1:]]
    assert all(float(np.float32(v)) == v for v in written) and any(round(v, 4) != v for v in written)
    assert list((tmp_path / "cache" / "features").rglob("*.pt"))  # -c caches the features

    capsys.readouterr()
    assert rate.main([str(gray), "-t", "a cat", "-m", "random:tiny", "-c", "false"]) == 0
    assert "  1: a cat" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="none of the images could be read"):
        rate.main([str(broken), "-t", "a cat", "-m", "random:tiny"])


def test_rate_needs_something_to_compare_with(tmp_path):
    with pytest.raises(ConfigError, match="nothing to rate against"):
        rate.main([str(tmp_path / "a.png"), "--model", "random:tiny"])


# ---------------------------------------------------------------- rank

def read_ranking(folder: Path) -> list[dict]:
    return list(csv.DictReader((folder / "ranking.csv").open()))


def snapshot(folder: Path) -> dict:
    """The finished files (not the ranking, nor the states, which are working files)."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in folder.rglob("*") if p.is_file() and p.name != "ranking.csv" and p.suffix != ".state"}


def test_rank_keeps_the_best_and_continues_them(tmp_path, capsys):
    config, out = write(tmp_path / "penguin.yaml", RANK_CONFIG), tmp_path / "rank"
    args = [config, "--runs", "6", "--epochs", "2", "--keep", "2", "--final-epochs", "2", "-o", f"{out}/"]
    assert rank.main(args) == 0
    rows = read_ranking(out)
    assert sorted(int(r["run"]) for r in rows) == list(range(6))
    sims = [float(r["sim"]) for r in rows]
    assert sims == sorted(sims, reverse=True)
    best, rest = rows[:2], rows[2:]
    assert all(r["final_sim"] and r["file"] == f"final/run-{int(r['run']):04d}.png" for r in best)
    assert all(not r["final_sim"] and r["file"].startswith("runs/") for r in rest)
    for r in best:
        record = json.loads((out / f"final/run-{int(r['run']):04d}.json").read_text())
        assert (record["epoch"], record["seed"], record["sim"]) == (4, int(r["seed"]), float(r["final_sim"]))
        # continued from the short run's state: the image of one uninterrupted run of that seed
        final = out / f"final/run-{int(r['run']):04d}"
        assert main([f"{final}.png", "-o", f"{tmp_path}/again.png", "-q"]) == 0
        assert Image.open(tmp_path / "again.png").tobytes() == Image.open(f"{final}.png").tobytes()
        (tmp_path / "again.png").unlink()
        assert final.with_suffix(".state").is_file()
    assert not list(out.glob("runs/*.state"))  # the short runs' states are removed when nothing needs them
    short = json.loads((out / "runs/run-0003.json").read_text())
    assert (short["seed"], short["epoch"], short["epochs"]) == (3, 2, 4)

    # the CSV numbers are `clipig rate` numbers of the written files
    capsys.readouterr()
    top = out / best[0]["file"]
    rate.main([str(top), "-t", "a penguin made of piano", "--model", "random:tiny", "--device", "cpu"])
    assert f"{float(best[0]['final_sim']):.2f}" in capsys.readouterr().out

    # a second call finds everything done
    before = snapshot(out)
    assert rank.main(args) == 0
    assert "all 6 runs finished before" in capsys.readouterr().err
    assert snapshot(out) == before and read_ranking(out) == rows


@pytest.mark.parametrize("kind", ["fft", "pyramid", "{type: pixels, decorrelate: true}"])
def test_rank_continues_each_parameterization_from_its_pixels(kind, tmp_path):
    """With learnrate 0 the continued run must show exactly the short run's picture."""
    config, out = write(tmp_path / "penguin.yaml", RANK_CONFIG), tmp_path / "rank"
    assert rank.main([config, "--runs", "2", "--epochs", "1", "--keep", "1", "--final-epochs", "1", "-o",
                      f"{out}/", "--set", f"parameterization={kind}", "--set", "learnrate=0", "-q"]) == 0
    best = read_ranking(out)[0]
    short = np.asarray(Image.open(out / f"runs/run-{int(best['run']):04d}.png"))
    assert np.array_equal(np.asarray(Image.open(out / best["file"])), short)
    assert "parameterization:" in (out / best["file"]).with_suffix(".yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("together", ["1", "3"])
def test_rank_resumes_after_being_killed(tmp_path, together):
    config, out = write(tmp_path / "penguin.yaml", RANK_CONFIG), tmp_path / "rank"
    args = [config, "--runs", "8", "--epochs", "3", "--keep", "1", "--final-epochs", "1", "-o", f"{out}/",
            "--together", together]
    process = subprocess.Popen([sys.executable, "-m", "clipig", "rank", *args], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # waits for the fact (two runs written), however loaded the machine is
    while not len(list(out.glob("runs/*.json"))) >= 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = snapshot(out)
    assert any(name.endswith(".json") for name in finished)
    missing = [f"runs/run-{i:04d}.png" for i in range(8) if f"runs/run-{i:04d}.json" not in finished]
    for name in missing[-1:]:  # a run that was being written when it was killed
        (out / name).write_bytes(b"half a file")
        finished.pop(name, None)

    assert rank.main([*args, "-q"]) == 0
    after = snapshot(out)
    assert {name: after[name] for name in finished} == finished  # nothing finished was rendered again
    assert len(read_ranking(out)) == 8 and len(list(out.glob("runs/*.json"))) == 8
    for name in missing:
        Image.open(out / name).verify()


def count_renders(monkeypatch) -> list:
    rendered, render = [], workers.render_group
    monkeypatch.setattr(workers, "render_group", lambda jobs: rendered.extend(j["name"] for j in jobs) or render(jobs))
    return rendered


def test_rank_renders_again_exactly_what_changed(tmp_path, monkeypatch):
    rendered = count_renders(monkeypatch)
    init = tmp_path / "init.png"
    Image.new("RGB", (8, 8), (100, 50, 0)).save(init)
    config = write(tmp_path / "penguin.yaml", RANK_CONFIG.replace("init: {resolution: 4}", f"init: {{image: {init}}}"))

    def runs(*extra):
        rendered.clear()
        assert rank.main([config, "--epochs", "1", "--final-epochs", "0", "-o", f"{tmp_path / 'rank'}/", "-q",
                          *extra]) == 0
        return sorted(int(name[-4:]) for name in rendered)
    assert runs("--runs", "3") == [0, 1, 2]
    assert runs("--runs", "5") == [3, 4]  # more runs: only the new ones
    assert runs("--runs", "5", "--device", "cpu") == []  # the device does not change the image
    assert runs("--runs", "2", "--set", "targets[0].batch_size=1") == [0, 1]  # --set changes the experiment
    assert runs("--runs", "2", "--set", "targets[0].batch_size=1") == []
    assert runs("--runs", "2") == [0, 1]  # back to the file's experiment, whose records were replaced
    write(tmp_path / "penguin.yaml", Path(config).read_text().replace("piano", "harp"))
    assert runs("--runs", "2") == [0, 1]  # a changed file
    Image.new("RGB", (8, 8), (0, 50, 100)).save(init)
    assert runs("--runs", "2") == [0, 1]  # a changed image that the experiment reads
    assert runs("--runs", "2", "--model", "random:tiny") == []  # the file's model already


# ---------------------------------------------------------------- batch

def test_placeholders_and_grid_values(tmp_path):
    data = {"resolution": ["{0: 8}.get(int(t*2), 16)"], "targets": [{"features": [{"text": "a {animal}."}]}]}
    assert batch.fill(data, {"animal": "cat"}) == {"resolution": ["{0: 8}.get(int(t*2), 16)"],
                                                   "targets": [{"features": [{"text": "a cat."}]}]}
    (tmp_path / "things.txt").write_text("# things\nsalami\n\nbrain coral\nsalami\n")
    assert batch.grid_axis(f"thing={tmp_path / 'things.txt'}") == ("thing", ["salami", "brain coral"])
    assert batch.grid_axis("animal=cat, penguin") == ("animal", ["cat", "penguin"])
    with pytest.raises(ConfigError):
        batch.grid_axis("animals.txt")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """The 2 x 3 grid with two templates, rendered by two local worker processes."""
    folder = tmp_path_factory.mktemp("batch")
    assert batch.main([*batch_args(folder, folder / "local"), "--workers", "2", "-q"]) == 0
    return folder


def images(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p), dtype=np.int16)
            for p in sorted(folder.rglob("*.png"))}


@pytest.mark.slow
def test_batch_renders_every_cell(gallery):
    out = gallery / "local"
    names = sorted(images(out))
    assert names == sorted(f"method-{m}/{a}_{t.replace(' ', '-')}.png"
                           for m in (1, 2) for a in ANIMALS for t in THINGS)
    record = json.loads((out / "method-1/penguin_brain-coral.json").read_text())
    assert record["labels"] == ["a penguin made of brain coral. a penguin with the texture of a brain coral."]
    assert record["values"] == {"animal": "penguin", "thing": "brain coral"}
    other = json.loads((out / "method-2/penguin_brain-coral.json").read_text())
    assert other["seed"] == record["seed"]  # the cell decides the seed


@pytest.mark.browser
def test_gallery_navigation_in_chromium(gallery):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("no Chromium at /usr/bin/chromium")
    index = gallery / "local" / "index.html"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(index.as_uri())
        view = page.locator("#view img")

        def shown():
            return view.get_attribute("src"), page.locator("#prompt").text_content()

        assert shown() == ("method-1/cat_salami.png",
                           "a cat made of salami. a cat with the texture of a salami.")
        page.keyboard.press("ArrowRight")
        assert shown()[0] == "method-1/penguin_salami.png"
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")  # stays in the last row
        assert shown()[0] == "method-1/penguin_brain-coral.png"
        page.keyboard.press("2")
        assert shown() == ("method-2/penguin_brain-coral.png", "a penguin made of brain coral.")
        assert page.locator(".tab.active").text_content() == "2 method-2"
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowUp")
        assert shown()[0] == "method-2/cat_piano.png"
        assert page.locator("td.cell.selected img").get_attribute("src") == "method-2/cat_piano.png"
        page.keyboard.press("1")
        assert shown()[0] == "method-1/cat_piano.png"
        assert page.locator("td.cell img").count() == 6
        loaded = page.evaluate("[...document.querySelectorAll('td.cell img')].every(i => i.naturalWidth > 0)")
        assert loaded
        browser.close()


def test_batch_renders_only_new_or_changed_cells(tmp_path, monkeypatch):
    rendered = count_renders(monkeypatch)
    args = batch_args(tmp_path, tmp_path / "out")
    assert batch.main([*args, "-q"]) == 0
    assert len(rendered) == 12
    rendered.clear()
    assert batch.main([*args[:5], "thing=" + ",".join([*THINGS, "harp"]), *args[6:], "-q"]) == 0
    assert sorted(rendered) == sorted(f"method-{m}/{a}_harp" for m in (1, 2) for a in ANIMALS)
    rendered.clear()
    write(tmp_path / "method-2.yaml", METHOD_2.replace("bwnoise: 1/5*ti", "bwnoise: 1/6*ti"))
    assert batch.main([*args, "-q"]) == 0
    assert sorted(rendered) == sorted(f"method-2/{a}_{t.replace(' ', '-')}" for a in ANIMALS for t in THINGS)


def test_a_failed_run_is_retried_once_and_never_stops_the_others(tmp_path, monkeypatch, capsys):
    render, calls = workers.render_group, []

    def flaky(jobs):  # a group of runs together: each job fails or succeeds on its own
        calls.extend(job["name"] for job in jobs)
        broken = {job["name"] for job in jobs if job["name"] == "method-1/cat_salami"
                  or job["name"] == "method-2/cat_piano" and calls.count(job["name"]) == 1}
        results = iter(render([job for job in jobs if job["name"] not in broken]))
        return [RuntimeError("out of memory") if job["name"] in broken else next(results) for job in jobs]

    monkeypatch.setattr(workers, "render_group", flaky)
    assert batch.main(batch_args(tmp_path, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "method-2/cat_piano failed (RuntimeError: out of memory); retrying" in err
    assert "method-1/cat_salami failed again (RuntimeError: out of memory); giving up" in err
    assert "[11/12 done, 1 failed, 0 remaining" in err
    assert len(list((tmp_path / "out").rglob("*.png"))) == 11 and (tmp_path / "out/index.html").is_file()
    assert calls.count("method-1/cat_salami") == 2 and calls.count("method-2/cat_piano") == 2


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_batch_on_ray_gives_the_same_files(gallery, ray_instance):
    out = gallery / "ray"
    assert batch.main([*batch_args(gallery, out), "--backend", "ray", "-q"]) == 0
    local, remote = images(gallery / "local"), images(out)
    assert sorted(remote) == sorted(local)
    for name in local:
        assert np.abs(local[name] - remote[name]).max() <= 2, name
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(gallery / "local").as_posix() for p in (gallery / "local").rglob("*")
                           if p.is_file())


def test_ray_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'clipig[ray]'")):
        workers.Ray(None, None)


# ---------------------------------------------------------------- docs

def test_the_docs_examples_are_valid_experiments():
    text = (ROOT / "docs" / "many-runs.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        validate(batch.fill(yaml.safe_load(block), {"animal": "cat", "thing": "salami"}))
