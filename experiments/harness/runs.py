"""Run folders: the single interface between training and everything downstream.

A run folder holds
    config.json       the resolved config (a dataclass, saved whole)
    provenance.json   which dataset was actually used, on what device, with which versions
    metrics.jsonl     one JSON object per finished epoch, appended and fsync'ed
    checkpoint.pt     model, optimizer, RNG states, epoch, config, metrics so far: checksummed, written
                      atomically (temp + rename); checkpoint.prev.pt is the one before it
    artifacts/        tensors the figures are drawn from (samples, reconstructions, ...)
    figures/          PNGs, redrawn from the folder alone
    summary.json      final numbers (e.g. the test log-likelihood)

`loop.fit` drives the epoch loop. A checkpoint is written only after an epoch, its metrics line and
its artifacts are all on disk, so an interruption anywhere (Ctrl-C, a Colab disconnect,
kill -9) loses at most the epoch in progress, and `--resume` redoes exactly that epoch from
the same RNG state: on CPU with the same seed a resumed run ends with the same numbers as an
uninterrupted one.

Nothing is silently wrong: a run holds its folder's lock (experiments.harness.lock) from start to figures;
a damaged checkpoint (checksum) falls back to checkpoint.prev.pt; outputs of an earlier run in a
folder started afresh are moved aside into previous-<timestamp>/; a resume checks the config, the
epochs and the metrics and artifacts against the checkpoint; weights that are not finite are never
checkpointed; a full disk keeps the old files; a run whose epochs are all trained refuses another learning
rate (its config keeps the one it was trained at); --epochs is bounded (MAX_EPOCHS) and nothing is allocated in
proportion to it. Files get the user's umask, as open() gives them. Each refusal is one message that states the
fix, and a refused run removes the --out folders it created.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from experiments.harness import data, distributed
from experiments.harness.config import RESUMABLE_CHANGES, same_config
from experiments.harness.devices import pick_device
from experiments.harness.execution import Execution, choose_precision, compile_mode
from experiments.harness.files import (
    CheckpointError,
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    created_folders,
    disk_full,
    is_disk_full,
    read_checkpoint,
    read_json,
    read_metrics,
    remove_if_empty,
    remove_temp_files,
    writable_folder,
    write_checkpoint,
)
from experiments.harness.lock import RunLock
from experiments.harness.rng import seed_everything
from experiments.presentation import summaries

CHECKPOINT = "checkpoint.pt"


PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the checkpoint before the latest, a fallback when that is damaged


# What a run writes; moved aside into previous-<timestamp>/ when a run starts afresh in a used folder.
OUTPUTS = ("summary.json", "metrics.jsonl", "artifacts", "figures", "config.json", "provenance.json",
           PREVIOUS_CHECKPOINT)


def locked(run_function: Callable[..., Path]) -> Callable[..., Path]:
    """Decorate a driver's run(cfg, out, ...): checks that `out` is writable, then holds its RunLock for the
    whole run (training, final evaluation, figures); a second process on the folder is refused. A run that
    stops before writing anything (a refusal: missing data, another config, ...) removes the folders it made.
    Under torchrun (experiments.harness.distributed) the process group is joined first and rank 0 alone takes
    the lock (the lock names its process); a refusal there is raised on every rank."""
    @functools.wraps(run_function)
    def run(cfg: Any, out: str | Path, *args, **kwargs) -> Path:
        distributed.setup(getattr(cfg, "device", None))
        writer = distributed.is_writer()
        made = created_folders(Path(out)) if writer else []
        lock: list[RunLock] = []

        def take() -> None:
            lock.append(RunLock(writable_folder(out, "--out")))
            lock[0].acquire()
        try:
            distributed.on_writer(take)
            try:
                return run_function(cfg, out, *args, **kwargs)
            finally:
                if lock:
                    lock[0].release()
        except BaseException:
            remove_if_empty(made)
            raise
    return run


class Run:
    """A run folder (see the module docstring), opened by a process that holds its lock (`locked`).

    resume=False refuses a folder that holds a checkpoint, and moves the outputs of an earlier run
    without one aside; resume=True loads the checkpoint (falling back to the previous one when the latest
    is damaged) and checks the config, the epochs, the metrics and the artifacts against it.

    writer=False (the ranks other than 0 of a distributed run) opens the folder rank 0 has prepared to read
    it only: the checkpoint and metrics are read, and every method that would write does not."""

    def __init__(self, directory: str | Path, config: Any, *, resume: bool = False, writer: bool = True):
        self.dir = Path(directory)
        self.writer = writer
        self.config = config
        self.artifacts = self.dir / "artifacts"
        self.figures = self.dir / "figures"
        self.checkpoint_path = self.dir / CHECKPOINT
        self.previous_path = self.dir / PREVIOUS_CHECKPOINT
        self.metrics_path = self.dir / "metrics.jsonl"
        self.changes: dict[str, list] = {}   # resumable fields changed by this resume: {name: [old, new]}
        if writer:
            remove_temp_files(self.dir)      # left by a kill during a write; we hold the lock
        if writer and not resume and (self.checkpoint_path.exists() or self.previous_path.exists()):
            raise FileExistsError(
                f"{self.dir} already holds a run (found {self.checkpoint_path}). "
                "Pass --resume (resume=True) to continue it, or choose another --out folder.")
        if resume and (self.dir / "config.json").exists():
            self._check_config(read_json(self.dir, "config.json"), "config.json")
        self.checkpoint = self._load() if resume else None
        self.epoch = self.checkpoint["epoch"] if self.checkpoint else 0
        self.history: list[dict] = self._resume_checks() if self.checkpoint else []
        if not writer:
            return
        if not self.checkpoint:
            self._move_aside(OUTPUTS, "held outputs of an earlier run without its checkpoint")
        elif self.epoch < config.epochs:
            self._move_aside(["summary.json"], f"is extended from {self.epoch} to {config.epochs} epochs")
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.figures.mkdir(parents=True, exist_ok=True)
        atomic_write_json(dataclasses.asdict(config), self.dir / "config.json")

    def _check_config(self, old: dict, source: str) -> None:
        diff = same_config(old, dataclasses.asdict(self.config))
        if diff:
            listing = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"cannot resume {self.dir} with a different config ({listing}, from {source}); "
                             "resume with the same options, or start a new run with another --out")

    def _load(self) -> dict | None:
        """The latest intact checkpoint: checkpoint.pt, else checkpoint.prev.pt (with a message), else None."""
        try:
            return read_checkpoint(self.checkpoint_path) if self.checkpoint_path.exists() else None
        except CheckpointError as damaged:
            if not self.previous_path.exists():
                raise CheckpointError(f"{damaged}, and there is no {PREVIOUS_CHECKPOINT} to fall back on: delete "
                                      f"{self.checkpoint_path} to restart this run from scratch") from None
            try:
                previous = read_checkpoint(self.previous_path)
            except CheckpointError as also:
                raise CheckpointError(f"{damaged}; {also}: delete both to restart this run from scratch") from None
            tqdm.write(f"warning: {damaged}; falling back to {self.previous_path} (epoch {previous['epoch']})",
                       file=sys.stderr)
            return previous

    def _resume_checks(self) -> list[dict]:
        """Check the config, epochs, metrics and artifacts against the checkpoint; the metrics up to its epoch."""
        saved = self.checkpoint.get("config", {})
        self._check_config(saved, CHECKPOINT)
        if self.config.epochs < self.epoch:
            raise ValueError(f"--epochs {self.config.epochs} is below the {self.epoch} epochs {self.dir} has done; "
                             f"resume with --epochs {self.epoch} or more, or start a new run with another --out")
        saved, new = json.loads(json.dumps(saved)), json.loads(json.dumps(dataclasses.asdict(self.config)))
        self.changes = {k: [saved[k], new[k]] for k in sorted(RESUMABLE_CHANGES & set(saved) & set(new))
                        if saved[k] != new[k]}
        rate = [k for k in ("lr", "base_lr") if k in self.changes]
        if rate and self.epoch >= self.config.epochs:  # the config must keep the rate the model was trained at
            old, new_rate = self.changes[rate[0]]
            raise ValueError(f"{self.dir} has trained all its {self.epoch} epochs (with {rate[0]} {old}), so --lr "
                             f"{new_rate} would train nothing and its config keeps the rate the model was trained "
                             f"with: resume without --lr, add --epochs N (N > {self.epoch}) to train more epochs at "
                             f"{new_rate}, or start a new run with another --out")
        missing = [n for n in self.checkpoint.get("artifacts", []) if not (self.artifacts / n).exists()]
        if missing:
            raise ValueError(f"artifacts of {self.dir} written up to epoch {self.epoch} are missing "
                             f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); they cannot be "
                             "remade without retraining: restore them, or start a new run with another --out")
        history = self.checkpoint.get("metrics")
        if history is None:  # a format-1 checkpoint: the metrics file is all there is
            return [m for m in read_metrics(self.dir) if m["epoch"] <= self.epoch]
        on_disk = read_metrics(self.dir)
        if on_disk[:len(history)] != history:
            tqdm.write(f"warning: {self.metrics_path} does not match the checkpoint (deleted or changed: "
                       f"{len(on_disk)} lines for {len(history)} epochs); rewritten from the checkpoint's copy",
                       file=sys.stderr)
        return list(history)

    def _move_aside(self, names: Iterable[str], why: str) -> None:
        """Move earlier outputs into previous-<timestamp>/, with a message; nothing when there are none."""
        present = [self.dir / n for n in names if (self.dir / n).exists()]
        if not any(p.is_file() and p.name not in ("config.json", "provenance.json") or p.is_dir() and any(p.iterdir())
                   for p in present):
            return
        aside = self.dir / time.strftime("previous-%Y%m%d-%H%M%S")
        aside.mkdir()
        for p in present:
            os.replace(p, aside / p.name)
        tqdm.write(f"{self.dir} {why}: moved its earlier {', '.join(p.name for p in present)} into {aside}",
                   file=sys.stderr)

    # metrics -----------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append one JSON line and fsync it; a file changed behind the run's back is rewritten from memory."""
        self.history.append(json.loads(json.dumps(record)))
        if not self.writer:
            return
        try:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if is_disk_full(e):
                raise disk_full(e, self.metrics_path) from None
            raise
        if read_metrics(self.dir) != self.history:
            tqdm.write(f"warning: {self.metrics_path} was changed or deleted during the run; rewritten",
                       file=sys.stderr)
            self.restore_metrics()

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)

    def restore_metrics(self) -> None:
        """Make metrics.jsonl hold exactly the epochs of the checkpoint (and those logged since)."""
        if not self.writer:
            return
        lines = "".join(json.dumps(m) + "\n" for m in self.history)
        if not self.metrics_path.exists() or self.metrics_path.read_text() != lines:
            atomic_write_bytes(self.metrics_path, lambda f: f.write(lines.encode()))

    # checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        """Write `state` (checksummed), the previous checkpoint kept as checkpoint.prev.pt."""
        if self.writer:
            atomic_write_bytes(self.checkpoint_path, lambda f: write_checkpoint(f, state), keep=self.previous_path)
        self.checkpoint, self.epoch = state, state["epoch"]

    def load_checkpoint(self, map_location: torch.device | str = "cpu") -> dict | None:
        """The checkpoint this run resumed from (or last saved), verified when it was read."""
        return self.checkpoint

    def artifact_names(self) -> list[str]:
        """Every file under artifacts/, relative to it (recorded in each checkpoint; a resume checks them)."""
        return sorted(str(p.relative_to(self.artifacts)) for p in self.artifacts.rglob("*")
                      if p.is_file() and not p.name.endswith(".tmp"))

    # artifacts and summary --------------------------------------------------------
    def save_artifact(self, name: str, obj: Any) -> None:
        if self.writer:
            atomic_save(obj, self.artifacts / name)

    def write_json(self, name: str, obj: Any) -> None:
        if self.writer:
            atomic_write_json(obj, self.dir / name)

    def finished(self) -> bool:
        """Whether the final evaluation of this config is done: summary.json (written last) exists and
        belongs to the checkpoint, whose epoch and config are this run's."""
        path = self.dir / summaries.FILE
        if not path.exists() or not self.checkpoint or self.epoch != self.config.epochs:
            return False
        if same_config(self.checkpoint.get("config", {}), dataclasses.asdict(self.config)):
            return False
        try:
            summary = summaries.read(self.dir)
        except ValueError as e:
            tqdm.write(f"warning: {e}; the final evaluation is redone", file=sys.stderr)
            return False
        return summary.epochs == self.config.epochs


def environment(execution: Execution) -> dict[str, Any]:
    """What ran the experiment, for provenance: the device, how steps ran there (experiments.harness.execution: the
    precision and how it was chosen, TF32, layout, compilation), versions."""
    device = execution.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, **execution.record, "torch": torch.__version__,
            "python": sys.version.split()[0], "host": platform.node(), "cpu_count": str(os.cpu_count())}


class Setup(NamedTuple):
    """What every experiment starts from: its run folder, how its steps execute, and its data."""
    run: Run
    execution: Execution
    train: data.ImageSet
    test: data.ImageSet


def start(cfg: Any, out: str | Path, real_dataset: str, *, resume: bool = False,
          trial: Callable[[Any], Callable[[], Any]] | None = None, compiles: bool = True,
          clock: Callable[[], float] | None = None) -> Setup:
    """Load the data (`real_dataset`, "svhn" or "cifar10", or the synthetic stand-in, as cfg.data says) before
    touching the folder, create (or reopen) the run folder, decide how its steps execute (experiments.harness.execution:
    device, precision, layout, compilation; trial and clock as in execution.choose_precision, compiles as
    in execution.compile_mode), write provenance.json (the data's provenance, the environment and the layout:
    world_size, backend, sync_batch_norm) and seed the global RNGs with cfg.seed.

    Under torchrun: rank 0 loads the data first (it may write the cache), then the others; rank 0 prepares the
    folder, then the others open it to read (Run(writer=False)); every rank takes rank 0's precision; steps run
    eager (a compiled step around DDP's gradient hooks is not used here)."""
    with distributed.writer_first():
        train, test, provenance = data.load_train_test(cfg, real_dataset)
    device = distributed.setup(cfg.device) or pick_device(cfg.device)
    run = distributed.on_writer(lambda: Run(out, cfg, resume=resume))
    if run is None:
        run = Run(out, cfg, resume=resume, writer=False)
    kept = ((run.checkpoint or {}).get("state", {}).get("precision") or {}).get("name")
    precision, record = distributed.broadcast(
        choose_precision(device, cfg.precision, kept=kept, trial=trial, clock=clock))
    compiles = compiles and not distributed.is_distributed()
    execution = Execution(device, precision, compile_mode(cfg.compile, device, compiles), record)
    if distributed.is_writer():
        tqdm.write(execution.describe())

    def write() -> None:
        changes = _recorded_changes(run)
        run.write_json("provenance.json", {**provenance, **environment(execution), **distributed.record(),
                                           "resume_changes": changes})
    distributed.on_writer(write)
    seed_everything(cfg.seed)
    return Setup(run, execution, train, test)


def _recorded_changes(run: Run) -> list[dict]:
    """provenance.json's list of config changes made by resumes, with this resume's appended (and printed)."""
    try:
        before = read_json(run.dir, "provenance.json") if run.checkpoint else {}
    except (FileNotFoundError, ValueError):
        before = {}
    changes = before.get("resume_changes", [])
    if run.checkpoint and before.get("world_size", 1) != distributed.world_size():  # the global batch is unchanged
        run.changes["world_size"] = [before.get("world_size", 1), distributed.world_size()]
    if run.changes:
        listing = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in run.changes.items())
        tqdm.write(f"resuming {run.dir} after epoch {run.epoch} with changes: {listing} (in provenance.json)")
        changes = [*changes, {"after_epoch": run.epoch, "changes": run.changes}]
    return changes
