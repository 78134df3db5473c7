"""The original CLIPig's command lines, scripts and configuration forms (github defgsus/clipig).

Its example, walk-through experiments and DALL-E rendering script (verbatim copies in tests/original/) are
rendered as its README, docs and scripts call clipig.py, with `--model random:tiny -e 2` added the way the
script adds `extra_args` (random weights and two epochs keep the test fast and offline). Where
/work/original holds the original's source, the copies are checked against it.
"""

import ast
import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import make_engine
from PIL import Image

from clipig.cli import main, original_argv, overrides_of, render_parser
from clipig.config.errors import ConfigError, ConfigWarning
from clipig.config.expressions import RANDOM_FUNCTIONS, compile_expression, time_variables
from clipig.config.loader import load

ORIGINAL = Path("/work/original")
TINY = ["--model", "random:tiny", "-e", "2"]
SMALL = """
verbose: 1
epochs: 9
resolution: 16
targets:
  - batch_size: 2
    features:
      - text: a curly spoon
    transforms:
      - noise: 0.1*ti
"""


def config_of(argv: list[str], folder: Path):
    """Parse `clipig argv` (files are written to `folder`) and load the experiment like `clipig` does."""
    args = render_parser().parse_intermixed_args(original_argv(argv))
    for name in args.files:
        (folder / name).write_text(SMALL)
    return args, load([folder / f for f in args.files], overrides=overrides_of(args))


@pytest.mark.parametrize("argv, files, expected", [
    (["a.yaml", "-e", "5"], ["a.yaml"], {"epochs": 5}),
    (["a.yaml", "--epochs", "5"], ["a.yaml"], {"epochs": 5}),
    (["-r", "64", "a.yaml"], ["a.yaml"], {"resolution": [64, 64]}),
    (["a.yaml", "-r", "64", "48", "b.yaml"], ["a.yaml", "b.yaml"], {"resolution": [64, 48]}),
    (["a.yaml", "--resolution", "64", "48"], ["a.yaml"], {"resolution": [64, 48]}),
    (["a.yaml", "-r", "224*2"], ["a.yaml"], {"resolution": [448, 448]}),
    (["a.yaml", "-lr", "2"], ["a.yaml"], {"learnrate": 2.0}),
    (["a.yaml", "--learnrate", ".5"], ["a.yaml"], {"learnrate": 0.5}),
    (["a.yaml", "-opt", "rmsprob"], ["a.yaml"], {"optimizer": "rmsprop"}),
    (["a.yaml", "--optimizer", "sgd", "-o", "x/"], ["a.yaml"], {"optimizer": "sgd", "output": "x/"}),
    (["a.yaml", "-s", "60"], ["a.yaml"], {"snapshot_interval": 60.0}),
    (["a.yaml", "--snapshot-interval", "0.0"], ["a.yaml"], {"snapshot_interval": 0.0}),
    (["a.yaml", "-d", "cpu"], ["a.yaml"], {"device": "cpu"}),
    (["a.yaml", "--device", "cpu", "--model", "random:tiny"], ["a.yaml"], {"device": "cpu", "model": [{"name": "random:tiny", "weight": 1.0}]}),
    (["-v", "a.yaml"], ["a.yaml"], {"verbose": 2}),
    (["a.yaml", "-v"], ["a.yaml"], {"verbose": 2}),
    (["a.yaml", "-v", "0"], ["a.yaml"], {"verbose": 0}),
    (["-v", "2", "a.yaml", "b.yaml"], ["a.yaml", "b.yaml"], {"verbose": 2}),
    (["a.yaml", "-q"], ["a.yaml"], {"verbose": 0}),
    (["a.yaml"], ["a.yaml"], {"verbose": 1, "epochs": 9, "snapshot_interval": 20.0}),
    (["a.yaml", "--set", "epochs=7", "-e", "3"], ["a.yaml"], {"epochs": 3}),
    (["a.yaml", "--seed", "4", "--threads", "1"], ["a.yaml"], {"seed": 4}),
])
def test_the_original_flags_beside_ours(argv, files, expected, tmp_path):
    args, config = config_of(argv, tmp_path)
    assert args.files == files
    for name, value in expected.items():
        assert config[name]() == value and type(config[name]()) is type(value), name


def test_a_snapshot_interval_from_the_command_line_is_seconds(tmp_path):
    _, config = config_of(["a.yaml", "-s", "3"], tmp_path)
    assert config.snapshot_interval() == 3.0 and isinstance(config.snapshot_interval(), float)
    assert isinstance(config_of(["a.yaml", "--set", "snapshot_interval=3"], tmp_path)[1].snapshot_interval(), int)


def test_conflicting_and_broken_flags_are_usage_errors(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(SMALL)
    for argv in (["-v", "1", "-q"], ["--repeat", "x"], ["-s", "soon"]):
        with pytest.raises(SystemExit) as info:
            main([str(tmp_path / "a.yaml"), *argv])
        assert info.value.code == 2
    assert main([str(tmp_path / "a.yaml"), "--repeat", "0"]) == 2
    assert "--repeat must be at least 1" in capsys.readouterr().err


def test_no_arguments_print_the_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: clipig") and "--snapshot-interval" in out and "rate" in out


def run_piped(text: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipig", "-", *args], input=text, capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, "CLIPIG_CACHE": str(cwd / "cache")})


@pytest.mark.slow
def test_the_scripts_command_line_through_a_pipe(tmp_path):
    # scripts/helper.py's call: clipig.py - --output NAME --snapshot-interval S --device D [--repeat N], with
    # the DALL-E script's first template
    config = DALL_E["init"].replace("{{text}}", "a snail made of harp. a snail with the texture of a harp.")
    result = run_piped(config, ["--output", "init/x/x-0.png", "--snapshot-interval", "0.0", "--device", "auto",
                                "--repeat", "2", *TINY], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    folder = tmp_path / "init" / "x"
    assert sorted(p.name for p in folder.iterdir()) == [f"x-{i}.{suffix}" for i in (0, 1)
                                                        for suffix in ("png", "state", "yaml")]  # + the run's state
    sidecars = [yaml.safe_load((folder / f"x-{i}.yaml").read_text()) for i in (0, 1)]
    assert [s["snapshot_interval"] for s in sidecars] == [0.0, 0.0] and sidecars[0]["epochs"] == 2
    assert sidecars[0]["seed"] != sidecars[1]["seed"]
    a, b = (np.asarray(Image.open(folder / f"x-{i}.png")) for i in (0, 1))
    assert a.shape == (224, 224, 3) and (a != b).any()


def test_repeat_with_a_seed_renders_the_following_seeds(tmp_path, tiny):
    (tmp_path / "a.yaml").write_text(SMALL)
    args = [str(tmp_path / "a.yaml"), "-o", f"{tmp_path}/r.png", "--repeat", "3", "--seed", "5", *TINY, "-q"]
    assert main(args) == 0
    names = ["r.png", "r-1.png", "r-2.png"]
    assert sorted(p.name for p in tmp_path.glob("r*.png")) == sorted(names)
    assert [yaml.safe_load((tmp_path / n).with_suffix(".yaml").read_text())["seed"] for n in names] == [5, 6, 7]
    images = [np.asarray(Image.open(tmp_path / n)) for n in names]
    assert (images[0] != images[1]).any() and (images[1] != images[2]).any()
    assert main([str(tmp_path / "r-1.yaml"), "-o", f"{tmp_path}/again.png", "--model", "random:tiny", "-q"]) == 0
    assert (np.asarray(Image.open(tmp_path / "again.png")) == images[1]).all()


def test_a_config_from_standard_input(tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(SMALL))
    assert main(["-", "-o", f"{tmp_path}/", *TINY, "-q"]) == 0
    assert (tmp_path / "output.png").is_file() and (tmp_path / "output.yaml").is_file()
    monkeypatch.setattr(sys, "stdin", io.StringIO(SMALL.replace("batch_size: 2", "batch_size: 0")))
    assert main(["-", "-o", f"{tmp_path}/", *TINY]) == 2
    assert "error: <stdin>:6: targets[0].batch_size: must be at least 1" in capsys.readouterr().err
    base = tmp_path / "base.yaml"
    base.write_text("epochs: 3\nresolution: 16\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("targets:\n  - features:\n      - text: b\n"))
    assert main([str(base), "-", "-o", f"{tmp_path}/merged.png", "--model", "random:tiny", "-q"]) == 0
    merged = yaml.safe_load((tmp_path / "merged.yaml").read_text())
    assert merged["epochs"] == 3 and merged["targets"][0]["features"][0]["text"] == "b"


# ---------------------------------------------------------------- configuration forms

ENTRY = """
epochs: 2
resolution: 16
init: {{mean: .5, std: .2}}
targets:
  - batch_size: 2
    features:
      - text: a curly spoon
    transforms:
{transforms}
"""


def image_of(transforms: str, tiny) -> np.ndarray:
    engine = make_engine(ENTRY.format(transforms=transforms))
    engine.run()
    return engine.image().numpy()


def test_several_transforms_in_one_entry_run_in_the_written_order(tiny):
    one = image_of("      - {add: .3, mul: .5}", tiny)
    assert (one == image_of("      - add: .3\n      - mul: .5", tiny)).all()
    assert (one != image_of("      - {mul: .5, add: .3}", tiny)).any()
    random_pair = "      - random_shift: 0 1\n        random_rotate: {degree: -30 30}"
    assert (image_of(random_pair, tiny) == image_of("      - random_shift: 0 1\n      - random_rotate: "
                                                    "{degree: -30 30}", tiny)).all()


def test_entries_with_several_plugins_share_their_fields_and_count_as_one_index():
    config = load(texts=[ENTRY.format(transforms="      - noise: .1\n      - random_shift: 0 1\n"
                                                 "        random_rotate: {degree: -30 30}\n        start: 50%")
                         + "    constraints:\n      - {mean: {above: .9}, saturation: {below: .01}}\n"
                         + "postproc:\n  - border: {size: 1}\n    mean: .3\n    end: 50%\n"])
    transforms = config.targets[0].transforms
    assert [(e.name, e.path) for e in transforms] == [("noise", "targets[0].transforms[0]"),
                                                      ("random_shift", "targets[0].transforms[1]"),
                                                      ("random_rotate", "targets[0].transforms[1]")]
    assert [str(e.entry.start()) for e in transforms] == ["0%", "50%", "50%"]
    assert [e.name for e in config.targets[0].constraints] == ["mean", "saturation"]
    assert [(e.name, str(e.entry.end())) for e in config.postproc] == [("border", "50%"), ("mean", "50%")]
    with pytest.raises(ConfigError) as info:
        load(texts=[ENTRY.format(transforms="      - noise: .1\n      - random_shift: 0 1\n        random_rotate:\n"
                                            "          degree: -30 nope(")])
    assert str(info.value).startswith("<config>:13: targets[0].transforms[1].random_rotate.degree: ")
    with pytest.raises(ConfigError, match=r"transforms\[0\]\.spin: unknown transform 'spin'"):
        load(texts=[ENTRY.format(transforms="      - {noise: .1, spin: 3}")])
    with pytest.raises(ConfigError, match=r"transforms\[0\]: each entry needs a transform name"):
        load(texts=[ENTRY.format(transforms="      - {start: .5}")])


def test_empty_values_are_left_out_with_a_warning(tiny):
    text = ENTRY.format(transforms="      - noise:\n      -\n      - blur:\n      - add: .3\n      - mul:")
    with pytest.warns(ConfigWarning) as caught:
        config = load(texts=[text + "    constraints:\n      - blur:\n      - mean: {}\n"])
    assert [e.name for e in config.targets[0].transforms] == ["add"]
    assert [e.name for e in config.targets[0].constraints] == ["mean"]
    messages = [str(w.message) for w in caught]
    assert messages[:2] == ["<config>:10: targets[0].transforms[0].noise: noise has no value, so it is left out",
                            "<config>:12: targets[0].transforms[2].blur: blur has no value, so it is left out "
                            "(write 'blur: {}' for its defaults)"]
    assert len(messages) == 4
    with pytest.warns(ConfigWarning):
        assert (image_of("      - noise:\n      - add: .3", tiny) == image_of("      - add: .3", tiny)).all()
    assert load(texts=["targets:\n  -\n  - features:\n    -\n    - text: a\n"]).targets[0].features[0].text() == "a"
    assert [e.name for e in load(texts=[ENTRY.format(transforms="      - blur: {}")]).targets[0].transforms] == ["blur"]


def test_the_cli_shows_a_warning_line(tmp_path, tiny, capsys):
    (tmp_path / "w.yaml").write_text(ENTRY.format(transforms="      - noise:"))
    assert main([str(tmp_path / "w.yaml"), "-o", f"{tmp_path}/", "--model", "random:tiny", "-q"]) == 0
    assert f"warning: {tmp_path / 'w.yaml'}:10: targets[0].transforms[0].noise: noise has no value" \
        in capsys.readouterr().err


def test_expressions_are_checked_at_their_start_values_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import clipig.critic.models

    def no_model(*args):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(clipig.critic.models, "load_critic", no_model)
    cases = {
        "      - noise: 1/t": "targets[0].transforms[0].noise: expression '1/t' failed at epoch 0: division by zero",
        "      - random_rotate:\n          degree: -30 sqrt(t-1)":
            "targets[0].transforms[0].random_rotate.degree: expression 'sqrt(t-1)' failed at epoch 0",
        "      - resize: 0 if t < .5 else 16":
            "targets[0].transforms[0].resize: must be at least 1, got [0, 0] (at epoch 0)",
        "      - noise: .1\n        start: '[1][t]'": "targets[0].transforms[0].start: expression '[1][t]' failed",
    }
    for transforms, message in cases.items():
        path = tmp_path / "broken.yaml"
        path.write_text(ENTRY.format(transforms=transforms))
        assert main([str(path), "-o", f"{tmp_path}/"]) == 2
        err = capsys.readouterr().err
        assert re.match(rf"error: {re.escape(str(path))}:1[01]: {re.escape(message)}", err), err
    path.write_text("resolution: 16 if t > 0 else 0\n")
    assert main([str(path)]) == 2
    assert "resolution: must be at least 1, got [0, 0] (at epoch 0)" in capsys.readouterr().err
    path.write_text("epochs: 10\nstart_epoch: 5\nlearnrate: 1/(t - 5/9)\n")  # t = epoch / (epochs - 1)
    assert main([str(path)]) == 2
    assert "learnrate: expression '1/(t - 5/9)' failed at epoch 5: division by zero" in capsys.readouterr().err


def test_random_functions_by_bare_and_qualified_names():
    args = {"random": "", "uniform": "1, 2", "randint": "1, 6", "randrange": "0, 10, 2", "choice": "[3, 4]",
            "choices": "[3, 4], [1, 0]", "sample": "[1, 2, 3], 2", "getrandbits": "8", "triangular": "0, 1, .2",
            "gauss": "0, 1", "normalvariate": "0, 1", "lognormvariate": "0, 1", "expovariate": "2",
            "gammavariate": "2, 1", "betavariate": "2, 3", "paretovariate": "3", "weibullvariate": "1, 2",
            "vonmisesvariate": "0, 1"}
    assert set(args) == set(RANDOM_FUNCTIONS)
    for name, arguments in args.items():
        bare, qualified = compile_expression(f"{name}({arguments})"), compile_expression(f"random.{name}({arguments})")
        assert bare.random and qualified.random and not bare.names
        value = bare.evaluate({}, random.Random(7))
        assert value == qualified.evaluate({}, random.Random(7)) == getattr(random.Random(7), name)(
            *compile_expression(f"[{arguments}]").evaluate({}))
    assert compile_expression("choices([3, 4], [1, 0])").evaluate({}, random.Random(1)) == [3]
    variables = time_variables(3, 10)
    assert compile_expression("math.sin(t) + math.pi").evaluate(variables) == compile_expression(
        "sin(t) + pi").evaluate(variables)
    for source, message in (("random.seed(1)", "random has no function or constant 'seed'"),
                            ("math.sinn(t)", "did you mean sin?"), ("shuffle([1, 2])", "unknown function"),
                            ("os.system('x')", "attribute access is not allowed"),
                            ("getrandbits(10**6)", "too expensive"), ("sample(list(1), 2)", "unknown function")):
        with pytest.raises(Exception, match=re.escape(message)):
            compile_expression(source).evaluate(variables, random.Random(0))


def test_random_expressions_draw_from_the_runs_seeded_generator(tiny):
    text = "epochs: 2\nresolution: 16\ninit: {std: 0}\ntargets:\n  - features:\n      - text: a\n" \
           "    transforms:\n      - mul: MUL\n"

    def image(mul, seed):
        engine = make_engine(text.replace("MUL", mul), f"seed={seed}")
        engine.run()
        return engine.image().numpy()
    assert (image("1", 1) == image("1", 2)).all()  # nothing else in this run depends on the seed
    assert (image("uniform(.5, 1.5)", 1) == image("random.uniform(.5, 1.5)", 1)).all()
    assert (image("uniform(.5, 1.5)", 1) != image("uniform(.5, 1.5)", 2)).any()
    assert (image("choice([.5, 1.5])", 3) == image("choice([.5, 1.5])", 3)).all()


# ---------------------------------------------------------------- the original's own files

COPIES = Path(__file__).resolve().parent / "original"  # verbatim copies (MIT), see tests/original/README.md
DALL_E = {name: (COPIES / f"dall-e-{name}.yaml.template").read_text()
          for name in ("init", "detail", "reso-one-pass", "reso-init", "reso-detail")}
WALKTHROUGH = sorted(p.name for p in COPIES.glob("walkthrough-*.yaml"))
BROKEN_INDENTATION = ["walkthrough-05.yaml", "walkthrough-06.yaml"]  # `transforms:` outside the target, there too


def test_the_originals_example_renders_as_its_readme_calls_it(tmp_path, tiny, monkeypatch, capsys):
    # README: python clipig.py examples/strawberries.yaml -o ./images/
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "strawberries.yaml").write_text((COPIES / "strawberries.yaml").read_text())
    assert main(["examples/strawberries.yaml", "-o", "./images/", *TINY]) == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "images" / "strawberries.png").size == (512, 512)
    sidecar = yaml.safe_load((tmp_path / "images" / "strawberries.yaml").read_text())
    assert sidecar["learnrate_scale"] == "1. - .95 * t5" and sidecar["targets"][0]["batch_size"] == 5


@pytest.mark.parametrize("name", WALKTHROUGH)
def test_the_originals_walkthrough_renders_as_its_docs_call_it(name, tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text((COPIES / name).read_text())
    start = tmp_path / "docs" / "static" / "img" / "hpl4-c.png"  # the last step starts from the step before's
    start.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8)).save(start)
    rc = main(["demo.yaml", "-o", "images/", *TINY])  # docs/cli.md: python clipig.py demo.yaml -o images/
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if name in BROKEN_INDENTATION:
        assert rc == 2 and err.startswith("error: demo.yaml:4: invalid YAML"), err
        return
    assert rc == 0, err
    data = yaml.safe_load((COPIES / name).read_text())
    width, height = Image.open(tmp_path / "images" / "demo.png").size
    assert width == height == {"224*2": 448, "224*3": 672}.get(data.get("resolution"), 224)


def render_like_the_script(template: str, output: Path, context: dict, snapshot_interval=0.0, extra=()) -> int:
    """scripts/helper.py's render(): fill {{key}}, pipe to `clipig - --output NAME --snapshot-interval S
    --device auto` (+ extra args); here in this process with sys.stdin replaced."""
    for key, value in context.items():
        template = template.replace("{{%s}}" % key, value)
    stdin = sys.stdin
    sys.stdin = io.StringIO(template)
    try:
        return main(["-", "--output", str(output), "--snapshot-interval", str(snapshot_interval), "--device", "auto",
                     *extra, *TINY, "-q"])
    finally:
        sys.stdin = stdin


def test_the_dall_e_scripts_render_as_the_script_calls_them(tmp_path, tiny):
    text, name = "a snail made of harp. a snail with the texture of a harp.", "a-snail-of-harp"
    for init, detail in (("init", "detail"), ("reso-init", "reso-detail")):
        folder = tmp_path / init / name
        assert render_like_the_script(DALL_E[init], folder / f"{name}-0.png", {"text": text},
                                      extra=["--repeat", "3"]) == 0
        inits = sorted(str(p) for p in folder.glob("*.png"))
        assert [Path(p).name for p in inits] == [f"{name}-{i}.png" for i in range(3)]
        from clipig.tools import rate
        critic_values, images, _ = rate.rate(tiny, inits, [text])
        best = images[int(critic_values[:, 0].argmax())]
        number = best[:-4].split("-")[-1]
        out = tmp_path / detail / name / f"{name}-from-{number}.png"
        assert render_like_the_script(DALL_E[detail], out, {"text": text, "image": best}, 60.0) == 0
        sidecar = yaml.safe_load(out.with_suffix(".yaml").read_text())
        assert sidecar["init"]["image"] == best and sidecar["snapshot_interval"] == 60.0
        assert sidecar["epochs"] == 2 and sidecar["optimizer"] == "rmsprob"
    out = tmp_path / "own-onepass" / f"{name}.png"
    assert render_like_the_script(DALL_E["reso-one-pass"], out, {"text": text.split(".")[0] + "."}) == 0
    assert Image.open(out).size == (224, 224)  # the resolution expression at t = 1 (the last of 2 epochs)


needs_original = pytest.mark.skipif(not (ORIGINAL / "clipig.py").is_file(), reason="no original at /work/original")


@needs_original
def test_the_copies_are_the_originals_text():
    assert (COPIES / "strawberries.yaml").read_text() == (ORIGINAL / "examples" / "strawberries.yaml").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", (ORIGINAL / "docs" / "walkthrough.md").read_text(), re.S)
    experiments = [i for i, block in enumerate(blocks) if "targets:" in block and "features:" in block]
    assert WALKTHROUGH == [f"walkthrough-{i:02d}.yaml" for i in experiments]
    for i in experiments:
        assert (COPIES / f"walkthrough-{i:02d}.yaml").read_text() == blocks[i]
    tree = ast.parse((ORIGINAL / "scripts" / "render-dall-e-samples.py").read_text())
    scripts = {node.targets[0].id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and isinstance(node.targets[0], ast.Name) and node.targets[0].id.endswith("_SCRIPT")}
    assert {f"{k.replace('-', '_').upper()}_SCRIPT": v for k, v in DALL_E.items()} == scripts
