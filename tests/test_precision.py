"""Precision (experiments.harness.precision) and the fp16 + GradScaler training path of all
three experiments, run on CPU (CPU autocast supports float16; torch.amp.GradScaler("cpu") exists)."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from experiments import __main__ as cli
from experiments.harness.files import read_checkpoint, read_metrics
from experiments.harness.precision import Precision
from experiments.problems import ddpm, simsiam, vae

TIMING_KEYS = {"train_seconds", "epoch_seconds", "wall_seconds", "images_per_s", "sample_seconds"}


# --------------------------------------------------------------------------- Precision

def test_autocast_dtypes_on_cpu():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for name, dtype in [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)]:
        with Precision("cpu", name).autocast():
            assert layer(x).dtype == dtype, name
    with pytest.raises(ValueError, match="fp32"):
        Precision("cpu", "auto")  # auto is decided by experiments.harness.execution, never held by a Precision


def test_scaler_only_for_fp16_and_its_state_round_trips():
    assert Precision("cpu", "fp16").scaler.is_enabled()
    assert not Precision("cpu", "bf16").scaler.is_enabled() and not Precision("cpu", "fp32").scaler.is_enabled()
    a = Precision("cpu", "fp16")
    a.scaler.scale(torch.ones(()))  # the scaler starts its state at the first scaled loss
    a.scaler.update(1234.0)  # a scale as after some growth/backoff steps
    b = Precision("cpu", "fp16")
    b.load_state_dict(a.state_dict())
    assert b.scaler.get_scale() == 1234.0
    c = Precision("cpu", "fp32")
    c.load_state_dict(a.state_dict())  # saved by another precision: ignored, not an error
    assert not c.scaler.is_enabled()


def test_fp16_step_skips_an_overflowing_gradient_and_backs_off():
    """The point of the scaler: an inf gradient leaves the weights alone and halves the scale."""
    prec = Precision("cpu", "fp16")
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([w], lr=0.1)
    scale = prec.scaler.get_scale()
    prec.backward((w * float("inf")).sum())
    prec.step(optimizer)
    assert torch.equal(w.detach(), torch.ones(3)) and prec.scaler.get_scale() == scale / 2


def test_cli_records_the_precision(tmp_path):
    out = tmp_path / "run"
    code = cli.main(["vae", "--preset", "smoke", "--data", "synthetic", "--data-root", str(tmp_path / "data"),
                     "--device", "cpu", "--epochs", "1", "--precision", "bf16", "--out", str(out)])
    assert code == 0
    assert json.loads((out / "provenance.json").read_text())["precision"] == "bf16"
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"


# --------------------------------------------------------------------------- fp16 training and resume, CPU

# CPU fp16 convolutions are emulated and slow (about 20x fp32 here): the models and data are tiny.
def tiny_vae(root, **kw):
    return replace(vae.config_for("smoke", data="synthetic", data_root=str(root), device="cpu", precision="fp16"),
                   batch_size=16, train_size=64, test_size=32, ll_size=8, ll_K=4, profile_size=64, gap_size=2,
                   gap_steps=5, gap_test_draws=4, **kw)


def tiny_ddpm(root, **kw):
    cfg = ddpm.config_for("smoke", data="synthetic", data_root=str(root), device="cpu", precision="fp16")
    return replace(cfg, dim=8, dim_mults=(1, 2), timesteps=10, batch_size=16, train_size=64, test_size=32,
                   eval_size=16, eval_batch_size=16, n_samples=4, preview_every=0, snapshot_every=100,
                   n_final_samples=4, recon_size=4, recon_shown=4, recon_levels=(1000,), quality_size=4,
                   probe_train=32, probe_test=16, classifier_epochs=1, **kw)


def tiny_simsiam(root, **kw):
    cfg = simsiam.config_for("smoke", data="synthetic", data_root=str(root), device="cpu", backbone="tiny",
                             precision="fp16")
    return replace(cfg, **kw)


PROBLEMS = {"vae": (vae, tiny_vae), "ddpm": (ddpm, tiny_ddpm), "simsiam": (simsiam, tiny_simsiam)}


def without_timings(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


# The DDPM's CPU fp16 (emulated, about 20x fp32) takes a minute: end-to-end, run by scripts/test.sh.
@pytest.mark.parametrize("problem", ["vae", pytest.param("ddpm", marks=pytest.mark.e2e), "simsiam"])
def test_fp16_training_is_finite_and_resumes_exactly(tmp_path, monkeypatch, problem):
    module, make = PROBLEMS[problem]
    cfg = make(tmp_path / "data", epochs=2)
    straight = module.run(cfg, tmp_path / "straight")
    metrics = read_metrics(straight)
    assert all(math.isfinite(m["loss"]) for m in metrics)
    assert json.loads((straight / "provenance.json").read_text())["precision"] == "fp16"
    saved = read_checkpoint(straight / "checkpoint.pt")["state"]["precision"]
    assert saved["name"] == "fp16" and saved["scaler"]["scale"] > 0  # the scaler's state is checkpointed

    calls = {"n": 0}
    real = module.data.iterate_batches

    def interrupted(*args, **kwargs):  # Ctrl-C at the 2nd batch of the 2nd training epoch
        for i, idx in enumerate(real(*args, **kwargs)):
            if kwargs.get("shuffle") and calls["n"] == 1 and i == 1:
                raise KeyboardInterrupt
            yield idx
        calls["n"] += bool(kwargs.get("shuffle"))

    monkeypatch.setattr(module.data, "iterate_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        module.run(cfg, tmp_path / "resumed")
    monkeypatch.setattr(module.data, "iterate_batches", real)
    module.run(cfg, tmp_path / "resumed", resume=True)
    assert without_timings(read_metrics(tmp_path / "resumed")) == without_timings(metrics)
