"""Finding and reading the run folders the report uses (standard library only).

A slot is one experiment the report uses; under --results a slot takes the most recently modified
folder whose name is its run name (experiments.presentation.names), any preset:
    vae                  vae-<preset>
    ddpm                 ddpm-<preset>
    ddpm-Tlow/ddpm-Thigh ddpm-<p>-T<T> of the main DDPM run's preset p, T below/above its T
                         (preferring T/2 and 3T/2, the runs `python -m experiments all` makes)
    simsiam-<ablation>   simsiam-<preset>-<ablation>[-<backbone>]
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.presentation import names, summaries
from experiments.presentation.summaries import DDPMSummary, SimSiamSummary, VAESummary

SIMSIAM_SLOTS = tuple(f"simsiam-{a}" for a in names.ABLATION_NAMES)
SIMPLE_SLOTS = ("vae", "ddpm", *SIMSIAM_SLOTS)
T_SLOTS = ("ddpm-Tlow", "ddpm-Thigh")
SLOTS = ("vae", "ddpm", *T_SLOTS, *SIMSIAM_SLOTS)
RUN_FILES = ("config.json", "provenance.json", "metrics.jsonl", summaries.FILE)


def problem_of(slot: str) -> str:
    """The problem of a slot: simsiam-no-predictor -> simsiam."""
    return slot.split("-")[0]


def ablation_of(slot: str) -> str:
    """The SimSiam ablation of a slot: simsiam-no-predictor -> no-predictor."""
    return slot.removeprefix("simsiam-")


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)



@dataclass
class RunFolder:
    """What the report reads from one run folder; missing or unreadable files give empty values."""

    slot: str
    path: Path
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    summary: VAESummary | DDPMSummary | SimSiamSummary | None = None   # None: unfinished (or unreadable)
    metrics: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # files that could not be read

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def dataset(self) -> str | None:
        source = self.provenance.get("source") or (self.summary and self.summary.dataset)
        return names.dataset_name(source) if source else None

    @property
    def synthetic(self) -> bool:
        return (self.provenance.get("source") or (self.summary and self.summary.dataset)) == "synthetic"

    @property
    def hardware(self) -> str | None:
        """The device, then the precision it trained in and the micro-batch when the batch was split
        (experiments.harness.precision, experiments.harness.memory): "Tesla T4 (cuda), fp16, micro-batch 512"."""
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
        world = self.provenance.get("world_size") or 1
        if world > 1:  # torchrun (experiments.harness.distributed)
            bn = ", synced batch norm" if self.provenance.get("sync_batch_norm") else ""
            extras.append(f"{world} processes ({self.provenance.get('backend')}){bn}")
        return ", ".join([where] + [x for x in extras if x])

    @property
    def epochs(self) -> int | None:
        if self.summary:
            return self.summary.epochs
        return self.metrics[-1].get("epoch") if self.metrics else None

    @property
    def wall_seconds(self) -> float | None:
        if self.summary and finite(self.summary.wall_seconds):
            return self.summary.wall_seconds
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



def _read_summary(slot: str, path: Path, problems: list[str]) -> VAESummary | DDPMSummary | SimSiamSummary | None:
    """The run's summary as its problem's schema; None (and a problem noted) when absent or not readable as one."""
    if not (path / summaries.FILE).exists():
        return None
    try:
        return summaries.SCHEMAS[problem_of(slot)].read(path)
    except (OSError, ValueError) as e:  # SummaryError is a ValueError, as is invalid JSON
        problems.append(f"{summaries.FILE} unreadable ({e})")
        return None



def load_run(slot: str, path: str | Path) -> RunFolder:
    """Read one run folder; raises FileNotFoundError when `path` is not a folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} (for {slot}) does not exist")
    run = RunFolder(slot, path)
    run.config = _read_json(path / "config.json", run.problems) or {}
    run.provenance = _read_json(path / "provenance.json", run.problems) or {}
    run.summary = _read_summary(slot, path, run.problems)
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



@dataclass(frozen=True)
class Candidate:
    """A folder under --results whose name is a run name: the slot it can fill."""

    path: Path
    slot: str            # ddpm T variants: "ddpm-T"
    preset: str
    timesteps: int | None = None



def classify(name: str) -> tuple[str, str, int | None] | None:
    """(slot, preset, T) for a run folder name (experiments.presentation.names.parse_run_name), None for other names.
    vae-full -> ("vae", "full", None); ddpm-full-T500 -> ("ddpm-T", "full", 500);
    simsiam-full-no-predictor[-resnet18-cifar] -> ("simsiam-no-predictor", "full", None)."""
    run = names.parse_run_name(name)
    if run is None:
        return None
    if run.problem == "ddpm" and run.timesteps is not None:
        return "ddpm-T", run.preset, run.timesteps
    if run.problem == "simsiam":
        return f"simsiam-{run.ablation}", run.preset, None
    return run.problem, run.preset, None


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
    variants = [c for c in candidates if c.slot == "ddpm-T"]
    for slot, pick in _t_study(chosen["ddpm"], variants).items():
        chosen[slot] = overrides.get(slot) or (pick.path if pick else None)
    return {slot: chosen[slot] for slot in SLOTS}


def _t_study(main: Path | None, variants: list[Candidate]) -> dict[str, Candidate | None]:
    """The T study: T variants of the main run's preset, below and above its T (T/2 and 3T/2 preferred)."""
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
        reference = names.DEFAULT_TIMESTEPS.get(preset) or (statistics.median(c.timesteps for c in variants)
                                                            if variants else 0)
    picks = {}
    for slot, side, preferred in (("ddpm-Tlow", -1, reference // 2), ("ddpm-Thigh", 1, 3 * reference // 2)):
        pool = [c for c in variants if (c.timesteps - reference) * side > 0]
        exact = [c for c in pool if c.timesteps == preferred]
        picks[slot] = _latest(exact or pool)
    return picks


def slot_command(slot: str, preset: str, timesteps: int | None = None, *, results: Path | None = None,
                 **options) -> str:
    """The command that produces a slot's run folder (timesteps: the main DDPM run's T, if known), with --out
    its folder under `results` (where the report looks for it) and `options` (data, data_root) when given."""
    problem = problem_of(slot)
    T = timesteps or names.DEFAULT_TIMESTEPS.get(preset, 1000)
    if slot in T_SLOTS:
        variant = {"timesteps": T // 2 if slot == "ddpm-Tlow" else 3 * T // 2}
        name = names.ddpm_run_name(preset, variant["timesteps"])
    elif problem == "simsiam":
        variant = {"ablation": ablation_of(slot)}
        name = names.simsiam_run_name(preset, variant["ablation"])
    else:
        variant = {}
        name = names.vae_run_name(preset) if problem == "vae" else names.ddpm_run_name(preset, T)
    out = str(results / name) if results is not None else None
    return names.command(problem, preset, **variant, out=out, **options)


def placeholder_options(runs: dict[str, RunFolder | None], results: Path | None) -> dict[str, Any]:
    """What the command of a missing run repeats from the runs found: --out under `results`, and their --data and
    --data-root when they all agree (synthetic runs give a command that stays offline too); else --data auto."""
    found = [run.config for run in runs.values() if run is not None]
    options: dict[str, Any] = {"results": results}
    for key, default in (("data", "auto"), ("data_root", None)):
        given = {config.get(key) for config in found} - {None, "data" if key == "data_root" else None}
        options[key] = given.pop() if len(given) == 1 else default
    return options


# The config fields a resume must repeat (--data and the others default to values the run may not have used).
RESUME_OPTIONS = ("data", "data_root", "seed", "epochs")


def resume_command(slot: str, run: RunFolder, preset: str) -> str:
    """The command that continues an unfinished run in its folder, with the options of its config."""
    problem = problem_of(slot)
    return names.command(problem, run.config.get("preset") or preset,
                         timesteps=run.config.get("timesteps") or None if slot in T_SLOTS else None,
                         ablation=ablation_of(slot) if problem == "simsiam" else None,
                         backbone=run.config.get("backbone") if problem == "simsiam" else None,
                         out=str(run.path), resume=True, **{k: run.config.get(k) for k in RESUME_OPTIONS})
