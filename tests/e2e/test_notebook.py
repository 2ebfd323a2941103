"""The example notebook, executed as a user runs it (a Jupyter kernel through nbclient): the
search shows its progress bar, the result table renders, and the best module loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e .[dev] (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e .[dev] (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="pip install -e .[dev] (nbformat, nbclient, ipykernel)")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return str(data.get("text/plain", "")) + str(data.get("text/html", ""))


def test_the_example_notebook_runs_and_shows_progress_and_the_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the study's default exp_dir lands here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(REPO / "examples" / "notebook_quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    search_cell, table_cell, best_cell = nb.cells[2], nb.cells[3], nb.cells[4]
    shown = "".join(_text(o) for o in search_cell.outputs)
    assert "maggy" in shown and "trial" in shown  # the progress bar
    assert "best val_acc" in shown  # the summary search() prints at the end
    table = "".join(_text(o) for o in table_cell.outputs)
    assert "val_acc" in table and "config/lr" in table and "COMPLETED" in table
    assert "best val_acc 0." in "".join(_text(o) for o in best_cell.outputs)
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert list((tmp_path / "maggy_experiments").glob("MLP-*/journal.jsonl"))
