"""Speed of VAE.log_likelihood against a starter-style baseline that decodes the K samples one by one.

    .venv/bin/python benchmarks/bench_vae_log_likelihood.py                  # CPU or CUDA (auto), batch 64, K = 100
    .venv/bin/python benchmarks/bench_vae_log_likelihood.py --device cpu --repeats 9

Both estimators run on the same model, VAE(z_dim=32) with the default 32-feature networks, randomly
initialised (seed 0, untrained: the timing does not depend on the weights) in eval mode, and on the
same inputs, 64 uniform images in [-1, 1], under torch.no_grad(), seeded identically so that the K
posterior draws are the same; the two estimates must agree to 1e-4 relative. The runs alternate
(baseline, ours, baseline, ...) so that both see the same machine state; the table gives medians.

On CPU the baseline's time swings with glibc malloc's state: each of its decodes allocates ~8 MB
upsampled activations, which malloc may return to the kernel and fault in again on the next call
(the `sys s` and `faults` columns). So the comparison runs twice: first as the process starts, then
with malloc told to keep freed memory (mallopt, as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_
would), which leaves compute alone. The first ratio is what a fresh process sees; the second is
the algorithmic one.
"""
import argparse
import inspect
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script
import vae_solution as vs
from benchmarks.common import device_name, keep_freed_memory


def baseline_log_likelihood(model: vs.VAE, x: torch.Tensor, K: int) -> torch.Tensor:
    """The starter's loop: K draws, K decodes of B images, densities from DiagonalGaussianDistribution; (B,)."""
    posterior = model.encode(x)
    prior = vs.DiagonalGaussianDistribution(torch.zeros_like(posterior.mean))
    log_w = []
    for _ in range(K):
        z = posterior.sample()                                              # (B, z_dim)
        log_px_z = -model.decode(z).nll(x)                                  # log p(x | z_k)
        log_w.append(log_px_z - prior.nll(z, dims=1) + posterior.nll(z, dims=1))  # + log p(z_k) - log q(z_k | x)
    return torch.logsumexp(torch.stack(log_w), dim=0) - math.log(K)        # (B,)


def timed(fn, device: torch.device) -> tuple[torch.Tensor, dict]:
    """Run fn() once; wall seconds (CUDA synchronised), process CPU user/sys seconds, minor page faults."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    return out, {"wall": t1 - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                 "faults": r1.ru_minflt - r0.ru_minflt}


def compare(methods: dict, device: torch.device, repeats: int, warmup: int, seed: int) -> tuple[dict, dict]:
    """Alternate the methods, seeding before each call; per-method timing dicts and last outputs."""
    stats, values = {name: [] for name in methods}, {}
    for i in range(warmup + repeats):
        for name, fn in methods.items():
            torch.manual_seed(seed)                                         # same K draws for every method
            values[name], s = timed(fn, device)
            if i >= warmup:
                stats[name].append(s)
    return stats, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--K", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=None, help="log_likelihood's chunk_size (default: its own)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each method first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.batch, args.K, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch, --K and --repeats must be >= 1, --warmup >= 0")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)

    torch.manual_seed(args.seed)
    model = vs.VAE(z_dim=32).to(device).eval()                              # random init: timing only
    x = torch.rand(args.batch, 3, 32, 32, device=device) * 2 - 1           # (B, 3, 32, 32) in [-1, 1]
    extra = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}
    methods = {
        "baseline: K sequential decodes": lambda: baseline_log_likelihood(model, x, args.K),
        "VAE.log_likelihood": lambda: model.log_likelihood(x, K=args.K, **extra),
    }

    regimes = ["as started"] + (["keeps freed"] if device.type == "cpu" else [])
    chunk = args.chunk_size or inspect.signature(vs.VAE.log_likelihood).parameters["chunk_size"].default
    print(f"device {device} ({device_name(device)}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"VAE(z_dim=32) random init, eval; x {args.batch}x3x32x32; K={args.K}, chunk_size={chunk}; "
          f"{args.repeats} timed runs after {args.warmup} warm-up, medians")
    print(f"{'malloc':<12} {'method':<32} {'wall s':>7} {'min s':>7} {'user s':>7} {'sys s':>7} "
          f"{'faults':>8} {'speed-up':>8}")
    rel = 0.0
    for regime in regimes:
        if regime == "keeps freed" and not keep_freed_memory():
            print("(not glibc: no second run)")
            break
        with torch.no_grad():
            stats, values = compare(methods, device, args.repeats, args.warmup, args.seed + 1)
        base, ours = values.values()
        rel = max(rel, ((ours - base).abs() / base.abs()).max().item())
        t_base = statistics.median(r["wall"] for r in next(iter(stats.values())))
        for name, runs in stats.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"{regime:<12} {name:<32} {med['wall']:>7.3f} {min(r['wall'] for r in runs):>7.3f} "
                  f"{med['user']:>7.2f} {med['sys']:>7.2f} {med['faults']:>8.0f} {t_base / med['wall']:>7.2f}x")
    print(f"max relative difference of the estimates {rel:.1e} (must be < 1e-4)")
    assert rel < 1e-4, f"log_likelihood disagrees with the baseline: max relative difference {rel:.1e}"

if __name__ == "__main__":
    main()
