"""One command for a GPU session: what every problem's training step costs in each precision and at two
batch sizes, one CLI epoch per problem, and the DDPM against the starter, eager and compiled. Writes
benchmarks/measured/<device>.json and .md (the markdown also printed). Under 8 minutes on one GPU, offline.

    python3 benchmarks/gpu_check.py                  # CUDA: the full presets; at most 7.5 minutes
    python3 benchmarks/gpu_check.py --device cpu     # the CPU mode (the tests'): smoke models, seconds

Needs python3 with torch, torchvision, numpy, matplotlib, pillow, tqdm and einops (requirements.txt); no
install of this package and no network: it runs from a copy of the repository.

Parts, in order, each with a time budget in seconds on CUDA (BUDGETS; --budget-scale multiplies them); a part
that would run past the whole check's deadline (the sum, 445 s) gets what is left, and one past its budget is
stopped and its row says so:
    steps     the harness's training step of every problem in bf16 (compute capability >= 8.0), fp16
              (with its gradient scaler) and fp32, each at the full preset's batch and at a second
              batch (SECOND_BATCH), on 2,048 synthetic digits: images/s and peak memory, the points
              the step model of benchmarks/cost.py is fitted to                                 65
    data      the synthetic stand-in's 20,000 + 5,000 images, rendered once into the cache the CLI
              runs share ($A3_SYNTHETIC_CACHE, set to a temporary folder when unset)            20
    cli-*     `python -m experiments PROBLEM --preset full --data synthetic --out TMP`, stopped once
              two epochs are logged (the preset's own epoch count is kept, so these are ordinary
              epochs, not the last one with its snapshots): each epoch's train and total seconds from
              metrics.jsonl, the precision the run chose (provenance.json), and the whole run
              projected from them                                            vae 35, ddpm 95, simsiam 50
    bench-*   benchmarks/bench_ddpm.py at full size (1000 steps, 64 images, batch 64), one repeat,
              eager (--compile none) and compiled (--compile reduce-overhead), as subprocesses       60, 120
Cells of `steps` (an eager experiments.harness.execution.Execution per precision, the harness's losses):
    vae      recon, nll, kl = model(x); loss = (nll + kl).mean(); Adam
    ddpm     experiments.problems.diffusion.Diffusion(1000).loss (smooth-L1 noise prediction at uniform t); Adam
    simsiam  experiments.problems.simsiam.train_step, SGD; the views are a batch and its mirror image,
             so the augmentation's cost is left out (the CLI epochs include it)
CUDA cells use channels_last and cudnn.benchmark; each runs `--warmup` untimed steps, then up to `--steps`
timed steps or `--cell-seconds`, whichever ends first; images/s counts the timed steps (a SimSiam image is two
views), peak memory is torch.cuda.max_memory_allocated since the cell began. A cell out of memory reads OOM.

Without CUDA (or with --device cpu, or --quick) the same parts run at test size: the smoke presets' models,
fp32, batches 2 and 4, one untimed and one timed step a cell, one CLI epoch of the VAE's smoke preset, no
bench_ddpm, budgets x 4; the file is then named after the CPU, and its timings are that CPU's.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("numpy", "torchvision", "matplotlib", "PIL", "tqdm", "einops")   # the harness's imports, beside torch


def missing_packages(names: tuple[str, ...] = REQUIRED) -> list[str]:
    """The modules among `names` that this Python cannot import."""
    return [name for name in names if importlib.util.find_spec(name) is None]


if __name__ == "__main__" and missing_packages(("torch", *REQUIRED)):
    sys.exit(f"gpu_check.py: {', '.join(missing_packages(('torch', *REQUIRED)))} not installed for {sys.executable}; "
             "nothing was measured. Install them: pip install -r requirements.txt (or from wheels brought along).")

import torch  # noqa: E402  (after the check above, so a missing package is one line, not a traceback)

sys.path.insert(0, str(ROOT))
from benchmarks import cost  # noqa: E402  (the repository root is not on the path as a script)
from benchmarks.common import device_name  # noqa: E402
from experiments.harness import data, execution, synthetic  # noqa: E402
from experiments.harness.devices import synchronize  # noqa: E402
from experiments.harness.execution import Execution, eager  # noqa: E402
from experiments.problems import simsiam  # noqa: E402
from experiments.problems.diffusion import Diffusion  # noqa: E402

PRECISIONS = ("bf16", "fp16", "fp32")
PROBLEMS = cost.PROBLEMS
SECOND_BATCH = {"vae": 512, "ddpm": 512, "simsiam-resnet18": 256, "simsiam-resnet18-cifar": 256}
CLI_PROBLEMS = ("vae", "ddpm", "simsiam-resnet18")       # the CLI's default backbone; -cifar has steps only
BUDGETS = {"data": 20, "steps": 65, "cli-vae": 35, "cli-ddpm": 95, "cli-simsiam-resnet18": 50,
           "bench-eager": 60, "bench-compiled": 120}     # seconds on CUDA; 445 in all
BENCHES = {"bench-eager": ["--compile", "none", "--repeats", "1"],
           "bench-compiled": ["--compile", "reduce-overhead", "--repeats", "1"]}
QUICK = {"preset": "smoke", "batches": (2, 4), "precisions": ("fp32",), "steps": 1, "warmup": 1, "pool": 16,
         "cli": ("vae",), "cli_epochs": 1, "benches": ()}


# --------------------------------------------------------------------------- the training steps

def build(problem: str, preset: str, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The harness's model for the preset (channels_last on CUDA), and the problem's optimizer."""
    cfg = cost.problem_config(problem, preset)
    model = cost.build(cost.family(problem), cfg, device="cpu").to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if problem.startswith("simsiam"):
        return model, torch.optim.SGD(model.parameters(), lr=simsiam.peak_lr(cfg), momentum=0.9, weight_decay=5e-4)
    return model, torch.optim.Adam(model.parameters(), lr=cfg.lr)


def step_fn(problem: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            ex: Execution) -> Callable[[torch.Tensor], torch.Tensor]:
    """One training step of the harness on images x (B, 3, 32, 32) in [-1, 1]: the VAE's negative ELBO,
    `Diffusion.loss` (T = 1000, linear betas) or `simsiam.train_step` on a batch and its mirror image;
    forward passes under the execution's autocast, fp16 with its gradient scaler."""
    if problem.startswith("simsiam"):
        return lambda x: simsiam.train_step(model, optimizer, x, x.flip(3), ex)
    diffusion = Diffusion(1000, device=ex.device)

    def loss(x: torch.Tensor) -> torch.Tensor:
        if problem == "ddpm":
            return diffusion.loss(model, x, ex)
        with ex.autocast():
            _, nll, kl = model(x)                                            # (B,), (B,)
        return (nll.float() + kl.float()).mean()

    def step(x: torch.Tensor) -> torch.Tensor:
        value = loss(x)
        optimizer.zero_grad(set_to_none=True)
        ex.backward(value)
        ex.step(optimizer)
        return value.detach()
    return step


def timed_steps(step: Callable[[], torch.Tensor], device: torch.device, steps: int,
                seconds: float) -> tuple[int, float, float]:
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
    """Train `problem` in `precision` on random batches of `pool` (N, 3, 32, 32) float; the cell's numbers."""
    device = pool.device
    model, optimizer = build(problem, args.preset, device)
    train = step_fn(problem, model, optimizer, eager(device, precision))

    def step() -> torch.Tensor:
        x = pool[torch.randint(0, len(pool), (batch,), device=device)]
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return train(x)

    for _ in range(args.warmup):
        step()
    steps, seconds, last = timed_steps(step, device, args.steps, args.cell_seconds)
    return {"steps": steps, "seconds": round(seconds, 4), "images_per_s": round(steps * batch / seconds, 2),
            "loss": float(f"{last:.4g}")}


def measured_cell(problem: str, precision: str, pool: torch.Tensor, batch: int, args) -> dict:
    """run_cell with its peak memory (CUDA), or a note: bf16 unsupported, OOM."""
    device = pool.device
    cuda = device.type == "cuda"
    if cuda and precision not in execution.candidates(device):   # the policy's own list of what this GPU has
        return {"note": f"skipped: {precision} is not a candidate on this GPU (experiments.harness.execution)"}
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
    return {**row, "peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20)} if cuda else row


def steps_part(pool: torch.Tensor, args, deadline: float) -> list[dict]:
    """A row per (problem, precision, batch); a cell that would start after `deadline` is skipped."""
    rows = []
    for problem in args.problems:
        batches = args.batches or (cost.problem_config(problem, args.preset).batch_size, SECOND_BATCH[problem])
        for batch in batches:
            for precision in args.precisions:
                row = {"problem": problem, "precision": precision, "batch": batch}
                if time.perf_counter() > deadline:
                    row["note"] = "skipped: the part's budget is spent"
                else:
                    row |= measured_cell(problem, precision, pool, batch, args)
                rows.append(row)
                print("steps:", json.dumps(row), file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------- subprocesses

def stop(process: subprocess.Popen) -> None:
    """End a process this script started, with the process group it leads (SIGTERM, then SIGKILL)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def cli_command(problem: str, preset: str, device: torch.device, out: Path) -> list[str]:
    """The CLI command of one problem's full-preset run on the synthetic stand-in."""
    family = cost.family(problem)
    backbone = ["--backbone", problem.removeprefix("simsiam-")] if family == "simsiam" else []
    return [sys.executable, "-m", "experiments", family, "--preset", preset, "--data", "synthetic",
            "--device", str(device), "--out", str(out), *backbone]


def cli_epochs(problem: str, args, device: torch.device, budget: float) -> dict:
    """Run the CLI until `args.cli_epochs` epochs are in metrics.jsonl, or its process ends, or `budget` seconds
    pass; the row: images per epoch, each epoch's train and total seconds, and why it stopped."""
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{problem}-") as tmp:
        out = Path(tmp) / "run"
        command = cli_command(problem, args.preset, device, out)
        row = {"problem": problem, "command": " ".join(["python", *command[1:]]).replace(str(out), "TMP"),
               "measured": []}
        with open(Path(tmp) / "stderr", "w+") as err:
            process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                       env={**os.environ, "TQDM_DISABLE": "1"}, start_new_session=True)
            t0 = time.perf_counter()
            records: list[dict] = []
            while len(records) < args.cli_epochs and process.poll() is None and time.perf_counter() - t0 < budget:
                time.sleep(0.5)
                metrics = out / "metrics.jsonl"
                lines = metrics.read_text().splitlines() if metrics.exists() else []
                records = [json.loads(line) for line in lines if line.endswith("}")]
            stop(process)
            err.seek(0)
            last_error = (err.read().strip().splitlines() or [""])[-1][:200]
        metrics, provenance = out / "metrics.jsonl", out / "provenance.json"
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")] \
            if metrics.exists() else []
        if provenance.exists():   # how the run decided to execute its steps
            row["provenance"] = {k: v for k, v in json.loads(provenance.read_text()).items()
                                 if k.startswith(("precision", "compile", "execution", "tf32"))}
    records = records[:args.cli_epochs]
    row["measured"] = [{"train_seconds": round(r["train_seconds"], 3), "epoch_seconds": round(r["epoch_seconds"], 3)}
                       for r in records]
    if records:
        row["images"] = round(records[0]["images_per_s"] * records[0]["train_seconds"])
    if len(records) == args.cli_epochs:
        row["note"] = f"stopped after {len(records)} epoch(s), {time.perf_counter() - t0:.0f} s in all"
    elif process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
        row["note"] = f"exited with code {process.returncode}: {last_error}"
    else:
        row["note"] = f"{len(records)} epoch(s) within the budget of {budget:.0f} s"
    return row


def run_benchmark(script: str, argv: list[str], device: torch.device, budget: float) -> str:
    """The script's output (a subprocess on `device`), or why there is none; stopped after `budget` seconds."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--device", str(device), *argv]
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"},
                                   start_new_session=True)
        try:
            process.wait(budget)
            note = "" if process.returncode == 0 else f"\nexit {process.returncode}"
        except subprocess.TimeoutExpired:
            stop(process)
            note = f"\nSTOPPED after its budget of {budget:.0f} s (the output above is what it printed by then)"
        out.seek(0)
        return f"$ python benchmarks/{script} --device {device} {' '.join(argv)}\n{out.read().rstrip()}{note}"


# --------------------------------------------------------------------------- the file

def describe(device: torch.device, args) -> dict:
    """The measurement's header: device, versions, date, sizes, budgets."""
    cuda = device.type == "cuda"
    return {"device": device_name(device), "device_kind": device.type,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else None,
            "torch": torch.__version__, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "preset": args.preset, "source": "benchmarks/gpu_check.py " + " ".join(args.argv),
            "budgets": args.budgets, "steps": [], "epochs": [], "benchmarks": {}}


def markdown(m: dict) -> str:
    """The measurement as markdown: cost.py's tables of it, then each benchmark's output."""
    parts = [f"# {m['device']}: benchmarks/gpu_check.py", cost.measurement_section(m)]
    parts += [f"### {name}\n\n```\n{text}\n```" for name, text in m["benchmarks"].items()]
    if "budgets" in m:   # a transcribed measurement has none
        budgets = ", ".join(f"{k} {v:.0f} s" for k, v in m["budgets"].items())
        parts.append(f"Budgets: {budgets}. {m.get('seconds', 0):.0f} s in all.")
    return "\n\n".join(parts) + "\n"


def save(m: dict, folder: Path) -> Path:
    """Write <slug>.json and <slug>.md into `folder`, each in one rename (kept after every part)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cost.slug(m['device'])}.json"
    cost.write_atomic(path, json.dumps(m, indent=1) + "\n")
    cost.write_atomic(path.with_suffix(".md"), markdown(m))
    return path.with_suffix(".md")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when available), cuda:1, cpu")
    parser.add_argument("--quick", action="store_true", help="the CPU mode's tiny sizes on any device")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--precisions", nargs="+", default=None, choices=PRECISIONS,
                        help="default: all three on CUDA; fp32 in the CPU mode (the one a CPU run uses)")
    parser.add_argument("--cli", nargs="*", choices=CLI_PROBLEMS, default=None,
                        help="problems to run one CLI epoch of (default: all three; the CPU mode: vae)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per cell at most")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per cell first")
    parser.add_argument("--cell-seconds", type=float, default=1.0, help="timed seconds per cell at most")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiplies every part's budget")
    parser.add_argument("--measured-dir", type=Path, default=cost.MEASURED, help="where the .json and .md go")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.device == "cpu":
            print("no CUDA device here: CPU mode (smoke models, fp32, batches 2 and 4, one CLI epoch of the VAE's "
                  "smoke preset); the timings are this CPU's, not a GPU's", flush=True)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; leave --device out for the CPU mode")
    if args.budget_scale <= 0 or args.cell_seconds <= 0 or args.steps < 1 or args.warmup < 0:
        parser.error("--budget-scale and --cell-seconds must be > 0, --steps >= 1, --warmup >= 0")
    quick = args.quick or not args.device.startswith("cuda")
    args.preset, args.batches, args.pool = ("smoke", QUICK["batches"], QUICK["pool"]) if quick else ("full", None, 2048)
    if quick:
        args.steps, args.warmup = QUICK["steps"], QUICK["warmup"]
    args.precisions = args.precisions or list(QUICK["precisions"] if quick else PRECISIONS)
    args.cli = list(QUICK["cli"] if quick else CLI_PROBLEMS) if args.cli is None else args.cli
    args.cli_epochs = QUICK["cli_epochs"] if quick else 2
    args.benches = QUICK["benches"] if quick else tuple(BENCHES)
    # On CPU the smoke runs are short but the machine is slow: budgets generous enough for a loaded 2-core one.
    args.budgets = {k: v * args.budget_scale * (1 if not quick else 4) for k, v in BUDGETS.items()
                    if not k.startswith(("cli-", "bench-")) or k.removeprefix("cli-") in args.cli
                    or k in args.benches}
    return args


def main(argv: list[str] | None = None) -> str:
    start = time.perf_counter()
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    deadline = start + sum(args.budgets.values())
    m = describe(device, args)

    def budget(part: str) -> float:
        """The part's budget, cut to what is left before the whole check's deadline."""
        return max(0.0, min(args.budgets[part], deadline - time.perf_counter()))

    pool = data.to_float(synthetic.synthetic_digits(args.pool, seed=0)[0]).to(device)   # (pool, 3, 32, 32) in [-1, 1]
    m["steps"] = steps_part(pool, args, time.perf_counter() + budget("steps"))
    del pool
    if device.type == "cuda":
        torch.cuda.empty_cache()   # the memory back for the CLI runs and benchmarks below
    save(m, args.measured_dir)
    if args.cli:   # the CLI runs' data, rendered once into the cache they share
        os.environ.setdefault("A3_SYNTHETIC_CACHE", str(Path(tempfile.gettempdir()) / "a3-synthetic-cache"))
        t0 = time.perf_counter()
        for split in ("train", "test"):
            data.load_split("synthetic", split, ROOT / "data", download=False)
        m["data_seconds"] = round(time.perf_counter() - t0, 1)
    for problem in args.cli:
        m["epochs"].append(cli_epochs(problem, args, device, budget(f"cli-{problem}")))
        print("cli:", json.dumps(m["epochs"][-1]), file=sys.stderr, flush=True)
        save(m, args.measured_dir)
    for name in args.benches:
        m["benchmarks"][name] = run_benchmark("bench_ddpm.py", BENCHES[name], device, budget(name))
        save(m, args.measured_dir)
    m["seconds"] = round(time.perf_counter() - start, 1)
    path = save(m, args.measured_dir)
    text = path.read_text()
    print(text)
    print(f"written: {path} and {path.with_suffix('.json').name}")
    return text


if __name__ == "__main__":
    main()
