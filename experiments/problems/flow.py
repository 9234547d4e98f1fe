"""A normalizing flow beside the VAE and the DDPM: a RealNVP-style multi-scale flow on 32x32 RGB digits.

Dinh, Sohl-Dickstein and Bengio (2017), "Density estimation using Real NVP", ICLR:
- uniform dequantisation (Sec. 4.1, after Theis et al. 2016): x = (pixel + u) / 256, u ~ U[0, 1)^D, so that
  E_u[log p(x)] - D log 256 is a lower bound on the log-probability of the 8-bit image;
- a logit pre-processing y = logit(alpha + (1 - 2 alpha) x), alpha = 0.05 (Sec. 4.1);
- affine coupling layers y_b = x_b, y_{1-b} = x_{1-b} * exp(s(x_b)) + t(x_b) (eq. 7-9) with checkerboard and
  channel-wise masks b, log|det| = sum s (eq. 6);
- squeeze (C, H, W) -> (4C, H/2, W/2) and a multi-scale split that factors out half the channels at each
  scale (Sec. 3.6), the factored-out half going straight to the Gaussian prior.
Its log-likelihood is exact (change of variables, eq. 3), reported in bits/dim on the 8-bit scale [0, 256)
that the VAE's and the DDPM's bits/dim use (experiments.problems.vae, experiments.measurements.bound). Samples are
drawn at
temperature 1 and 0.7 (z ~ N(0, tau^2 I)).

There is no batch normalisation (RealNVP used it): every layer is a function of its own image, so the
log-determinant is exact in train and eval mode alike, and the last convolution of each coupling network
starts at zero, so the untrained flow is the identity after the logit (tests rely on both).

`python -m experiments flow` trains it in the harness (run folder, resume, lock, provenance, summary.json).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from experiments.harness import config, data, distributed, files, loop, rng, runs
from experiments.harness.config import checked_overrides
from experiments.harness.files import read_json
from experiments.harness.runs import Run
from experiments.measurements import classifier, discriminator, observe, yardstick
from experiments.presentation import figures, names
from experiments.presentation.summaries import FlowSummary

ALPHA = 0.05          # the logit pre-processing's margin (Dinh et al. 2017, Sec. 4.1)
BINS = 256            # 8-bit pixels
TEMPERATURES = (1.0, 0.7)


# --------------------------------------------------------------------------- the flow

def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 spatial block becomes 4 channels (Sec. 3.6)."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // 2, 2, W // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `squeeze`: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    B, C4, H, W = x.shape
    x = x.view(B, C4 // 4, 2, 2, H, W)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(B, C4 // 4, 2 * H, 2 * W)


def checkerboard(H: int, W: int, parity: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, H, W) mask b: 1 where (i + j + parity) is even, the half the coupling keeps."""
    i, j = torch.arange(H, device=device)[:, None], torch.arange(W, device=device)[None, :]
    return ((i + j + parity) % 2 == 0).float().view(1, 1, H, W)


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class CouplingNet(nn.Module):
    """(B, c_in, H, W) -> s, t each (B, c_out, H, W): conv, residual blocks, a zero-initialised conv.
    s = scale * tanh(raw s), a learned per-channel scale bounding the log-scale (as RealNVP's code)."""

    def __init__(self, c_in: int, c_out: int, width: int, blocks: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), *[ResBlock(width) for _ in range(blocks)],
                                 nn.ReLU())
        self.out = nn.Conv2d(width, 2 * c_out, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = nn.Parameter(torch.ones(1, c_out, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.out(self.net(x)).chunk(2, dim=1)
        return self.scale * torch.tanh(s), t


class Coupling(nn.Module):
    """An affine coupling layer (eq. 7-9) with a checkerboard (`mask` "checker0"/"checker1") or channel
    ("channel0"/"channel1": which half is kept) mask. forward: x -> (y, log|det dy/dx|) per image (B,)."""

    def __init__(self, channels: int, mask: str, width: int, blocks: int):
        super().__init__()
        if mask not in ("checker0", "checker1", "channel0", "channel1"):
            raise ValueError(f"mask must be checker0, checker1, channel0 or channel1, got {mask!r}")
        self.mask, self.parity = mask[:-1], int(mask[-1])
        if self.mask == "checker":
            self.net = CouplingNet(channels + 1, channels, width, blocks)   # the mask as an extra input channel
        else:
            self.net = CouplingNet(channels // 2, channels - channels // 2, width, blocks)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel mask: (kept, changed) halves."""
        a, b = x[:, :x.shape[1] // 2], x[:, x.shape[1] // 2:]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([kept, changed] if self.parity == 0 else [changed, kept], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "checker":
            b = checkerboard(x.shape[2], x.shape[3], self.parity, x.device).expand(len(x), 1, -1, -1)
            s, t = self.net(torch.cat([x * b, b], dim=1))
            s, t = s * (1 - b), t * (1 - b)                          # only the unkept half moves
            return x * torch.exp(s) + t, s.flatten(1).sum(1)        # y = b x + (1-b)(x e^s + t)
        kept, changed = self._split(x)
        s, t = self.net(kept)
        return self._join(kept, changed * torch.exp(s) + t), s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.mask == "checker":
            b = checkerboard(y.shape[2], y.shape[3], self.parity, y.device).expand(len(y), 1, -1, -1)
            s, t = self.net(torch.cat([y * b, b], dim=1))             # y * b = x * b: the kept half
            return y * b + (1 - b) * (y - t) * torch.exp(-s)
        kept, changed = self._split(y)
        s, t = self.net(kept)
        return self._join(kept, (changed - t) * torch.exp(-s))


class Scale(nn.Module):
    """One scale of the multi-scale architecture (Sec. 3.6). Not the last: 3 checkerboard couplings, squeeze,
    3 channel couplings, then half the channels factored out. The last: 4 checkerboard couplings."""

    def __init__(self, channels: int, width: int, blocks: int, last: bool):
        super().__init__()
        self.last = last
        masks = ["checker0", "checker1", "checker0"] + ([] if not last else ["checker1"])
        self.checker = nn.ModuleList(Coupling(channels, m, width, blocks) for m in masks)
        self.channel = nn.ModuleList() if last else nn.ModuleList(
            Coupling(4 * channels, m, width, blocks) for m in ("channel0", "channel1", "channel0"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (B, C, H, W) -> (the part that continues, log-det (B,), the factored-out part or None)."""
        logdet = torch.zeros(len(x), device=x.device, dtype=x.dtype)
        for layer in self.checker:
            x, ld = layer(x)
            logdet = logdet + ld
        if self.last:
            return x, logdet, None
        x = squeeze(x)                                               # (B, 4C, H/2, W/2)
        for layer in self.channel:
            x, ld = layer(x)
            logdet = logdet + ld
        C = x.shape[1] // 2
        return x[:, :C], logdet, x[:, C:]                            # continue (B, 2C, ...), factor out (B, 2C, ...)

    def inverse(self, h: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if not self.last:
            h = torch.cat([h, z], dim=1)
            for layer in reversed(self.channel):
                h = layer.inverse(h)
            h = unsqueeze(h)
        for layer in reversed(self.checker):
            h = layer.inverse(h)
        return h


class RealNVP(nn.Module):
    """A multi-scale RealNVP on (B, 3, H, W) inputs after the logit pre-processing; H, W divisible by
    2^(scales - 1). `forward` gives the flat latent z (B, D) and log|det dz/dy| (B,); `inverse` maps back."""

    def __init__(self, *, scales: int = 3, width: int = 64, blocks: int = 2, channels: int = 3):
        super().__init__()
        if scales < 1 or width < 1 or blocks < 0:
            raise ValueError(f"need scales >= 1, width >= 1, blocks >= 0; got {scales}, {width}, {blocks}")
        self.scales = nn.ModuleList(Scale(channels * 2 ** k, width, blocks, last=k == scales - 1)
                                    for k in range(scales))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = 2 ** (len(self.scales) - 1)
        if y.dim() != 4 or y.shape[2] % k or y.shape[3] % k:
            raise ValueError(f"expected images (B, C, H, W) with H and W divisible by {k} ({len(self.scales)} "
                             f"scales), got {tuple(y.shape)}")
        h, logdet, zs = y, torch.zeros(len(y), device=y.device, dtype=y.dtype), []
        for scale in self.scales:
            h, ld, z = scale(h)
            logdet = logdet + ld
            zs.append(h if z is None else z)
        return torch.cat([z.flatten(1) for z in zs], dim=1), logdet   # (B, D): factored-out parts, then the last

    def latent_shapes(self, shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
        """The shapes (C, H, W) of the parts of z, in the order `forward` concatenates them."""
        C, H, W = shape
        shapes = []
        for scale in self.scales:
            if not scale.last:                                       # squeeze (4C, H/2, W/2), half factored out
                C, H, W = 2 * C, H // 2, W // 2
            shapes.append((C, H, W))
        return shapes

    def inverse(self, z: torch.Tensor, shape: tuple[int, int, int] = (3, 32, 32)) -> torch.Tensor:
        """Flat latents (B, D) -> y (B, *shape)."""
        parts, start = [], 0
        for C, H, W in self.latent_shapes(shape):
            parts.append(z[:, start:start + C * H * W].view(len(z), C, H, W))
            start += C * H * W
        h = self.scales[-1].inverse(parts[-1], None)
        for scale, part in zip(reversed(self.scales[:-1]), reversed(parts[:-1])):
            h = scale.inverse(h, part)
        return h


# --------------------------------------------------------------------------- likelihood in bits/dim

def dequantise(images_uint8: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """uint8 pixels and u in [0, 1) of the same shape -> x = (pixel + u) / 256 in [0, 1)."""
    return (images_uint8.float() + u) / BINS


def logit_transform(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x in [0, 1) -> y = logit(a), a = alpha + (1 - 2 alpha) x, and log|dy/dx| per image (B,):
    sum over pixels of log(1 - 2 alpha) - log a - log(1 - a)."""
    a = ALPHA + (1 - 2 * ALPHA) * x
    y = torch.log(a) - torch.log1p(-a)
    return y, (math.log(1 - 2 * ALPHA) - torch.log(a) - torch.log1p(-a)).flatten(1).sum(1)


def log_prob_8bit(flow: RealNVP, images_uint8: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """log p(pixel + u) on the 8-bit scale [0, 256)^D for each image (B,), nats (eq. 3):
        log N(z; 0, I) + log|det dz/dy| + log|dy/dx| - D log 256,  x = (pixel + u) / 256."""
    x = dequantise(images_uint8, u)
    y, logdet_pre = logit_transform(x)
    z, logdet = flow(y)
    D = z.shape[1]
    log_normal = -0.5 * (z ** 2).sum(1) - 0.5 * D * math.log(2 * math.pi)
    return log_normal + logdet + logdet_pre - D * math.log(BINS)


def bits_per_dim(log_prob: torch.Tensor, dims: int) -> torch.Tensor:
    """-log p / (D ln 2): nats per image -> bits per dimension."""
    return -log_prob / (dims * math.log(2))


@torch.no_grad()
def sample(flow: RealNVP, n: int, temperature: float, generator: torch.Generator,
           device: torch.device) -> torch.Tensor:
    """n images at `temperature` (z ~ N(0, tau^2 I)) as uint8 (n, 3, 32, 32) on the host: y = f^{-1}(z),
    x = (sigmoid(y) - alpha) / (1 - 2 alpha), pixel = floor(256 x) clamped to [0, 255]."""
    z = torch.randn(n, 3 * 32 * 32, generator=generator, device=generator.device).to(device) * temperature
    x = (torch.sigmoid(flow.inverse(z)) - ALPHA) / (1 - 2 * ALPHA)
    return (x * BINS).floor().clamp(0, BINS - 1).to(torch.uint8).cpu()


# --------------------------------------------------------------------------- the experiment

@dataclass
class FlowConfig(config.RunConfig):
    epochs: int = 14
    batch_size: int = 64
    lr: float = 1e-3
    scales: int = 3                # 32 -> 16 -> 8: two splits
    width: int = 32                # channels of the coupling networks
    blocks: int = 1                # residual blocks per coupling network
    grad_clip: float = 100.0       # global gradient-norm clip (early steps of a flow can spike)
    precision: str = "fp32"        # an exact log-determinant: fp32 (experiments.harness.execution)
    compile: str = "none"          # eager: the flow's step is not compiled (experiments.harness.execution)
    train_size: int | None = None
    test_size: int | None = None
    snapshot_every: int = 5
    n_samples: int = 64
    n_final_samples: int = 100
    eval_size: int | None = 2000   # test images of the per-epoch and final bits/dim (None: all)
    eval_batch_size: int = 256
    classifier_epochs: int = 6
    discriminator_samples: int = 10000
    discriminator_epochs: int = 5

    def __post_init__(self) -> None:
        config.check_config(self)


PRESETS = {
    # At most a quarter of the DDPM full run's training FLOPs (2.88e15, benchmarks/COST.md): 14 epochs at 0.69
    # GFLOP per training image (counted by yardstick.training_flops_per_image) are 7.0e14, 24%. Width 64 with
    # two residual blocks (4.7 GFLOP per image) would afford 2 epochs. README "Four families" has the numbers.
    "full": FlowConfig(),
    # Seconds on 2 CPU cores: a narrow two-scale flow, a few hundred images.
    # The data, final samples and digit classifier of the VAE's smoke preset, so that the yardstick compares them.
    "smoke": FlowConfig(preset="smoke", epochs=2, scales=2, width=8, blocks=1, train_size=640, test_size=64,
                        snapshot_every=1, n_samples=16, eval_size=32, eval_batch_size=64, classifier_epochs=3,
                        discriminator_samples=64, discriminator_epochs=2),
}


def config_for(preset: str, **overrides) -> FlowConfig:
    return replace(PRESETS[preset], **checked_overrides(PRESETS, preset, overrides, "flow"))


def run_name(cfg: FlowConfig) -> str:
    return names.flow_run_name(cfg.preset)


def build_model(cfg: FlowConfig) -> RealNVP:
    return RealNVP(scales=cfg.scales, width=cfg.width, blocks=cfg.blocks)


def training_loss(flow: RealNVP, images_uint8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean bits/dim of a batch, fresh dequantisation noise u ~ U[0, 1)^D per image: the loss minimised
    (forward KL from the data to the model, up to the data's entropy)."""
    u = torch.rand(images_uint8.shape, generator=generator, device=images_uint8.device)
    return bits_per_dim(log_prob_8bit(flow, images_uint8, u), images_uint8[0].numel()).mean()


@torch.no_grad()
def test_bits_per_dim(flow: RealNVP, images_uint8: torch.Tensor, batch_size: int, generator: torch.Generator,
                      device: torch.device) -> float:
    """Mean bits/dim over images (uint8 on any device), one dequantisation draw each from `generator` (CPU)."""
    flow.eval()
    total = 0.0
    for i in range(0, len(images_uint8), batch_size):
        x = images_uint8[i:i + batch_size].to(device)
        u = torch.rand(x.shape, generator=generator).to(device)
        total += bits_per_dim(log_prob_8bit(flow, x, u), x[0].numel()).sum().item()
    return total / len(images_uint8)


@runs.locked
def run(cfg: FlowConfig, out: str | Path, *, resume: bool = False) -> Path:
    """Train (or resume) a flow run in folder `out`, write its artifacts, figures and summary."""
    run_, ex, train, test = runs.start(cfg, out, "svhn", resume=resume, compiles=False)
    device = ex.device
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    shuffle, dequant = rng.stream(cfg.seed, "shuffle"), rng.stream(cfg.seed, "dequantisation", device)
    train_images = train.images.to(device)
    eval_images = test.subset(cfg.eval_size, rng.stream_seed(cfg.seed, "eval-images")).images

    def train_epoch(epoch: int) -> dict:
        model.train()
        total = torch.zeros((), device=device)
        batches = data.iterate_batches(len(train), cfg.batch_size, shuffle=True, drop_last=True, generator=shuffle)
        bar, t0 = loop.progress(batches, len(train) // cfg.batch_size, epoch), time.perf_counter()
        for step, idx in enumerate(bar, 1):
            with ex.autocast():
                loss = training_loss(model, train_images[idx.to(device)], dequant)
            optimizer.zero_grad(set_to_none=True)
            ex.backward(loss)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            ex.step(optimizer)
            total += loss.detach()
            loop.show_rate(bar, step, total, cfg.batch_size, t0)
        return {"loss": total.item() / step, "images": step * cfg.batch_size}

    def after_epoch(epoch: int) -> dict:
        bpd = test_bits_per_dim(model, eval_images, cfg.eval_batch_size, rng.stream(cfg.seed, "eval-noise"), device)
        if epoch in loop.snapshot_epochs(cfg.snapshot_every, cfg.epochs):   # temperature 1, the same z every epoch
            g = rng.stream(cfg.seed, "snapshot-noise", device)
            run_.save_artifact(f"samples/epoch_{epoch:03d}.pt", sample(model, cfg.n_samples, 1.0, g, device))
        return {"test_bits_per_dim": bpd}

    loop.fit(run_, epochs=cfg.epochs, device=device, state={"model": model, "optimizer": optimizer, "precision": ex},
             generators={"shuffle": shuffle, "dequantisation": dequant}, train_epoch=train_epoch,
             after_epoch=after_epoch, desc="flow", lr=cfg.lr)
    # Under torchrun this family is not data-parallel: every rank takes the same whole-batch steps, and rank 0
    # alone evaluates and writes (experiments.harness.distributed).
    if not distributed.is_writer():
        return run_.dir
    if not run_.finished():
        final_artifacts(run_, cfg, model, train, test, eval_images, device)   # written last
    flow_figures(run_.dir)
    return run_.dir


def temperature_name(tau: float) -> str:
    """0.7 -> "T0.7": the artifact folder of samples at that temperature."""
    return f"T{tau:g}"


@torch.no_grad()
def final_artifacts(run_: Run, cfg: FlowConfig, model: RealNVP, train: data.ImageSet, test: data.ImageSet,
                    eval_images: torch.Tensor, device: torch.device) -> None:
    """Final samples at both temperatures, the exact test bits/dim, the yardstick; summary.json last."""
    model.eval()
    for tau in TEMPERATURES:
        g = rng.stream(cfg.seed, f"final-samples-{temperature_name(tau)}", device)
        run_.save_artifact(f"final_samples_{temperature_name(tau)}.pt", sample(model, cfg.n_final_samples, tau, g,
                                                                               device))
    samples = files.load_artifact(run_.dir, f"final_samples_{temperature_name(1.0)}.pt")
    run_.save_artifact("final_samples.pt", samples)   # temperature 1: the model's own distribution
    bpd = test_bits_per_dim(model, eval_images, cfg.eval_batch_size, rng.stream(cfg.seed, "final-eval-noise"),
                            device)
    digits, accuracy = classifier.for_run(train, test, epochs=cfg.classifier_epochs, device=device,
                                          seed=rng.stream_seed(cfg.seed, "classifier"))
    many = torch.cat([sample(model, min(cfg.eval_batch_size, cfg.discriminator_samples - i), 1.0,
                             rng.stream(cfg.seed, f"discriminator-samples-{i}", device), device)
                      for i in range(0, cfg.discriminator_samples, cfg.eval_batch_size)])
    drs = discriminator.for_run(run_, test, many, digits, epochs=cfg.discriminator_epochs, device=device,
                                seed=cfg.seed)
    g64 = rng.stream(cfg.seed, "timed-samples", device)
    measures = yardstick.measure(samples, observe.reference_images(test, len(samples), cfg.seed), digits,
                                 sample64=lambda: sample(model, 64, 1.0, g64, device), models=[model],
                                 flops_per_image=yardstick.training_flops_per_image("flow", cfg), device=device)
    metrics = run_.metrics()
    FlowSummary(
        epochs=cfg.epochs,
        dataset=read_json(run_.dir, "provenance.json")["source"],
        bits_per_dim=bpd,
        bits_per_dim_n_images=len(eval_images),
        final_train_loss=metrics[-1]["loss"],
        classifier_test_accuracy=accuracy,
        observations=observe.observations(digits, samples, observe.reference_images(test, len(samples), cfg.seed),
                                          device),
        discriminator=drs,
        train_wall_seconds=sum(m["train_seconds"] for m in metrics),
        wall_seconds=metrics[-1]["wall_seconds"],
        **measures,
    ).write(run_.dir)


def flow_figures(run_dir: str | Path) -> list[Path]:
    """The flow's figures, from its run folder alone: loss curves, the final samples at each temperature."""
    paths = [figures.loss_curves(run_dir, {"loss": "train bits/dim", "test_bits_per_dim": "test bits/dim"}, "Flow"),
             figures.snapshots(run_dir, "Flow")]
    for tau in TEMPERATURES:
        name = temperature_name(tau)
        paths.append(figures.image_grid(run_dir, f"final_samples_{name}.pt", f"RealNVP samples, temperature {tau:g}",
                                        f"samples_{name}.png"))
    return paths
