"""A SimSiam training epoch: the harness's pipeline against the starter's, in one run.

    .venv/bin/python benchmarks/bench_simsiam_epoch.py                   # GPU when present
    .venv/bin/python benchmarks/bench_simsiam_epoch.py --device cpu      # reduced size, still prints the ratio

Both train q3_solution.SimSiam on a resnet18 with the CIFAR stem (d = 2048, pred_dim 512, SGD
lr 0.03 x batch / 256), from the same initial weights, on synthetic 32x32 images:
  baseline  the starter's pipeline: torchvision's per-image PIL augmentations (q3_misc.TwoCropsTransform)
            in a DataLoader with 2 workers (Colab's CPU), fp32, eager;
  ours      experiments.problems.simsiam: the uint8 training set on the device, both views from
            experiments.harness.augment on the device, run as a SimSiam run executes its steps
            (experiments.harness.execution: the precision measured on this step, channels_last on GPUs).
Targets on GPU (issue 4): >= 5x, and <= 15 s per 50k-image epoch on an H100.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script
import q3_misc
import q3_solution
from benchmarks.bench_augment import PILImages
from experiments.harness import augment, execution, synthetic
from experiments.harness.devices import synchronize
from experiments.harness.execution import Execution, eager
from experiments.harness.runs import environment
from experiments.problems import simsiam


def build(device: torch.device, dim: int, pred_dim: int, channels_last: bool):
    torch.manual_seed(0)
    model = q3_solution.SimSiam(simsiam.resnet18_cifar, dim=dim, pred_dim=pred_dim).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def sgd(model, batch: int) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.03 * batch / 256, momentum=0.9, weight_decay=5e-4)


def baseline_epoch(model, loader, device) -> tuple[float, int]:
    """The starter's loop: views from DataLoader workers, copied to the device, fp32 step."""
    optimizer, n, t0 = sgd(model, loader.batch_size), 0, time.perf_counter()
    for x1, x2 in loader:
        simsiam.train_step(model, optimizer, x1.to(device, non_blocking=True), x2.to(device, non_blocking=True),
                           eager(device))
        n += len(x1)
    synchronize(device)
    return time.perf_counter() - t0, n


def our_epoch(model, images, batch, ex: Execution) -> tuple[float, int]:
    """The harness's loop: uint8 images on the device, both views augmented there, steps as `ex` runs them."""
    device = ex.device
    optimizer, n = sgd(model, batch), 0
    views = augment.SimSiamAugment(channels_last=ex.channels_last)
    generator = torch.Generator(device).manual_seed(0)
    t0 = time.perf_counter()
    for idx in torch.randperm(len(images), device=device, generator=generator).split(batch):
        if len(idx) < batch:
            break
        x1, x2 = augment.two_views(images[idx], views, generator)
        simsiam.train_step(model, optimizer, x1, x2, ex)
        n += len(idx)
    synchronize(device)
    return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-images", type=int, default=None, help="default 50,000 on GPU, 256 on CPU")
    parser.add_argument("--batch", type=int, default=None, help="default 512 on GPU, 32 on CPU")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--pred-dim", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2, help="the baseline's DataLoader workers")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    n = args.n_images or (50_000 if gpu else 256)
    batch = args.batch or (512 if gpu else 32)
    cfg = simsiam.config_for("full", backbone="resnet18-cifar", dim=args.dim, pred_dim=args.pred_dim, batch_size=batch)
    name, record = execution.choose_precision(device, "auto", trial=simsiam.trial(cfg))  # as a run decides it
    ex = Execution(device, name, "none", record)
    env = environment(ex)
    print(ex.describe())
    print(f"device {env['device_name']} ({env['device']}), {os.cpu_count()} CPU cores, torch {env['torch']}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{n} synthetic 32x32 images, batch {batch}, d {args.dim}, pred_dim {args.pred_dim}, resnet18-cifar"
          + ("" if gpu else "  (REDUCED size for CPU)"))

    images, _ = synthetic.synthetic_digits(n, seed=0)  # (N, 3, 32, 32) uint8
    loader = torch.utils.data.DataLoader(
        PILImages(images.permute(0, 2, 3, 1).numpy(), q3_misc.TwoCropsTransform(augment.torchvision_pipeline())),
        batch_size=batch, shuffle=True, drop_last=True, num_workers=args.workers, pin_memory=gpu,
        persistent_workers=args.workers > 0)
    base_model = build(device, args.dim, args.pred_dim, channels_last=False)
    our_model = build(device, args.dim, args.pred_dim, channels_last=gpu)
    our_model.load_state_dict(copy.deepcopy(base_model.state_dict()))
    images_d = images.to(device)

    baseline_epoch(base_model, loader, device)        # warm-up: workers, cuDNN, allocator
    our_epoch(our_model, images_d, batch, ex)
    t_base, n_base = baseline_epoch(base_model, loader, device)
    t_ours, n_ours = our_epoch(our_model, images_d, batch, ex)
    rate_base, rate_ours = n_base / t_base, n_ours / t_ours
    print(f"  baseline (PIL, {args.workers} workers, fp32)       {t_base:8.2f} s  {rate_base:8.0f} images/s")
    print(f"  ours (device augmentation{', ' + ex.name}{', channels_last' if gpu else ''}) "
          f"{t_ours:8.2f} s  {rate_ours:8.0f} images/s")
    print(f"  => epoch speed-up: {rate_ours / rate_base:.2f}x; a 50k-image epoch would take "
          f"{50_000 / rate_ours:.1f} s (ours) vs {50_000 / rate_base:.1f} s (baseline)")


if __name__ == "__main__":
    main()
