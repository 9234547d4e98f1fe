"""The DDPM experiment end to end: CLI smoke with every artifact of 2.2 and 2.3, resume, the T study."""
import json
import math
from dataclasses import replace

import pytest
import torch

from experiments import __main__ as cli
from experiments.harness.files import read_checkpoint, read_metrics
from experiments.presentation import figures
from experiments.presentation.summaries import DDPMSummary
from experiments.problems import ddpm
from experiments.problems.diffusion import Diffusion
from tests.test_discriminator import check_run_result

FIGURES = ["wall_clock.png", "loss.png", "samples_over_training.png", "previews_over_training.png",
           "reconstructions.png", "reconstruction_curves.png", "final_samples.png", "ddpm_vs_vae.png", "probe.png",
           "bound_terms.png", "discriminator.png"]
TIMING_KEYS = {"train_seconds", "epoch_seconds", "wall_seconds", "images_per_s", "sample_seconds"}


def smoke(tmp_path, **overrides) -> ddpm.DDPMConfig:
    return replace(ddpm.config_for("smoke", data="synthetic", data_root=str(tmp_path / "data"), device="cpu"),
                   **overrides)


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One CLI smoke run, as a user would type it."""
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "run"
    code = cli.main(["ddpm", "--preset", "smoke", "--data", "synthetic", "--out", str(out),
                     "--data-root", str(tmp / "data"), "--device", "cpu"])
    assert code == 0
    return out


@pytest.mark.e2e
def test_cli_smoke_writes_every_artifact_of_2_2(smoke_run):
    for name in FIGURES:
        path = smoke_run / "figures" / name
        assert path.exists() and path.stat().st_size > 5_000, name
    for epoch in (1, 2):
        assert (smoke_run / "artifacts" / "samples" / f"epoch_{epoch:03d}.pt").exists()
        assert (smoke_run / "artifacts" / "previews" / f"epoch_{epoch:03d}.pt").exists()
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["preset"] == "smoke" and config["timesteps"] == 50 and config["batch_size"] == 64


@pytest.mark.e2e
def test_cli_smoke_metrics_and_summary(smoke_run):
    metrics = read_metrics(smoke_run)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert {"loss", "test_loss", "test_loss_ema", "sample_seconds", *TIMING_KEYS} <= set(metrics[0])
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"]  # same fixed test triples: it learned
    s = DDPMSummary.read(smoke_run)
    assert s.dataset == "synthetic" and s.timesteps == 50
    levels = s.recon_levels
    assert levels == sorted(levels) and levels[-1] == 50 and len(s.recon_mse) == len(levels)
    assert all(0 <= r <= 1 for r in s.recon_label_preserved)
    # More noise, further from the original: the last level is further than the first.
    assert s.recon_mse[-1] > s.recon_mse[0]
    assert s.t_star is None or 0 < s.t_star <= 50
    assert math.isfinite(s.quality_classifier_fid) and s.quality_classifier_fid >= 0
    assert 0.1 <= s.quality_mean_confidence <= 1
    assert [level.t for level in s.probe.levels] == [1, 5, 15] and 0 <= s.probe.raw_pixels <= 1
    assert s.sample_seconds > 0 and s.train_seconds_per_epoch > 0 and s.n_sampled == 32  # max(16 final, 32 quality)
    # The schedule the run trained with, for the report: alpha_bar_t of its Diffusion, t = 1..T.
    config = json.loads((smoke_run / "config.json").read_text())
    diffusion = Diffusion(s.timesteps, config["beta_start"], config["beta_end"], schedule=s.beta_schedule)
    assert s.alpha_bar == diffusion.alphas_cumprod.tolist()
    # 2.2(d): the final samples' statistics, as the VAE's; reconstructions at the smallest t' of the study.
    obs = s.observations
    assert obs.samples.digits.n_images == obs.samples.fid_size == obs.reference.n_images == s.n_final_samples
    assert obs.samples.sharpness_ratio > 0 and math.isfinite(obs.samples.classifier_fid) and obs.interpolations is None
    assert (obs.reconstructions.t, obs.reconstructions.n_images) == (s.recon_levels[0], 8)
    # Q2.3 measured: the bound on 4 test images (as the VAE's smoke), in bits/dim on the 8-bit scale.
    b = s.bound
    assert b.n_images == 4 and b.decoder == "discrete" and b.network_evaluations == 1 + (2 + 4) * 2
    assert b.nll_bound.nats == pytest.approx(b.reconstruction + b.denoising + b.prior, rel=1e-5)
    assert min(b.reconstruction, b.denoising, b.prior) > 0
    assert b.nll_bound.bits_per_dim == pytest.approx(b.nll_bound.nats / (3072 * math.log(2)))
    steps = torch.load(smoke_run / "artifacts" / "bound.pt")
    assert steps["weight"].sum().item() == pytest.approx(49) and steps["t"].min() >= 2   # t = 2..50
    # Question 3 (Part III): a discriminator between the quality proxy's samples and as many test images.
    check_run_result(smoke_run, s.discriminator, s.quality_size)


@pytest.mark.e2e
def test_artifact_contents(smoke_run):
    final = torch.load(smoke_run / "artifacts" / "final_samples.pt")
    assert final.shape == (16, 3, 32, 32) and final.dtype == torch.uint8
    r = torch.load(smoke_run / "artifacts" / "reconstructions.pt", weights_only=False)
    assert r["reconstructions"].shape == (len(r["levels"]), 8, 3, 32, 32) and r["original"].shape == (8, 3, 32, 32)
    # Fixed noise at every snapshot: same shapes, and the grids differ only because the model changed.
    s1, s2 = (torch.load(smoke_run / "artifacts" / "samples" / f"epoch_00{e}.pt") for e in (1, 2))
    assert s1.shape == s2.shape == (8, 3, 32, 32) and not torch.equal(s1, s2)


@pytest.mark.e2e
def test_figures_are_redrawn_from_the_folder_alone(smoke_run):
    for png in (smoke_run / "figures").glob("*.png"):
        png.unlink()
    paths = figures.ddpm_figures(smoke_run)
    assert sorted(p.name for p in paths) == sorted(FIGURES) and all(p.exists() for p in paths)


@pytest.mark.e2e
def test_vae_samples_are_drawn_beside_when_a_vae_run_exists(smoke_run, tmp_path):
    vae_dir = tmp_path / "vae-smoke"
    (vae_dir / "artifacts").mkdir(parents=True)
    torch.save(torch.zeros(64, 3, 32, 32, dtype=torch.uint8), vae_dir / "artifacts" / "final_samples.pt")
    (vae_dir / "provenance.json").write_text(json.dumps({"source": "synthetic"}))
    assert figures.ddpm_vs_vae(smoke_run, vae_dir).exists()


@pytest.mark.e2e
def test_timesteps_study_table(smoke_run, tmp_path):
    """2.3(a): the comparison reads each run's summary (here the same run twice, relabelled)."""
    other = tmp_path / "T100"
    other.mkdir()
    replace(DDPMSummary.read(smoke_run), timesteps=100).write(other)
    path = figures.ddpm_timesteps([smoke_run, other], tmp_path / "out")
    assert path.exists() and path.stat().st_size > 5_000


def test_run_names_and_variants():
    assert ddpm.run_name(ddpm.config_for("full")) == "ddpm-full"
    assert ddpm.run_name(ddpm.config_for("full", timesteps=500)) == "ddpm-full-T500"
    assert ddpm.run_name(ddpm.config_for("smoke")) == "ddpm-smoke"
    assert [v.get("timesteps") for v in ddpm.variants("full")] == [None, 500, 1500]
    with pytest.raises(ValueError, match="ablation"):
        ddpm.config_for("full", ablation="baseline")
    full = ddpm.config_for("full")
    expected = (64, 1e-4, 1000, 32, (1, 2, 4, 8))
    assert (full.batch_size, full.lr, full.timesteps, full.dim, tuple(full.dim_mults)) == expected


def test_cli_rejects_a_bad_timesteps_value(tmp_path, capsys):
    code = cli.main(["ddpm", "--preset", "smoke", "--data", "synthetic", "--timesteps", "1",
                     "--out", str(tmp_path / "run"), "--data-root", str(tmp_path / "data"), "--device", "cpu"])
    assert code == 2 and "timesteps" in capsys.readouterr().err


# --------------------------------------------------------------------------- resume

@pytest.mark.e2e  # three DDPM runs; the VAE and SimSiam ctrl-c resumes stay in plain pytest
def test_resume_after_ctrl_c_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """Interrupted in the 2nd epoch, resumed: the metrics (losses, EMA test loss) equal a straight run's."""
    # A tiny U-Net and T = 10: resuming is about the loop's state, not the model's size.
    fast = dict(epochs=3, train_size=192, dim=8, dim_mults=(1, 2), timesteps=10, eval_size=16, preview_every=0,
                snapshot_every=100, n_final_samples=4, recon_size=4, recon_shown=4, recon_levels=(1000,),
                quality_size=4, probe_train=64, probe_test=32, classifier_epochs=1)
    straight = ddpm.run(smoke(tmp_path, **fast), tmp_path / "straight")
    calls = {"n": 0}
    real = ddpm.data.iterate_batches

    def interrupted(*args, **kwargs):
        for i, idx in enumerate(real(*args, **kwargs)):
            if kwargs.get("shuffle") and kwargs.get("generator") is not None and calls["n"] == 1 and i == 1:
                raise KeyboardInterrupt
            yield idx
        calls["n"] += bool(kwargs.get("shuffle") and kwargs.get("generator") is not None)

    monkeypatch.setattr(ddpm.data, "iterate_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ddpm.run(smoke(tmp_path, **fast), tmp_path / "resumed")
    assert [m["epoch"] for m in read_metrics(tmp_path / "resumed")] == [1]
    monkeypatch.setattr(ddpm.data, "iterate_batches", real)
    ddpm.run(smoke(tmp_path, **fast), tmp_path / "resumed", resume=True)
    assert without_timings(read_metrics(tmp_path / "resumed")) == without_timings(read_metrics(straight))
    a, b = (read_checkpoint(d / "checkpoint.pt")["state"]["ema"]
            for d in (straight, tmp_path / "resumed"))
    assert a["updates"] == b["updates"] == 9
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
