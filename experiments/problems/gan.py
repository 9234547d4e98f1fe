"""A GAN beside the VAE and the DDPM: a DCGAN at 32x32 with the non-saturating loss and an EMA generator.

Radford, Metz and Chintala (2016), "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks", ICLR: strided (transposed) convolutions, batch norm in the generator, LeakyReLU(0.2)
in the discriminator, Adam(2e-4, beta1 = 0.5), N(0, 0.02) initialisation. Losses of Goodfellow et al. (2014),
with logits h = D's output and softplus(a) = log(1 + e^a):
    discriminator  L_D = E_data softplus(-h(x)) + E_z softplus(h(G(z)))   = -E log D(x) - E log(1 - D(G(z)))
    generator      L_G = E_z softplus(-h(G(z)))                              = -E log D(G(z))   (non-saturating)
At D's optimum, L_D = 2 log 2 - 2 JSD(p_data, p_G): the game minimises the Jensen-Shannon divergence
(Goodfellow et al., Theorem 1), which Part III's discriminator (experiments.measurements.discriminator) estimates
afterwards.
Options: spectral normalisation of D's layers (Miyato et al. 2018, "Spectral Normalization for Generative
Adversarial Networks", ICLR; D then has no batch norm), and an exponential moving average of G's weights
(experiments.problems.diffusion.EMA, as the DDPM's), from which every sample is drawn (`sample`).

`python -m experiments gan` trains it in the harness (run folder, resume, lock, provenance, summary.json).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn

from experiments.harness import config, data, distributed, loop, rng, runs
from experiments.harness.config import checked_overrides
from experiments.harness.files import read_json
from experiments.harness.runs import Run
from experiments.measurements import classifier, discriminator, observe, yardstick
from experiments.presentation import figures, names
from experiments.presentation.summaries import GANSummary
from experiments.problems.diffusion import EMA

# --------------------------------------------------------------------------- networks

class Generator(nn.Module):
    """z (B, z_dim) -> images (B, 3, 32, 32) in [-1, 1]: a 4x4 map, then three stride-2 transposed convolutions
    (4 -> 8 -> 16 -> 32), batch norm and ReLU between, tanh at the end."""

    def __init__(self, *, z_dim: int = 100, width: int = 64):
        super().__init__()
        self.z_dim = z_dim

        def up(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]

        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, 4 * width, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * width), nn.ReLU(True),
            *up(4 * width, 2 * width),                                   # (B, 2w, 8, 8)
            *up(2 * width, width),                                       # (B, w, 16, 16)
            nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Tanh())            # (B, 3, 32, 32)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.z_dim, 1, 1))               # (B, z_dim, 1, 1) -> (B, 4w, 4, 4) ...


class Critic(nn.Module):
    """images (B, 3, 32, 32) -> logits h (B,): three stride-2 convolutions (32 -> 16 -> 8 -> 4) with LeakyReLU,
    then a 4x4 convolution to one logit. Batch norm after the second and third, or spectral norm on every layer."""

    def __init__(self, *, width: int = 64, spectral_norm: bool = False):
        super().__init__()
        wrap = sn if spectral_norm else (lambda m: m)
        norm = (lambda c: nn.Identity()) if spectral_norm else nn.BatchNorm2d

        def down(c_in: int, c_out: int, normalise: bool) -> list[nn.Module]:
            return [wrap(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not normalise or spectral_norm)),
                    norm(c_out) if normalise else nn.Identity(), nn.LeakyReLU(0.2, True)]

        self.net = nn.Sequential(*down(3, width, False),                 # (B, w, 16, 16)
                                 *down(width, 2 * width, True),          # (B, 2w, 8, 8)
                                 *down(2 * width, 4 * width, True),      # (B, 4w, 4, 4)
                                 wrap(nn.Conv2d(4 * width, 1, 4, 1, 0)))  # (B, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) convolution weights, N(1, 0.02) batch-norm scales (Radford et al., Sec. 4)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        weight = module.parametrizations.weight.original if hasattr(module, "parametrizations") else module.weight
        nn.init.normal_(weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class GAN(nn.Module):
    """G and D together (one module, so that one state_dict and one parameter count hold both)."""

    def __init__(self, *, z_dim: int = 100, width: int = 64, spectral_norm: bool = False):
        super().__init__()
        self.G = Generator(z_dim=z_dim, width=width)
        self.D = Critic(width=width, spectral_norm=spectral_norm)
        self.apply(dcgan_init)


# --------------------------------------------------------------------------- losses

def loss_d(h_real: torch.Tensor, h_fake: torch.Tensor) -> torch.Tensor:
    """L_D = mean softplus(-h(x)) + mean softplus(h(G(z))) = -mean log D(x) - mean log(1 - D(G(z))); >= 0."""
    return F.softplus(-h_real).mean() + F.softplus(h_fake).mean()


def loss_g(h_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating L_G = mean softplus(-h(G(z))) = -mean log D(G(z)); >= 0, falls as D is fooled."""
    return F.softplus(-h_fake).mean()


def train_jsd(loss_d_value: float) -> float:
    """log 2 - L_D / 2: the JSD bound that D's current loss implies (exact at D's optimum), nats."""
    return math.log(2) - loss_d_value / 2


def latent(n: int, z_dim: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """z ~ N(0, I), (n, z_dim), drawn from `generator` (on its device) and moved to `device`."""
    if generator is None:
        return torch.randn(n, z_dim, device=device)
    return torch.randn(n, z_dim, generator=generator, device=generator.device).to(device)


def discriminator_step_loss(gan: GAN, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """L_D on a batch of real images x (B, 3, 32, 32) in [-1, 1] and as many fresh fakes (G not differentiated)."""
    with torch.no_grad():
        fake = gan.G(latent(len(x), gan.G.z_dim, generator, x.device))
    return loss_d(gan.D(x), gan.D(fake))


def generator_step_loss(gan: GAN, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """L_G on n fresh fakes (gradients reach G through D)."""
    device = next(gan.G.parameters()).device
    return loss_g(gan.D(gan.G(latent(n, gan.G.z_dim, generator, device))))


@torch.no_grad()
def sample(ema: EMA, n: int, generator: torch.Generator, device: torch.device, batch: int = 500) -> torch.Tensor:
    """n images of the EMA generator (ema.model, eval mode: batch norm with its running statistics) as uint8
    (n, 3, 32, 32) on the host, `batch` at a time, z from `generator`."""
    G = ema.model
    return torch.cat([data.to_uint8(G(latent(min(batch, n - i), G.z_dim, generator, device)).cpu())
                      for i in range(0, n, batch)])


# --------------------------------------------------------------------------- the experiment

@dataclass
class GANConfig(config.RunConfig):
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-4               # both networks (Radford et al.)
    beta1: float = 0.5
    z_dim: int = 100
    width: int = 64
    spectral_norm: bool = False    # in D (then D has no batch norm)
    ema_decay: float = 0.999       # of G's weights; samples come from the average
    precision: str = "fp32"        # autocast for both networks' forward passes (experiments.harness.execution)
    compile: str = "none"          # eager: the GAN's two steps are not compiled (experiments.harness.execution)
    train_size: int | None = None
    test_size: int | None = None
    snapshot_every: int = 5
    n_samples: int = 64
    n_final_samples: int = 100
    eval_batch_size: int = 500
    classifier_epochs: int = 6
    discriminator_samples: int = 10000
    discriminator_epochs: int = 5

    def __post_init__(self) -> None:
        config.check_config(self)


PRESETS = {
    # At most a quarter of the DDPM full run's training FLOPs (2.88e15, benchmarks/COST.md): 20 epochs at 0.46
    # GFLOP per training image (a D step and a G step, yardstick.training_flops_per_image) are 6.7e14, 23%.
    "full": GANConfig(),
    # Seconds on 2 CPU cores: narrow networks, a few hundred images.
    # The data, final samples and digit classifier of the VAE's smoke preset, so that the yardstick compares them.
    "smoke": GANConfig(preset="smoke", epochs=2, z_dim=16, width=8, train_size=640, test_size=64, snapshot_every=1,
                       n_samples=16, eval_batch_size=64, classifier_epochs=3, discriminator_samples=64,
                       discriminator_epochs=2),
}


def config_for(preset: str, **overrides) -> GANConfig:
    return replace(PRESETS[preset], **checked_overrides(PRESETS, preset, overrides, "GAN"))


def run_name(cfg: GANConfig) -> str:
    return names.gan_run_name(cfg.preset)


def build_model(cfg: GANConfig) -> GAN:
    return GAN(z_dim=cfg.z_dim, width=cfg.width, spectral_norm=cfg.spectral_norm)


class Optimisers:
    """D's and G's Adam together, saved as one entry of the checkpoint."""

    def __init__(self, gan: GAN, lr: float, beta1: float):
        self.d = torch.optim.Adam(gan.D.parameters(), lr=lr, betas=(beta1, 0.999))
        self.g = torch.optim.Adam(gan.G.parameters(), lr=lr, betas=(beta1, 0.999))
        self.param_groups = [*self.d.param_groups, *self.g.param_groups]   # loop.fit sets a resumed lr here

    def state_dict(self) -> dict:
        return {"d": self.d.state_dict(), "g": self.g.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.d.load_state_dict(state["d"])
        self.g.load_state_dict(state["g"])


@runs.locked
def run(cfg: GANConfig, out: str | Path, *, resume: bool = False) -> Path:
    """Train (or resume) a GAN run in folder `out`, write its artifacts, figures and summary."""
    run_, ex, train, test = runs.start(cfg, out, "svhn", resume=resume, compiles=False)
    device = ex.device
    gan = build_model(cfg).to(device)
    optimiser = Optimisers(gan, cfg.lr, cfg.beta1)
    ema = EMA(gan.G, cfg.ema_decay)
    shuffle, noise = rng.stream(cfg.seed, "shuffle"), rng.stream(cfg.seed, "latents", device)
    train_images = train.images.to(device)

    def train_epoch(epoch: int) -> dict:
        gan.train()
        sums = torch.zeros(2, device=device)     # L_D, L_G summed over steps (no per-step sync)
        batches = data.iterate_batches(len(train), cfg.batch_size, shuffle=True, drop_last=True, generator=shuffle)
        bar, t0 = loop.progress(batches, len(train) // cfg.batch_size, epoch), time.perf_counter()
        for step, idx in enumerate(bar, 1):
            x = data.to_float(train_images[idx.to(device)])
            with ex.autocast():
                ld = discriminator_step_loss(gan, x, noise)
            optimiser.d.zero_grad(set_to_none=True)
            ex.backward(ld)
            ex.step(optimiser.d)
            with ex.autocast():
                lg = generator_step_loss(gan, cfg.batch_size, noise)
            optimiser.g.zero_grad(set_to_none=True)
            ex.backward(lg)
            ex.step(optimiser.g)
            ema.update()
            sums += torch.stack([ld.detach().float(), lg.detach().float()])
            loop.show_rate(bar, step, sums[0], cfg.batch_size, t0)
        mean_d, mean_g = (sums / step).tolist()
        # "loss" (checked finite, shown in the bar) is D's: 2 log 2 - 2 JSD at D's optimum.
        return {"loss": mean_d, "loss_g": mean_g, "jsd_train": train_jsd(mean_d), "images": step * cfg.batch_size}

    def after_epoch(epoch: int) -> dict:
        if epoch in loop.snapshot_epochs(cfg.snapshot_every, cfg.epochs):   # the same z every epoch
            run_.save_artifact(f"samples/epoch_{epoch:03d}.pt",
                               sample(ema, cfg.n_samples, rng.stream(cfg.seed, "snapshot-noise", device), device))
        return {}

    loop.fit(run_, epochs=cfg.epochs, device=device, generators={"shuffle": shuffle, "latents": noise},
             state={"model": gan, "optimizer": optimiser, "ema": ema, "precision": ex},
             train_epoch=train_epoch, after_epoch=after_epoch, desc="GAN", lr=cfg.lr)
    # Under torchrun this family is not data-parallel: every rank takes the same whole-batch steps, and rank 0
    # alone evaluates and writes (experiments.harness.distributed).
    if not distributed.is_writer():
        return run_.dir
    if not run_.finished():
        final_artifacts(run_, cfg, gan, ema, train, test, device)   # written last
    gan_figures(run_.dir)
    return run_.dir


@torch.no_grad()
def final_artifacts(run_: Run, cfg: GANConfig, gan: GAN, ema: EMA, train: data.ImageSet, test: data.ImageSet,
                    device: torch.device) -> None:
    """Final samples of the EMA generator, Part III's discriminator, the yardstick; summary.json last."""
    samples = sample(ema, cfg.n_final_samples, rng.stream(cfg.seed, "final-samples", device), device)
    run_.save_artifact("final_samples.pt", samples)
    digits, accuracy = classifier.for_run(train, test, epochs=cfg.classifier_epochs, device=device,
                                          seed=rng.stream_seed(cfg.seed, "classifier"))
    many = sample(ema, cfg.discriminator_samples, rng.stream(cfg.seed, "discriminator-samples", device), device,
                  cfg.eval_batch_size)
    drs = discriminator.for_run(run_, test, many, digits, epochs=cfg.discriminator_epochs, device=device,
                                seed=cfg.seed)
    reference = observe.reference_images(test, len(samples), cfg.seed)
    g64 = rng.stream(cfg.seed, "timed-samples", device)
    measures = yardstick.measure(samples, reference, digits, sample64=lambda: sample(ema, 64, g64, device),
                                 models=[gan], flops_per_image=yardstick.training_flops_per_image("gan", cfg),
                                 device=device)
    metrics = run_.metrics()
    GANSummary(
        epochs=cfg.epochs,
        dataset=read_json(run_.dir, "provenance.json")["source"],
        spectral_norm=cfg.spectral_norm,
        final_loss_d=metrics[-1]["loss"],
        final_loss_g=metrics[-1]["loss_g"],
        final_jsd_train=metrics[-1]["jsd_train"],
        classifier_test_accuracy=accuracy,
        observations=observe.observations(digits, samples, reference, device),
        discriminator=drs,
        train_wall_seconds=sum(m["train_seconds"] for m in metrics),
        wall_seconds=metrics[-1]["wall_seconds"],
        **measures,
    ).write(run_.dir)


def gan_figures(run_dir: str | Path) -> list[Path]:
    """The GAN's figures, from its run folder alone: both losses, samples over training, the final samples."""
    return [figures.loss_curves(run_dir, {"loss": "discriminator", "loss_g": "generator (non-saturating)"}, "GAN"),
            figures.snapshots(run_dir, "GAN (EMA generator)"),
            figures.image_grid(run_dir, "final_samples.pt", "DCGAN samples (EMA generator)", "samples.png")]
