"""experiments.runs: the run-time projection printed after the first epoch."""
from __future__ import annotations

import torch

from experiments.runs import duration, projection


def test_duration_formats():
    assert [duration(s) for s in (42.4, 750, 3900, 7500)] == ["42 s", "12 min 30 s", "1 h 05 min", "2 h 05 min"]


def test_projection_names_the_total_the_rest_and_the_device():
    line = projection(60.0, epochs=30, done=1, device=torch.device("cpu"))
    assert "30 epochs x 60 s = 30 min 00 s" in line and "29 min 00 s of it still to go" in line and "on cpu" in line
    resumed = projection(60.0, epochs=30, done=20, device=torch.device("cpu"))
    assert "10 min 00 s of it still to go" in resumed
