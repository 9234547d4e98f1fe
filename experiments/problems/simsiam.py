"""Problem 3: SimSiam on CIFAR-10 (or the synthetic stand-in), and the ablations of questions 4 and 5.

One run trains the graded `q3_solution.SimSiam` with the starter's SGD recipe on two views of each
image, drawn per sample on the device (`experiments.harness.augment`). Per epoch (metrics.jsonl): the
training loss, the learning rates, timings, and every `knn_every` epochs the two monitors of
Chen & He (2021): the weighted kNN accuracy (k = 200, T = 0.1) of the backbone's features, train
set as memory bank and test set as queries, and the collapse indicator, the per-channel std of
z / ||z|| over the test set beside its value 1/sqrt(d) for outputs spread over the sphere (Sec. 4.1).
At the end (summary.json, written last): final and best kNN accuracy, a linear probe on the frozen
features, timings. figures.py draws the PNGs, per run and across the ablations.

The ablations, one run folder each (`--ablation`):
    baseline       stop-gradient, trainable predictor                   (Q4, Q5)
    no-stop-grad   the targets z are not detached                       (Q4)
    no-predictor   h is the identity, MLP_mode='no_pred_mlp'            (Q5a)
    proj-4096      projector output d = 4096 instead of 2048            (Q5b)
    batch-4096     batch 4096 instead of 1024, lr by the linear rule,   (Q5b)
                   with a 10-epoch linear warm-up

More than one GPU (torchrun; experiments.harness.distributed): the batch is the global batch; every rank draws
the same order and augments the whole global batch from the same stream "views", then trains on its own
contiguous slice under DistributedDataParallel. Batch norm is synchronised over the ranks by default
(torch.nn.SyncBatchNorm.convert_sync_batchnorm on CUDA, as the official SimSiam code does; on CPU/gloo, where
SyncBatchNorm needs GPU inputs, distributed.GroupBatchNorm), so it normalises over the whole batch as one
process would; `--no-sync-bn` keeps per-GPU statistics (as the micro-batch path does). Micro-batches run
under DDP's no_sync() but for the last. The monitors (kNN, collapse, spectrum) and the linear probe run on
rank 0 alone while the others wait.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchvision
from torch import nn

import q3_solution
from experiments.harness import augment, config, data, distributed, loop, memory, rng, runs
from experiments.harness.config import checked_overrides
from experiments.harness.execution import Execution, Timings
from experiments.harness.files import read_json
from experiments.harness.runs import Run
from experiments.measurements import monitors, spectrum
from experiments.presentation import figures, names
from experiments.presentation.summaries import SimSiamSummary, spectra

# --------------------------------------------------------------------------- backbones

def resnet18_cifar(num_classes: int = 1000, zero_init_residual: bool = False, **kwargs) -> torchvision.models.ResNet:
    """torchvision's resnet18 with the usual CIFAR stem (SimCLR, Chen et al. 2020, App. B.9): conv1 a
    3x3 stride-1 convolution (64 channels, no bias) and no max-pool, so a 32x32 image keeps 32x32
    in layer1 and reaches layer4 at 4x4 (the ImageNet stem would leave 1x1). Same signature as
    `torchvision.models.resnet18`, so `q3_solution.SimSiam` takes it as `base_encoder`.
    """
    net = torchvision.models.resnet18(num_classes=num_classes, zero_init_residual=zero_init_residual, **kwargs)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's conv init
    net.maxpool = nn.Identity()
    return net


def tiny_convnet(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Sequential:
    """For tests: two stride-2 3x3 convolutions (16, 32 channels) with batch norm, global average
    pooling and a classifier `fc`, Linear(32, num_classes), where torchvision's resnets have it;
    trains in seconds on a CPU. zero_init_residual is accepted for the signature (no residual blocks).
    """
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), bn1=nn.BatchNorm2d(16), relu1=nn.ReLU(),
        conv2=nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), bn2=nn.BatchNorm2d(32), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),  # (B, 32)
        fc=nn.Linear(32, num_classes),
    ))


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": torchvision.models.resnet18,  # the default: the starter's, unchanged (ImageNet stem)
    "resnet18-cifar": resnet18_cifar,         # 15x the FLOPs per image; an option for fast GPUs
    "tiny": tiny_convnet,                     # tests only
}
# The assignment's network. On 32x32 inputs its ImageNet stem (7x7 stride-2 conv, max-pool) leaves
# 8x8 maps in layer1: 0.22 GFLOP per view forward plus backward, against 3.34 for resnet18-cifar,
# which keeps the five 100-epoch ablations within reach of a free Colab T4 (README, "What it costs").
DEFAULT_BACKBONE, CLI_BACKBONES = names.DEFAULT_BACKBONE, names.CLI_BACKBONES


# --------------------------------------------------------------------------- configuration

@dataclass
class SimSiamConfig(config.RunConfig):
    seed: int = 2022               # the starter's
    ablation: str = names.BASELINE  # a name in ABLATIONS; config_for sets the fields it changes
    backbone: str = DEFAULT_BACKBONE   # a name in BACKBONES
    # Model: the starter's SimSiam.
    dim: int = 2048                # d, projector output (4096 in proj-4096)
    pred_dim: int = 512            # predictor bottleneck
    stop_gradient: bool = True     # False in no-stop-grad
    mlp_mode: str | None = None    # q3_solution.SimSiam's MLP_mode; 'no_pred_mlp' in no-predictor
    # Optimisation: the starter's SGD. Batch 1024 is the starter's (spec/API.md); the paper's CIFAR-10
    # runs use 512 for 800 epochs. Kept, so that Q5b's variants are the starter's d x 2 and batch x 4;
    # 100 epochs of CIFAR-10 are then 48 x 100 = 4,800 steps.
    epochs: int = 100
    batch_size: int = 1024         # 4096 in batch-4096
    base_lr: float = 0.03          # lr = base_lr * batch_size / 256, the linear scaling rule (Goyal et al. 2017)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    fix_pred_lr: bool = True       # the predictor keeps the peak lr, no cosine decay (SimSiam, Table 1c)
    # Linear warm-up from 0 over the first epochs, then the cosine (the predictor is warmed up too).
    # 0 for the starter's batch 1024. batch-4096 would start at lr 0.48 = 0.03 * 4096 / 256, 4x the
    # baseline's, on a random network; it gets 10 epochs, the gradual warm-up of Goyal et al. (2017,
    # Sec. 2.2) that SimSiam's batch-size study (Sec. 4.3) also uses for its large batches.
    warmup_epochs: int = 0
    precision: str = "auto"        # auto | fp32 | bf16 | fp16 (experiments.harness.execution)
    compile: str = "auto"          # SimSiam's step is always eager (experiments.harness.execution)
    # Images per forward/backward pass; gradients are accumulated over batch_size / micro_batch of
    # them. None: planned from the device's free memory (experiments.harness.memory); the whole batch on CPU.
    micro_batch: int | None = None
    # Under torchrun: batch norm over the global batch (SyncBatchNorm), else over each GPU's share.
    sync_bn: bool = True
    # How much data (None: the whole split).
    train_size: int | None = None
    test_size: int | None = None
    # Monitors.
    knn_every: int = 1             # kNN and collapse every N epochs (and at the last)
    knn_k: int = 200               # clipped to the memory bank's size
    knn_temperature: float = 0.1
    probe_epochs: int = 100        # linear probe on frozen features at the end (Adam passes; 0: none)
    eval_batch_size: int = 1024
    # Question 4 (experiments.measurements.spectrum): F = E[z z^T] on a fixed batch of test images and the predictor's
    # alignment with its eigenvectors, every N epochs (and at the last). F has rank <= the batch: at least d.
    spectrum_every: int = 10
    spectrum_size: int = 5000

    def __post_init__(self) -> None:
        config.check_config(self)  # seed and epochs first: the messages below assume them sound
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {list(ABLATIONS)}, got {self.ablation!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {self.backbone!r}")
        if self.mlp_mode not in q3_solution.MLP_MODES:
            raise ValueError(f"mlp_mode must be one of {q3_solution.MLP_MODES}, got {self.mlp_mode!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must lie in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        if self.micro_batch is not None and not (2 <= self.micro_batch <= self.batch_size
                                                 and self.batch_size % self.micro_batch == 0):
            raise ValueError(f"micro_batch must divide batch_size={self.batch_size} and be at least 2 (batch norm), "
                             f"got {self.micro_batch}")
        if self.knn_every < 1 or self.batch_size < 2 or self.probe_epochs < 0:
            raise ValueError(f"need knn_every >= 1, batch_size >= 2 (batch norm), probe_epochs >= 0; got "
                             f"{self.knn_every}, {self.batch_size}, {self.probe_epochs}")
        if self.spectrum_every < 1 or self.spectrum_size < 2:
            raise ValueError(f"need spectrum_every >= 1 and spectrum_size >= 2, got {self.spectrum_every} and "
                             f"{self.spectrum_size}")


# Each ablation as the fields it changes in a preset's config.
ABLATIONS: dict[str, Callable[[SimSiamConfig], dict]] = {
    "baseline": lambda c: {},
    "no-stop-grad": lambda c: {"stop_gradient": False},
    "no-predictor": lambda c: {"mlp_mode": "no_pred_mlp"},
    "proj-4096": lambda c: {"dim": 2 * c.dim},                        # 2048 -> 4096 (smoke: 256 -> 512)
    "batch-4096": lambda c: {"batch_size": 4 * c.batch_size,          # 1024 -> 4096 (smoke: 32 -> 128)
                             # 10 of 100 epochs (smoke: 1 of 2); none in a 1-epoch run
                             "warmup_epochs": min(max(1, c.epochs // 10), c.epochs - 1)},
}

PRESETS = {
    "full": SimSiamConfig(),
    # Offline on 2 CPU cores in about 10 s per ablation: resnet18-cifar keeps 32x32 maps in layer1
    # (0.56 GMACs per image forward, about 100 training views/s here), so few images, a small batch,
    # a smaller d; k = 200 is clipped to the 128 images of the memory bank.
    "smoke": SimSiamConfig(preset="smoke", epochs=2, batch_size=32, dim=256, pred_dim=64, train_size=128,
                           test_size=64, probe_epochs=10, eval_batch_size=128, spectrum_every=1),
}


def config_for(preset: str, **overrides) -> SimSiamConfig:
    """The preset's config with `ablation`'s changes (default baseline), then `overrides` (None: unset)."""
    overrides = checked_overrides(PRESETS, preset, overrides, "SimSiam")
    ablation = overrides.pop("ablation", names.BASELINE)
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {list(ABLATIONS)}")
    base = PRESETS[preset]
    sized = replace(base, epochs=overrides.get("epochs", base.epochs))  # the ablation's warm-up follows --epochs
    return replace(base, ablation=ablation, **{**ABLATIONS[ablation](sized), **overrides})


def variants(preset: str) -> list[dict]:
    """What `python -m experiments all` runs: every ablation."""
    return [{"ablation": name} for name in ABLATIONS]


def run_name(cfg: SimSiamConfig) -> str:
    """simsiam-<preset>-<ablation>, plus -<backbone> when it is not the default."""
    return names.simsiam_run_name(cfg.preset, cfg.ablation, cfg.backbone)


# --------------------------------------------------------------------------- model and optimisation

def build_model(cfg: SimSiamConfig) -> q3_solution.SimSiam:
    return q3_solution.SimSiam(BACKBONES[cfg.backbone], dim=cfg.dim, pred_dim=cfg.pred_dim,
                               stop_gradient=cfg.stop_gradient, MLP_mode=cfg.mlp_mode)


def peak_lr(cfg: SimSiamConfig) -> float:
    """The linear scaling rule (Goyal et al. 2017): lr = base_lr * batch_size / 256."""
    return cfg.base_lr * cfg.batch_size / 256


def learning_rates(cfg: SimSiamConfig, t: float) -> tuple[float, float]:
    """(encoder lr, predictor lr) at t epochs into training (fractional, 0 <= t <= epochs).

    With peak = base_lr * batch / 256, W = warmup_epochs and E = epochs:
        t < W:   both        peak * t / W                                 (linear warm-up)
        t >= W:  encoder     peak * (1 + cos(pi (t - W) / (E - W))) / 2   (cosine decay)
                 predictor   peak with fix_pred_lr, else the encoder's
    """
    peak = peak_lr(cfg)
    W, E = cfg.warmup_epochs, cfg.epochs
    if t < W:
        return peak * t / W, peak * t / W
    encoder = peak * 0.5 * (1 + math.cos(math.pi * (t - W) / (E - W)))
    return encoder, peak if cfg.fix_pred_lr else encoder


def build_optimizer(model: q3_solution.SimSiam, cfg: SimSiamConfig) -> torch.optim.SGD:
    """SGD over two named parameter groups, encoder and predictor (absent when it has no trainable
    parameters); `set_learning_rates` gives each its own schedule."""
    groups = [{"name": name, "params": [p for p in module.parameters() if p.requires_grad]}
              for name, module in (("encoder", model.encoder), ("predictor", model.predictor))]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=peak_lr(cfg), momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def set_learning_rates(optimizer: torch.optim.Optimizer, cfg: SimSiamConfig, t: float) -> tuple[float, float]:
    """Set each group's lr to `learning_rates(cfg, t)`; returns (encoder lr, predictor lr)."""
    encoder_lr, predictor_lr = learning_rates(cfg, t)
    for group in optimizer.param_groups:
        group["lr"] = predictor_lr if group["name"] == "predictor" else encoder_lr
    return encoder_lr, predictor_lr


def micro_loss(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, ex: Execution) -> torch.Tensor:
    """The SimSiam loss L = 0.5 D(p1, z2) + 0.5 D(p2, z1) of two views x1, x2 (b, 3, H, W), computed in
    float32 (q3_solution.SimSiam.loss); the stop-gradient, or its absence, is in the z's the model returns.
    model: a q3_solution.SimSiam, or one under DistributedDataParallel."""
    with ex.autocast():
        p1, p2, z1, z2 = model(x1, x2)  # (b, d) each
    return distributed.unwrap(model).loss(p1.float(), p2.float(), z1.float(), z2.float())


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x1: torch.Tensor, x2: torch.Tensor,
               ex: Execution, micro_batch: int | None = None) -> torch.Tensor:
    """One SGD step on the SimSiam loss of two views x1, x2 (B, 3, H, W); returns the loss, detached.

    With micro_batch = m < B, the batch runs as B/m forward/backward passes whose gradients add up:
    the loss is a mean over samples, so L = sum_k (m/B) L_k exactly, except that batch norm then
    normalises over each micro-batch of m images (as per-GPU batch norm does in multi-GPU training
    without SyncBN). With m = B (or None) it is one plain step. Under DistributedDataParallel, x1 and x2 are
    this rank's share of the global batch, and every micro-batch but the last runs under no_sync(): the
    gradients are averaged over the ranks once per step.
    """
    B = x1.shape[0]
    m = micro_batch or B
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=x1.device)
    for i in range(0, B, m):
        with distributed.no_sync(model, last=i + m >= B):
            loss = micro_loss(model, x1[i:i + m], x2[i:i + m], ex)
            loss = loss if m == B else loss * (x1[i:i + m].shape[0] / B)
            ex.backward(loss)
        total += loss.detach()
    ex.step(optimizer)
    return total


def trial(cfg: SimSiamConfig) -> Callable[[Execution], Callable[[], torch.Tensor]]:
    """For the precision measurement (experiments.harness.execution.choose_precision): the run's training step on a
    fresh
    model and optimiser and two random views of min(batch, 1024) images (a batch that fits any GPU before the
    micro-batch is planned), in a candidate's execution."""
    def build(ex: Execution) -> Callable[[], torch.Tensor]:
        model = ex.place(build_model(cfg))
        optimizer = build_optimizer(model, cfg)
        x1, x2 = (ex.layout(torch.randn(min(cfg.batch_size, 1024), 3, 32, 32, device=ex.device)) for _ in range(2))
        return lambda: train_step(model, optimizer, x1, x2, ex)
    return build


def sync_bn_model(model: q3_solution.SimSiam, device: torch.device) -> q3_solution.SimSiam:
    """`model` with its batch norms synchronised over the ranks (experiments.harness.distributed.sync_batch_norm:
    torch.nn.SyncBatchNorm on CUDA); the parameters and buffers are the same tensors, the state_dict's keys
    the same, so a checkpoint moves between one GPU and several."""
    return distributed.sync_batch_norm(model, device)


def plan_micro_batch(model: q3_solution.SimSiam, cfg: SimSiamConfig, ex: Execution, batch: int | None = None) -> int:
    """cfg.micro_batch when set; else the largest divisor of `batch` (default the config's; a GPU's share under
    torchrun) whose saved activations fit the device's budget (experiments.harness.memory), measured on this device
    in this precision; the batch on CPU."""
    batch = batch or cfg.batch_size
    if cfg.micro_batch and batch % cfg.micro_batch:
        raise ValueError(f"--micro-batch {cfg.micro_batch} does not divide the {batch} images of each GPU's share "
                         f"of the batch {cfg.batch_size}: choose a divisor of {batch}")
    budget = memory.device_budget(ex.device)
    if cfg.micro_batch or budget is None:
        return min(cfg.micro_batch or batch, batch)
    return memory.plan_micro_batch(batch, step_bytes_per_image(model, ex), budget)


def step_bytes_per_image(model: q3_solution.SimSiam, ex: Execution) -> float:
    """Saved-activation bytes of one training image (two 32x32 views) in a training step as `ex` runs it."""
    probe = copy.deepcopy(model).train()  # a copy: the forward passes would move batch norm's statistics
    g = torch.Generator(ex.device).manual_seed(0)

    def step(b: int) -> torch.Tensor:
        x = ex.layout(torch.randn(b, 3, 32, 32, device=ex.device, generator=g))
        return micro_loss(probe, x, x.flip(0), ex)
    return memory.per_sample_bytes(step)


# --------------------------------------------------------------------------- monitors

def normalize(images: torch.Tensor) -> torch.Tensor:
    """The un-augmented view: uint8 (B, 3, H, W) -> float32 (x / 255 - mean) / std, CIFAR-10's mean and std
    (augment.normalize, as the augmented views)."""
    return augment.normalize(images.float() / 255)


class BackboneFeatures(nn.Module):
    """The encoder read at two depths: x (B, 3, H, W) -> h (B, w), the backbone's features (the input
    of `encoder.fc`, i.e. before the projector), or [h, z] (B, w + d) with `with_projection`.

    h is caught by a forward pre-hook on `encoder.fc`, so any torchvision-style encoder works.
    """

    def __init__(self, encoder: nn.Module, with_projection: bool = False):
        super().__init__()
        self.encoder = encoder
        self.with_projection = with_projection
        self.train(encoder.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        caught = []
        hook = self.encoder.fc.register_forward_pre_hook(lambda module, args: caught.append(args[0]))
        try:
            z = self.encoder(x)  # (B, d)
        finally:
            hook.remove()
        h = caught[0].flatten(1)  # (B, w)
        return torch.cat([h, z], dim=1) if self.with_projection else h


def features(encoder: nn.Module, images: torch.Tensor, batch_size: int, ex: Execution,
             with_projection: bool = False) -> torch.Tensor:
    """h (N, w), or [h, z] (N, w + d), of uint8 images (N, 3, H, W), normalised, in eval mode, run as `ex` says."""
    return monitors.extract_features(BackboneFeatures(encoder, with_projection), images, batch_size,
                                     images.device, normalize, execution=ex)


@torch.no_grad()
def evaluate(model: q3_solution.SimSiam, train: data.ImageSet, test: data.ImageSet, cfg: SimSiamConfig,
             ex: Execution) -> dict:
    """The per-epoch monitors, from un-augmented images in eval mode (batch norm's running statistics):
    kNN accuracy of the backbone's features (train set as memory bank, test set as queries) and the
    collapse indicator std(z / ||z||) over the test set, with its reference 1/sqrt(d).

    The projector ends in batch norm, whose running statistics forget their initial values only after
    some 50 steps (momentum 0.1): before that (e.g. in the smoke preset) the indicator reads low.
    train, test: ImageSets whose tensors are on the model's device.
    """
    bank = features(model.encoder, train.images, cfg.eval_batch_size, ex)        # (N, w)
    test_hz = features(model.encoder, test.images, cfg.eval_batch_size, ex, with_projection=True)
    h, z = test_hz[:, :bank.shape[1]], test_hz[:, bank.shape[1]:]                       # (M, w), (M, d)
    return {
        "knn_accuracy": monitors.knn_accuracy(bank, train.labels, h, test.labels, k=min(cfg.knn_k, len(train)),
                                              temperature=cfg.knn_temperature),
        "collapse_std": monitors.collapse_std(z),
        "collapse_std_reference": monitors.collapse_std_reference(z.shape[1]),
    }


# --------------------------------------------------------------------------- the run

@runs.locked
def run(cfg: SimSiamConfig, out: str | Path, *, resume: bool = False) -> Path:
    """Train (or resume) a SimSiam run in folder `out`; write its metrics, summary and figures."""
    # SimSiam's step is always eager (experiments.harness.execution says why)
    run_, ex, train, test = runs.start(cfg, out, "cifar10", resume=resume, trial=trial(cfg), compiles=False)
    device = ex.device
    model = ex.place(build_model(cfg))
    local = distributed.local_slice(cfg.batch_size)  # this rank's images of each global batch (all in one process)
    shuffle = rng.stream(cfg.seed, "shuffle")
    views = rng.stream(cfg.seed, "views", device)  # the augmentations, drawn on the device
    augmentation = augment.SimSiamAugment(channels_last=ex.channels_last)
    # uint8 on the device: CIFAR-10's 50,000 training images are 150 MB.
    train_d = replace(train, images=train.images.to(device), labels=train.labels.to(device))
    test_d = replace(test, images=test.images.to(device), labels=test.labels.to(device))
    # After the data and model are resident: what is free then is what the activations may use.
    # Every rank runs rank 0's plan (the same number of SyncBatchNorm exchanges on each).
    micro_batch = distributed.broadcast(plan_micro_batch(model, cfg, ex, local.stop - local.start))
    synced = distributed.is_distributed() and cfg.sync_bn
    if synced:
        model = sync_bn_model(model, device)
    optimizer = build_optimizer(model, cfg)
    net = distributed.wrap(model, device)  # DDP under torchrun (gradients averaged over the ranks), else model
    distributed.on_writer(lambda: run_.write_json("provenance.json", {
        **read_json(run_.dir, "provenance.json"), "micro_batch": micro_batch, "sync_batch_norm": synced,
        "accumulation_steps": (local.stop - local.start) // micro_batch}))
    steps = len(train) // cfg.batch_size
    spectrum_batch = normalize(test.subset(cfg.spectrum_size, rng.stream_seed(cfg.seed, "spectrum-images")).images
                               .to(device))  # the fixed batch of Question 4's F
    spectrum_batch = ex.layout(spectrum_batch)

    def train_epoch(epoch: int) -> dict:
        model.train()
        total = torch.zeros((), device=device)
        batches = data.iterate_batches(len(train), cfg.batch_size, shuffle=True, drop_last=True, generator=shuffle)
        bar, t0 = loop.progress(batches, steps, epoch), time.perf_counter()
        for i, idx in enumerate(bar, 1):
            lrs = set_learning_rates(optimizer, cfg, epoch - 1 + (i - 1) / steps)
            x1, x2 = augment.two_views(train_d.images[idx.to(device)], augmentation, views)  # (B, 3, 32, 32) each
            total += train_step(net, optimizer, x1[local], x2[local], ex, micro_batch)
            loop.show_rate(bar, i, total, cfg.batch_size, t0, every=20)
        return {"loss": distributed.mean(total).item() / steps, "lr": lrs[0], "predictor_lr": lrs[1],
                "images": steps * cfg.batch_size}

    timed = Timings(device)  # the final evaluation: the last epoch's spectrum and kNN, then the probe

    def after_epoch(epoch: int) -> dict:
        last = epoch == cfg.epochs
        with timed("spectrum") if last else nullcontext():
            spectrum.for_run(run_, model, spectrum_batch, epoch=epoch, every=cfg.spectrum_every, epochs=cfg.epochs)
        if epoch % cfg.knn_every and not last:
            return {}
        with timed("kNN") if last else nullcontext():
            return evaluate(model, train_d, test_d, cfg, ex)

    loop.fit(run_, epochs=cfg.epochs, device=device, state={"model": model, "optimizer": optimizer, "precision": ex},
             generators={"shuffle": shuffle, "views": views}, train_epoch=train_epoch, after_epoch=after_epoch,
             desc=f"SimSiam {cfg.ablation}")
    if not distributed.is_writer():  # the final evaluation and the figures: rank 0's
        return run_.dir
    if not run_.finished():
        write_summary(run_, cfg, model, train_d, test_d, ex, timed)  # written last: its presence means done
    figures.simsiam_figures(run_.dir)
    return run_.dir


def write_summary(run_: Run, cfg: SimSiamConfig, model: q3_solution.SimSiam, train: data.ImageSet,
                  test: data.ImageSet, ex: Execution, timed: Timings) -> None:
    """summary.json: final and best kNN accuracy and their epochs, the linear probe, timings. `timed` holds the
    last epoch's kNN and spectrum times (absent when that epoch ran in an earlier process); the probe adds its own."""
    metrics = run_.metrics()
    monitored, best = monitors.monitored_epochs(metrics), monitors.best_knn(metrics)
    probe = None
    if cfg.probe_epochs:
        with timed("probe"):
            bank = features(model.encoder, train.images, cfg.eval_batch_size, ex)
            queries = features(model.encoder, test.images, cfg.eval_batch_size, ex)
            probe = monitors.linear_probe(bank, train.labels, queries, test.labels, epochs=cfg.probe_epochs,
                                          generator=rng.stream(cfg.seed, "probe-order"))
    SimSiamSummary(
        ablation=cfg.ablation,
        backbone=cfg.backbone,
        epochs=cfg.epochs,
        dataset=read_json(run_.dir, "provenance.json")["source"],
        batch_size=cfg.batch_size,
        dim=cfg.dim,
        peak_lr=peak_lr(cfg),
        final_loss=metrics[-1]["loss"],
        final_knn_accuracy=monitored[-1]["knn_accuracy"],
        final_knn_epoch=monitored[-1]["epoch"],
        best_knn_accuracy=best["knn_accuracy"],
        best_knn_epoch=best["epoch"],
        knn_k=min(cfg.knn_k, len(train)),
        final_collapse_std=monitored[-1]["collapse_std"],
        collapse_std_reference=monitored[-1]["collapse_std_reference"],
        linear_probe_accuracy=probe.test if probe else None,
        linear_probe_train_accuracy=probe.train if probe else None,
        train_seconds_per_epoch=statistics.median(m["train_seconds"] for m in metrics),
        train_images_per_s=statistics.median(m["images_per_s"] for m in metrics),
        train_wall_seconds=sum(m["train_seconds"] for m in metrics),
        wall_seconds=metrics[-1]["wall_seconds"],
        spectrum=(spectra(run_.dir) or [None])[-1],
        evaluation_seconds=timed.seconds,
    ).write(run_.dir)
