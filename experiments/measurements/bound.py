"""Problem 2.3 measured: the DDPM variational bound of a trained noise model, in bits per dimension.

    -log p_theta(x_0) <= L_0 + sum_{t=2}^T L_{t-1} + L_T                            (Ho et al. 2020, eq. 5)

    L_T     = KL(q(x_T|x_0) || N(0, I))                                  closed form, no network
    L_{t-1} = E_{q(x_t|x_0)} KL(q(x_{t-1}|x_t, x_0) || p_theta(x_{t-1}|x_t))   Gaussian to Gaussian (eq. 6-7, 11)
    L_0     = E_{q(x_1|x_0)} [-log p_theta(x_0|x_1)]                     discretised decoder (eq. 13) or a density

Each expectation over x_t uses one draw per image; the T - 1 middle terms are estimated by stratified
sampling over t. The reverse variance sigma_t^2 is beta~_t ("posterior", as experiments.problems.diffusion
samples) or beta_t ("beta"). Indices are 0-based as in experiments.problems.diffusion: index i is the paper's
t = i + 1. Everything follows x_0's device; randomness comes from an explicit generator.
`measure` is what the DDPM run calls: the bound on test images, an artifact for the per-t figure, the summary's field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from experiments.harness import data, devices, rng, runs
from experiments.presentation import names
from experiments.presentation.summaries import Estimate, VariationalBound
from experiments.problems.diffusion import Diffusion, noise

VARIANCES = ("posterior", "beta")
DECODERS = ("discrete", "gaussian")
LOG_HALF_BINS = math.log(127.5)   # [-1, 1] -> the 8-bit scale [0, 255]: a density changes by 127.5 per dimension


def normal_kl(mean1: torch.Tensor, var1: torch.Tensor, mean2: torch.Tensor, var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, var1 I) || N(mean2, var2 I)) = 1/2 sum [log(var2/var1) + (var1 + (mean1 - mean2)^2)/var2 - 1]
    over all but the batch dimension; (N,). Variances broadcast (scalars here)."""
    kl = 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)
    return kl.expand(mean1.shape).flatten(1).sum(1)


def q_posterior(diffusion: Diffusion, x0: torch.Tensor, xt: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I) at t = i + 1 >= 2 (eq. 6-7, the posterior of 2.1):
        mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t."""
    beta, abar, abar_prev = diffusion.betas[i], diffusion.alphas_cumprod[i], diffusion.alphas_cumprod_prev[i]
    mean = abar_prev.sqrt() * beta / (1 - abar) * x0 + (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar) * xt
    return mean, diffusion.posterior_variance[i]


def p_mean(diffusion: Diffusion, eps_model, xt: torch.Tensor, i: int) -> torch.Tensor:
    """mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(alpha_t) (eq. 11); like x_t."""
    t = torch.full((xt.shape[0],), i, device=xt.device, dtype=torch.long)
    eps = eps_model(xt, t).float()
    return diffusion.sqrt_recip_alphas[i] * (xt - diffusion.betas[i] / diffusion.sqrt_one_minus_alphas_cumprod[i] * eps)


def reverse_variance(diffusion: Diffusion, i: int, variance: str) -> torch.Tensor:
    """sigma_t^2 of p_theta(x_{t-1} | x_t): beta~_t ("posterior") or beta_t ("beta"). At t = 1, beta~_1 = 0,
    so "posterior" takes beta~_2 there, as Ho et al.'s code does (posterior_log_variance_clipped)."""
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if variance == "beta":
        return diffusion.betas[i]
    return diffusion.posterior_variance[max(i, 1)]


def q_sample(diffusion: Diffusion, x0: torch.Tensor, i: int, generator: torch.Generator) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, one draw per image (eq. 4); like x_0."""
    eps = noise(x0.shape, generator).to(x0.device)
    return diffusion.sqrt_alphas_cumprod[i] * x0 + diffusion.sqrt_one_minus_alphas_cumprod[i] * eps


def prior_term(diffusion: Diffusion, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(N(sqrt(abar_T) x_0, (1 - abar_T) I) || N(0, I)); (N,) nats."""
    abar_T = diffusion.alphas_cumprod[-1]
    return normal_kl(abar_T.sqrt() * x0, 1 - abar_T, torch.zeros_like(x0), torch.ones_like(abar_T))


def denoising_term(diffusion: Diffusion, eps_model, x0: torch.Tensor, i: int, generator: torch.Generator,
                   variance: str = "posterior") -> torch.Tensor:
    """L_{t-1} at t = i + 1 >= 2: KL(q(x_{t-1}|x_t, x_0) || N(mu_theta(x_t, t), sigma_t^2 I)), x_t ~ q(x_t|x_0)
    drawn once per image; (N,) nats."""
    if not 1 <= i < diffusion.T:
        raise ValueError(f"the denoising terms have t = i + 1 in [2, {diffusion.T}], "
                         f"i.e. i in [1, {diffusion.T - 1}]; got {i}")
    xt = q_sample(diffusion, x0, i, generator)
    mean, var = q_posterior(diffusion, x0, xt, i)
    return normal_kl(mean, var, p_mean(diffusion, eps_model, xt, i), reverse_variance(diffusion, i, variance))


def _log_prob_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails: from the lower tail log Phi(b) +
    log(1 - Phi(a)/Phi(b)); above zero the same on the mirror image, -b < -a."""
    upper = (a + b) > 0
    lo, hi = torch.where(upper, -b, a), torch.where(upper, -a, b)          # Phi(hi) - Phi(lo), same value
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1(log_lo - log_hi))


def discretised_log_prob(x0: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log P(x_0) per pixel under N(mean, std^2) integrated over x_0's bin (eq. 13), elementwise.

    256 bins over [-1, 1], centres c_k = k / 127.5 - 1, bin [c_k - 1/255, c_k + 1/255], except that the
    first runs from -inf and the last to +inf, so the 256 probabilities sum to 1. x_0 is snapped to its
    bin's centre first (data k/255 normalised to [-1, 1] lands within rounding of one)."""
    k = torch.round((x0 + 1) * 127.5).clamp(0, 255)                       # bin index
    centre = k / 127.5 - 1
    a, b = (centre - 1 / 255 - mean) / std, (centre + 1 / 255 - mean) / std  # standardised edges
    log_p = _log_prob_between(a, b)
    log_p = torch.where(k == 0, torch.special.log_ndtr(b), log_p)         # (-inf, c_0 + 1/255]
    return torch.where(k == 255, torch.special.log_ndtr(-a), log_p)        # [c_255 - 1/255, +inf)


def reconstruction_term(diffusion: Diffusion, eps_model, x0: torch.Tensor, generator: torch.Generator,
                        variance: str = "posterior", decoder: str = "discrete") -> torch.Tensor:
    """L_0 = -log p_theta(x_0 | x_1), x_1 ~ q(x_1|x_0) drawn once per image; (N,) nats.

    "discrete": Ho et al.'s discretised Gaussian, a probability (scale-free: nats on the 8-bit scale);
    "gaussian": the density N(x_0; mu_theta(x_1, 1), sigma_1^2 I) on the [-1, 1] scale."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    mean = p_mean(diffusion, eps_model, q_sample(diffusion, x0, 0, generator), 0)
    var = reverse_variance(diffusion, 0, variance)
    if decoder == "discrete":
        log_p = discretised_log_prob(x0, mean, var.sqrt())
    else:
        log_p = -0.5 * (torch.log(2 * math.pi * var) + (x0 - mean) ** 2 / var)
    return -log_p.flatten(1).sum(1)


def strata(T: int, n_strata: int, draws_per_stratum: int, generator: torch.Generator,
           exact_steps: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified step indices for the middle terms t = 2..T (indices 1..T-1): the first `exact_steps`
    steps each a stratum of its own (there the terms are largest and change fastest), the rest split into
    `n_strata` near-equal contiguous strata; `draws_per_stratum` uniform draws (with replacement) in each.

    Returns (i (H, m) long, size (H,) float), H = exact_steps + n_strata: sum_{t=2}^T f(t) is estimated
    without bias by sum_h size_h * mean_j f(i_hj)."""
    if not (n_strata >= 1 and exact_steps >= 0 and exact_steps + n_strata <= T - 1 and draws_per_stratum >= 1):
        raise ValueError(f"need n_strata >= 1, exact_steps >= 0, n_strata + exact_steps <= T - 1 = {T - 1} "
                         f"and draws_per_stratum >= 1, got {n_strata}, {exact_steps}, {draws_per_stratum}")
    rest = torch.linspace(1 + exact_steps, T, n_strata + 1).round().long()
    edges = torch.cat([torch.arange(1, 1 + exact_steps), rest])          # strata [edges_h, edges_{h+1})
    size = edges[1:] - edges[:-1]                                        # (H,)
    u = torch.rand(len(size), draws_per_stratum, generator=generator, device=generator.device).cpu()
    i = edges[:-1, None] + (u * size[:, None]).long().minimum(size[:, None] - 1)  # (H, m)
    return i, size.float()


@dataclass
class Bound:
    """The bound's terms per image, in nats, and the per-t contributions (see `variational_bound`)."""
    L_0: torch.Tensor        # (N,) reconstruction term
    L_middle: torch.Tensor   # (N,) stratified estimate of sum_{t=2}^T L_{t-1}
    L_T: torch.Tensor        # (N,) prior term
    t: torch.Tensor          # (M,) the paper steps t sampled for the middle terms, ascending
    L_t: torch.Tensor        # (M,) L_{t-1} at each of them, mean over the images (one term, not weighted)
    weight: torch.Tensor     # (M,) the steps each draw stands for: sum_j weight_j L_t_j = L_middle.mean()
    mc_se: float             # Monte Carlo SE of the batch-mean total, given the images
    D: int                   # dimensions per image, C * H * W
    decoder: str
    variance: str

    @property
    def nats(self) -> torch.Tensor:
        """-ELBO per image, L_0 + sum L_{t-1} + L_T; (N,)."""
        return self.L_0 + self.L_middle + self.L_T

    def summary(self) -> dict:
        """Batch means in nats per image and bits/dim on both scales, with their standard errors.

        bits_per_dim: the [-1, 1] density scale (the discretised decoder's probability spread over its bin,
        width 2/255, i.e. nats - D log 127.5). bits_per_dim_8bit: the [0, 256) scale of the literature
        (a density on [-1, 1] gains D log 127.5 nats; the discretised decoder's probability is already on it),
        as test_bits_per_dim(_8bit) in experiments/problems/vae.py. image_se: the SE across images, for the test set."""
        N, per_bit = self.nats.numel(), 1 / (self.D * math.log(2))
        nats = self.nats.mean().item()
        own = nats - self.D * LOG_HALF_BINS if self.decoder == "discrete" else nats
        image_se = (self.nats.std() / math.sqrt(N)).item() if N > 1 else float("nan")
        return {"nats": nats, "nats_mc_se": self.mc_se, "nats_image_se": image_se,
                "L_0": self.L_0.mean().item(), "L_middle": self.L_middle.mean().item(), "L_T": self.L_T.mean().item(),
                "bits_per_dim": own * per_bit, "bits_per_dim_8bit": (own + self.D * LOG_HALF_BINS) * per_bit,
                "bits_per_dim_mc_se": self.mc_se * per_bit, "bits_per_dim_image_se": image_se * per_bit,
                "N": N, "decoder": self.decoder, "variance": self.variance}


@torch.inference_mode()
def variational_bound(diffusion: Diffusion, eps_model, x0: torch.Tensor, *, generator: torch.Generator,
                      n_strata: int = 20, draws_per_stratum: int = 2, exact_steps: int = 10,
                      variance: str = "posterior", decoder: str = "discrete") -> Bound:
    """-ELBO of the images x0 (N, C, H, W) in [-1, 1] under the noise model eps_model(x_t, t) (eq. 5).

    L_T in closed form; L_0 with one x_1 per image; the middle sum with the same stratified steps for
    every image (`strata`: t = 2..exact_steps+1 one by one, the rest in n_strata equal strata) and one
    x_t per image and step. mc_se, given the images: the middle sum's stratified
    variance sum_h size_h^2 Var_j(mean_i L)/m (needs draws_per_stratum >= 2), plus L_0's spread across
    images / N (an upper bound on its Monte Carlo part, which one draw per image cannot separate). The
    terms are skewed within a stratum, so with few draws that SE is itself rough: on Gaussian data with
    exact_steps = 20 and 8 draws per stratum, (estimate - exact) / mc_se had SD 1.1 (tests/test_bound.py)."""
    N = x0.shape[0]
    L_T = prior_term(diffusion, x0)
    L_0 = reconstruction_term(diffusion, eps_model, x0, generator, variance, decoder)
    i, size = strata(diffusion.T, n_strata, draws_per_stratum, generator, exact_steps)  # (H, m), (H,)
    rows = tqdm(i, desc="variational bound", leave=False, unit="stratum")
    L = torch.stack([torch.stack([denoising_term(diffusion, eps_model, x0, int(i_hj), generator, variance)
                                  for i_hj in row]) for row in rows])   # (H, m, N)
    size = size.to(x0.device)
    L_middle = (size[:, None] * L.mean(1)).sum(0)                        # (N,) sum_h size_h mean_j L
    L_bar = L.mean(2)                                                    # (H, m) mean over images
    var_middle = (size ** 2 * L_bar.var(1) / draws_per_stratum).sum() if draws_per_stratum > 1 else float("nan")
    var_0 = L_0.var() / N if N > 1 else 0.0
    t, order = (i.flatten() + 1).sort()                                  # paper steps, ascending
    weight = (size[:, None] / draws_per_stratum).expand_as(L_bar).flatten()  # (H * m,) size_h / m per draw
    return Bound(L_0, L_middle, L_T, t, L_bar.flatten()[order.to(x0.device)].cpu(), weight[order.to(x0.device)].cpu(),
                 float(math.sqrt(var_middle + var_0)), x0[0].numel(), decoder, variance)


def network_evaluations(n_strata: int, draws_per_stratum: int, exact_steps: int) -> int:
    """Noise-model evaluations per image of `variational_bound`: one for L_0, one per drawn middle step."""
    return 1 + (exact_steps + n_strata) * draws_per_stratum


# --------------------------------------------------------------------------- the DDPM run's measurement

def measure(run_: runs.Run, cfg, diffusion: Diffusion, eps_model, test: data.ImageSet,
            device: torch.device) -> VariationalBound:
    """Q2.3 on a trained DDPM (the EMA noise model, eval mode) with the bound_* fields of its DDPMConfig `cfg`:
    `variational_bound` on cfg.bound_size test images (drawn by the stream names.MEASURED_IMAGES, as the VAE's
    gaps), with the discretised decoder and sigma_t^2 = beta~_t (as the run samples); the per-step terms saved
    as artifacts/bound.pt (figures.bound_terms), the batch means returned for the summary."""
    images = test.subset(cfg.bound_size, rng.stream_seed(cfg.seed, names.MEASURED_IMAGES)).images
    x0 = data.to_float(images).to(device)                               # (N, 3, 32, 32) in [-1, 1]
    was_training = eps_model.training
    eps_model.eval()
    start = devices.clock(device)
    bound = variational_bound(diffusion, eps_model, x0, generator=rng.stream(cfg.seed, "bound", device),
                              n_strata=cfg.bound_strata, draws_per_stratum=cfg.bound_draws,
                              exact_steps=cfg.bound_exact_steps)
    seconds = devices.clock(device) - start
    eps_model.train(was_training)
    s = bound.summary()
    run_.save_artifact("bound.pt", {"t": bound.t, "L_t": bound.L_t, "weight": bound.weight})  # (M,) each
    image_se = s["nats_image_se"] if math.isfinite(s["nats_image_se"]) else None
    return VariationalBound(
        n_images=len(x0), dims=bound.D,
        nll_bound=Estimate(nats=s["nats"], mc_se=s["nats_mc_se"], image_se=image_se,
                           bits_per_dim=s["bits_per_dim_8bit"]),
        reconstruction=s["L_0"], denoising=s["L_middle"], prior=s["L_T"], decoder=bound.decoder,
        variance=bound.variance, exact_steps=cfg.bound_exact_steps, strata=cfg.bound_strata,
        draws_per_stratum=cfg.bound_draws, seconds=seconds,
        network_evaluations=network_evaluations(cfg.bound_strata, cfg.bound_draws, cfg.bound_exact_steps))
