"""Problem 1.3-1.4 measured: the amortisation and approximation gaps of a trained VAE.

For a test image x the encoder's q_phi(z|x), the best Gaussian q*_x found for x alone, and the
importance-sampled log-likelihood are ordered as

    ELBO[q_phi(z|x)]  <=  ELBO[q*_x]  <=  log p(x)  ~=  log p_K(x; q*_x)   (importance sampling, K draws)
     amortised          per-point                      log-likelihood

    amortisation gap  = ELBO[q*_x] - ELBO[q_phi(z|x)]   >= 0 (Q1.3): the encoder's cost of sharing phi
    approximation gap = log p(x) - ELBO[q*_x]           = KL(q*_x || p(z|x)): the diagonal family's cost

(Cremer, Li & Duvenaud, "Inference Suboptimality in Variational Autoencoders", ICML 2018). q*_x is
found by Adam on x's own (mu, logvar), started from the encoder. Every ELBO is estimated with a fixed
noise eps, eps ~ N(0, I) of shape (S, N, z_dim) (common random numbers): the estimate is then a
deterministic function of (mu, logvar), and two q's compared on the same eps differ by little noise.
The decoder is the graded one, p(x|z) = N(mu_theta(z), I), so log p(x|z) = -decode(z).nll(x).
log p(x) is importance-sampled with q*_x as the proposal (`importance_log_likelihood`), not with the encoder's
q_phi as the graded VAE.log_likelihood does (Burda et al. 2016, K = 100): E log p_K(x; q) falls below log p(x) by a
slack that grows with KL(q || p(z|x)), so with q_phi it grows with the amortisation gap and would take the
approximation gap down with it (in tests/test_amortisation.py's linear-Gaussian model, 2 latent dimensions, whose
approximation gap is 0, K = 100 draws from the prior as q_phi fell short by 0.02, 1.9 and 9.7 nats on average over
200 simulated points at amortisation gaps of 3.5, 132 and 538 nats; from the exact posterior, by under 1e-6).
The graded estimate is measured beside it, as a reference.
`measure` is what the VAE run calls: `gaps` on test images, an artifact for the histogram, the summary's field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from experiments.harness import data, devices, rng, runs
from experiments.measurements.decoder_variance import bits_per_dim_8bit
from experiments.presentation import names
from experiments.presentation.summaries import AmortisationGaps, Estimate
from experiments.problems.diffusion import noise
from vae_solution import DiagonalGaussianDistribution

LL_REPEATS = 2   # independent runs of the graded K-sample log-likelihood per image: its Monte Carlo SE needs two
NEGATIVE_BELOW = 2   # an image's amortisation gap counts as negative below -NEGATIVE_BELOW of its own Monte Carlo SE
ESTIMATES = ("amortised_elbo", "per_point_elbo", "log_likelihood", "graded_log_likelihood", "amortisation_gap",
             "approximation_gap")   # the quantities of `gaps`, each with its _mc_se and _image_se
LL_PROPOSAL = "per-point"   # AmortisationGaps.ll_proposal: log p(x) importance-sampled from q*_x


def _check_eval(model) -> None:
    if getattr(model, "training", False):
        raise ValueError("the encoder's batch norm must use its running statistics: call model.eval() first")


def elbo_samples(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per-draw ELBO, log p(x | z_s) - KL(q || N(0, I)) with z_s = mu + sigma * eps_s; (S, N).

    x: (N, C, H, W); mu, logvar: (N, z_dim); eps: (S, N, z_dim). The KL is in closed form (the graded
    `kl`), so only the reconstruction term varies from draw to draw."""
    q = DiagonalGaussianDistribution(mu, logvar)
    S, N = eps.shape[:2]
    z = q.mean + q.std * eps                                        # (S, N, z_dim), reparameterised
    decoded = model.decode(z.flatten(0, 1))                         # p(x | z) for (S*N, C, H, W)
    x_rep = x.expand(S, *x.shape).flatten(0, 1)                     # (S*N, C, H, W), draw-major
    log_px_z = -decoded.nll(x_rep, dims=tuple(range(1, x.dim())))   # log N(x; mu_theta(z), I), (S*N,)
    return log_px_z.view(S, N) - q.kl()                             # (S, N)


def elbo(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """ELBO = E_q[log p(x|z)] - KL(q || N(0, I)) of q = N(mu, diag exp(logvar)), averaged over the S draws
    eps (S, N, z_dim); (N,). Differentiable in mu and logvar."""
    return elbo_samples(model, x, mu, logvar, eps).mean(0)


@dataclass
class PerPoint:
    """Result of `optimise_per_point`; every ELBO is under the same fixed evaluation noise."""
    amortised_elbo: torch.Tensor   # (N,) ELBO of the encoder's q_phi(z|x)
    per_point_elbo: torch.Tensor   # (N,) ELBO of each image's best q, >= amortised_elbo image by image
    mu: torch.Tensor               # (N, z_dim) that best q's mean ...
    logvar: torch.Tensor           # (N, z_dim) ... and log-variance
    steps: int                     # Adam steps taken
    seconds: float                 # wall time, encoder pass included
    converged: bool = False        # stopped by the tolerance rule, not by the step limit


def optimise_per_point(model, x: torch.Tensor, *, generator: torch.Generator, steps: int = 2000, lr: float = 1e-2,
                       S: int = 8, eval_S: int = 32, eval_every: int = 50, tol: float = 0.01,
                       patience: int = 4) -> PerPoint:
    """Per-image variational inference (the "traditional" approach of Q1.3) started at the encoder.

    Adam ascends sum_i ELBO_S(x_i; mu_i, logvar_i), each step on fresh noise (S, N, z_dim): image i's
    gradient involves only (mu_i, logvar_i) and Adam is elementwise, so the N problems are solved
    independently in one batch. Every `eval_every` steps each image's ELBO is evaluated on one fixed
    noise eps_eval (eval_S, N, z_dim) and its best (mu_i, logvar_i) so far is kept, the encoder's
    included: per_point_elbo >= amortised_elbo under eps_eval, for every image.
    Stopping rule: after `steps` steps, or as soon as the batch mean of the best ELBOs has risen by
    less than `tol` nats over the last `patience` evaluations. The model's weights get no gradient.
    """
    _check_eval(model)
    start = devices.clock(x.device)
    with torch.no_grad():
        q = model.encode(x)
    mu = q.mean.detach().clone().requires_grad_()                    # (N, z_dim)
    logvar = q.logvar.detach().clone().requires_grad_()
    eps_eval = noise((eval_S, *mu.shape), generator).to(x.device)      # (eval_S, N, z_dim), fixed
    with torch.no_grad():
        amortised = elbo(model, x, mu, logvar, eps_eval)
    best, best_mu, best_logvar = amortised.clone(), mu.detach().clone(), logvar.detach().clone()
    history = [best.mean().item()]
    optimiser = torch.optim.Adam([mu, logvar], lr=lr)
    step, converged, bar = 0, False, tqdm(total=steps, desc="per-point ELBO", leave=False, unit="step")
    while step < steps:
        eps = noise((S, *mu.shape), generator).to(x.device)            # fresh noise each step
        loss = -elbo(model, x, mu, logvar, eps).sum()
        mu.grad, logvar.grad = torch.autograd.grad(loss, [mu, logvar])
        optimiser.step()
        step += 1
        bar.update()
        if step % eval_every and step < steps:
            continue
        with torch.no_grad():
            current = elbo(model, x, mu, logvar, eps_eval)
            better = current > best                                  # (N,) per image
            best = torch.where(better, current, best)
            best_mu[better], best_logvar[better] = mu[better], logvar[better]
        history.append(best.mean().item())
        converged = len(history) > patience and history[-1] - history[-1 - patience] < tol
        if converged:
            break
    bar.close()
    return PerPoint(amortised, best, best_mu, best_logvar, step, devices.clock(x.device) - start, converged)


def log_likelihood(model, x: torch.Tensor, K: int, generator: torch.Generator) -> torch.Tensor:
    """`model.log_likelihood(x, K)`, (N,): its draws come from the global RNG, so it runs in a fork of
    that RNG seeded from `generator`, reproducible and leaving the caller's RNG state as it was."""
    seed = int(torch.randint(2 ** 62, (1,), generator=generator, device=generator.device).item())
    cuda = x.device.type == "cuda"
    with torch.random.fork_rng(devices=[x.device] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(x.device):
                torch.cuda.manual_seed(seed)
        return model.log_likelihood(x, K=K)


@torch.no_grad()
def importance_log_likelihood(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, K: int,
                              generator: torch.Generator, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x) ~= log (1/K) sum_k w_k, w_k = p(x|z_k) p(z_k) / q(z_k), z_k ~ q = N(mu, diag exp(logvar)); (N,),
    and its Monte Carlo standard error (N,), both float64.

    x: (N, C, H, W); mu, logvar: (N, z_dim), the proposal (here the per-point optimum q*_x). The standard error is
    the delta method's, sd(w) / (sqrt(K) mean(w)) (the relative error of the mean weight), computed from the same
    draws in log space; the estimate's own bias, E log p_K - log p(x) ~= -SE^2 / 2, is below it once SE < 2.
    The K draws come `chunk` at a time from `generator`."""
    q = DiagonalGaussianDistribution(mu, logvar)
    prior = DiagonalGaussianDistribution(torch.zeros_like(mu))
    log_w = []
    for k in range(0, K, chunk):
        eps = noise((min(chunk, K - k), *mu.shape), generator).to(x.device)    # (S, N, z_dim)
        z = q.mean + q.std * eps
        S = eps.shape[0]
        log_px_z = -model.decode(z.flatten(0, 1)).nll(x.expand(S, *x.shape).flatten(0, 1),
                                                      dims=tuple(range(1, x.dim()))).view(S, -1)   # (S, N)
        log_w.append(log_px_z - prior.nll(z, dims=2) + q.nll(z, dims=2))           # log p(x|z) + log p(z) - log q(z)
    log_w = torch.cat(log_w).double()                                              # (K, N)
    w = (log_w - log_w.max(0).values).exp()                                        # (K, N) scaled weights, max 1
    estimate = torch.logsumexp(log_w, 0) - math.log(K)
    return estimate, w.std(0) / (math.sqrt(K) * w.mean(0))


@torch.no_grad()
def _elbo_samples_chunked(model, x, mu, logvar, eps, chunk: int = 16) -> torch.Tensor:
    """elbo_samples over the draws `chunk` at a time, so that memory does not grow with S; (S, N)."""
    return torch.cat([elbo_samples(model, x, mu, logvar, e) for e in eps.split(chunk)])


def gaps(model, x: torch.Tensor, *, generator: torch.Generator, K: int = 100, ll_repeats: int = LL_REPEATS,
         test_S: int = 128, **per_point) -> dict:
    """Amortisation and approximation gaps of the N images x (N, C, H, W), in nats; Q1.3-1.4.

    Returns {"per_image": {name: (N,) CPU tensor}, "summary": {name: float}}. Per image:
      amortised_elbo, per_point_elbo: both re-estimated on fresh test noise (test_S, N, z_dim), common
        to the two q's and independent of the noise q*_x was selected on, so each is unbiased;
      log_likelihood: K-sample importance sampling with q*_x as the proposal (`importance_log_likelihood`);
      graded_log_likelihood: the mean of `ll_repeats` independent runs of the graded `model.log_likelihood(x, K)`
        (the encoder's q_phi as the proposal), E log p_K(x) <= log p(x) by a slack that grows with the
        amortisation gap: a reference, not used in the gaps;
      amortisation_gap = per_point - amortised; approximation_gap = log_likelihood - per_point;
      *_mc_se: the Monte Carlo standard error of each (the spread over the test draws, paired for the
        amortisation gap; the delta method's for log_likelihood; over the repeats for the graded estimate,
        so it needs ll_repeats >= 2).
    Finitely many Adam steps leave the amortisation gap underestimated and the approximation gap
    overestimated by the same amount (q*_x is then not quite the best of the family). The summary holds the batch
    means, their Monte Carlo SE (*_mc_se) and SE across images (*_image_se), and the seconds of one encoder pass
    against the per-point optimisation (Q1.4b). `per_point` goes to `optimise_per_point`.
    """
    _check_eval(model)
    start = devices.clock(x.device)
    with torch.no_grad():
        q = model.encode(x)                                          # the amortised approach: one pass
    seconds_amortised = devices.clock(x.device) - start
    fit = optimise_per_point(model, x, generator=generator, **per_point)
    per_image = evaluate(model, x, q, fit, generator=generator, K=K, ll_repeats=ll_repeats, test_S=test_S)
    N = x.shape[0]
    summary = {"N": N, "K": K, "per_point_steps": fit.steps, "per_point_converged": fit.converged,
               "seconds_amortised": seconds_amortised, "seconds_per_point": fit.seconds}
    for name in ESTIMATES:
        v = per_image[name]
        summary[name] = v.mean().item()
        summary[f"{name}_image_se"] = (v.std() / math.sqrt(N)).item() if N > 1 else float("nan")
        summary[f"{name}_mc_se"] = (per_image[f"{name}_mc_se"].pow(2).sum().sqrt() / N).item()
    return {"per_image": per_image, "summary": summary}


def evaluate(model, x: torch.Tensor, q: DiagonalGaussianDistribution, fit: PerPoint, *, generator: torch.Generator,
             K: int, ll_repeats: int, test_S: int) -> dict[str, torch.Tensor]:
    """`gaps`' per-image estimates, each (N,) on the CPU with its Monte Carlo SE (name_mc_se), for the encoder's
    q = q_phi(z|x) and the per-point optimum `fit`, on fresh draws from `generator` (independent of those `fit`
    was chosen on)."""
    eps = noise((test_S, *q.mean.shape), generator).to(x.device)       # (test_S, N, z_dim)
    amortised_draws = _elbo_samples_chunked(model, x, q.mean, q.logvar, eps)  # (test_S, N)
    per_point_draws = _elbo_samples_chunked(model, x, fit.mu, fit.logvar, eps)
    ll, ll_se = importance_log_likelihood(model, x, fit.mu, fit.logvar, K, generator)
    with torch.no_grad():
        graded = torch.stack([log_likelihood(model, x, K, generator) for _ in range(ll_repeats)])  # (R, N)
    sem = lambda v: v.std(0) / math.sqrt(v.shape[0])                 # noqa: E731  (R, N) -> (N,)
    per_image = {
        "amortised_elbo": amortised_draws.mean(0), "amortised_elbo_mc_se": sem(amortised_draws),
        "per_point_elbo": per_point_draws.mean(0), "per_point_elbo_mc_se": sem(per_point_draws),
        "log_likelihood": ll.to(per_point_draws.dtype), "log_likelihood_mc_se": ll_se.to(per_point_draws.dtype),
        "graded_log_likelihood": graded.mean(0), "graded_log_likelihood_mc_se": sem(graded),
        "amortisation_gap": (per_point_draws - amortised_draws).mean(0),
        "amortisation_gap_mc_se": sem(per_point_draws - amortised_draws),
    }
    per_image["approximation_gap"] = per_image["log_likelihood"] - per_image["per_point_elbo"]
    per_image["approximation_gap_mc_se"] = (per_image["per_point_elbo_mc_se"] ** 2
                                            + per_image["log_likelihood_mc_se"] ** 2).sqrt()    # independent noises
    return {k: v.detach().cpu() for k, v in per_image.items()}


# --------------------------------------------------------------------------- the VAE run's measurement

def stopping_rule(cfg) -> str:
    """The per-point optimisation's stopping rule of a VAEConfig, in words (the summary and the report quote it)."""
    return (f"Adam (learning rate {cfg.gap_lr:g}, {cfg.gap_draws} draws of z a step) for at most {cfg.gap_steps} "
            f"steps; every {cfg.gap_eval_every} steps each image's ELBO on fixed noise ({cfg.gap_eval_draws} draws) "
            f"keeps its best mean and log-variance, the encoder's included; it stops early once the images' mean "
            f"best ELBO has risen by less than {cfg.gap_tol:g} nats over {cfg.gap_patience} checks")


def negative(per_image: dict) -> torch.Tensor:
    """(N,) bool: the images whose amortisation gap is negative beyond Monte Carlo error (Q1.3 says >= 0)."""
    return per_image["amortisation_gap"] < -NEGATIVE_BELOW * per_image["amortisation_gap_mc_se"]


def _estimate(summary: dict, name: str, dims: int | None = None) -> Estimate:
    """One quantity of `gaps`' summary; with `dims`, a log-likelihood bound also as -log p(x) in bits/dim on the
    8-bit scale [0, 256): a density on [-1, 1] gains D log 127.5 nats there (decoder_variance.bits_per_dim_8bit)."""
    nats, image_se = summary[name], summary[f"{name}_image_se"]
    bits = None if dims is None else bits_per_dim_8bit(nats, dims)
    return Estimate(nats=nats, mc_se=summary[f"{name}_mc_se"], image_se=image_se if math.isfinite(image_se) else None,
                    bits_per_dim=bits)


def measure(run_: runs.Run, cfg, model, test: data.ImageSet, device: torch.device) -> AmortisationGaps:
    """Q1.3-1.4 on a trained VAE (eval mode), with the gap_* fields of its VAEConfig `cfg`: `gaps` on
    cfg.gap_size test images (drawn by the stream names.MEASURED_IMAGES, as the DDPM's bound), the per-image
    values saved as artifacts/amortisation.pt (figures.amortisation_gaps), the batch means returned for the
    summary. Callable under torch.no_grad(): the per-point optimisation enables its own gradients."""
    images = test.subset(cfg.gap_size, rng.stream_seed(cfg.seed, names.MEASURED_IMAGES)).images
    x = data.to_float(images).to(device)                             # (N, 3, 32, 32) in [-1, 1]
    start = devices.clock(device)
    with torch.enable_grad():
        result = gaps(model, x, generator=rng.stream(cfg.seed, "amortisation", device), K=cfg.ll_K,
                      test_S=cfg.gap_test_draws, steps=cfg.gap_steps, lr=cfg.gap_lr, S=cfg.gap_draws,
                      eval_S=cfg.gap_eval_draws, eval_every=cfg.gap_eval_every, tol=cfg.gap_tol,
                      patience=cfg.gap_patience)
    seconds = devices.clock(device) - start
    per_image, s = result["per_image"], result["summary"]
    run_.save_artifact("amortisation.pt", per_image)
    dims = x[0].numel()
    return AmortisationGaps(
        n_images=len(x), dims=dims, ll_K=cfg.ll_K,
        amortised_elbo=_estimate(s, "amortised_elbo", dims), per_point_elbo=_estimate(s, "per_point_elbo", dims),
        log_likelihood=_estimate(s, "log_likelihood", dims), ll_proposal=LL_PROPOSAL,
        graded_log_likelihood=_estimate(s, "graded_log_likelihood", dims),
        amortisation_gap=_estimate(s, "amortisation_gap"),
        approximation_gap=_estimate(s, "approximation_gap"), negative_images=int(negative(per_image).sum()),
        per_point_steps=s["per_point_steps"], per_point_converged=s["per_point_converged"],
        stopping_rule=stopping_rule(cfg),
        seconds_amortised=s["seconds_amortised"], seconds_per_point=s["seconds_per_point"], seconds=seconds)
