"""Problem 1.3 measured: what the graded decoder's fixed unit variance costs in bits per dimension.

The graded decoder is p(x|z) = N(mu_theta(z), I) on pixels in [-1, 1]. Since log N(x_j; mu_j, 1) <= -1/2 log 2 pi,
log p(x) <= -D/2 log 2 pi whatever the encoder and the decoder mean: on the 8-bit scale no such model goes below
1/2 log2(2 pi) + log2(127.5) = 8.32 bits per dimension, worse than a uniform distribution over 256 levels (8).

Here the encoder and the decoder mean stay as trained, and the decoder gets a per-pixel variance

    sigma_j^2 = E_x E_{q(z|x)} (x_j - mu_theta,j(z))^2        the maximiser over sigma_j of E_q log p(x|z)

fitted on training images (one z per image), floored at SIGMA2_FLOOR. The test ELBO of that decoder,

    E_{q(z|x)} log N(x; mu_theta(z), diag sigma^2) - KL(q(z|x) || N(0, I))      (one z per image)

is a lower bound on its log p(x), so its bits per dimension is an upper bound on that model's. Fitting on the
training images, not on the test images it is evaluated on, keeps it from being optimistic.
"""
from __future__ import annotations

import math

import torch

import vae_solution
from experiments.harness import data
from experiments.measurements.bound import (
    LOG_HALF_BINS,  # [-1, 1] -> the 8-bit scale: a density gains log 127.5 per dimension
)

# The variance at which a Gaussian's peak density is one over a pixel's bin width 2/255: below it one pixel could
# score under 0 bits on the 8-bit scale, better than any distribution over the 256 levels can.
SIGMA2_FLOOR = (2 / 255) ** 2 / (2 * math.pi)


def bits_per_dim_8bit(log_p: float, D: int) -> float:
    """-log p(x) / (D ln 2) on the 8-bit scale, for a log-density log_p (nats) of pixels in [-1, 1]."""
    return -(log_p - D * LOG_HALF_BINS) / (D * math.log(2))


def _batches(images: torch.Tensor, batch_size: int, device: torch.device):
    """uint8 images, in order, as float batches in [-1, 1] on `device`."""
    for x in images.split(batch_size):
        yield data.to_float(x).to(device)


def _decode_draw(model, x: torch.Tensor, generator: torch.Generator):
    """q(z|x) and mu_theta(z) for one z ~ q(z|x) per image, drawn from `generator`: (posterior, (B, C, H, W))."""
    posterior = model.encode(x)
    eps = torch.randn(posterior.mean.shape, generator=generator, device=generator.device).to(x.device)
    # The graded decoder's mean; a standard decoder runs folded (the same function, faster), as in log_likelihood.
    decoder_mean = vae_solution._FoldedDecoder.of(model.decoder) or (lambda z: model.decode(z).mean)
    return posterior, decoder_mean(posterior.mean + posterior.std * eps)


@torch.no_grad()
def fit_variance(model, images: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """sigma_j^2 = mean over the images of (x_j - mu_theta,j(z))^2, z ~ q(z|x), floored; (C, H, W)."""
    device = next(model.parameters()).device
    total = torch.zeros(images.shape[1:], device=device)
    for x in _batches(images, batch_size, device):
        total += (x - _decode_draw(model, x, generator)[1]).pow(2).sum(0)
    return (total / len(images)).clamp_min(SIGMA2_FLOOR)


@torch.no_grad()
def elbo(model, images: torch.Tensor, var: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """ELBO of each image under p(x|z) = N(mu_theta(z), diag var), one z ~ q(z|x) per image; (N,) nats."""
    device = next(model.parameters()).device
    var = var.to(device)
    out = []
    for x in _batches(images, batch_size, device):
        posterior, mu = _decode_draw(model, x, generator)
        log_px_z = -0.5 * (torch.log(2 * math.pi * var) + (x - mu).pow(2) / var).flatten(1).sum(1)  # (B,)
        out.append(log_px_z - posterior.kl())
    return torch.cat(out)


def fitted_variance_bits(model, train: torch.Tensor, test: torch.Tensor, batch_size: int,
                         generator: torch.Generator) -> float:
    """Test ELBO in bits per dimension (8-bit scale) with a per-pixel decoder variance fitted on `train`.
    train, test: uint8 images (N, C, H, W); the model in eval mode."""
    var = fit_variance(model, train, batch_size, generator)
    return bits_per_dim_8bit(elbo(model, test, var, batch_size, generator).mean().item(), var.numel())
