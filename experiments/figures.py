"""Report figures, one function each, drawn from a run folder alone (no model, no retraining).

Every figure names the dataset it came from (SVHN, CIFAR-10 or the synthetic stand-in) in
its title, read from the run's provenance.json. PNGs go to <run>/figures/.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch
from torchvision.utils import make_grid

from experiments.monitors import best_knn, monitored_epochs
from experiments.runs import load_artifact, read_json, read_metrics

DATASET_NAMES = {"svhn": "SVHN", "cifar10": "CIFAR-10", "synthetic": "synthetic stand-in"}
N_MARKED = 3  # most class-specific latent dimensions marked per class


def dataset_name(run_dir: str | Path) -> str:
    source = read_json(run_dir, "provenance.json")["source"]
    return DATASET_NAMES.get(source, source)


def grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """uint8 (N, 3, H, W) -> (H', W', 3) array for imshow, 1-pixel white padding."""
    return make_grid(images, nrow=nrow, padding=1, pad_value=255).permute(1, 2, 0).numpy()


def _save(fig: plt.Figure, run_dir: str | Path, name: str) -> Path:
    path = Path(run_dir) / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _snapshot_epochs(run_dir: str | Path, kind: str) -> list[int]:
    folder = Path(run_dir) / "artifacts" / kind
    return sorted(int(m.group(1)) for p in folder.glob("epoch_*.pt") if (m := re.match(r"epoch_(\d+)\.pt", p.name)))


# --------------------------------------------------------------------------- shared by all problems

def wall_clock(run_dir: str | Path, label: str) -> Path:
    """Training wall-clock: seconds per epoch (training, and with evaluation) and the running total."""
    m = read_metrics(run_dir)
    epochs = [r["epoch"] for r in m]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.bar(epochs, [r["epoch_seconds"] for r in m], color="tab:gray", label="epoch incl. evaluation")
    a.bar(epochs, [r["train_seconds"] for r in m], color="tab:blue", label="training steps")
    a.set(xlabel="epoch", ylabel="seconds", title="per epoch")
    a.legend()
    minutes = m[-1]["wall_seconds"] > 120
    b.plot([0] + epochs, [0] + [r["wall_seconds"] / (60 if minutes else 1) for r in m], marker="o")
    b.set(xlabel="epoch", ylabel="minutes" if minutes else "seconds", title="cumulative")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    speed = np.median([r["images_per_s"] for r in m])
    fig.suptitle(f"{label} training wall-clock ({dataset_name(run_dir)}; median {speed:.0f} training images/s)")
    fig.tight_layout()
    return _save(fig, run_dir, "wall_clock.png")


def loss_curves(run_dir: str | Path, keys: dict[str, str], label: str) -> Path:
    """Per-epoch curves of the metrics named in `keys` (metric -> legend)."""
    m = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, legend in keys.items():
        ax.plot([r["epoch"] for r in m], [r[key] for r in m], marker="o", label=legend)
    ax.set(xlabel="epoch", ylabel="loss", title=f"{label} loss ({dataset_name(run_dir)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return _save(fig, run_dir, "loss.png")


def snapshots(run_dir: str | Path, label: str, what: str = "samples") -> Path:
    """One panel per snapshot epoch of artifacts/<what>/epoch_NNN.pt, titled with the epoch."""
    epochs = _snapshot_epochs(run_dir, what)
    if not epochs:
        raise FileNotFoundError(f"no snapshots in {Path(run_dir) / 'artifacts' / what}")
    cols = min(3, len(epochs))
    rows = -(-len(epochs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.8 * rows), squeeze=False)
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
    note = {"reconstructions": " (odd rows: test originals, even rows: reconstructions)",
            "previews": f" (DDIM, {read_json(run_dir, 'config.json').get('preview_steps')} steps, same noise at every epoch)",
            }.get(what, " (same noise at every epoch)")
    fig.suptitle(f"{label} {what} during training, {dataset_name(run_dir)}{note}")
    return _save(fig, run_dir, f"{what}_over_training.png")


def image_grid(run_dir: str | Path, artifact: str, title: str, name: str) -> Path:
    images = load_artifact(run_dir, artifact)
    nrow = int(np.ceil(np.sqrt(len(images))))
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(grid(images, nrow=nrow))
    ax.axis("off")
    ax.set_title(f"{title} ({dataset_name(run_dir)})")
    return _save(fig, run_dir, name)


# --------------------------------------------------------------------------- Problem 1 (VAE)

def class_specificity(profiles: dict) -> torch.Tensor:
    """(10, z_dim): each class mean's deviation from the overall mean, in units of that dimension's spread."""
    return (profiles["class_means"] - profiles["overall_mean"]) / profiles["overall_std"].clamp_min(1e-8)


def latent_profiles(run_dir: str | Path) -> list[Path]:
    """1.3(e): a bar chart of the mean posterior mean per class, and a heat map of class specificity."""
    p = load_artifact(run_dir, "latent_profiles.pt")
    means, score = p["class_means"].numpy(), class_specificity(p).numpy()
    n_classes, z_dim = means.shape
    top = np.argsort(-np.abs(score), axis=1)[:, :N_MARKED]
    source = dataset_name(run_dir)

    fig, axes = plt.subplots(2, 5, figsize=(18, 7), sharey=True)
    for c, ax in enumerate(axes.flat):
        colors = np.where(np.isin(np.arange(z_dim), top[c]), "tab:red", "tab:blue")
        ax.bar(np.arange(z_dim), means[c], color=colors)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"class {c} (n={int(p['counts'][c])})\npeaks: {', '.join(map(str, top[c]))}", fontsize=10)
        ax.set_xlabel("latent dimension")
    fig.suptitle(f"VAE latent profile per class: mean of E[z|x] over training images ({source}); "
                 f"red: the {N_MARKED} most class-specific dimensions")
    fig.tight_layout()
    bars = _save(fig, run_dir, "latent_profiles_bars.png")

    fig, ax = plt.subplots(figsize=(12, 4))
    lim = np.abs(score).max()
    im = ax.imshow(score, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for c in range(n_classes):
        ax.scatter(top[c], [c] * N_MARKED, marker="o", facecolors="none", edgecolors="k", s=60)
    ax.set(xlabel="latent dimension", ylabel="class", yticks=range(n_classes))
    fig.colorbar(im, label="(class mean - overall mean) / std")
    ax.set_title(f"class specificity of each latent dimension ({source}); circles: top {N_MARKED} per class")
    heat = _save(fig, run_dir, "latent_profiles_heatmap.png")
    return [bars, heat]


def interpolations(run_dir: str | Path) -> Path:
    """1.3(f): strips between pairs of test images (originals at the ends) and between prior draws."""
    it = load_artifact(run_dir, "interpolations.pt")
    P, n = it["test"].shape[:2]
    blank = torch.full_like(it["test_endpoints"][:, :1], 255)
    rows_test = torch.cat([it["test_endpoints"][:, :1], it["test"], it["test_endpoints"][:, 1:]], dim=1)
    rows_prior = torch.cat([blank, it["prior"], blank], dim=1)
    fig, (a, b) = plt.subplots(2, 1, figsize=(1.0 * (n + 2), 1.05 * 2 * P + 1))
    a.imshow(grid(rows_test.reshape(-1, 3, 32, 32), nrow=n + 2))
    a.set_title("between test images (outer columns: the originals, each beside the decoding of its own posterior "
                "mean; inner: decoded interpolation)")
    b.imshow(grid(rows_prior.reshape(-1, 3, 32, 32), nrow=n + 2))
    b.set_title("between two draws from the prior N(0, I)")
    for ax in (a, b):
        ax.axis("off")
    fig.suptitle(f"VAE latent interpolation, {n} steps ({dataset_name(run_dir)})")
    return _save(fig, run_dir, "interpolations.png")


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
    ]


# --------------------------------------------------------------------------- Problem 2 (DDPM)

def reconstruction_study(run_dir: str | Path) -> list[Path]:
    """2.2(c): test images noised to t' and denoised back, one row per level; distance and
    label preservation against t', with t* marked."""
    r = load_artifact(run_dir, "reconstructions.pt")
    levels, n = r["levels"], len(r["original"])
    source = dataset_name(run_dir)
    rows = torch.cat([r["original"][None], r["reconstructions"]]).reshape(-1, 3, 32, 32)
    fig, ax = plt.subplots(figsize=(0.75 * n + 1.2, 0.75 * (len(levels) + 1) + 0.6))
    ax.imshow(grid(rows, nrow=n))
    ax.set_yticks([16 + 33 * k for k in range(len(levels) + 1)], ["original"] + [f"t'={t}" for t in levels])
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"DDPM reconstructions: noised to t', denoised from t' ({source})")
    grid_path = _save(fig, run_dir, "reconstructions.png")

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(levels, r["mse"], marker="o")
    a.set(xlabel="t'", ylabel="MSE to the original ([-1, 1] scale)", title="distance to the original")
    b.plot(levels, r["label_preserved"], marker="o", label="label preserved (classifier)")
    b.axhline(r["clean_accuracy"], color="tab:green", ls=":", label="classifier on clean originals")
    b.axhline(0.1, color="tab:gray", ls=":", label="chance")
    b.set(xlabel="t'", ylabel="rate", ylim=(0, 1.02), title="label preservation")
    if r["t_star"] is not None:
        for ax in (a, b):
            ax.axvline(r["t_star"], color="tab:red", ls="--", label=f"t* = {r['t_star']:.0f}")
    b.legend(fontsize=8)
    fig.suptitle(f"DDPM reconstruction study, {r['n_evaluated']} test images ({source}); "
                 "t*: label preservation falls below halfway between clean accuracy and chance")
    fig.tight_layout()
    return [grid_path, _save(fig, run_dir, "reconstruction_curves.png")]


def ddpm_vs_vae(run_dir: str | Path, vae_dir: str | Path | None) -> Path:
    """2.2(d): the DDPM's final samples beside the VAE's (when a finished VAE run is given)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4))
    for ax in axes:
        ax.axis("off")
    ddpm = load_artifact(run_dir, "final_samples.pt")[:64]
    axes[0].imshow(grid(ddpm, nrow=8))
    axes[0].set_title(f"DDPM ({dataset_name(run_dir)})")
    if vae_dir is not None:
        axes[1].imshow(grid(load_artifact(vae_dir, "final_samples.pt")[:64], nrow=8))
        axes[1].set_title(f"VAE ({dataset_name(vae_dir)})")
    else:
        axes[1].text(0.5, 0.5, "no finished VAE run found:\npython -m experiments vae --preset ...",
                     ha="center", va="center", fontsize=12, transform=axes[1].transAxes)
    fig.suptitle("Final samples, DDPM beside VAE")
    return _save(fig, run_dir, "ddpm_vs_vae.png")


def probe(run_dir: str | Path) -> Path:
    """2.3(b): linear-probe accuracy of digit class on U-Net bottleneck features vs raw pixels."""
    p = load_artifact(run_dir, "probe.pt")
    names, acc = list(p["accuracy"]), list(p["accuracy"].values())
    labels = [n.replace("bottleneck_t", "bottleneck, t=").replace("raw_pixels", "raw pixels") for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(labels, acc, color=["tab:blue"] * (len(acc) - 1) + ["tab:gray"])
    for k, v in enumerate(acc):
        ax.text(k, v + 0.01, f"{v:.1%}", ha="center")
    ax.axhline(0.1, color="k", ls=":", lw=1)
    ax.set(ylabel="test accuracy", ylim=(0, 1.08),
           title=f"linear probe of digit class ({p['n_train']} train / {p['n_test']} test, {dataset_name(run_dir)})")
    return _save(fig, run_dir, "probe.png")


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
    ]


def ddpm_timesteps(run_dirs: list[str | Path], out: str | Path) -> Path:
    """2.3(a): training time per epoch, sampling time and sample quality for runs with different T."""
    rows = sorted((read_json(d, "summary.json") | {"dir": d} for d in run_dirs), key=lambda s: s["timesteps"])
    header = ["T", "epochs", "train s/epoch", "sampling s/image", "classifier-FID (lower is better)",
              "mean confidence", "t*"]
    cells = [[str(s["timesteps"]), str(s["epochs"]), f"{s['train_seconds_per_epoch']:.1f}",
              f"{s['sample_seconds_per_image']:.3f}", f"{s['quality_classifier_fid']:.2f}",
              f"{s['quality_mean_confidence']:.3f}", "-" if s["t_star"] is None else f"{s['t_star']:.0f}"]
             for s in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 2.2 + 0.35 * len(rows)),
                               gridspec_kw={"width_ratios": [3, 2]})
    a.axis("off")
    table = a.table(cellText=cells, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.4)
    Ts = [s["timesteps"] for s in rows]
    b.plot(Ts, [s["sample_seconds_per_image"] for s in rows], marker="o", color="tab:blue")
    b.set(xlabel="T", ylabel="sampling seconds / image", xticks=Ts)
    c = b.twinx()
    c.plot(Ts, [s["quality_classifier_fid"] for s in rows], marker="s", color="tab:red")
    c.set_ylabel("classifier-FID", color="tab:red")
    sources = sorted({DATASET_NAMES.get(s["dataset"], s["dataset"]) for s in rows})
    fig.suptitle(f"DDPM with T steps, same training budget ({', '.join(sources)})")
    fig.tight_layout()
    path = Path(out) / "ddpm_timesteps.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- Problem 3 (SimSiam)

# The ablations each question compares; the baseline (stop-gradient, trainable predictor) first.
SIMSIAM_QUESTIONS = {
    "q4": ("Q4: with and without stop-gradient", ("baseline", "no-stop-grad")),
    "q5a": ("Q5(a): with and without the predictor h", ("baseline", "no-predictor")),
    "q5b": ("Q5(b): projector output d = 4096, batch 4096", ("baseline", "proj-4096", "batch-4096")),
}


def _simsiam_label(run_dir: str | Path) -> str:
    """The run's ablation, with its backbone when not the default resnet18 (simsiam.DEFAULT_BACKBONE)."""
    config = read_json(run_dir, "config.json")
    backbone = "" if config["backbone"] == "resnet18" else f" ({config['backbone']})"
    return f"{config['ablation']}{backbone}"


def _knn_settings(run_dir: str | Path) -> str:
    """'k = .., T = ..' of the run's kNN monitor (k clipped to the memory bank's size, as the run does)."""
    config, provenance = read_json(run_dir, "config.json"), read_json(run_dir, "provenance.json")
    return f"k = {min(config['knn_k'], provenance['n_train'])}, T = {config['knn_temperature']}"


def _monitored(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl records of the epochs where the kNN and collapse monitors ran."""
    return monitored_epochs(read_metrics(run_dir))


def _save_in(fig: plt.Figure, folder: str | Path, name: str) -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _simsiam_panels(axes: np.ndarray, runs: list[tuple[str, list[dict]]], knn_settings: str) -> None:
    """Training loss, kNN accuracy and collapse std against epochs, one line per (label, metrics) run;
    the collapse panel with each output width's reference 1/sqrt(d), dashed."""
    loss, knn, collapse = axes
    references = {}
    for (label, metrics), color in zip(runs, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        monitored = monitored_epochs(metrics)
        loss.plot([m["epoch"] for m in metrics], [m["loss"] for m in metrics], color=color, label=label)
        knn.plot([m["epoch"] for m in monitored], [100 * m["knn_accuracy"] for m in monitored], color=color,
                 label=label)
        collapse.plot([m["epoch"] for m in monitored], [m["collapse_std"] for m in monitored], color=color,
                      label=label)
        if monitored:
            references.setdefault(monitored[-1]["collapse_std_reference"], color)
    for reference, color in references.items():
        collapse.axhline(reference, color=color, ls="--", lw=1,
                         label=f"1/sqrt(d), d = {round(reference ** -2)}")
    loss.set(xlabel="epoch", ylabel="loss, -cos (min -1)", title="training loss")
    knn.set(xlabel="epoch", ylabel="accuracy (%)", title=f"kNN accuracy ({knn_settings})")
    collapse.set(xlabel="epoch", ylabel="std of z / ||z||", ylim=(0, None),
                 title="collapse: per-channel std over the test set")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)


def simsiam_training(run_dir: str | Path) -> Path:
    """One run: training loss, kNN accuracy and the collapse indicator against epochs."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    _simsiam_panels(axes, [(_simsiam_label(run_dir), read_metrics(run_dir))], _knn_settings(run_dir))
    fig.suptitle(f"SimSiam {_simsiam_label(run_dir)} ({dataset_name(run_dir)})")
    fig.tight_layout()
    return _save(fig, run_dir, "training.png")


def simsiam_figures(run_dir: str | Path) -> list[Path]:
    """Every per-run figure of Problem 3: wall-clock, and training loss / kNN accuracy / collapse."""
    return [wall_clock(run_dir, f"SimSiam {_simsiam_label(run_dir)}"), simsiam_training(run_dir)]


def simsiam_comparison(run_dirs: list[str | Path], out: str | Path, question: str) -> Path:
    """Q4, Q5(a) or Q5(b) (`question` a key of SIMSIAM_QUESTIONS): loss, kNN accuracy and collapse
    against epochs, the question's ablations beside the baseline, from the run folders given
    (the ones of other ablations are ignored; missing ones are named in the figure). -> out/simsiam_<q>.png
    """
    if question not in SIMSIAM_QUESTIONS:
        raise ValueError(f"question must be one of {list(SIMSIAM_QUESTIONS)}, got {question!r}")
    title, wanted = SIMSIAM_QUESTIONS[question]
    ablation = {d: read_json(d, "config.json")["ablation"] for d in run_dirs if read_metrics(d)}
    found = sorted((d for d, a in ablation.items() if a in wanted), key=lambda d: wanted.index(ablation[d]))
    missing = [a for a in wanted if a not in ablation.values()]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    settings = sorted({_knn_settings(d) for d in found})
    _simsiam_panels(axes, [(_simsiam_label(d), read_metrics(d)) for d in found], "; ".join(settings))
    sources = sorted({dataset_name(d) for d in found}) or ["no runs"]
    fig.suptitle(f"SimSiam {title} ({', '.join(sources)})")
    if missing:
        fig.text(0.5, -0.02, "not shown, no finished epoch found: " + ", ".join(
            f"{a} (python -m experiments simsiam --ablation {a})" for a in missing), ha="center", color="tab:red")
    fig.tight_layout()
    return _save_in(fig, out, f"simsiam_{question}.png")


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
        summary_path = Path(d) / "summary.json"
        probe = read_json(d, "summary.json").get("linear_probe_accuracy") if summary_path.exists() else None
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
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.35 * max(1, len(rows))))
    ax.axis("off")
    if cells:
        table = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        table.auto_set_column_width(list(range(len(header))))
        table.scale(1, 1.4)
    else:
        ax.text(0.5, 0.5, "no run folder with a monitored epoch", ha="center", va="center")
    sources = sorted({r["dataset"] for r in rows}) or ["no runs"]
    ax.set_title(f"SimSiam ablations, kNN accuracy on the test set ({', '.join(sources)})\n"
                 "collapse std x sqrt(d): about 1 for outputs spread over the sphere, 0 at collapse")
    return _save_in(fig, out, "simsiam_table.png"), rows, markdown


def simsiam_comparisons(run_dirs: list[str | Path], out: str | Path) -> list[Path]:
    """Every cross-run figure of Problem 3: Q4, Q5(a), Q5(b) and the table, into folder `out`."""
    return [*(simsiam_comparison(run_dirs, out, q) for q in SIMSIAM_QUESTIONS), simsiam_table(run_dirs, out)[0]]


def show(paths: list[Path]) -> None:
    """Display PNGs inline in a notebook."""
    from IPython.display import Image, Markdown, display

    for path in paths:
        display(Markdown(f"**{Path(path).name}**"), Image(filename=str(path)))
