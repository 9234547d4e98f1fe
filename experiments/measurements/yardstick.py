"""One yardstick for four generative families: a flow, the VAE, the DDPM and a GAN, on their final samples.

Each run's final evaluation calls `measure`, which gives the fields of summaries.YardstickFields:
- classifier-FID (experiments.measurements.classifier.classifier_fid's distance) between the final samples and as many
test
  images, in the run's digit classifier's penultimate features;
- precision and recall of Kynkaanniemi et al. (2019), "Improved Precision and Recall Metric for Assessing
  Generative Models", NeurIPS, with k = 3 in the same features: each set's manifold is the union of balls
  around its points reaching the k-th nearest neighbour within the set; precision is the share of samples in
  the data's manifold, recall the share of data points in the samples' manifold;
- the sampling time of 64 images, the parameters, and the training FLOPs per image (matmuls and convolutions,
  counted by torch.utils.flop_counter on the meta device, as benchmarks/cost.py counts them).
The rest of the yardstick is read from what each summary already holds: the sharpness ratio and clear-digit
share (experiments.measurements.observe, `observations`), Part III's JSD estimate
(experiments.measurements.discriminator,
`discriminator`), and bits/dim where the family defines one; report/families.py reads the four summaries into
one table (the GAN's bits/dim cell says it has none, never a blank). The chapter's two figures are drawn here
from the run folders alone: `sample_grids` and `fid_against_bits`.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from experiments.harness import devices, files
from experiments.harness.data import to_float
from experiments.measurements.classifier import DigitClassifier, frechet_distance
from experiments.measurements.monitors import extract_features
from experiments.presentation import names

K = 3                           # neighbours of Kynkaanniemi et al.'s manifold estimate (their default)


# --------------------------------------------------------------------------- precision and recall

def knn_radii(features: torch.Tensor, k: int = K) -> torch.Tensor:
    """(N, D) -> (N,): each point's distance to its k-th nearest neighbour among the others (itself excluded)."""
    if len(features) <= k:
        raise ValueError(f"need more than k = {k} points to estimate a manifold, got {len(features)}")
    d = torch.cdist(features, features)                    # (N, N), zeros on the diagonal
    return d.kthvalue(k + 1, dim=1).values                 # the 0 to itself is the first


def coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `points` (M, D) inside at least one ball (centres (N, D), radii (N,))."""
    inside = torch.cdist(points, centres) <= radii[None, :]   # (M, N)
    return inside.any(1).double().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = K) -> tuple[float, float]:
    """Kynkaanniemi et al. (2019): (precision, recall) of features fake (M, D) against real (N, D), float64."""
    for name, f in (("real", real), ("fake", fake)):
        if not f.is_floating_point() or f.dim() != 2:
            raise ValueError(f"{name} must be floating-point features (N, D), got {f.dtype} {tuple(f.shape)}")
    real, fake = real.detach().to("cpu", torch.float64), fake.detach().to("cpu", torch.float64)
    return coverage(fake, real, knn_radii(real, k)), coverage(real, fake, knn_radii(fake, k))


# --------------------------------------------------------------------------- cost

def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add, matmuls and convolutions only) that FlopCounterMode sees fn() run."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _training_step(family: str, cfg, x: torch.Tensor) -> Callable[[], None]:
    """One training step's forward and backward (no optimiser) of `family` on images x (B, 3, 32, 32), on x's
    device; the GAN's step is one discriminator and one generator update, as it trains."""
    module = importlib.import_module(f"experiments.problems.{family}")   # here: the drivers import this module
    with torch.device(x.device):
        model = module.build_model(cfg)
    if family == "vae":
        def step():
            _, nll, kl = model(x)
            (nll + kl).mean().backward()
    elif family == "ddpm":
        def step():
            t = torch.randint(0, cfg.timesteps, (len(x),), device=x.device)
            F.smooth_l1_loss(model(x, t), torch.randn_like(x)).backward()
    elif family == "flow":
        def step():
            module.training_loss(model, torch.randint(0, 256, x.shape, device=x.device, dtype=torch.uint8)).backward()
    elif family == "gan":
        def step():
            module.discriminator_step_loss(model, x).backward()
            module.generator_step_loss(model, len(x)).backward()
    else:
        raise ValueError(f"family must be one of {names.FAMILIES}, got {family!r}")
    return step


def training_flops_per_image(family: str, cfg, batch: int = 4) -> float:
    """FLOPs of one training step per image of `family` with config `cfg` (meta device: nothing is computed).
    Gradients on even when called under torch.no_grad() (a run's final evaluation)."""
    with torch.enable_grad():
        return count_flops(_training_step(family, cfg, torch.randn(batch, 3, 32, 32, device="meta"))) / batch


def parameters(models: Sequence[torch.nn.Module]) -> int:
    """Parameters of the models (an EMA copy counts: it is frozen, not smaller)."""
    return sum(p.numel() for m in models for p in m.parameters())


# --------------------------------------------------------------------------- the measurement

def measure(samples_uint8: torch.Tensor, reference_uint8: torch.Tensor, digits: DigitClassifier, *,
            sample64: Callable[[], object], models: Sequence[torch.nn.Module], flops_per_image: float,
            device: torch.device | str, k: int = K, warmup: bool = True) -> dict:
    """The fields of summaries.YardstickFields for a run: its final samples (uint8 (N, 3, 32, 32)) against as many
    reference test images, in `digits`' features; sample64() draws 64 images, timed (after one untimed draw
    when `warmup`: a sampler that has not run yet pays for allocation and kernel selection); `models`: what is
    trained (their parameters are counted)."""
    n = min(len(samples_uint8), len(reference_uint8))
    real = extract_features(digits.body, reference_uint8[:n], 512, device, to_float)
    fake = extract_features(digits.body, samples_uint8[:n], 512, device, to_float)
    precision, recall = precision_recall(real, fake, k)
    if warmup:
        sample64()
    t0 = devices.clock(torch.device(device))
    sample64()
    seconds = devices.clock(torch.device(device)) - t0
    return {"fid": frechet_distance(fake, real), "precision": precision, "recall": recall, "yardstick_k": k,
            "yardstick_size": n, "sample_seconds_64": seconds, "parameters": parameters(models),
            "train_flops_per_image": flops_per_image}


# --------------------------------------------------------------------------- the chapter's figures

def sample_grids(run_dirs: dict[str, Path | None], out: str | Path) -> Path:
    """The final samples of each family side by side (names.FAMILIES order), one panel each, all the same size
    and the same number of images (the largest square all present runs have, at most 8 x 8); the family named
    under its panel, nothing written inside the images. A family without a run gets an empty panel."""
    from experiments.presentation import figures  # matplotlib: only when drawing

    images = {f: files.load_artifact(d, "final_samples.pt") for f, d in run_dirs.items() if d is not None}
    if not images:
        raise FileNotFoundError("no run folder with final samples to draw")
    side = min(8, math.isqrt(min(len(x) for x in images.values())))

    @figures.READABLE
    def draw() -> Path:
        fig, axes = figures.plt.subplots(1, len(names.FAMILIES), figsize=(figures.WIDTH, figures.WIDTH / 4 + 0.4))
        for ax, family in zip(axes, names.FAMILIES):
            ax.set_xticks([])
            ax.set_yticks([])
            if family in images:
                ax.imshow(figures.grid(images[family][:side * side], nrow=side))
            else:
                ax.imshow(np.full((side * 33 + 1, side * 33 + 1, 3), 255, dtype=np.uint8))
            ax.set_xlabel(names.FAMILY_TITLES[family] + ("" if family in images else " (no run)"))
        fig.tight_layout()
        return _save(fig, Path(out) / "grids.png")
    return draw()


def fid_against_bits(points: dict[str, tuple[float | None, float | None]], out: str | Path) -> Path:
    """Classifier-FID against bits/dim, one point per family ({family: (bits/dim or None, FID)}); a family
    without a likelihood (the GAN) is drawn on its own axis line at the right, sharing the FID axis."""
    from experiments.presentation import figures

    @figures.READABLE
    def draw() -> Path:
        fig, (ax, side) = figures.plt.subplots(1, 2, sharey=True, figsize=(4.2, 2.8),
                                               gridspec_kw={"width_ratios": [5, 1], "wspace": 0.05})
        for k, family in enumerate(names.FAMILIES):
            bpd, fid = points.get(family, (None, None))
            if fid is None:
                continue
            target, x = (ax, bpd) if bpd is not None else (side, 0.0)
            target.scatter([x], [fid], color=f"C{k}", zorder=3)
            target.annotate(names.FAMILY_TITLES[family].split(" (")[0], (x, fid), textcoords="offset points",
                            xytext=(4, 4))
        ax.set(xlabel="bits/dim (8-bit scale; lower is better)", ylabel="classifier-FID (lower is better)")
        ax.margins(x=0.25, y=0.2)
        side.set_xticks([0.0], ["none"])
        side.set_xlabel("no likelihood")
        side.set_xlim(-1, 1)
        return _save(fig, Path(out) / "fid-vs-bits.png")
    return draw()


def _save(fig, path: Path) -> Path:
    """Write a figure atomically (files.save_figure), at experiments.presentation.figures' resolution, and close it."""
    from experiments.presentation import figures

    try:
        files.save_figure(fig, path, dpi=110, bbox_inches="tight")
    finally:
        figures.plt.close(fig)
    return path
