"""examples/quickstart.ipynb: well formed and clean (fast), and executed top to bottom (slow).

Executing it takes about 80 s of CPU (three small ResNet-20 and one CNN trained for an epoch
on 1024 Fashion-MNIST images, one LCE conversion), so that test is `slow`; the default run
checks the notebook's structure and that it exercises the whole quick-start path.
"""

import ast
import pathlib

import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def notebook():
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(NOTEBOOK, as_version=4)


def _code(notebook):
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_notebook_is_valid_and_stored_without_outputs(notebook):
    import nbformat

    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert notebook.cells[0].cell_type == "markdown" and "quick start" in notebook.cells[0].source


def test_every_code_cell_parses_and_the_path_is_complete(notebook):
    sources = _code(notebook)
    for source in sources:
        ast.parse(source)
    code = "\n".join(sources)
    # The quick-start path, in order: zoo model, hand-built layers, summary, training,
    # multi-teacher distillation, LCE conversion with its report.
    steps = ["models.resnet20(", "layers.QuantConv2D(", "kerasbnn.summary(", ".fit(train",
             "distill.MultiTeacherDistiller(", "kerasbnn.lce_convert(", "print(report)",
             "kerasbnn.binarize(my_model, dry_run=True)", "kerasbnn.binarize(my_model, bits=8)",
             "MultiTeacherDistiller(my_binary", "kerasbnn.lce_convert(my_binary"]
    positions = [code.find(step) for step in steps]
    assert all(p >= 0 for p in positions), dict(zip(steps, positions))
    assert positions == sorted(positions)
    assert "limit=" in code  # small data budget


@pytest.mark.slow
@pytest.mark.tflite
def test_notebook_runs_top_to_bottom(notebook, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    text = "\n".join(
        output.get("text", "")
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "LCE conversion report" in text and "latency on this machine" in text
    assert "student test accuracy" in text and "delta logits" in text
    assert "your model: float" in text and "LceBconv2d" in text
    out = tmp_path / "quickstart_out"
    assert {"binary_cnn.keras", "student.keras", "student.tflite", "my_binary.tflite"} <= {
        p.name for p in out.iterdir()}
