"""Build the report: find the run folders, turn their numbers into LaTeX macros, copy their
figures, then compile report.tex to report/report.pdf.

    python report/build.py [--results DIR] [--run SLOT=FOLDER ...] [--preset full|smoke] [--no-pdf]

What it reads, per run folder (see experiments/runs.py): config.json, provenance.json,
metrics.jsonl, summary.json, figures/*.png, and for Problem 1.3(e, f) two artifacts
(latent_profiles.pt, interpolations.pt). It never writes into a run folder.

What it writes, under report/build/ (git-ignored, rebuilt each time):
    numbers.tex      \\setval{key}{value} for every number, name and command the text uses;
                     report.tex reads a value with \\val{key}, which shows a visible
                     "[missing: key]" box when the build could not produce it
    figures.tex      \\setfig{slot/name}{path} for every figure copied; \\fig{slot}{name}{caption}
                     shows a framed placeholder naming the command that produces a missing one
    provenance.tex   the first-page table: dataset, hardware, wall-clock and status of each run
    tables.tex       the tables of the practical part (latent peaks, T study, SimSiam ablations)
    figures/<slot>/  the PNGs, copied (stable paths), and the cross-run figures drawn by
                     experiments.figures (DDPM T study, SimSiam comparisons)

Slots: one per experiment the report uses. Under --results (default results/) a slot takes the
most recently modified folder whose name matches its run name, any preset:
    vae                  vae-<preset>
    ddpm                 ddpm-<preset>
    ddpm-Tlow/ddpm-Thigh ddpm-<p>-T<T> of the main DDPM run's preset p, T below/above its T
                         (preferring T/2 and 3T/2, the runs `python -m experiments all` makes)
    simsiam-<ablation>   simsiam-<preset>-<ablation>[-<backbone>]
--run SLOT=FOLDER names a slot's folder explicitly.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPORT = Path(__file__).resolve().parent
ROOT = REPORT.parent
BUILD = REPORT / "build"

# experiments/simsiam.py ABLATIONS and experiments/ddpm.py PRESETS' T, repeated here so that
# the run discovery works without torch (tests/test_report.py checks they agree).
SIMSIAM_ABLATIONS = ("baseline", "no-stop-grad", "no-predictor", "proj-4096", "batch-4096")
DEFAULT_TIMESTEPS = {"full": 1000, "smoke": 50}
DATASET_NAMES = {"svhn": "SVHN", "cifar10": "CIFAR-10", "synthetic": "synthetic stand-in"}
REAL_DATASET = {1: "SVHN", 2: "SVHN", 3: "CIFAR-10"}
PROBLEM_TITLES = {1: "Problem 1 (VAE)", 2: "Problem 2 (DDPM)", 3: "Problem 3 (SimSiam)"}

SIMPLE_SLOTS = ("vae", "ddpm", *(f"simsiam-{a}" for a in SIMSIAM_ABLATIONS))
T_SLOTS = ("ddpm-Tlow", "ddpm-Thigh")
SLOTS = ("vae", "ddpm", *T_SLOTS, *(f"simsiam-{a}" for a in SIMSIAM_ABLATIONS))
REDRAW = {"vae": "vae_figures", "ddpm": "ddpm_figures", "simsiam": "simsiam_figures"}
RUN_FILES = ("config.json", "provenance.json", "metrics.jsonl", "summary.json")
COLLAPSED_BELOW = 0.2   # collapse std x sqrt(d) under which a SimSiam run counts as collapsed
SAME_WITHIN = 0.5       # kNN accuracies closer than this many points are "about the same"
# Config fields the text quotes, as values <slot>-<field with hyphens> (e.g. vae-n-samples).
CONFIG_VALUES = ("batch_size", "lr", "z_dim", "timesteps", "dim", "beta_start", "beta_end", "n_samples",
                 "n_reconstructions", "n_final_samples", "snapshot_every", "preview_steps", "pred_dim",
                 "momentum", "weight_decay", "base_lr", "knn_temperature", "warmup_epochs")


def problem_of(slot: str) -> int:
    return {"vae": 1, "ddpm": 2, "simsiam": 3}[slot.split("-")[0]]


# --------------------------------------------------------------------------- LaTeX text

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                   "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}", "<": r"\textless{}", ">": r"\textgreater{}",
                   "|": r"\textbar{}"}


def escape(text: Any) -> str:
    """Any text (paths, device names, commands) as LaTeX that prints it literally (OT1 encoding)."""
    return "".join(_LATEX_SPECIALS.get(c, c) for c in str(text))


def number(x: float, fmt: str = ".1f") -> str:
    """A number for running text: format `fmt`, a real minus sign."""
    s = format(x, fmt)
    return "$-$" + s[1:] if s.startswith("-") else s


def percent(x: float, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage: 0.853 -> 85.3\\%."""
    return f"{100 * x:.{digits}f}\\%"


def duration(seconds: float) -> str:
    """42.1 s, 3.5 min, 2 h 05 min."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def compare(value: float, reference: float, *, higher: str = "higher than", lower: str = "lower than",
            tolerance: float = 0.0, same: str = "equal to") -> str:
    """The word that completes "value is ... reference"."""
    if abs(value - reference) <= tolerance:
        return same
    return higher if value > reference else lower


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# --------------------------------------------------------------------------- run folders

@dataclass
class RunFolder:
    """What the report reads from one run folder; missing or unreadable files give empty values."""

    slot: str
    path: Path
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    summary: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # files that could not be read

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def dataset(self) -> str | None:
        source = self.provenance.get("source") or (self.summary or {}).get("dataset")
        return DATASET_NAMES.get(source, source) if source else None

    @property
    def synthetic(self) -> bool:
        return (self.provenance.get("source") or (self.summary or {}).get("dataset")) == "synthetic"

    @property
    def hardware(self) -> str | None:
        """The device, then the precision it trained in and the micro-batch when the batch was split
        (experiments.precision, experiments.memory): "Tesla T4 (cuda), fp16, micro-batch 512"."""
        device, name = self.provenance.get("device"), self.provenance.get("device_name")
        if device is None and name is None:
            return None
        if str(device).startswith("cpu"):
            cores = self.provenance.get("cpu_count")
            detail = ", ".join(x for x in (name if name not in (None, "", "cpu") else None,
                                           f"{cores} cores" if cores else None) if x)
            where = f"CPU ({detail})" if detail else "CPU"
        else:
            where = f"{name} ({device})" if name and device else str(name or device)
        extras = [self.provenance.get("precision")]
        if self.provenance.get("accumulation_steps", 1) > 1:
            extras.append(f"micro-batch {self.provenance['micro_batch']}")
        return ", ".join([where] + [x for x in extras if x])

    @property
    def epochs(self) -> int | None:
        if self.summary and "epochs" in self.summary:
            return self.summary["epochs"]
        return self.metrics[-1].get("epoch") if self.metrics else None

    @property
    def wall_seconds(self) -> float | None:
        if self.summary and finite(self.summary.get("wall_seconds")):
            return self.summary["wall_seconds"]
        return self.metrics[-1].get("wall_seconds") if self.metrics else None

    def median(self, key: str) -> float | None:
        values = [m[key] for m in self.metrics if finite(m.get(key))]
        return statistics.median(values) if values else None

    def last(self, key: str) -> Any:
        """The last value of a metric (epochs without it, e.g. unmonitored ones, are skipped)."""
        values = [m[key] for m in self.metrics if key in m]
        return values[-1] if values else None


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path.name} unreadable ({e})")
        return None


def load_run(slot: str, path: str | Path) -> RunFolder:
    """Read one run folder; raises FileNotFoundError when `path` is not a folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} (for {slot}) does not exist")
    run = RunFolder(slot, path)
    run.config = _read_json(path / "config.json", run.problems) or {}
    run.provenance = _read_json(path / "provenance.json", run.problems) or {}
    run.summary = _read_json(path / "summary.json", run.problems)
    metrics_path = path / "metrics.jsonl"
    if metrics_path.exists():
        for k, line in enumerate(metrics_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                run.metrics.append(json.loads(line))
            except ValueError:  # a line cut by an interruption
                run.problems.append(f"metrics.jsonl line {k} unreadable")
    return run


def modified(path: Path) -> float:
    """When a run folder last changed: the newest of its top-level run files (or the folder)."""
    times = [p.stat().st_mtime for p in (path / name for name in RUN_FILES) if p.exists()]
    return max(times, default=path.stat().st_mtime)


_RUN_NAME = re.compile(r"^(?P<problem>vae|ddpm|simsiam)-(?P<preset>[A-Za-z0-9_]+)(?:-(?P<variant>.+))?$")


@dataclass(frozen=True)
class Candidate:
    """A folder under --results whose name is a run name: the slot it can fill."""

    path: Path
    slot: str            # ddpm T variants: "ddpm-T"
    preset: str
    timesteps: int | None = None


def classify(name: str) -> tuple[str, str, int | None] | None:
    """(slot, preset, T) for a run folder name, None for other names.
    vae-full -> ("vae", "full", None); ddpm-full-T500 -> ("ddpm-T", "full", 500);
    simsiam-full-no-predictor[-resnet18-cifar] -> ("simsiam-no-predictor", "full", None)."""
    m = _RUN_NAME.match(name)
    if not m:
        return None
    problem, preset, variant = m["problem"], m["preset"], m["variant"]
    if problem in ("vae", "ddpm") and variant is None:
        return problem, preset, None
    if problem == "ddpm" and variant and (t := re.fullmatch(r"T(\d+)", variant)):
        return "ddpm-T", preset, int(t[1])
    if problem == "simsiam" and variant:
        for ablation in SIMSIAM_ABLATIONS:
            if variant == ablation or variant.startswith(ablation + "-"):
                return f"simsiam-{ablation}", preset, None
    return None


def scan(results: Path) -> list[Candidate]:
    """Run folders (holding config.json) directly under `results`, by name."""
    if not results.is_dir():
        return []
    found = []
    for path in sorted(results.iterdir()):
        kind = classify(path.name) if path.is_dir() and (path / "config.json").exists() else None
        if kind:
            found.append(Candidate(path, *kind))
    return found


def _latest(candidates: list[Candidate]) -> Candidate | None:
    return max(candidates, key=lambda c: modified(c.path), default=None)


def _timesteps(path: Path) -> int | None:
    config = _read_json(path / "config.json", [])
    return config.get("timesteps") if isinstance(config, dict) else None


def select_runs(results: Path | None, overrides: dict[str, Path]) -> dict[str, Path | None]:
    """The folder of each slot: overrides first, else the latest matching folder under `results`."""
    unknown = set(overrides) - set(SLOTS)
    if unknown:
        raise ValueError(f"unknown slot(s) {sorted(unknown)} in --run; use one of: {', '.join(SLOTS)}")
    candidates = scan(results) if results else []
    chosen: dict[str, Path | None] = {}
    for slot in SIMPLE_SLOTS:
        latest = _latest([c for c in candidates if c.slot == slot])
        chosen[slot] = overrides.get(slot) or (latest.path if latest else None)

    # The T study: T variants of the main run's preset, below and above its T.
    variants = [c for c in candidates if c.slot == "ddpm-T"]
    main = chosen["ddpm"]
    if main is not None:
        main_kind = classify(main.name)
        preset = main_kind[1] if main_kind else (_read_json(main / "config.json", []) or {}).get("preset")
        reference = _timesteps(main)
    else:
        latest = _latest(variants)
        preset = latest.preset if latest else None
        reference = None
    variants = [c for c in variants if c.preset == preset]
    if reference is None:
        reference = DEFAULT_TIMESTEPS.get(preset) or (statistics.median(c.timesteps for c in variants)
                                                      if variants else 0)
    for slot, side, preferred in (("ddpm-Tlow", -1, reference // 2), ("ddpm-Thigh", 1, 3 * reference // 2)):
        pool = [c for c in variants if (c.timesteps - reference) * side > 0]
        exact = [c for c in pool if c.timesteps == preferred]
        pick = _latest(exact or pool)
        chosen[slot] = overrides.get(slot) or (pick.path if pick else None)
    return {slot: chosen[slot] for slot in SLOTS}


# --------------------------------------------------------------------------- commands

def run_command(slot: str, preset: str, timesteps: int | None = None) -> str:
    """The command that produces a slot's run folder."""
    problem = slot.split("-")[0]
    command = f"python -m experiments {problem} --preset {preset}"
    if slot in T_SLOTS:
        T = timesteps or DEFAULT_TIMESTEPS.get(preset, 1000)
        command += f" --timesteps {T // 2 if slot == 'ddpm-Tlow' else 3 * T // 2}"
    if problem == "simsiam":
        command += f" --ablation {slot.removeprefix('simsiam-')}"
    return command


def fix_command(slot: str, run: RunFolder | None, preset: str, main_timesteps: int | None) -> tuple[str, str]:
    """(status, command) for a slot: what is missing and the command that produces it."""
    if run is None:
        return "no run folder found", run_command(slot, preset, main_timesteps)
    folder = str(run.path)
    if not run.finished:  # the same options as the run's config, in its folder
        problem = slot.split("-")[0]
        resume = f"python -m experiments {problem} --preset {run.config.get('preset') or preset}"
        if slot in T_SLOTS and run.config.get("timesteps"):
            resume += f" --timesteps {run.config['timesteps']}"
        if problem == "simsiam":
            resume += f" --ablation {slot.removeprefix('simsiam-')}"
            if run.config.get("backbone") not in (None, "resnet18"):  # experiments.simsiam.DEFAULT_BACKBONE
                resume += f" --backbone {run.config['backbone']}"
        return f"run folder {folder} is unfinished (no summary.json)", f"{resume} --out {folder} --resume"
    function = REDRAW[slot.split("-")[0]]
    return (f"run folder {folder} is finished but lacks this figure",
            f"python -c \"from experiments import figures; figures.{function}('{folder}')\"")


# --------------------------------------------------------------------------- numbers

def _common(values: dict[str, str], run: RunFolder) -> None:
    s = run.slot
    values[f"{s}-folder"] = escape(run.path)
    values[f"{s}-name"] = escape(run.path.name)
    values[f"{s}-status"] = "finished" if run.finished else escape(
        f"unfinished: epoch {run.epochs or 0} of {run.config.get('epochs', '?')}")
    if run.config.get("preset"):
        values[f"{s}-preset"] = escape(run.config["preset"])
    if run.dataset:
        values[f"{s}-dataset"] = escape(run.dataset)
    if run.hardware:
        values[f"{s}-hardware"] = escape(run.hardware)
    if run.epochs is not None:
        values[f"{s}-epochs"] = str(run.epochs)
    if finite(run.wall_seconds):
        values[f"{s}-wall"] = duration(run.wall_seconds)
        values[f"{s}-wall-seconds"] = f"{run.wall_seconds:.0f}"
    for key, metric, fmt in (("epoch-seconds", "epoch_seconds", duration),
                             ("train-seconds-per-epoch", "train_seconds", duration),
                             ("images-per-s", "images_per_s", lambda v: f"{v:,.0f}".replace(",", "\\,"))):
        value = run.median(metric)
        if value is not None:
            values[f"{s}-{key}"] = fmt(value)
    for key in CONFIG_VALUES:
        if finite(run.config.get(key)):
            values[f"{s}-{key.replace('_', '-')}"] = escape(run.config[key])
    if isinstance(run.config.get("backbone"), str):
        values[f"{s}-backbone"] = escape(run.config["backbone"])
    n_train, batch = run.provenance.get("n_train"), run.config.get("batch_size")
    if finite(n_train) and finite(batch) and batch > 0:
        values[f"{s}-steps-per-epoch"] = str(n_train // batch)  # drop_last, as every experiment's loader
    if finite(batch) and s.startswith("simsiam"):
        values[f"{s}-bn-over"] = batch_norm_over(batch, run.provenance.get("micro_batch") or batch)
    if run.provenance.get("fallback_reason"):
        values[f"{s}-fallback"] = escape(run.provenance["fallback_reason"])


def batch_norm_over(batch: int, micro_batch: int) -> str:
    """What SimSiam's batch norm normalised over: each view of the batch, or of each micro-batch when the
    batch ran as micro-batches with accumulated gradients (experiments.memory)."""
    if micro_batch >= batch:
        return f"the {batch} images of each view of the whole batch"
    return (f"the {micro_batch} images of each view of a micro-batch (the batch of {batch} ran as "
            f"{batch // micro_batch} micro-batches whose gradients were accumulated, as per-GPU batch norm "
            "without SyncBN does)")


def _snapshot_epochs(run: RunFolder, kind: str) -> str | None:
    folder = run.path / "artifacts" / kind
    epochs = sorted(int(m[1]) for p in folder.glob("epoch_*.pt") if (m := re.fullmatch(r"epoch_(\d+)\.pt", p.name)))
    return ", ".join(map(str, epochs)) if epochs else None


def vae_numbers(values: dict[str, str], run: RunFolder) -> None:
    s = dict(run.summary or {})
    if run.metrics:  # an unfinished run still has its losses
        s.setdefault("final_train_loss", run.metrics[-1].get("loss"))
        s.setdefault("final_test_loss", run.metrics[-1].get("test_loss"))
    put = _putter(values, "vae", s)
    put("ll-nats", "test_log_likelihood_nats", lambda v: number(v, ".1f"))
    put("bpd", "test_bits_per_dim", lambda v: number(v, ".3f"))
    put("bpd-8bit", "test_bits_per_dim_8bit", lambda v: number(v, ".3f"))
    put("ll-k", "ll_K", str)
    put("ll-n", "ll_n_images", lambda v: f"{v:,}".replace(",", "\\,"))
    put("final-train-loss", "final_train_loss", lambda v: number(v, ".1f"))
    put("final-test-loss", "final_test_loss", lambda v: number(v, ".1f"))
    for key, metric in (("test-nll", "test_nll"), ("test-kl", "test_kl")):
        if finite(run.last(metric)):
            values[f"vae-{key}"] = number(run.last(metric), ".1f")
    if finite(run.last("test_kl")):
        values["vae-test-kl-bits"] = number(run.last("test_kl") / math.log(2), ".1f")
    if (epochs := _snapshot_epochs(run, "samples")) is not None:
        values["vae-snapshot-epochs"] = epochs


def _putter(values: dict[str, str], prefix: str, source: dict) -> Callable[[str, str, Callable[[Any], str]], None]:
    """put(key, field, format): values[prefix-key] = format(source[field]) when it is there and finite."""
    def put(key: str, name: str, fmt: Callable[[Any], str]) -> None:
        v = source.get(name)
        if v is not None and (finite(v) or not isinstance(v, (int, float))):
            values[f"{prefix}-{key}"] = fmt(v)
    return put


def latent_numbers(values: dict[str, str], run_dir: Path) -> list[tuple[int, int, list[tuple[int, float]]]]:
    """1.3(e): active latent dimensions (Burda et al. 2016: Var_x E[z_u|x] > 0.01) and, per class,
    the most class-specific dimensions (experiments.figures.class_specificity). Returns the rows
    (class, count, [(dim, score), ...]) of the peaks table."""
    from experiments import figures
    from experiments.runs import load_artifact

    profiles = load_artifact(run_dir, "latent_profiles.pt")
    variance = profiles["overall_std"] ** 2                       # (z_dim,)
    score = figures.class_specificity(profiles)                  # (10, z_dim)
    values["vae-active-dims"] = str(int((variance > 0.01).sum()))
    values["vae-z-total"] = str(variance.numel())
    top = score.abs().argsort(dim=1, descending=True)[:, :figures.N_MARKED]
    rows = [(c, int(profiles["counts"][c]), [(int(d), float(score[c, d])) for d in top[c]]) for c in range(len(score))]
    values["vae-peak-max"] = number(float(score.abs().max()), ".2f")
    shared = {d for _, _, peaks in rows for d, _ in peaks}
    values["vae-peak-distinct-dims"] = str(len(shared))
    values["vae-peak-n-marked"] = str(figures.N_MARKED)
    return rows


def interpolation_numbers(values: dict[str, str], run_dir: Path) -> None:
    """1.3(f): how even the interpolation steps are. For each strip of n decoded images, the
    per-step change d_k = mean |x_{k+1} - x_k| (8-bit levels); evenness = max_k d_k / mean_k d_k
    (1 when every step changes the image by the same amount)."""
    from experiments.runs import load_artifact

    strips = load_artifact(run_dir, "interpolations.pt")
    for kind in ("test", "prior"):
        x = strips[kind].float()                                 # (P, n, 3, 32, 32)
        steps = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(2, 3, 4))  # (P, n - 1)
        evenness = steps.max(dim=1).values / steps.mean(dim=1).clamp_min(1e-8)
        values[f"vae-interp-{kind}-step"] = number(float(steps.mean()), ".1f")
        values[f"vae-interp-{kind}-evenness"] = number(float(evenness.mean()), ".2f")
        values[f"vae-interp-{kind}-evenness-worst"] = number(float(evenness.max()), ".2f")
    values["vae-interp-pairs"] = str(strips["test"].shape[0])
    values["vae-interp-steps"] = str(strips["test"].shape[1])


def vae_artifact_numbers(values: dict[str, str], run: RunFolder | None) -> list | None:
    """The numbers of 1.3(e, f) read from a finished VAE run's artifacts (needs torch and
    experiments); returns the rows of the latent peaks table, None when unavailable."""
    if run is None or not run.finished:
        return None
    try:
        rows = latent_numbers(values, run.path)
        interpolation_numbers(values, run.path)
    except (ImportError, FileNotFoundError, KeyError, RuntimeError, ValueError) as e:
        print(f"note: VAE artifact numbers unavailable ({e})", file=sys.stderr)
        return None
    return rows


def ddpm_numbers(values: dict[str, str], run: RunFolder) -> None:
    s = dict(run.summary or {})
    if run.metrics:  # an unfinished run still has its losses
        s.setdefault("final_train_loss", run.metrics[-1].get("loss"))
        s.setdefault("final_test_loss_ema", run.metrics[-1].get("test_loss_ema"))
    p = run.slot
    put = _putter(values, p, s)
    put("fid", "quality_classifier_fid", lambda v: number(v, ".2f"))
    put("confidence", "quality_mean_confidence", lambda v: number(v, ".3f"))
    put("quality-size", "quality_size", str)
    put("sample-seconds-per-image", "sample_seconds_per_image", lambda v: number(v, ".3f"))
    put("sample-seconds", "sample_seconds", duration)
    put("train-seconds-per-epoch", "train_seconds_per_epoch", duration)
    put("final-train-loss", "final_train_loss", lambda v: number(v, ".4f"))
    put("final-test-loss-ema", "final_test_loss_ema", lambda v: number(v, ".4f"))
    if finite(s.get("timesteps")):
        values[f"{p}-timesteps"] = str(s["timesteps"])
    schedule = alpha_bar(run.config)
    if schedule:
        values[f"{p}-sqrt-abar-T"] = number(math.sqrt(schedule[-1]), ".2g")
        below = next((t for t, a in enumerate(schedule, 1) if a < 0.5), None)  # SNR abar / (1 - abar) < 1
        if below is not None:
            values[f"{p}-snr-one-t"] = str(below)
            values[f"{p}-snr-phrase"] = f"falls below 1 at $t={below}$"
        else:
            values[f"{p}-snr-phrase"] = (f"stays above 1 up to $t=T$ ($\\bar\\alpha_T={schedule[-1]:.2f}$): "
                                         "with so few steps even $x_T$ keeps most of the signal")
    if "t_star" in s:
        T = s.get("timesteps") or run.config.get("timesteps")
        if s["t_star"] is None:
            values[f"{p}-tstar"] = "not reached"
            values[f"{p}-tstar-frac"] = "n/a"
        else:
            values[f"{p}-tstar"] = number(s["t_star"], ".0f")
            if T:
                values[f"{p}-tstar-frac"] = percent(s["t_star"] / T, 0)
    if p != "ddpm":
        return
    put("classifier-acc", "classifier_test_accuracy", percent)
    put("recon-clean-acc", "recon_clean_accuracy", percent)
    put("n-final-samples", "n_final_samples", str)
    if s.get("recon_levels"):
        values["ddpm-recon-levels"] = ", ".join(map(str, s["recon_levels"]))
        values["ddpm-recon-first-level"] = str(s["recon_levels"][0])
        values["ddpm-recon-last-level"] = str(s["recon_levels"][-1])
    for key, name, fmt in (("recon-mse", "recon_mse", lambda v: number(v, ".3f")),
                           ("recon-preserved", "recon_label_preserved", percent)):
        series = s.get(name) or []
        if series:
            values[f"ddpm-{key}-first"] = fmt(series[0])
            values[f"ddpm-{key}-last"] = fmt(series[-1])
    if s.get("t_star_rule"):
        values["ddpm-tstar-rule"] = escape(s["t_star_rule"])
    for kind in ("samples", "previews"):
        if (epochs := _snapshot_epochs(run, kind)) is not None:
            values[f"ddpm-{kind}-epochs"] = epochs
    for key, name, split in (("probe-n-train", "probe_train", "n_train"), ("probe-n-test", "probe_test", "n_test")):
        asked, available = run.config.get(name), run.provenance.get(split)
        if finite(asked) and finite(available):
            values[f"ddpm-{key}"] = f"{min(asked, available):,}".replace(",", "\\,")
    probe = s.get("probe") or {}
    levels = [(int(k.removeprefix("bottleneck_t")), v) for k, v in probe.items() if k.startswith("bottleneck_t")]
    for k, (level, acc) in enumerate(sorted(levels), 1):
        values[f"ddpm-probe-t-{k}"] = str(level)
        values[f"ddpm-probe-acc-{k}"] = percent(acc)
    if finite(probe.get("raw_pixels")):
        values["ddpm-probe-raw"] = percent(probe["raw_pixels"])
    if levels and finite(probe.get("raw_pixels")):
        best_level, best = max(levels, key=lambda lv: lv[1])
        values["ddpm-probe-best"] = percent(best)
        values["ddpm-probe-best-t"] = str(best_level)
        values["ddpm-probe-best-vs-raw"] = compare(best, probe["raw_pixels"], higher="above", lower="below",
                                                   tolerance=0.005, same="within half a point of")


def alpha_bar(config: dict) -> list[float]:
    """The DDPM's alpha_bar_t, t = 1..T, from a run's config: beta_t linear from beta_start to beta_end
    (T points, ends included) and alpha_bar_t = prod_{s <= t} (1 - beta_s). [] without a schedule."""
    T, start, end = config.get("timesteps"), config.get("beta_start"), config.get("beta_end")
    if not (finite(T) and finite(start) and finite(end)) or T < 2:
        return []
    out, running = [], 1.0
    for t in range(T):
        running *= 1 - (start + (end - start) * t / (T - 1))
        out.append(running)
    return out


def tstudy_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """2.3(a): ratios and directions between the T/2 and 3T/2 runs (and the main one)."""
    low, high = (runs.get(slot) and runs[slot].summary for slot in T_SLOTS)
    if not (low and high):
        return
    if finite(low.get("sample_seconds_per_image")) and finite(high.get("sample_seconds_per_image")):
        values["tstudy-sampling-ratio"] = number(high["sample_seconds_per_image"] / low["sample_seconds_per_image"],
                                                 ".2f")
    if finite(low.get("train_seconds_per_epoch")) and finite(high.get("train_seconds_per_epoch")):
        values["tstudy-train-ratio"] = number(high["train_seconds_per_epoch"] / low["train_seconds_per_epoch"], ".2f")
    if finite(low.get("timesteps")) and finite(high.get("timesteps")):
        values["tstudy-T-ratio"] = number(high["timesteps"] / low["timesteps"], ".2f")
    if finite(low.get("quality_classifier_fid")) and finite(high.get("quality_classifier_fid")):
        values["tstudy-fid-high-vs-low"] = compare(high["quality_classifier_fid"], low["quality_classifier_fid"],
                                                   higher="higher (worse) than", lower="lower (better) than")


def simsiam_numbers(values: dict[str, str], run: RunFolder) -> None:
    p = run.slot
    s = dict(run.summary or {})
    monitored = [m for m in run.metrics if finite(m.get("knn_accuracy"))]
    if monitored:  # an unfinished run still has its monitored epochs
        best = max(monitored, key=lambda m: m["knn_accuracy"])
        s.setdefault("final_knn_accuracy", monitored[-1]["knn_accuracy"])
        s.setdefault("final_knn_epoch", monitored[-1]["epoch"])
        s.setdefault("best_knn_accuracy", best["knn_accuracy"])
        s.setdefault("best_knn_epoch", best["epoch"])
        s.setdefault("final_collapse_std", monitored[-1].get("collapse_std"))
        s.setdefault("collapse_std_reference", monitored[-1].get("collapse_std_reference"))
    if run.metrics:
        s.setdefault("final_loss", run.metrics[-1].get("loss"))
    s.setdefault("batch_size", run.config.get("batch_size"))
    s.setdefault("dim", run.config.get("dim"))
    put = _putter(values, p, s)
    put("final-knn", "final_knn_accuracy", percent)
    put("final-knn-epoch", "final_knn_epoch", str)
    put("best-knn", "best_knn_accuracy", percent)
    put("best-knn-epoch", "best_knn_epoch", str)
    put("final-loss", "final_loss", lambda v: number(v, ".3f"))
    put("linear-probe", "linear_probe_accuracy", percent)
    put("batch", "batch_size", str)
    put("d", "dim", str)
    put("peak-lr", "peak_lr", lambda v: number(v, ".3g"))
    put("knn-k", "knn_k", str)
    if finite(s.get("final_collapse_std")) and finite(s.get("collapse_std_reference")):
        ratio = s["final_collapse_std"] / s["collapse_std_reference"]
        values[f"{p}-collapse-ratio"] = number(ratio, ".2f")
        values[f"{p}-collapse-word"] = "collapsed" if ratio < COLLAPSED_BELOW else "not collapsed"


def simsiam_comparisons(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Each ablation's final kNN accuracy against the baseline's: the phrase that completes
    "<ablation's accuracy> is ... the baseline's" (e.g. "5.2 points lower than"), and the gap in points."""
    base = runs.get("simsiam-baseline")
    base_acc = _final_knn(base)
    if base_acc is None:
        return
    for ablation in SIMSIAM_ABLATIONS[1:]:
        acc = _final_knn(runs.get(f"simsiam-{ablation}"))
        if acc is None:
            continue
        diff = 100 * (acc - base_acc)  # points
        gap = number(abs(diff), ".1f")
        values[f"simsiam-{ablation}-vs-baseline"] = compare(diff, 0.0, higher=f"{gap} points higher than",
                                                            lower=f"{gap} points lower than", tolerance=SAME_WITHIN,
                                                            same=f"within {SAME_WITHIN} points of")
        values[f"simsiam-{ablation}-knn-diff"] = gap


def _final_knn(run: RunFolder | None) -> float | None:
    if run is None:
        return None
    if run.summary and finite(run.summary.get("final_knn_accuracy")):
        return run.summary["final_knn_accuracy"]
    monitored = [m["knn_accuracy"] for m in run.metrics if finite(m.get("knn_accuracy"))]
    return monitored[-1] if monitored else None


def problem_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Per problem: the datasets, hardware and a provenance sentence (with a synthetic warning)."""
    for problem in (1, 2, 3):
        found = [r for slot, r in runs.items() if r is not None and problem_of(slot) == problem]
        datasets = sorted({r.dataset for r in found if r.dataset})
        hardware = sorted({r.hardware for r in found if r.hardware})
        if datasets:
            values[f"p{problem}-dataset"] = escape(" and ".join(datasets))
        if hardware:
            values[f"p{problem}-hardware"] = escape("; ".join(hardware))
        if any(r.synthetic for r in found):
            values[f"p{problem}-warning"] = (
                r"\par\noindent\fbox{\parbox{0.96\linewidth}{\textbf{Not " + REAL_DATASET[problem]
                + r" results.} Some figures and numbers of this problem come from the synthetic "
                r"stand-in dataset (house-number-like digits drawn offline), not from "
                + REAL_DATASET[problem] + r"; see the provenance table on the first page.}}\par")
        else:
            values[f"p{problem}-warning"] = ""


def compute_numbers(runs: dict[str, RunFolder | None], preset: str) -> dict[str, str]:
    """Every value the text reads with \\val{key}, as LaTeX."""
    values: dict[str, str] = {"preset": escape(preset), "collapse-threshold": str(COLLAPSED_BELOW),
                              "same-within": str(SAME_WITHIN)}
    main_T = runs["ddpm"].config.get("timesteps") if runs.get("ddpm") else None
    for slot in SLOTS:
        run = runs.get(slot)
        status, command = fix_command(slot, run, preset, main_T)
        values[f"status-{slot}"] = escape(status)
        values[f"cmd-{slot}"] = escape(command)
        if run is None:
            continue
        _common(values, run)
        if slot == "vae":
            vae_numbers(values, run)
        elif slot.startswith("ddpm"):
            ddpm_numbers(values, run)
        else:
            simsiam_numbers(values, run)
    tstudy_numbers(values, runs)
    simsiam_comparisons(values, runs)
    problem_numbers(values, runs)
    return values


# --------------------------------------------------------------------------- figures

def figure_file(name: str) -> str:
    """A copied figure's file name: no underscores (safe in any LaTeX path)."""
    return name.replace("_", "-")


def copy_figures(runs: dict[str, RunFolder | None], build: Path) -> dict[str, str]:
    """Copy each run's figures/*.png to build/figures/<slot>/; {slot/name: path relative to report/}."""
    figures = {}
    for slot, run in runs.items():
        if run is None:
            continue
        for png in sorted((run.path / "figures").glob("*.png")):
            target = build / "figures" / slot / figure_file(png.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, target)
            figures[f"{slot}/{png.stem}"] = target.relative_to(build.parent).as_posix()
    return figures


def cross_figures(runs: dict[str, RunFolder | None], build: Path, values: dict[str, str]) -> dict[str, str]:
    """The figures drawn across runs with experiments.figures: the T study (2.3a) and the SimSiam
    comparisons (Q4, Q5). Sets status-/cmd- values of the pseudo-slots tstudy and simsiam."""
    out = build / "figures" / "cross"
    figures: dict[str, str] = {}
    t_runs = [runs[s] for s in ("ddpm-Tlow", "ddpm", "ddpm-Thigh") if runs.get(s) is not None]
    t_done = [r for r in t_runs if r.finished]
    missing = [s for s in ("ddpm-Tlow", "ddpm", "ddpm-Thigh") if runs.get(s) is None or not runs[s].finished]
    values["status-tstudy"] = escape(f"needs finished DDPM runs with several T; missing or unfinished: "
                                     f"{', '.join(missing)}" if missing else "could not be drawn")
    values["cmd-tstudy"] = "; ".join(values[f"cmd-{s}"] for s in missing) or values["cmd-ddpm"]
    s_runs = [runs[f"simsiam-{a}"] for a in SIMSIAM_ABLATIONS if runs.get(f"simsiam-{a}") is not None]
    s_missing = [f"simsiam-{a}" for a in SIMSIAM_ABLATIONS if runs.get(f"simsiam-{a}") is None]
    values["status-simsiam"] = escape("no SimSiam run folder with a monitored epoch found" if not s_runs
                                      else "could not be drawn")
    values["cmd-simsiam"] = "; ".join(values[f"cmd-{s}"] for s in s_missing) or values["cmd-simsiam-baseline"]
    jobs = []
    if len(t_done) >= 2:
        jobs.append(("ddpm_timesteps", lambda f: [f.ddpm_timesteps([r.path for r in t_done], out)]))
    usable = [r for r in s_runs if any("knn_accuracy" in m for m in r.metrics)]
    if usable:
        jobs.append(("simsiam", lambda f: f.simsiam_comparisons([r.path for r in usable], out)))
    if not jobs:
        return figures
    try:
        os.environ.setdefault("MPLBACKEND", "Agg")
        from experiments import figures as drawing
    except ImportError as e:
        print(f"note: cross-run figures not drawn, experiments.figures unavailable ({e})", file=sys.stderr)
        return figures
    for name, draw in jobs:
        try:
            paths = draw(drawing)
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
            print(f"note: {name} figure(s) not drawn ({e})", file=sys.stderr)
            continue
        for path in paths:
            target = path.with_name(figure_file(path.name))
            path.replace(target)
            figures[f"{'tstudy' if name == 'ddpm_timesteps' else 'simsiam'}/{path.stem}"] = \
                target.relative_to(build.parent).as_posix()
    return figures


# --------------------------------------------------------------------------- tables

def _listing(title: str, items: list[tuple[str, str]]) -> str:
    """A small two-column list under a title: (label, LaTeX text) per item."""
    rows = "\n".join(r"\texttt{" + escape(label) + "} & " + text + r" \\" for label, text in items)
    return ("\n\\par\\smallskip{\\footnotesize\\noindent " + title + "\\\\[2pt]\n\\begin{tabular}{@{}ll@{}}\n"
            + rows + "\n\\end{tabular}\\par}\n")


def provenance_table(runs: dict[str, RunFolder | None], values: dict[str, str]) -> str:
    """The first-page table: per problem, one row per slot (dataset, hardware, epochs, wall-clock);
    then a warning naming the runs that used the synthetic stand-in, the folders read, and the
    commands that produce the missing runs."""
    lines = [r"\noindent\begin{tabularx}{\linewidth}{@{}llXrr@{}}", r"\toprule",
             r"run & dataset & hardware & epochs & wall-clock \\"]
    for problem, title in PROBLEM_TITLES.items():
        lines += [r"\midrule", r"\multicolumn{5}{@{}l}{\textbf{" + title + r"}} \\"]
        for slot in (slot for slot in SLOTS if problem_of(slot) == problem):
            run = runs.get(slot)
            name = r"\texttt{" + escape(slot) + "}"
            if run is None:
                lines.append(f"{name} & " + r"\multicolumn{4}{l}{\textbf{missing} (command below)} \\")
                continue
            cells = [values.get(f"{slot}-{k}", r"\val{" + f"{slot}-{k}" + "}")
                     for k in ("dataset", "hardware", "epochs", "wall")]
            if run.synthetic:
                cells[0] = r"\textbf{" + cells[0] + "}"
            status = "" if run.finished else r" \textit{(unfinished)}"
            lines.append(f"{name}{status} & " + " & ".join(cells) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabularx}")
    body = "\n".join(lines) + "\n"
    found = [slot for slot in SLOTS if runs.get(slot) is not None]
    synthetic = [slot for slot in found if runs[slot].synthetic]
    if synthetic:
        body += ("\n\\medskip\\noindent\\fbox{\\parbox{\\dimexpr\\linewidth-2\\fboxsep-2\\fboxrule\\relax}{"
                 "\\textbf{Synthetic stand-in data.} The runs "
                 + ", ".join(r"\texttt{" + escape(s) + "}" for s in synthetic)
                 + " used the synthetic stand-in dataset (house-number-like digits generated offline, "
                   "10 classes), not SVHN or CIFAR-10. Their figures and numbers are \\textbf{not} SVHN or "
                   "CIFAR-10 results; they only show that the pipeline runs end to end.}}\n")
    if found:
        body += _listing("Run folders read:", [
            (slot, r"\texttt{" + escape(runs[slot].path) + "}"
             + "".join(r" \textit{(" + escape(p) + ")}" for p in runs[slot].problems)) for slot in found])
    missing = [slot for slot in SLOTS if runs.get(slot) is None]
    if missing:
        body += _listing("Missing runs, and the commands that produce them:",
                         [(slot, r"\texttt{" + values[f"cmd-{slot}"] + "}") for slot in missing])
    return body


def latent_table(rows: list[tuple[int, int, list[tuple[int, float]]]]) -> str:
    lines = [r"\begin{center}\small", r"\begin{tabular}{@{}rrl@{}}", r"\toprule",
             r"class & images & most class-specific latent dimensions (score) \\", r"\midrule"]
    for c, count, peaks in rows:
        lines.append(f"{c} & {count} & " + ", ".join(f"$z_{{{d}}}$ ({number(v, '+.2f')})" for d, v in peaks)
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{center}"]
    return "\n".join(lines)


def run_table(runs: dict[str, RunFolder | None], rows: list[tuple[str, str]], columns: list[tuple[str, str]],
              first: str) -> str:
    """A booktabs table, one row per (slot, label) in `rows` and one column per (key, heading):
    the cell of a present run reads \val{slot-key}; a missing run gets one cell saying so."""
    lines = [r"\begin{center}\small", r"\begin{tabular}{@{}l" + "r" * len(columns) + "@{}}", r"\toprule",
             f"{first} & " + " & ".join(h for _, h in columns) + r" \\", r"\midrule"]
    for slot, label in rows:
        head = r"\texttt{" + escape(label) + "}"
        if runs.get(slot) is None:
            lines.append(head + r" & \multicolumn{" + str(len(columns)) + r"}{l}{\textbf{missing run} "
                         r"(its command is on the first page)} \\")
        else:
            lines.append(head + " & " + " & ".join(r"\val{" + f"{slot}-{k}" + "}" for k, _ in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{center}"]
    return "\n".join(lines)


def tstudy_table(runs: dict[str, RunFolder | None]) -> str:
    """2.3(a): T, epochs, timings, classifier-FID, confidence and t* of the three DDPM runs."""
    columns = [("timesteps", "$T$"), ("epochs", "epochs"), ("train-seconds-per-epoch", "train time / epoch"),
               ("sample-seconds-per-image", "sampling s / image"), ("fid", "classifier-FID"),
               ("confidence", "mean confidence"), ("tstar", "$t^*$")]
    return run_table(runs, [(slot, slot) for slot in ("ddpm-Tlow", "ddpm", "ddpm-Thigh")], columns, "run")


def simsiam_table(runs: dict[str, RunFolder | None]) -> str:
    """Problem 3: batch, d, epochs, final and best kNN accuracy, collapse, linear probe, wall-clock per ablation."""
    columns = [("batch", "batch"), ("d", "$d$"), ("epochs", "epochs"), ("final-knn", "final kNN"),
               ("best-knn", "best kNN"), ("best-knn-epoch", "at epoch"), ("collapse-ratio", r"std$\cdot\sqrt{d}$"),
               ("linear-probe", "linear probe"), ("wall", "wall-clock")]
    return run_table(runs, [(f"simsiam-{a}", a) for a in SIMSIAM_ABLATIONS], columns, "ablation")


# --------------------------------------------------------------------------- the build

def _setter(command: str, key: str, value: str) -> str:
    if "\n" in value:
        raise ValueError(f"value of {key!r} spans lines; values must be one line of LaTeX")
    return f"\\{command}{{{key}}}{{{value}}}"


def generate(results: Path | None, overrides: dict[str, Path], build: Path = BUILD,
             preset: str | None = None) -> dict[str, Any]:
    """Write build/{numbers,figures,provenance,tables}.tex and build/figures/ from the run folders.
    Returns {"runs": {slot: RunFolder | None}, "values": {...}, "figures": {...}}."""
    paths = select_runs(results, overrides)
    runs = {slot: (load_run(slot, path) if path is not None else None) for slot, path in paths.items()}
    if preset is None:
        presets = {r.config.get("preset") for r in runs.values() if r is not None} - {None}
        preset = presets.pop() if len(presets) == 1 else "full"
    if (build / "figures").exists():
        shutil.rmtree(build / "figures")  # no figure of an earlier build survives
    build.mkdir(parents=True, exist_ok=True)
    values = compute_numbers(runs, preset)
    figures = copy_figures(runs, build)
    figures.update(cross_figures(runs, build, values))

    latent_rows = vae_artifact_numbers(values, runs.get("vae"))
    tables = {"tstudy": tstudy_table(runs), "simsiam": simsiam_table(runs)}
    if latent_rows:
        tables["latent"] = latent_table(latent_rows)
    header = "% Generated by report/build.py from the run folders; do not edit.\n"
    lines = lambda command, items: "".join(_setter(command, k, v) + "\n" for k, v in sorted(items))  # noqa: E731
    (build / "numbers.tex").write_text(header + lines("setval", values.items()))
    (build / "figures.tex").write_text(header + lines("setfig", figures.items()))
    (build / "provenance.tex").write_text(header + provenance_table(runs, values))
    (build / "tables.tex").write_text(header + "".join(f"\\settable{{{name}}}{{%\n{text}}}\n"
                                                       for name, text in tables.items()))
    return {"runs": runs, "values": values, "figures": figures}


def compile_pdf(report: Path = REPORT) -> Path:
    """latexmk -pdf report.tex (aux files in build/latex/), then copy the PDF to report/report.pdf."""
    latexmk = shutil.which("latexmk")
    if latexmk is None or shutil.which("pdflatex") is None:
        raise FileNotFoundError("latexmk/pdflatex not found: run `bash scripts/build_report.sh`, which installs "
                                "them (apt-get: texlive-latex-base texlive-latex-recommended texlive-latex-extra "
                                "latexmk)")
    outdir = report / "build" / "latex"
    outdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
                           f"-outdir={outdir.relative_to(report)}", "report.tex"],
                          cwd=report, capture_output=True, text=True)
    if done.returncode != 0:
        log = outdir / "report.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else done.stdout[-4000:]
        raise RuntimeError(f"latexmk failed (exit {done.returncode}); end of {log}:\n{tail}")
    pdf = report / "report.pdf"
    shutil.copyfile(outdir / "report.pdf", pdf)
    return pdf


def parse_overrides(items: list[str]) -> dict[str, Path]:
    overrides = {}
    for item in items:
        slot, sep, folder = item.partition("=")
        if not sep or not slot or not folder:
            raise ValueError(f"--run expects SLOT=FOLDER (e.g. ddpm=results/ddpm-full), got {item!r}")
        if not Path(folder).is_dir():
            raise ValueError(f"--run {slot}={folder}: {folder} is not a folder")
        overrides[slot] = Path(folder)
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python report/build.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(ROOT / "results"), help="folder holding the run folders")
    parser.add_argument("--run", action="append", default=[], metavar="SLOT=FOLDER",
                        help=f"use FOLDER for SLOT (one of: {', '.join(SLOTS)}); repeatable")
    parser.add_argument("--preset", default=None, help="preset named in the commands of placeholders "
                        "(default: the preset of the runs found, else full)")
    parser.add_argument("--no-pdf", action="store_true", help="write report/build/ only, do not run LaTeX")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # experiments.figures, for the cross-run figures
    try:
        built = generate(Path(args.results), parse_overrides(args.run), BUILD, args.preset)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for slot, run in built["runs"].items():
        print(f"{slot:22s} {run.path if run else 'missing: ' + built['values'][f'cmd-{slot}']}")
    if args.no_pdf:
        return 0
    try:
        pdf = compile_pdf(REPORT)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"report: {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
