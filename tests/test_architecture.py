"""The shape of the house: no import cycle between clipig's modules (counting imports inside functions too),
the config layer imports nothing above it, and the registries are filled from one import point."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    """module -> the clipig modules it imports anywhere in its text (a package's own parents excluded)."""
    modules = {}
    for path in (SRC / "clipig").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = (path, parts[:-1])  # the package that relative imports start from
    graph = {}
    for name, (path, package) in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1])
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


def test_the_config_layer_is_the_ground_floor():
    graph = import_graph()
    for module, imported in graph.items():
        if module.startswith("clipig.config"):
            above = sorted(m for m in imported if not m.startswith("clipig.config"))
            assert not above, f"{module} imports {above}"


def test_the_registries_are_filled_by_importing_any_part_of_clipig():
    code = ("from clipig.config.registry import CONSTRAINTS, PARAMETERIZATIONS, TRANSFORMS\n"
            "print(len(TRANSFORMS) > 20, len(CONSTRAINTS) > 5, sorted(PARAMETERIZATIONS))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC)})
    assert result.stdout.strip() == "True True ['fft', 'pixels', 'pyramid']", result.stderr
