"""Question 3's estimators on a model's samples: closed forms, quadrature oracles, a tiny end-to-end run."""
import dataclasses
import json
import math

import pytest
import torch
from scipy import integrate, stats

from experiments.measurements import discriminator as disc
from experiments.measurements.classifier import DigitClassifier
from experiments.presentation.summaries import DiscriminatorResult, Interval

LOG2 = math.log(2)


def test_jsd_is_exactly_zero_for_a_constant_half_discriminator():
    # h = 0: D = 1/2 everywhere, log 2 + 1/2 log 1/2 + 1/2 log 1/2 = 0
    assert disc.jsd_estimate(torch.zeros(7), torch.zeros(5)) == pytest.approx(0.0, abs=1e-15)


def test_jsd_is_near_zero_for_identical_logit_sets():
    # the same logits on both sides: log 2 + 1/2 E[log sigmoid(h) + log sigmoid(-h)] <= 0, ~0 for small h
    h = 0.01 * torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert disc.jsd_estimate(h, h) == pytest.approx(0.0, abs=1e-4)


def test_jsd_approaches_log2_for_disjoint_sets():
    # h -> +inf on real, -inf on fake: D = 1 on p1 and 0 on p0; stable even where sigmoid saturates
    for big, tol in ((10.0, 1e-4), (100.0, 1e-40), (1e4, 0.0)):
        assert disc.jsd_estimate(torch.full((10,), big), torch.full((20,), -big)) == pytest.approx(LOG2, abs=tol)


def test_jsd_matches_quadrature_for_two_gaussians_with_the_optimal_discriminator():
    # p1 = N(0, 1), p0 = N(1, 1.5^2); h*(x) = log f1(x) - log f0(x) (3.2), so D = sigmoid(h*) = D*
    p1, p0 = stats.norm(0.0, 1.0), stats.norm(1.0, 1.5)

    def h_star(x):
        return p1.logpdf(x) - p0.logpdf(x)

    def integrand(x: float) -> float:  # 1/2 KL(p1 || m) + 1/2 KL(p0 || m), pointwise
        f1, f0 = p1.pdf(x), p0.pdf(x)
        m = (f1 + f0) / 2
        return 0.5 * (f1 * math.log(f1 / m) if f1 > 0 else 0.0) + 0.5 * (f0 * math.log(f0 / m) if f0 > 0 else 0.0)

    true_jsd, _ = integrate.quad(integrand, -30, 30, limit=200)
    g = torch.Generator().manual_seed(0)
    n = 20_000
    x1 = torch.randn(n, generator=g, dtype=torch.float64)  # ~ p1
    x0 = 1.0 + 1.5 * torch.randn(n, generator=g, dtype=torch.float64)  # ~ p0
    h1, h0 = torch.from_numpy(h_star(x1.numpy())), torch.from_numpy(h_star(x0.numpy()))
    log_D, log_1mD = disc.jsd_terms(h1, h0)
    se = math.sqrt(log_D.var().item() / (4 * n) + log_1mD.var().item() / (4 * n))
    assert 0.02 < true_jsd < LOG2
    assert abs(disc.jsd_estimate(h1, h0) - true_jsd) < 4 * se


def test_bootstrap_interval_contains_the_estimate_and_has_the_normal_width():
    g = torch.Generator().manual_seed(1)
    h1, h0 = 1.0 + torch.randn(2000, generator=g), -1.0 + torch.randn(3000, generator=g)
    estimate, low, high = disc.jsd_bootstrap(h1, h0, 500, torch.Generator().manual_seed(2))
    assert estimate == disc.jsd_estimate(h1, h0)
    assert low < estimate < high
    log_D, log_1mD = disc.jsd_terms(h1, h0)
    se = math.sqrt(log_D.var().item() / (4 * len(h1)) + log_1mD.var().item() / (4 * len(h0)))
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_boot"):
        disc.jsd_bootstrap(torch.zeros(3), torch.zeros(3), 1, torch.Generator())
    with pytest.raises(ValueError, match="logits_fake"):
        disc.jsd_estimate(torch.zeros(3), torch.zeros(0))


def test_rejection_sampling_with_exact_weights_targets_p1():
    # samples of p0 = N(0, 1), target p1 = N(0.5, 1): h*(x) = log f1 - log f0 = 0.5 x - 0.125
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, generator=g, dtype=torch.float64)
    accepted, fraction, mask = disc.rejection_sample(x, 0.5 * x - 0.125, g)
    assert fraction == len(accepted) / len(x) and torch.equal(accepted, x[mask])
    assert len(accepted) > 1000
    assert abs(accepted.mean().item() - 0.5) < 4 / math.sqrt(len(accepted))
    assert accepted.std().item() == pytest.approx(1.0, abs=0.05)


def test_rejection_sampling_keeps_the_argmax_and_all_of_a_constant_set():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(5)
    accepted, _, _ = disc.rejection_sample(x, torch.tensor([0.0, -50.0, 3.0, -50.0, -50.0]), g)
    assert 2 in accepted.tolist() and 1 not in accepted.tolist()
    accepted, fraction, _ = disc.rejection_sample(x, torch.full((5,), 7.0), g)
    assert fraction == 1.0 and torch.equal(accepted, x)


def test_gamma_shift_follows_azadi_et_al_and_raises_the_acceptance_of_a_skewed_set():
    # a set whose weights e^h are dominated by a few samples: there the shift raises the acceptance
    """F = d - log(1 - e^{d - eps}) - gamma, d = h - max h, accepted with probability sigmoid(F), gamma the chosen
    quantile of F (Azadi et al. 2019, Algorithm 1), by hand in numpy; without the shift, e^d."""
    import numpy as np
    h = torch.randn(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3   # a few large weights
    d = (h - h.max()).numpy()
    F = d - np.log(1 - np.exp(d - disc.DRS_EPSILON))
    gamma = np.quantile(F, 0.95)
    shifted = disc.acceptance(h, 0.95)
    assert shifted.numpy() == pytest.approx(1 / (1 + np.exp(-(F - gamma))), rel=1e-12)
    assert (shifted > 0.5).double().mean().item() == pytest.approx(0.05, abs=1 / 400)
    assert torch.equal(disc.acceptance(h), torch.exp(h - h.max()))
    below = d < -1e-3                                                # gamma = 0: sigmoid(F) = e^d, epsilon aside
    assert (1 / (1 + np.exp(-F)))[below] == pytest.approx(np.exp(d)[below], rel=1e-3)
    assert shifted.mean() > 5 * disc.acceptance(h).mean()             # the shift's purpose, on this skewed set
    g = torch.Generator().manual_seed(1)
    _, fraction, mask = disc.rejection_sample(torch.arange(400), h, g, gamma_quantile=0.95)
    assert fraction == mask.double().mean().item() and abs(fraction - shifted.mean().item()) < 4 * 0.5 / 20
    with pytest.raises(ValueError, match="gamma_quantile"):
        disc.acceptance(h, 1.5)


def _images(n: int, low: int, high: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_trained_discriminator_separates_bright_from_dark_images():
    bright, dark = _images(192, 180, 256, 0), _images(192, 0, 76, 1)
    model = disc.train_discriminator(bright[:128], dark[:128], epochs=3, batch_size=32, lr=1e-2)
    assert not model.training
    h1, h0 = disc.discriminator_logits(model, bright[128:]), disc.discriminator_logits(model, dark[128:])
    assert disc.jsd_estimate(h1, h0) > LOG2 - 0.01


def test_trained_discriminator_finds_nothing_between_two_halves_of_one_set():
    images = _images(256, 0, 256, 2)
    rest = torch.get_rng_state()
    model = disc.train_discriminator(images[:64], images[64:128], epochs=2, batch_size=32)
    assert torch.equal(torch.get_rng_state(), rest)
    h1, h0 = disc.discriminator_logits(model, images[128:192]), disc.discriminator_logits(model, images[192:])
    assert abs(disc.jsd_estimate(h1, h0)) < 0.1


def test_measure_end_to_end_on_a_model_that_mixes_in_dark_images():
    # p1 = bright noise B; p0 = 1/2 B + 1/2 dark noise. m = 3/4 B + 1/4 dark, so
    # JSD = 1/2 log(4/3) + 1/4 log(2/3) + 1/4 log 2 = 0.216; DRS should keep the bright half,
    # whose JSD to p1 is 0: a fresh discriminator finds less there than in a random subset
    real = _images(128, 180, 256, 3)
    fake = torch.cat([_images(64, 180, 256, 4), _images(64, 0, 76, 5)])
    true_jsd = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * LOG2
    torch.manual_seed(0)
    digits = DigitClassifier().eval()
    out, shown = disc.measure(real, fake, digits, epochs=4, batch_size=32, n_boot=100, seed=0)
    assert out.n_real_test == out.n_fake_test == out.n_real_train == out.n_fake_train == 64
    assert out.jsd.low <= out.jsd.estimate <= out.jsd.high and out.jsd.level == 0.95
    assert 0.1 < out.jsd.estimate < true_jsd + 0.05 and out.jsd.low < true_jsd
    assert 0.25 < out.accepted_fraction < 0.75 and out.n_accepted == round(out.accepted_fraction * 64)
    assert out.fid_accepted < out.fid_subset / 2
    assert out.jsd_accepted.estimate < out.jsd_subset.estimate and out.seconds > 0
    # The figure's data: the held-out logits, DRS's mask, the samples rated most and least real.
    assert shown["logits_fake"].shape == shown["accepted"].shape == (64,) and shown["logits_real"].shape == (64,)
    assert int(shown["accepted"].sum()) == out.n_accepted
    assert shown["most_real"].shape == (disc.SHOWN, 3, 32, 32) and shown["most_real"].float().mean() > 150
    assert shown["least_real"].float().mean() < 60
    again, _ = disc.measure(real, fake, digits, epochs=4, batch_size=32, n_boot=100, seed=0)
    assert dataclasses.replace(again, seconds=0) == dataclasses.replace(out, seconds=0)  # deterministic in seed
    assert out.gamma_quantile is None                                                     # the default: no shift
    shifted, _ = disc.measure(real, fake, digits, epochs=4, batch_size=32, n_boot=100, seed=0, gamma_quantile=0.5)
    assert shifted.gamma_quantile == 0.5 and shifted.jsd == out.jsd                       # same D, another DRS
    expected = disc.acceptance(shown["logits_fake"], 0.5).mean().item()                   # half of them above 1/2
    assert abs(shifted.accepted_fraction - expected) < 4 * 0.5 / 8
    assert shifted.accepted_fraction != out.accepted_fraction


def test_result_round_trips_through_json_with_no_accepted_fid():
    result = DiscriminatorResult(
        jsd=Interval(estimate=0.2, low=0.1, high=0.3, level=0.95), accepted_fraction=1 / 64, n_accepted=1,
        fid_samples=3.0, fid_accepted=None, fid_subset=None,
        jsd_accepted=Interval(estimate=0.05, low=-0.1, high=0.2, level=0.95),
        jsd_subset=Interval(estimate=0.06, low=-0.1, high=0.2, level=0.95),
        n_real_train=64, n_fake_train=64, n_real_test=64, n_fake_test=64, epochs=2, seconds=0.5)
    assert DiscriminatorResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def check_run_result(run_dir, result: DiscriminatorResult, n_samples: int) -> None:
    """What a VAE or DDPM smoke run's final evaluation writes for Question 3: the summary's field, the artifact
    and the figure (tests/test_vae_experiment.py, tests/test_ddpm_experiment.py)."""
    assert result is not None and result.n_fake_train + result.n_fake_test == n_samples
    assert result.n_real_test == result.n_fake_test and result.n_real_train == result.n_fake_train
    for interval in (result.jsd, result.jsd_accepted, result.jsd_subset):
        assert interval.low <= interval.high <= LOG2 and interval.level == 0.95
    assert 0 < result.accepted_fraction <= 1 and 1 <= result.n_accepted <= result.n_fake_test and result.seconds > 0
    shown = torch.load(run_dir / "artifacts" / disc.ARTIFACT)
    assert shown["logits_fake"].shape == (result.n_fake_test,) and int(shown["accepted"].sum()) == result.n_accepted
    assert (run_dir / "figures" / "discriminator.png").stat().st_size > 5_000
