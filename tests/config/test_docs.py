"""The reference is generated from the registry and covers every parameter of the specification."""

import re
from pathlib import Path

from clipig.config.docs import pages
from clipig.config.schema import walk

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "spec" / "parameter-reference.md"


def test_every_parameter_of_the_specification_is_in_the_registry():
    spec_paths = set(re.findall(r"^#+ `([a-z_.]+)`", SPEC.read_text(), re.M))
    assert len(spec_paths) > 150
    ours = {path for path, _ in walk()}
    assert sorted(spec_paths - ours) == []


def test_generated_docs_are_up_to_date():
    for name, text in pages().items():
        assert (ROOT / "docs" / name).read_text() == text, f"docs/{name} is stale: run `make docs`"


def test_reference_lists_types_defaults_and_variables():
    text = pages()["reference.md"]
    assert "\n##### `targets.transforms.random_rotate.degree`\n" in text
    assert "*list of length 2 of float · required · expression variables: learnrate, resolution, time*" in text
    assert "expression variables: learnrate, resolution, target constraint, time" in text
    assert "- `ts`: alias of time_step" in pages()["expressions.md"]
