"""One yardstick for four generative families: a flow, the VAE, the DDPM and a GAN, on their final samples.

Each run's final evaluation calls `measure`, which gives the fields of summaries.YardstickFields:
- classifier-FID (experiments.classifier.classifier_fid's distance) between the final samples and as many test
  images, in the run's digit classifier's penultimate features;
- precision and recall of Kynkaanniemi et al. (2019), "Improved Precision and Recall Metric for Assessing
  Generative Models", NeurIPS, with k = 3 in the same features: each set's manifold is the union of balls
  around its points reaching the k-th nearest neighbour within the set; precision is the share of samples in
  the data's manifold, recall the share of data points in the samples' manifold;
- the sampling time of 64 images, the parameters, and the training FLOPs per image (matmuls and convolutions,
  counted by torch.utils.flop_counter on the meta device, as benchmarks/cost.py counts them).
The rest of the yardstick is read from what each summary already holds: the sharpness ratio and clear-digit
share (experiments.observe, `observations`), Part III's JSD estimate (experiments.discriminator,
`discriminator`), and bits/dim where the family defines one (`bits_per_dim` below). `table_rows` puts the
four side by side; the GAN's bits/dim is the string NO_LIKELIHOOD, never a blank.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from experiments import runs
from experiments.classifier import DigitClassifier, frechet_distance
from experiments.data import to_float
from experiments.monitors import extract_features

K = 3                           # neighbours of Kynkaanniemi et al.'s manifold estimate (their default)
FAMILIES = ("flow", "vae", "ddpm", "gan")   # the table's order: exact likelihood, two bounds, none
DIVERGENCES = {"flow": "forward KL", "vae": "forward KL (through a bound)", "ddpm": "forward KL (through a bound)",
               "gan": "Jensen-Shannon"}
NO_LIKELIHOOD = "none: no likelihood"


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
    module = importlib.import_module(f"experiments.{family}")   # here: the drivers import this module
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
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return step


def training_flops_per_image(family: str, cfg, batch: int = 4) -> float:
    """FLOPs of one training step per image of `family` with config `cfg` (meta device: nothing is computed).
    Gradients on even when called under torch.no_grad() (a run's final evaluation)."""
    with torch.enable_grad():
        return count_flops(_training_step(family, cfg, torch.randn(batch, 3, 32, 32, device="meta"))) / batch


def parameters(models: Sequence[torch.nn.Module]) -> int:
    return sum(p.numel() for m in models for p in m.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- the measurement

def measure(samples_uint8: torch.Tensor, reference_uint8: torch.Tensor, digits: DigitClassifier, *,
            sample64: Callable[[], object], models: Sequence[torch.nn.Module], flops_per_image: float,
            device: torch.device | str, k: int = K) -> dict:
    """The fields of summaries.YardstickFields for a run: its final samples (uint8 (N, 3, 32, 32)) against as many
    reference test images, in `digits`' features; sample64() draws 64 images once (timed, after one untimed
    draw that warms the caches); `models`: what is trained (their parameters are counted)."""
    n = min(len(samples_uint8), len(reference_uint8))
    real = extract_features(digits.body, reference_uint8[:n], 512, device, to_float)
    fake = extract_features(digits.body, samples_uint8[:n], 512, device, to_float)
    precision, recall = precision_recall(real, fake, k)
    sample64()
    t0 = runs.clock(torch.device(device))
    sample64()
    seconds = runs.clock(torch.device(device)) - t0
    return {"fid": frechet_distance(fake, real), "precision": precision, "recall": recall, "yardstick_k": k,
            "yardstick_size": n, "sample_seconds_64": seconds, "parameters": parameters(models),
            "train_flops_per_image": flops_per_image}


# --------------------------------------------------------------------------- reading the four summaries

@dataclass
class Row:
    """One family's line of the table, from its summary (None: not measured)."""
    family: str
    bits_per_dim: float | None
    bits_per_dim_method: str          # how it was obtained, or NO_LIKELIHOOD for the GAN
    fid: float | None
    precision: float | None
    recall: float | None
    sharpness_ratio: float | None
    clear_digit_share: float | None
    jsd: float | None
    sample_seconds_64: float | None
    parameters: int | None
    train_flops_per_image: float | None


def bits_per_dim(family: str, summary) -> tuple[float | None, str]:
    """(bits/dim on the 8-bit scale, how it was obtained): the flow's exact value, the VAE's importance-sampled
    estimate, the DDPM's variational bound; the GAN has none (None, NO_LIKELIHOOD)."""
    if family == "gan":
        return None, NO_LIKELIHOOD
    if family == "flow":
        return summary.bits_per_dim, "exact (dequantised)"
    if family == "vae":
        return summary.test_bits_per_dim_8bit, f"importance-sampled, K = {summary.ll_K}"
    if family == "ddpm":
        bound = summary.bound
        return (bound.nll_bound.bits_per_dim if bound else None), "variational bound"
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def row(family: str, summary) -> Row:
    """The table's row for a family's summary (VAESummary, DDPMSummary, FlowSummary or GANSummary)."""
    bpd, method = bits_per_dim(family, summary)
    obs, drs = summary.observations, summary.discriminator
    return Row(family=family, bits_per_dim=bpd, bits_per_dim_method=method, fid=summary.fid,
               precision=summary.precision, recall=summary.recall,
               sharpness_ratio=obs.samples.sharpness_ratio if obs else None,
               clear_digit_share=obs.samples.digits.confident_fraction if obs else None,
               jsd=drs.jsd.estimate if drs else None, sample_seconds_64=summary.sample_seconds_64,
               parameters=summary.parameters, train_flops_per_image=summary.train_flops_per_image)


def table_rows(summaries: dict[str, object]) -> list[Row]:
    """Rows in FAMILIES order for the families present in `summaries` ({family: summary})."""
    return [row(family, summaries[family]) for family in FAMILIES if summaries.get(family) is not None]


def format_bits(r: Row, digits: int = 2) -> str:
    """The bits/dim cell: the value, or what the family lacks (NO_LIKELIHOOD for the GAN, "not measured")."""
    if r.bits_per_dim is not None:
        return f"{r.bits_per_dim:.{digits}f}"
    return NO_LIKELIHOOD if r.bits_per_dim_method == NO_LIKELIHOOD else "not measured"
