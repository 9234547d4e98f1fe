"""Files of a run folder written so that an interruption never leaves half of one: atomic writes
(temp + rename), checksummed checkpoints, a full disk refused with the old files kept, the user's
umask; and the readers of metrics.jsonl, JSON files and artifacts that name what is wrong."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shlex
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "experiments.runs/2"    # {"format", "sha256", "payload": torch.save bytes of the state}


class CheckpointError(RuntimeError):
    """A checkpoint file is damaged: truncated, overwritten, or its checksum does not match."""


class DiskFullError(OSError):
    """The disk filled up during a write; the file keeps its previous content."""


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
