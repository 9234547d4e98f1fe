"""Readable on paper: every figure's smallest drawn text is at least 7 pt at the size the report prints it.

Each figure function of experiments.presentation.figures is driven on fake run folders of the full preset's sizes (30
VAE
epochs, 20 DDPM epochs with a DDIM preview each, 5 SimSiam ablations). The printed size of a PNG follows
report.tex's \\fig: the width given in the practical .tex files (\\linewidth when a PNG is not included),
the height capped as report.tex's \\fig caps it, the aspect ratio kept; the page is report.tex's paper and margins.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from experiments.presentation import figures, names
from experiments.presentation.summaries import (
    SPECTRUM_FOLDER,
    Alignment,
    DDPMSummary,
    LevelAccuracy,
    ProbeResult,
    SimSiamSummary,
    SpectrumResult,
)
from tests.conftest import ROOT
from tests.test_report import fake_bound

matplotlib.use("Agg")

REPORT = ROOT / "report"
MIN_PT = 7.0
PAPER_IN = {"letterpaper": (8.5, 11.0), "a4paper": (21.0 / 2.54, 29.7 / 2.54)}  # (width, height) in inches
CM_PER_IN = 2.54


def text_area() -> tuple[float, float]:
    """(\\linewidth, \\textheight) in inches from report.tex's documentclass paper and geometry margin."""
    tex = (REPORT / "report.tex").read_text()
    paper = next((p for p in PAPER_IN if p in tex), "letterpaper")  # article's default is letter
    margin = re.search(r"\\usepackage\[margin=([\d.]+)cm\]\{geometry\}", tex)
    assert margin, "report.tex's geometry is not margin=<x>cm: update text_area()"
    width, height = PAPER_IN[paper]
    inner = 2 * float(margin.group(1)) / CM_PER_IN
    return width - inner, height - inner


def printed_widths() -> dict[str, float]:
    """{PNG name: the narrowest width, as a fraction of \\linewidth, at which a practical .tex file includes it}."""
    widths: dict[str, float] = {}
    for tex in (*(REPORT / "practical").glob("*.tex"), *(REPORT / "measured").glob("*.tex")):
        for width, name in re.findall(r"\\fig(?:\[([^\]]*)\])?\{[^}]+\}\{([^}]+)\}", tex.read_text()):
            fraction = float(width.replace("\\linewidth", "") or 1) if width else 1.0
            widths[name] = min(widths.get(name, 1.0), fraction)
    return widths


def height_cap() -> float:
    """The fraction of \\textheight that report.tex's \\fig caps a figure's height at."""
    cap = re.search(r"height=([\d.]+)\\textheight", (REPORT / "report.tex").read_text())
    assert cap, "report.tex's \\fig has no height=<x>\\textheight: update height_cap()"
    return float(cap.group(1))


def printed_scale(png: Path) -> float:
    """Printed size / drawn size of a saved PNG, as report.tex's \\fig includes it."""
    line, text_height = text_area()
    with Image.open(png) as im:
        dpi = im.info["dpi"][0]
        w, h = im.width / dpi, im.height / dpi
    return min(printed_widths().get(png.stem, 1.0) * line / w, height_cap() * text_height / h)


# --------------------------------------------------------------------------- fake run folders, full-preset sizes

def images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def run_folder(root: Path, name: str, config: dict, metrics: list[dict],
               summary: DDPMSummary | SimSiamSummary | None = None) -> Path:
    run = root / name
    (run / "artifacts").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "provenance.json").write_text(json.dumps({"source": "svhn", "n_train": 73257, "n_test": 26032}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if summary is not None:
        summary.write(run)
    return run


def epochs(n: int, **extra) -> list[dict]:
    return [{"epoch": e, "loss": 1 / e, "test_loss": 1.1 / e, "test_loss_ema": 1.05 / e, "train_seconds": 95.0,
             "epoch_seconds": 110.0, "wall_seconds": 110.0 * e, "images_per_s": 770.0, **extra}
            for e in range(1, n + 1)]


def save(run: Path, name: str, obj) -> None:
    (run / "artifacts" / name).parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, run / "artifacts" / name)


def vae_run(root: Path) -> Path:
    run = run_folder(root, "vae", {"z_dim": 32, "snapshot_every": 5}, epochs(30))
    for e in (1, 5, 10, 15, 20, 25, 30):
        save(run, f"samples/epoch_{e:03d}.pt", images(64, e))
        save(run, f"reconstructions/epoch_{e:03d}.pt", {"original": images(32, 0), "reconstruction": images(32, e)})
    save(run, "final_samples.pt", images(100, 1))
    means = torch.randn(10, 32, generator=torch.Generator().manual_seed(0)) + 2 * (torch.arange(32) < 3)
    save(run, "latent_profiles.pt", {"class_means": means, "counts": torch.arange(7000, 7010),
                                     "overall_mean": means.mean(0), "overall_std": torch.linspace(0.5, 1.5, 32)})
    strips = images(132, 2).view(6, 22, 3, 32, 32)  # 6 pairs: 10 test frames, 2 endpoints, 10 prior frames
    save(run, "interpolations.pt", {"test": strips[:, :10], "test_endpoints": strips[:, 10:12],
                                    "prior": strips[:, 12:]})
    save_discriminator(run, 5000)
    g = torch.Generator().manual_seed(1)  # Q1.3 measured on 500 test images (experiments.measurements.amortisation)
    save(run, "amortisation.pt", {"amortisation_gap": 5 * torch.rand(500, generator=g),
                                  "amortisation_gap_mc_se": torch.full((500,), 0.5),
                                  "approximation_gap": 20 + 3 * torch.randn(500, generator=g)})
    return run


def save_discriminator(run: Path, n: int) -> None:
    """Question 3's artifact (experiments.measurements.discriminator.figure_data) for n held-out samples and test
    images."""
    g = torch.Generator().manual_seed(n)
    h_fake = torch.randn(n, generator=g) - 2
    save(run, "discriminator.pt", {"logits_real": torch.randn(n, generator=g) + 2, "logits_fake": h_fake,
                                   "accepted": torch.rand(n, generator=g) < (h_fake - h_fake.max()).exp(),
                                   "most_real": images(16, 6), "least_real": images(16, 7)})


def ddpm_run(root: Path, T: int) -> Path:
    probe = ProbeResult(raw_pixels=0.24, levels=[LevelAccuracy(t=1, accuracy=0.71), LevelAccuracy(t=100, accuracy=0.66),
                                                 LevelAccuracy(t=300, accuracy=0.52)],
                        feature_dim=256, n_train=5000, n_test=2000)
    summary = DDPMSummary.partial(timesteps=T, epochs=20, dataset="svhn", train_seconds_per_epoch=95.0,
                                  sample_seconds_per_image=0.05 * T / 1000, quality_classifier_fid=12.0 * 1000 / T,
                                  quality_mean_confidence=0.9, t_star=0.4 * T, probe=probe, bound=fake_bound())
    run = run_folder(root, f"ddpm-T{T}", {"timesteps": T, "preview_steps": 50}, epochs(20), summary)
    for e in range(1, 21):
        save(run, f"previews/epoch_{e:03d}.pt", images(64, e))
    for e in (1, 5, 10, 15, 20):
        save(run, f"samples/epoch_{e:03d}.pt", images(64, e))
    save(run, "final_samples.pt", images(100, 3))
    levels = [50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    save(run, "reconstructions.pt", {
        "levels": levels, "original": images(10, 4), "reconstructions": images(110, 5).view(11, 10, 3, 32, 32),
        "n_evaluated": 500, "mse": [t / 1000 for t in levels], "label_preserved": [1 - t / 1100 for t in levels],
        "clean_accuracy": 0.95, "t_star": 500})
    save_discriminator(run, 500)
    t = torch.linspace(2, T, 60).long()  # Q2.3 measured: the bound's stratified steps (experiments.measurements.bound)
    save(run, "bound.pt", {"t": t, "L_t": 1000 / t.float(), "weight": torch.full((60,), (T - 1) / 60)})
    return run


def simsiam_run(root: Path, ablation: str) -> Path:
    dim, batch = (4096 if ablation == "proj-4096" else 2048), (4096 if ablation == "batch-4096" else 1024)
    config = {"ablation": ablation, "backbone": names.DEFAULT_BACKBONE, "batch_size": batch, "dim": dim,
              "knn_k": 200, "knn_temperature": 0.1}
    metrics = epochs(200, knn_accuracy=0.8, collapse_std=0.02, collapse_std_reference=dim ** -0.5)
    run = run_folder(root, f"simsiam-{ablation}", config, metrics, SimSiamSummary.partial(linear_probe_accuracy=0.85))
    (run / "artifacts" / SPECTRUM_FOLDER).mkdir()
    for e in range(10, 201, 10):  # Question 4 every 10 epochs, on 5000 test images
        alignment = None if ablation == "no-predictor" else Alignment(
            diagonal_fraction=e / 400, chance=1 / dim, cosines=[0.5] * 16, diagonal=[1.0] * 16)
        result = SpectrumResult(epoch=e, eigenvalues=(0.8 ** torch.arange(32.0)).tolist(), largest=10.0,
                                trace=dim / e, effective_rank=dim / e, alignment=alignment, predictor_map="Jacobian",
                                d=dim, n=5000, seconds=0.5)
        (run / "artifacts" / SPECTRUM_FOLDER / f"epoch_{e:03d}.json").write_text(json.dumps(result.to_dict()))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    found = {"vae": vae_run(root), **{f"ddpm-T{T}": ddpm_run(root, T) for T in (500, 1000, 1500)}}
    return found | {a: simsiam_run(root, a) for a in names.ABLATION_NAMES}


DRAW = {
    "vae_figures": lambda r: figures.vae_figures(r["vae"]),
    "ddpm_figures": lambda r: figures.ddpm_figures(r["ddpm-T1000"], r["vae"]),
    "ddpm_vs_vae without a VAE run": lambda r: [figures.ddpm_vs_vae(r["ddpm-T1000"], None)],
    "ddpm_timesteps": lambda r: [figures.ddpm_timesteps([r[f"ddpm-T{T}"] for T in (500, 1000, 1500)],
                                                        r["vae"].parent / "tstudy")],
    "simsiam_figures": lambda r: figures.simsiam_figures(r["baseline"]),
    "simsiam_comparisons": lambda r: figures.simsiam_comparisons([r[a] for a in names.ABLATION_NAMES],
                                                                 r["vae"].parent / "simsiam"),
}


def smallest_printed_text(draw, runs: dict[str, Path], monkeypatch) -> dict[str, tuple[float, str]]:
    """{PNG name: (smallest printed font size in pt, its text)} over the texts drawn into each PNG."""
    found, drawn, save_png, draw_text = {}, [], figures._save, Text.draw

    def record(text: Text, renderer) -> None:  # every Text that savefig draws, tick labels included
        if text.get_visible() and text.get_text().strip():
            drawn.append(text)
        draw_text(text, renderer)

    def measured(fig, folder, name) -> Path:
        drawn.clear()
        path = save_png(fig, folder, name)
        scale = printed_scale(path)
        found[path.name] = min((t.get_fontsize() * scale, t.get_text()) for t in drawn)
        return path

    monkeypatch.setattr(Text, "draw", record)
    monkeypatch.setattr(figures, "_save", measured)
    draw(runs)
    return found


@pytest.mark.parametrize("function", DRAW)
def test_smallest_text_is_at_least_7pt_as_printed(runs, monkeypatch, function):
    found = smallest_printed_text(DRAW[function], runs, monkeypatch)
    assert found
    small = {name: f"{size:.1f} pt ({text!r})" for name, (size, text) in found.items() if size < MIN_PT}
    assert not small, f"text under {MIN_PT} pt as printed: {small}"


# --------------------------------------------------------------------------- what the figures show

def drawn_figures(draw, monkeypatch) -> dict[str, Figure]:
    """{PNG name: its Figure} of what `draw()` saves."""
    found, save_png = {}, figures._save

    def kept(fig, folder, name) -> Path:
        found[name] = fig
        return save_png(fig, folder, name)

    monkeypatch.setattr(figures, "_save", kept)
    draw()
    return found


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_previews_show_first_last_and_every_fifth_epoch(runs, monkeypatch):
    fig = drawn_figures(lambda: figures.snapshots(runs["ddpm-T1000"], "DDPM", "previews"), monkeypatch)
    titles = [ax.get_title() for ax in fig["previews_over_training.png"].axes if ax.get_title()]
    assert titles == [f"epoch {e}" for e in (1, 5, 10, 15, 20)]


def test_t_study_has_no_table_and_probe_labels_are_rotated(runs, monkeypatch):
    study = drawn_figures(lambda: figures.ddpm_timesteps([runs["ddpm-T500"], runs["ddpm-T1000"]],
                                                         runs["vae"].parent / "t"), monkeypatch)
    assert not any(ax.tables for ax in study["ddpm_timesteps.png"].axes)
    fig = drawn_figures(lambda: figures.probe(runs["ddpm-T1000"]), monkeypatch)["probe.png"]
    assert all(label.get_rotation() > 0 for label in fig.axes[0].get_xticklabels())


def test_simsiam_sizes_come_from_the_runs(tmp_path, monkeypatch):
    small = [run_folder(tmp_path, a, {"ablation": a, "backbone": names.DEFAULT_BACKBONE, "knn_k": 200,
                                      "knn_temperature": 0.1, "dim": 1024 if a == "proj-4096" else 512,
                                      "batch_size": 512 if a == "batch-4096" else 128},
                        epochs(2, knn_accuracy=0.3, collapse_std=0.03, collapse_std_reference=0.04))
             for a in names.compared("q5b")]
    fig = drawn_figures(lambda: figures.simsiam_comparison(small, tmp_path / "out", "q5b"), monkeypatch)
    drawn = " ".join(texts(fig["simsiam_q5b.png"]))
    assert "d = 1024, batch 128" in drawn and "d = 512, batch 512" in drawn
    assert "4096" not in drawn.replace("proj-4096", "").replace("batch-4096", "")
