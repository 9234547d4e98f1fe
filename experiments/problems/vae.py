"""Problem 1: train the graded VAE on SVHN (or the synthetic stand-in) and log every artifact of 1.3.

Per epoch: train loss (negative ELBO) and its two terms, test loss, timings (metrics.jsonl);
every `snapshot_every` epochs: samples from fixed latent noise and reconstructions of fixed
test images. At the end: a final sample grid, per-class latent profiles, interpolations and
the importance-sampled test log-likelihood (K = 100) in summary.json. figures.py draws the PNGs.

More than one GPU (torchrun; experiments.harness.distributed): every rank takes its contiguous slice of the
same global batch. The graded forward draws its reparameterisation noise eps ~ N(0, I) from the global RNG
for the batch it is given, so a rank given half the batch would draw other numbers than one process; under
DDP the step runs `SharedNoise` instead: the graded encode and decode, with eps drawn for the whole global
batch exactly as the graded forward draws it (randn_like of the batch's posterior mean) and sliced, so two
ranks take the step one process takes. The graded encoder's batch norms are synchronised over the ranks
(distributed.sync_batch_norm), so they normalise over the global batch as in one process. One process runs the
graded forward itself, unchanged. The test loss,
snapshots and the final evaluation run on rank 0 alone while the others wait.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

import vae_solution
from experiments.harness import config, data, distributed, files, loop, rng, runs
from experiments.harness.config import checked_overrides
from experiments.harness.execution import Execution, Timings
from experiments.harness.files import read_json
from experiments.harness.runs import Run
from experiments.measurements import amortisation, classifier, decoder_variance, discriminator, observe, yardstick
from experiments.presentation import figures, names
from experiments.presentation.summaries import VAESummary


@dataclass
class VAEConfig(config.RunConfig):
    # Assignment hyperparameters.
    epochs: int = 30               # 30 x 1144 Adam steps; see README "Problem 1" for why 30
    batch_size: int = 64
    z_dim: int = 32
    lr: float = 1e-4
    precision: str = "auto"        # training autocast: auto | fp32 | bf16 | fp16 (experiments.harness.execution)
    compile: str = "auto"          # auto | none | default | reduce-overhead (experiments.harness.execution)
    # How much data (None: the whole split).
    train_size: int | None = None
    test_size: int | None = None
    # Artifacts.
    snapshot_every: int = 5        # samples and reconstructions every N epochs (and at the last)
    n_samples: int = 64            # fixed-noise sample grid, 8 x 8
    n_reconstructions: int = 32
    n_final_samples: int = 100     # final grid, 10 x 10
    profile_size: int | None = None    # training images averaged into the class latent profiles
    n_interpolation_pairs: int = 6
    n_interpolation_steps: int = 10
    # Importance-sampled log-likelihood.
    ll_K: int = 100
    ll_size: int | None = None     # test images evaluated (None: all)
    ll_chunk: int | None = None    # decodes per batch in log_likelihood (bounds memory); None: 4096 on GPU, 256 on CPU
    eval_batch_size: int = 256
    # The digit classifier that reads the samples (report observations), as in the DDPM run.
    classifier_epochs: int = 6
    # Q1.3-1.4 measured (experiments.measurements.amortisation): each test image's own Gaussian q, by Adam from the
    # encoder's.
    gap_size: int | None = 500     # test images (None: all)
    gap_steps: int = 300           # at most this many Adam steps ...
    gap_lr: float = 1e-2
    gap_draws: int = 2             # ... each on this many fresh draws of z per image
    gap_eval_every: int = 25       # every N steps, each image keeps its best q on fixed noise ...
    gap_eval_draws: int = 8        # ... of this many draws
    gap_tol: float = 0.01          # stop once the mean best ELBO rose by less than tol nats ...
    gap_patience: int = 4          # ... over this many checks
    gap_test_draws: int = 64       # fresh draws the final ELBOs are estimated on
    # Question 3 on the samples (experiments.measurements.discriminator): samples, and as many test images, split in
    # half
    # for training and held-out estimates; each of the three discriminators' epochs over its training half.
    discriminator_samples: int = 10000
    discriminator_epochs: int = 5

    def __post_init__(self) -> None:
        config.check_config(self)


PRESETS = {
    "full": VAEConfig(),
    # A few hundred images, 2 epochs: offline, under 2 minutes on 2 CPU cores. The larger
    # learning rate only makes the few steps visible in the figures.
    "smoke": VAEConfig(preset="smoke", epochs=2, lr=2e-3, train_size=640, test_size=64, snapshot_every=1,
                       profile_size=640, ll_size=32, n_interpolation_pairs=3, classifier_epochs=3,
                       gap_size=4, gap_steps=20, gap_eval_every=5, gap_test_draws=16,
                       discriminator_samples=64, discriminator_epochs=2),
}


def config_for(preset: str, **overrides) -> VAEConfig:
    return replace(PRESETS[preset], **checked_overrides(PRESETS, preset, overrides, "VAE"))


def run_name(cfg: VAEConfig) -> str:
    return names.vae_run_name(cfg.preset)


def build_model(cfg: VAEConfig) -> vae_solution.VAE:
    return vae_solution.VAE(in_channels=3, input_size=32, z_dim=cfg.z_dim,
                            decoder_features=32, encoder_features=32)


def in_order(images: torch.Tensor, batch_size: int, device: torch.device):
    """uint8 images, in order, as float batches in [-1, 1] on `device` (evaluation passes)."""
    for idx in data.iterate_batches(len(images), batch_size, shuffle=False, drop_last=False):
        yield data.to_float(images[idx.to(images.device)]).to(device)


@runs.locked
def run(cfg: VAEConfig, out: str | Path, *, resume: bool = False) -> Path:
    """Train (or resume) a VAE run in folder `out`, write its artifacts, figures and summary."""
    run_, ex, train, test = runs.start(cfg, out, "svhn", resume=resume, trial=trial(cfg))
    device = ex.device
    model = build_model(cfg).to(device)  # the default layout: the graded decoder reshapes with view
    if distributed.is_distributed():  # the encoder's batch norms over the global batch
        model = distributed.sync_batch_norm(model, device)
        distributed.on_writer(lambda: run_.write_json("provenance.json", {
            **read_json(run_.dir, "provenance.json"), "sync_batch_norm": True}))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    local = distributed.local_slice(cfg.batch_size)  # this rank's share of each global batch
    net = distributed.wrap(SharedNoise(model, cfg.batch_size, local), device) if distributed.is_distributed() \
        else None
    step = ex.compiled(training_step(model, optimizer, ex, net=net), "VAE training step")
    shuffle = rng.stream(cfg.seed, "shuffle")
    # Fixed latent noise and test images for the snapshots, the same every epoch.
    z_fixed = torch.randn(cfg.n_samples, cfg.z_dim, generator=rng.stream(cfg.seed, "snapshot-noise")).to(device)
    recon_idx = torch.randperm(len(test), generator=rng.stream(cfg.seed, "snapshot-images"))
    x_recon = data.to_float(test.images[recon_idx[:cfg.n_reconstructions]]).to(device)
    train_images = train.images.to(device)   # uint8 on the device: 73257 SVHN images are 225 MB
    test_images = test.images.to(device)
    snapshots = loop.snapshot_epochs(cfg.snapshot_every, cfg.epochs)

    def train_epoch(epoch: int) -> dict:
        model.train()
        sums = torch.zeros(3, device=device)  # loss, nll, kl summed over batches (no per-step sync)
        # drop_last: every step has the same shapes, so a compiled step never recompiles
        batches = data.iterate_batches(len(train), cfg.batch_size, shuffle=True, drop_last=True, generator=shuffle)
        bar, t0 = loop.progress(batches, len(train) // cfg.batch_size, epoch), time.perf_counter()
        for i, idx in enumerate(bar, 1):
            sums += step(data.to_float(train_images[idx[local].to(device)]))  # this rank's share
            loop.show_rate(bar, i, sums[0], cfg.batch_size, t0)
        loss, nll, kl = (distributed.mean(sums) / i).tolist()
        return {"loss": loss, "nll": nll, "kl": kl, "images": i * cfg.batch_size}

    @torch.no_grad()
    def after_epoch(epoch: int) -> dict:
        metrics = test_losses(model, test_images, cfg.eval_batch_size, device)
        if epoch in snapshots:
            save_snapshot(run_, epoch, model, z_fixed, x_recon)
        return metrics

    loop.fit(run_, epochs=cfg.epochs, device=device, state={"model": model, "optimizer": optimizer, "precision": ex},
             generators={"shuffle": shuffle}, train_epoch=train_epoch, after_epoch=after_epoch, desc="VAE", lr=cfg.lr)
    if not distributed.is_writer():  # the final evaluation and the figures: rank 0's
        return run_.dir
    if not run_.finished():
        final_artifacts(run_, cfg, model, train, test, device)  # written last: its presence means done
    figures.vae_figures(run_.dir)
    return run_.dir


class SharedNoise(torch.nn.Module):
    """The graded VAE's forward on this rank's share x (b, 3, 32, 32) of a global batch of `batch` images:
    encode, z = mean + std * eps, decode, (nll (b,), kl (b,)), with eps the rows `part` of the (batch, z_dim)
    noise the graded forward would draw for the whole batch (torch.randn_like of its posterior mean, from the
    global RNG, the same state on every rank). The arithmetic is DiagonalGaussianDistribution.sample's."""

    def __init__(self, vae: vae_solution.VAE, batch: int, part: slice):
        super().__init__()
        self.vae, self.batch, self.part = vae, batch, part

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x)
        mean = posterior.mean                                     # (b, z_dim)
        eps = torch.randn((self.batch, mean.shape[1]), dtype=mean.dtype, device=mean.device)[self.part]
        likelihood = self.vae.decode(mean + posterior.std * eps)
        return likelihood.nll(x), posterior.kl()


def training_step(model: vae_solution.VAE, optimizer: torch.optim.Optimizer,
                  ex: Execution, net: torch.nn.Module | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """One training step as a function of a batch x (B, 3, 32, 32): the negative ELBO (the graded forward, its
    reparameterised draw from the global RNG), backward, the optimiser step; returns [loss, nll, kl] (3,), detached.
    net: under DDP, SharedNoise(model) wrapped (x is then this rank's share), called instead of the graded forward."""
    def step(x: torch.Tensor) -> torch.Tensor:
        with ex.autocast():
            nll, kl = net(x) if net is not None else model(x)[1:]
        nll, kl = nll.float(), kl.float()  # (B,) each; summed over 3072 pixels, so kept in float32
        loss = (nll + kl).mean()
        optimizer.zero_grad(set_to_none=True)
        ex.backward(loss)
        ex.step(optimizer)
        return torch.stack([loss.detach(), nll.detach().mean(), kl.detach().mean()])
    return step


def trial(cfg: VAEConfig) -> Callable[[Execution], Callable[[], torch.Tensor]]:
    """For the precision measurement (experiments.harness.execution.choose_precision): the run's training step on a
    fresh
    model and optimiser and a batch of cfg.batch_size random images, in a candidate's execution."""
    def build(ex: Execution) -> Callable[[], torch.Tensor]:
        model = build_model(cfg).to(ex.device)
        step = training_step(model, torch.optim.Adam(model.parameters(), lr=cfg.lr), ex)
        x = torch.rand(cfg.batch_size, 3, 32, 32, device=ex.device) * 2 - 1
        return lambda: step(x)
    return build


@torch.no_grad()
def test_losses(model: vae_solution.VAE, test_images: torch.Tensor, batch_size: int, device: torch.device) -> dict:
    """Mean negative ELBO over the test set and its two terms, in eval mode."""
    model.eval()
    totals = torch.zeros(3, device=device)
    for x in in_order(test_images, batch_size, device):
        _, nll, kl = model(x)
        totals += torch.stack([(nll + kl).sum(), nll.sum(), kl.sum()])
    test_loss, test_nll, test_kl = (totals / len(test_images)).tolist()
    return {"test_loss": test_loss, "test_nll": test_nll, "test_kl": test_kl}


@torch.no_grad()
def save_snapshot(run_: runs.Run, epoch: int, model: vae_solution.VAE, z_fixed: torch.Tensor,
                  x_recon: torch.Tensor) -> None:
    """Samples from the fixed latent noise and reconstructions of the fixed test images (eval mode)."""
    model.eval()
    samples = model.decode(z_fixed).mode()
    recon = model.decode(model.encode(x_recon).mode()).mode()  # posterior mean: comparable across epochs
    run_.save_artifact(f"samples/epoch_{epoch:03d}.pt", data.to_uint8(samples.cpu()))
    run_.save_artifact(f"reconstructions/epoch_{epoch:03d}.pt",
                       {"original": data.to_uint8(x_recon.cpu()), "reconstruction": data.to_uint8(recon.cpu())})


@torch.no_grad()
def final_artifacts(run_: Run, cfg: VAEConfig, model: vae_solution.VAE, train: data.ImageSet,
                    test: data.ImageSet, device: torch.device) -> None:
    """Final samples, latent profiles, interpolations and the test log-likelihood (1.3 d-f), the amortisation gap,
    each timed (printed, and in the summary's evaluation_seconds)."""
    model.eval()
    timed = Timings(device)
    ll_images = test.subset(cfg.ll_size, rng.stream_seed(cfg.seed, "ll-images"))
    # The graded sampler and log-likelihood draw from the global RNG: seeded from their streams, then restored.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with timed("samples, profiles and interpolations"):
            torch.manual_seed(rng.stream_seed(cfg.seed, "final-samples"))
            run_.save_artifact("final_samples.pt", data.to_uint8(model.sample(cfg.n_final_samples).cpu()))
            profile_set = train.subset(cfg.profile_size, rng.stream_seed(cfg.seed, "profile-images"))
            run_.save_artifact("latent_profiles.pt", latent_profiles(model, profile_set, cfg.eval_batch_size, device))
            run_.save_artifact("interpolations.pt", interpolations(model, test, cfg, device))
        with timed("log-likelihood"):
            torch.manual_seed(rng.stream_seed(cfg.seed, "log-likelihood"))
            ll = test_log_likelihood(model, ll_images, cfg, device)
    with timed("decoder variance"):
        fitted_bpd = decoder_variance.fitted_variance_bits(  # the cost of the decoder's unit variance (1.3)
            model, train.subset(cfg.ll_size, rng.stream_seed(cfg.seed, "variance-images")).images,
            ll_images.images, cfg.eval_batch_size, rng.stream(cfg.seed, "variance-draws", device))
    with timed("classifier"):
        digits, classifier_accuracy = classifier.for_run(train, test, epochs=cfg.classifier_epochs, device=device,
                                                         seed=rng.stream_seed(cfg.seed, "classifier"))
    with timed("discriminator"):
        drs = discriminator.for_run(run_, test, discriminator_samples(model, cfg, device), digits,
                                    epochs=cfg.discriminator_epochs, device=device, seed=cfg.seed)
    with timed("observations"):
        observations = observe.vae(run_, cfg, model, digits, test, device)
    with timed("amortisation gap"):
        gaps = amortisation.measure(run_, cfg, model, test, device)
    with timed("yardstick"):  # the four families' common measures (last: it shifts no other measurement's draws)
        common = yardstick.measure(
            files.load_artifact(run_.dir, "final_samples.pt"),
            observe.reference_images(test, cfg.n_final_samples, cfg.seed), digits,
            sample64=lambda: model.sample(64), models=[model], device=device,
            flops_per_image=yardstick.training_flops_per_image("vae", cfg))
    metrics = run_.metrics()
    dims = 3 * 32 * 32
    VAESummary(
        epochs=cfg.epochs,
        dataset=read_json(run_.dir, "provenance.json")["source"],
        test_log_likelihood_nats=ll,
        # On the model's own scale (pixels in [-1, 1]) ...
        test_bits_per_dim=-ll / (dims * math.log(2)),
        # ... and on the 8-bit scale [0, 256) used in the literature: log p shifts by -D log(127.5).
        test_bits_per_dim_8bit=-(ll - dims * math.log(127.5)) / (dims * math.log(2)),
        test_elbo_bits_per_dim_8bit_fitted_variance=fitted_bpd,
        ll_K=cfg.ll_K,
        ll_n_images=min(len(test), cfg.ll_size or len(test)),
        classifier_test_accuracy=classifier_accuracy,
        observations=observations,
        amortisation=gaps,
        discriminator=drs,
        evaluation_seconds=timed.seconds,
        final_train_loss=metrics[-1]["loss"],
        final_test_loss=metrics[-1]["test_loss"],
        train_wall_seconds=sum(m["train_seconds"] for m in metrics),
        wall_seconds=metrics[-1]["wall_seconds"],
        **common,
    ).write(run_.dir)


def latent_profiles(model: vae_solution.VAE, train: data.ImageSet, batch_size: int, device: torch.device) -> dict:
    """Mean posterior mean per class, (10, z_dim), and the spread of posterior means per dimension."""
    mus = torch.cat([model.encode(x).mode().cpu() for x in in_order(train.images, batch_size, device)])
    means = torch.stack([mus[train.labels == c].mean(0) for c in range(10)])  # (10, z_dim)
    counts = torch.bincount(train.labels, minlength=10)
    return {"class_means": means, "counts": counts, "overall_mean": mus.mean(0), "overall_std": mus.std(0)}


def interpolations(model: vae_solution.VAE, test: data.ImageSet, cfg: VAEConfig, device: torch.device) -> dict:
    """Strips between posterior means of pairs of test images, and between pairs of prior draws.

    "test": (P, n, 3, 32, 32), frame 0 decoding the posterior mean of test_endpoints[:, 0], frame n - 1
    that of test_endpoints[:, 1]; "prior" likewise from the first draw of each pair to the second."""
    g = rng.stream(cfg.seed, "interpolations")
    P, n = cfg.n_interpolation_pairs, cfg.n_interpolation_steps
    idx = torch.randperm(len(test), generator=g)[:2 * P].view(P, 2)
    ends = data.to_float(test.images[idx.flatten()]).to(device)
    z = model.encode(ends).mode().view(P, 2, -1)                       # (P, 2, z_dim)
    z_prior = torch.randn(P, 2, cfg.z_dim, generator=g).to(device)
    # The graded interpolate's first frame decodes its z_2 argument, so the left image of a pair goes there:
    # each strip then runs from the left original (test_endpoints[:, 0]) to the right one.
    strip = lambda zs: torch.stack([vae_solution.interpolate(model, z_1=right, z_2=left, n_samples=n)  # noqa: E731
                                    for left, right in zs])
    return {"test": data.to_uint8(strip(z).cpu()),                       # (P, n, 3, 32, 32)
            "test_endpoints": data.to_uint8(ends.view(P, 2, 3, 32, 32).cpu()),
            "prior": data.to_uint8(strip(z_prior).cpu())}


def test_log_likelihood(model: vae_solution.VAE, test: data.ImageSet, cfg: VAEConfig, device: torch.device) -> float:
    """Mean over test images of the K-sample importance-weighted log p(x), in nats."""
    total = 0.0
    chunk = cfg.ll_chunk or (4096 if device.type == "cuda" else 256)  # 256 measured fastest on CPU
    batches = in_order(test.images, cfg.eval_batch_size, device)
    for x in tqdm(batches, total=math.ceil(len(test) / cfg.eval_batch_size), desc=f"log-likelihood K={cfg.ll_K}",
                  leave=False, unit="batch"):
        total += model.log_likelihood(x, K=cfg.ll_K, chunk_size=chunk).sum().item()
    return total / len(test)


def discriminator_samples(model: vae_solution.VAE, cfg: VAEConfig, device: torch.device) -> torch.Tensor:
    """`discriminator_samples` draws of the graded sampler (the decoder's mean at z ~ N(0, I)), uint8 (N, 3, 32, 32)
    on the host, eval_batch_size at a time; the global RNG seeded from the stream "discriminator-samples", restored."""
    n, batch = cfg.discriminator_samples, cfg.eval_batch_size
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(rng.stream_seed(cfg.seed, "discriminator-samples"))
        return torch.cat([data.to_uint8(model.sample(min(batch, n - i)).cpu()) for i in range(0, n, batch)])
