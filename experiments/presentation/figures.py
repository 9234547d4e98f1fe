"""Report figures, one function each, drawn from a run folder alone (no model, no retraining).

Every figure names the dataset it came from (SVHN, CIFAR-10 or the synthetic stand-in) in
its title, read from the run's provenance.json. PNGs go to <run>/figures/.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torchvision.utils import make_grid

from experiments.harness.files import load_artifact, read_json, read_metrics, save_figure
from experiments.measurements import amortisation
from experiments.measurements.discriminator import ARTIFACT as DRS_ARTIFACT
from experiments.measurements.discriminator import jsd_estimate
from experiments.measurements.monitors import best_knn, monitored_epochs
from experiments.presentation import names, summaries

N_MARKED = 3  # most class-specific latent dimensions marked per class
MOST_PANELS = 8  # snapshot panels per figure; more snapshots are thinned to every 5k-th epoch
# Figures are drawn at about the size report.tex prints them (\linewidth, 6.8 in; \fig[0.6\linewidth]
# ones at 4 in), so that these font sizes, all 7.5 pt or more, are the printed ones
# (tests/test_figure_fonts.py checks the printed sizes).
WIDTH = 6.5
MARKERS = ("o", "s", "^", "D", "v")   # one per run of a comparison, so that coinciding curves stay apart
DASHES = ("-", "--", ":", "-.", (0, (5, 1)))
READABLE = plt.rc_context({"font.size": 8, "axes.titlesize": 8.5, "figure.titlesize": 9, "legend.fontsize": 7.5,
                           "xtick.labelsize": 7.5, "ytick.labelsize": 7.5})


def dataset_name(run_dir: str | Path) -> str:
    return names.dataset_name(read_json(run_dir, "provenance.json")["source"])


def grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """uint8 (N, 3, H, W) -> (H', W', 3) array for imshow, 1-pixel white padding."""
    return make_grid(images, nrow=nrow, padding=1, pad_value=255).permute(1, 2, 0).numpy()


def figures_dir(run_dir: str | Path) -> Path:
    """Where a run's own figures go: <run>/figures."""
    return Path(run_dir) / "figures"


def _save(fig: plt.Figure, folder: str | Path, name: str) -> Path:
    """Write `fig` to folder/name (PNG, 110 dpi) atomically (a kill or a full disk leaves no half-written PNG),
    close it, and return the path."""
    path = Path(folder) / name
    try:
        save_figure(fig, path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _snapshot_epochs(run_dir: str | Path, kind: str) -> list[int]:
    folder = Path(run_dir) / "artifacts" / kind
    return sorted(int(m.group(1)) for p in folder.glob("epoch_*.pt") if (m := re.match(r"epoch_(\d+)\.pt", p.name)))


def _shown(epochs: list[int]) -> list[int]:
    """At most MOST_PANELS epochs: all when they fit, else the first, every k-th (k a multiple of 5) and the last."""
    if len(epochs) <= MOST_PANELS:
        return epochs
    every = 5 * math.ceil(epochs[-1] / (5 * (MOST_PANELS - 2)))
    return sorted({epochs[0], epochs[-1], *(e for e in epochs if e % every == 0)})


# --------------------------------------------------------------------------- shared by all problems

@READABLE
def wall_clock(run_dir: str | Path, label: str) -> Path:
    """Training wall-clock: seconds per epoch (training, and with evaluation) and the running total."""
    m = read_metrics(run_dir)
    epochs = [r["epoch"] for r in m]
    fig, (a, b) = plt.subplots(1, 2, figsize=(WIDTH, 2.4))
    a.bar(epochs, [r["epoch_seconds"] for r in m], color="tab:gray", label="epoch incl. evaluation")
    a.bar(epochs, [r["train_seconds"] for r in m], color="tab:blue", label="training steps")
    a.set(xlabel="epoch", ylabel="seconds per epoch")
    a.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=2, frameon=False)  # above the bars
    minutes = m[-1]["wall_seconds"] > 120
    b.plot([0] + epochs, [0] + [r["wall_seconds"] / (60 if minutes else 1) for r in m], marker="o", ms=3)
    b.set(xlabel="epoch", ylabel=f"cumulative {'minutes' if minutes else 'seconds'}")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    speed = np.median([r["images_per_s"] for r in m])
    fig.suptitle(f"{label} training wall-clock ({dataset_name(run_dir)}; median {speed:.0f} training images/s)")
    fig.tight_layout()
    return _save(fig, figures_dir(run_dir), "wall_clock.png")


@READABLE
def loss_curves(run_dir: str | Path, keys: dict[str, str], label: str) -> Path:
    """Per-epoch curves of the metrics named in `keys` (metric -> legend); printed at 0.55 \\linewidth."""
    m = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(3.6, 2.5))
    for key, legend in keys.items():
        ax.plot([r["epoch"] for r in m], [r[key] for r in m], marker="o", ms=3, label=legend)
    ax.set(xlabel="epoch", ylabel="loss", title=f"{label} loss ({dataset_name(run_dir)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(keys), frameon=False)  # above, off the data
    return _save(fig, figures_dir(run_dir), "loss.png")


@READABLE
def snapshots(run_dir: str | Path, label: str, what: str = "samples") -> Path:
    """One panel per snapshot epoch of artifacts/<what>/epoch_NNN.pt (at most MOST_PANELS), titled with the epoch."""
    epochs = _shown(_snapshot_epochs(run_dir, what))
    if not epochs:
        raise FileNotFoundError(f"no snapshots in {Path(run_dir) / 'artifacts' / what}")
    cols = min(4 if len(epochs) > 5 else 5, len(epochs))
    rows = -(-len(epochs) // cols)
    side = min(WIDTH / cols, 3.3 / rows)  # inches per panel: the width, and the report's height cap
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, epoch in zip(axes.flat, epochs):
        snap = load_artifact(run_dir, f"{what}/epoch_{epoch:03d}.pt")
        if isinstance(snap, dict):  # originals and reconstructions: alternate rows of 8
            images = torch.stack([snap["original"].view(-1, 8, 3, 32, 32),
                                  snap["reconstruction"].view(-1, 8, 3, 32, 32)], dim=1).view(-1, 3, 32, 32)
        else:
            images = snap
        ax.imshow(grid(images, nrow=8))
        ax.set_title(f"epoch {epoch}")
    note = {"reconstructions": "odd rows: test originals, even rows: reconstructions",
            "previews": f"DDIM, {read_json(run_dir, 'config.json').get('preview_steps')} steps, "
                        "same noise at every epoch",
            }.get(what, "same noise at every epoch")
    fig.suptitle(f"{label} {what} during training, {dataset_name(run_dir)}\n({note})")
    fig.tight_layout()
    return _save(fig, figures_dir(run_dir), f"{what}_over_training.png")


@READABLE
def image_grid(run_dir: str | Path, artifact: str, title: str, name: str) -> Path:
    """A square grid of the images of `artifact`; printed at 0.6 \\linewidth."""
    images = load_artifact(run_dir, artifact)
    nrow = int(np.ceil(np.sqrt(len(images))))
    fig, ax = plt.subplots(figsize=(3.6, 3.8))
    ax.imshow(grid(images, nrow=nrow))
    ax.axis("off")
    ax.set_title(f"{title}\n({dataset_name(run_dir)})")
    return _save(fig, figures_dir(run_dir), name)


# --------------------------------------------------------------------------- Problem 1 (VAE)

def class_specificity(profiles: dict) -> torch.Tensor:
    """(10, z_dim): each class mean's deviation from the overall mean, in units of that dimension's spread."""
    return (profiles["class_means"] - profiles["overall_mean"]) / profiles["overall_std"].clamp_min(1e-8)


def _profile_bars(run_dir: str | Path, p: dict, score: np.ndarray, top: np.ndarray) -> Path:
    """1.3(e) bars: the overall mean of E[z|x] (dimensions large for every class), then each class's
    standardised deviation from it, its N_MARKED most class-specific dimensions in red."""
    z_dim = score.shape[1]
    fig = plt.figure(figsize=(WIDTH, 3.7))
    cells = fig.add_gridspec(3, 5, height_ratios=[0.8, 1, 1])
    shared = fig.add_subplot(cells[0, :])
    shared.bar(np.arange(z_dim), p["overall_mean"].numpy(), color="tab:gray")
    shared.set(xlim=(-0.6, z_dim - 0.4), ylabel="mean of E[z|x]",
               title="shared by every class: the overall mean of E[z|x] per dimension")
    for c in range(score.shape[0]):
        ax = fig.add_subplot(cells[1 + c // 5, c % 5], sharey=fig.axes[1] if c else None)
        ax.bar(np.arange(z_dim), score[c], color=np.where(np.isin(np.arange(z_dim), top[c]), "tab:red", "tab:blue"))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"class {c} (n={int(p['counts'][c])})\npeaks: {', '.join(map(str, top[c]))}", fontsize=7.5)
        ax.set(xlabel="latent dimension" if c >= 5 else "", ylabel="(class - overall)\n/ std" if c % 5 == 0 else "")
        ax.label_outer()
    fig.suptitle(f"VAE latent profile per class, posterior means E[z|x] of training images ({dataset_name(run_dir)})")
    fig.tight_layout(h_pad=0.3, w_pad=0.3)
    return _save(fig, figures_dir(run_dir), "latent_profiles_bars.png")


@READABLE
def latent_profiles(run_dir: str | Path) -> list[Path]:
    """1.3(e): per-class bars of class specificity (with the shared overall profile), and a heat map of it."""
    p = load_artifact(run_dir, "latent_profiles.pt")
    score = class_specificity(p).numpy()
    n_classes = score.shape[0]
    top = np.argsort(-np.abs(score), axis=1)[:, :N_MARKED]
    bars = _profile_bars(run_dir, p, score, top)

    fig, ax = plt.subplots(figsize=(WIDTH, 2.6))
    lim = np.abs(score).max()
    im = ax.imshow(score, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for c in range(n_classes):
        ax.scatter(top[c], [c] * N_MARKED, marker="o", facecolors="none", edgecolors="k", s=30)
    ax.set(xlabel="latent dimension", ylabel="class", yticks=range(n_classes))
    fig.colorbar(im, label="(class mean - overall mean) / std")
    ax.set_title(f"class specificity of each latent dimension ({dataset_name(run_dir)}); "
                 f"circles: top {N_MARKED} per class")
    heat = _save(fig, figures_dir(run_dir), "latent_profiles_heatmap.png")
    return [bars, heat]


@READABLE
def interpolations(run_dir: str | Path) -> Path:
    """1.3(f): strips between pairs of test images (originals at the ends) and between prior draws, side by side."""
    it = load_artifact(run_dir, "interpolations.pt")
    P, n = it["test"].shape[:2]
    blank = torch.full_like(it["test_endpoints"][:, :1], 255)
    rows_test = torch.cat([it["test_endpoints"][:, :1], it["test"], it["test_endpoints"][:, 1:]], dim=1)
    rows_prior = torch.cat([blank, it["prior"], blank], dim=1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(WIDTH, WIDTH / 2 * P / (n + 2) + 0.9))
    a.imshow(grid(rows_test.reshape(-1, 3, 32, 32), nrow=n + 2))
    a.set_title("between test images; outer columns: the originals,\neach beside the decoding of its posterior mean")
    b.imshow(grid(rows_prior.reshape(-1, 3, 32, 32), nrow=n + 2))
    b.set_title("between two draws from the prior N(0, I)\n")
    for ax in (a, b):
        ax.axis("off")
    fig.suptitle(f"VAE latent interpolation, {n} steps ({dataset_name(run_dir)})")
    fig.tight_layout()
    return _save(fig, figures_dir(run_dir), "interpolations.png")


def vae_figures(run_dir: str | Path) -> list[Path]:
    """Every figure of Problem 1.3, (a) to (f), plus the loss curves."""
    return [
        wall_clock(run_dir, "VAE"),                                                  # (a)
        loss_curves(run_dir, {"loss": "train -ELBO", "test_loss": "test -ELBO"}, "VAE"),
        snapshots(run_dir, "VAE", "samples"),                                        # (b)
        snapshots(run_dir, "VAE", "reconstructions"),                                # (c)
        image_grid(run_dir, "final_samples.pt", "VAE samples at the end of training", "final_samples.png"),  # (d)
        *latent_profiles(run_dir),                                                   # (e)
        interpolations(run_dir),                                                     # (f)
        *([amortisation_gaps(run_dir)] if (Path(run_dir) / "artifacts" / "amortisation.pt").exists() else []),
        *discriminator_figures(run_dir, "VAE"),                                      # Part III, Q3
    ]


@READABLE
def amortisation_gaps(run_dir: str | Path) -> Path:
    """Q1.3-1.4 measured: histograms over test images of the amortisation gap (>= 0 by Q1.3) and the
    approximation gap, in nats, with zero and each mean marked (artifacts/amortisation.pt)."""
    g = load_artifact(run_dir, "amortisation.pt")
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 2.5))
    for ax, name, title in zip(axes, ("amortisation_gap", "approximation_gap"),
                               ("amortisation gap: per-point - amortised ELBO", "approximation gap: log p_K(x) - "
                                                                                 "per-point ELBO")):
        v = g[name].numpy()
        ax.hist(v, bins=min(40, max(5, len(v) // 5)), color="tab:blue")
        ax.axvline(0, color="k", lw=1)
        ax.axvline(v.mean(), color="tab:red", ls="--", label=f"mean {v.mean():.3g}")
        ax.set(xlabel="nats per image", ylabel="test images", title=title)
        ax.legend(loc="upper right")
    negative = int(amortisation.negative(g).sum())
    fig.suptitle(f"VAE inference gaps of {len(g['amortisation_gap'])} test images ({dataset_name(run_dir)}); "
                 f"{negative} with an amortisation gap below -{amortisation.NEGATIVE_BELOW} Monte Carlo SE")
    fig.tight_layout()
    return _save(fig, figures_dir(run_dir), "amortisation_gaps.png")


# --------------------------------------------------------------------------- Problem 2 (DDPM)

@READABLE
def reconstruction_study(run_dir: str | Path) -> list[Path]:
    """2.2(c): test images noised to t' and denoised back, one row per level; distance and
    label preservation against t', with t* marked."""
    r = load_artifact(run_dir, "reconstructions.pt")
    levels, n = r["levels"], len(r["original"])
    source = dataset_name(run_dir)
    rows = torch.cat([r["original"][None], r["reconstructions"]]).reshape(-1, 3, 32, 32)
    side = min(0.33, 3.2 / (len(levels) + 1))  # inches per image, under the report's height cap
    fig, ax = plt.subplots(figsize=(side * n + 0.8, side * (len(levels) + 1) + 0.5))
    ax.imshow(grid(rows, nrow=n))
    ax.set_yticks([16 + 33 * k for k in range(len(levels) + 1)], ["original"] + [f"t'={t}" for t in levels])
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"DDPM reconstructions: noised to t',\ndenoised from t' ({source})")
    grid_path = _save(fig, figures_dir(run_dir), "reconstructions.png")

    fig, (a, b) = plt.subplots(1, 2, figsize=(WIDTH, 2.6))
    a.plot(levels, r["mse"], marker="o", ms=3)
    a.set(xlabel="t'", ylabel="MSE to the original ([-1, 1] scale)", title="distance to the original")
    b.plot(levels, r["label_preserved"], marker="o", ms=3, label="label preserved (classifier)")
    b.axhline(r["clean_accuracy"], color="tab:green", ls=":", label="classifier on clean originals")
    b.axhline(0.1, color="tab:gray", ls=":", label="chance")
    b.set(xlabel="t'", ylabel="rate", ylim=(0, 1.02), title="label preservation")
    if r["t_star"] is not None:
        for ax in (a, b):
            ax.axvline(r["t_star"], color="tab:red", ls="--", label=f"t* = {r['t_star']:.0f}")
    fig.suptitle(f"DDPM reconstruction study, {r['n_evaluated']} test images ({source})\n"
                 "t*: label preservation falls below halfway between clean accuracy and chance")
    fig.tight_layout()
    fig.legend(*b.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0), ncol=4,
               frameon=False)  # below both panels, off the curves
    return [grid_path, _save(fig, figures_dir(run_dir), "reconstruction_curves.png")]


@READABLE
def ddpm_vs_vae(run_dir: str | Path, vae_dir: str | Path | None) -> Path:
    """2.2(d): the DDPM's final samples beside the VAE's (when a finished VAE run is given)."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    for ax in axes:
        ax.axis("off")
    ddpm = load_artifact(run_dir, "final_samples.pt")[:64]
    vae = load_artifact(vae_dir, "final_samples.pt")[:64] if vae_dir is not None else None
    n = len(ddpm) if vae is None else min(len(ddpm), len(vae))   # as many images on each side: the same scale
    nrow = max(1, math.ceil(math.sqrt(n)))
    axes[0].imshow(grid(ddpm[:n], nrow=nrow))
    axes[0].set_title(f"DDPM, {n} samples ({dataset_name(run_dir)})")
    if vae is not None:
        axes[1].imshow(grid(vae[:n], nrow=nrow))
        axes[1].set_title(f"VAE, {n} samples ({dataset_name(vae_dir)})")
    else:
        config = read_json(run_dir, "config.json")
        preset = config.get("preset", "full")
        command = names.command("vae", preset, out=str(Path(run_dir).parent / names.vae_run_name(preset)),
                                data=config.get("data"), data_root=config.get("data_root"))
        axes[1].text(0.5, 0.5, "no finished VAE run found:\n" + command.replace(" --", "\n  --"),
                     ha="center", va="center", fontsize=9, transform=axes[1].transAxes)
    fig.suptitle("Final samples, DDPM beside VAE")
    fig.tight_layout()
    return _save(fig, figures_dir(run_dir), "ddpm_vs_vae.png")


@READABLE
def probe(run_dir: str | Path) -> Path:
    """2.3(b): linear-probe accuracy of digit class on U-Net bottleneck features vs raw pixels;
    printed at 0.6 \\linewidth."""
    p = summaries.DDPMSummary.read(run_dir).probe
    acc = [level.accuracy for level in p.levels] + [p.raw_pixels]
    labels = [f"bottleneck, t={level.t}" for level in p.levels] + ["raw pixels"]
    fig, ax = plt.subplots(figsize=(3.9, 2.9))
    ax.bar(labels, acc, color=["tab:blue"] * (len(acc) - 1) + ["tab:gray"])
    for k, v in enumerate(acc):
        ax.text(k, v + 0.01, f"{v:.1%}", ha="center")
    ax.axhline(0.1, color="k", ls=":", lw=1)
    ax.tick_params(axis="x", labelrotation=30)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set(ylabel="test accuracy", ylim=(0, 1.08), title=f"linear probe of digit class\n({p.n_train} train / "
                                                         f"{p.n_test} test, {dataset_name(run_dir)})")
    return _save(fig, figures_dir(run_dir), "probe.png")


def ddpm_figures(run_dir: str | Path, vae_dir: str | Path | None = None) -> list[Path]:
    """Every figure of Problem 2.2, (a) to (d), the DDIM previews and the 2.3(b) probe."""
    return [
        wall_clock(run_dir, "DDPM"),                                                  # (a)
        loss_curves(run_dir, {"loss": "train", "test_loss": "test", "test_loss_ema": "test, EMA weights"},
                    "DDPM smooth-L1"),
        snapshots(run_dir, "DDPM", "samples"),                                        # (b)
        *([snapshots(run_dir, "DDPM", "previews")] if _snapshot_epochs(run_dir, "previews") else []),
        *reconstruction_study(run_dir),                                               # (c)
        image_grid(run_dir, "final_samples.pt", "DDPM samples at the end of training (EMA weights)",
                   "final_samples.png"),                                              # (d)
        ddpm_vs_vae(run_dir, vae_dir),                                                # (d)
        probe(run_dir),                                                               # 2.3(b)
        *([bound_terms(run_dir)] if (Path(run_dir) / "artifacts" / "bound.pt").exists() else []),
        *discriminator_figures(run_dir, "DDPM"),                                      # Part III, Q3
    ]


@READABLE
def bound_terms(run_dir: str | Path) -> Path:
    """Q2.3 measured: where in t the variational bound is spent. Left, each term (L_0 at t = 1, L_{t-1} at the
    stratified steps, L_T at t = T), nats per image; right, the running share of the bound up to step t."""
    steps = load_artifact(run_dir, "bound.pt")
    summary = summaries.DDPMSummary.read(run_dir)
    b, T = summary.bound, summary.timesteps
    t, L_t, weight = steps["t"].numpy(), steps["L_t"].numpy(), steps["weight"].numpy()
    fig, (a, c) = plt.subplots(1, 2, figsize=(WIDTH, 2.6))
    a.scatter(t, L_t, s=6, color="tab:blue", label="$L_{t-1}$ (stratified draws)")
    a.scatter([1], [b.reconstruction], marker="s", color="tab:red", label="$L_0$ (decoder)")
    a.scatter([T], [b.prior], marker="^", color="tab:green", label="$L_T$ (prior)")
    a.set(xscale="log", yscale="log", xlabel="step t", ylabel="nats per image", title="each term of the bound")
    a.legend(loc="upper right")
    spent = np.cumsum(np.concatenate([[b.reconstruction], weight * L_t, [b.prior]])) / b.nll_bound.nats
    c.step(np.concatenate([[1], t, [T]]), 100 * spent, where="post", color="tab:blue")
    c.set(xscale="log", xlabel="step t", ylabel="% of the bound", ylim=(0, 101), title="share spent at steps <= t")
    fig.suptitle(f"DDPM variational bound of {b.n_images} test images ({dataset_name(run_dir)}): "
                 f"{b.nll_bound.bits_per_dim:.2f} bits/dim ({b.decoder} decoder, 8-bit scale)")
    fig.tight_layout()
    return _save(fig, figures_dir(run_dir), "bound_terms.png")


@READABLE
def ddpm_timesteps(run_dirs: list[str | Path], out: str | Path) -> Path:
    """2.3(a): training time per epoch, sampling time and sample quality against T (their table is the report's)."""
    rows = sorted((summaries.DDPMSummary.read(d) for d in run_dirs), key=lambda s: s.timesteps)
    Ts = [s.timesteps for s in rows]
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 2.3))
    for ax, values, label, color in zip(axes, ([s.train_seconds_per_epoch for s in rows],
                                               [s.sample_seconds_per_image for s in rows],
                                               [s.quality_classifier_fid for s in rows]),
                                        ("training s / epoch", "sampling s / image",
                                         "classifier-FID (lower is better)"), ("tab:gray", "tab:blue", "tab:red")):
        ax.plot(Ts, values, marker="o", ms=3, color=color)
        ax.set(xlabel="T", ylabel=label, xticks=Ts)
    sources = sorted({names.dataset_name(s.dataset) for s in rows})
    budget = sorted({s.epochs for s in rows})
    fig.suptitle(f"DDPM with T steps, same training budget ({'/'.join(map(str, budget))} epochs, {', '.join(sources)})")
    fig.tight_layout()
    return _save(fig, out, "ddpm_timesteps.png")


# --------------------------------------------------------------------------- Problem 3 (SimSiam)

# Each question's title and the ablations it compares, the baseline first (experiments.presentation.names).
SIMSIAM_QUESTIONS = {q: (title, names.compared(q)) for q, title in names.QUESTIONS.items()}


def _simsiam_label(run_dir: str | Path, sizes: bool = False) -> str:
    """The run's ablation, with its backbone when not the default (names.DEFAULT_BACKBONE) and, with
    `sizes`, its projector output d and batch size from config.json."""
    config = read_json(run_dir, "config.json")
    backbone = "" if config["backbone"] == names.DEFAULT_BACKBONE else f" ({config['backbone']})"
    size = f": d = {config['dim']}, batch {config['batch_size']}" if sizes else ""
    return f"{config['ablation']}{backbone}{size}"


def _knn_settings(run_dir: str | Path) -> str:
    """'k = .., T = ..' of the run's kNN monitor (k clipped to the memory bank's size, as the run does)."""
    config, provenance = read_json(run_dir, "config.json"), read_json(run_dir, "provenance.json")
    return f"k = {min(config['knn_k'], provenance['n_train'])}, T = {config['knn_temperature']}"


def _monitored(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl records of the epochs where the kNN and collapse monitors ran."""
    return monitored_epochs(read_metrics(run_dir))


def _simsiam_panels(fig: plt.Figure, runs: list[tuple[str, list[dict]]], knn_settings: str) -> None:
    """Training loss, kNN accuracy and collapse std against epochs in three panels of `fig`, one line per
    (label, metrics) run; the collapse panel with each output width's reference 1/sqrt(d), dashed; one
    legend below the panels."""
    loss, knn, collapse = axes = fig.subplots(1, 3)
    references = {}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, metrics) in enumerate(runs):
        # Runs that coincide (e.g. ablations not yet apart) stay distinguishable: own marker, size and dash.
        color, style = colors[k % len(colors)], dict(marker=MARKERS[k % len(MARKERS)], ms=7 - 1.2 * k,
                                                     ls=DASHES[k % len(DASHES)], lw=1.2, mfc="none")
        monitored = monitored_epochs(metrics)
        loss.plot([m["epoch"] for m in metrics], [m["loss"] for m in metrics], color=color, label=label, **style)
        knn.plot([m["epoch"] for m in monitored], [100 * m["knn_accuracy"] for m in monitored], color=color, **style)
        collapse.plot([m["epoch"] for m in monitored], [m["collapse_std"] for m in monitored], color=color, **style)
        if monitored:
            references.setdefault(monitored[-1]["collapse_std_reference"], color)
    for reference, color in references.items():
        collapse.axhline(reference, color=color, ls="--", lw=1, label=f"1/sqrt(d), d = {round(reference ** -2)}")
    loss.set(xlabel="epoch", ylabel="loss, -cos (min -1)", title="training loss")
    knn.set(xlabel="epoch", ylabel="accuracy (%)", title=f"kNN accuracy\n({knn_settings})")
    collapse.set(xlabel="epoch", ylabel="std of z / ||z||", ylim=(0, None),
                 title="collapse: per-channel std\nover the test set")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    fig.tight_layout()
    handles = [h for ax in (loss, collapse) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(3, len(handles)),
               frameon=False)


@READABLE
def simsiam_training(run_dir: str | Path) -> Path:
    """One run: training loss, kNN accuracy and the collapse indicator against epochs."""
    fig = plt.figure(figsize=(WIDTH, 2.5))
    fig.suptitle(f"SimSiam {_simsiam_label(run_dir)} ({dataset_name(run_dir)})")
    _simsiam_panels(fig, [(_simsiam_label(run_dir, sizes=True), read_metrics(run_dir))], _knn_settings(run_dir))
    return _save(fig, figures_dir(run_dir), "training.png")


def simsiam_figures(run_dir: str | Path) -> list[Path]:
    """Every per-run figure of Problem 3: wall-clock, and training loss / kNN accuracy / collapse; the spectrum
    of Question 4 (Part III) when the run measured it."""
    return [wall_clock(run_dir, f"SimSiam {_simsiam_label(run_dir)}"), simsiam_training(run_dir),
            *([spectrum(run_dir)] if summaries.spectra(run_dir) else [])]


@READABLE
def simsiam_comparison(run_dirs: list[str | Path], out: str | Path, question: str) -> Path:
    """Q4, Q5(a) or Q5(b) (`question` a key of SIMSIAM_QUESTIONS): loss, kNN accuracy and collapse
    against epochs, the question's ablations beside the baseline, from the run folders given
    (the ones of other ablations are ignored; missing ones are named in the figure). -> out/simsiam_<q>.png
    The sizes (d, batch) are each run's own, in the legend: the question's title names the full preset's.
    """
    if question not in SIMSIAM_QUESTIONS:
        raise ValueError(f"question must be one of {list(SIMSIAM_QUESTIONS)}, got {question!r}")
    title, wanted = SIMSIAM_QUESTIONS[question]
    ablation = {d: read_json(d, "config.json")["ablation"] for d in run_dirs if read_metrics(d)}
    found = sorted((d for d, a in ablation.items() if a in wanted), key=lambda d: wanted.index(ablation[d]))
    missing = [a for a in wanted if a not in ablation.values()]
    fig = plt.figure(figsize=(WIDTH, 2.6))
    sources = sorted({dataset_name(d) for d in found}) or ["no runs"]
    fig.suptitle(f"SimSiam {title.split(':')[0]} ({', '.join(sources)})")
    settings = sorted({_knn_settings(d) for d in found})
    _simsiam_panels(fig, [(_simsiam_label(d, sizes=True), read_metrics(d)) for d in found], "; ".join(settings))
    if missing:
        fig.text(0.5, 1.08, "not shown, no finished epoch found: " + ", ".join(
            f"{a} ({names.command('simsiam', None, ablation=a)})" for a in missing), ha="center", color="tab:red",
            wrap=True)
    return _save(fig, out, f"simsiam_{question}.png")


@READABLE
def simsiam_table(run_dirs: list[str | Path], out: str | Path) -> tuple[Path, list[dict], str]:
    """Final and best kNN accuracy (and their epochs), collapse and linear probe, one row per run folder
    with at least one monitored epoch, in the order given. -> (out/simsiam_table.png, rows, markdown)."""
    rows = []
    for d in run_dirs:
        monitored = _monitored(d)
        if not monitored:
            continue
        config = read_json(d, "config.json")
        best = best_knn(monitored)
        finished = (Path(d) / summaries.FILE).exists()
        probe = summaries.SimSiamSummary.read(d).linear_probe_accuracy if finished else None
        rows.append({
            "run": _simsiam_label(d), "dataset": dataset_name(d), "epochs": monitored[-1]["epoch"],
            "batch": config["batch_size"], "d": config["dim"],
            "final_knn": monitored[-1]["knn_accuracy"], "best_knn": best["knn_accuracy"], "best_epoch": best["epoch"],
            "collapse_ratio": monitored[-1]["collapse_std"] / monitored[-1]["collapse_std_reference"],
            "linear_probe": probe,
        })
    header = ["run", "epochs", "batch", "d", "final kNN", "best kNN (epoch)", "collapse std x sqrt(d)",
              "linear probe"]
    cells = [[r["run"], str(r["epochs"]), str(r["batch"]), str(r["d"]), f"{r['final_knn']:.1%}",
              f"{r['best_knn']:.1%} ({r['best_epoch']})", f"{r['collapse_ratio']:.2f}",
              "-" if r["linear_probe"] is None else f"{r['linear_probe']:.1%}"] for r in rows]
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(c) + " |" for c in cells])
    fig, ax = plt.subplots(figsize=(WIDTH, 0.8 + 0.25 * max(1, len(rows))))
    ax.axis("off")
    if cells:
        table = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.auto_set_column_width(list(range(len(header))))
        table.scale(1, 1.4)
    else:
        ax.text(0.5, 0.5, "no run folder with a monitored epoch", ha="center", va="center")
    sources = sorted({r["dataset"] for r in rows}) or ["no runs"]
    ax.set_title(f"SimSiam ablations, kNN accuracy on the test set ({', '.join(sources)})\n"
                 "collapse std x sqrt(d): about 1 for outputs spread over the sphere, 0 at collapse")
    return _save(fig, out, "simsiam_table.png"), rows, markdown


def simsiam_comparisons(run_dirs: list[str | Path], out: str | Path) -> list[Path]:
    """Every cross-run figure of Problem 3: Q4, Q5(a), Q5(b), the table and Q4's spectra (Part III), into `out`."""
    return [*(simsiam_comparison(run_dirs, out, q) for q in SIMSIAM_QUESTIONS), simsiam_table(run_dirs, out)[0],
            simsiam_spectrum(run_dirs, out)]


def show(paths: list[Path]) -> None:
    """Display PNGs inline in a notebook."""
    from IPython.display import Image, Markdown, display

    for path in paths:
        display(Markdown(f"**{Path(path).name}**"), Image(filename=str(path)))


# --------------------------------------------------------------------------- Part III: the theory on our models

def discriminator_figures(run_dir: str | Path, label: str) -> list[Path]:
    """Question 3's figure of a VAE or DDPM run that measured it (runs from before the measurement did not)."""
    return [discriminator(run_dir, label)] if (Path(run_dir) / "artifacts" / DRS_ARTIFACT).exists() else []


@READABLE
def discriminator(run_dir: str | Path, label: str) -> Path:
    """Question 3 on a run's samples (artifacts/discriminator.pt): the held-out logits h of test images and of
    samples, with discriminator rejection sampling's acceptance probability e^(h - max h), and the held-out
    samples the discriminator rates most and least real. -> discriminator.png"""
    a = load_artifact(run_dir, DRS_ARTIFACT)
    h_real, h_fake = a["logits_real"].double(), a["logits_fake"].double()
    fig = plt.figure(figsize=(WIDTH - 0.3, 2.6))
    cells = fig.add_gridspec(1, 3, width_ratios=[1.4, 1, 1])
    hist = fig.add_subplot(cells[0])
    bins = np.linspace(min(h_real.min(), h_fake.min()).item(), max(h_real.max(), h_fake.max()).item() + 1e-6, 25)
    hist.hist(h_real.numpy(), bins=bins, alpha=0.6, color="tab:green", label="test images (p1)")
    hist.hist(h_fake.numpy(), bins=bins, alpha=0.6, color="tab:orange", label="samples (p0)")
    hist.set(xlabel="logit h = log D / (1 - D)", ylabel="held-out images")
    accept = hist.twinx()
    accept.plot(bins, np.exp(bins - h_fake.max().item()).clip(max=1), color="k", lw=1)
    accept.set(ylim=(0, 1.05), ylabel="DRS: accepted with e^(h - max h)")
    hist.legend(loc="upper left", frameon=False)
    for cell, key, what in ((cells[1], "most_real", "most"), (cells[2], "least_real", "least")):
        ax = fig.add_subplot(cell)
        ax.imshow(grid(a[key], nrow=int(math.ceil(math.sqrt(len(a[key]))))))
        ax.set_title(f"samples rated {what} real")
        ax.axis("off")
    fig.suptitle(f"{label}: a discriminator between test images and samples ({dataset_name(run_dir)})\nheld-out JSD "
                 f"estimate {jsd_estimate(h_real, h_fake):.3f} nats; DRS kept {a['accepted'].double().mean():.0%}")
    fig.tight_layout()
    return _save(fig, figures_dir(run_dir), "discriminator.png")


def _spectrum_panels(ax_spectra: plt.Axes, results: list, color_of: Callable[[int], Any]) -> None:
    """F's normalised top eigenvalues against their index, one line per measured epoch (at most MOST_PANELS)."""
    by_epoch = {r.epoch: r for r in results}
    for epoch in _shown(sorted(by_epoch)):
        values = by_epoch[epoch].eigenvalues
        ax_spectra.plot(range(1, len(values) + 1), values, color=color_of(epoch), lw=1, label=f"epoch {epoch}")
    ax_spectra.set(yscale="log", xlabel="eigenvalue index i", ylabel="lambda_i / lambda_1", title="spectrum of F")


@READABLE
def spectrum(run_dir: str | Path) -> Path:
    """Question 4 on one SimSiam run (artifacts/spectrum/): F = E[z z^T]'s normalised spectrum at each measured
    epoch, its effective rank, and the alignment of the predictor's linear map with F's eigenvectors. -> spectrum.png"""
    results = summaries.spectra(run_dir)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(WIDTH, 2.4))
    cmap, last = plt.get_cmap("viridis"), max(r.epoch for r in results)
    _spectrum_panels(a, results, lambda e: cmap(0.9 * e / last))
    a.legend(fontsize=7, frameon=False)
    epochs = [r.epoch for r in results]
    b.plot(epochs, [r.effective_rank for r in results], marker="o", ms=3)
    b.set(xlabel="epoch", ylabel="effective rank", ylim=(0, None), title=f"effective rank (d = {results[-1].d})")
    if results[-1].alignment is None:
        c.text(0.5, 0.5, "no predictor:\nthe spectrum only", ha="center", va="center", transform=c.transAxes)
        c.axis("off")
    else:
        c.plot(epochs, [r.alignment.diagonal_fraction for r in results], marker="o", ms=3, label="W_p in F's basis")
        chances = [r.alignment.chance for r in results]
        c.plot(epochs, chances, color="tab:gray", ls=":", label="chance (random basis)")
        shown = max([r.alignment.diagonal_fraction for r in results] + chances)
        c.set(xlabel="epoch", ylabel="diagonal fraction", ylim=(0, min(1.02, 1.3 * shown)),  # the trace, not [0, 1]
              title="predictor aligned with F")
        c.legend(loc="upper left", bbox_to_anchor=(0, -0.3), frameon=False)  # under the panel, off the data
    for ax in (b, c):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    fig.suptitle(f"SimSiam {_simsiam_label(run_dir)}: F on {results[-1].n} fixed test images ({dataset_name(run_dir)})")
    fig.tight_layout()
    return _save(fig, figures_dir(run_dir), "spectrum.png")


def linear_collapse(t: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4.4 in closed form: W(t) = W(0) e^{-2 X' t} with W(0) = I, X = I and X' = diag(noise). F(t) = W(t) (X + X')
    W(t)^T has eigenvalues (1 + x'_k) e^{-4 x'_k t}: (tr F(t) / tr F(0), effective rank of F(t)) at each t."""
    eig = (1 + noise)[None, :] * np.exp(-4 * noise[None, :] * t[:, None])  # (T, d)
    p = eig / eig.sum(1, keepdims=True)
    rank = np.exp(-(p * np.log(np.where(p > 0, p, 1))).sum(1))
    return eig.sum(1) / eig[0].sum(), rank


@READABLE
def simsiam_spectrum(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Question 4 across runs: the last spectra of F, tr F and the effective rank against epochs of the runs given
    with spectrum artifacts (baseline and the ablations of 4.3-4.5 first), beside 4.4's linear prediction W -> 0.
    -> out/simsiam_q4_spectrum.png"""
    wanted = (*names.compared("q4"), *(n for n in names.compared("q5a") if n not in names.compared("q4")))
    found = {read_json(d, "config.json")["ablation"]: d for d in run_dirs if summaries.spectra(d)}
    shown = [a for a in wanted if a in found]
    fig, ((a, b), (c, d)) = plt.subplots(2, 2, figsize=(WIDTH, 3.6))
    colors = dict(zip(wanted, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ablation in shown:
        results = summaries.spectra(found[ablation])
        last = results[-1]
        a.plot(range(1, len(last.eigenvalues) + 1), last.eigenvalues, color=colors[ablation],
               label=f"{ablation}, epoch {last.epoch}")
        b.plot([r.epoch for r in results], [r.trace for r in results], marker="o", ms=3, color=colors[ablation])
        c.plot([r.epoch for r in results], [r.effective_rank for r in results], marker="o", ms=3,
               color=colors[ablation])
    a.set(yscale="log", xlabel="eigenvalue index i", ylabel="lambda_i / lambda_1", title="last spectrum of F")
    a.legend(frameon=False)
    b.set(yscale="log", xlabel="epoch", ylabel="tr F = mean ||z||^2", title="scale of F (W -> 0: tr F -> 0)")
    c.set(xlabel="epoch", ylabel="effective rank", ylim=(0, None), title="effective rank of F")
    t = np.linspace(0, 5, 100)
    scale, rank = linear_collapse(t, np.linspace(0.1, 1.0, 16))
    d.plot(t, scale, color="k", label="tr F(t) / tr F(0)")
    d.plot(t, rank / 16, color="k", ls="--", label="effective rank / d")
    d.set(xlabel="t (gradient-flow time)", ylim=(0, 1.02), title="4.4, linear model: W(t) = W(0) e^{-2X't}")
    d.legend(frameon=False)
    for ax in (b, c):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    missing = [x for x in wanted if x not in found]
    sources = sorted({dataset_name(found[x]) for x in shown}) or ["no runs"]
    fig.suptitle(f"SimSiam Q4: spectrum of F = E[z z^T] ({', '.join(sources)})"
                 + (f"\nno spectrum found for: {', '.join(missing)}" if missing else ""))
    fig.tight_layout()
    return _save(fig, out, "simsiam_q4_spectrum.png")
