"""Mangle experiment files and check that every mangled file renders or fails with a clear message.

Every key of a file is deleted once, and every value (mappings and lists too) replaced once by each of
`REPLACEMENTS`. Each mangled file is rendered through the command line (`clipig FILE -o DIR/`) for one
epoch with `random:tiny` at a low resolution. A case passes when it renders (exit 0), or exits 2 with one
`error: FILE:LINE: PATH: ...` line, or exits 1 with an `error:` message (a runtime failure such as out of
memory); it fails when an exception escapes or a message lacks the file and line.

    python tests/mangle.py [FILE.yaml ...]   # default: examples/ and src/clipig/bench/configs/; prints the failures

tests/test_mangle.py runs a sample of the cases.
"""

from __future__ import annotations

import contextlib
import io
import re
import resource
import sys
import tempfile
import traceback
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DELETE = object()
REPLACEMENTS = ("", None, [1, 2], {"a": 1}, 1e308, -1e308, 3e38, 1e-320, -1, 0, 1.5, 2**40, 10**30, "2**62",
                True, "abc", "nan", "inf", "-inf", "1/0", "t +* 2", "1/t", "ü€😀", "x" * 3000, "50%", [], {},
                "1e999", [[1]], [None], "{}", "[]", {"noise": 0.1})
BASE = {"model": "random:tiny", "device": "cpu", "verbose": 0, "snapshot_interval": 0}
MESSAGE = re.compile(r"^error: (?P<file>[^:\n]+):(?P<line>\d+): \S")


def paths(data, prefix=()):
    """Every key path of the data: ('targets', 0, 'features', 0, 'text'), ..."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from paths(value, (*prefix, key))


def mangled(data, path, replacement):
    """A deep copy of `data` with the value at `path` replaced (or deleted)."""
    import copy
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    if replacement is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(replacement)
    return data


def base(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data.update(BASE)
    if not isinstance(data.get("resolution"), str) or not re.search(r"[a-z]", data["resolution"]):
        data["resolution"] = 32
    return data


def cases(files):
    for file in files:
        data = base(file)
        for path in paths(data):
            for replacement in (DELETE, *REPLACEMENTS):
                yield file, path, replacement, mangled(data, path, replacement)


def run(data, folder: Path) -> tuple[str, int, str]:
    """Render `data` for at most one epoch: (outcome, exit code, stderr). Outcome: ok | bad."""
    from clipig.cli import main
    config = folder / "mangled.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main([str(config), "-o", f"{folder}/out/"])
        except BaseException:  # noqa: BLE001 - an escaping exception is what this looks for
            return "bad", -1, traceback.format_exc()
    text = err.getvalue()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if rc == 0 or (rc == 1 and errors):
        return "ok", rc, text
    if rc == 2 and errors and MESSAGE.match(errors[0]) and MESSAGE.match(errors[0])["file"] == str(config):
        return "ok", rc, text
    return "bad", rc, text


@contextlib.contextmanager
def one_epoch():
    """Every Engine stops after its first epoch, on one thread; memory is limited (8 GB more than now) so
    that a mangled size fails fast."""
    import torch

    from clipig.run.engine import Engine
    conclude, threads = Engine.conclude, torch.get_num_threads()
    torch.set_num_threads(1)

    def first_only(self, epoch):  # every epoch ends in `conclude`, alone or together (run/together.py)
        conclude(self, epoch)
        self.stop()
    Engine.conclude = first_only
    limits = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (min(mapped + (8 << 30), limits[0] if limits[0] > 0 else 1 << 62),
                                            limits[1]))
    try:
        yield
    finally:
        Engine.conclude = conclude
        torch.set_num_threads(threads)
        resource.setrlimit(resource.RLIMIT_AS, limits)


def summary(text: str) -> str:
    """The last frame in clipig and the exception of a traceback, or the messages."""
    noise = ("frame #", "<omitting", "Exception raised")
    lines = [line for line in text.strip().splitlines() if not line.startswith(noise)]
    frames = [line.strip() for line in lines if line.strip().startswith('File "') and "/clipig/" in line]
    ends = [line for line in lines if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", line)]
    return " | ".join(frames[-1:] + ends[-1:]) if ends else " | ".join(lines[-3:])


def main(argv: list[str]) -> int:
    files = [Path(f) for f in argv] or sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("src/clipig/bench/configs/*.yaml")])
    bad = total = 0
    with tempfile.TemporaryDirectory() as tmp, one_epoch():
        for file, path, replacement, data in cases(files):
            total += 1
            outcome, rc, text = run(data, Path(tmp))
            if outcome == "bad":
                bad += 1
                what = "deleted" if replacement is DELETE else f"= {replacement!r}"
                print(f"{file.name}: {path} {what}: exit {rc}\n  {summary(text)}", flush=True)
    print(f"{total} cases, {bad} bad")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main(sys.argv[1:]))
