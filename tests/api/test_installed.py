"""CLIPig as a user gets it from pip: the wheel installed into a fresh virtual environment outside the checkout,
and the commands run from there."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNMET = """
from importlib.metadata import requires, version
from packaging.requirements import Requirement
wanted = [Requirement(r) for r in requires("clipig")]
print([str(r) for r in wanted if any(r.marker is None or r.marker.evaluate({"extra": e}) for e in ("", "test", "ray"))
       and not r.specifier.contains(version(r.name), prereleases=True)])
"""


def run(command: list, cwd: Path, env: dict, timeout: int = 300) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout + result.stderr


@pytest.mark.slow
def test_the_installed_wheel_works_outside_the_checkout(tmp_path):
    # the wheel, built from a copy of the sources (no build files in the checkout) with this environment's
    # setuptools (offline)
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(source)], tmp_path, dict(os.environ))
    [wheel] = tmp_path.glob("clipig-*.whl")

    # a fresh environment that sees this one's packages (torch & co., so nothing is downloaded) after its own,
    # and its `clipig` only from the wheel: a path in a .pth file brings no .pth files (no editable install) along
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, dict(os.environ))
    python = venv / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                       dict(os.environ)).strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        tmp_path, dict(os.environ))

    # the wheel's requirements, its [test] and [ray] extras too, hold for the versions the tests run with
    unmet = run([str(python), "-c", UNMET], tmp_path, dict(os.environ)).strip()
    assert unmet == "[]", f"requirements that the tested versions do not meet: {unmet}"

    home = tmp_path / "user"
    home.mkdir()
    shutil.copy(ROOT / "examples" / "first-image.yaml", home)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"CLIPIG_CACHE": str(tmp_path / "cache")}
    clipig = str(venv / "bin" / "clipig")
    where = run([str(python), "-c", "import clipig.critic.mini as m; print(m.__file__)"], home, env)
    assert Path(where.strip()).is_relative_to(purelib)
    assert "Render YAML experiments" in run([clipig, "--help"], home, env)
    run([clipig, "first-image.yaml", "-e", "5", "-o", "out/", "-q"], home, env)  # the shipped mini, installed
    assert sorted(p.name for p in (home / "out").iterdir()) == ["first-image.png", "first-image.state",
                                                                "first-image.yaml"]
    # the quality configurations are package data (one prompt, a few epochs keep it short)
    (home / "one.txt").write_text("a red circle on a blue background\n")
    table = run([clipig, "bench", "--quality", "--quick", "plain", "--prompts", "one.txt", "--epochs", "3"], home, env)
    assert "| plain " in table and "one.txt" in table
    assert "--no-browser" in run([clipig, "gui", "--help"], home, env)
    assert "mini-referee" in run([clipig, "models"], home, env)
