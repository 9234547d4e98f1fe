"""Shared fixtures. Tests run on CPU, offline; the repository root is importable (pytest.ini)."""
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SPEC = Path(__file__).parent / "spec" / "state_dicts.json"  # a copy of shared/spec/state_dicts.json


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def state_dict_spec() -> dict:
    return json.loads(SPEC.read_text())
