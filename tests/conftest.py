"""Shared fixtures. Tests run on CPU, offline; the repository root is importable (pytest.ini)."""
import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SPEC = Path(__file__).parent / "spec" / "state_dicts.json"  # a copy of shared/spec/state_dicts.json


@pytest.fixture(autouse=True)
def _one_thread():
    # One intra-op thread: on a busy 2-core machine, two spinning OpenMP threads per process
    # were measured 10-30x slower than one; on an idle one, one thread costs well under 2x.
    # The cores are used instead by one pytest-xdist worker each (pytest.ini: -n auto).
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _shared_synthetic_cache(tmp_path_factory):
    """One cache of the synthetic stand-in for the whole session (its 25,000 images take seconds to render),
    shared by the pytest-xdist workers and the processes the tests start (the variable is inherited)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "synthetic-cache"
    os.environ["A3_SYNTHETIC_CACHE"] = str(folder)
    yield
    os.environ.pop("A3_SYNTHETIC_CACHE", None)


@pytest.fixture(scope="session")
def state_dict_spec() -> dict:
    return json.loads(SPEC.read_text())
