"""The shape of the house: clipig's packages are floors, and a module imports only its own package and the
floors below it (counting imports inside functions too); no module reads another package's private names;
listeners get events, never the engine; the registries are filled from one import point."""

import pytest
import ast
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


# the floor of each package (docs/architecture.md draws them); one floor may hold several packages, which then
# do not import each other. The top-level modules (the command line, the package itself) are the roof.
FLOORS = {"config": 0, "critic": 1, "image": 2, "run": 3, "files": 4, "mini": 4, "tools": 5, "gui": 5,
          "bench": 6, "api": 6}
ROOF = 7


def package(module: str) -> str:
    """`clipig.run.engine` -> `run`; a top-level module (`clipig.cli`, `clipig`) -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOORS) else ""


def floor(module: str) -> int:
    return FLOORS.get(package(module), ROOF)


def import_graph() -> dict[str, set[str]]:
    """module -> the clipig modules it imports anywhere in its text (a package's own parents excluded)."""
    modules = {}
    for path in (SRC / "clipig").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = (path, parts[:-1])  # the package that relative imports start from
    graph = {}
    for name, (path, start) in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(start[:len(start) - node.level + 1])
                module = ".".join(p for p in (base, node.module or "") if p) if node.level else node.module
                found.update(f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                             for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module):
        state[module] = 1
        path.append(module)
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycle():
    found = cycle(import_graph())
    assert found is None, "import cycle: " + " -> ".join(found)


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_every_package_has_a_floor():
    packages = {p.name for p in (SRC / "clipig").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(FLOORS), "a new package needs a floor here and a line in docs/architecture.md"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for each import of a module of another package on the same floor or above."""
    return sorted(f"{module} -> {target}" for module, imported in graph.items() for target in imported
                  if package(target) != package(module) and floor(target) >= floor(module))


def test_no_module_imports_its_own_floor_or_above():
    assert upward_imports(import_graph()) == []


def test_the_floor_check_finds_an_upward_import():
    assert upward_imports({"clipig.critic.models": {"clipig.run.engine"}, "clipig.run.engine": set()}) == [
        "clipig.critic.models -> clipig.run.engine"]
    assert upward_imports({"clipig.files.video": {"clipig.mini.world"}}) == [
        "clipig.files.video -> clipig.mini.world"]  # the same floor
    assert upward_imports({"clipig.cli": {"clipig.bench.speed"}, "clipig.run.engine": {"clipig.run.guard"}}) == []


def private_reads() -> list[str]:
    """`module: name` for each private name (`_x`) of another package that a module of src/ imports or reads as
    an attribute of a module it imported."""
    found = []
    for path in (SRC / "clipig").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        here = package(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        aliases = {}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(parts[:len(parts) - 1 - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p) if node.level else (node.module or "")
                if not module.startswith("clipig"):
                    continue
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    if alias.name.startswith("_") and not alias.name.startswith("__") and package(module) != here:
                        found.append(f"{path.relative_to(SRC)}: {full}")
                    aliases[alias.asname or alias.name] = full
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.value.id in aliases
                    and package(aliases[node.value.id]) not in (here, "")):
                found.append(f"{path.relative_to(SRC)}: {aliases[node.value.id]}.{node.attr}")
    return sorted(found)


def test_no_module_reads_another_packages_private_names():
    assert private_reads() == []


def test_listeners_get_events_not_the_engine():
    from clipig.run.events import Event
    assert "engine" not in Event.__dataclass_fields__
    readers = [f"{path.relative_to(SRC)}:{i}" for path in (SRC / "clipig").rglob("*.py")
               for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"\bevent\.engine\b|\brun\.engine\b(?! import)", line)]
    assert readers == []


@pytest.mark.slow
def test_the_registries_are_filled_by_importing_any_part_of_clipig():
    code = ("from clipig.config.registry import CONSTRAINTS, PARAMETERIZATIONS, TRANSFORMS\n"
            "print(len(TRANSFORMS) > 20, len(CONSTRAINTS) > 5, sorted(PARAMETERIZATIONS))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC)})
    assert result.stdout.strip() == "True True ['fft', 'pixels', 'polygons', 'pyramid']", result.stderr


def test_a_parameterization_declared_in_one_place_is_usable_everywhere(tiny):
    """One declaration gives validation, the run and the docs: nothing else needs to know the new type."""
    import torch

    from clipig.config.docs import pages
    from clipig.config.loader import load
    from clipig.config.registry import PARAMETERIZATIONS
    from clipig.image.parameterizations import P, Parameterization, parameterization
    from clipig.run.engine import Engine

    @parameterization("negative", {"gain": P("float", 1.0, doc="How strongly a step changes the image.")})
    class Negative(Parameterization):
        """The image is trained as its negative."""

        def allocate(self, width, height):
            self.negative = self._zeros(3, height, width)

        def signal(self):
            return 1 - self.negative * self.options["gain"]

        def set_signal(self, signal):
            self.negative.copy_((1 - signal) / self.options["gain"])

    try:
        config = load(texts=["parameterization: {type: negative, gain: 2}\nresolution: 16\nepochs: 2\n"
                             "targets:\n  - features:\n      - text: a\n"], overrides=["verbose=0", "seed=0"])
        engine = Engine(config, critic=tiny)
        start = engine.image()
        engine.run()
        assert engine.canvas.negative.shape == (3, 16, 16) and not torch.equal(engine.image(), start)
        assert "`parameterization.negative.gain`" in pages()["reference.md"]
        assert "**`negative`** (`gain`, `decorrelate`, `squash`): The image is trained as its negative." in \
            pages()["parameterizations.md"]
    finally:
        del PARAMETERIZATIONS["negative"]
