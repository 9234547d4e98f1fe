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

`fit` drives the epoch loop. A checkpoint is written only after an epoch, its metrics line and
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
import errno
import functools
import hashlib
import io
import json
import math
import os
import platform
import random
import shlex
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from experiments.harness.execution import Execution, candidates, check_choices, choose_precision, compile_mode
from experiments.harness.lock import RunLock
from experiments.presentation import summaries

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the checkpoint before the latest, a fallback when that is damaged
CHECKPOINT_FORMAT = "experiments.runs/2"    # {"format", "sha256", "payload": torch.save bytes of the state}
# Config fields a resumed run may change: how long to train, where, and the learning rate (to get past a
# divergence), not what is trained. The precision, compilation and micro-batch follow the device a run resumes on.
# Changes are recorded in provenance.json ("resume_changes").
RESUMABLE_CHANGES = frozenset({"epochs", "device", "data_root", "precision", "compile", "micro_batch", "lr",
                               "base_lr"})
# What a run writes; moved aside into previous-<timestamp>/ when a run starts afresh in a used folder.
OUTPUTS = ("summary.json", "metrics.jsonl", "artifacts", "figures", "config.json", "provenance.json",
           PREVIOUS_CHECKPOINT)
MAX_SEED = 2 ** 32 - 1  # numpy's limit
# --epochs above this is refused: 100x the longest preset (SimSiam's 100; the SimSiam paper's CIFAR-10 runs
# use 800), and few enough that what a run keeps per epoch (a metrics line, snapshot artifacts) stays small.
MAX_EPOCHS = 10_000


class NonFiniteLossError(RuntimeError):
    """A training epoch produced a NaN/inf loss or weights; the last good checkpoint is kept."""


class CheckpointError(RuntimeError):
    """A checkpoint file is damaged: truncated, overwritten, or its checksum does not match."""


class DiskFullError(OSError):
    """The disk filled up during a write; the file keeps its previous content."""


# --------------------------------------------------------------------------- atomic files

def atomic_write_bytes(path: Path, write: Callable[[Any], None], *, keep: Path | None = None) -> None:
    """Call write(file) on a temp file beside `path`, fsync it, then rename it over `path` (first
    renaming the old `path` to `keep`, when given). A full disk raises DiskFullError naming `path`,
    which keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep is not None and path.exists():
            os.replace(path, keep)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full(e, path) from None
        raise


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException, path: Path) -> DiskFullError:
    return DiskFullError(f"the disk is full ({os.strerror(error.errno)}) while writing {path}; the file keeps its "
                         "previous content and the run its last checkpoint: free some space, then rerun with --resume")


def save_figure(fig: Any, path: str | Path, **savefig_kwargs) -> None:
    """fig.savefig to `path` atomically (temp + rename), its format from the suffix: a kill or a full
    disk never leaves a half-written PNG."""
    path = Path(path)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", **savefig_kwargs))


def atomic_save(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"))


def write_checkpoint(f: Any, state: dict) -> None:
    """torch.save `state` as bytes, then those bytes with their sha256 (read_checkpoint verifies it)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    torch.save({"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}, f)


def read_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict:
    """The state write_checkpoint saved in `path`; CheckpointError (one line, no traceback) when the
    file is truncated, not a checkpoint, or its checksum does not match."""
    try:
        outer = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a damaged zip or pickle raises anything
        reason = (str(e).splitlines() or [""])[0][:120]
        raise CheckpointError(f"{path} is damaged: not a readable checkpoint ({type(e).__name__}: {reason})") from None
    if isinstance(outer, dict) and "epoch" in outer and "state" in outer:
        return outer  # written before checksums (format 1): loaded unverified
    if not isinstance(outer, dict) or outer.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this package (no {CHECKPOINT_FORMAT!r} header)")
    if hashlib.sha256(outer["payload"]).hexdigest() != outer["sha256"]:
        raise CheckpointError(f"{path} is damaged: its checksum does not match its content")
    return torch.load(io.BytesIO(outer["payload"]), map_location=map_location, weights_only=False)


def non_finite(state: Any, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) state dict holding a NaN or inf."""
    if isinstance(state, torch.Tensor):
        return [prefix] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list | tuple) else []
    return [name for k, v in items for name in non_finite(v, f"{prefix}.{k}" if prefix else str(k))]


def writable_folder(folder: str | Path, what: str) -> Path:
    """`folder`, created if needed, after checking that a file can be written in it (ValueError otherwise,
    with the fix: a folder that exists but is read-only is to be made writable, which keeps what it holds)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is not a folder but a {file_kind(folder)}; give a folder "
                         "(an existing one, or one to create)")
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        fix = (f"make it writable (chmod -R u+w {shlex.quote(str(folder))}) or choose another"
               if existed and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "choose another")
        raise ValueError(f"{what} {folder} is not a writable folder ({e.strerror or e}); {fix}") from None
    return folder


def file_kind(path: Path) -> str:
    """What a path that is not a folder is ('file', 'character device', ...), for messages."""
    mode = path.stat().st_mode
    return ("character device" if stat.S_ISCHR(mode) else "block device" if stat.S_ISBLK(mode) else
            "named pipe" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "file")


def created_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first (what mkdir(parents=True) makes)."""
    missing = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


def remove_if_empty(folders: list[Path]) -> None:
    """Remove each folder of `folders` (deepest first) that is empty: what a refused run created and left unused."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:  # not empty (or gone): keep it and its parents
            return


def file_mode() -> int:
    """The permissions a new file gets from the user's umask (0o666 & ~umask), as open() gives them; mkstemp's
    temp files are 0o600, which would hide a run folder from a partner or TA it is shared with."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


# --------------------------------------------------------------------------- devices and RNG

def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else Apple MPS, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but CUDA is not available here; use --device cpu or auto")
    return device


def device_line(device: str = "auto") -> str:
    """What a notebook prints after its configuration: the device a run will use and how it picks its precision."""
    picked = pick_device(device)
    if picked.type != "cuda":
        return f"device: {picked} | precision: fp32 (experiments.harness.execution; override with precision=...)"
    return (f"device: {torch.cuda.get_device_name(picked)} | precision: the fastest of "
            f"{', '.join(candidates(picked))}, measured at the start of each run (experiments.harness.execution; "
            "override with precision=...)")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """time.perf_counter() once the device's queued work has finished: differences time the work itself."""
    synchronize(device)
    return time.perf_counter()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stream_seed(seed: int, name: str) -> int:
    """The seed of the run's random stream `name`: 63 bits of sha256("<seed>/<name>"), stable across
    processes and versions (Python's hash() is salted per process). Distinct names give unrelated
    streams, so adding a stream never shifts another (the trouble with seed + k offsets)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` for one purpose of a run (e.g. "shuffle", "final-samples"),
    seeded with stream_seed(seed, name): the same name gives the same draws, another name others."""
    return torch.Generator(device).manual_seed(stream_seed(seed, name))


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG a run draws from: python, numpy, torch CPU and CUDA, and the run's own generators."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- configs

@dataclasses.dataclass
class RunConfig:
    """The fields every experiment's config starts with (VAEConfig, DDPMConfig, SimSiamConfig add theirs)."""
    preset: str = "full"
    data: str = "auto"             # auto | the real dataset (svhn, cifar10) | synthetic (see experiments.harness.data)
    data_root: str = "data"
    seed: int = 0
    device: str = "auto"


def checked_overrides(presets: dict[str, Any], preset: str, overrides: dict[str, Any], problem: str) -> dict:
    """The options a user set (None: not set), after checking that `preset` exists and that each
    option is a field of the problem's config dataclass."""
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(presets[preset])}
    if unknown:
        raise ValueError(f"option(s) {sorted(unknown)} do not apply to the {problem} experiment")
    return overrides


MAX_TIMESTEPS = 10_000


def lr_field(cfg: Any) -> str:
    """The config field --lr sets: base_lr (SimSiam, scaled by the batch size) or lr."""
    return "base_lr" if hasattr(cfg, "base_lr") else "lr"


def check_config(cfg: Any) -> None:
    """Refuse values no run can use, before any work: the seed first, then epochs, device and learning rate."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer in [0, {MAX_SEED}], got {cfg.seed!r}")
    if isinstance(cfg.epochs, bool) or not isinstance(cfg.epochs, int) or not 1 <= cfg.epochs <= MAX_EPOCHS:
        raise ValueError(f"--epochs must be an integer in [1, {MAX_EPOCHS:,}] (the presets train 2 to 100 epochs), "
                         f"got {cfg.epochs!r}")
    if cfg.device != "auto":
        try:
            torch.device(cfg.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"--device {cfg.device!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    check_choices(cfg.precision, cfg.compile)
    lr = getattr(cfg, lr_field(cfg))
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive number, got {lr!r}")


def same_config(old: dict, new: dict) -> dict:
    """The fields, outside RESUMABLE_CHANGES, whose values differ: {name: (old, new)}. Only fields both configs
    have count: one the code gained after the run started (a `git pull` between two sessions, e.g. a new final
    measurement's settings) takes its current value, and one it dropped no longer means anything."""
    old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))  # as in config.json: tuples become lists
    return {k: (old[k], new[k]) for k in sorted(set(old) & set(new))
            if k not in RESUMABLE_CHANGES and old[k] != new[k]}


def locked(run_function: Callable[..., Path]) -> Callable[..., Path]:
    """Decorate a driver's run(cfg, out, ...): checks that `out` is writable, then holds its RunLock for the
    whole run (training, final evaluation, figures); a second process on the folder is refused. A run that
    stops before writing anything (a refusal: missing data, another config, ...) removes the folders it made."""
    @functools.wraps(run_function)
    def run(cfg: Any, out: str | Path, *args, **kwargs) -> Path:
        made = created_folders(Path(out))
        try:
            with RunLock(writable_folder(out, "--out")):
                return run_function(cfg, out, *args, **kwargs)
        except BaseException:
            remove_if_empty(made)
            raise
    return run


# --------------------------------------------------------------------------- the run folder

class Run:
    """A run folder (see the module docstring), opened by a process that holds its lock (`locked`).

    resume=False refuses a folder that holds a checkpoint, and moves the outputs of an earlier run
    without one aside; resume=True loads the checkpoint (falling back to the previous one when the latest
    is damaged) and checks the config, the epochs, the metrics and the artifacts against it."""

    def __init__(self, directory: str | Path, config: Any, *, resume: bool = False):
        self.dir = Path(directory)
        self.config = config
        self.artifacts = self.dir / "artifacts"
        self.figures = self.dir / "figures"
        self.checkpoint_path = self.dir / CHECKPOINT
        self.previous_path = self.dir / PREVIOUS_CHECKPOINT
        self.metrics_path = self.dir / "metrics.jsonl"
        self.changes: dict[str, list] = {}   # resumable fields changed by this resume: {name: [old, new]}
        remove_temp_files(self.dir)          # left by a kill during a write; we hold the lock
        if not resume and (self.checkpoint_path.exists() or self.previous_path.exists()):
            raise FileExistsError(
                f"{self.dir} already holds a run (found {self.checkpoint_path}). "
                "Pass --resume (resume=True) to continue it, or choose another --out folder.")
        if resume and (self.dir / "config.json").exists():
            self._check_config(read_json(self.dir, "config.json"), "config.json")
        self.checkpoint = self._load() if resume else None
        self.epoch = self.checkpoint["epoch"] if self.checkpoint else 0
        self.history: list[dict] = self._resume_checks() if self.checkpoint else []
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
        lines = "".join(json.dumps(m) + "\n" for m in self.history)
        if not self.metrics_path.exists() or self.metrics_path.read_text() != lines:
            atomic_write_bytes(self.metrics_path, lambda f: f.write(lines.encode()))

    # checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        """Write `state` (checksummed), the previous checkpoint kept as checkpoint.prev.pt."""
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
        atomic_save(obj, self.artifacts / name)

    def write_json(self, name: str, obj: Any) -> None:
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


def remove_temp_files(directory: Path) -> None:
    """Delete the temp files (.<name>.*.tmp) a kill during an atomic write leaves behind."""
    if directory.is_dir():
        for p in directory.rglob(".*.tmp"):
            p.unlink(missing_ok=True)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of metrics.jsonl; a half-written last line (a crash mid-write) is dropped with a warning,
    any other line that is not JSON raises ValueError naming the file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number < len(lines):
                raise ValueError(f"{path}, line {number}, is not valid JSON ({e}); delete that line or the run "
                                 "folder") from None
            print(f"warning: dropped the half-written last line {number} of {path}", file=sys.stderr)
    return records


def read_json(run_dir: str | Path, name: str) -> dict:
    path = Path(run_dir) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is {run_dir} a finished run folder?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it (it is rewritten by a rerun with --resume)"
                         ) from None


def load_artifact(run_dir: str | Path, name: str) -> Any:
    path = Path(run_dir) / "artifacts" / name
    if not path.exists():
        raise FileNotFoundError(f"artifact {path} is missing: rerun the experiment with --resume to produce it")
    return torch.load(path, map_location="cpu", weights_only=False)


def environment(execution: Execution) -> dict[str, Any]:
    """What ran the experiment, for provenance: the device, how steps ran there (experiments.harness.execution: the
    precision and how it was chosen, TF32, layout, compilation), versions."""
    device = execution.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, **execution.record, "torch": torch.__version__,
            "python": sys.version.split()[0], "host": platform.node(), "cpu_count": str(os.cpu_count())}


# --------------------------------------------------------------------------- the run skeleton

class Setup(NamedTuple):
    """What every experiment starts from: its run folder, how its steps execute, and its data."""
    run: Run
    execution: Execution
    train: Any                     # experiments.harness.data.ImageSet
    test: Any


def start(cfg: Any, out: str | Path, real_dataset: str, *, resume: bool = False,
          trial: Callable[[Any], Callable[[], Any]] | None = None, compiles: bool = True,
          clock: Callable[[], float] | None = None) -> Setup:
    """Load the data (`real_dataset`, "svhn" or "cifar10", or the synthetic stand-in, as cfg.data says) before
    touching the folder, create (or reopen) the run folder, decide how its steps execute (experiments.harness.execution:
    device, precision, layout, compilation; trial and clock as in execution.choose_precision, compiles as
    in execution.compile_mode), write provenance.json (the data's provenance and the environment) and seed the
    global RNGs with cfg.seed."""
    from experiments.harness import data  # here: experiments.harness.data imports this module
    train, test, provenance = data.load_train_test(cfg, real_dataset)
    device = pick_device(cfg.device)
    run = Run(out, cfg, resume=resume)
    kept = ((run.checkpoint or {}).get("state", {}).get("precision") or {}).get("name")
    precision, record = choose_precision(device, cfg.precision, kept=kept, trial=trial, clock=clock)
    execution = Execution(device, precision, compile_mode(cfg.compile, device, compiles), record)
    tqdm.write(execution.describe())
    changes = _recorded_changes(run)
    run.write_json("provenance.json", {**provenance, **environment(execution), "resume_changes": changes})
    seed_everything(cfg.seed)
    return Setup(run, execution, train, test)


def _recorded_changes(run: Run) -> list[dict]:
    """provenance.json's list of config changes made by resumes, with this resume's appended (and printed)."""
    try:
        changes = read_json(run.dir, "provenance.json").get("resume_changes", []) if run.checkpoint else []
    except (FileNotFoundError, ValueError):
        changes = []
    if run.changes:
        listing = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in run.changes.items())
        tqdm.write(f"resuming {run.dir} after epoch {run.epoch} with changes: {listing} (in provenance.json)")
        changes = [*changes, {"after_epoch": run.epoch, "changes": run.changes}]
    return changes


@dataclasses.dataclass(frozen=True)
class SnapshotEpochs:
    """Every `every`-th epoch of 1..epochs, and the last: a lazy sequence (`in`, len, iteration), so that no
    value of --epochs makes a run allocate in proportion to it."""
    every: int
    epochs: int

    def __contains__(self, epoch: object) -> bool:
        in_range = isinstance(epoch, int) and 1 <= epoch <= self.epochs
        return in_range and (epoch % self.every == 0 or epoch == self.epochs)

    def __len__(self) -> int:
        return self.epochs // self.every + (self.epochs % self.every != 0)

    def __iter__(self) -> Iterator[int]:
        yield from range(self.every, self.epochs + 1, self.every)
        if self.epochs % self.every:
            yield self.epochs


def snapshot_epochs(every: int, epochs: int) -> SnapshotEpochs:
    """Every `every`-th epoch (every >= 1), and the last, in increasing order, computed lazily."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"snapshot_every must be an integer of at least 1, got {every!r}")
    return SnapshotEpochs(every, epochs)


def progress(batches: Iterable[torch.Tensor], total: int, epoch: int) -> tqdm:
    """The bar of one training epoch over `total` batches; `show_rate` updates its postfix."""
    return tqdm(batches, total=total, desc=f"epoch {epoch}", leave=False, unit="batch")


def show_rate(bar: tqdm, step: int, loss_sum: torch.Tensor, batch_size: int, t0: float, every: int = 50) -> None:
    """After `step` steps (1-based) of an epoch begun at t0: every `every` steps only (a host sync),
    the running mean loss (loss_sum / step) and the images per second in the bar's postfix."""
    if step % every == 0:
        rate = step * batch_size / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{loss_sum.item() / step:.4g}", img_s=f"{rate:.0f}")


# --------------------------------------------------------------------------- the epoch loop

def projection(epoch_seconds: float, epochs: int, done: int, device: torch.device) -> str:
    """The projected training time of the whole run, and what is left of it, from one epoch's time
    (its training and per-epoch evaluation) on `device`; `done` epochs are finished."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return (f"projected: {epochs} epochs x {epoch_seconds:.0f} s = {duration(epochs * epoch_seconds)} of training "
            f"on {name}, {duration((epochs - done) * epoch_seconds)} of it still to go, then the final evaluation")


def duration(seconds: float) -> str:
    """'1 h 05 min', '12 min 30 s' or '42 s'."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def fit(run: Run, *, epochs: int, device: torch.device, state: dict[str, Any],
        generators: dict[str, torch.Generator], train_epoch: Callable[[int], dict],
        after_epoch: Callable[[int], dict], desc: str, lr: float | None = None) -> list[dict]:
    """Train epochs (last checkpointed epoch + 1) .. `epochs`, checkpointing after each.

    state: named objects with state_dict/load_state_dict (model, optimizer, EMA, ...), saved whole.
    train_epoch(epoch) -> {"loss": ..., "images": n, other means}; after_epoch(epoch) -> extra
    metrics (evaluation, snapshots). lr: the optimizer's learning rate, set after loading a checkpoint
    (a resume may change it). Returns all metrics records of the run.
    """
    start = resume_state(run, state, generators, lr)
    wall = run.history[-1]["wall_seconds"] if run.history else 0.0
    bar = tqdm(range(start + 1, epochs + 1), desc=desc, initial=start, total=epochs, unit="epoch")
    for epoch in bar:
        synchronize(device)
        t0 = time.perf_counter()
        stats = train_epoch(epoch)
        synchronize(device)
        train_seconds = time.perf_counter() - t0
        check_finite(run, epoch, stats["loss"], state)
        extra = after_epoch(epoch)
        synchronize(device)
        epoch_seconds = time.perf_counter() - t0
        wall += epoch_seconds
        images = stats.pop("images")
        record = {"epoch": epoch, **stats, **extra, "train_seconds": train_seconds,
                  "epoch_seconds": epoch_seconds, "wall_seconds": wall,
                  "images_per_s": images / train_seconds}
        run.log(record)
        if epoch == start + 1:
            tqdm.write(projection(epoch_seconds, epochs, epoch, device))
        bar.set_postfix(loss=f"{record['loss']:.4g}", img_s=f"{record['images_per_s']:.0f}")
        run.save_checkpoint({"epoch": epoch, "state": {n: o.state_dict() for n, o in state.items()},
                             "rng": rng_state(generators), "config": dataclasses.asdict(run.config),
                             "metrics": list(run.history), "artifacts": run.artifact_names()})
    return run.metrics()


def resume_state(run: Run, state: dict[str, Any], generators: dict[str, torch.Generator],
                 lr: float | None) -> int:
    """Load the run's checkpoint into `state` and the RNGs, make metrics.jsonl match it; the epoch it ended."""
    checkpoint = run.load_checkpoint()
    if checkpoint is not None:
        for name, obj in state.items():
            obj.load_state_dict(checkpoint["state"][name])
        set_rng_state(checkpoint["rng"], generators)
        if lr is not None and "optimizer" in state:
            for group in state["optimizer"].param_groups:
                group["lr"] = lr
        tqdm.write(f"resuming {run.dir} after epoch {run.epoch}")
    run.restore_metrics()  # drops lines of an epoch that never reached its checkpoint
    return run.epoch


def check_finite(run: Run, epoch: int, loss: float, state: dict[str, Any]) -> None:
    """Raise NonFiniteLossError when the epoch's loss, or any weight or optimizer state, is NaN or inf:
    such a state is never checkpointed, the last good checkpoint is kept."""
    bad = [] if math.isfinite(loss) else [f"the training loss is {loss}"]
    names = non_finite({n: o.state_dict() for n, o in state.items()})
    if names:
        bad.append(f"{len(names)} tensors are not finite ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    if bad:
        kept = f"{run.checkpoint_path} (epoch {run.epoch}) is kept" if run.epoch else "no checkpoint exists yet"
        field = lr_field(run.config)
        raise NonFiniteLossError(f"epoch {epoch}: {' and '.join(bad)}; stopped, {kept}. Resume with a lower "
                                 f"learning rate (--lr, now {field} = {getattr(run.config, field)}), "
                                 "or inspect the data.")
