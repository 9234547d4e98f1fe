"""experiments.measurements.decoder_variance: the VAE's test ELBO with a fitted per-pixel decoder variance, against
oracles."""
import math

import pytest
import torch

import vae_solution
from experiments.measurements import decoder_variance as dv


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return vae_solution.VAE(in_channels=3, decoder_features=4, encoder_features=4, z_dim=4, input_size=16).eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_the_floors_of_the_8bit_scale():
    # Unit variance: at best -1/2 log 2 pi nats per pixel, 8.32 bits on the 8-bit scale, above uniform (8 bits).
    assert dv.bits_per_dim_8bit(-0.5 * math.log(2 * math.pi), 1) == pytest.approx(8.320, abs=1e-3)
    # The variance floor: the Gaussian's peak density is one over the bin width 2/255, i.e. exactly 0 bits.
    assert dv.bits_per_dim_8bit(-0.5 * math.log(2 * math.pi * dv.SIGMA2_FLOOR), 1) == pytest.approx(0.0, abs=1e-12)


def test_unit_variance_elbo_is_the_graded_one(model):
    x = images(6, 1)
    got = dv.elbo(model, x, torch.ones(3, 16, 16), 4, torch.Generator().manual_seed(3))
    # Oracle: the same draws (generator, batch by batch) through the graded nll and kl.
    g, want = torch.Generator().manual_seed(3), []
    with torch.no_grad():
        for xb in (x[:4], x[4:]):
            xf = xb.float() / 127.5 - 1
            q = model.encode(xf)
            z = q.mean + q.std * torch.randn(q.mean.shape, generator=g)
            want.append(-model.decode(z).nll(xf) - q.kl())
    torch.testing.assert_close(got, torch.cat(want), rtol=1e-5, atol=1e-3)


def test_fitted_variance_is_the_mean_squared_error_floored(model):
    x = images(5, 2)
    var = dv.fit_variance(model, x, 256, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        xf = x.float() / 127.5 - 1
        q = model.encode(xf)
        mse = (xf - model.decode(q.mean + q.std * torch.randn(q.mean.shape, generator=g)).mean).pow(2).mean(0)
    torch.testing.assert_close(var, mse.clamp_min(dv.SIGMA2_FLOOR))
    assert var.shape == (3, 16, 16) and bool((var >= dv.SIGMA2_FLOOR).all())


def test_the_fitted_variance_beats_unit_variance(model):
    x = images(8, 5)
    # Fitted on the very images and draws it is scored on, sigma_j^2 maximises the reconstruction term
    # pixel by pixel, so it cannot do worse than sigma = 1.
    var = dv.fit_variance(model, x, 256, torch.Generator().manual_seed(6))
    fitted, unit = (dv.elbo(model, x, v, 256, torch.Generator().manual_seed(6)) for v in (var, torch.ones_like(var)))
    assert bool((fitted >= unit).all())
    # Fitted on other images (training images), scored on the test images: still below unit variance.
    bits = dv.fitted_variance_bits(model, images(16, 7), x, 256, torch.Generator().manual_seed(8))
    unit_bits = dv.bits_per_dim_8bit(unit.mean().item(), x[0].numel())
    assert unit_bits > 8.32 and bits < unit_bits
