"""report/ (python -m report.build): run discovery, number macros, placeholders, provenance, and the PDF itself.

Unit tests run on small fake run folders (the layout of experiments/harness/runs.py). The PDF tests need
latexmk and pdflatex (Debian: latexmk texlive-latex-base texlive-latex-recommended
texlive-latex-extra) and pdftotext (poppler-utils), and are skipped without them. The PDF built from
real smoke runs is tested in tests/test_notebooks.py, after the notebooks that make those runs.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from experiments.presentation import names
from experiments.presentation.summaries import (
    SPECTRUM_FOLDER,
    Alignment,
    AmortisationGaps,
    DDPMSummary,
    DigitPatterns,
    DiscriminatorResult,
    Estimate,
    FlowSummary,
    GANSummary,
    Interpolations,
    Interval,
    LevelAccuracy,
    Observations,
    ProbeResult,
    ReconstructionObservations,
    SampleObservations,
    SimSiamSummary,
    SpectrumResult,
    StripObservations,
    VAESummary,
    VariationalBound,
)
from report import build, latex, numbers, runs
from tests.conftest import ROOT

REPORT = ROOT / "report"

HAVE_LATEX = shutil.which("latexmk") is not None and shutil.which("pdflatex") is not None
HAVE_PDFTOTEXT = shutil.which("pdftotext") is not None
needs_latex = pytest.mark.skipif(not (HAVE_LATEX and HAVE_PDFTOTEXT),
                                 reason="needs latexmk + pdflatex (apt-get install latexmk texlive-latex-base "
                                        "texlive-latex-recommended texlive-latex-extra) and pdftotext (poppler-utils)")

# Every question of the assignment, as a heading at the start of a line of `pdftotext` output.
THEORY = ["1.1", "1.2", "1.3", "1.4", *(f"2.{k}" for k in range(1, 8)), "3.1", "3.2", *(f"4.{k}" for k in range(1, 6))]
PRACTICAL = [*(f"1.3({c})" for c in "abcdef"), *(f"2.2({c})" for c in "abcd"), "2.3(a)", "2.3(b)",
             "3.4", "3.5(a)", "3.5(b)", "3.5(c)", "3.6", "3.7", "3.8", "3.9"]


# --------------------------------------------------------------------------- fake run folders

def png(path: Path, width: int = 6, height: int = 4) -> None:
    """A valid RGB PNG (what pdflatex needs), written with the standard library only."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes([200, 120, 40]) * width for _ in range(height))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def tex_figures() -> dict[str, set[str]]:
    """{slot: PNG names} that the practical and measured .tex files include with \\fig{slot}{name}."""
    found: dict[str, set[str]] = {}
    for tex in [*(REPORT / "practical").glob("*.tex"), *(REPORT / "measured").glob("*.tex")]:
        for slot, name in re.findall(r"\\fig(?:\[[^\]]*\])?\{([^}]+)\}\{([^}]+)\}", tex.read_text()):
            found.setdefault(slot, set()).add(name)
    return found


def tex_values() -> set[str]:
    """Every key read with \\val{...} in report.tex and the practical and measured .tex files."""
    text = (REPORT / "report.tex").read_text() + "".join(
        p.read_text() for part in ("practical", "measured") for p in (REPORT / part).glob("*.tex"))
    text = re.sub(r"(?<!\\)%.*", "", text)  # comments
    return set(re.findall(r"\\val\{([^}#]+)\}", text))


def macro_values(macro: str) -> set[str]:
    """The keys, less their '#1-' prefix, that the body of \\newcommand{\\<macro>} in report/measured reads."""
    text = "".join(p.read_text() for p in (REPORT / "measured").glob("*.tex"))
    body = re.search(r"\\newcommand\{\\" + macro + r"\}\[1\]\{(.*?)\n\n", text, flags=re.S)
    assert body, f"no \\newcommand{{\\{macro}}} in report/measured"
    return set(re.findall(r"\\val\{#1-([^}]+)\}", body[1]))


def metrics_lines(epochs: int, **extra) -> list[dict]:
    return [{"epoch": e, "loss": 10.0 / e, "train_seconds": 30.0 + e, "epoch_seconds": 40.0 + e,
             "wall_seconds": 40.0 * e + e * (e + 1) / 2, "images_per_s": 1000.0 + e, **extra}
            for e in range(1, epochs + 1)]


def make_run(results: Path, name: str, *, config: dict,
             summary: VAESummary | DDPMSummary | SimSiamSummary | FlowSummary | GANSummary | None,
             metrics: list[dict],
             source: str = "synthetic", device: str = "cuda", device_name: str = "NVIDIA H100 80GB HBM3",
             figures: set[str] = frozenset(), mtime: float | None = None, precision: str = "bf16",
             micro_batch: tuple[int, int] | None = None) -> Path:
    run = results / name
    (run / "figures").mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "provenance.json").write_text(json.dumps({
        "source": source, "requested": source, "fallback_reason": None, "device": device,
        "device_name": device_name, "cpu_count": "16", "n_train": 73257, "n_test": 26032, "precision": precision,
        **({"micro_batch": micro_batch[0], "accumulation_steps": micro_batch[1]} if micro_batch else {})}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if summary is not None:
        summary.write(run)
    for figure in figures:
        png(run / "figures" / f"{figure}.png")
    if mtime is not None:
        for p in run.iterdir():
            os.utime(p, (mtime, mtime))
    return run


def digits(confident: float, histogram: list[int] | None = None) -> DigitPatterns:
    histogram = histogram or [10] * 10
    return DigitPatterns(n_images=sum(histogram), threshold=0.9, confident_fraction=confident,
                         mean_top_probability=0.5 + confident / 2, class_histogram=histogram)


def strips(evenness: float, middle: float) -> StripObservations:
    return StripObservations(n_strips=6, n_frames=10, mean_step=0.021, evenness=evenness, steps=[0.021] * 9,
                             middle_confident_fraction=middle)


def observations(*, sharpness: float, confident: float, fid: float, reference: float = 0.8,
                 histogram: list[int] | None = None, recon: float = 0.5, recon_t: int | None = None,
                 evenness: tuple[float, float] | None = None, middle: float = 0.7) -> Observations:
    """The observations block of a summary, with the numbers that choose the report's words."""
    n = sum(histogram) if histogram else 100
    return Observations(
        samples=SampleObservations(sharpness_ratio=sharpness, digits=digits(confident, histogram), classifier_fid=fid,
                                   fid_size=n),
        reference=digits(reference),
        reconstructions=ReconstructionObservations(sharpness_ratio=recon, n_images=n if recon_t is None else 10,
                                                   t=recon_t),
        interpolations=None if evenness is None else Interpolations(test=strips(evenness[0], middle),
                                                                    prior=strips(evenness[1], middle)))


VAE_OBSERVATIONS = observations(sharpness=0.31, confident=0.42, fid=5.0, evenness=(0.82, 0.71))
def log_p_estimate(nats: float, mc_se: float) -> Estimate:
    """A VAE bound on log p(x), nats per image, with -log p(x) in bits/dim on the 8-bit scale (D = 3072)."""
    return Estimate(nats=nats, mc_se=mc_se, image_se=12.0,
                    bits_per_dim=(3072 * math.log(127.5) - nats) / (3072 * math.log(2)))


def fake_gaps(gap: float = 5.0, gap_se: float = 0.5, approx: float = 20.0, approx_se: float = 1.0,
              negative: int = 0, ll_nats: float = -3105.0, proposal: str = "per-point",
              converged: bool = True) -> AmortisationGaps:
    """Q1 measured: an amortisation gap `gap` +- gap_se and an approximation gap `approx` +- approx_se, nats; log p(x)
    importance-sampled from `proposal`, the graded estimate 3 nats below it."""
    per_point = ll_nats - approx
    return AmortisationGaps(
        n_images=500, dims=3072, ll_K=100, amortised_elbo=log_p_estimate(per_point - gap, 0.6),
        per_point_elbo=log_p_estimate(per_point, 0.6), log_likelihood=log_p_estimate(ll_nats, 0.8),
        ll_proposal=proposal, graded_log_likelihood=log_p_estimate(ll_nats - 3.0, 0.5), per_point_converged=converged,
        amortisation_gap=Estimate(nats=gap, mc_se=gap_se, image_se=0.4),
        approximation_gap=Estimate(nats=approx, mc_se=approx_se, image_se=0.5), negative_images=negative,
        per_point_steps=300, stopping_rule="at most 300 Adam steps", seconds_amortised=0.02, seconds_per_point=9.0,
        seconds=12.0)


def fake_bound(bits: float = 3.3, prior: float = 0.05) -> VariationalBound:
    """Q2.3 measured: a DDPM bound of `bits` bits/dim (discretised decoder) whose L_T is `prior` nats."""
    nats = bits * 3072 * math.log(2)
    return VariationalBound(n_images=500, dims=3072, nll_bound=Estimate(nats=nats, mc_se=15.0, image_se=40.0,
                                                                        bits_per_dim=bits),
                            reconstruction=0.3 * nats, denoising=0.7 * nats - prior, prior=prior, decoder="discrete",
                            variance="posterior", exact_steps=20, strata=40, draws_per_stratum=4,
                            network_evaluations=241, seconds=6.0)


def drs_result(fid_accepted: float | None = 2.0, fid_subset: float | None = 3.0, jsd_accepted: float = 0.05,
               jsd_subset: float = 0.2) -> DiscriminatorResult:
    """Question 3's measurement; JSD intervals of +-0.03 around each estimate."""
    def interval(v: float) -> Interval:
        return Interval(estimate=v, low=v - 0.03, high=v + 0.03, level=0.95)
    return DiscriminatorResult(
        jsd=interval(0.3), accepted_fraction=0.125, n_accepted=625, fid_samples=2.5, fid_accepted=fid_accepted,
        fid_subset=fid_subset, jsd_accepted=interval(jsd_accepted), jsd_subset=interval(jsd_subset),
        n_real_train=5000, n_fake_train=5000, n_real_test=5000, n_fake_test=5000, epochs=5, seconds=42.0)


def spectrum_result(epoch: int, erank: float, trace: float = 2000.0, diagonal_fraction: float | None = 0.7,
                    d: int = 2048) -> SpectrumResult:
    """Question 4's measurement after `epoch`; diagonal_fraction None: a run without a predictor. Its chance level
    in a random basis is 0.2 (spread 0.01) for the diagonal fraction, 0.5 for the mean |cos| (0.75)."""
    alignment = None if diagonal_fraction is None else Alignment(
        diagonal_fraction=diagonal_fraction, chance=0.2, cosines=[0.9, -0.8, 0.7, 0.6],
        diagonal=[1.0, -0.5, 0.4, 0.3], chance_spread=0.01, excess=(diagonal_fraction - 0.2) / 0.8,
        mean_abs_cos=0.75, cos_chance=0.5, cos_chance_se=0.001, cos_chance_spread=0.02, cos_excess=0.5, rotations=16)
    return SpectrumResult(epoch=epoch, eigenvalues=[1.0, 0.5, 0.25], largest=10.0, trace=trace, effective_rank=erank,
                          alignment=alignment, predictor_map="the Jacobian", d=d, n=512, seconds=0.5)


def write_spectra(run: Path, results: list[SpectrumResult]) -> None:
    folder = run / "artifacts" / SPECTRUM_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        (folder / f"epoch_{r.epoch:03d}.json").write_text(json.dumps(r.to_dict()))


VAE_SUMMARY = VAESummary(epochs=3, dataset="synthetic", test_log_likelihood_nats=-3084.81, test_bits_per_dim=1.4487,
                         test_bits_per_dim_8bit=8.4431, test_elbo_bits_per_dim_8bit_fitted_variance=5.1234, ll_K=100,
                         ll_n_images=26032, final_train_loss=3155.05, final_test_loss=3110.82, train_wall_seconds=90.0,
                         wall_seconds=126.0, classifier_test_accuracy=0.953, observations=VAE_OBSERVATIONS,
                         amortisation=fake_gaps(), discriminator=drs_result())


def vae_run(results: Path, name: str = "vae-full", *, artifacts: bool = False, **kw) -> Path:
    config = {"preset": name.split("-")[1], "epochs": 3, "batch_size": 64, "lr": 1e-4, "z_dim": 32, "n_samples": 64,
              "n_reconstructions": 32, "n_final_samples": 100}
    run = make_run(results, name, config=config, summary=kw.pop("summary", VAE_SUMMARY),
                   metrics=metrics_lines(3, test_loss=3110.8, test_nll=3050.5, test_kl=60.3), **kw)
    for e in (1, 3):
        (run / "artifacts" / "samples").mkdir(parents=True, exist_ok=True)
        (run / "artifacts" / "samples" / f"epoch_{e:03d}.pt").write_bytes(b"")
    if artifacts:
        g = torch.Generator().manual_seed(0)
        torch.save({"class_means": torch.randn(10, 32, generator=g), "counts": torch.arange(50, 60),
                    "overall_mean": torch.zeros(32), "overall_std": torch.linspace(0.05, 1.0, 32)},
                   run / "artifacts" / "latent_profiles.pt")
        strip = torch.arange(0, 220, 22).to(torch.uint8).view(1, 10, 1, 1, 1).expand(2, 10, 3, 32, 32)
        torch.save({"test": strip.clone(), "test_endpoints": strip[:, :2].clone(), "prior": strip.clone()},
                   run / "artifacts" / "interpolations.pt")
    return run


def linear_alpha_bar(T: int) -> list[float]:
    """alpha_bar_t, t = 1..T, of the linear schedule from 1e-4 to 0.02 (float64: an oracle independent of the run)."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0).tolist()


def ddpm_summary(T: int, fid: float, sample_s: float, t_star: float | None = 312.4) -> DDPMSummary:
    probe = ProbeResult(raw_pixels=0.24, levels=[LevelAccuracy(t=t, accuracy=a) for t, a in ((1, 0.71), (100, 0.66),
                                                                                           (300, 0.52))],
                        feature_dim=256, n_train=5000, n_test=2000)
    return DDPMSummary(
        epochs=2, timesteps=T, beta_schedule="linear", dataset="synthetic", final_train_loss=0.031,
        final_test_loss_ema=0.029, train_seconds_per_epoch=60.0, train_images_per_s=1200.0, train_wall_seconds=120.0,
        wall_seconds=150.0, sample_seconds=100 * sample_s, sample_seconds_per_image=sample_s, n_final_samples=100,
        classifier_test_accuracy=0.953, recon_levels=[50, 500, 1000], recon_mse=[0.01, 0.2, 0.5],
        recon_label_preserved=[0.94, 0.4, 0.1], recon_clean_accuracy=0.95, t_star=t_star,
        t_star_rule="first t' where the rate falls below half", quality_classifier_fid=fid,
        quality_mean_confidence=0.812, quality_size=1000, probe=probe, alpha_bar=linear_alpha_bar(T),
        observations=observations(sharpness=1.05, confident=0.71, fid=2.0, recon=0.93, recon_t=50),
        bound=fake_bound(),
        discriminator=drs_result(fid_accepted=3.05, jsd_accepted=0.19))


def ddpm_run(results: Path, name: str, T: int, *, fid: float = 12.5, sample_s: float = 0.5, **kw) -> Path:
    config = {"preset": name.split("-")[1], "epochs": 2, "batch_size": 64, "lr": 1e-4, "timesteps": T,
              "beta_start": 1e-4, "beta_end": 0.02, "dim": 32, "probe_train": 5000, "probe_test": 2000,
              "n_samples": 64, "snapshot_every": 5, "preview_steps": 50, "recon_size": 500}
    summary = kw.pop("summary", ddpm_summary(T, fid, sample_s))
    run = make_run(results, name, config=config, summary=summary,
                   metrics=metrics_lines(2, test_loss=0.03, test_loss_ema=0.029), **kw)
    for kind in ("samples", "previews"):
        (run / "artifacts" / kind).mkdir(parents=True)
        (run / "artifacts" / kind / "epoch_002.pt").write_bytes(b"")
    return run


def simsiam_run(results: Path, ablation: str, *, knn: float, collapse: float = 0.04, preset: str = "full",
                erank: float | None = 300.0, trace: float = 2000.0, **kw) -> Path:
    """A finished SimSiam run; with erank, Question 4's spectra after epochs 1 and 3 (the rank from 400 to erank)."""
    dim = 4096 if ablation == "proj-4096" else 2048
    batch = 4096 if ablation == "batch-4096" else 1024
    config = {"preset": preset, "ablation": ablation, "backbone": "resnet18", "epochs": 3, "batch_size": batch,
              "dim": dim, "pred_dim": 512, "momentum": 0.9, "weight_decay": 5e-4, "base_lr": 0.03,
              "knn_k": 200, "knn_temperature": 0.1, "warmup_epochs": 1 if ablation == "batch-4096" else 0}
    metrics = [dict(m, knn_accuracy=knn - 0.1 * (3 - m["epoch"]), collapse_std=collapse,
                    collapse_std_reference=dim ** -0.5) for m in metrics_lines(3)]
    spectra = [] if erank is None else [
        spectrum_result(e, r, t, None if ablation == "no-predictor" else 0.7, dim)
        for e, r, t in ((1, 400.0, 2000.0), (3, erank, trace))]
    summary = SimSiamSummary(
        ablation=ablation, backbone="resnet18", epochs=3, dataset="synthetic", batch_size=batch, dim=dim,
        peak_lr=0.03 * batch / 256, final_loss=metrics[-1]["loss"], final_knn_accuracy=knn, final_knn_epoch=3,
        best_knn_accuracy=knn, best_knn_epoch=3, knn_k=200, final_collapse_std=collapse,
        collapse_std_reference=dim ** -0.5, linear_probe_accuracy=knn + 0.05, linear_probe_train_accuracy=None,
        train_seconds_per_epoch=31.0, train_images_per_s=1500.0, train_wall_seconds=96.0, wall_seconds=126.0,
        spectrum=spectra[-1] if spectra else None)
    run = make_run(results, f"simsiam-{preset}-{ablation}", config=config, summary=summary, metrics=metrics, **kw)
    write_spectra(run, spectra)
    return run


KNN = {"baseline": 0.80, "no-stop-grad": 0.12, "no-predictor": 0.15, "proj-4096": 0.803, "batch-4096": 0.70}


def complete_results(results: Path, *, figures: bool = False, artifacts: bool = False) -> Path:
    """One fake run folder for every slot (full preset), with the PNGs the .tex files include."""
    names = tex_figures() if figures else {}
    vae_run(results, figures=names.get("vae", set()), artifacts=artifacts)
    ddpm_run(results, "ddpm-full", 1000, figures=names.get("ddpm", set()))
    ddpm_run(results, "ddpm-full-T500", 500, fid=20.0, sample_s=0.25)
    ddpm_run(results, "ddpm-full-T1500", 1500, fid=11.0, sample_s=0.76)
    for ablation, knn in KNN.items():
        collapsed = ablation in ("no-stop-grad", "no-predictor")
        simsiam_run(results, ablation, knn=knn, collapse=0.004 if collapsed else 0.02,
                    erank=1.5 if collapsed else 300.0, trace=0.01 if ablation == "no-stop-grad" else 2000.0,
                    figures=names.get(f"simsiam-{ablation}", set()))
    family_runs(results, artifacts=artifacts)
    return results


def family_runs(results: Path, *, artifacts: bool = False) -> None:
    """The chapter "Four families on one yardstick": a flow and a GAN run, and with `artifacts` the final samples
    of all four families (the chapter's figures draw them)."""
    yardstick = {"precision": 0.7, "recall": 0.5, "yardstick_k": 3, "yardstick_size": 100, "sample_seconds_64": 0.01,
                 "parameters": 400_000, "train_flops_per_image": 6.9e8}
    common = {"epochs": 14, "dataset": "synthetic", "classifier_test_accuracy": 0.953, "observations": VAE_OBSERVATIONS,
              "discriminator": drs_result(), "train_wall_seconds": 80.0, "wall_seconds": 100.0}
    make_run(results, "flow-full", config={"preset": "full", "epochs": 14}, metrics=metrics_lines(14),
             summary=FlowSummary(bits_per_dim=3.9, bits_per_dim_n_images=2000, final_train_loss=3.8, fid=6.0,
                                 **common, **yardstick))
    make_run(results, "gan-full", config={"preset": "full", "epochs": 20}, metrics=metrics_lines(20),
             summary=GANSummary(**{**common, "epochs": 20}, spectral_norm=False, final_loss_d=1.2, final_loss_g=0.9,
                                final_jsd_train=0.09, fid=4.0, **yardstick))
    if artifacts:
        for name in ("flow-full", "vae-full", "ddpm-full", "gan-full"):
            (results / name / "artifacts").mkdir(parents=True, exist_ok=True)
            torch.save(torch.full((100, 3, 32, 32), 128, dtype=torch.uint8), results / name / "artifacts" /
                       "final_samples.pt")


def read_values(build_dir: Path) -> dict[str, str]:
    text = (build_dir / "numbers.tex").read_text()
    return dict(re.findall(r"^\\setval\{([^}]*)\}\{(.*)\}$", text, flags=re.M))


# --------------------------------------------------------------------------- unit tests

def test_escape_makes_text_literal():
    assert latex.escape("vae_solution.py") == r"vae\_solution.py"
    assert latex.escape("50% & #1 $x {a} ~^") == r"50\% \& \#1 \$x \{a\} \~{}\^{}"
    assert latex.escape(r"C:\runs") == r"C:\textbackslash{}runs"
    assert latex.escape("<a|b>") == r"\textless{}a\textbar{}b\textgreater{}"


def test_breakable_text_breaks_after_slashes_and_inner_hyphens():
    assert latex.breakable("/a/b-c --x") == r"/\allowbreak{}a/\allowbreak{}b-\allowbreak{}c --x"


def test_number_formats():
    assert latex.number(-3084.814, ".1f") == "$-$3084.8"
    assert latex.number(2.5, ".2f") == "2.50"
    assert latex.percent(0.8534) == r"85.3\%"
    assert [latex.duration(s) for s in (42.14, 330, 7500)] == ["42.1 s", "5.5 min", "2 h 05 min"]
    assert latex.compare(2.0, 1.0) == "higher than" and latex.compare(1.0, 2.0) == "lower than"
    assert latex.compare(1.2, 1.0, tolerance=0.5, same="about") == "about"


@pytest.mark.parametrize("name, expected", [
    ("vae-full", ("vae", "full", None)),
    ("ddpm-smoke", ("ddpm", "smoke", None)),
    ("ddpm-full-T500", ("ddpm-T", "full", 500)),
    ("simsiam-full-no-stop-grad", ("simsiam-no-stop-grad", "full", None)),
    ("simsiam-smoke-baseline-resnet18-cifar", ("simsiam-baseline", "smoke", None)),
    ("simsiam-full-unknown", None), ("vae", None), ("figures", None), ("ddpm-full-extra", None),
])
def test_classify_run_names(name, expected):
    assert runs.classify(name) == expected


def test_slots_follow_the_names():
    assert runs.SLOTS == ("vae", "ddpm", "ddpm-Tlow", "ddpm-Thigh", *(f"simsiam-{a}" for a in names.ABLATION_NAMES))


def test_the_report_imports_neither_torch_nor_matplotlib():
    code = ("import sys; from report import build, figures, latex, numbers, runs; "
            "print(sorted({'torch', 'matplotlib'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_latest_run_of_each_slot_is_selected(tmp_path):
    old = vae_run(tmp_path, "vae-full", mtime=1_000_000)
    new = vae_run(tmp_path, "vae-smoke", mtime=2_000_000)
    (tmp_path / "vae-stray").mkdir()          # no config.json: not a run
    (tmp_path / "notes-full").mkdir()          # not a run name
    assert runs.select_runs(tmp_path, {})["vae"] == new
    os.utime(old / "summary.json", (3_000_000, 3_000_000))  # the newest file of a folder counts
    assert runs.select_runs(tmp_path, {})["vae"] == old
    assert runs.select_runs(tmp_path, {"vae": new})["vae"] == new  # --run wins


def test_t_study_runs_follow_the_main_runs_preset(tmp_path):
    ddpm_run(tmp_path, "ddpm-full", 1000, mtime=1_000_000)
    low, high = ddpm_run(tmp_path, "ddpm-full-T500", 500), ddpm_run(tmp_path, "ddpm-full-T1500", 1500)
    ddpm_run(tmp_path, "ddpm-full-T700", 700, mtime=5_000_000)   # newer, but not T/2
    ddpm_run(tmp_path, "ddpm-smoke-T25", 25, mtime=5_000_000)    # another preset
    chosen = runs.select_runs(tmp_path, {})
    assert (chosen["ddpm-Tlow"], chosen["ddpm-Thigh"]) == (low, high)
    shutil.rmtree(low)
    assert runs.select_runs(tmp_path, {})["ddpm-Tlow"] == tmp_path / "ddpm-full-T700"


def test_t_study_without_a_main_run_uses_the_presets_t(tmp_path):
    low = ddpm_run(tmp_path, "ddpm-smoke-T25", 25)
    chosen = runs.select_runs(tmp_path, {})
    assert chosen["ddpm"] is None and chosen["ddpm-Tlow"] == low and chosen["ddpm-Thigh"] is None


def test_bad_overrides_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown slot"):
        runs.select_runs(tmp_path, {"vea": tmp_path})
    with pytest.raises(ValueError, match="SLOT=FOLDER"):
        build.parse_overrides(["vae"])
    with pytest.raises(ValueError, match="not a folder"):
        build.parse_overrides([f"vae={tmp_path / 'absent'}"])
    assert build.parse_overrides([f"vae={tmp_path}"]) == {"vae": tmp_path}


def test_build_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "report.build", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "python -m report.build" in done.stdout


@pytest.mark.parametrize("T, phrase", [(1000, "falls below 1 at $t="), (50, "stays above 1 up to $t=T$")])
def test_snr_phrase_follows_the_saved_schedule(T, phrase):
    values = {}
    run = runs.RunFolder("ddpm", Path("ddpm-x"), config={"timesteps": T}, summary=ddpm_summary(T, 12.5, 0.5))
    numbers.ddpm_numbers(values, run)
    assert values["ddpm-snr-phrase"].startswith(phrase)
    assert values["ddpm-sqrt-abar-T"] == latex.number(linear_alpha_bar(T)[-1] ** 0.5, ".2g")


def test_the_schedule_is_never_recomputed():
    """A summary without the schedule (written before it was recorded) leaves its numbers to placeholders."""
    values = {}
    summary = dataclasses.replace(ddpm_summary(1000, 12.5, 0.5), alpha_bar=None)
    config = {"timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    numbers.ddpm_numbers(values, runs.RunFolder("ddpm", Path("ddpm-x"), config=config, summary=summary))
    assert not {"ddpm-sqrt-abar-T", "ddpm-snr-one-t", "ddpm-snr-phrase"} & set(values)
    assert values["ddpm-fid"] == "12.50"


def test_numbers_of_a_complete_set_of_runs(tmp_path):
    out = tmp_path / "build"
    built = build.generate(complete_results(tmp_path / "results", artifacts=True), {}, out)
    v = read_values(out)
    assert v == built["values"]
    # Problem 1: the summary's numbers, formatted.
    assert v["vae-ll-nats"] == "$-$3084.8" and v["vae-bpd"] == "1.449" and v["vae-bpd-8bit"] == "8.443"
    assert v["vae-epochs"] == "3" and v["vae-wall"] == "2.1 min" and v["vae-dataset"] == "synthetic stand-in"
    assert v["vae-hardware"] == "NVIDIA H100 80GB HBM3 (cuda), bf16" and v["vae-snapshot-epochs"] == "1, 3"
    assert v["vae-test-kl"] == "60.3" and v["vae-ll-n"] == r"26\,032"
    assert v["vae-bpd-8bit-fitted"] == "5.123" and v["vae-bpd-8bit-fitted-vs-unit"] == "3.32 bits per dimension below"
    assert v["vae-bpd-8bit-vs-uniform"].startswith("above 8 bits per dimension: worse than a uniform")
    # 1.3(e): active dims are those with std^2 > 0.01 (std = linspace(0.05, 1, 32)).
    assert v["vae-active-dims"] == str(int((torch.linspace(0.05, 1.0, 32) ** 2 > 0.01).sum()))
    # 1.3(b-d, f): the observations' numbers, and the words they choose.
    assert v["vae-interp-test-evenness"] == "0.82" and v["vae-interp-steps"] == "10" and v["vae-interp-pairs"] == "6"
    assert v["vae-interp-verdict"] == "smooth both between test images and between prior draws"
    assert v["vae-obs-sharpness"] == "0.31" and v["vae-obs-sharpness-phrase"].startswith("blurrier than the test")
    assert v["vae-obs-confident"] == r"42\%" and v["vae-classifier-acc"] == r"95.3\%"
    assert v["ddpm-obs-sharpness-phrase"].startswith("about as sharp as") and v["ddpm-obs-recon-t"] == "50"
    assert v["p2-compare-vs-vae"].startswith("The DDPM's samples are sharper than the VAE's by the Laplacian energy")
    assert "of a classifier-FID lower (closer to the test images) than the VAE's" in v["p2-compare-vs-vae"]
    assert v["p2-verdict-vs-vae"] == ("the DDPM's samples are closer to the test images than the VAE's in "
                                      "sharpness, clear digits and classifier-FID")
    # Problem 2.
    assert v["ddpm-tstar"] == "312" and v["ddpm-tstar-frac"] == r"31\%" and v["ddpm-fid"] == "12.50"
    assert (v["ddpm-probe-t-1"], v["ddpm-probe-acc-1"], v["ddpm-probe-raw"]) == ("1", r"71.0\%", r"24.0\%")
    assert v["ddpm-probe-best-vs-raw"] == "above"
    assert v["ddpm-Tlow-timesteps"] == "500" and v["ddpm-Thigh-sample-seconds-per-image"] == "0.760"
    assert v["tstudy-sampling-ratio"] == "3.04" and v["tstudy-T-ratio"] == "3.00"
    assert v["tstudy-fid-high-vs-low"] == "lower (better) than"
    assert v["tstudy-sampling-verdict"] == "as expected from the linear cost"
    assert v["tstudy-train-verdict"] == "as expected from a cost independent of $T$"
    assert v["simsiam-collapse-summary"].startswith("both ablations collapsed")
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    assert v["ddpm-snr-one-t"] == str(int((abar >= 0.5).sum()) + 1)
    # Problem 3: final and best kNN per ablation, comparisons with the baseline.
    assert v["simsiam-baseline-final-knn"] == r"80.0\%" and v["simsiam-batch-4096-best-knn"] == r"70.0\%"
    assert v["simsiam-no-stop-grad-vs-baseline"] == "68.0 points lower than"
    assert v["simsiam-batch-4096-vs-baseline"] == "10.0 points lower than"
    # 0.3 points apart on 26032 test images: the 95% interval of the difference includes 0, so no direction
    assert v["simsiam-proj-4096-vs-baseline"].startswith(r"indistinguishable (a +0.3-point difference, 95\% interval")
    assert v["simsiam-no-predictor-collapse-word"] == "collapsed"
    assert v["simsiam-baseline-collapse-word"] == "not collapsed"
    assert v["simsiam-batch-4096-steps-per-epoch"] == str(73257 // 4096)
    # Part III: the gaps and the bound, worded by their outcome.
    assert v["vae-gap-amortisation-nats"] == "5.00" and v["vae-gap-sign"] == "positive, as 1.3 predicts"
    assert v["vae-gap-speed-ratio"] == "450" and v["vae-gap-cost-fraction"] == r"13.3\%"
    assert v["vae-gap-ll-bpd"] == latex.number(VAE_SUMMARY.amortisation.log_likelihood.bits_per_dim, ".3f")
    assert v["ddpm-bound-bpd"] == "3.300" and v["ddpm-bound-evaluations"] == "241"
    assert v["ddpm-bound-vs-vae"].startswith("below the VAE's") and v["ddpm-bound-cost-fraction"] == r"5.0\%"
    # Every value the text reads exists (no [missing: ...] box in a complete build).


    # Part III: Question 3 on both models' samples, Question 4 on the SimSiam runs, each in one branch.
    assert v["vae-drs-verdict"] == "resampling brought the samples closer to the test images by both measures"
    assert v["vae-drs-fid-word"] == "lower (closer) than" and v["vae-drs-jsd-word"] == "below"
    assert v["ddpm-drs-verdict"] == "resampling did not bring the samples closer to the test images by either measure"
    assert v["ddpm-drs-fid-word"] == "about the same as" and v["ddpm-drs-jsd-interval"] == "[0.270, 0.330]"
    assert v["vae-drs-accepted"] == r"12.5\%" and v["vae-drs-seconds"] == "42.0 s"
    assert v["simsiam-no-stop-grad-spectrum-verdict"] == "collapsed without the stop-gradient, as 4.3 predicts"
    assert v["simsiam-no-stop-grad-erank-ratio"] == r"$5.0\cdot10^{-3}$"
    assert v["simsiam-no-stop-grad-trace-ratio"] == r"$5.0\cdot10^{-6}$"
    assert v["simsiam-no-predictor-spectrum-verdict"].startswith("collapsed without the predictor")
    assert v["simsiam-baseline-align-verdict"] == "aligned with F's eigenvectors, as DirectPred observed"
    assert v["simsiam-baseline-spectrum-epochs"] == "1, 3" and v["simsiam-baseline-erank-first"] == "400.0"
    assert "simsiam-no-predictor-align-fraction" not in v  # no predictor: the spectrum only
    # Every value the text reads exists (no [missing: ...] box in a complete build), the macros' ones included.
    assert tex_values() - set(v) == set()
    for slot in ("vae", "ddpm"):
        assert {f"{slot}-{key}" for key in macro_values("drsresult")} - set(v) == set()
    assert r"\settable{latent}" in (out / "tables.tex").read_text()


def test_the_decoder_variance_sentence_follows_the_measured_bits():
    values = {}
    numbers.decoder_variance_numbers(values, dataclasses.replace(VAE_SUMMARY, test_bits_per_dim_8bit=7.5,
                                                                 test_elbo_bits_per_dim_8bit_fitted_variance=7.75))
    assert values["vae-bpd-8bit-vs-uniform"].startswith("below 8 bits per dimension: better than a uniform")
    assert values["vae-bpd-8bit-fitted-vs-unit"] == "0.25 bits per dimension above"
    assert values["vae-bpd-8bit-unit-floor"] == "8.32"
    values = {}  # a summary written before the fitted variance existed: no sentence claims a number
    numbers.decoder_variance_numbers(values, dataclasses.replace(VAE_SUMMARY,
                                                                 test_elbo_bits_per_dim_8bit_fitted_variance=None))
    assert "vae-bpd-8bit-fitted" not in values and "vae-bpd-8bit-fitted-vs-unit" not in values


@pytest.mark.parametrize("fid_accepted, jsd_accepted, verdict", [
    (2.0, 0.19, "by the classifier-FID proxy but not clearly by the JSD estimate"),
    (3.0, 0.05, "by the JSD estimate but not by the classifier-FID proxy"),
    (None, 0.05, "too few samples were accepted for a classifier-FID; by the JSD estimate resampling brought them "
                 "closer to the test images"),
])
def test_discriminator_sentences_follow_the_outcome(fid_accepted, jsd_accepted, verdict):
    values = {}
    r = drs_result(fid_accepted=fid_accepted, fid_subset=None if fid_accepted is None else 3.0,
                   jsd_accepted=jsd_accepted)
    numbers.discriminator_numbers(values, "vae", r)
    assert values["vae-drs-verdict"].endswith(verdict)
    assert ("vae-drs-fid-accepted" in values) == (fid_accepted is not None)
    low = dataclasses.replace(r, jsd=Interval(estimate=0.01, low=-0.01, high=0.03, level=0.95))
    numbers.discriminator_numbers(values, "vae", low)
    assert values["vae-drs-jsd-bound-word"].startswith("not clearly above 0")
    assert values["vae-drs-rule"].startswith("$e^{h(x)-\\max h}$, without")             # the default: no shift
    negative = dataclasses.replace(r, jsd=Interval(estimate=-0.02, low=-0.05, high=0.01, level=0.95),
                                   gamma_quantile=0.95)
    numbers.discriminator_numbers(values, "vae", negative)
    assert values["vae-drs-jsd-bound-word"].startswith("negative: on the held-out images")
    assert "not clipped at 0" in values["vae-drs-jsd-bound-word"] and values["vae-drs-jsd"] == "$-$0.020"
    assert values["vae-drs-rule"].startswith("Azadi et al.'s") and r"95\% quantile" in values["vae-drs-rule"]


@pytest.mark.parametrize("erank, trace, fraction, collapse, alignment", [
    (290.0, 1900.0, 0.3, "did not collapse without the stop-gradient in this run, although 4.3 predicts that it does",
     "partly aligned"),
    (290.0, 1.0, 0.003, "collapsed without the stop-gradient, as 4.3 predicts", "not aligned"),
])
def test_spectrum_sentences_follow_the_outcome(tmp_path, erank, trace, fraction, collapse, alignment):
    base = [spectrum_result(1, 400.0), spectrum_result(3, 300.0, diagonal_fraction=fraction)]
    ablation = [spectrum_result(3, erank, trace)]
    for ablation_name, results in (("baseline", base), ("no-stop-grad", ablation)):
        write_spectra(tmp_path / ablation_name, results)
    found = {f"simsiam-{a}": runs.RunFolder(f"simsiam-{a}", tmp_path / a) for a in ("baseline", "no-stop-grad")}
    values = {}
    numbers.measured_q3_q4_numbers(values, found)
    assert values["simsiam-no-stop-grad-spectrum-verdict"] == collapse
    assert values["simsiam-baseline-align-verdict"].startswith(alignment)
    assert "simsiam-no-predictor-spectrum-verdict" not in values and "vae-drs-verdict" not in values


@pytest.mark.parametrize("fraction, spread, verdict", [
    (0.7, 0.01, "aligned"), (0.3, 0.01, "partly aligned"), (0.3, 0.05, "not aligned"), (0.21, 0.001, "not aligned")])
def test_the_alignment_verdict_reads_the_excess_over_the_random_basis_chance_level(fraction, spread, verdict):
    al = dataclasses.replace(spectrum_result(3, 300.0, diagonal_fraction=fraction).alignment, chance_spread=spread)
    assert numbers.alignment_verdict(al) == verdict                       # chance 0.2: excess 0.625, 0.125, 0.0125
    values = {}
    numbers.spectrum_numbers(values, "simsiam-baseline", [spectrum_result(3, 300.0, diagonal_fraction=fraction)])
    assert values["simsiam-baseline-align-chance"] == "0.200" and values["simsiam-baseline-align-r"] == "512"
    # A summary measured against 1/r (before the chance level was the random-basis one): no verdict.
    old = Alignment(diagonal_fraction=0.7, chance=1 / 2048, cosines=[0.9], diagonal=[1.0])
    assert numbers.alignment_verdict(old) == "unknown"
    assert numbers.ALIGNMENT_WORDS["unknown"].startswith("of unknown alignment")


def test_missing_runs_get_placeholders_and_commands(tmp_path):
    results = tmp_path / "results"
    vae_run(results, "vae-full", figures={"wall_clock"})
    out = tmp_path / "build"
    build.generate(results, {}, out)
    v = read_values(out)
    assert v["status-ddpm"] == "no run folder found"
    # The command of a missing run, followed literally, writes where the build looks (--out under --results)
    # from the data of the runs found (here --data auto: they do not say).
    experiments = ".venv/bin/python -m experiments"
    assert v["cmd-ddpm"] == latex.escape(f"{experiments} ddpm --preset full --out {results / 'ddpm-full'} --data auto")
    assert v["cmd-ddpm-Thigh"] == latex.escape(f"{experiments} ddpm --preset full --timesteps 1500 "
                                               f"--out {results / 'ddpm-full-T1500'} --data auto")
    assert v["cmd-simsiam-no-stop-grad"] == latex.escape(
        f"{experiments} simsiam --preset full --ablation no-stop-grad "
        f"--out {results / 'simsiam-full-no-stop-grad'} --data auto")
    assert "ddpm-fid" not in v and "simsiam-baseline-final-knn" not in v
    figures = (out / "figures.tex").read_text()
    assert r"\setfig{vae/wall_clock}{build/figures/vae/wall-clock.png}" in figures and "ddpm" not in figures
    assert (out / "figures" / "vae" / "wall-clock.png").exists()
    # A finished run whose figure is absent points at the redraw command.
    assert "figures.vae\\_figures(" in v["cmd-vae"]
    provenance = (out / "provenance.tex").read_text()
    assert latex.breakable("python -m experiments simsiam --preset full --ablation batch-4096") in provenance
    tables = (out / "tables.tex").read_text()
    missing = 3 + len(names.ABLATIONS) + 1 + 3  # T study, SimSiam, DDPM; the four families': flow, DDPM, GAN
    assert tables.count(r"\textbf{missing run}") == missing and r"\settable{latent}" not in tables


def test_unfinished_run_reads_metrics_and_offers_resume(tmp_path):
    run = vae_run(tmp_path / "results", "vae-smoke", summary=None)
    out = tmp_path / "build"
    build.generate(tmp_path / "results", {}, out)
    v = read_values(out)
    assert v["vae-status"] == "unfinished: epoch 3 of 3" and v["vae-epochs"] == "3"
    assert v["vae-wall"] == latex.duration(metrics_lines(3)[-1]["wall_seconds"])
    # The resume repeats the options the run was started with (its config.json: here epochs 3).
    assert v["cmd-vae"] == latex.escape(f".venv/bin/python -m experiments vae --preset smoke --out {run} --epochs 3 "
                                        "--resume")
    assert "vae-ll-nats" not in v and v["preset"] == "smoke"
    assert r"\textit{(unfinished: epoch 3 of 3)}" in (out / "provenance.tex").read_text()


def test_a_run_finished_before_a_measurement_existed_offers_to_redo_its_final_evaluation(tmp_path):
    old = dataclasses.replace(VAE_SUMMARY, amortisation=None, discriminator=None)
    run = vae_run(tmp_path / "results", "vae-smoke", summary=old)
    out = tmp_path / "build"
    build.generate(tmp_path / "results", {}, out)
    v = read_values(out)
    assert v["status-vae"].endswith(latex.escape("measured amortisation, discriminator"))
    assert v["cmd-vae"] == latex.escape(f"rm {run / 'summary.json'} && "
                                        f".venv/bin/python -m experiments vae --preset smoke --out {run} --epochs 3 "
                                        "--resume")


def test_provenance_warns_about_synthetic_data_only_when_used(tmp_path):
    vae_run(tmp_path / "a", source="synthetic")
    build.generate(tmp_path / "a", {}, tmp_path / "build-a")
    text, v = (tmp_path / "build-a" / "provenance.tex").read_text(), read_values(tmp_path / "build-a")
    assert "Synthetic stand-in data" in text and r"\textbf{not} SVHN" in text and "Not SVHN results" in v["p1-warning"]
    vae_run(tmp_path / "b", source="svhn", device="cpu", device_name="x86_64", precision="fp32")
    build.generate(tmp_path / "b", {}, tmp_path / "build-b")
    text, v = (tmp_path / "build-b" / "provenance.tex").read_text(), read_values(tmp_path / "build-b")
    assert "Synthetic stand-in data" not in text and v["p1-warning"] == "" and v["vae-dataset"] == "SVHN"
    assert v["vae-hardware"] == r"CPU (x86\_64, 16 cores), fp32"
    simsiam_run(tmp_path / "b", "batch-4096", knn=0.7, device_name="Tesla T4", precision="fp16", micro_batch=(1024, 4))
    build.generate(tmp_path / "b", {}, tmp_path / "build-b")
    v = read_values(tmp_path / "build-b")
    assert v["simsiam-batch-4096-hardware"] == "Tesla T4 (cuda), fp16, micro-batch 1024"
    assert v["simsiam-batch-4096-bn-over"].startswith(
        "the 1024 images of each view of a micro-batch (the batch of 4096 ran as 4")


def test_student_fields_come_from_the_environment(tmp_path, monkeypatch):
    vae_run(tmp_path / "results")
    monkeypatch.setenv("A3_STUDENT_NAME", "  Ada_Lovelace & Co\n")
    monkeypatch.setenv("A3_STUDENT_ID", "20231234")
    build.generate(tmp_path / "results", {}, tmp_path / "build")
    student = (tmp_path / "build" / "student.tex").read_text()
    assert r"\studentname{Ada\_Lovelace \& Co}" in student and r"\studentid{20231234}" in student
    monkeypatch.setenv("A3_STUDENT_NAME", " ")
    monkeypatch.delenv("A3_STUDENT_ID")
    build.generate(tmp_path / "results", {}, tmp_path / "build")  # unset or blank: report.tex's placeholder shows
    assert "\\student" not in (tmp_path / "build" / "student.tex").read_text()


def test_rebuild_drops_figures_of_runs_no_longer_found(tmp_path):
    results = tmp_path / "results"
    run = vae_run(results, figures={"loss"})
    out = tmp_path / "build"
    build.generate(results, {}, out)
    shutil.rmtree(run)
    build.generate(results, {}, out)
    assert not (out / "figures" / "vae").exists() and "vae/loss" not in (out / "figures.tex").read_text()


# --------------------------------------------------------------------------- the PDF

def build_pdf(results: Path, work: Path) -> tuple[str, str, dict]:
    """Generate and compile a copy of report/ in `work`; returns (text of page 1, text of all, values)."""
    for part in ("report.tex", "answers.tex", "practical", "theory", "measured", "families.tex"):
        source = REPORT / part
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, work / part)
    built = build.generate(results, {}, work / "build")
    pdf = build.compile_pdf(work)

    def text(*pages: str) -> str:
        return subprocess.run(["pdftotext", *pages, str(pdf), "-"], capture_output=True, text=True, check=True).stdout

    return text("-f", "1", "-l", "1"), text(), built["values"]


def build_first_page(results: Path, work: Path, student: str | None = None) -> tuple[str, str]:
    """Generate and compile report.tex cut after its first page (title, provenance) in `work`, with
    `student` as report/student.tex; returns (the page's text, the LaTeX log)."""
    tex = (REPORT / "report.tex").read_text()
    (work / "report.tex").write_text(tex[:tex.index("\\clearpage")] + "\\end{document}\n")
    if student is not None:
        (work / "student.tex").write_text(student)
    build.generate(results, {}, work / "build")
    pdf = build.compile_pdf(work)
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return text, (work / "build" / "latex" / "report.log").read_text(errors="replace")


def assert_every_question(text: str) -> None:
    """Each question number starts a line (its heading), alone or followed by a capitalised title."""
    text = text.replace("\f", "\n")  # pdftotext starts each page with a form feed
    text = re.sub(r" +\)", ")", text)  # and may space "(f )" apart
    text = text[text.index("\nContents\n"):]  # the body, after the answer sheet's rows
    for number in THEORY + PRACTICAL:
        assert re.search(rf"^{re.escape(number)}(?:$| +[A-Z(])", text, flags=re.M), f"question {number} not in the PDF"


@needs_latex
def test_pdf_from_complete_fake_runs(tmp_path):
    work = tmp_path / "report"
    work.mkdir()
    first, text, values = build_pdf(complete_results(tmp_path / "results", figures=True, artifacts=True), work)
    assert_every_question(text)
    # Every number and every figure is there: the only [missing: ...] is the legend's example on page 1.
    assert text.count("[missing:") == first.count("[missing:") == 1 and "Missing:" not in text
    assert "3084.8" in text and "312" in text and "80.0%" in text  # numbers reach the page
    for needed in ("Problem 1 (VAE)", "Problem 2 (DDPM)", "Problem 3 (SimSiam)", "synthetic stand-in",
                   "NVIDIA H100 80GB HBM3", "2.1 min", "Synthetic stand-in data"):
        assert needed in first, f"{needed!r} not on the first page"
    assert "Four families on one yardstick" in text and "none: no likelihood" in text
    assert_answers_first_and_body_within_budget(text)


# (value key, what its refused form starts with, phrases of the verdict it refuses): a refused verdict never
# reaches the text in its told form.
REFUSED = [("p2-verdict-vs-vae", "this run cannot tell", ["closer to the test images than the VAE's",
                                                         "further from the test images than the VAE's"]),
           ("p2-structure-agreement", "This run cannot test it", ["This run agrees", "This run does not show"]),
           ("ddpm-tstar-result", "Not interpretable", ["t∗ = "]),
           ("vae-interp-verdict", "not judged", ["interpolation is smooth", "interpolation is uneven"]),
           ("simsiam-collapse-summary", "this run cannot tell", ["both ablations collapsed", "neither ablation",
                                                                "only the run without"]),
           ("ddpm-probe-verdict", "this run cannot tell", ["the pixel baseline"])]


def assert_no_verdict_past_its_gate(text: str, values: dict[str, str]) -> None:
    """Where a gate refused a verdict (its value reads "cannot tell"), the PDF says so and never gives the verdict."""
    flat = " ".join(text.split())
    for key, refused, told in REFUSED:
        if values.get(key, "").startswith(refused):
            assert refused.lower() in flat.lower(), f"{key} is refused by its gate, but the text does not say so"
            for phrase in told:
                assert phrase not in flat, f"{key} is refused by its gate, yet the text says {phrase!r}"


PRACTICAL_PAGES = 15   # the practical answers, from Part II's heading to the appendices


def page_of(text: str, heading: str, last: bool = True) -> int:
    """The page (1-based) of the last (or first) line of pdftotext's text that is `heading`: a body heading's last
    line comes after the table of contents' line, the answer sheet's first line before it."""
    matches = list(re.finditer(rf"(?:^|\f){re.escape(heading)}$", text, flags=re.M))
    assert matches, f"{heading!r} is not a line of the PDF"
    # A heading at the top of a page matches with its form feed, which is counted.
    return text.count("\f", 0, matches[-1 if last else 0].end()) + 1


def assert_answers_first_and_body_within_budget(text: str) -> None:
    """Page 2 opens with the answer sheet; Part II (after the table of contents) fits PRACTICAL_PAGES pages."""
    assert page_of(text, "Answer sheet", last=False) == 2
    practical, appendices = page_of(text, "Part II: Practical"), page_of(text, "Appendices")
    assert appendices - practical <= PRACTICAL_PAGES, f"Part II takes {appendices - practical} pages"


LONG_HARDWARE = {"device_name": "NVIDIA A100-SXM4-40GB, CUDA 12.4", "micro_batch": (2048, 2), "source": "svhn"}


@needs_latex
def test_provenance_table_fits_the_page_with_long_values(tmp_path, monkeypatch):
    """Long folder names, hardware strings and statuses wrap within the margins; the wall-clock column stays whole."""
    monkeypatch.delenv("A3_STUDENT_NAME", raising=False)
    monkeypatch.delenv("A3_STUDENT_ID", raising=False)
    results = tmp_path / ("results-of-a-sweep-on-the-cluster-node-with-a-long-name" * 2) / "2024-03-17T12-00-00"
    run = vae_run(results, summary=None, **LONG_HARDWARE)
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "epochs": 20}))
    ddpm_run(results, "ddpm-full", 1000, **LONG_HARDWARE)
    ddpm_run(results, "ddpm-full-T500", 500, device="cpu", device_name="x86_64")
    for ablation, knn in KNN.items():
        if ablation != "batch-4096":  # one missing run: its command is listed
            simsiam_run(results, ablation, knn=knn, **LONG_HARDWARE)
    work = tmp_path / "report"
    work.mkdir()
    text, log = build_first_page(results, work)
    assert "Overfull \\hbox" not in log, "a line of the first page runs into the margin"
    assert "unfinished: epoch 3 of 20" in text and "micro-batch 2048" in text
    assert text.count("2.1 min") == 5 and text.count("2.5 min") == 2  # every wall-clock cell, whole
    # Neither report/student.tex nor the environment: the title page says how to fill the fields.
    flat = " ".join(text.split())
    assert "[placeholder] (set A3_STUDENT_NAME or write report/student.tex; see the README)" in flat
    assert "[placeholder] (set A3_STUDENT_ID or write report/student.tex; see the README)" in flat


@needs_latex
def test_title_page_reads_student_tex_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("A3_STUDENT_NAME", raising=False)
    monkeypatch.setenv("A3_STUDENT_ID", "20231234")  # the environment wins over report/student.tex
    work = tmp_path / "report"
    work.mkdir()
    example = (REPORT / "student.example.tex").read_text()
    text, _ = build_first_page(vae_run(tmp_path / "results").parent, work,
                               student=example.replace("Your Name", "Ada Lovelace"))
    assert "Name: Ada Lovelace" in text and "Student ID: 20231234" in text and "12345678" not in text
    assert "set A3_STUDENT" not in text


def test_families_chapter_from_fake_runs(tmp_path):
    """The four families' table, paragraphs and figures (report/families.py) from complete fake runs."""
    built = build.generate(complete_results(tmp_path / "results", artifacts=True), {}, tmp_path / "build")
    values, tables = built["values"], (tmp_path / "build" / "tables.tex").read_text()
    assert {"families/grids", "families/fid-vs-bits"} <= set(built["figures"])
    for family in names.FAMILIES:
        assert values[f"fam-par-{family}"].startswith("The "), family
    assert "no bits/dim" in values["fam-par-gan"] and "lowest classifier-FID" in values["fam-par-gan"]
    gan_row = next(line for line in tables.splitlines() if line.startswith("GAN"))
    assert "none: no likelihood" in gan_row


@needs_latex
def test_pdf_with_missing_runs_shows_placeholders(tmp_path):
    results = tmp_path / "results"
    vae_run(results, "vae-full", summary=None, figures={"wall_clock"})
    work = tmp_path / "report"
    work.mkdir()
    first, text, _ = build_pdf(results, work)
    assert_every_question(text)
    assert "Missing:" in text and text.count("[missing:") > 10
    assert "python -m experiments ddpm --preset full" in re.sub(r"\s+", " ", text)
    assert "unfinished" in first


# --------------------------------------------------------------------------- Part III: words chosen by the outcome

@pytest.mark.parametrize("gap, se, negative, sign, images", [
    (5.0, 0.5, 0, "positive, as 1.3 predicts", "none of the 500 images"),
    (0.4, 0.5, 0, "positive but within Monte Carlo error of zero", "none of the 500 images"),
    (-0.4, 0.5, 3, "negative but within Monte Carlo error of zero", "3 of the 500 images have a gap below"),
    (-5.0, 0.5, 40, "negative beyond Monte Carlo error: the per-point optimisation did not converge",
     "40 of the 500 images"),
])
def test_q1_words_follow_the_sign_of_the_amortisation_gap(gap, se, negative, sign, images):
    values = {}
    numbers.gap_outcomes(values, fake_gaps(gap=gap, gap_se=se, negative=negative))
    assert values["vae-gap-sign"].startswith(sign) and values["vae-gap-negative-phrase"].startswith(images)


SMALLER, LARGER = "The amortisation gap is smaller than", "The amortisation gap is larger than"
UNDETERMINED = "The amortisation gap is of undetermined size relative to the approximation gap: "


@pytest.mark.parametrize("approx, proposal, phrase, larger", [
    (20.0, "per-point", "positive: even the best diagonal Gaussian", SMALLER),
    (1.0, "per-point", "zero within Monte Carlo error", LARGER),
    (-10.0, "per-point", "negative beyond Monte Carlo error, which no posterior allows", LARGER),
    (5.5, "per-point", "positive", "This run cannot tell which gap is larger: the 95\\% interval of the difference "
                                   "of the two gaps, [$-$3.3, +2.3]~nats, includes no difference."),
    # A summary whose log p(x) came from the encoder's q_phi: its approximation gap is biased low, so only a larger
    # approximation gap can be read, and a smaller one is inconclusive.
    (20.0, "encoder", "positive", SMALLER),
    (1.0, "encoder", "zero within Monte Carlo error", UNDETERMINED + "the approximation gap's estimate is biased"),
    (-10.0, "encoder", "negative beyond Monte Carlo error: the estimate", UNDETERMINED),
])
def test_q1_words_follow_the_approximation_gap(approx, proposal, phrase, larger):
    values = {}
    numbers.gap_outcomes(values, fake_gaps(gap=5.0, approx=approx, proposal=proposal))
    assert values["vae-gap-approximation-phrase"].startswith(phrase)
    assert values["vae-gap-comparison"].startswith(larger)


@pytest.mark.parametrize("approx, converged, larger", [
    (20.0, False, UNDETERMINED + "the per-point optimisation stopped at its step limit"),
    (1.0, False, LARGER),         # stopping early only shrinks the amortisation gap: "larger" still holds
    (20.0, None, SMALLER),        # a summary from before the flag: read as it stands
])
def test_q1_comparison_hedges_a_per_point_optimisation_stopped_at_its_limit(approx, converged, larger):
    values = {}
    g = fake_gaps(gap=5.0, approx=approx, converged=converged)
    numbers.gap_outcomes(values, g)
    assert values["vae-gap-comparison"].startswith(larger)
    assert values["vae-gap-approximation-phrase"].startswith(
        "positive, but the per-point optimisation stopped at its step limit" if converged is False and approx > 5
        else "positive: even the best" if approx > 5 else "zero within Monte Carlo error")
    numbers.gap_numbers(values, g, 90.0)
    assert values.get("vae-gap-stopped") == {True: "when its tolerance was met", None: None,
                                             False: "at its step limit, before its tolerance was met"}[converged]


def test_q1_names_the_proposal_and_sets_the_graded_estimate_beside_it():
    values = {}
    numbers.gap_numbers(values, fake_gaps(), 90.0)
    assert values["vae-gap-proposal"].startswith("the per-point optimum")
    assert values["vae-gap-graded-versus"] == "3.00~nats below" and values["vae-gap-graded-nats"] == "$-$3108.00"
    values = {}   # written before the graded estimate was kept: the encoder's proposal, no graded row
    numbers.gap_numbers(values, dataclasses.replace(fake_gaps(), ll_proposal="encoder", graded_log_likelihood=None),
                        90.0)
    assert values["vae-gap-proposal"].startswith("the encoder's") and "vae-gap-graded-nats" not in values


def test_q1_speed_words_and_a_summary_without_the_measurement():
    values = {}
    numbers.gap_numbers(values, dataclasses.replace(fake_gaps(), seconds_per_point=0.01), 90.0)
    assert values["vae-gap-speed-phrase"].startswith("contrary to 1.4(b)") and values["vae-gap-speed-ratio"] == "0.5"
    assert values["vae-gap-seconds-amortised"] == "20 ms" and values["vae-gap-rule"] == "at most 300 Adam steps"
    old = {"vae": runs.RunFolder("vae", Path("vae-x"), summary=dataclasses.replace(VAE_SUMMARY, amortisation=None)),
           "ddpm": runs.RunFolder("ddpm", Path("ddpm-x"), summary=ddpm_summary(1000, 12.5, 0.5))}
    values = {}
    numbers.measured_numbers(values, old)                   # written before the measurement existed: no words
    assert not any(k.startswith("vae-gap") for k in values) and "ddpm-bound-vs-vae" not in values
    assert values["ddpm-bound-bpd"] == "3.300"


@pytest.mark.parametrize("bits, prior, versus, prior_phrase", [
    (3.3, 0.05, "below the VAE's", "negligible"),
    (12.0, 900.0, "above the VAE's", "not negligible: after only $T=1000$"),
    (8.47, 0.05, "within 2 standard errors", "negligible"),
])
def test_q2_words_follow_the_bound_against_the_vae(bits, prior, versus, prior_phrase):
    values, gaps = {}, fake_gaps(ll_nats=-3105.0)          # the VAE's -log p_K: 8.453 bits/dim
    assert gaps.log_likelihood.bits_per_dim == pytest.approx(8.4525, abs=1e-4)
    config = {"seed": 0, "test_size": None, "gap_size": 500, "bound_size": 500}
    vae = runs.RunFolder("vae", Path("vae-x"), config=config,
                         summary=dataclasses.replace(VAE_SUMMARY, amortisation=gaps))
    ddpm = runs.RunFolder("ddpm", Path("ddpm-x"), config=config, summary=dataclasses.replace(
        ddpm_summary(1000, 12.5, 0.5), bound=fake_bound(bits, prior)))
    numbers.measured_numbers(values, {"vae": vae, "ddpm": ddpm})
    assert values["ddpm-bound-vs-vae"].startswith(versus)
    assert values["ddpm-bound-prior-phrase"].startswith(prior_phrase)
    assert values["ddpm-bound-images-phrase"].startswith("the same test images")
    assert values["ddpm-bound-decoder"].startswith("the discretised decoder of Ho et al.")
    ddpm.config = {**config, "bound_size": 100}
    numbers.measured_numbers(values, {"vae": vae, "ddpm": ddpm})
    assert values["ddpm-bound-images-phrase"].startswith("other test images")
