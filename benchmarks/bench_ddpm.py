"""Speed of the harness's DDPM and VAE steps and DDPM samplers against the starter's own loops, in one run.

    .venv/bin/python benchmarks/bench_ddpm.py                          # CUDA if present, else CPU at a reduced size
    .venv/bin/python benchmarks/bench_ddpm.py --device cuda            # full size, steps as a run takes them
    .venv/bin/python benchmarks/bench_ddpm.py --device cuda --compile none   # the same, eager
    .venv/bin/python benchmarks/bench_ddpm.py --device cpu --timesteps 20 --train-steps 5 --repeats 3

"Ours" is exactly what a run executes: the harness's `experiments.harness.execution.Execution`, with
`--precision` (auto: measured on the run's own step, as a run does) and `--compile` (auto: the
training steps and samplers under torch.compile(mode="reduce-overhead"), i.e. CUDA graphs, on CUDA;
eager on CPU). The baselines are the starter's loops, fp32 and eager. Models are the graded ones,
randomly initialised (seed 0; timings do not depend on the weights). Comparisons, all measured in this run:

1. Ancestral sampling of `--batch` images over `--timesteps` steps of the T = 1000 schedule (indices
   timesteps-1 .. 0). Baseline: `ddpm_solution.p_sample_loop`, which keeps every intermediate image on
   the host, (timesteps, B, 3, 32, 32). Ours: `Diffusion(1000).sample(execution=...)`, one batch on the
   device, x_0 moved to the host inside the timing. Same x_T, same noise draws: in fp32 the two x_0
   agree up to rounding.
2. DDIM (eta = 0) over `--ddim-steps` of those steps against ours over all of them.
3. DDPM training images/s at `--batch`: baseline `t_sample` + `p_losses` + Adam; ours
   `experiments.problems.ddpm.training_step` (loss, backward, Adam, EMA) as the run compiles it.
4. VAE training images/s at `--batch`: the starter's loop (forward, (nll + kl).mean(), backward, Adam)
   against `experiments.problems.vae.training_step` as the run compiles it.
5. Fixed cost against cost per image: our DDPM and VAE steps (and the baselines) at `--batch` and at
   `--big-batch`; a line through the two step times, t(B) = fixed + B x per-image, gives each step's
   fixed (per-kernel overhead) share at `--batch` and its images/s ceiling 1 / per-image.

Targets at full size on one GPU (issue "Fast on the GPU it runs on"): DDPM training >= 3x the baseline,
ancestral sampling >= 10x, the VAE step >= 3x. Full size: 1000 steps, 64 images, DDIM 50 steps, batch 64,
big batch 512. On CPU the defaults are reduced (8 steps, 16 images, 1 + 3 training steps, big batch 64, one
run each); every table names the sizes it ran at. Runs alternate (baseline, ours, ...) so both see the same
machine state; tables give medians over `--repeats`.
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
import vae_solution as vs
from benchmarks.common import device_name
from experiments.harness import data, execution, synthetic
from experiments.harness.devices import synchronize
from experiments.harness.execution import Execution
from experiments.problems import ddpm, vae
from experiments.problems.diffusion import EMA, Diffusion

DIM_MULTS = (1, 2, 4, 8)
FULL_SIZE = {"timesteps": 1000, "batch": 64, "big_batch": 512, "train_steps": 30, "warmup": 5, "repeats": 3}
CPU_SIZE = {"timesteps": 8, "batch": 16, "big_batch": 64, "train_steps": 3, "warmup": 1, "repeats": 1}


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


# --------------------------------------------------------------------------- training steps

def baseline_ddpm_step(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
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


def ddpm_config(args: argparse.Namespace) -> ddpm.DDPMConfig:
    """The full DDPM config at the benchmark's sizes: T = 1000, the U-Net of width --dim, batch --batch."""
    return ddpm.config_for("full", batch_size=args.batch, dim=args.dim)


def ours_ddpm_step(model: torch.nn.Module, ex: Execution) -> Callable[[torch.Tensor], torch.Tensor]:
    """experiments.problems.ddpm's step as a run executes it: t and eps drawn (diffusion.draw), then training_step
    (loss,
    backward, Adam, EMA) through ex.compiled; x (B, 3, 32, 32) in the run's layout -> its loss."""
    diffusion = Diffusion(ds.T, device=ex.device)
    ema = EMA(model, ddpm.DDPMConfig.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=ds.lr)
    step = ex.compiled(ddpm.training_step(model, optimizer, ema, diffusion, ex), "DDPM training step")
    return lambda x: step(x, *diffusion.draw(x), ema.next_weight())


def baseline_vae_step(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The starter's VAE training cell: zero_grad, forward, (nll + kl).mean(), backward, Adam; fp32 eager."""
    optimizer = torch.optim.Adam(model.parameters(), lr=vs.lr)

    def step(x: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        _, nll, kl = model(x)
        loss = (nll + kl).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def ours_vae_step(model: torch.nn.Module, ex: Execution) -> Callable[[torch.Tensor], torch.Tensor]:
    """experiments.problems.vae's step as a run executes it (vae.training_step through ex.compiled) -> its loss."""
    step = ex.compiled(vae.training_step(model, torch.optim.Adam(model.parameters(), lr=vs.lr), ex),
                       "VAE training step")
    return lambda x: step(x)[0]


# --------------------------------------------------------------------------- the comparisons

def table(rows: list[tuple[str, list[float], int, str, float | None]], last: str) -> None:
    """Print (method, seconds of each run, images per run, one extra column, speed-up or None) as a table."""
    width = max(len(r[0]) for r in rows)
    print(f"  {'method':<{width}} {'median s':>8} {'min s':>8} {'images/s':>9} {last:>14} {'speed-up':>8}")
    for name, seconds, images, extra, speed_up in rows:
        median = statistics.median(seconds)
        ratio = f"{speed_up:>7.2f}x" if speed_up is not None else ""
        print(f"  {name:<{width}} {median:>8.3f} {min(seconds):>8.3f} {images / median:>9.1f} {extra:>14} {ratio:>8}")


def bench_sampling(model: torch.nn.Module, ours_model: torch.nn.Module, args: argparse.Namespace,
                   ex: Execution) -> None:
    """Comparisons 1 (baseline vs Diffusion.sample) and 2 (Diffusion.ddim_sample vs Diffusion.sample)."""
    device = ex.device
    diffusion = Diffusion(ds.T, device=device)  # the graded schedule, T = 1000
    shape = (args.batch, 3, 32, 32)
    start = args.timesteps - 1
    warm_start = min(args.warmup, args.timesteps) - 1

    def x_T() -> torch.Tensor:
        torch.manual_seed(args.seed)  # p_sample_loop draws x_T = randn(shape) first; the same draw for ours
        return torch.randn(shape, device=device)

    print(f"\n1-2. sampling {args.batch} images, {args.timesteps} ancestral steps (indices {start}..0 of T = {ds.T}), "
          f"DDIM {args.ddim_steps} step(s); full size: 64 images, 1000 vs 50 steps")
    methods = {
        "baseline: p_sample_loop (fp32, eager, T-stack on host)":
            lambda: ds.p_sample_loop(model, shape, args.timesteps),
        f"ours: Diffusion.sample ({args.setting})":
            lambda: diffusion.sample(ours_model, x_T(), start=start, execution=ex, progress=False).cpu(),
        f"ours: Diffusion.ddim_sample, {args.ddim_steps} step(s), eta 0 (speed-up vs ours)":
            lambda: diffusion.ddim_sample(ours_model, x_T(), n_steps=args.ddim_steps, start=start, execution=ex,
                                          progress=False).cpu(),
    }
    seconds, results = {name: [] for name in methods}, {}
    if warm_start >= 0:  # untimed: first calls, compilation, CUDA-graph recording, allocator growth
        ds.p_sample_loop(model, shape, warm_start + 1)
        diffusion.sample(ours_model, x_T(), start=max(warm_start, 2), execution=ex, progress=False)
        diffusion.ddim_sample(ours_model, x_T(), n_steps=min(2, warm_start + 1), start=warm_start, execution=ex,
                              progress=False)
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
          + (f"  ({ex.name} autocast: not expected to match)" if ex.name != "fp32"
             else "  (fp32 both: rounding only)"))
    print(f"  => sampling speed-up ours / baseline: {b / o:.2f}x (target on GPU at full size: >= 10x)")
    print(f"  => DDIM {args.ddim_steps} step(s) / ancestral {args.timesteps} steps: {o / d:.2f}x "
          f"(at full size, 50 vs 1000 steps: about 20x is the step count's ratio)")


def run_steps(step: Callable[[torch.Tensor], torch.Tensor], xs: list[torch.Tensor], warmup: int,
              device: torch.device) -> tuple[torch.Tensor, float]:
    """`warmup` untimed steps, then the rest timed: (every step's loss (n,) on the host, seconds of the timed)."""
    warm = [step(x) for x in xs[:warmup]]
    timed_losses, seconds = timed(lambda: [step(x) for x in xs[warmup:]], device)
    return torch.stack(warm + timed_losses).float().cpu(), seconds


def bench_training(problem: str, inits: dict, args: argparse.Namespace, ex: Execution, batch: int,
                   report_losses: bool = True) -> dict[str, float]:
    """Comparisons 3 and 4 (and 5's points): images/s of the starter's step and of ours for `problem` ("DDPM" or
    "VAE") at `batch`, same init, data and seed. Returns {"baseline"|"ours": median seconds per step}."""
    device = ex.device
    n_steps = args.warmup + args.train_steps
    images, _ = synthetic.synthetic_digits(batch * n_steps, seed=args.seed)
    batches = list(data.to_float(images).to(device).split(batch))                # each (B, 3, 32, 32) in [-1, 1]
    ddpm_problem = problem == "DDPM"
    ours_batches = [ex.layout(x) for x in batches] if ddpm_problem else batches  # the VAE keeps the default layout

    def fresh(ours: bool) -> torch.nn.Module:
        model = build(problem, args).to(device)
        model.load_state_dict(inits[problem])
        model = ex.place(model) if ours and ddpm_problem else model
        return model.train()

    baseline, ours = fresh(False), fresh(True)
    baseline_step = {"DDPM": baseline_ddpm_step, "VAE": baseline_vae_step}[problem]
    ours_step = {"DDPM": ours_ddpm_step, "VAE": ours_vae_step}[problem]
    methods = {
        f"baseline: the starter's {problem} step (fp32, eager)": (baseline, lambda: baseline_step(baseline), batches),
        f"ours: experiments.{problem.lower()}.training_step ({args.setting})": (ours, lambda: ours_step(ours, ex),
                                                                                ours_batches),
    }
    print(f"\n{problem} training, batch {batch}, {args.warmup} untimed + {args.train_steps} timed steps per run, "
          "same init, data and seed; losses of the first run")
    # Each step (its optimiser, and for ours its compiled graphs) is built once and reused by every run: the
    # weights are reset in place, which keeps a compiled step's guards valid, so nothing recompiles.
    steps = {name: make_step() for name, (_, make_step, _) in methods.items()}
    seconds, losses = {name: [] for name in methods}, {}
    for _ in range(args.repeats):
        for name, (model, _, xs) in methods.items():
            model.load_state_dict(inits[problem])
            torch.manual_seed(args.seed)
            run_losses, s = run_steps(steps[name], xs, args.warmup, device)
            losses.setdefault(name, run_losses)
            seconds[name].append(s)
    b_name, o_name = methods
    t_base, t_ours = statistics.median(seconds[b_name]), statistics.median(seconds[o_name])
    table([(name, seconds[name], batch * args.train_steps, f"{losses[name][args.warmup:].mean().item():.4f}",
            None if name == b_name else t_base / t_ours) for name in methods], "mean loss")
    if report_losses:
        checkpoints = sorted({round(k * (n_steps - 1) / 4) for k in range(5)})
        print("  loss at step " + "  ".join(f"{k + 1:>9}" for k in checkpoints))
        for name, tag in ((b_name, "baseline"), (o_name, "ours")):
            print(f"  {tag:<12} " + "  ".join(f"{losses[name][k].item():>9.4f}" for k in checkpoints))
    print(f"  => {problem} training speed-up ours / baseline at batch {batch}: {t_base / t_ours:.2f}x "
          "(target on GPU at full size, batch 64: >= 3x)")
    return {"baseline": t_base / args.train_steps, "ours": t_ours / args.train_steps}


def fixed_cost(problem: str, small: dict[str, float], big: dict[str, float], args: argparse.Namespace) -> None:
    """Comparison 5: the line t(B) = fixed + B x per-image through the step times at --batch and --big-batch."""
    b1, b2 = args.batch, args.big_batch
    print(f"\n5. {problem}: fixed cost per step against cost per image, from batch {b1} and {b2}")
    print(f"  {'step':<9} {'ms/step @' + str(b1):>13} {'ms/step @' + str(b2):>13} {'fixed ms':>9} "
          f"{'us/image':>9} {'fixed share @' + str(b1):>16} {'images/s ceiling':>17}")
    for who in ("baseline", "ours"):
        per_image = (big[who] - small[who]) / (b2 - b1)
        fixed = small[who] - b1 * per_image
        ceiling = f"{1 / per_image:>17,.0f}" if per_image > 0 else f"{'n/a':>17}"
        print(f"  {who:<9} {1e3 * small[who]:>13.2f} {1e3 * big[who]:>13.2f} {1e3 * fixed:>9.2f} "
              f"{1e6 * per_image:>9.1f} {fixed / small[who]:>16.0%} {ceiling}")


def build(problem: str, args: argparse.Namespace) -> torch.nn.Module:
    """The graded model of `problem`, random init (seeded by the caller)."""
    if problem == "DDPM":
        return ds.Unet(dim=args.dim, dim_mults=DIM_MULTS)
    return vae.build_model(vae.config_for("full"))


def decide_execution(args: argparse.Namespace, device: torch.device) -> Execution:
    """The Execution a DDPM run at these sizes would get: --precision (auto: measured on the run's own step, as
    runs.start does) and --compile (auto: CUDA graphs on CUDA, eager elsewhere)."""
    name, record = execution.choose_precision(device, args.precision, trial=ddpm.trial(ddpm_config(args)))
    return Execution(device, name, execution.compile_mode(args.compile, device, compiles=True), record)


# --------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    sized = lambda key, text: f"{text} (default: {FULL_SIZE[key]} on CUDA, {CPU_SIZE[key]} on CPU)"  # noqa: E731
    parser.add_argument("--timesteps", type=int, help=sized("timesteps", "ancestral sampling steps, at most 1000"))
    parser.add_argument("--ddim-steps", type=int, help="DDIM steps (default: 50 per 1000 ancestral steps, at least 1)")
    parser.add_argument("--batch", type=int, help=sized("batch", "images sampled, and the training batch"))
    parser.add_argument("--big-batch", type=int, help=sized("big_batch", "the second training batch of comparison 5"))
    parser.add_argument("--train-steps", type=int, help=sized("train_steps", "timed training steps per run"))
    parser.add_argument("--warmup", type=int, help=sized("warmup", "untimed training steps before them (compilation, "
                                                                   "CUDA-graph recording), and sampling steps of "
                                                                   "the untimed sampling runs"))
    parser.add_argument("--repeats", type=int, help=sized("repeats", "timed runs of each method"))
    parser.add_argument("--precision", default="auto", choices=execution.PRECISIONS,
                        help="ours: as --precision of a run (auto: measured)")
    parser.add_argument("--compile", default="auto", choices=execution.COMPILE_MODES,
                        help="ours: as --compile of a run (auto: CUDA graphs on CUDA, eager on CPU); the "
                             "baselines stay eager")
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
    if min(args.batch, args.train_steps, args.repeats) < 1 or args.warmup < 0 or args.big_batch <= args.batch:
        parser.error("--batch, --train-steps and --repeats must be >= 1, --warmup >= 0, --big-batch > --batch")
    if args.dim < 8 or args.dim % 8:
        parser.error(f"--dim must be a positive multiple of 8 (GroupNorm with 8 groups), got {args.dim}")
    if args.compile == "reduce-overhead" and device.type != "cuda":
        parser.error(f"--compile reduce-overhead is for CUDA; on {device.type} use none, default or auto")

    print(f"device {device} ({device_name(device)}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{load()}")
    ex = decide_execution(args, device)
    args.setting = f"{ex.name}{', channels_last' if ex.channels_last else ''}, " + (
        "eager" if ex.compile == "none" else f"compile {ex.compile}")
    print(ex.describe())
    torch.manual_seed(args.seed)
    model = build("DDPM", args).to(device).eval()                               # random init: timing only
    inits = {"DDPM": copy.deepcopy(model.state_dict())}
    torch.manual_seed(args.seed)
    inits["VAE"] = copy.deepcopy(build("VAE", args).state_dict())
    ours_model = ex.place(copy.deepcopy(model))
    n_params = sum(p.numel() for p in model.parameters())
    full = all(getattr(args, k) == FULL_SIZE[k] for k in ("timesteps", "batch", "big_batch")) and args.dim == 32
    print(f"Unet(dim={args.dim}, dim_mults={DIM_MULTS}), {n_params / 1e6:.2f} M parameters, random init (seed "
          f"{args.seed}); {'full size' if full else 'REDUCED size'}: batch {args.batch} (and {args.big_batch}), "
          f"{args.timesteps} sampling steps, DDIM {args.ddim_steps}, {args.train_steps} timed training steps; "
          f"{args.repeats} timed run(s) after warm-up ({args.warmup}), medians")
    bench_sampling(model, ours_model, args, ex)
    small = {problem: bench_training(problem, inits, args, ex, args.batch) for problem in ("DDPM", "VAE")}
    big = {problem: bench_training(problem, inits, args, ex, args.big_batch, report_losses=False)
           for problem in ("DDPM", "VAE")}
    for problem in ("DDPM", "VAE"):
        fixed_cost(problem, small[problem], big[problem], args)
    print(f"\n{load()} at the end")


if __name__ == "__main__":
    main()
