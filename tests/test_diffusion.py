"""experiments.problems.diffusion: the harness's diffusion process agrees with the graded file at T = 1000,
DDIM is right, reconstruction and EMA do what they say."""
import pytest
import torch
import torch.nn as nn

import ddpm_solution as ds
from experiments.problems.ddpm import scaled_levels, t_star
from experiments.problems.diffusion import EMA, Diffusion, noise


class TinyNet(nn.Module):
    """A small deterministic eps-model that depends on x and t (for draw-for-draw comparisons)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x) * torch.cos(t.float() / 300).view(-1, 1, 1, 1)


class GaussianOracle(nn.Module):
    """The exact E[eps | x_t] when x_0 ~ N(m, s^2) independently per pixel."""

    def __init__(self, diffusion, m, s):
        super().__init__()
        self.abar, self.m, self.s = diffusion.alphas_cumprod, m, s

    def forward(self, x, t):
        abar = self.abar[t].view(-1, 1, 1, 1)
        return (1 - abar).sqrt() * (x - abar.sqrt() * self.m) / (abar * self.s ** 2 + 1 - abar)


class KnowsX0(nn.Module):
    """Predicts exactly the noise that took the known x_0 to x_t."""

    def __init__(self, diffusion, x0):
        super().__init__()
        self.d, self.x0 = diffusion, x0

    def forward(self, x, t):
        abar = self.d.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x - abar.sqrt() * self.x0) / (1 - abar).sqrt()


@pytest.fixture(scope="module")
def d1000():
    return Diffusion(1000)


def test_schedule_equals_the_graded_one_at_T_1000(d1000):
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas", "posterior_variance"):
        ours, graded = getattr(d1000, name), getattr(ds, name)
        assert ours.dtype == torch.float32 and torch.equal(ours, graded), name


def test_other_T_keeps_the_endpoints():
    d = Diffusion(500)
    assert len(d.betas) == 500
    assert d.betas[0].item() == pytest.approx(1e-4) and d.betas[-1].item() == pytest.approx(0.02)
    assert d.alphas_cumprod_prev[0] == 1 and d.posterior_variance[0] == 0
    with pytest.raises(ValueError, match="timesteps"):
        Diffusion(1)


def test_loss_equals_graded_t_sample_then_p_losses(d1000):
    net, x0 = TinyNet(), torch.randn(6, 3, 32, 32)
    torch.manual_seed(3)
    graded = ds.p_losses(net, x0, ds.t_sample(1000, 6))
    torch.manual_seed(3)
    assert torch.allclose(d1000.loss(net, x0), graded, atol=1e-7)


def test_p_step_equals_graded_p_sample(d1000):
    net, x = TinyNet(), torch.randn(4, 3, 32, 32)
    for i in (999, 500, 1, 0):
        torch.manual_seed(i)
        graded = ds.p_sample(net, x, torch.full((4,), i, dtype=torch.long), i)
        torch.manual_seed(i)
        with torch.no_grad():
            ours = d1000.p_step(net, x, i)
        assert torch.allclose(ours, graded, atol=1e-6), i


def test_sample_equals_the_last_image_of_the_graded_loop(d1000):
    """Same seed, same draws: the harness's final-only sampler returns p_sample_loop(...)[-1]."""
    net, shape = TinyNet(), (2, 3, 32, 32)
    torch.manual_seed(7)
    graded = ds.p_sample_loop(net, shape, 1000)[-1]
    torch.manual_seed(7)
    ours = d1000.sample(net, torch.randn(shape), progress=False)
    assert torch.allclose(ours, graded, atol=1e-4)


def test_ddim_every_step_eta_1_is_the_ancestral_sampler():
    """sigma_t^2 = beta~_t and the same mean: with the same generator the two agree draw for draw,
    and both reach the data distribution N(m, s^2) under the exact eps-model."""
    d = Diffusion(1000)  # T = 100 would not reach N(0, I): abar_T = exp(-sum beta) ~ 0.37
    m, s = 0.5, 0.3
    oracle = GaussianOracle(d, m, s)
    g = torch.Generator().manual_seed(0)
    x_T = noise((4000, 1, 1, 1), g)
    ancestral = d.sample(oracle, x_T, generator=g, progress=False)
    g = torch.Generator().manual_seed(0)
    noise((4000, 1, 1, 1), g)  # the same state as the ancestral sampler's after x_T
    ddim = d.ddim_sample(oracle, x_T, n_steps=1000, eta=1.0, generator=g, progress=False)
    assert torch.allclose(ddim, ancestral, atol=1e-4)
    for x in (ancestral, ddim):
        assert x.mean().item() == pytest.approx(m, abs=0.02) and x.std().item() == pytest.approx(s, rel=0.05)


def test_ddim_eta_0_is_deterministic_and_converges_to_the_data_distribution():
    """The eta = 0 sampler is an ODE solver: no randomness after x_T, and its error in the data
    std shrinks as the number of steps grows (Gaussian data, exact eps-model)."""
    d = Diffusion(1000)
    oracle = GaussianOracle(d, -0.2, 0.4)
    x_T = noise((4000, 1, 1, 1), torch.Generator().manual_seed(1))
    a = d.ddim_sample(oracle, x_T, n_steps=50, generator=torch.Generator().manual_seed(1), progress=False)
    b = d.ddim_sample(oracle, x_T, n_steps=50, generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.equal(a, b)
    errors = [abs(d.ddim_sample(oracle, x_T, n_steps=n, progress=False).std().item() - 0.4) for n in (10, 50, 200)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.4 * 0.03
    assert a.mean().item() == pytest.approx(-0.2, abs=0.02)


def test_ddim_steps():
    d = Diffusion(1000)
    steps = d.ddim_steps(50)
    assert len(steps) == 50 and steps[0] == 999 and steps[-1] == 0 and steps == sorted(set(steps), reverse=True)
    assert d.ddim_steps(1000) == list(range(999, -1, -1))
    assert d.ddim_steps(5, start=99) == [99, 74, 50, 25, 0]
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="n_steps"):
            d.ddim_steps(bad)


def test_sampler_keeps_one_batch_and_rejects_bad_start(d1000):
    out = d1000.sample(TinyNet(), torch.randn(3, 3, 32, 32), start=10, progress=False)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="start"):
        d1000.sample(TinyNet(), torch.randn(1, 3, 32, 32), start=1000)


def test_reconstruction_with_an_oracle_returns_the_original():
    """With the noise predicted exactly, x0_hat = x_0 at the last step whatever t' was."""
    d = Diffusion(100)
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    out = d.reconstruct(KnowsX0(d, x0), x0, [1, 30, 100], generator=torch.Generator().manual_seed(0))
    assert sorted(out) == [1, 30, 100]
    for level, x in out.items():
        assert torch.allclose(x, x0, atol=1e-3), level
    with pytest.raises(ValueError, match="levels"):
        d.reconstruct(KnowsX0(d, x0), x0, [0])


def test_reconstruction_drifts_further_at_higher_levels():
    """With a model that knows nothing (eps = 0 is no oracle), more noise means further from x_0."""
    d = Diffusion(100)
    x0 = torch.rand(8, 3, 32, 32) * 2 - 1
    oracle = GaussianOracle(d, 0.0, 0.5)
    out = d.reconstruct(oracle, x0, [5, 50, 100], generator=torch.Generator().manual_seed(0))
    mse = [((out[k] - x0) ** 2).mean().item() for k in (5, 50, 100)]
    assert mse[0] < mse[1] < mse[2]


# --------------------------------------------------------------------------- EMA

def test_ema_update_follows_the_formula_with_warm_up():
    net = nn.Linear(3, 2)
    ema = EMA(net, decay=0.99)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update()
    expected = 0.1 * start["weight"] + 0.9 * net.weight
    assert torch.allclose(ema.model.weight, expected)
    for _ in range(10_000):
        ema.updates += 1
    assert ema.current_decay() == 0.99
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training


def test_ema_without_warm_up_and_state_round_trip():
    net = nn.Linear(3, 2)
    ema = EMA(net, decay=0.9, warmup=False)
    before = ema.model.weight.clone()
    with torch.no_grad():
        net.weight.mul_(-2)
    ema.update()
    assert torch.allclose(ema.model.weight, 0.9 * before + 0.1 * net.weight)
    other = EMA(nn.Linear(3, 2), decay=0.9, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.model.weight, ema.model.weight)
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_ema_tracks_the_live_parameters_after_optimizer_steps_and_loads():
    net = nn.Linear(3, 1)
    ema = EMA(net, decay=0.0, warmup=False)  # decay 0: the average is the current weights
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    net.load_state_dict({k: v + 1 for k, v in net.state_dict().items()})
    ema.update()
    assert torch.equal(ema.model.weight, net.weight) and torch.equal(ema.model.bias, net.bias)


# --------------------------------------------------------------------------- t* and levels

def test_t_star_rule():
    levels = [100, 200, 300, 400]
    # clean 0.9, chance 0.1: threshold 0.5, crossed between 200 (0.7) and 300 (0.3): halfway.
    assert t_star(levels, [0.9, 0.7, 0.3, 0.1], clean=0.9) == pytest.approx(250)
    assert t_star(levels, [0.9, 0.9, 0.8, 0.6], clean=0.9) is None
    assert t_star(levels, [0.2, 0.1, 0.1, 0.1], clean=0.9) == pytest.approx(100 * 0.4 / 0.7)
    assert t_star(levels, [0.1, 0.1, 0.1, 0.1], clean=0.08) is None  # classifier at chance: undefined


def test_scaled_levels():
    assert scaled_levels((50, 100, 1000), 1000) == [50, 100, 1000]
    assert scaled_levels((50, 100, 1000), 500) == [25, 50, 500]
    assert scaled_levels((1, 100, 300), 50) == [1, 5, 15]


def test_cosine_schedule_follows_its_closed_form():
    """Nichol & Dhariwal (2021, eq. 17): abar_t = f(t) / f(0) wherever no beta is clipped at 0.999."""
    import math
    T, s = 1000, 0.008
    d = Diffusion(T, schedule="cosine")
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    assert d.schedule == "cosine" and d.betas.dtype == torch.float32 and len(d.betas) == T
    assert d.betas.max().item() == pytest.approx(0.999) and (d.betas > 0).all()
    for t in (1, 100, 500, 900):
        assert d.alphas_cumprod[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-4)
    with pytest.raises(ValueError, match="cosine"):
        Diffusion(T, schedule="quadratic")
