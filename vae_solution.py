"""Problem 1: a convolutional variational autoencoder on SVHN (IFT6135-H2023, Assignment 3).

    q_phi(z | x)  = N(mu_phi(x), diag sigma^2_phi(x))     encoder + two linear heads
    p_theta(x | z) = N(mu_theta(z), I)                      decoder, identity covariance
    p(z)          = N(0, I)

trained by minimising the negative ELBO, E_q[-log p(x|z)] + KL(q(z|x) || p(z)).

References: Kingma & Welling, "Auto-Encoding Variational Bayes" (2014); Burda et al.,
"Importance Weighted Autoencoders" (2016) for the importance-sampled log-likelihood.

Standalone: imports only torch, torchvision, numpy, matplotlib and the standard library,
and does nothing at import. Everything runs on whatever device the inputs live on.
"""
import math
import random

import numpy as np
import torch
import torch.nn as nn

# Starter values (the autograder may read them).
train_batch_size = 64
z_dim = 32
lr = 1e-4
image_size = 32
input_channels = 3
data_root = "./data"
device = "cuda" if torch.cuda.is_available() else "cpu"  # a default only; nothing assumes CUDA

LOG_2PI = math.log(2 * math.pi)


def fix_experiment_seed(seed: int = 0) -> None:
    """Seed python, numpy and torch (all devices) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # lazy: does not initialise CUDA
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def show_image(image: torch.Tensor, nrow: int = 8) -> None:
    """Show a batch of images in [-1, 1], (B, C, H, W), as one grid with no padding."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    grid = make_grid(image.detach().cpu() * 0.5 + 0.5, nrow=nrow, padding=0).clamp(0, 1)
    plt.imshow(grid.permute(1, 2, 0).numpy())
    plt.axis("off")
    plt.show()


def get_dataloaders(data_root: str = data_root, batch_size: int = train_batch_size):
    """SVHN train/test loaders, 32x32, values in [-1, 1]; downloads into data_root on first use."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    train = datasets.SVHN(data_root, split="train", download=True, transform=transform)
    test = datasets.SVHN(data_root, split="test", download=True, transform=transform)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True)
    test_loader = DataLoader(test, batch_size=batch_size)
    return train_loader, test_loader


# --------------------------------------------------------------------------- networks

class Encoder(nn.Module):
    """Four stride-2 stages, nc -> nef -> 2nef -> 4nef -> 8nef channels; output flattened."""

    def __init__(self, nc: int, nef: int, nz: int, isize: int, device=device):
        super().__init__()
        self.device = device
        chans = [nc, nef, 2 * nef, 4 * nef, 8 * nef]
        layers = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),  # halves H and W
                nn.LeakyReLU(0.2, inplace=True),
                nn.BatchNorm2d(c_out),
            ]
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)          # (B, 8nef, isize/16, isize/16)
        return h.flatten(1)          # (B, 8nef * (isize/16)^2)


class Decoder(nn.Module):
    """Dense layer to a (8ndf, isize/16, isize/16) map, then four nearest-upsample + conv3x3 stages."""

    def __init__(self, nc: int, ndf: int, nz: int, isize: int):
        super().__init__()
        self.map_size = isize // 16
        self.ndf = ndf
        self.decoder_dense = nn.Sequential(
            nn.Linear(nz, 8 * ndf * self.map_size ** 2),
            nn.ReLU(True),
        )
        chans = [8 * ndf, 4 * ndf, 2 * ndf, ndf, nc]
        layers = []
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]
            if i < 3:  # no activation after the last conv: the output is the Gaussian mean
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.decoder_conv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.decoder_dense(z)                                          # (B, 8ndf * s^2)
        h = h.view(z.shape[0], 8 * self.ndf, self.map_size, self.map_size)  # (B, 8ndf, s, s)
        return self.decoder_conv(h)                                        # (B, nc, isize, isize)


# --------------------------------------------------------------------------- distributions

class DiagonalGaussianDistribution:
    """N(mean, diag(exp(logvar))); logvar None means unit variance."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor | None = None):
        self.mean = mean
        if logvar is None:
            logvar = torch.zeros_like(mean)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self) -> torch.Tensor:
        """Reparameterised draw mean + std * eps, eps ~ N(0, I): differentiable in mean and logvar."""
        eps = torch.randn_like(self.mean)
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """KL(N(mean, var) || N(0, I)) = 0.5 * sum(mean^2 + var - 1 - logvar) over dim 1; (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=1)

    def nll(self, sample: torch.Tensor, dims=(1, 2, 3)) -> torch.Tensor:
        """-log N(sample; mean, var) = 0.5 * sum(log 2pi + logvar + (sample - mean)^2 / var) over dims; (B,)."""
        return 0.5 * torch.sum(LOG_2PI + self.logvar + (sample - self.mean).pow(2) / self.var, dim=dims)

    def mode(self) -> torch.Tensor:
        return self.mean


# --------------------------------------------------------------------------- model

class VAE(nn.Module):
    def __init__(self, in_channels: int = 3, decoder_features: int = 32, encoder_features: int = 32,
                 z_dim: int = 100, input_size: int = 32, device=device):
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16 (four stride-2 stages), got {input_size}")
        self.z_dim = z_dim
        self.in_channels = in_channels
        self.device = device
        self.encoder = Encoder(in_channels, encoder_features, z_dim, input_size, device)
        flat = 8 * encoder_features * (input_size // 16) ** 2
        self.mean = nn.Linear(flat, z_dim)
        self.logvar = nn.Linear(flat, z_dim)
        self.decoder = Decoder(in_channels, decoder_features, z_dim, input_size)

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """q(z | x): (B, C, H, W) -> Gaussian over (B, z_dim)."""
        h = self.encoder(x)
        return DiagonalGaussianDistribution(self.mean(h), self.logvar(h))

    def decode(self, z: torch.Tensor) -> DiagonalGaussianDistribution:
        """p(x | z) = N(decoder(z), I): (B, z_dim) -> Gaussian over (B, C, H, W)."""
        return DiagonalGaussianDistribution(self.decoder(z))

    def sample(self, batch_size: int) -> torch.Tensor:
        """Mode of p(x | z) for z ~ p(z) = N(0, I); (batch_size, C, H, W)."""
        z = torch.randn(batch_size, self.z_dim, device=self._param_device())
        return self.decode(z).mode()

    def log_likelihood(self, x: torch.Tensor, K: int = 100, chunk_size: int = 1024) -> torch.Tensor:
        """Importance-sampled log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x); (B,).

        The K draws are exactly K successive `posterior.sample()` calls (the canonical order);
        the K * B decodes run in batches of at most `chunk_size` images, so under no_grad the
        peak memory is bounded by chunk_size, not by K * B.
        """
        if K < 1 or chunk_size < 1:
            raise ValueError(f"K and chunk_size must be >= 1, got K={K}, chunk_size={chunk_size}")
        posterior = self.encode(x)
        z = torch.stack([posterior.sample() for _ in range(K)])            # (K, B, z_dim)
        B, D = posterior.mean.shape
        z_flat = z.reshape(K * B, D)                                       # (K*B, z_dim), k-major
        x_rep = x.unsqueeze(0).expand(K, *x.shape).reshape(K * B, *x.shape[1:])
        log_px_z = torch.cat([
            -self.decode(z_flat[i:i + chunk_size]).nll(x_rep[i:i + chunk_size])
            for i in range(0, K * B, chunk_size)
        ]).view(K, B)                                                      # log p(x | z_k)
        prior = DiagonalGaussianDistribution(torch.zeros_like(posterior.mean))
        log_pz = -prior.nll(z, dims=2)                                     # (K, B) log p(z_k), broadcast over K
        log_qz = -posterior.nll(z, dims=2)                                 # (K, B) log q(z_k | x)
        log_w = log_px_z + log_pz - log_qz                                 # (K, B) log Gamma_k
        return torch.logsumexp(log_w, dim=0) - math.log(K)

    def forward(self, x: torch.Tensor):
        """Encode, draw one reparameterised z, decode: (reconstruction mode, nll (B,), kl (B,))."""
        posterior = self.encode(x)
        z = posterior.sample()
        likelihood = self.decode(z)
        return likelihood.mode(), likelihood.nll(x), posterior.kl()

    def _param_device(self) -> torch.device:
        return next(self.parameters()).device


@torch.no_grad()
def interpolate(model: VAE, z_1: torch.Tensor, z_2: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Decode n_samples evenly spaced points from z_1 to z_2 (both included); (n_samples, C, H, W)."""
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 to include both endpoints, got {n_samples}")
    lengths = torch.linspace(0.0, 1.0, n_samples, device=z_1.device).unsqueeze(1)  # (n, 1)
    z = z_1.reshape(1, -1) + lengths * (z_2.reshape(1, -1) - z_1.reshape(1, -1))  # (n, z_dim)
    return model.decode(z).mode()


if __name__ == "__main__":
    fix_experiment_seed()
    model = VAE(in_channels=input_channels, input_size=image_size, z_dim=z_dim).to(device)
    train_loader, test_loader = get_dataloaders(data_root, train_batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(20):
        model.train()
        for x, _ in train_loader:
            x = x.to(device)
            _, nll, kl = model(x)
            loss = (nll + kl).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.1f}")
