"""examples/clipig.ipynb, executed in a real Jupyter kernel (nbclient) as a user runs it, shorter."""

import ast
import base64
import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 15
WIDGET = "application/vnd.jupyter.widget-view+json"


def text(cell, name: str) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == name)


def images(cell) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))) for o in cell.outputs
            if "image/png" in o.get("data", {})]


def bar(notebook, cell) -> str:
    """The text of a cell's progress bar: tqdm's text bar on stderr, or, where ipywidgets is installed, the
    labels of its widget as the notebook recorded them."""
    views = [o["data"][WIDGET]["model_id"] for o in cell.outputs if WIDGET in o.get("data", {})]
    if not views:
        return text(cell, "stderr")
    models = notebook.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    children = [c.removeprefix("IPY_MODEL_") for v in views for c in models[v]["state"]["children"]]
    return " ".join(str(models[c]["state"]["value"]) for c in children if models[c]["model_name"] == "HTMLModel")


def result(cell):
    return ast.literal_eval(next(o for o in cell.outputs if o.output_type == "execute_result")["data"]["text/plain"])


@pytest.mark.slow
def test_the_example_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    notebook = nbformat.read(ROOT / "examples" / "clipig.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    install, parameters, first, look, rate, change, rate_again, save, real_clip = code
    assert "parameters" in parameters.metadata.tags
    parameters.source = f"epochs = {EPOCHS}"
    notebook.cells.append(nbformat.v4.new_code_cell('clipig.render("resolution: 0", model="mini")',
                                                    metadata={"tags": ["raises-exception"]}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the real CLIP's cell needs a GPU: it must stay offline here
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    assert install.outputs == []  # importable: nothing installed
    [live] = images(first)  # the image emerged in one place, enlarged; it ends as the run's image
    [looked] = images(look)
    assert live.size == looked.size == (256, 256) and live.tobytes() == looked.tobytes()
    assert f"{EPOCHS}/{EPOCHS}" in bar(notebook, first) and "Warning" not in text(first, "stderr")
    assert "target 'target'" in text(first, "stdout") and "a red circle on a blue background" in text(first, "stdout")
    assert set(result(rate)) == set(result(rate_again)) and "a red circle on a blue background" in result(rate)
    assert f"{2 * EPOCHS}/{2 * EPOCHS}" in bar(notebook, change)  # went on from epoch EPOCHS
    saved = tmp_path / "out" / "clipig.png"
    assert sorted(p.name for p in saved.parent.iterdir()) == ["clipig.png", "clipig.state", "clipig.yaml"]
    with Image.open(saved) as png:
        assert png.convert("RGB").tobytes() == images(change)[0].resize((32, 32), 0).tobytes()
    assert real_clip.outputs == []
    [error] = notebook.cells[-1].outputs  # a mistake shows as the CLI prints it, in one line
    assert error.traceback == ["ConfigError: <config>:1: resolution: must be at least 1, got [0, 0]"]
