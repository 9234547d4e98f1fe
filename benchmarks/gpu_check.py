"""One GPU session's checks: training speed and memory of every problem in bf16, fp16 and fp32, then the
existing benchmarks' GPU comparisons at short settings. Within 8 minutes on one GPU, offline.

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check.md        # CUDA: the full presets' models and batches
    .venv/bin/python benchmarks/gpu_check.py --quick --device cpu      # the test's run: tiny batch, 2 steps a cell

Cells: (problem, precision) for the VAE, the DDPM and SimSiam with the starter's `resnet18` and with
`resnet18-cifar`, each built by the harness (`experiments.*.build_model` on the full preset's config;
the smoke preset's with --quick) and trained at the preset's batch with the harness's own step and
precision (`experiments.precision.Precision`), on synthetic digits
(`experiments.synthetic.synthetic_digits`) kept on the device:
    vae      recon, nll, kl = model(x); loss = (nll + kl).mean(); Adam
    ddpm     experiments.diffusion.Diffusion(1000).loss (smooth-L1 noise prediction at uniform t); Adam
    simsiam  experiments.simsiam.train_step, SGD; the views are a batch and its mirror image,
             so the augmentation's cost is left out (benchmarks/bench_simsiam_epoch.py includes it)
Precisions: bf16 autocast (only on compute capability >= 8.0), fp16 autocast with torch.amp.GradScaler,
fp32. CUDA cells use channels_last and cudnn.benchmark. Each cell runs `--warmup` untimed steps, then
up to `--steps` timed steps or `--cell-seconds`, whichever ends first; images/s counts the timed
steps (a SimSiam image is two views), peak memory is torch.cuda.max_memory_allocated since the cell
began (model, optimizer, data pool and activations). A cell that runs out of memory reads OOM.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import device_name  # noqa: E402  (the repository root is not on the path as a script)
from experiments import data, ddpm, simsiam, synthetic, vae  # noqa: E402
from experiments.diffusion import Diffusion  # noqa: E402
from experiments.precision import Precision  # noqa: E402
from experiments.runs import synchronize  # noqa: E402

PRECISIONS = ("bf16", "fp16", "fp32")
PROBLEMS = ("vae", "ddpm", "simsiam-resnet18", "simsiam-resnet18-cifar")
# The existing benchmarks at settings short enough for the session (argv after the script's name).
BENCHMARKS = {
    "bench_ddpm.py": ["--timesteps", "250", "--repeats", "2"],
    "bench_vae_log_likelihood.py": ["--repeats", "3"],
    "bench_augment.py": ["--n-images", "8192", "--repeats", "2"],
    "bench_simsiam_epoch.py": ["--n-images", "8192", "--batch", "512"],
}


# --------------------------------------------------------------------------- models and steps

def config(problem: str, preset: str = "full"):
    if problem == "vae":
        return vae.config_for(preset)
    if problem == "ddpm":
        return ddpm.config_for(preset)
    return simsiam.config_for(preset, backbone=problem.removeprefix("simsiam-"))


def build(problem: str, preset: str, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The harness's model for the preset, and the problem's optimizer."""
    cfg = config(problem, preset)
    module = vae if problem == "vae" else ddpm if problem == "ddpm" else simsiam
    model = module.build_model(cfg).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if problem.startswith("simsiam"):
        return model, torch.optim.SGD(model.parameters(), lr=simsiam.peak_lr(cfg), momentum=0.9, weight_decay=5e-4)
    return model, torch.optim.Adam(model.parameters(), lr=cfg.lr)


def step_fn(problem: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            prec: Precision) -> Callable[[torch.Tensor], torch.Tensor]:
    """One training step of the harness on images x (B, 3, 32, 32) in [-1, 1]: the VAE's negative ELBO,
    `Diffusion.loss` (T = 1000, linear betas) or `simsiam.train_step` on a batch and its mirror image;
    forward passes under prec's autocast, fp16 with its gradient scaler."""
    if problem.startswith("simsiam"):
        return lambda x: simsiam.train_step(model, optimizer, x, x.flip(3), prec)
    diffusion = Diffusion(1000, device=prec.device)

    def loss(x: torch.Tensor) -> torch.Tensor:
        if problem == "ddpm":
            return diffusion.loss(model, x, precision=prec.name)
        with prec.autocast():
            _, nll, kl = model(x)                                            # (B,), (B,)
        return (nll.float() + kl.float()).mean()

    def step(x: torch.Tensor) -> torch.Tensor:
        value = loss(x)
        optimizer.zero_grad(set_to_none=True)
        prec.backward(value)
        prec.step(optimizer)
        return value.detach()
    return step


# --------------------------------------------------------------------------- one cell

def timed_steps(
    step: Callable[[], torch.Tensor], device: torch.device, steps: int, seconds: float
) -> tuple[int, float, float]:
    """Run step() up to `steps` times or until `seconds` pass (checked every 5 steps); (steps, seconds, last loss)."""
    synchronize(device)
    t0, done = time.perf_counter(), 0
    while done < steps:
        value = step()
        done += 1
        if done % 5 == 0:
            synchronize(device)
            if time.perf_counter() - t0 > seconds:
                break
    synchronize(device)
    return done, time.perf_counter() - t0, value.item()


def run_cell(problem: str, precision: str, pool: torch.Tensor, batch: int, args) -> dict:
    """Train `problem` in `precision` on random batches of `pool` (N, 3, 32, 32) float; the cell's row."""
    device = pool.device
    model, optimizer = build(problem, args.preset, device)
    train = step_fn(problem, model, optimizer, Precision(device, precision))

    def step() -> torch.Tensor:
        x = pool[torch.randint(0, len(pool), (batch,), device=device)]
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return train(x)

    for _ in range(args.warmup):
        step()
    steps, seconds, last = timed_steps(step, device, args.steps, args.cell_seconds)
    rate = steps * batch / seconds
    return {"steps": steps, "images/s": f"{rate:,.0f}" if rate >= 100 else f"{rate:.2g}", "loss": f"{last:.4g}"}


def measured_cell(problem: str, precision: str, pool: torch.Tensor, batch: int, args) -> dict:
    """run_cell with its peak memory, or a note: bf16 unsupported, OOM."""
    device = pool.device
    cuda = device.type == "cuda"
    if precision == "bf16" and cuda and torch.cuda.get_device_capability(device) < (8, 0):
        return {"note": "skipped: bf16 needs compute capability >= 8.0"}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        row = run_cell(problem, precision, pool, batch, args)
    except torch.OutOfMemoryError:
        return {"note": "OOM"}
    finally:
        if cuda:
            torch.cuda.empty_cache()
    return {**row, "peak MiB": f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f}" if cuda else "n/a"}


def training_table(device: torch.device, args) -> str:
    """The markdown table of every (problem, precision) cell."""
    pool = data.to_float(synthetic.synthetic_digits(args.pool, seed=0)[0]).to(device)   # (pool, 3, 32, 32) in [-1, 1]
    columns = ["batch", "steps", "images/s", "peak MiB", "loss", "note"]
    lines = ["| problem | precision | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]
    for problem in args.problems:
        batch = args.batch or config(problem, args.preset).batch_size
        for precision in args.precisions:
            row = {"batch": batch, **measured_cell(problem, precision, pool, batch, args)}
            lines.append(f"| {problem} | {precision} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
            print(lines[-1], file=sys.stderr, flush=True)   # progress
    return "\n".join(lines)


# --------------------------------------------------------------------------- the existing benchmarks

def run_benchmark(script: str, argv: list[str], device: torch.device, timeout: float) -> str:
    """The script's output (a subprocess on `device`), or why there is none."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--device", str(device), *argv]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, "TQDM_DISABLE": "1"})
    except subprocess.TimeoutExpired as e:
        so_far = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""   # bytes, even with text=True
        return f"TIMED OUT after {timeout:.0f} s; output so far:\n{so_far}"
    tail = "" if done.returncode == 0 else f"\nexit {done.returncode}:\n{done.stderr[-2000:]}"
    return done.stdout + tail


def benchmarks_section(device: torch.device, deadline: float) -> str:
    """Each script's output in a fenced block; each gets an equal share of the time left before `deadline`."""
    parts = []
    for i, (script, argv) in enumerate(BENCHMARKS.items()):
        share = (deadline - time.perf_counter()) / (len(BENCHMARKS) - i)
        output = run_benchmark(script, argv, device, share) if share > 10 else "skipped: the time budget is spent"
        parts.append(f"### `benchmarks/{script} {' '.join(argv)}`\n\n```\n{output.rstrip()}\n```")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run for tests: the smoke preset's models (smaller DDPM U-Net and SimSiam d), "
                        "batch 2, 1 step a cell, a 16-image pool, no benchmarks")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--batch", type=int, default=None, help="default: each full preset's (64, 64, 1024)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per cell at most")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per cell first")
    parser.add_argument("--cell-seconds", type=float, default=15, help="timed seconds per cell at most")
    parser.add_argument("--pool", type=int, default=2048, help="synthetic images that batches are drawn from")
    parser.add_argument("--budget", type=float, default=450, help="seconds for the whole script; benchmarks "
                        "that would start after it are skipped")
    parser.add_argument("--no-benchmarks", action="store_true", help="skip the existing benchmark scripts")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.batch, args.steps, args.warmup, args.pool = "smoke", args.batch or 2, 1, 0, 16
        args.no_benchmarks = True
    else:
        args.preset = "full"
    return args


def main(argv: list[str] | None = None) -> str:
    start = time.perf_counter()
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    capability = f", compute capability {torch.cuda.get_device_capability(device)}" if device.type == "cuda" else ""
    text = (f"## GPU check: {device_name(device)} ({device}{capability}), torch {torch.__version__}\n\n"
            + training_table(device, args))
    if not args.no_benchmarks:
        text += "\n\n" + benchmarks_section(device, start + args.budget)
    text += f"\n\n({time.perf_counter() - start:.0f} s in all)\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
