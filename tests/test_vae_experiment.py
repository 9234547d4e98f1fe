"""The VAE experiment end to end: CLI smoke, artifacts of 1.3, resume, non-finite losses."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from experiments import __main__ as cli
from experiments.harness.files import read_checkpoint, read_metrics
from experiments.harness.loop import NonFiniteLossError
from experiments.presentation import figures
from experiments.presentation.summaries import VAESummary
from experiments.problems import vae
from tests.conftest import ROOT
from tests.test_discriminator import check_run_result

FIGURES = ["wall_clock.png", "loss.png", "samples_over_training.png", "reconstructions_over_training.png",
           "final_samples.png", "latent_profiles_bars.png", "latent_profiles_heatmap.png", "interpolations.png",
           "amortisation_gaps.png", "discriminator.png"]
TIMING_KEYS = {"train_seconds", "epoch_seconds", "wall_seconds", "images_per_s"}


def smoke(tmp_path, **overrides) -> vae.VAEConfig:
    return replace(vae.config_for("smoke", data="synthetic", data_root=str(tmp_path / "data"), device="cpu"),
                   **overrides)


# The resume and failure tests are about the training loop and its checkpoints: the smoke preset with a
# smaller final evaluation (the CLI smoke run above checks the full one).
QUICK = dict(ll_size=8, ll_K=8, classifier_epochs=1, gap_size=2, gap_steps=5, gap_test_draws=4,
             discriminator_samples=16, discriminator_epochs=1)


def quick(tmp_path, **overrides) -> vae.VAEConfig:
    return smoke(tmp_path, **{**QUICK, **overrides})


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One CLI smoke run shared by the checks below, as a user would type it."""
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "run"
    code = cli.main(["vae", "--preset", "smoke", "--data", "synthetic", "--out", str(out),
                     "--data-root", str(tmp / "data"), "--device", "cpu"])
    assert code == 0
    return out


@pytest.mark.e2e
def test_cli_smoke_writes_every_artifact_of_1_3(smoke_run):
    for name in FIGURES:
        path = smoke_run / "figures" / name
        assert path.exists() and path.stat().st_size > 5_000, name
    for epoch in (1, 2):  # smoke snapshots every epoch
        assert (smoke_run / "artifacts" / "samples" / f"epoch_{epoch:03d}.pt").exists()
        assert (smoke_run / "artifacts" / "reconstructions" / f"epoch_{epoch:03d}.pt").exists()
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["preset"] == "smoke" and config["z_dim"] == 32 and config["batch_size"] == 64


@pytest.mark.e2e
def test_cli_smoke_metrics_and_summary(smoke_run):
    metrics = read_metrics(smoke_run)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert {"loss", "nll", "kl", "test_loss", *TIMING_KEYS} <= set(metrics[0])
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # it learned something
    assert metrics[-1]["wall_seconds"] == pytest.approx(sum(m["epoch_seconds"] for m in metrics))
    summary = VAESummary.read(smoke_run)
    ll = summary.test_log_likelihood_nats
    assert math.isfinite(ll) and summary.ll_K == 100 and summary.dataset == "synthetic"
    assert summary.test_bits_per_dim == pytest.approx(-ll / (3072 * math.log(2)))
    # The importance-sampled log-likelihood bounds the ELBO from above (on different images, loosely).
    assert ll > -summary.final_test_loss - 50
    # A fitted decoder variance beats the graded unit variance, which cannot go below 8.32 bits/dim.
    assert summary.test_bits_per_dim_8bit > 8.32
    assert summary.test_bits_per_dim_8bit > summary.test_elbo_bits_per_dim_8bit_fitted_variance > 0
    # 1.3(b-d, f): the final samples (100) against as many test images (the smoke test set holds 64).
    obs = summary.observations
    assert obs.samples.digits.n_images == sum(obs.samples.digits.class_histogram) == 100
    assert obs.reference.n_images == obs.samples.fid_size == obs.reconstructions.n_images == 64
    assert obs.samples.sharpness_ratio > 0 and obs.samples.classifier_fid >= 0 and obs.reconstructions.t is None
    assert 0 <= obs.samples.digits.confident_fraction <= 1 and obs.samples.digits.threshold == 0.9
    strips = obs.interpolations.test
    assert (strips.n_strips, strips.n_frames, len(strips.steps)) == (3, 10, 9) and 1 / 9 <= strips.evenness <= 1
    assert strips.mean_step == pytest.approx(sum(strips.steps) / 9)
    provenance = json.loads((smoke_run / "provenance.json").read_text())
    assert provenance["source"] == "synthetic" and provenance["device"] == "cpu"
    # Q1.3-1.4 measured on the smoke preset's 4 images: the gap >= 0 within 2 Monte Carlo SE, the times of 1.4(b).
    g = summary.amortisation
    assert g.n_images == 4 and g.ll_K == 100 and 0 < g.per_point_steps <= 20
    assert g.amortisation_gap.nats >= -2 * g.amortisation_gap.mc_se
    assert g.amortisation_gap.nats == pytest.approx(g.per_point_elbo.nats - g.amortised_elbo.nats, abs=1e-3)
    assert g.approximation_gap.nats == pytest.approx(g.log_likelihood.nats - g.per_point_elbo.nats, abs=1e-3)
    assert g.log_likelihood.bits_per_dim == pytest.approx(-(g.log_likelihood.nats - 3072 * math.log(127.5))
                                                          / (3072 * math.log(2)))
    assert 0 < g.seconds_amortised < g.seconds_per_point <= g.seconds
    # Question 3 (Part III): a discriminator between the VAE's samples and as many test images.
    check_run_result(smoke_run, summary.discriminator, vae.PRESETS["smoke"].discriminator_samples)


@pytest.mark.e2e
def test_artifact_contents(smoke_run):
    profiles = torch.load(smoke_run / "artifacts" / "latent_profiles.pt")
    assert profiles["class_means"].shape == (10, 32) and int(profiles["counts"].sum()) == 640
    inter = torch.load(smoke_run / "artifacts" / "interpolations.pt")
    assert inter["test"].shape == (3, 10, 3, 32, 32) and inter["test"].dtype == torch.uint8
    samples = torch.load(smoke_run / "artifacts" / "final_samples.pt")
    assert samples.shape == (100, 3, 32, 32)
    # Fixed latent noise: the two snapshot grids differ only because the model changed.
    s1, s2 = (torch.load(smoke_run / "artifacts" / "samples" / f"epoch_00{e}.pt") for e in (1, 2))
    assert s1.shape == s2.shape == (64, 3, 32, 32)
    gaps = torch.load(smoke_run / "artifacts" / "amortisation.pt")
    assert gaps["amortisation_gap"].shape == gaps["approximation_gap"].shape == (4,)


@pytest.mark.e2e
def test_figures_are_redrawn_from_the_folder_alone(smoke_run):
    for png in (smoke_run / "figures").glob("*.png"):
        png.unlink()
    paths = figures.vae_figures(smoke_run)
    assert sorted(p.name for p in paths) == sorted(FIGURES) and all(p.exists() for p in paths)


@pytest.mark.e2e
def test_existing_run_is_not_overwritten_without_resume(smoke_run, capsys):
    code = cli.main(["vae", "--preset", "smoke", "--data", "synthetic", "--out", str(smoke_run), "--device", "cpu"])
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_resume_refuses_a_different_config(tmp_path):
    cfg = quick(tmp_path, epochs=1)
    vae.run(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="z_dim: saved 32 vs now 16"):  # the lr may change (--lr), the model not
        vae.run(replace(cfg, z_dim=16), tmp_path / "run", resume=True)


# --------------------------------------------------------------------------- resume

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run to compare resumed runs against."""
    tmp = tmp_path_factory.mktemp("ref")
    run_dir = vae.run(quick(tmp, epochs=3), tmp / "run")
    return read_metrics(run_dir), VAESummary.read(run_dir)


def assert_same_run(run_dir, reference):
    metrics, summary = reference
    assert without_timings(read_metrics(run_dir)) == without_timings(metrics)
    assert VAESummary.read(run_dir).test_log_likelihood_nats == summary.test_log_likelihood_nats


def test_resume_after_ctrl_c_mid_epoch_matches_an_uninterrupted_run(tmp_path, reference, monkeypatch):
    cfg = quick(tmp_path, epochs=3)
    calls = {"n": 0}
    real = vae.data.iterate_batches

    def interrupted(*args, **kwargs):
        for i, idx in enumerate(real(*args, **kwargs)):
            if kwargs.get("shuffle") and calls["n"] == 1 and i == 4:  # 2nd training epoch, 5th batch
                raise KeyboardInterrupt
            yield idx
        calls["n"] += bool(kwargs.get("shuffle"))

    monkeypatch.setattr(vae.data, "iterate_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vae.run(cfg, tmp_path / "run")
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1]
    monkeypatch.setattr(vae.data, "iterate_batches", real)
    vae.run(cfg, tmp_path / "run", resume=True)
    assert_same_run(tmp_path / "run", reference)


def test_resume_after_a_crash_between_metrics_and_checkpoint(tmp_path, reference, monkeypatch):
    """The epoch-2 metrics line is on disk but its checkpoint is not: epoch 2 is redone, once."""
    cfg = quick(tmp_path, epochs=3)
    real = vae.Run.save_checkpoint

    def crash_at_epoch_2(self, state):
        if state["epoch"] == 2:
            raise SystemExit("simulated crash")
        real(self, state)

    monkeypatch.setattr(vae.Run, "save_checkpoint", crash_at_epoch_2)
    with pytest.raises(SystemExit):
        vae.run(cfg, tmp_path / "run")
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2]
    monkeypatch.setattr(vae.Run, "save_checkpoint", real)
    vae.run(cfg, tmp_path / "run", resume=True)
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert_same_run(tmp_path / "run", reference)


def test_resume_extends_a_finished_run(tmp_path, reference):
    vae.run(quick(tmp_path, epochs=2), tmp_path / "run")
    vae.run(quick(tmp_path, epochs=3), tmp_path / "run", resume=True)
    assert_same_run(tmp_path / "run", reference)


@pytest.mark.e2e
def test_resume_after_kill_9(tmp_path):
    """A real SIGKILL of the CLI at an arbitrary point; the resumed run finishes all epochs, none repeated."""
    out, data_root = tmp_path / "run", tmp_path / "data"
    args = [sys.executable, "-m", "experiments", "vae", "--preset", "smoke", "--data", "synthetic", "--epochs", "8",
            "--out", str(out), "--data-root", str(data_root), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_metrics(out)) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(read_metrics(out))
    assert 2 <= killed_at < 8, "the run was not killed mid-way"
    subprocess.run(args + ["--resume"], cwd=ROOT, env=env, check=True, capture_output=True)
    assert [m["epoch"] for m in read_metrics(out)] == list(range(1, 9))
    assert (out / "summary.json").exists()


# --------------------------------------------------------------------------- non-finite loss

def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = quick(tmp_path, epochs=3)
    real_build = vae.build_model

    def poisoned(cfg):
        model = real_build(cfg)
        forward = model.forward
        state = {"calls": 0}

        def forward_nan_in_epoch_2(x):
            state["calls"] += 1
            recon, nll, kl = forward(x)
            return (recon, nll * float("nan"), kl) if model.training and state["calls"] > 12 else (recon, nll, kl)
        model.forward = forward_nan_in_epoch_2
        return model

    monkeypatch.setattr(vae, "build_model", poisoned)
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        vae.run(cfg, tmp_path / "run")
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["state"]["model"].values() if v.is_floating_point())
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1]


@torch.no_grad()
def test_interpolation_strips_start_at_the_left_original():
    """The figure puts test_endpoints[:, 0] in the left column: frame 0 must decode that image's mean."""
    import vae_solution
    from experiments.harness import data
    torch.manual_seed(0)
    model = vae_solution.VAE(z_dim=32).eval()
    model.mean.weight.mul_(30)                                         # means far apart,
    model.decoder.decoder_conv[-1].weight.mul_(30)                     # and decodes too, even as uint8
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    test = data.ImageSet(images, torch.arange(8) % 10, "synthetic", "test")
    cfg = replace(vae.VAEConfig(), n_interpolation_pairs=2, n_interpolation_steps=4)
    strips = vae.interpolations(model, test, cfg, torch.device("cpu"))
    ends = data.to_float(strips["test_endpoints"].flatten(0, 1))
    means = model.encode(ends).mode().view(2, 2, -1)
    for p in range(2):
        left, right = (data.to_uint8(model.decode(means[p, end][None]).mode())[0].int() for end in (0, 1))
        assert (left - right).abs().max() > 10
        assert (strips["test"][p, 0].int() - left).abs().max() <= 1, p
        assert (strips["test"][p, -1].int() - right).abs().max() <= 1, p
