"""Question 3 on a model's samples: a trained discriminator's JSD estimate and rejection sampling.

p1 is the real data (label 1), p0 a generative model's samples (label 0), D = sigmoid(h) with a
logit h. Theory (report/theory/q3.tex):
  3.1  JSD(p0, p1) = log 2 + 1/2 E_p1[log D*(x)] + 1/2 E_p0[log(1 - D*(x))], D* = f1 / (f0 + f1);
       with a trained D != D* the population value is log 2 + V(D)/2 <= JSD: a lower bound.
  3.2  f1 = f0 D* / (1 - D*) = f0 e^{h*}: the logit estimates the log density ratio, so e^h is an
       importance weight from p0 to p1. Discriminator rejection sampling (Azadi et al., 2019,
       "Discriminator Rejection Sampling", ICLR) accepts model samples in proportion to it.
The discriminator is the digit classifier's network (experiments.measurements.classifier) with one logit.
A VAE or DDPM run calls `for_run` in its final evaluation (report Part III): `measure` trains D on half of
the samples and as many test images, estimates on the other half, and judges DRS against a random subset
of the accepted size, by the classifier FID and by the JSD estimate of fresh discriminators.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from experiments.harness import rng
from experiments.harness.data import to_float
from experiments.measurements import classifier
from experiments.measurements.classifier import DigitClassifier, frechet_distance
from experiments.measurements.monitors import extract_features
from experiments.presentation.summaries import DiscriminatorResult, Interval

# --------------------------------------------------------------------------- the estimator (3.1)

def jsd_terms(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample terms of 3.1's estimator, float64 on the CPU: log D(x) on p1 (N1,), log(1 - D(x)) on p0 (N0,).

    log D = log sigmoid(h) and log(1 - D) = log sigmoid(-h), both finite for any finite h.
    """
    for name, h in (("logits_real", logits_real), ("logits_fake", logits_fake)):
        if h.dim() != 1 or len(h) == 0 or not h.is_floating_point():
            raise ValueError(f"{name} must be a non-empty floating-point (N,) tensor, got {h.dtype} {tuple(h.shape)}")
    h1, h0 = logits_real.detach().to("cpu", torch.float64), logits_fake.detach().to("cpu", torch.float64)
    return F.logsigmoid(h1), F.logsigmoid(-h0)


def jsd_estimate(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> float:
    """3.1's estimator on held-out logits: log 2 + 1/2 mean_{x~p1} log D(x) + 1/2 mean_{x~p0} log(1 - D(x)).

    logits_real: (N1,) logits h of real images (p1); logits_fake: (N0,) of model samples (p0).
    Equal to log 2 minus D's balanced binary cross-entropy. Nothing is clipped: JSD(p0, p1) lies in [0, log 2],
    and the estimate never exceeds log 2 but falls below 0 when D does worse on held-out images than the
    constant D = 1/2 (an overfitted D); a negative estimate is reported as it is. For D != D* its expectation
    is a lower bound on JSD(p0, p1) (3.1); h = 0 everywhere gives exactly 0.
    """
    log_D, log_1mD = jsd_terms(logits_real, logits_fake)
    return math.log(2) + 0.5 * log_D.mean().item() + 0.5 * log_1mD.mean().item()


def jsd_bootstrap(
    logits_real: torch.Tensor,
    logits_fake: torch.Tensor,
    n_boot: int,
    generator: torch.Generator,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(estimate, low, high): `jsd_estimate` and its percentile bootstrap interval at `level`.

    Each of the n_boot replicates resamples the real and the fake logits, each set with
    replacement and at its own size; (low, high) are the (1 -+ level)/2 quantiles of the
    replicates. The discriminator is held fixed: the interval covers the sampling noise of the
    held-out averages, not the variation of training. Indices are drawn on the CPU from `generator`.
    """
    if n_boot < 2 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 2 and 0 < level < 1, got {n_boot} and {level}")
    log_D, log_1mD = jsd_terms(logits_real, logits_fake)  # (N1,), (N0,)
    replicates = torch.empty(n_boot, dtype=torch.float64)
    for b in range(n_boot):
        i1 = torch.randint(len(log_D), (len(log_D),), generator=generator)
        i0 = torch.randint(len(log_1mD), (len(log_1mD),), generator=generator)
        replicates[b] = math.log(2) + 0.5 * log_D[i1].mean() + 0.5 * log_1mD[i0].mean()
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(replicates, q).tolist()
    return jsd_estimate(logits_real, logits_fake), low, high


def jsd_interval(logits_real: torch.Tensor, logits_fake: torch.Tensor, *, n_boot: int, generator: torch.Generator,
                 level: float = 0.95) -> Interval:
    """`jsd_bootstrap` as a summaries.Interval."""
    estimate, low, high = jsd_bootstrap(logits_real, logits_fake, n_boot, generator, level)
    return Interval(estimate=estimate, low=low, high=high, level=level)


# --------------------------------------------------------------------------- the discriminator

class Discriminator(DigitClassifier):
    """`DigitClassifier`'s body with one logit h(x) = log(D(x) / (1 - D(x))) in place of ten classes."""

    def __init__(self, *, feature_dim: int = 64):
        super().__init__(feature_dim=feature_dim)
        self.head = nn.Linear(feature_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) in [-1, 1] -> (B, 1) logits h."""
        return self.head(self.body(x))


def train_discriminator(real_uint8: torch.Tensor, fake_uint8: torch.Tensor, *, epochs: int = 5, batch_size: int = 128,
                        lr: float = 3e-3, device: torch.device | str = "cpu", seed: int = 0) -> Discriminator:
    """Train a `Discriminator` to tell real images (label 1, p1) from model samples (label 0, p0).

    real_uint8 (N1, 3, 32, 32), fake_uint8 (N0, 3, 32, 32): the training split; keep a held-out
    split for the estimates. Each step draws batch_size/2 images from each set, uniformly with
    replacement (balanced batches: the prior is 1/2, as in 3.1); an epoch is ceil(max(N1, N0) /
    (batch_size/2)) steps. BCE with logits on a balanced batch is -1/2 (mean log D + mean log(1 - D)),
    the negative of 3.1's objective up to log 2. Adam with a one-cycle schedule (peak `lr`), as the
    digit classifier. Deterministic in `seed`; the global RNG is left as it was. Returns the model
    in eval mode on `device`.
    """
    for name, x in (("real_uint8", real_uint8), ("fake_uint8", fake_uint8)):
        if x.dtype != torch.uint8 or x.shape[1:] != (3, 32, 32) or len(x) == 0:
            raise TypeError(f"{name} must be non-empty uint8 (N, 3, 32, 32), got {x.dtype} {tuple(x.shape)}")
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 2, lr > 0; got {epochs}, {batch_size}, {lr}")
    device = torch.device(device)
    model = classifier.seeded(Discriminator, seed, device)
    generator = torch.Generator().manual_seed(seed)
    real, fake = real_uint8.to(device), fake_uint8.to(device)
    half = batch_size // 2
    steps = epochs * -(-max(len(real), len(fake)) // half)
    labels = torch.cat([torch.ones(half, 1), torch.zeros(half, 1)]).to(device)  # (2 half, 1): real first
    optimizer, schedule = classifier.adam_one_cycle(model, lr, steps)
    for _ in range(steps):
        i1 = torch.randint(len(real), (half,), generator=generator).to(device)
        i0 = torch.randint(len(fake), (half,), generator=generator).to(device)
        x = to_float(torch.cat([real[i1], fake[i0]]))  # (2 half, 3, 32, 32) in [-1, 1]
        classifier.step(F.binary_cross_entropy_with_logits(model(x), labels), optimizer, schedule)
    return model.eval()


def discriminator_logits(
    model: Discriminator, images_uint8: torch.Tensor, batch_size: int = 512, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Logits h (N,) float32 on `device` of uint8 images (N, 3, 32, 32), in eval mode."""
    return extract_features(model, images_uint8, batch_size, device, to_float)[:, 0]


# --------------------------------------------------------------------------- rejection sampling (3.2)

DRS_EPSILON = 1e-6          # Azadi et al.'s epsilon: keeps F finite for the sample with the largest logit
GAMMA_QUANTILE = None       # the default: no gamma shift, the exact rule when D = D* (Azadi et al. used 0.95)


def acceptance(logits_fake: torch.Tensor, gamma_quantile: float | None = GAMMA_QUANTILE) -> torch.Tensor:
    """DRS's acceptance probabilities (N,) float64 on the CPU for samples with logits h (N,).

    Without a shift (gamma_quantile None): w_i / max_j w_j = exp(h_i - max_j h_j), 3.2's weight w = e^h over its
    largest, so the accepted samples follow p1 exactly when h = h* and the maximum bounds w on p0's support.
    With one (Azadi et al., 2019, "Discriminator Rejection Sampling", ICLR, Algorithm 1): with d_i = h_i - max_j h_j,
        F_i = d_i - log(1 - exp(d_i - epsilon)) - gamma,   p_i = sigmoid(F_i),
    which is exp(d_i) for gamma = 0 (and epsilon -> 0), and gamma = the gamma_quantile quantile of F over these
    samples (Azadi et al.: the 95th percentile): a fraction 1 - gamma_quantile of them is accepted with probability
    above 1/2. That raises the acceptance of a set whose weights are dominated by a few samples (gamma < 0) and
    lowers it where many samples come near the largest weight (gamma > 0), at the price of exactness: the
    accepted samples no longer follow p1 even with D = D*.
    """
    h = logits_fake.detach().to("cpu", torch.float64)
    d = h - h.max()                                             # log(w_i / max_j w_j) <= 0
    if gamma_quantile is None:
        return d.exp()
    if not 0 < gamma_quantile < 1:
        raise ValueError(f"gamma_quantile must be in (0, 1) or None (no shift), got {gamma_quantile}")
    F = d - torch.log(-torch.expm1(d - DRS_EPSILON))            # log(1 - e^{d - eps}), stable for d <= 0
    return torch.sigmoid(F - torch.quantile(F, gamma_quantile))


def rejection_sample(fake_uint8: torch.Tensor, logits_fake: torch.Tensor, generator: torch.Generator,
                     gamma_quantile: float | None = GAMMA_QUANTILE) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Discriminator rejection sampling: (accepted images (M, ...), accepted fraction M / N, mask (N,) bool).

    Sample i of fake_uint8 (N, ...) is accepted with probability `acceptance(logits_fake, gamma_quantile)`_i;
    without the gamma shift the sample with the largest logit is always accepted (M >= 1). The maximum is taken
    over the given set, not over a separate burn-in set as Azadi et al. do.
    Uniforms are drawn on the CPU from `generator`; the result stays on fake_uint8's device.
    """
    if logits_fake.shape != fake_uint8.shape[:1]:
        raise ValueError(f"logits_fake must have shape ({len(fake_uint8)},), got {tuple(logits_fake.shape)}")
    p = acceptance(logits_fake, gamma_quantile)
    accept = torch.rand(len(p), generator=generator, dtype=torch.float64) < p  # (N,)
    return fake_uint8[accept.to(fake_uint8.device)], accept.double().mean().item(), accept


# --------------------------------------------------------------------------- the measurement

SHOWN = 16  # held-out samples shown at each end of the discriminator's ranking (the figure)
ARTIFACT = "discriminator.pt"  # what `for_run` saves for experiments.presentation.figures.discriminator

def split(images: torch.Tensor, held_out: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (train, held-out) partition of images (N, ...), round(held_out * N) images held out."""
    n_test = round(held_out * len(images))
    if not 2 <= n_test <= len(images) - 2:
        raise ValueError(f"held_out={held_out} of {len(images)} images leaves fewer than 2 on one side")
    order = torch.randperm(len(images), generator=generator).to(images.device)
    return images[order[n_test:]], images[order[:n_test]]


def random_subset(images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n of images (N, ...) drawn uniformly without replacement."""
    return images[torch.randperm(len(images), generator=generator)[:n].to(images.device)]


def frechet_to(digits_classifier: DigitClassifier, reference_uint8: torch.Tensor,
               device: torch.device | str) -> Callable[[torch.Tensor], float | None]:
    """images -> their classifier FID to reference_uint8 (as `classifier_fid`, the reference's features computed
    once); None for fewer than 2 images."""
    reference = extract_features(digits_classifier.body, reference_uint8, 512, device, to_float)

    def fid(images: torch.Tensor) -> float | None:
        if len(images) < 2:
            return None
        return frechet_distance(extract_features(digits_classifier.body, images, 512, device, to_float), reference)
    return fid


def measure(
    real_uint8: torch.Tensor,
    fake_uint8: torch.Tensor,
    digits_classifier: DigitClassifier,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    held_out: float = 0.5,
    epochs: int = 5,
    batch_size: int = 128,
    n_boot: int = 1000,
    level: float = 0.95,
    gamma_quantile: float | None = GAMMA_QUANTILE,
) -> tuple[DiscriminatorResult, dict]:
    """JSD(model, data) through a trained discriminator D, and what discriminator rejection sampling (DRS) changes:
    splits real (p1) and fake (p0) uint8 images (N, 3, 32, 32) into train / held-out halves, trains D on the
    train halves and measures on the held-out ones (the fields of summaries.DiscriminatorResult): 3.1's JSD
    estimate with a bootstrap interval; DRS with D (3.2's weights e^h); the classifier FID of all samples, the
    accepted ones and a random subset of the accepted size (the FID is biased upwards for small sets, so the
    subset is the fair reference); and the JSD of the accepted samples and of that subset, each through a fresh
    discriminator (same recipe and seed) trained on the train halves selected the same way: D itself would be
    optimistic, it chose the accepted images. DRS uses Azadi et al.'s gamma shift at `gamma_quantile` (None: no
    shift, the default; see `acceptance`). Also returns the figure's data (`figure_data`).
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    (real_train, real_test), (fake_train, fake_test) = (split(x, held_out, generator) for x in (real_uint8, fake_uint8))

    def fit(fakes: torch.Tensor) -> Discriminator:
        return train_discriminator(real_train, fakes, epochs=epochs, batch_size=batch_size, device=device, seed=seed)

    logits = functools.partial(discriminator_logits, device=device)
    held_out_jsd = functools.partial(jsd_interval, n_boot=n_boot, generator=generator, level=level)

    def refit_jsd(fakes_train: torch.Tensor, fakes_test: torch.Tensor) -> Interval:
        model = fit(fakes_train)
        return held_out_jsd(logits(model, real_test), logits(model, fakes_test))

    model = fit(fake_train)
    h_real, h_fake = logits(model, real_test), logits(model, fake_test)  # (N1,), (N0,)
    accepted, fraction, mask = rejection_sample(fake_test, h_fake, generator, gamma_quantile)
    accepted_train = rejection_sample(fake_train, logits(model, fake_train), generator, gamma_quantile)[0]
    subset, subset_train = (random_subset(x, len(a), generator) for x, a in ((fake_test, accepted),
                                                                              (fake_train, accepted_train)))
    fid = frechet_to(digits_classifier, real_test, device)
    result = DiscriminatorResult(
        jsd=held_out_jsd(h_real, h_fake), accepted_fraction=fraction, n_accepted=len(accepted),
        fid_samples=fid(fake_test), fid_accepted=fid(accepted), fid_subset=fid(subset),
        jsd_accepted=refit_jsd(accepted_train, accepted), jsd_subset=refit_jsd(subset_train, subset),
        n_real_train=len(real_train), n_fake_train=len(fake_train), n_real_test=len(real_test),
        n_fake_test=len(fake_test), epochs=epochs, seconds=time.perf_counter() - start, gamma_quantile=gamma_quantile)
    return result, figure_data(h_real, h_fake, mask, fake_test)


def figure_data(h_real: torch.Tensor, h_fake: torch.Tensor, accepted: torch.Tensor, fake_uint8: torch.Tensor) -> dict:
    """The figure's data, on the CPU: held-out logits (N1,), (N0,), DRS's mask (N0,), and the SHOWN samples
    of fake_uint8 (N0, 3, 32, 32) that D rates most real (largest h first) and least real (smallest first)."""
    order = h_fake.argsort(descending=True).to(fake_uint8.device)
    return {"logits_real": h_real.cpu(), "logits_fake": h_fake.cpu(), "accepted": accepted.cpu(),
            "most_real": fake_uint8[order[:SHOWN]].cpu(), "least_real": fake_uint8[order.flip(0)[:SHOWN]].cpu()}


def for_run(run_, test, fake_uint8: torch.Tensor, digits_classifier: DigitClassifier, *, epochs: int,
            device: torch.device, seed: int) -> DiscriminatorResult:
    """Question 3 in a VAE or DDPM run's final evaluation: `measure` with p0 the run's samples fake_uint8
    (N, 3, 32, 32) and p1 as many test images (the ImageSet `test`, a subset drawn from the stream
    "discriminator-images" of the run's `seed`); saves the figure's data as the artifact ARTIFACT.
    Trains with gradients on even when called under torch.no_grad() (a run's final evaluation)."""
    real = test.subset(len(fake_uint8), rng.stream_seed(seed, "discriminator-images")).images
    with torch.enable_grad():
        result, data = measure(real, fake_uint8, digits_classifier, device=device, epochs=epochs,
                               seed=rng.stream_seed(seed, "discriminator"))
    run_.save_artifact(ARTIFACT, data)
    return result
