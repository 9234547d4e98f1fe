"""scripts/make_submission.py: the bundle is written from the real graded files, and each check
catches a deliberately bad file (print, .cuda(), !pip, disallowed import, file created, seeding)."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _load():
    spec = importlib.util.spec_from_file_location("make_submission", ROOT / "scripts" / "make_submission.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ms = _load()
PDF = b"%PDF-1.4\n% a stand-in report\n%%EOF\n"


@pytest.fixture
def report(tmp_path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(PDF)
    return path


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(source)
    return path


def test_bundle_of_the_repository_files(tmp_path, report, capsys):
    out = tmp_path / "submission"
    assert ms.main(["--report", str(report), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*ms.GRADED, "report.pdf"])
    for name in ms.GRADED:
        assert (out / name).read_bytes() == (ROOT / name).read_bytes()
    assert (out / "report.pdf").read_bytes() == PDF
    assert "checked and bundled 5 files" in capsys.readouterr().out


# A minimal graded file: allowed imports, nothing at import.
GOOD = '''"""A graded file."""
import math

import torch


def f(x: torch.Tensor) -> torch.Tensor:
    # never call .cuda() here: the device follows x
    return x * math.pi
'''


@pytest.mark.parametrize("bad, problem", [
    (GOOD + "\n!pip install torch\n", "notebook command"),
    (GOOD + "\n%pip install einops\n", "notebook command"),
    (GOOD + "\ndef g(x):\n    return x.cuda()\n", "calls .cuda()"),
    (GOOD + "\ndef g():\n    import pandas\n", "imports 'pandas'"),
    (GOOD + "\nfrom sklearn.metrics import accuracy_score\n", "imports 'sklearn.metrics'"),
    (GOOD + "\nfrom . import helpers\n", "relative import"),
    (GOOD + "\ndef g(:\n", "not valid Python"),
], ids=["bang-pip", "percent-pip", "cuda", "pandas", "sklearn", "relative", "syntax"])
def test_static_checks_catch_bad_sources(tmp_path, bad, problem):
    path = write(tmp_path, "vae_solution.py", bad)
    with pytest.raises(ms.SubmissionError, match="vae_solution.py") as caught:
        ms.check_source(path)
    assert problem in str(caught.value)


def test_static_checks_accept_a_good_source(tmp_path):
    ms.check_source(write(tmp_path, "ddpm_solution.py", GOOD + "\nimport numpy as np\nfrom einops import rearrange\n"))
    ms.check_source(write(tmp_path, "q3_solution.py", GOOD + "\nimport q3_misc\n"), siblings=("q3_misc",))
    with pytest.raises(ms.SubmissionError, match="imports 'q3_misc'"):
        ms.check_source(write(tmp_path, "vae_solution.py", GOOD + "\nimport q3_misc\n"))


# Without torch: each import check then costs a bare interpreter, not a torch import.
PLAIN = '''"""A graded file."""
import math


def f(x):
    return x * math.pi
'''


@pytest.mark.parametrize("bad, problem", [
    (PLAIN + "\nprint('loaded')\n", "prints at import (stdout: 'loaded')"),
    (PLAIN + "\nimport sys\nsys.stderr.write('careful\\n')\n", "prints at import (stderr: 'careful')"),
    (PLAIN + "\nimport os\nos.makedirs('data', exist_ok=True)\n", "creates files at import (data)"),
    (PLAIN + "\nimport random\nrandom.seed(0)\n", "seeds or draws"),
    (PLAIN + "\nimport numpy as np\nnp.random.rand()\n", "seeds or draws"),
    (GOOD + "\ntorch.manual_seed(0)\n", "seeds or draws"),
    (PLAIN + "\nraise RuntimeError('boom')\n", "RuntimeError: boom"),
], ids=["print", "stderr", "folder", "random-seed", "numpy-draw", "torch-seed", "error"])
def test_import_check_catches_side_effects(tmp_path, bad, problem):
    path = write(tmp_path, "q3_misc.py", bad)
    with pytest.raises(ms.SubmissionError, match="q3_misc.py") as caught:
        ms.check_file(path)
    assert problem in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q3_misc.py"]  # the check ran elsewhere


def test_a_failed_check_writes_nothing(tmp_path, report):
    root = tmp_path / "root"
    root.mkdir()
    for name in ms.GRADED:
        shutil.copyfile(ROOT / name, root / name)
    write(root, "vae_solution.py", GOOD + "\nx = torch.zeros(1).cuda()\n")
    out = tmp_path / "submission"
    assert ms.main(["--root", str(root), "--report", str(report), "--out", str(out)]) == 1
    assert not out.exists()


def test_report_is_required_unless_no_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ms, "check_import", lambda *args: None)  # the static checks still run
    out = tmp_path / "submission"
    assert ms.main(["--report", str(tmp_path / "absent.pdf"), "--out", str(out)]) == 1
    assert "report PDF" in capsys.readouterr().err and not out.exists()
    write(tmp_path, "fake.pdf", "not a pdf")
    with pytest.raises(ms.SubmissionError, match="not a PDF"):
        ms.check_report(tmp_path / "fake.pdf")
    out.mkdir()
    (out / "report.pdf").write_bytes(PDF)  # from an earlier bundle
    assert ms.main(["--no-report", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(ms.GRADED)
