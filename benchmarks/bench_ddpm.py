"""Speed of the harness's DDPM sampler and training step against a starter-style baseline.

    .venv/bin/python benchmarks/bench_ddpm.py                          # CUDA if present, else CPU at a reduced size
    .venv/bin/python benchmarks/bench_ddpm.py --device cuda --compile max-autotune-no-cudagraphs
    .venv/bin/python benchmarks/bench_ddpm.py --device cpu --timesteps 20 --train-steps 5 --repeats 3

The model is the graded `ddpm_solution.Unet(dim, dim_mults=(1, 2, 4, 8))`, randomly initialised
(seed 0; the timings do not depend on the weights). Three comparisons, each measured in this run:

1. Ancestral sampling of `--batch` images over `--timesteps` steps of the T = 1000 schedule
   (step indices timesteps-1 .. 0). Baseline: `ddpm_solution.p_sample_loop`, the starter's loop,
   fp32 and eager, which keeps every intermediate image on the host and returns them stacked,
   (timesteps, B, 3, 32, 32). Ours: `experiments.diffusion.Diffusion(1000).sample` under the
   precision policy's autocast (experiments.precision), the model in channels_last on CUDA and
   optionally torch.compile'd; it keeps one batch on the device and returns x_0 alone (moved to
   the host, inside the timing). Both start from the same x_T and draw the same noise from the
   global RNG, so the two x_0 agree up to rounding (exactly the same arithmetic on CPU, where
   autocast and channels_last are off).
2. DDIM (eta = 0) over `--ddim-steps` of those steps against ancestral sampling over all of them,
   both the harness's with the same model and settings (the ancestral time is the one of 1).
3. Training images/s at `--batch`: baseline `t_sample` + `p_losses` + Adam in fp32 eager; ours
   `Diffusion.loss` under that autocast, channels_last on CUDA, Adam, plus the EMA update, optionally
   compiled. Both start from the same weights and see the same synthetic digits
   (`experiments.synthetic.synthetic_digits`) and the same seed; the loss at a few steps and the mean
   over the timed steps are printed for each, so one can check that the curves agree within noise
   (on CPU they draw the same t and eps and agree to rounding).

Full size, the one the targets refer to (GPU): 1000 steps, 64 images, DDIM 50 steps, batch 64.
On CPU the defaults are reduced (8 steps, 16 images, 1 + 3 training steps, one run each), about
1.5 minutes on 2 shared cores; every table names the sizes it ran at. Runs alternate (baseline, ours, ...)
so both see the same machine state; tables give medians over `--repeats`.
"""
import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported: the baseline's bar would cut into the tables

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script
import ddpm_solution as ds
from benchmarks.common import device_name
from experiments import data, synthetic
from experiments.diffusion import EMA, Diffusion
from experiments.precision import Precision
from experiments.runs import synchronize

DIM_MULTS = (1, 2, 4, 8)
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
FULL_SIZE = {"timesteps": 1000, "batch": 64, "train_steps": 30, "warmup": 3, "repeats": 3}
CPU_SIZE = {"timesteps": 8, "batch": 16, "train_steps": 3, "warmup": 1, "repeats": 1}


# --------------------------------------------------------------------------- measuring

def load() -> str:
    """The 1, 5 and 15-minute load averages (other users of a shared machine slow every timing)."""
    if not hasattr(os, "getloadavg"):
        return "load average n/a"
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    """fn() and its wall-clock seconds, the device's queue drained before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


def compiled(model: torch.nn.Module, mode: str,
             probe: Callable[[torch.nn.Module], object]) -> tuple[torch.nn.Module, str]:
    """torch.compile(model, mode) once probe(net) has run through it; on failure, the eager model.

    Compilation is lazy, so errors show at the first calls: the probe makes them (and any
    CUDA-graph recording) happen here, and a failure is reported instead of ending the run."""
    if mode == "none":
        return model, "eager"
    net = torch.compile(model, mode=mode)
    try:
        probe(net)
    except Exception as error:
        torch._dynamo.reset()
        message = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        print(f"  torch.compile(mode={mode!r}) failed, running eager: {type(error).__name__}: {message}")
        return model, f"eager (compile {mode} failed)"
    return net, f"compile {mode}"


# --------------------------------------------------------------------------- training steps

def baseline_step(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The starter's step: t_sample, p_losses, Adam(lr 1e-4), fp32 eager; x (B, 3, 32, 32) -> its loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=ds.lr)

    def step(x: torch.Tensor) -> torch.Tensor:
        t = ds.t_sample(ds.T, x.shape[0]).to(x.device)                 # (B,) drawn on the host
        loss = ds.p_losses(model, x, t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def harness_step(net: torch.nn.Module, model: torch.nn.Module, diffusion: Diffusion, prec: Precision
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """experiments/ddpm.py's step: Diffusion.loss under the precision policy's autocast (and gradient
    scaling for fp16), Adam(lr 1e-4), EMA update.

    net is model itself or its compiled wrapper; x is channels_last on CUDA."""
    optimizer = torch.optim.Adam(model.parameters(), lr=ds.lr)
    ema = EMA(model)

    def step(x: torch.Tensor) -> torch.Tensor:
        loss = diffusion.loss(net, x, precision=prec.name)
        optimizer.zero_grad(set_to_none=True)
        prec.backward(loss)
        prec.step(optimizer)
        ema.update()
        return loss.detach()
    return step


# --------------------------------------------------------------------------- the three comparisons

def table(rows: list[tuple[str, list[float], int, str, float | None]], last: str) -> None:
    """Print (method, seconds of each run, images per run, one extra column, speed-up or None) as a table."""
    width = max(len(r[0]) for r in rows)
    print(f"  {'method':<{width}} {'median s':>8} {'min s':>8} {'images/s':>9} {last:>14} {'speed-up':>8}")
    for name, seconds, images, extra, speed_up in rows:
        median = statistics.median(seconds)
        ratio = f"{speed_up:>7.2f}x" if speed_up is not None else ""
        print(f"  {name:<{width}} {median:>8.3f} {min(seconds):>8.3f} {images / median:>9.1f} {extra:>14} {ratio:>8}")


def bench_sampling(model: torch.nn.Module, ours_model: torch.nn.Module, args: argparse.Namespace,
                   device: torch.device) -> None:
    """Comparisons 1 (baseline vs Diffusion.sample) and 2 (Diffusion.ddim_sample vs Diffusion.sample)."""
    diffusion = Diffusion(ds.T, device=device)  # the graded schedule, T = 1000
    shape = (args.batch, 3, 32, 32)
    start = args.timesteps - 1
    warm_start = min(args.warmup, args.timesteps) - 1

    def x_T() -> torch.Tensor:
        torch.manual_seed(args.seed)  # p_sample_loop draws x_T = randn(shape) first; the same draw for ours
        return torch.randn(shape, device=device)

    print(f"\n1-2. sampling {args.batch} images, {args.timesteps} ancestral steps (indices {start}..0 of T = {ds.T}), "
          f"DDIM {args.ddim_steps} step(s); full size: 64 images, 1000 vs 50 steps")

    def probe(net: torch.nn.Module) -> torch.Tensor:
        return diffusion.sample(net, x_T(), start=max(warm_start, 2), precision=args.precision, progress=False)

    net, label = compiled(ours_model, args.compile, probe)
    methods = {
        "baseline: p_sample_loop (fp32, eager, T-stack on host)":
            lambda: ds.p_sample_loop(model, shape, args.timesteps),
        f"ours: Diffusion.sample ({args.setting}, {label})":
            lambda: diffusion.sample(net, x_T(), start=start, precision=args.precision, progress=False).cpu(),
        f"ours: Diffusion.ddim_sample, {args.ddim_steps} step(s), eta 0 (speed-up vs ours)":
            lambda: diffusion.ddim_sample(net, x_T(), n_steps=args.ddim_steps, start=start, precision=args.precision,
                                          progress=False).cpu(),
    }
    seconds, results = {name: [] for name in methods}, {}
    if warm_start >= 0:  # untimed: first calls, allocator growth
        ds.p_sample_loop(model, shape, warm_start + 1)
        diffusion.ddim_sample(net, x_T(), n_steps=1, start=warm_start, precision=args.precision, progress=False)
    for _ in range(args.repeats):
        for name, fn in methods.items():
            torch.manual_seed(args.seed)
            results[name], s = timed(fn, device)
            seconds[name].append(s)

    (b_name, o_name, d_name), (b, o, d) = methods, (statistics.median(seconds[n]) for n in methods)
    baseline_x, ours_x, _ = results.values()
    table([(name, seconds[name], args.batch, f"{results[name].nbytes / 2 ** 20:.2f} MB",
            None if name == b_name else ref / statistics.median(seconds[name]))
           for name, ref in ((b_name, b), (o_name, b), (d_name, o))], "result on host")
    print(f"  baseline result: {tuple(baseline_x.shape)}, ours: {tuple(ours_x.shape)}; "
          f"max |x_0 baseline - x_0 ours| = {(baseline_x[-1] - ours_x).abs().max().item():.1e}"
          + (f"  ({args.precision} autocast: not expected to match)" if args.amp_active
             else "  (fp32 both: rounding only)"))
    print(f"  => sampling speed-up ours / baseline: {b / o:.2f}x (target on GPU at full size: >= 3x)")
    print(f"  => DDIM {args.ddim_steps} step(s) / ancestral {args.timesteps} steps: {o / d:.2f}x "
          f"(target at full size, 50 vs 1000 steps: >= 15x)")


def bench_training(init: dict, args: argparse.Namespace, device: torch.device) -> None:
    """Comparison 3: images/s of the starter's training step and of the harness's, same init and data."""
    n_steps = args.warmup + args.train_steps
    images, _ = synthetic.synthetic_digits(args.batch * n_steps, seed=args.seed)
    x_all = data.to_float(images).to(device)                                     # (steps * B, 3, 32, 32) in [-1, 1]
    batches = list(x_all.split(args.batch))
    ours_batches = [x.contiguous(memory_format=torch.channels_last) for x in batches] if device.type == "cuda" \
        else batches
    diffusion = Diffusion(ds.T, device=device)

    def fresh() -> torch.nn.Module:
        model = ds.Unet(dim=args.dim, dim_mults=DIM_MULTS).to(device)
        model.load_state_dict(init)
        return model.train()

    baseline_model = fresh()
    ours_model = fresh().to(memory_format=torch.channels_last) if device.type == "cuda" else fresh()

    def probe(net: torch.nn.Module) -> None:
        for _ in range(3):  # CUDA graphs are recorded after warm-up calls
            diffusion.loss(net, ours_batches[0], precision=args.precision).backward()
        ours_model.zero_grad(set_to_none=True)

    print(f"\n3. training, batch {args.batch}, {args.warmup} untimed + {args.train_steps} timed steps per run, "
          f"T = {ds.T}, same init, data and seed; full size: batch 64")
    net, label = compiled(ours_model, args.compile, probe)
    methods = {
        "baseline: t_sample + p_losses + Adam (fp32, eager)":
            (baseline_model, lambda: baseline_step(baseline_model), batches),
        f"ours: Diffusion.loss + Adam + EMA ({args.setting}, {label})":
            (ours_model, lambda: harness_step(net, ours_model, diffusion, Precision(device)), ours_batches),
    }
    seconds, losses = {name: [] for name in methods}, {}
    for _ in range(args.repeats):
        for name, (model, make_step, xs) in methods.items():
            model.load_state_dict(init)  # in place, so a compiled wrapper stays valid; a fresh Adam and EMA
            step = make_step()
            torch.manual_seed(args.seed)
            step_losses = [step(x) for x in xs[:args.warmup]]            # untimed
            timed_losses, s = timed(lambda: [step(x) for x in xs[args.warmup:]], device)  # noqa: B023 (called at once)
            losses[name] = torch.stack(step_losses + timed_losses).float().cpu()
            seconds[name].append(s)
    b_name, o_name = methods
    t_base = statistics.median(seconds[b_name])
    table([(name, seconds[name], args.batch * args.train_steps, f"{losses[name][args.warmup:].mean().item():.4f}",
            None if name == b_name else t_base / statistics.median(seconds[name])) for name in methods], "mean loss")
    checkpoints = sorted({round(k * (n_steps - 1) / 4) for k in range(5)})
    print("  loss at step " + "  ".join(f"{k + 1:>7}" for k in checkpoints))
    for name, tag in ((b_name, "baseline"), (o_name, "ours")):
        print(f"  {tag:<12} " + "  ".join(f"{losses[name][k].item():>7.4f}" for k in checkpoints))
    print(f"  => training speed-up ours / baseline: {t_base / statistics.median(seconds[o_name]):.2f}x "
          "(target on GPU at full size: >= 2x)")


# --------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    sized = lambda key, text: f"{text} (default: {FULL_SIZE[key]} on CUDA, {CPU_SIZE[key]} on CPU)"  # noqa: E731
    parser.add_argument("--timesteps", type=int, help=sized("timesteps", "ancestral sampling steps, at most 1000"))
    parser.add_argument("--ddim-steps", type=int, help="DDIM steps (default: 50 per 1000 ancestral steps, at least 1)")
    parser.add_argument("--batch", type=int, help=sized("batch", "images sampled, and the training batch"))
    parser.add_argument("--train-steps", type=int, help=sized("train_steps", "timed training steps per run"))
    parser.add_argument("--warmup", type=int, help=sized("warmup", "untimed training steps before them, and steps "
                                                                   "of the untimed sampling runs"))
    parser.add_argument("--repeats", type=int, help=sized("repeats", "timed runs of each method"))
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES,
                        help="torch.compile mode for ours (the baseline stays eager); reduce-overhead and "
                             "max-autotune-no-cudagraphs are for CUDA")
    parser.add_argument("--dim", type=int, default=32, help="U-Net base width (the graded model: 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    try:
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                              else "cpu" if args.device == "auto" else args.device)
    except RuntimeError as error:
        parser.error(f"--device {args.device!r}: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; use --device cpu or auto")
    defaults = FULL_SIZE if device.type == "cuda" else CPU_SIZE
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.ddim_steps is None:
        args.ddim_steps = max(1, round(args.timesteps * 50 / 1000))
    if not 1 <= args.timesteps <= ds.T:
        parser.error(f"--timesteps must be in [1, {ds.T}] (steps of the T = {ds.T} schedule), got {args.timesteps}")
    if not 1 <= args.ddim_steps <= args.timesteps:
        parser.error(f"--ddim-steps must be in [1, --timesteps = {args.timesteps}], got {args.ddim_steps}")
    if min(args.batch, args.train_steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch, --train-steps and --repeats must be >= 1, --warmup >= 0")
    if args.dim < 8 or args.dim % 8:
        parser.error(f"--dim must be a positive multiple of 8 (GroupNorm with 8 groups), got {args.dim}")
    if args.compile in ("reduce-overhead", "max-autotune-no-cudagraphs") and device.type != "cuda":
        parser.error(f"--compile {args.compile} is for CUDA; on {device.type} use none or default")
    args.precision = Precision(device).name  # the harness's policy: bf16 on sm_80+, fp16 on 7.x, else fp32
    args.amp_active = args.precision != "fp32"
    args.setting = args.precision + (", channels_last" if device.type == "cuda" else "")

    torch.manual_seed(args.seed)
    model = ds.Unet(dim=args.dim, dim_mults=DIM_MULTS).to(device).eval()      # random init: timing only
    init = copy.deepcopy(model.state_dict())
    ours_model = copy.deepcopy(model)
    if device.type == "cuda":
        ours_model = ours_model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    full = all(getattr(args, k) == FULL_SIZE[k] for k in ("timesteps", "batch")) and args.dim == 32

    print(f"device {device} ({device_name(device)}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{load()}")
    print(f"Unet(dim={args.dim}, dim_mults={DIM_MULTS}), {n_params / 1e6:.2f} M parameters, random init (seed "
          f"{args.seed}); {'full size' if full else 'REDUCED size'}: batch {args.batch}, {args.timesteps} sampling "
          f"steps, DDIM {args.ddim_steps}, {args.train_steps} timed training steps; {args.repeats} timed run(s) "
          f"after warm-up ({args.warmup}), medians; compile: {args.compile}")
    if device.type != "cuda":
        print(f"note: the harness's autocast and channels_last are CUDA-only: on {device.type} ours runs "
              "the baseline's fp32 arithmetic, so only the loop itself differs")
    bench_sampling(model, ours_model, args, device)
    bench_training(init, args, device)
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    main()
