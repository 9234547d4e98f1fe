"""Problem 2: train the graded U-Net as a DDPM on SVHN (or the synthetic stand-in), with an EMA.

Per epoch (metrics.jsonl): train loss, the test loss of the EMA weights on a fixed set of
(image, t, eps) triples, timings; a DDIM preview from fixed noise every `preview_every`
epochs; full ancestral samples from fixed noise every `snapshot_every` epochs (2.2b).
At the end (summary.json, written last): final samples (2.2d), the reconstruction study
with t* (2.2c), a sample-quality proxy and the sampling time (2.3a), and a linear probe of
digit class on the U-Net's bottleneck features (2.3b). figures.py draws the PNGs.

More than one GPU (torchrun; experiments.harness.distributed): every rank loads the whole global batch, draws
its t and eps from the global RNG (the same state on every rank) and trains on its own contiguous slice under
DistributedDataParallel; each rank keeps the same EMA. The per-epoch test loss, the snapshots and the final
evaluation run on rank 0 alone while the others wait. The step runs eager there (no compiled step).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import ddpm_solution
from experiments.harness import config, data, devices, distributed, loop, rng, runs
from experiments.harness.config import checked_overrides
from experiments.harness.execution import Execution, Timings
from experiments.harness.files import read_json
from experiments.harness.runs import Run
from experiments.measurements import bound, classifier, discriminator, monitors, observe, yardstick
from experiments.presentation import figures, names
from experiments.presentation.summaries import DDPMSummary, LevelAccuracy, ProbeResult
from experiments.problems.diffusion import EMA, Diffusion, noise


@dataclass
class DDPMConfig(config.RunConfig):
    # Assignment hyperparameters.
    epochs: int = 20               # 20 x 1144 Adam steps; see README "Problem 2"
    batch_size: int = 64
    lr: float = 1e-4
    timesteps: int = 1000          # T; 500 and 1500 for Problem 2.3(a)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"  # a name in experiments.problems.diffusion.SCHEDULES; "linear" is the assignment's
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    # Training extras.
    ema_decay: float = 0.9995      # with warm-up (experiments.problems.diffusion.EMA)
    precision: str = "auto"        # auto | fp32 | bf16 | fp16 (experiments.harness.execution)
    compile: str = "auto"          # auto | none | default | reduce-overhead (experiments.harness.execution)
    # How much data (None: the whole split).
    train_size: int | None = None
    test_size: int | None = None
    eval_size: int = 1000          # fixed test triples for the per-epoch test loss
    # Figures during training.
    snapshot_every: int = 5        # ancestral samples from fixed noise every N epochs (and at the last)
    n_samples: int = 64
    preview_every: int = 1         # DDIM previews (0: off)
    preview_steps: int = 50
    # Final artifacts.
    n_final_samples: int = 100
    recon_levels: tuple[int, ...] = (50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)  # t' for T = 1000
    recon_size: int = 500          # test images in the MSE / label-preservation curves
    recon_shown: int = 10          # of which shown in the grid
    classifier_epochs: int = 6
    quality_size: int = 1000       # samples (and test images) in the classifier-FID proxy
    discriminator_epochs: int = 10  # Question 3 on the quality samples (measurements.discriminator), per discriminator
    probe_levels: tuple[int, ...] = (1, 100, 300)   # t at which bottleneck features are probed (T = 1000)
    probe_train: int = 5000
    probe_test: int = 2000
    eval_batch_size: int = 500
    # Q2.3 measured (experiments.measurements.bound): the variational bound on -log p(x_0), stratified over t.
    bound_size: int | None = 500   # test images (None: all), as the VAE's gap_size
    bound_exact_steps: int = 20    # t = 2..21 each a stratum of its own (the largest, fastest-changing terms) ...
    bound_strata: int = 40         # ... the remaining steps in this many equal strata ...
    bound_draws: int = 4           # ... with this many draws of t (and of x_t) in each

    def __post_init__(self) -> None:
        config.check_config(self)
        # The schedule is 8 float32 tensors of length T (cheap); sampling is T U-Net passes, about 10x the
        # assignment's T = 1000 at the bound.
        if isinstance(self.timesteps, bool) or not isinstance(self.timesteps, int) \
                or not 1 <= self.timesteps <= config.MAX_TIMESTEPS:
            raise ValueError(f"--timesteps must be an integer T in [1, {config.MAX_TIMESTEPS:,}] (sampling takes T "
                             f"U-Net passes; the assignment uses 1000), got {self.timesteps!r}")


PRESETS = {
    "full": DDPMConfig(),
    # Offline on 2 CPU cores in about a minute: a smaller U-Net, T = 50, a few hundred images.
    "smoke": DDPMConfig(preset="smoke", epochs=2, lr=1e-3, timesteps=50, dim=16, dim_mults=(1, 2, 4),
                        train_size=640, test_size=128, eval_size=64, snapshot_every=1, n_samples=8,
                        preview_steps=10, n_final_samples=16, recon_levels=(100, 500, 1000), recon_size=16,
                        recon_shown=8, classifier_epochs=3, quality_size=32, probe_train=128, probe_test=64,
                        eval_batch_size=64, bound_size=4, bound_exact_steps=2, bound_strata=4, bound_draws=2,
                        discriminator_epochs=2),
}


def config_for(preset: str, **overrides) -> DDPMConfig:
    return replace(PRESETS[preset], **checked_overrides(PRESETS, preset, overrides, "DDPM"))


def variants(preset: str) -> list[dict]:
    """What `python -m experiments all` runs: the main model and Problem 2.3(a)'s T/2 and 3T/2."""
    T = PRESETS[preset].timesteps
    return [{}, {"timesteps": T // 2}, {"timesteps": 3 * T // 2}]


def run_name(cfg: DDPMConfig) -> str:
    """ddpm-<preset>, plus -T<timesteps> when T is not the preset's (experiments.presentation.names)."""
    return names.ddpm_run_name(cfg.preset, cfg.timesteps)


def scaled_levels(levels: tuple[int, ...], timesteps: int) -> list[int]:
    """Noise levels given for T = 1000, rescaled to `timesteps` (same fraction of the process)."""
    return sorted({min(timesteps, max(1, round(level * timesteps / 1000))) for level in levels})


def build_model(cfg: DDPMConfig) -> ddpm_solution.Unet:
    return ddpm_solution.Unet(dim=cfg.dim, channels=3, dim_mults=tuple(cfg.dim_mults))


@runs.locked
def run(cfg: DDPMConfig, out: str | Path, *, resume: bool = False, vae_run: str | Path | None = None) -> Path:
    """Train (or resume) a DDPM run in folder `out`, write its artifacts, figures and summary.

    vae_run: a finished VAE run folder whose final samples are drawn beside the DDPM's
    (default: the sibling folder vae-<preset>, when it exists)."""
    run_, ex, train, test = runs.start(cfg, out, "svhn", resume=resume, trial=trial(cfg))
    device = ex.device
    diffusion = Diffusion(cfg.timesteps, cfg.beta_start, cfg.beta_end, schedule=cfg.beta_schedule, device=device)
    model = ex.place(build_model(cfg))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = EMA(model, cfg.ema_decay)
    net = distributed.wrap(model, device)  # DDP under torchrun, else the model
    step = ex.compiled(training_step(model, optimizer, ema, diffusion, ex, net=net), "DDPM training step")
    local = distributed.local_slice(cfg.batch_size)  # this rank's share of each global batch
    shuffle = rng.stream(cfg.seed, "shuffle")
    train_images = train.images.to(device)
    eval_set = fixed_eval_set(test, diffusion, cfg, device)

    def train_epoch(epoch: int) -> dict:
        model.train()
        total = torch.zeros((), device=device)
        # drop_last: every step has the same shapes, so a compiled step never recompiles
        batches = data.iterate_batches(len(train), cfg.batch_size, shuffle=True, drop_last=True, generator=shuffle)
        bar, t0 = loop.progress(batches, len(train) // cfg.batch_size, epoch), time.perf_counter()
        for i, idx in enumerate(bar, 1):
            x = ex.layout(data.to_float(train_images[idx.to(device)]))  # (B, 3, 32, 32), the global batch
            t, eps = diffusion.draw(x)  # the whole batch's, on every rank: each keeps its slice
            total += step(x[local], t[local], eps[local], ema.next_weight())
            loop.show_rate(bar, i, total, cfg.batch_size, t0)
        return {"loss": distributed.mean(total).item() / i, "images": i * cfg.batch_size}

    def after_epoch(epoch: int) -> dict:
        return {"test_loss": eval_loss(model, eval_set, ex),
                "test_loss_ema": eval_loss(ema.model, eval_set, ex),
                **snapshots(run_, cfg, epoch, diffusion, ema.model, ex)}

    loop.fit(run_, epochs=cfg.epochs, device=device, generators={"shuffle": shuffle}, train_epoch=train_epoch,
             state={"model": model, "optimizer": optimizer, "ema": ema, "precision": ex},
             after_epoch=after_epoch, desc=f"DDPM T={cfg.timesteps}", lr=cfg.lr)
    if not distributed.is_writer():  # the final evaluation and the figures: rank 0's
        return run_.dir
    if not run_.finished():
        final_artifacts(run_, cfg, diffusion, ema.model, train, test, ex)  # written last
    vae_dir = Path(vae_run) if vae_run else run_.dir.parent / f"vae-{cfg.preset}"
    figures.ddpm_figures(run_.dir, vae_dir if (vae_dir / "artifacts" / "final_samples.pt").exists() else None)
    return run_.dir


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA, diffusion: Diffusion,
                  ex: Execution, net: torch.nn.Module | None = None) -> Callable[..., torch.Tensor]:
    """One training step as a function of tensors, step(x_0, t, eps, ema_weight) -> the loss (detached): the
    noise-prediction loss, backward, the optimiser step and the EMA update (weight from ema.next_weight()).
    t and eps are drawn outside (diffusion.draw), so a compiled step draws exactly what an eager one does.
    net: the module the forward runs through (model under DistributedDataParallel; default the model)."""
    net = net or model
    if ex.compile != "none":
        for tensor in ema.tensors():  # fixed addresses: CUDA graphs update them in place, without copies
            torch._dynamo.mark_static_address(tensor)

    def step(x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, ema_weight: torch.Tensor) -> torch.Tensor:
        loss = diffusion.loss(net, x, ex, t=t, noise=eps)
        optimizer.zero_grad(set_to_none=True)
        ex.backward(loss)
        ex.step(optimizer)
        ema.blend(ema_weight)
        return loss.detach()
    return step


def trial(cfg: DDPMConfig) -> Callable[[Execution], Callable[[], torch.Tensor]]:
    """For the precision measurement (experiments.harness.execution.choose_precision): the run's training step on a
    fresh
    model, optimiser and EMA and a batch of cfg.batch_size random images, in a candidate's execution."""
    def build(ex: Execution) -> Callable[[], torch.Tensor]:
        model = ex.place(build_model(cfg))
        ema = EMA(model, cfg.ema_decay)
        diffusion = Diffusion(cfg.timesteps, cfg.beta_start, cfg.beta_end, schedule=cfg.beta_schedule,
                              device=ex.device)
        step = training_step(model, torch.optim.Adam(model.parameters(), lr=cfg.lr), ema, diffusion, ex)
        x = ex.layout(torch.rand(cfg.batch_size, 3, 32, 32, device=ex.device) * 2 - 1)
        return lambda: step(x, *diffusion.draw(x), ema.next_weight())
    return build


def snapshots(run_: Run, cfg: DDPMConfig, epoch: int, diffusion: Diffusion, ema_net: torch.nn.Module,
              ex: Execution) -> dict:
    """The epoch's figures from the same fixed noise every time (the stream "snapshot-noise"): a DDIM preview
    every `preview_every` epochs, ancestral samples (2.2b) and their sampling time at the snapshot epochs."""
    shape, record = (cfg.n_samples, 3, 32, 32), {}
    if cfg.preview_every and epoch % cfg.preview_every == 0:
        x_T = noise(shape, rng.stream(cfg.seed, "snapshot-noise", ex.device))
        preview = diffusion.ddim_sample(ema_net, x_T, n_steps=cfg.preview_steps, execution=ex, progress=False)
        run_.save_artifact(f"previews/epoch_{epoch:03d}.pt", data.to_uint8(preview.cpu()))
    if epoch in loop.snapshot_epochs(cfg.snapshot_every, cfg.epochs):
        g = rng.stream(cfg.seed, "snapshot-noise", ex.device)  # the same x_T and the same later draws
        x_T = noise(shape, g)
        t0 = devices.clock(ex.device)
        samples = diffusion.sample(ema_net, x_T, generator=g, execution=ex)
        record["sample_seconds"] = devices.clock(ex.device) - t0
        run_.save_artifact(f"samples/epoch_{epoch:03d}.pt", data.to_uint8(samples.cpu()))
    return record


# --------------------------------------------------------------------------- evaluation

def fixed_eval_set(test: data.ImageSet, diffusion: Diffusion, cfg: DDPMConfig, device: torch.device) -> list:
    """Batches of (x_0, t, eps) drawn once from a fixed seed, so test losses compare across epochs."""
    g = rng.stream(cfg.seed, "eval-set")
    images = test.subset(cfg.eval_size, rng.stream_seed(cfg.seed, "eval-set-images")).images
    t = torch.randint(0, diffusion.T, (len(images),), generator=g)
    eps = torch.randn(len(images), 3, 32, 32, generator=g)
    x0 = data.to_float(images)
    x_t = diffusion.q_sample(x0.to(device), t.to(device), eps.to(device))
    return [(x_t[i:i + cfg.eval_batch_size], t[i:i + cfg.eval_batch_size].to(device),
             eps[i:i + cfg.eval_batch_size].to(device)) for i in range(0, len(images), cfg.eval_batch_size)]


@torch.no_grad()
def eval_loss(net: torch.nn.Module, eval_set: list, ex: Execution) -> float:
    was_training = net.training
    net.eval()
    total, n = 0.0, 0
    for x_t, t, eps in eval_set:
        with ex.autocast():
            pred = net(ex.layout(x_t), t).float()
        total += F.smooth_l1_loss(pred, eps, reduction="sum").item() / eps[0].numel()
        n += len(eps)
    net.train(was_training)
    return total / n


def sample_batches(diffusion: Diffusion, net: torch.nn.Module, n: int, batch: int, generator: torch.Generator,
                   ex: Execution) -> torch.Tensor:
    """n ancestral samples as uint8 on the host, `batch` at a time (host memory: the samples only), every
    draw (each batch's x_T, then its sampler's noise) from `generator`, on the device the samples run on."""
    out = []
    for i in range(0, n, batch):
        x_T = noise((min(batch, n - i), 3, 32, 32), generator)
        out.append(data.to_uint8(diffusion.sample(net, x_T, generator=generator, execution=ex).cpu()))
    return torch.cat(out)


T_STAR_RULE = ("first t' where the label-preservation rate falls below (clean accuracy + 0.1) / 2, "
               "linearly interpolated between levels")


def t_star(levels: list[int], preserved: list[float], clean: float, chance: float = 0.1) -> float | None:
    """The rule for t*: the step at which the label-preservation rate first falls below halfway
    between its value on clean images and chance, linearly interpolated between grid levels.
    None when it never does, or when the classifier is no better than chance on clean images."""
    if clean <= chance:
        return None
    threshold = (clean + chance) / 2
    prev_level, prev_rate = 0, clean
    for level, rate in zip(levels, preserved):
        if rate < threshold:
            return prev_level + (prev_rate - threshold) / (prev_rate - rate) * (level - prev_level)
        prev_level, prev_rate = level, rate
    return None


def final_artifacts(run_: Run, cfg: DDPMConfig, diffusion: Diffusion, ema_model: torch.nn.Module,
                    train: data.ImageSet, test: data.ImageSet, ex: Execution) -> None:
    """Final samples (2.2d), reconstruction study and t* (2.2c), quality proxy (2.3a), probe (2.3b), the bound,
    each timed (printed, and in the summary's evaluation_seconds); then summary.json, written last."""
    timed, device = Timings(ex.device), ex.device
    with timed("quality samples"):
        samples, sample_seconds = final_samples(run_, cfg, diffusion, ema_model, ex)
    with timed("classifier"):
        digits, classifier_accuracy = classifier.for_run(train, test, epochs=cfg.classifier_epochs, device=device,
                                                         seed=rng.stream_seed(cfg.seed, "classifier"))
    with timed("t-study"):
        recon = reconstruction_study(run_, cfg, diffusion, ema_model, digits, test, ex)
    with timed("quality proxy"):
        fid, confidence = quality_proxy(cfg, samples[:cfg.quality_size], digits, test, ex)
    with timed("discriminator"):
        drs = discriminator.for_run(run_, test, samples[:cfg.quality_size], digits, epochs=cfg.discriminator_epochs,
                                    device=device, seed=cfg.seed)
    with timed("probe"):
        probe = bottleneck_probe(ema_model, diffusion, train, test, cfg, ex)
    with timed("observations"):
        observations = observe.ddpm(run_, cfg, digits, test, device)
    with timed("bound"):
        variational_bound = bound.measure(run_, cfg, diffusion, ema_model, test, device)
    with timed("yardstick"):  # the four families' common measures (last: it shifts no other measurement's draws)
        common = yardstick.measure(
            samples[:cfg.n_final_samples], observe.reference_images(test, cfg.n_final_samples, cfg.seed), digits,
            sample64=lambda: sample_batches(diffusion, ema_model, 64, 64,
                                            rng.stream(cfg.seed, "timed-samples", device), ex),
            models=[ema_model], device=device, flops_per_image=yardstick.training_flops_per_image("ddpm", cfg),
            warmup=False)  # the sampler has just run (final samples, reconstruction study): T passes saved
    metrics = run_.metrics()
    DDPMSummary(
        epochs=cfg.epochs,
        timesteps=cfg.timesteps,
        beta_schedule=cfg.beta_schedule,
        dataset=read_json(run_.dir, "provenance.json")["source"],
        final_train_loss=metrics[-1]["loss"],
        final_test_loss_ema=metrics[-1]["test_loss_ema"],
        train_seconds_per_epoch=statistics.median(m["train_seconds"] for m in metrics),
        train_images_per_s=statistics.median(m["images_per_s"] for m in metrics),
        train_wall_seconds=sum(m["train_seconds"] for m in metrics),
        wall_seconds=metrics[-1]["wall_seconds"],
        sample_seconds=sample_seconds,
        sample_seconds_per_image=sample_seconds / len(samples),
        n_sampled=len(samples),
        n_final_samples=cfg.n_final_samples,
        classifier_test_accuracy=classifier_accuracy,
        recon_levels=recon["levels"],
        recon_mse=recon["mse"],
        recon_label_preserved=recon["label_preserved"],
        recon_clean_accuracy=recon["clean_accuracy"],
        t_star=recon["t_star"],
        t_star_rule=T_STAR_RULE,
        quality_classifier_fid=fid,
        quality_mean_confidence=confidence,
        quality_size=cfg.quality_size,
        probe=probe,
        alpha_bar=diffusion.alphas_cumprod.cpu().tolist(),  # the schedule the report reads (no recomputing)
        observations=observations,
        bound=variational_bound,
        discriminator=drs,
        evaluation_seconds=timed.seconds,
        **common,
    ).write(run_.dir)


def final_samples(run_: Run, cfg: DDPMConfig, diffusion: Diffusion, ema_net: torch.nn.Module,
                  ex: Execution) -> tuple[torch.Tensor, float]:
    """Ancestral samples of the EMA weights, in one timed pass: max(n_final_samples, quality_size) of them, the
    first `n_final_samples` saved as the final samples (2.2d), the first `quality_size` read by the quality
    proxy (2.3a). Returns (samples uint8 on the host, seconds the pass took)."""
    g = rng.stream(cfg.seed, "final-samples", ex.device)
    t0 = devices.clock(ex.device)
    samples = sample_batches(diffusion, ema_net, max(cfg.n_final_samples, cfg.quality_size), cfg.eval_batch_size,
                             g, ex)
    seconds = devices.clock(ex.device) - t0
    run_.save_artifact("final_samples.pt", samples[:cfg.n_final_samples])
    return samples, seconds


def reconstruction_study(run_: Run, cfg: DDPMConfig, diffusion: Diffusion, ema_net: torch.nn.Module,
                         digits: torch.nn.Module, test: data.ImageSet, ex: Execution) -> dict:
    """2.2(c): noise fixed test images to t' and denoise them back; the MSE and the label-preservation
    rate (by the digit classifier) against t', and t*; returns what it saves in reconstructions.pt."""
    device, batch = ex.device, cfg.eval_batch_size
    recon_set = test.subset(cfg.recon_size, rng.stream_seed(cfg.seed, "reconstruction-images"))
    levels = scaled_levels(cfg.recon_levels, cfg.timesteps)
    g = rng.stream(cfg.seed, "reconstruction", device)
    x0 = data.to_float(recon_set.images).to(device)
    clean = classifier.accuracy(digits, recon_set.images, recon_set.labels, device=device)
    mse, preserved, shown = [], [], []
    for level in tqdm(levels, desc="reconstruction study", leave=False):
        recon = torch.cat([diffusion.reconstruct(ema_net, x0[i:i + batch], [level], generator=g,
                                                 execution=ex)[level] for i in range(0, len(x0), batch)])
        recon_u8 = data.to_uint8(recon.cpu())
        mse.append(((recon.clamp(-1, 1) - x0) ** 2).mean().item())
        preserved.append(classifier.accuracy(digits, recon_u8, recon_set.labels, device=device))
        shown.append(recon_u8[:cfg.recon_shown])
    star = t_star(levels, preserved, clean)
    study = {"levels": levels, "original": recon_set.images[:cfg.recon_shown], "reconstructions": torch.stack(shown),
             "n_evaluated": len(recon_set), "mse": mse, "label_preserved": preserved, "clean_accuracy": clean,
             "t_star": star}
    run_.save_artifact("reconstructions.pt", study)
    return study


def quality_proxy(cfg: DDPMConfig, samples: torch.Tensor, digits: torch.nn.Module, test: data.ImageSet,
                  ex: Execution) -> tuple[float, float]:
    """2.3(a): a sample-quality proxy, the Frechet distance in the digit classifier's feature space between
    the samples (uint8) and as many test images, and the samples' mean top-class probability: (fid, confidence)."""
    reference = test.subset(len(samples), rng.stream_seed(cfg.seed, "quality-reference")).images
    fid = classifier.classifier_fid(digits, samples, reference, device=ex.device)
    logits = monitors.extract_features(digits, samples, cfg.eval_batch_size, ex.device, data.to_float)
    confident = logits.softmax(1).max(1).values.mean().item()
    return fid, confident


def bottleneck_probe(model: torch.nn.Module, diffusion: Diffusion, train: data.ImageSet, test: data.ImageSet,
                     cfg: DDPMConfig, ex: Execution) -> ProbeResult:
    """2.3(b): linear probe of the digit class on the U-Net's bottleneck (output of `mid_block2`,
    spatially averaged) for inputs noised to step t, against a probe on raw pixels."""
    device, feats = ex.device, {}
    hook = model.mid_block2.register_forward_hook(lambda m, i, o: feats.__setitem__("z", o.float().mean((2, 3))))
    g = rng.stream(cfg.seed, "probe-noise")
    images_seed = rng.stream_seed(cfg.seed, "probe-images")
    train_set, test_set = train.subset(cfg.probe_train, images_seed), test.subset(cfg.probe_test, images_seed)

    @torch.no_grad()
    def features(images: torch.Tensor, level: int) -> torch.Tensor:
        out = []
        for i in range(0, len(images), cfg.eval_batch_size):
            x0 = data.to_float(images[i:i + cfg.eval_batch_size]).to(device)
            t = torch.full((len(x0),), level - 1, device=device, dtype=torch.long)
            x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g).to(device))
            with ex.autocast():
                model(ex.layout(x_t), t)
            out.append(feats["z"])
        return torch.cat(out)

    levels = []
    try:
        for level in scaled_levels(cfg.probe_levels, cfg.timesteps):
            levels.append(LevelAccuracy(t=level, accuracy=monitors.linear_probe(
                features(train_set.images, level), train_set.labels.to(device),
                features(test_set.images, level), test_set.labels.to(device),
                generator=rng.stream(cfg.seed, "probe-order")).test))
    finally:
        hook.remove()
    pixels = lambda s: data.to_float(s.images).flatten(1).to(device)  # noqa: E731
    raw = monitors.linear_probe(pixels(train_set), train_set.labels.to(device), pixels(test_set),
                                test_set.labels.to(device), generator=rng.stream(cfg.seed, "probe-order")).test
    return ProbeResult(raw_pixels=raw, levels=levels, feature_dim=int(model.mid_block2.block2.proj.out_channels),
                       n_train=len(train_set), n_test=len(test_set))
