"""Each problem notebook runs top to bottom on the smoke preset with synthetic data (CPU, offline)."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
@pytest.mark.e2e
def test_notebook_runs_on_the_smoke_preset(path, tmp_path, monkeypatch):
    monkeypatch.setenv("A3_PRESET", "smoke")
    monkeypatch.setenv("A3_DATA", "synthetic")
    monkeypatch.setenv("A3_WORK", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as tests/conftest.py: one thread per process
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 8, "every figure is shown inline"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert list((tmp_path / "results").iterdir()), "the run folder lives under A3_WORK"


def test_notebooks_are_thin():
    """No model code in a notebook: no class definitions, no training loops, no optimizers."""
    for path in NOTEBOOKS:
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        for banned in ("class ", "nn.Module", "optimizer.step", ".backward(", "!pip", "%pip"):
            assert banned not in source, (path.name, banned)
