"""What the experiments cost: FLOPs counted per training step, scaled to each preset, and ESTIMATED GPU hours.

    .venv/bin/python benchmarks/cost.py                      # markdown tables on stdout, about 10 s on a CPU
    .venv/bin/python benchmarks/cost.py --utilization 0.5

FLOPs are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` runs one forward +
backward of the model the harness builds (`experiments.*.build_model` on the preset's config) on a
few images on the `meta` device (shapes only, no arithmetic: the same counts as on a CPU, measured,
in a fraction of the time), and the count per image is scaled to the images of an epoch:
floor(N / batch) x batch, N = the config's train_size, else SVHN's 73,257 or CIFAR-10's 50,000
training images (the real datasets; `--data synthetic` defaults to fewer). FlopCounterMode counts
matrix multiplies and convolutions (2 FLOPs per multiply-add) and nothing else: normalisation,
activations, the loss and the optimizer step are left out; they are a few percent at most here.

GPU hours are ESTIMATES: total FLOPs / (utilization x the GPU's dense half-precision tensor-core
peak), utilization 30% unless `--utilization` says otherwise. Peaks, from NVIDIA's datasheets:
    T4         65 TFLOP/s  FP16 mixed precision (T4 Tensor Core GPU datasheet; no bf16)
    L4        121 TFLOP/s  FP16 / BF16 dense (L4 datasheet: 242 "with sparsity")
    A100      312 TFLOP/s  FP16 / BF16 dense (A100 Tensor Core GPU datasheet: 624 with sparsity)
    H100 SXM  989 TFLOP/s  FP16 / BF16 dense (H100 Tensor Core GPU datasheet: 1,979 with sparsity)
Small models at batch 64 (the VAE, the DDPM) are launch- and memory-bound and may reach well
under 30% of peak; fp32 runs have far lower peaks (T4 8.1, A100 19.5 TFLOP/s). Read the hours
as a lower bound on the compute time, not as a wall-clock prediction.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script
from experiments import amortisation, bound, ddpm, runs, simsiam, vae

PEAK_TFLOPS = {"T4": 65, "L4": 121, "A100": 312, "H100": 989}
TRAIN_IMAGES = {"vae": 73_257, "ddpm": 73_257, "simsiam": 50_000}   # SVHN train, CIFAR-10 train
SVHN_TEST = 26_032
CIFAR10_TEST = 10_000
BACKBONES = ("resnet18", "resnet18-cifar")
MODULES = {"vae": vae, "ddpm": ddpm, "simsiam": simsiam}


# --------------------------------------------------------------------------- counting

def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add, matmuls and convolutions only) that FlopCounterMode sees fn() run."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def build(problem: str, cfg, device: str = "meta") -> torch.nn.Module:
    """The harness's model for `cfg`, created directly on `device`."""
    with torch.device(device):
        return MODULES[problem].build_model(cfg).train()


def training_step(problem: str, model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of the problem's loss on images x (B, 3, 32, 32); no optimizer step."""
    if problem == "vae":
        def step():
            _, nll, kl = model(x)
            (nll + kl).mean().backward()
    elif problem == "ddpm":
        def step():
            t = torch.randint(0, 1000, (len(x),), device=x.device)
            F.smooth_l1_loss(model(x, t), torch.randn_like(x)).backward()   # x stands in for x_t
    else:
        def step():
            p1, p2, z1, z2 = model(x, x.clone())                             # two views
            model.loss(p1, p2, z1, z2).backward()
    return step


def flops_per_step(problem: str, cfg, batch: int = 4, device: str = "meta") -> int:
    """FLOPs of one training step (forward + backward, no optimizer) of `problem` with config `cfg`
    on `batch` images; SimSiam's step runs both views, 2 x batch images through the encoder."""
    model = build(problem, cfg, device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    return count_flops(training_step(problem, model, x))


@torch.no_grad()
def forward_flops_per_image(fn: Callable[[torch.Tensor], object], batch: int = 4) -> float:
    """FLOPs per image of fn(x) on `batch` meta images (evaluation passes, no backward)."""
    return count_flops(lambda: fn(torch.randn(batch, 3, 32, 32, device="meta"))) / batch


# --------------------------------------------------------------------------- what each run costs

@dataclass
class Cost:
    name: str
    detail: str        # what was counted, e.g. batch and FLOPs per image
    flops: float       # per epoch (training rows) or in all (evaluation rows)
    epochs: int = 1

    @property
    def total(self) -> float:
        return self.flops * self.epochs


def images_per_epoch(problem: str, cfg) -> int:
    n = cfg.train_size or TRAIN_IMAGES[problem]
    return n // cfg.batch_size * cfg.batch_size   # drop_last


def training_cost(problem: str, cfg, name: str) -> Cost:
    per_image = flops_per_step(problem, cfg) / 4
    views = " (2 views)" if problem == "simsiam" else ""
    return Cost(name, f"batch {cfg.batch_size}, {per_image / 1e9:.3f} GFLOP/image{views}",
                per_image * images_per_epoch(problem, cfg), cfg.epochs)


def configs() -> list[tuple[str, object, str]]:
    """(problem, config, row name) for every preset, every SimSiam ablation with both backbones."""
    rows = []
    for preset in ("full", "smoke"):
        rows += [("vae", vae.config_for(preset), f"vae-{preset}"), ("ddpm", ddpm.config_for(preset), f"ddpm-{preset}")]
        rows += [("simsiam", simsiam.config_for(preset, ablation=a, backbone=b), f"simsiam-{preset}-{a} ({b})")
                 for b in BACKBONES for a in simsiam.ABLATIONS]
    return rows


def ddpm_sampling_costs(cfg: ddpm.DDPMConfig) -> list[Cost]:
    """The U-Net forwards of a DDPM run outside training (image-steps x FLOPs per forward)."""
    unet = build("ddpm", cfg).eval()
    per_forward = forward_flops_per_image(lambda x: unet(x, torch.zeros(len(x), dtype=torch.long, device="meta")))
    T, snapshots = cfg.timesteps, len(runs.snapshot_epochs(cfg.snapshot_every, cfg.epochs))
    forwards = {
        f"snapshots: {snapshots} x {cfg.n_samples} images x {T} steps": snapshots * cfg.n_samples * T,
        f"DDIM previews: {cfg.epochs // cfg.preview_every if cfg.preview_every else 0} x {cfg.n_samples} images "
        f"x {cfg.preview_steps} steps":
            (cfg.epochs // cfg.preview_every if cfg.preview_every else 0) * cfg.n_samples * cfg.preview_steps,
        f"per-epoch test loss: {cfg.epochs} x {cfg.eval_size} images": cfg.epochs * cfg.eval_size,
        f"final samples: {cfg.n_final_samples} images x {T} steps": cfg.n_final_samples * T,
        f"quality proxy: {cfg.quality_size} images x {T} steps": cfg.quality_size * T,
        f"reconstruction study: {cfg.recon_size} images x sum of t' = "
        f"{sum(ddpm.scaled_levels(cfg.recon_levels, T))} steps":
            cfg.recon_size * sum(ddpm.scaled_levels(cfg.recon_levels, T)),
    }
    return [Cost(f"ddpm-{cfg.preset} {what}", f"{n:,} U-Net forwards, {per_forward / 1e9:.3f} GFLOP each",
                 n * per_forward) for what, n in forwards.items()]


def vae_evaluation_costs(cfg: vae.VAEConfig) -> list[Cost]:
    """The per-epoch test loss and the importance-sampled log-likelihood (K decodes per image)."""
    model = build("vae", cfg).eval()
    n_test, n_ll = cfg.test_size or SVHN_TEST, cfg.ll_size or cfg.test_size or SVHN_TEST
    per_forward = forward_flops_per_image(model)
    per_ll = forward_flops_per_image(lambda x: model.log_likelihood(x, K=cfg.ll_K))
    return [Cost(f"vae-{cfg.preset} per-epoch test loss: {cfg.epochs} x {n_test:,} images",
                 f"{per_forward / 1e9:.4f} GFLOP/image", cfg.epochs * n_test * per_forward),
            Cost(f"vae-{cfg.preset} log-likelihood, K = {cfg.ll_K}: {n_ll:,} test images",
                 f"{per_ll / 1e9:.3f} GFLOP/image (1 encode, K folded decodes)", n_ll * per_ll)]


def simsiam_monitor_cost(backbone: str) -> Cost:
    """The full preset's kNN/collapse monitor: train and test set through the encoder every knn_every epochs."""
    cfg = simsiam.config_for("full", backbone=backbone)
    encoder = build("simsiam", cfg).encoder.eval()
    n, passes = TRAIN_IMAGES["simsiam"] + CIFAR10_TEST, -(-cfg.epochs // cfg.knn_every)
    per_image = forward_flops_per_image(encoder)
    return Cost(f"simsiam-full kNN monitor ({backbone}): {passes} x {n:,} images",
                f"{per_image / 1e9:.3f} GFLOP/image", passes * n * per_image)


def evaluation_costs() -> list[Cost]:
    return (vae_evaluation_costs(vae.config_for("full")) + ddpm_sampling_costs(ddpm.config_for("full"))
            + [simsiam_monitor_cost(b) for b in BACKBONES] + measured_costs())


def vae_amortisation_cost(cfg: vae.VAEConfig) -> Cost:
    """Q1.3-1.4 measured (experiments.amortisation.measure), at its most steps: per image, each Adam step decodes
    gap_draws z forward and back to z (the weights get no gradient), each check gap_eval_draws forwards, the two
    final ELBOs gap_test_draws each, LL_REPEATS importance-sampled log-likelihoods and two encoder passes."""
    model = build("vae", cfg).eval().requires_grad_(False)
    z = torch.randn(4, cfg.z_dim, device="meta", requires_grad=True)
    step = count_flops(lambda: model.decode(z).mean.sum().backward()) / 4
    with torch.no_grad():
        decode = count_flops(lambda: model.decode(z)) / 4
    per_ll = forward_flops_per_image(lambda x: model.log_likelihood(x, K=cfg.ll_K))
    checks = cfg.gap_steps // cfg.gap_eval_every + 1
    per_image = (cfg.gap_steps * cfg.gap_draws * step + (checks * cfg.gap_eval_draws + 2 * cfg.gap_test_draws) * decode
                 + amortisation.LL_REPEATS * per_ll + 2 * forward_flops_per_image(model.encode))
    n = cfg.gap_size or SVHN_TEST
    share = n * per_image / training_cost("vae", cfg, "").total
    return Cost(f"vae-{cfg.preset} amortisation gap (Q1.3-1.4): {n:,} images, at most {cfg.gap_steps} Adam steps x "
                f"{cfg.gap_draws} draws", f"{per_image / 1e9:.2f} GFLOP/image, {share:.1%} of training", n * per_image)


def ddpm_bound_cost(cfg: ddpm.DDPMConfig) -> Cost:
    """Q2.3 measured (experiments.bound.measure): network_evaluations U-Net forwards per image."""
    unet = build("ddpm", cfg).eval()
    per_forward = forward_flops_per_image(lambda x: unet(x, torch.zeros(len(x), dtype=torch.long, device="meta")))
    n = cfg.bound_size or SVHN_TEST
    evaluations = bound.network_evaluations(cfg.bound_strata, cfg.bound_draws, cfg.bound_exact_steps)
    share = n * evaluations * per_forward / training_cost("ddpm", cfg, "").total
    return Cost(f"ddpm-{cfg.preset} variational bound (Q2.3): {n:,} images x {evaluations} U-Net evaluations",
                f"{per_forward / 1e9:.3f} GFLOP each, {share:.1%} of training", n * evaluations * per_forward)


def measured_costs() -> list[Cost]:
    """Part III's measurements in the full presets, each against its run's training FLOPs."""
    return [vae_amortisation_cost(vae.config_for("full")), ddpm_bound_cost(ddpm.config_for("full"))]


# --------------------------------------------------------------------------- the tables

def duration(seconds: float) -> str:
    """3 significant digits in h (from 2 h), min (from 1 min), s or ms."""
    for unit, size in (("h", 7200), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / (3600 if unit == 'h' else size):.3g} {unit}"
    return f"{seconds * 1e3:.3g} ms"


def gpu_columns(flops: float, utilization: float) -> list[str]:
    return [duration(flops / (utilization * peak * 1e12)) for peak in PEAK_TFLOPS.values()]


def table(costs: list[Cost], utilization: float, training: bool) -> str:
    gpus = [f"{gpu} (est.)" for gpu in PEAK_TFLOPS]
    head = (["run", "counted", "FLOPs/epoch", "epochs", "total FLOPs"] if training
            else ["evaluation pass", "counted", "total FLOPs"]) + gpus
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in costs:
        cells = [c.name, c.detail] + ([f"{c.flops:.3g}", str(c.epochs)] if training else []) + [f"{c.total:.3g}"]
        lines.append("| " + " | ".join(cells + gpu_columns(c.total, utilization)) + " |")
    return "\n".join(lines)


def report(utilization: float) -> str:
    training = [training_cost(problem, cfg, name) for problem, cfg, name in configs()]
    return "\n\n".join([
        f"Training: one forward + backward per image, counted with FlopCounterMode; GPU times ESTIMATED at "
        f"{utilization:.0%} of each GPU's dense half-precision tensor peak "
        f"({', '.join(f'{g} {p}' for g, p in PEAK_TFLOPS.items())} TFLOP/s).",
        table(training, utilization, training=True),
        "Evaluation and sampling of the full presets (forward passes only, same assumption). "
        "Problem 2.3(a)'s T = 500 and T = 1500 runs repeat the DDPM's training cost and scale its sampling rows "
        "by T/1000.",
        table(evaluation_costs(), utilization, training=False),
    ])


def projected_line(problem: str, cfg, device_name: str | None = None, utilization: float = 0.3) -> str:
    """One line for a notebook: the run's training FLOPs and the ESTIMATED time on the detected GPU (its
    name matched against PEAK_TFLOPS), or why there is no estimate. The run prints a measured projection
    after its first epoch."""
    if device_name is None:
        device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    cost = training_cost(problem, cfg, problem)
    gpu = next((g for g in PEAK_TFLOPS if g in device_name.upper()), None)
    head = f"{cost.total:.3g} training FLOPs ({cost.epochs} epochs)"
    if gpu is None:
        return f"{head}; no estimate for {device_name}: the run prints its measured projection after one epoch"
    seconds = cost.total / (utilization * PEAK_TFLOPS[gpu] * 1e12)
    return (f"{head}; on this {gpu}, an ESTIMATED {duration(seconds)} of training at {utilization:.0%} of its "
            "half-precision peak (small models reach less: read it as a lower bound)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utilization", type=float, default=0.3,
                        help="assumed fraction of the dense half-precision tensor peak (default 0.3)")
    args = parser.parse_args()
    if not 0 < args.utilization <= 1:
        parser.error("--utilization must lie in (0, 1]")
    print(report(args.utilization))


if __name__ == "__main__":
    main()
