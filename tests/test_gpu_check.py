"""benchmarks/gpu_check.py in its CPU mode: the measurement file it writes (into a temporary folder, never the
repository's benchmarks/measured/), and its CLI-epoch part stopping a run once its epochs are logged."""
import json
import math
import sys
from types import SimpleNamespace

import pytest
import torch

from benchmarks import cost, gpu_check


def test_cpu_mode_writes_a_well_formed_measurement(tmp_path, capsys):
    committed = sorted(cost.MEASURED.iterdir())
    text = gpu_check.main(["--problems", "vae", "ddpm", "--cli", "--measured-dir", str(tmp_path)])
    if not torch.cuda.is_available():
        assert "no CUDA device here: CPU mode" in capsys.readouterr().out
    assert sorted(cost.MEASURED.iterdir()) == committed                 # nothing written into the repository
    (json_path,) = tmp_path.glob("*.json")
    m = json.loads(json_path.read_text())
    assert json_path.with_suffix(".md").read_text() == text == gpu_check.markdown(m)
    assert json_path.stem == cost.slug(m["device"]) and m["device_kind"] == "cpu" and m["preset"] == "smoke"
    assert m["torch"] == torch.__version__ and m["date"] and m["source"].startswith("benchmarks/gpu_check.py")
    cells = {(r["problem"], r["precision"], r["batch"]) for r in m["steps"]}
    assert cells == {(p, "fp32", b) for p in ("vae", "ddpm") for b in (2, 4)}
    for row in m["steps"]:
        assert row["images_per_s"] > 0 and math.isfinite(row["loss"]) and row["steps"] == 1
    assert set(cost.step_models(m)) == {("vae", "fp32"), ("ddpm", "fp32")}   # each fitted at two batches
    assert cost.models_table(m) in text and cost.steps_table(m) in text
    assert m["epochs"] == [] and m["benchmarks"] == {}                   # --cli with no problem; no bench on CPU
    assert m["seconds"] < sum(m["budgets"].values())


FAKE_RUN = """
import json, sys, time
from pathlib import Path
out = Path(sys.argv[1]); out.mkdir(parents=True)
for epoch, (train, total) in enumerate([(2.0, 2.5), (1.0, 1.25), (1.0, 1.25)], 1):
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": epoch, "train_seconds": train, "epoch_seconds": total,
                            "images_per_s": 640 / train}) + "\\n")
    time.sleep(0.2)
time.sleep(120)   # the final evaluation, which the check does not wait for
"""


def fake_cli(script: str):
    return lambda problem, preset, device, out: [sys.executable, "-c", script, str(out)]


def test_cli_epochs_stops_the_run_once_its_epochs_are_logged(monkeypatch):
    monkeypatch.setattr(gpu_check, "cli_command", fake_cli(FAKE_RUN))
    args = SimpleNamespace(preset="full", cli_epochs=2)
    row = gpu_check.cli_epochs("vae", args, torch.device("cpu"), budget=60)
    assert row["measured"] == [{"train_seconds": 2.0, "epoch_seconds": 2.5}, {"train_seconds": 1.0,
                                                                               "epoch_seconds": 1.25}]
    assert row["images"] == 640 and row["note"].startswith("stopped after 2 epoch(s)")
    assert row["command"].endswith("TMP")
    cfg = cost.real_config("vae", "full")
    scale = cost.images_per_epoch("vae", cfg) / 640
    assert cost.epoch_projection("vae", cfg, row) == pytest.approx((2 * scale + 0.5) + 29 * (scale + 0.25))


def test_cli_epochs_reports_a_failed_run(monkeypatch):
    monkeypatch.setattr(gpu_check, "cli_command", fake_cli("import sys; sys.exit('ValueError: no such data root')"))
    row = gpu_check.cli_epochs("ddpm", SimpleNamespace(preset="full", cli_epochs=2), torch.device("cpu"), budget=60)
    assert row["measured"] == [] and row["note"] == "exited with code 1: ValueError: no such data root"
    assert "none finished" in cost.epochs_table({"epochs": [row], "preset": "full"})


def test_missing_packages_are_named():
    assert gpu_check.missing_packages(("torch", "no_such_module_for_a3")) == ["no_such_module_for_a3"]


@pytest.mark.e2e
def test_cpu_mode_runs_one_cli_epoch_of_the_vae(tmp_path):
    """The real CLI (smoke preset, synthetic data) stopped after its first epoch, and the run projected from it."""
    gpu_check.main(["--problems", "vae", "--measured-dir", str(tmp_path)])
    (json_path,) = tmp_path.glob("*.json")
    (row,) = json.loads(json_path.read_text())["epochs"]
    assert row["problem"] == "vae" and len(row["measured"]) == 1 and row["images"] == 640
    assert "--preset smoke --data synthetic" in row["command"]
    assert "(2 epochs of 640 images)" in json_path.with_suffix(".md").read_text()
