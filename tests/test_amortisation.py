"""experiments.measurements.amortisation: the per-point optimisation and the gaps of Q1.3-1.4.

A linear-Gaussian stand-in model has a known answer: its exact posterior is a diagonal Gaussian, so the
per-point optimum is the posterior itself, its ELBO is log p(x), and the approximation gap vanishes.
"""
import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

import vae_solution
from experiments.measurements.amortisation import elbo, elbo_samples, gaps, optimise_per_point


class LinearGaussian:
    """z ~ N(0, I_2), x | z ~ N(W z + b, I) with x shaped (N, 1, 2, 2), through the graded distribution class.

    W's columns are orthogonal, so the posterior p(z|x) = N(P W^T (x - b), P), P = (I + W^T W)^{-1}, is
    diagonal. The "encoder" outputs the prior N(0, I) for every x: a poor amortised q, so a large gap."""
    training = False

    def __init__(self, scales: tuple[float, float] = (2.0, 0.7)):
        Q, _ = torch.linalg.qr(torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
        self.W = (Q * torch.tensor(scales, dtype=torch.float64)).float()    # (4, 2), W^T W = diag(scales^2)
        self.b = torch.tensor([0.3, -0.2, 0.1, 0.5])

    def encode(self, x):
        zeros = torch.zeros(x.shape[0], 2)
        return vae_solution.DiagonalGaussianDistribution(zeros, zeros)

    def decode(self, z):
        return vae_solution.DiagonalGaussianDistribution((z @ self.W.T + self.b).view(-1, 1, 2, 2))

    def posterior(self, x):
        """Exact p(z | x): mean (N, 2) and log-variance (2,)."""
        P = torch.linalg.inv(torch.eye(2) + self.W.T @ self.W)
        return (x.flatten(1) - self.b) @ self.W @ P, P.diagonal().log()

    def log_likelihood(self, x, K=100):
        """Exact log p(x) = log N(x; b, W W^T + I); uses no randomness."""
        return MultivariateNormal(self.b, self.W @ self.W.T + torch.eye(4)).log_prob(x.flatten(1))


def tiny_vae() -> vae_solution.VAE:
    torch.manual_seed(0)
    return vae_solution.VAE(z_dim=4, encoder_features=4, decoder_features=4).eval()


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_elbo_is_the_closed_form_for_the_linear_model():
    """E_q log N(x; W z + b, I) - KL(q || N(0, I)), both in closed form, from many common draws."""
    model, x = LinearGaussian(), torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(3, 2, generator=generator), torch.randn(3, 2, generator=generator) * 0.3
    eps = torch.randn(20000, 3, 2, generator=generator)
    residual = x.flatten(1) - mu @ model.W.T - model.b                                  # (3, 4)
    expected_log_lik = -0.5 * (4 * math.log(2 * math.pi) + residual.pow(2).sum(1)
                               + (model.W.pow(2).sum(0) * logvar.exp()).sum(1))         # E_q ||W (z - mu)||^2
    kl = kl_divergence(Independent(Normal(mu, (0.5 * logvar).exp()), 1), Independent(Normal(0.0, torch.ones(2)), 1))
    draws = elbo_samples(model, x, mu, logvar, eps)                                     # (S, 3)
    assert torch.equal(draws.mean(0), elbo(model, x, mu, logvar, eps))
    assert ((draws.mean(0) - (expected_log_lik - kl)).abs() < 4 * draws.std(0) / math.sqrt(20000)).all()


def test_per_point_never_lowers_an_image_elbo_and_leaves_the_model_alone():
    model, x = tiny_vae(), images(6)
    fit = optimise_per_point(model, x, generator=torch.Generator().manual_seed(0), steps=30, eval_every=5, S=4,
                             eval_S=8, lr=0.05)
    assert (fit.per_point_elbo >= fit.amortised_elbo).all()
    assert (fit.per_point_elbo > fit.amortised_elbo).any()
    assert all(p.grad is None for p in model.parameters())
    again = optimise_per_point(model, x, generator=torch.Generator().manual_seed(0), steps=30, eval_every=5, S=4,
                               eval_S=8, lr=0.05)
    assert torch.equal(fit.per_point_elbo, again.per_point_elbo) and fit.steps == again.steps


def test_training_mode_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        optimise_per_point(tiny_vae().train(), images(2), generator=torch.Generator(), steps=1)


def test_gaps_on_a_vae_are_reproducible_and_the_amortisation_gap_is_nonnegative():
    model, x = tiny_vae(), images(6)
    state = torch.get_rng_state()
    kwargs = {"K": 20, "test_S": 32, "steps": 40, "eval_every": 10, "S": 4, "eval_S": 8, "lr": 0.05}
    result = gaps(model, x, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(torch.get_rng_state(), state)                   # the log-likelihood's draws ran in a fork
    again = gaps(model, x, generator=torch.Generator().manual_seed(0), **kwargs)
    for name, value in result["per_image"].items():
        assert torch.equal(value, again["per_image"][name]), name
    s, per_image = result["summary"], result["per_image"]
    assert s["amortisation_gap"] >= -3 * s["amortisation_gap_mc_se"]
    assert (per_image["amortisation_gap"] >= -3 * per_image["amortisation_gap_mc_se"] - 1e-4).all()
    assert s["amortisation_gap"] == pytest.approx(s["per_point_elbo"] - s["amortised_elbo"], abs=1e-3)
    assert s["seconds_amortised"] < s["seconds_per_point"]


def test_linear_model_per_point_optimum_is_the_exact_posterior_and_the_approximation_gap_vanishes():
    model, x = LinearGaussian(), torch.randn(8, 1, 2, 2, generator=torch.Generator().manual_seed(4)) * 2
    result = gaps(model, x, generator=torch.Generator().manual_seed(0), test_S=4096, steps=3000, lr=0.02, S=16,
                  eval_S=256, eval_every=50, tol=1e-3, patience=5)
    per_image, s = result["per_image"], result["summary"]
    log_px = model.log_likelihood(x)
    assert per_image["per_point_elbo"] == pytest.approx(log_px, abs=0.03)
    assert abs(s["approximation_gap"]) < 0.01 + 3 * s["approximation_gap_mc_se"]
    # The prior as q: ELBO = log p(x) - KL(N(0, I) || p(z|x)), the amortisation gap by 1.1.
    mean, logvar = model.posterior(x)
    kl_prior_to_posterior = kl_divergence(Independent(Normal(torch.zeros(8, 2), 1.0), 1),
                                          Independent(Normal(mean, (0.5 * logvar).exp()), 1))
    error = (per_image["amortisation_gap"] - kl_prior_to_posterior).abs()
    assert (error < 0.03 + 4 * per_image["amortisation_gap_mc_se"]).all()
    fit = optimise_per_point(model, x, generator=torch.Generator().manual_seed(0), steps=3000, lr=0.02, S=16,
                             eval_S=256, tol=1e-3, patience=5)
    assert fit.converged and fit.steps < 3000                                  # stopped by its tolerance
    assert fit.mu == pytest.approx(mean, abs=0.05)
    assert fit.logvar == pytest.approx(logvar.expand(8, 2), abs=0.2)  # the ELBO is flat there: d^2/4 nats off


class FakeRun:
    """The one method of experiments.harness.runs.Run that `measure` uses: artifacts kept in a dict."""
    def __init__(self):
        self.artifacts = {}

    def save_artifact(self, name, obj):
        self.artifacts[name] = obj


def gap_config(**overrides):
    from experiments.problems import vae
    fields = dict(gap_size=3, gap_steps=10, gap_lr=0.05, gap_draws=2, gap_eval_every=5, gap_eval_draws=4, gap_tol=0.01,
                  gap_patience=4, gap_test_draws=8, ll_K=10)
    return vae.VAEConfig(**{**fields, **overrides})


@torch.no_grad()   # as the VAE run's final_artifacts: the measurement enables its own gradients
def test_measure_writes_the_per_image_artifact_and_the_summary_field():
    from experiments.harness import data
    from experiments.measurements.amortisation import NEGATIVE_BELOW, measure, negative
    from experiments.presentation.summaries import AmortisationGaps
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    test = data.ImageSet(images, torch.arange(7) % 10, "synthetic", "test")
    run = FakeRun()
    g = measure(run, gap_config(), tiny_vae(), test, torch.device("cpu"))
    per_image = run.artifacts["amortisation.pt"]
    assert g.n_images == 3 and g.dims == 3072 and g.ll_K == 10 and per_image["amortisation_gap"].shape == (3,)
    assert g.amortisation_gap.nats == pytest.approx(per_image["amortisation_gap"].mean().item())
    assert g.negative_images == int(negative(per_image).sum())
    flagged = per_image["amortisation_gap"] < -NEGATIVE_BELOW * per_image["amortisation_gap_mc_se"]
    assert torch.equal(negative(per_image), flagged)
    # -log p(x) on the 8-bit scale, as vae.py's test_bits_per_dim_8bit: a density on [-1, 1] gains D log 127.5.
    for e in (g.amortised_elbo, g.per_point_elbo, g.log_likelihood):
        assert e.bits_per_dim == pytest.approx(-(e.nats - 3072 * math.log(127.5)) / (3072 * math.log(2)))
    assert g.amortisation_gap.bits_per_dim is None and g.approximation_gap.bits_per_dim is None
    assert g.per_point_elbo.nats >= g.amortised_elbo.nats - 2 * g.amortisation_gap.mc_se   # Q1.3, within MC error
    assert 0 < g.per_point_steps <= 10 and "at most 10 steps" in g.stopping_rule
    assert g.per_point_converged == (g.per_point_steps < 10)
    assert 0 < g.seconds_amortised < g.seconds_per_point < g.seconds
    assert AmortisationGaps.from_dict(g.to_dict()) == g                              # the schema round-trips
    again = measure(FakeRun(), gap_config(), tiny_vae(), test, torch.device("cpu"))   # the run's named streams
    assert again.amortisation_gap.nats == g.amortisation_gap.nats


def _linear_data(model: LinearGaussian, n: int, seed: int) -> torch.Tensor:
    """n images x = W z + b + noise from the model itself, (n, 1, 2, 2)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, generator=g) @ model.W.T + model.b + torch.randn(n, 4, generator=g)).view(n, 1, 2, 2)


def test_the_approximation_gap_is_unbiased_when_the_amortisation_gap_is_large():
    """W^T W = diag(100, 36): the posterior is narrow and the prior-as-encoder is over 50 nats from it. The family
    contains the posterior, so the true approximation gap is 0: measured with q*_x as the proposal it is 0 within its
    standard error, where the encoder's q_phi as the proposal falls short of log p(x) by nats."""
    from experiments.measurements.amortisation import importance_log_likelihood
    model = LinearGaussian((10.0, 6.0))
    x = _linear_data(model, 8, 4)
    result = gaps(model, x, generator=torch.Generator().manual_seed(0), K=100, test_S=256, steps=1500, lr=0.05, S=8,
                  eval_S=64, eval_every=25, tol=1e-3, patience=4)
    s, per_image = result["summary"], result["per_image"]
    assert s["amortisation_gap"] > 50 + 3 * s["amortisation_gap_mc_se"]
    assert abs(s["approximation_gap"]) < 3 * s["approximation_gap_mc_se"] and s["approximation_gap_mc_se"] < 0.05
    exact = model.log_likelihood(x)
    assert ((per_image["log_likelihood"] - exact).abs() < 4 * per_image["log_likelihood_mc_se"] + 1e-3).all()
    zeros = torch.zeros(8, 2)                                                # the encoder's q_phi = N(0, I)
    with_q_phi, _ = importance_log_likelihood(model, x, zeros, zeros, 100, torch.Generator().manual_seed(1))
    assert (exact - with_q_phi).mean() > 1.0                                # the slack the old estimate had


@pytest.mark.parametrize("encoder", ["prior", "near"])
def test_reported_standard_errors_match_the_spread_over_seeds(encoder):
    """Given the images and the per-point fit, the Monte Carlo SEs of `evaluate` (the paired amortisation gap, the
    approximation gap, the importance-sampled log p(x)) against the standard deviation of the batch means over 40
    seeds: their ratio lies within a factor 1.5 (the SD of 40 draws is itself known to about 11%). With an encoder
    near the fit the two ELBOs' draws are strongly correlated, and an unpaired SE would be 1.8 times too large."""
    from experiments.measurements.amortisation import PerPoint, evaluate
    model = LinearGaussian((3.0, 1.5))
    x = _linear_data(model, 6, 5)
    mean, logvar = model.posterior(x)
    fit = PerPoint(amortised_elbo=torch.zeros(6), per_point_elbo=torch.zeros(6), mu=mean + 0.1,
                   logvar=(logvar - 0.4).expand(6, 2), steps=0, seconds=0.0)   # off the posterior: weights vary
    q = model.encode(x) if encoder == "prior" else vae_solution.DiagonalGaussianDistribution(
        mean + 0.3, (logvar + 0.3).expand(6, 2))
    names = ("amortisation_gap", "approximation_gap", "log_likelihood", "amortised_elbo", "per_point_elbo")
    means, ses = {n: [] for n in names}, {n: [] for n in names}
    for seed in range(40):
        per_image = evaluate(model, x, q, fit, generator=torch.Generator().manual_seed(seed), K=50, ll_repeats=2,
                             test_S=32)
        for n in names:
            means[n].append(per_image[n].mean().item())
            ses[n].append((per_image[f"{n}_mc_se"].pow(2).sum().sqrt() / 6).item())   # as `gaps`' summary
    reported = {n: torch.tensor(ses[n]).pow(2).mean().sqrt().item() for n in names}
    for n in names[:3]:
        spread = torch.tensor(means[n]).std().item()
        assert 1 / 1.5 < reported[n] / spread < 1.5, (n, reported[n], spread)
    if encoder == "near":
        unpaired = math.hypot(reported["amortised_elbo"], reported["per_point_elbo"])
        assert reported["amortisation_gap"] < unpaired / 1.5


def test_bits_per_dim_of_a_gaussian_decoder_match_a_hand_computation_on_the_8_bit_scale():
    """The linear-Gaussian VAE's exact log p(x) on its [-1, 1] scale, turned into bits/dim by `_estimate`, against
    the same density written directly on the 8-bit scale: y = 127.5 (x + 1) ~ N(127.5 (b + 1), 127.5^2 (W W^T + I))."""
    from experiments.measurements.amortisation import _estimate
    model = LinearGaussian()
    x = _linear_data(model, 1, 6)
    nats = model.log_likelihood(x).item()
    summary = {"log_likelihood": nats, "log_likelihood_image_se": float("nan"), "log_likelihood_mc_se": 0.0}
    y = 127.5 * (x.flatten(1).double() + 1)                                              # (1, 4) in [0, 255] units
    covariance = 127.5 ** 2 * (model.W @ model.W.T + torch.eye(4)).double()
    density = MultivariateNormal(127.5 * (model.b.double() + 1), covariance)
    by_hand = -density.log_prob(y).item() / (4 * math.log(2))
    assert _estimate(summary, "log_likelihood", dims=4).bits_per_dim == pytest.approx(by_hand, rel=1e-6)
