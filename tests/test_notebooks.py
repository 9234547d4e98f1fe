"""A student's path end to end: each problem notebook top to bottom on the smoke preset with synthetic data
(CPU, offline), then the report PDF built from the run folders the notebooks left.

The runs go to A3_SMOKE_RESULTS when it is set (scripts/test.sh sets it), else to a temporary folder. The
tests of this file run in order on one pytest-xdist worker (--dist loadfile), so the report test finds the
notebooks' runs and only adds those they do not make (`python -m experiments all --resume`).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from experiments.presentation import names
from report import runs
from tests.conftest import ROOT
from tests.test_report import (
    assert_answers_first_and_body_within_budget,
    assert_every_question,
    assert_no_verdict_past_its_gate,
    build_pdf,
    needs_latex,
)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """The folder of the smoke runs: A3_SMOKE_RESULTS, or a fresh one shared by this file's tests."""
    given = os.environ.get("A3_SMOKE_RESULTS")
    return Path(given) if given else tmp_path_factory.mktemp("smoke") / "results"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
@pytest.mark.e2e
def test_notebook_runs_on_the_smoke_preset(path, tmp_path, monkeypatch, results):
    monkeypatch.setenv("A3_PRESET", "smoke")
    monkeypatch.setenv("A3_DATA", "synthetic")
    monkeypatch.setenv("A3_WORK", str(results.parent))
    monkeypatch.setenv("A3_RESULTS", str(results))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as tests/conftest.py: one thread per process
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 8, "every figure is shown inline"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    problem = path.stem.split("_", 1)[1]
    assert any(p.name.startswith(f"{problem}-smoke") for p in results.iterdir()), "the run folder is in A3_RESULTS"


@needs_latex
@pytest.mark.e2e
def test_pdf_from_the_notebooks_smoke_runs(tmp_path, results):
    """The report from the smoke runs: every run finished on the synthetic stand-in, every figure present."""
    found = runs.select_runs(results, {})
    families = [results / names.flow_run_name("smoke"), results / names.gan_run_name("smoke")]  # no notebook's
    if not all(path and (path / "summary.json").exists() for path in [*found.values(), *families]):
        subprocess.run([sys.executable, "-m", "experiments", "all", "--preset", "smoke", "--data", "synthetic",
                        "--out", str(results), "--data-root", str(results.parent / "data"), "--device", "cpu",
                        "--resume"], cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    work = tmp_path / "report"
    work.mkdir()
    first, text, values = build_pdf(results, work)
    assert_every_question(text)
    assert_answers_first_and_body_within_budget(text)
    assert_no_verdict_past_its_gate(text, values)
    assert "Missing:" not in text, "a figure the report includes was not produced by the smoke runs"
    assert "synthetic stand-in" in first and "Synthetic stand-in data" in first
    for slot in runs.SLOTS:
        assert values[f"{slot}-status"] == "finished", slot
        assert values[f"{slot}-dataset"] == "synthetic stand-in"
    # The flow and the GAN, smoke runs of `experiments all`: their summaries carry the yardstick.
    for folder in families:
        summary = json.loads((folder / "summary.json").read_text())
        assert all(summary[key] is not None for key in ("fid", "precision", "recall")), folder.name
    assert json.loads((families[0] / "summary.json").read_text())["bits_per_dim"] > 0
    assert "Four families on one yardstick" in text and "none: no likelihood" in text
    assert values["fam-dataset-flow"] == values["fam-dataset-gan"] == "synthetic stand-in"


def test_notebooks_are_thin():
    """No model code in a notebook: no class definitions, no training loops, no optimizers."""
    for path in NOTEBOOKS:
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        for banned in ("class ", "nn.Module", "optimizer.step", ".backward(", "!pip", "%pip"):
            assert banned not in source, (path.name, banned)
