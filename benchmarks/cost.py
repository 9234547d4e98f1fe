"""What the experiments cost: FLOPs counted per training step, and times from measurements.

    .venv/bin/python benchmarks/cost.py            # the tables on stdout (about 15 s on a CPU)
    .venv/bin/python benchmarks/cost.py --write    # and rewrite benchmarks/COST.md and the README's cost tables

FLOPs are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` runs one forward +
backward of the model the harness builds (`experiments.*.build_model` on the preset's config) on a
few images on the `meta` device (shapes only, no arithmetic: the same counts as on a CPU, in a
fraction of the time), and the count per image is scaled to the images of an epoch:
floor(N / batch) x batch, N = the config's train_size, else SVHN's 73,257 or CIFAR-10's 50,000
training images. FlopCounterMode counts matrix multiplies and convolutions (2 FLOPs per
multiply-add) and nothing else: normalisation, activations, the loss and the optimizer are left out.

Times come only from measurements, the files in benchmarks/measured/ (`benchmarks/gpu_check.py`
writes one per device; each names its device, date, torch version and source). From them:
- the step model (StepModel), per problem and precision: seconds per training step at batch B
      t(B) = overhead + B x FLOPs per image / rate
  with both parameters fitted to steps timed at two batch sizes in the same run: `overhead` is the
  measured fixed cost of a step (kernel launches, the optimizer over every parameter, host work),
  `rate` the FLOP/s achieved on the step's arithmetic. No share of any datasheet peak is assumed.
- the projection of a whole run from one epoch measured through the CLI (epoch_projection).
A GPU with no file in benchmarks/measured/ gets no time at all: "not measured".
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script
from experiments.harness import loop
from experiments.measurements import amortisation, bound
from experiments.problems import ddpm, simsiam, vae

MEASURED = Path(__file__).resolve().parent / "measured"   # one JSON (and its markdown) per measured device
COST_MD = Path(__file__).resolve().parent / "COST.md"
UNMEASURED_GPUS = ("T4", "L4", "A100")                      # Colab's GPUs: no measurement, so no time
TRAIN_IMAGES = {"vae": 73_257, "ddpm": 73_257, "simsiam": 50_000}   # SVHN train, CIFAR-10 train
SVHN_TEST = 26_032
CIFAR10_TEST = 10_000
BACKBONES = ("resnet18", "resnet18-cifar")
MODULES = {"vae": vae, "ddpm": ddpm, "simsiam": simsiam}
# The benchmarks' problems: a SimSiam problem names its backbone.
PROBLEMS = ("vae", "ddpm", "simsiam-resnet18", "simsiam-resnet18-cifar")


# --------------------------------------------------------------------------- counting

def problem_config(problem: str, preset: str = "full", **overrides):
    """The preset's config of a benchmark problem (PROBLEMS): 'simsiam-<backbone>' picks the backbone."""
    if problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}")
    if problem.startswith("simsiam-"):
        return simsiam.config_for(preset, backbone=problem.removeprefix("simsiam-"), **overrides)
    return MODULES[problem].config_for(preset, **overrides)


def family(problem: str) -> str:
    """vae, ddpm or simsiam: the experiment module of a benchmark problem."""
    return problem.split("-", 1)[0]


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
    T, snapshots = cfg.timesteps, len(loop.snapshot_epochs(cfg.snapshot_every, cfg.epochs))
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
    """Q1.3-1.4 measured (experiments.measurements.amortisation.measure), at its most steps: per image, each Adam step
    decodes
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
    """Q2.3 measured (experiments.measurements.bound.measure): network_evaluations U-Net forwards per image."""
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


# --------------------------------------------------------------------------- the step model

@dataclass(frozen=True)
class StepModel:
    """Seconds per training step at batch B:  t(B) = overhead + B * flops_per_image / rate.

    overhead: seconds a step costs whatever its batch (what a batch of zero images would cost);
    rate: FLOP/s achieved on the counted arithmetic, math.inf when the larger batch was not slower
    (the step is all overhead at the batches measured). Both are fitted to measured steps (fit)."""
    overhead: float
    rate: float
    flops_per_image: float

    def seconds(self, batch: int) -> float:
        return self.overhead + batch * self.flops_per_image / self.rate

    def fixed_share(self, batch: int) -> float:
        """The part of a step at `batch` that is fixed cost, in [0, 1]."""
        return self.overhead / self.seconds(batch)

    @classmethod
    def fit(cls, flops_per_image: float, points: Sequence[tuple[int, float]]) -> StepModel:
        """The least-squares line through (batch, seconds per step) points, at two or more batch sizes:
            slope = sum (B - B_mean)(t - t_mean) / sum (B - B_mean)^2 = flops_per_image / rate
            overhead = t_mean - slope * B_mean
        Timing noise can put the line outside what a step can be: a slope <= 0 (a step that is all overhead at
        these batches) gives overhead = t_mean, rate = inf; an overhead < 0 gives overhead 0 and the line
        through the origin, slope = sum B t / sum B^2."""
        if len({b for b, _ in points}) < 2:
            raise ValueError(f"the step model needs steps timed at two or more batch sizes, got {list(points)}: "
                             "time the step at a second batch (benchmarks/gpu_check.py does)")
        if flops_per_image <= 0 or any(b <= 0 or t <= 0 for b, t in points):
            raise ValueError(f"batches, seconds and FLOPs must be positive, got {list(points)}, {flops_per_image}")
        n = len(points)
        b_mean, t_mean = sum(b for b, _ in points) / n, sum(t for _, t in points) / n
        slope = (sum((b - b_mean) * (t - t_mean) for b, t in points)
                 / sum((b - b_mean) ** 2 for b, _ in points))
        if slope <= 0:
            return cls(t_mean, math.inf, flops_per_image)
        if t_mean - slope * b_mean < 0:
            slope = sum(b * t for b, t in points) / sum(b * b for b, _ in points)
            return cls(0.0, flops_per_image / slope, flops_per_image)
        return cls(t_mean - slope * b_mean, flops_per_image / slope, flops_per_image)


_FLOPS: dict[tuple[str, str], float] = {}


def flops_per_image(problem: str, preset: str) -> float:
    """Counted FLOPs of one training step per image of a benchmark problem (PROBLEMS); a SimSiam image is its
    two views. Memoised: the count depends only on the preset's model."""
    if (problem, preset) not in _FLOPS:
        _FLOPS[problem, preset] = flops_per_step(family(problem), problem_config(problem, preset)) / 4
    return _FLOPS[problem, preset]


# --------------------------------------------------------------------------- measurements

def measurements(folder: Path = MEASURED) -> list[dict]:
    """Every measurement file in `folder` (*.json, as benchmarks/gpu_check.py writes them), sorted by device."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); rerun benchmarks/gpu_check.py to rewrite it, "
                             "or delete it") from error
    return found


def step_seconds(row: dict) -> float:
    """Seconds per step of a measured step row (its batch over its images/s)."""
    return row["batch"] / row["images_per_s"]


def step_models(measurement: dict) -> dict[tuple[str, str], StepModel]:
    """(problem, precision) -> the StepModel fitted to the measurement's step rows, for each pair timed at
    two or more batch sizes."""
    points = defaultdict(list)
    for row in measurement["steps"]:
        if row.get("images_per_s"):
            points[row["problem"], row["precision"]].append((row["batch"], step_seconds(row)))
    return {key: StepModel.fit(flops_per_image(key[0], measurement["preset"]), pts)
            for key, pts in points.items() if len({b for b, _ in pts}) >= 2}


def step_time(m: dict, problem: str, batch: int) -> tuple[float, str] | None:
    """Seconds per training step of `problem` at `batch` on the measured device, in the fastest precision (the
    one --precision auto picks by measurement), and how it was obtained: the step measured at that batch, else
    the step model; None when neither exists."""
    timed = [(step_seconds(r), f"measured step, {r['precision']}") for r in m["steps"]
             if r["problem"] == problem and r["batch"] == batch and r.get("images_per_s")]
    modelled = [(model.seconds(batch), f"step model, {precision}")
                for (p, precision), model in step_models(m).items() if p == problem]
    return min(timed or modelled, key=lambda t: t[0]) if timed or modelled else None


def epoch_seconds(problem: str, cfg, row: dict, epoch: dict) -> float:
    """One measured CLI epoch, scaled to cfg's epoch: its training part in proportion to the images, the rest
    (test loss, preview, monitor; 0 when not recorded) as it was."""
    rest = epoch["epoch_seconds"] - epoch["train_seconds"] if epoch.get("epoch_seconds") else 0.0
    return epoch["train_seconds"] * images_per_epoch(family(problem), cfg) / row["images"] + rest


def epoch_projection(problem: str, cfg, row: dict) -> float:
    """Seconds of cfg's whole training projected from the epochs measured through the CLI (row["measured"], one
    or two): the first epoch (warm-up included) once, then cfg.epochs - 1 times the last, each scaled by
    epoch_seconds:  e_1 + (epochs - 1) x e_last."""
    first, last = (epoch_seconds(problem, cfg, row, e) for e in (row["measured"][0], row["measured"][-1]))
    return first + (cfg.epochs - 1) * last


def slug(name: str) -> str:
    """A device name as a file name: 'NVIDIA H200' -> 'nvidia-h200'."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split()) or "unnamed"


def measurement_for(device_name: str, folder: Path = MEASURED) -> dict | None:
    """The measurement of the device called `device_name`, if benchmarks/measured/ holds one."""
    return next((m for m in measurements(folder) if slug(m["device"]) == slug(device_name)), None)


# --------------------------------------------------------------------------- the tables

def duration(seconds: float) -> str:
    """3 significant digits in h (from 2 h), min (from 1 min), s or ms."""
    for unit, size in (("h", 7200), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / (3600 if unit == 'h' else size):.3g} {unit}"
    return f"{seconds * 1e3:.3g} ms"


def markdown(head: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def flops_table(costs: list[Cost], training: bool) -> str:
    head = ["run", "counted", "FLOPs/epoch", "epochs", "total FLOPs"] if training else \
        ["evaluation pass", "counted", "total FLOPs"]
    return markdown(head, [[c.name, c.detail] + ([f"{c.flops:.3g}", c.epochs] if training else []) + [f"{c.total:.3g}"]
                           for c in costs])


def rate(images_per_s: float) -> str:
    return f"{images_per_s:,.0f}" if images_per_s >= 100 else f"{images_per_s:.2g}"


def header(m: dict) -> str:
    """Who measured what, where: the line above a measurement's tables."""
    return (f"Measured on {m['device']} ({m['device_kind']}), {m['date'] or 'date not recorded'}, torch {m['torch']}, "
            f"the {m['preset']} presets' models, synthetic digits. Source: {m['source']}.")


def steps_table(m: dict) -> str:
    """Each measured training step: images/s, and its seconds per step."""
    rows = [[r["problem"], r["precision"], r["batch"], rate(r["images_per_s"]) if r.get("images_per_s") else "",
             f"{step_seconds(r) * 1e3:.3g}" if r.get("images_per_s") else "", r.get("peak_mib", ""), r.get("note", "")]
            for r in m["steps"]]
    return markdown(["problem", "precision", "batch", "images/s", "ms/step", "peak MiB", "note"], rows)


def models_table(m: dict) -> str:
    """The step model fitted to each (problem, precision) measured at two batches."""
    rows = []
    for (problem, precision), model in sorted(step_models(m).items()):
        batch = problem_config(problem, m["preset"]).batch_size
        rows.append([problem, precision, f"{model.overhead * 1e3:.3g}",
                     "not resolved" if math.isinf(model.rate) else f"{model.rate / 1e12:.3g}",
                     f"{model.flops_per_image / 1e9:.3g}", batch, f"{model.seconds(batch) * 1e3:.3g}",
                     f"{model.fixed_share(batch):.0%}"])
    return markdown(["problem", "precision", "overhead ms/step", "rate TFLOP/s", "GFLOP/image",
                     "preset batch", "model ms/step", "fixed share"], rows)


def real_config(problem: str, preset: str):
    """The preset's config on the real dataset (SVHN, CIFAR-10), the one a student's run trains on."""
    return problem_config(problem, preset, data="cifar10" if family(problem) == "simsiam" else "svhn")


def measured_epochs(m: dict) -> dict[str, dict]:
    """problem -> its CLI epoch row, for the rows with at least one finished epoch."""
    return {r["problem"]: r for r in m["epochs"] if r.get("measured")}


def epochs_table(m: dict) -> str:
    """The epochs measured per problem through the CLI, and the whole run projected from them (epoch_projection)."""
    rows = []
    for r in m["epochs"]:
        seconds = [f"{e['train_seconds']:.3g} / " + (f"{e['epoch_seconds']:.3g}" if e.get("epoch_seconds") else "?")
                   for e in r.get("measured", [])]
        projected = ""
        if seconds:
            cfg = real_config(r["problem"], m["preset"])
            projected = (f"{duration(epoch_projection(r['problem'], cfg, r))} ({cfg.epochs} epochs of "
                         f"{images_per_epoch(family(r['problem']), cfg):,} images)")
        precision = r.get("provenance", {}).get("precision", "not recorded")
        rows.append([r["problem"], f"`{r['command']}`", precision, f"{r['images']:,}" if r.get("images") else "",
                     "; ".join(seconds) or "none finished", projected, r.get("note", "")])
    return markdown(["problem", "command", "precision", "images", "train s / epoch s, per epoch",
                     "projected run on the real dataset (estimate)", "note"], rows)


def estimates_table(m: dict) -> str:
    """The full presets' training runs on the measured device: from the CLI epochs and from the steps alone."""
    epochs = measured_epochs(m)
    rows = []
    for problem in PROBLEMS:
        cfg = real_config(problem, m["preset"])
        steps = images_per_epoch(family(problem), cfg) // cfg.batch_size * cfg.epochs
        step = step_time(m, problem, cfg.batch_size)
        by_steps = f"{duration(steps * step[0])} ({step[1]})" if step else "not measured"
        by_epoch = duration(epoch_projection(problem, cfg, epochs[problem])) if problem in epochs else "not measured"
        rows.append([problem, cfg.epochs, f"{steps:,}", by_epoch, by_steps])
    return markdown(["training run (full preset, real dataset)", "epochs", "steps",
                     "from the CLI epochs (estimate)", "the steps alone (estimate)"], rows)


def measurement_section(m: dict) -> str:
    """A measurement's tables: what gpu_check.py writes and COST.md and the README quote."""
    parts = [header(m), "Training steps (`gpu_check.py`: the harness's step, no data loading; a SimSiam image is "
             "two views):", steps_table(m)]
    if step_models(m):
        parts += ["Step model fitted to those steps, t(B) = overhead + B x FLOPs per image / rate (two batches "
                  "each, same run):", models_table(m)]
    if m["epochs"]:
        parts += ["Epochs through the CLI (each row's command, on the synthetic stand-in; the first epoch includes "
                  "the warm-up):", epochs_table(m)]
    if m["preset"] == "full":
        parts += ["Whole training runs on this device, ESTIMATED from the rows above:", estimates_table(m)]
    return "\n\n".join(parts)


def not_measured_line() -> str:
    return (f"{', '.join(UNMEASURED_GPUS)}: **not measured**, so no time is given for them. A step's fixed cost "
            "depends on the GPU, its driver and the CPU that launches its kernels; none was measured there. "
            "Every run prints its own projection after its first epoch, and `benchmarks/gpu_check.py` measures "
            "a GPU in under 8 minutes.")


def report(folder: Path = MEASURED) -> str:
    training = [training_cost(problem, cfg, name) for problem, cfg, name in configs()]
    found = [m for m in measurements(folder) if m["device_kind"] == "cuda"]
    return "\n\n".join([
        "## FLOPs\n\nTraining: one forward + backward per image, counted with FlopCounterMode.",
        flops_table(training, training=True),
        "Evaluation and sampling of the full presets (forward passes only). Problem 2.3(a)'s T = 500 and T = 1500 "
        "runs repeat the DDPM's training cost and scale its sampling rows by T/1000.",
        flops_table(evaluation_costs(), training=False),
        "The last two rows are Part III's measurements, each against its run's training FLOPs; the amortisation "
        f"gap's at its worst case, all {vae.config_for('full').gap_steps} Adam steps (its stopping rule usually "
        "ends sooner). Both run at far larger batches than training's 64, and each run logs the seconds they "
        "took (`amortisation.seconds`, `bound.seconds` in summary.json).",
        "## Times on the GPUs measured",
        *[f"### {m['device']}\n\n{measurement_section(m)}" for m in found],
        "## Times on other GPUs\n\n" + not_measured_line(),
    ])


def projected_line(problem: str, cfg, device_name: str | None = None, folder: Path = MEASURED) -> str:
    """One line for a notebook: the run's training FLOPs and, when benchmarks/measured/ holds the detected
    GPU, its training time ESTIMATED from that measurement (the CLI epoch, else the step model); else
    that the GPU is not measured. The run prints a projection measured on its own first epoch."""
    if device_name is None:
        device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    problem = f"simsiam-{cfg.backbone}" if problem == "simsiam" else problem
    cost = training_cost(family(problem), cfg, problem)
    head = f"{cost.total:.3g} training FLOPs ({cost.epochs} epochs)"
    m = measurement_for(device_name, folder)
    if m is None:
        return (f"{head}; {device_name} is not measured (benchmarks/measured/), so no time is estimated: "
                "the run prints its measured projection after its first epoch")
    basis = f"measured on {m['device']}, {m['date'] or 'date not recorded'}"
    epoch = measured_epochs(m).get(problem)
    step = step_time(m, problem, cfg.batch_size)
    if epoch is not None:
        seconds, how = epoch_projection(problem, cfg, epoch), f"projected from its CLI epochs {basis}"
    elif step is not None:
        steps = images_per_epoch(family(problem), cfg) // cfg.batch_size * cfg.epochs
        seconds, how = steps * step[0], f"{steps:,} steps at the {step[1]} {basis}, the loop's other work left out"
    else:
        return f"{head}; {m['device']} has no measurement of {problem} (benchmarks/measured/)"
    return f"{head}; on this {m['device']}, an ESTIMATED {duration(seconds)} of training ({how})"


README = Path(__file__).resolve().parents[1] / "README.md"
README_MARKS = ("<!-- benchmarks/cost.py --write: begin -->", "<!-- benchmarks/cost.py --write: end -->")


def readme_block(folder: Path = MEASURED) -> str:
    """The README's tables: per full-preset training run, its counted FLOPs and, per measured GPU, the measured
    CLI epoch, the whole run estimated from it and from the steps alone; then each GPU's step model."""
    found = [m for m in measurements(folder) if m["device_kind"] == "cuda" and m["preset"] == "full"]
    head = ["training run (full preset)", "GFLOP per image (fwd + bwd)", "epochs"]
    for m in found:
        head += [f"{m['device']}: one epoch measured, train s", f"{m['device']}: whole run (estimate, from the "
                 "CLI epochs)", f"{m['device']}: the steps alone (estimate)"]
    head.append(", ".join(UNMEASURED_GPUS))
    rows = []
    for problem in PROBLEMS:
        cfg = real_config(problem, "full")
        row = [f"`{family(problem)}-full`" + (f", `{cfg.backbone}`" if family(problem) == "simsiam" else ""),
               f"{flops_per_image(problem, 'full') / 1e9:.3g}", cfg.epochs]
        for m in found:
            epoch = measured_epochs(m).get(problem)
            steps = images_per_epoch(family(problem), cfg) // cfg.batch_size * cfg.epochs
            step = step_time(m, problem, cfg.batch_size)
            row += [f"{epoch['measured'][0]['train_seconds']:.3g} s ({epoch['images']:,} images)" if epoch
                    else "not measured",
                    duration(epoch_projection(problem, cfg, epoch)) if epoch else "not measured",
                    f"{duration(steps * step[0])} ({step[1]})" if step else "not measured"]
        rows.append(row + ["not measured"])
    parts = [header(m) for m in found] + [markdown(head, rows)]
    parts += [f"Step model on {m['device']}, t(B) = overhead + B x FLOPs per image / rate:\n\n"
              + models_table(m) for m in found if step_models(m)]
    return "\n\n".join(parts)


def with_readme_block(text: str, block: str) -> str:
    """README text with the part between README_MARKS replaced by block."""
    begin, end = README_MARKS
    if begin not in text or end not in text:
        raise ValueError(f"README.md lacks the markers {begin} ... {end} around its cost tables")
    return text[:text.index(begin) + len(begin)] + "\n" + block + "\n" + text[text.index(end):]


PREAMBLE = """# What it costs

Written by `.venv/bin/python benchmarks/cost.py --write` (torch {torch}); the model and the counting are
described in `benchmarks/cost.py`. FLOP counts are exact for what `torch.utils.flop_counter.FlopCounterMode`
counts: the matrix multiplies and convolutions (2 FLOPs per multiply-add) of the models `experiments.*.build_model`
builds; not normalisation, activations, the loss or the optimizer step. Per image, times the images of an epoch
(SVHN 73,257 or CIFAR-10 50,000 training images, whole batches only).

Times are measured, or ESTIMATED from measurements and labelled so: each GPU's section names the device, the
date and the source of its numbers (`benchmarks/measured/`). The step model is
t(B) = overhead + B x FLOPs per image / rate, both parameters fitted to steps timed at two batch sizes in the
same run; no share of a datasheet peak is assumed anywhere.
"""


def write_atomic(path: Path, text: str) -> None:
    """Replace path's content with text in one rename, so an interrupted write leaves the old file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="also rewrite benchmarks/COST.md and the README's tables (between its markers)")
    args = parser.parse_args(argv)
    text = PREAMBLE.format(torch=torch.__version__.split("+")[0]) + "\n" + report() + "\n"
    print(text)
    if args.write:
        write_atomic(COST_MD, text)
        write_atomic(README, with_readme_block(README.read_text(), readme_block()))
    return text


if __name__ == "__main__":
    main()
