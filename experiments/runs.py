"""Run folders: the single interface between training and everything downstream.

A run folder holds
    config.json       the resolved config (a dataclass, saved whole)
    provenance.json   which dataset was actually used, on what device, with which versions
    metrics.jsonl     one JSON object per finished epoch, appended and fsync'ed
    checkpoint.pt     model, optimizer, RNG states and epoch, written atomically (temp + rename)
    artifacts/        tensors the figures are drawn from (samples, reconstructions, ...)
    figures/          PNGs, redrawn from the folder alone
    summary.json      final numbers (e.g. the test log-likelihood)

`fit` drives the epoch loop. A checkpoint is written only after an epoch, its metrics line and
its artifacts are all on disk, so an interruption anywhere (Ctrl-C, a Colab disconnect,
kill -9) loses at most the epoch in progress, and `--resume` redoes exactly that epoch from
the same RNG state: on CPU with the same seed a resumed run ends with the same numbers as an
uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from experiments.precision import Precision, policy

CHECKPOINT = "checkpoint.pt"
# Config fields a resumed run may change: how long to train and where, not what is trained.
# The precision and micro-batch follow the device a run resumes on (recorded in provenance.json).
RESUMABLE_CHANGES = frozenset({"epochs", "device", "data_root", "precision", "micro_batch"})


class NonFiniteLossError(RuntimeError):
    """A training epoch produced a NaN/inf loss; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- atomic files

def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call write(file) on a temp file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"))


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
    """What a notebook prints after its configuration: the device a run will use and its precision."""
    picked = pick_device(device)
    name = torch.cuda.get_device_name(picked) if picked.type == "cuda" else str(picked)
    return f"device: {name} | precision: {policy(picked)} (experiments.precision; override with precision=...)"


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


# --------------------------------------------------------------------------- the run folder

class Run:
    """A run folder (see the module docstring). Creating one with resume=False refuses to
    overwrite a folder that already holds a checkpoint; resume=True checks the saved config."""

    def __init__(self, directory: str | Path, config: Any, *, resume: bool = False):
        self.dir = Path(directory)
        self.config = config
        self.artifacts = self.dir / "artifacts"
        self.figures = self.dir / "figures"
        self.checkpoint_path = self.dir / CHECKPOINT
        self.metrics_path = self.dir / "metrics.jsonl"
        saved = self.dir / "config.json"
        if self.checkpoint_path.exists() and not resume:
            raise FileExistsError(
                f"{self.dir} already holds a run (found {self.checkpoint_path}). "
                "Pass --resume (resume=True) to continue it, or choose another --out folder.")
        if resume and saved.exists():
            self._check_same_config(json.loads(saved.read_text()))
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.figures.mkdir(parents=True, exist_ok=True)
        atomic_write_json(dataclasses.asdict(config), saved)

    def _check_same_config(self, old: dict) -> None:
        new = json.loads(json.dumps(dataclasses.asdict(self.config)))  # as saved: tuples become lists
        diff = {k: (old.get(k), new.get(k)) for k in set(old) | set(new)
                if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)}
        if diff:
            listing = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ValueError(f"cannot resume {self.dir} with a different config ({listing}); "
                             "resume with the same options, or start a new run with another --out")

    # metrics -----------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append one JSON line and fsync it."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop lines of epochs after `last_epoch` (written before an interruption hit the checkpoint)."""
        kept = [m for m in self.metrics() if m["epoch"] <= last_epoch]
        atomic_write_bytes(self.metrics_path, lambda f: f.write("".join(json.dumps(m) + "\n" for m in kept).encode()))

    # checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        atomic_save(state, self.checkpoint_path)

    def load_checkpoint(self, map_location: torch.device | str = "cpu") -> dict | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location=map_location, weights_only=False)
        except Exception as e:  # a checkpoint is only ever replaced atomically, so this is outside damage
            raise RuntimeError(f"checkpoint {self.checkpoint_path} is unreadable ({e}); delete it to restart "
                               "this run from scratch, or point --out at another folder") from e

    # artifacts and summary --------------------------------------------------------
    def save_artifact(self, name: str, obj: Any) -> None:
        atomic_save(obj, self.artifacts / name)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(obj, self.dir / name)

    def finished(self) -> bool:
        """Whether the final evaluation of this config's epochs is done: summary.json is written last."""
        path = self.dir / "summary.json"
        return path.exists() and json.loads(path.read_text())["epochs"] == self.config.epochs


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_json(run_dir: str | Path, name: str) -> dict:
    path = Path(run_dir) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: is {run_dir} a finished run folder?")
    return json.loads(path.read_text())


def load_artifact(run_dir: str | Path, name: str) -> Any:
    path = Path(run_dir) / "artifacts" / name
    if not path.exists():
        raise FileNotFoundError(f"artifact {path} is missing: rerun the experiment with --resume to produce it")
    return torch.load(path, map_location="cpu", weights_only=False)


def environment(prec: Precision) -> dict[str, str]:
    """What ran the experiment, for provenance: the device, its precision (experiments.precision), versions."""
    device = prec.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "precision": prec.name, "torch": torch.__version__,
            "python": sys.version.split()[0], "host": platform.node(), "cpu_count": str(os.cpu_count())}


# --------------------------------------------------------------------------- the run skeleton

@dataclasses.dataclass
class Setup:
    """What every experiment starts from: its run folder, device and precision policy."""
    run: Run
    device: torch.device
    prec: Precision


def start(cfg: Any, out: str | Path, provenance: dict, *, resume: bool = False) -> Setup:
    """Pick the device and precision, create (or reopen) the run folder, write provenance.json
    (the data's `provenance` and the environment) and seed the global RNGs with cfg.seed."""
    device = pick_device(cfg.device)
    prec = Precision(device, cfg.precision)
    run = Run(out, cfg, resume=resume)
    run.write_json("provenance.json", {**provenance, **environment(prec)})
    seed_everything(cfg.seed)
    return Setup(run, device, prec)


def snapshot_epochs(every: int, epochs: int) -> list[int]:
    """Every `every`-th epoch, and the last."""
    return sorted(set(range(every, epochs + 1, every)) | {epochs})


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
        after_epoch: Callable[[int], dict], desc: str) -> list[dict]:
    """Train epochs (last checkpointed epoch + 1) .. `epochs`, checkpointing after each.

    state: named objects with state_dict/load_state_dict (model, optimizer, EMA, ...), saved whole.
    train_epoch(epoch) -> {"loss": ..., "images": n, other means}; after_epoch(epoch) -> extra
    metrics (evaluation, snapshots). Returns all metrics records of the run.
    """
    start = 0
    checkpoint = run.load_checkpoint()  # on CPU: RNG states must stay CPU tensors
    if checkpoint is not None:
        for name, obj in state.items():
            obj.load_state_dict(checkpoint["state"][name])
        set_rng_state(checkpoint["rng"], generators)
        start = checkpoint["epoch"]
        run.truncate_metrics(start)
        tqdm.write(f"resuming {run.dir} after epoch {start}")
    elif run.metrics_path.exists():
        run.truncate_metrics(0)  # metrics of an epoch that never reached a checkpoint
    previous = run.metrics()
    wall = previous[-1]["wall_seconds"] if previous else 0.0
    bar = tqdm(range(start + 1, epochs + 1), desc=desc, initial=start, total=epochs, unit="epoch")
    for epoch in bar:
        synchronize(device)
        t0 = time.perf_counter()
        stats = train_epoch(epoch)
        synchronize(device)
        train_seconds = time.perf_counter() - t0
        if not math.isfinite(stats["loss"]):
            kept = f"{run.checkpoint_path} (epoch {epoch - 1}) is kept" if epoch > 1 else "no checkpoint exists yet"
            raise NonFiniteLossError(f"epoch {epoch}: training loss is {stats['loss']}; stopped, {kept}. "
                                     "Lower the learning rate and resume, or inspect the data.")
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
                             "rng": rng_state(generators), "config": dataclasses.asdict(run.config)})
    return run.metrics()
