"""Throughput of the batched SimSiam augmentation against the starter's per-image PIL pipeline in a DataLoader.

    .venv/bin/python benchmarks/bench_augment.py                          # CPU or CUDA (auto), 8192 images
    .venv/bin/python benchmarks/bench_augment.py --device cpu --n-images 4096 --repeats 5

Both make the two views of every image of a synthetic set (experiments.harness.synthetic.synthetic_digits, 32 x 32), one
epoch in random order, batches of --batch images (2 x batch views):
- starter: `torchvision_pipeline()` per PIL image, two draws per image (q3_misc.TwoCropsTransform), in a
  Dataset that holds the images as torchvision's CIFAR10 does (uint8 HWC, Image.fromarray per item), read by a
  DataLoader with 2 workers, batches on the CPU. Its workers persist and a warm-up epoch runs first, so worker
  start-up is not timed: the starter's best case.
- batched: the uint8 set on the device, a random permutation, `two_views(images[index], SimSiamAugment())` per
  batch, the views on the device (CUDA synchronised before the clock stops).
The epochs alternate (starter, batched, starter, ...) so both see the same machine; the table gives medians.
Images/s counts images, each with its two views.

On CPU the batched pipeline runs with each of --threads intra-op thread counts (default: 1 and torch's
default). Where other processes keep the cores busy (see the load average printed), OpenMP threads that spin
at every barrier while their partner is descheduled can make two threads slower than one: run with
OMP_WAIT_POLICY=PASSIVE there. Its time also depends on glibc malloc, which returns large freed blocks to the
kernel, so that they are faulted in again on the next use: the comparison runs twice, first as the process
starts, then with malloc told to keep freed memory (mallopt, as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_
would). --stages adds the time of each step of the batched pipeline on one batch.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script
import q3_misc
from benchmarks.common import device_name, keep_freed_memory
from experiments.harness import augment as A
from experiments.harness.devices import synchronize
from experiments.harness.synthetic import synthetic_digits


class PILImages(torch.utils.data.Dataset):
    """uint8 images (N, H, W, 3) served as torchvision's CIFAR10 serves them: transform(Image.fromarray(image))."""

    def __init__(self, images_hwc: np.ndarray, transform) -> None:
        self.images, self.transform = images_hwc, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i]))


def starter_epoch(loader: torch.utils.data.DataLoader) -> int:
    n = 0
    for x1, _x2 in loader:
        n += len(x1)
    return n


def batched_epoch(images: torch.Tensor, augment: A.SimSiamAugment, batch: int, generator: torch.Generator) -> int:
    order = torch.randperm(len(images), device=images.device, generator=generator)
    for start in range(0, len(images), batch):
        x1, x2 = A.two_views(images[order[start:start + batch]], augment, generator)
    synchronize(images.device)
    return len(images)


def with_threads(n: int, fn):
    """fn() with torch's intra-op thread count set to n, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def timed(fn) -> float:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def stages(images: torch.Tensor, augment: A.SimSiamAugment, repeats: int) -> list[tuple[str, float]]:
    """Median milliseconds of each step of `apply` on one batch (2 x batch images), chunked as SimSiamAugment does."""
    config, device = augment.config, images.device
    B, _, H, W = images.shape
    chunk = augment.cpu_chunk_size if device.type == "cpu" else B
    mean = torch.tensor(config.mean, device=device)[:, None, None]
    std = torch.tensor(config.std, device=device)[:, None, None]
    params = A.sample_params(B, H, W, config, device=device)
    chunks = [(images[lo:lo + chunk], params[lo:lo + chunk]) for lo in range(0, B, chunk)]
    crops = [A.crop_resize_flip(x, p, config.size) for x, p in chunks]
    steps = {
        "sample_params": lambda: A.sample_params(B, H, W, config, device=device),
        "crop_resize_flip": lambda: [A.crop_resize_flip(x, p, config.size) for x, p in chunks],
        "color_jitter_": lambda: [A.color_jitter_(x.clone(), p.factors, p.order, p.jitter)
                                  for x, (_, p) in zip(crops, chunks)],
        "(of which adjust_hue)": lambda: [A.adjust_hue(x, p.factors[:, A.HUE]) for x, (_, p) in zip(crops, chunks)],
        "grayscale_": lambda: [A.grayscale_(x.clone(), p.grayscale) for x, (_, p) in zip(crops, chunks)],
        "normalise": lambda: [(x - mean) / std for x in crops],
        "apply (all)": lambda: A.apply(images, params, config, chunk_size=chunk),
    }
    times = {name: [] for name in steps}
    for _ in range(repeats + 1):                                            # the first round warms up
        for name, fn in steps.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return [(name, 1e3 * statistics.median(t[1:])) for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    parser.add_argument("--n-images", type=int, default=8192, help="images per epoch")
    parser.add_argument("--batch", type=int, default=512, help="images per batch (2 x batch views)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each pipeline")
    parser.add_argument("--workers", type=int, default=2, help="the starter's DataLoader workers")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="intra-op threads of the batched pipeline on CPU, one row each (default: 1 and torch's)")
    parser.add_argument("--stages", action="store_true", help="also time each step of the batched pipeline")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.n_images, args.batch, args.repeats, *(args.threads or [1])) < 1 or args.workers < 0:
        parser.error("--n-images, --batch, --repeats and --threads must be >= 1, --workers >= 0")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    default_threads = torch.get_num_threads()
    threads = [default_threads] if device.type != "cpu" else args.threads or sorted({1, default_threads})

    images, _ = synthetic_digits(args.n_images, seed=args.seed)            # (N, 3, 32, 32) uint8
    loader = torch.utils.data.DataLoader(
        PILImages(images.permute(0, 2, 3, 1).numpy(), q3_misc.TwoCropsTransform(A.torchvision_pipeline())),
        batch_size=args.batch, shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0)
    on_device = images.to(device)
    augment = A.SimSiamAugment()
    generator = torch.Generator(device=device).manual_seed(args.seed)

    print(f"device {device} ({device_name(device)}), torch {torch.__version__}; starter DataLoader with "
          f"{args.workers} workers; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"{args.n_images} synthetic 32x32 images per epoch, batch {args.batch} (2 x {args.batch} views); "
          f"{args.repeats} timed epochs each after 1 warm-up, medians; load average before: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'malloc':<12} {'pipeline':<50} {'images/s':>10} {'min-max':>17} {'ratio':>7}")
    regimes = ["as started"] + (["keeps freed"] if device.type == "cpu" else [])
    for regime in regimes:
        if regime == "keeps freed" and not keep_freed_memory():
            print("(not glibc: no second run)")
            break
        methods = {f"starter: PIL per image, DataLoader({args.workers} workers)": lambda: starter_epoch(loader)}
        for n in threads:
            on = f"{device}, {n} thread{'s' * (n > 1)}" if device.type == "cpu" else str(device)
            methods[f"batched: SimSiamAugment on {on}"] = (
                lambda n=n: with_threads(n, lambda: batched_epoch(on_device, augment, args.batch, generator)))
        rates = {name: [] for name in methods}
        for i in range(args.repeats + 1):
            for name, fn in methods.items():
                rate = timed(fn)
                if i > 0:
                    rates[name].append(rate)
        base = statistics.median(next(iter(rates.values())))
        for name, r in rates.items():
            print(f"{regime:<12} {name:<50} {statistics.median(r):>10.0f} {min(r):>8.0f}-{max(r):<8.0f} "
                  f"{statistics.median(r) / base:>6.1f}x")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    if args.stages:
        batch = torch.cat([on_device[:args.batch]] * 2)                     # one call of two_views
        for n in threads:
            print(f"\nsteps of the batched pipeline on {len(batch)} images ({regimes[-1]}, "
                  f"{n} thread{'s' * (n > 1)}), median ms of {args.repeats} runs:")
            for name, ms in with_threads(n, lambda: stages(batch, augment, args.repeats)):
                print(f"  {name:<24} {ms:8.2f}")


if __name__ == "__main__":
    main()
