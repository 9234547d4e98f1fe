"""An exclusive lock on a run folder, so that two processes never train into the same folder.

Two Colab tabs on one Drive folder, or a second `python -m experiments ... --resume` started by
mistake, would otherwise interleave their epochs and seeds in one metrics file. The lock is the
file `<run>/.lock`, created with O_EXCL (atomic on local disks and on Google Drive's FUSE mount),
holding the owner's PID, host and start time. While the run lives, a daemon thread refreshes the
file's modification time every HEARTBEAT seconds.

A lock is stale, and is taken over with a message, when its owner is on this host and its PID is no
longer running, or when its heartbeat is older than STALE seconds (an owner on another machine,
e.g. a Colab VM that was disconnected, cannot be asked whether it still runs).
"""
from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path

LOCK = ".lock"
HEARTBEAT = 30.0
STALE = 300.0


class RunLockedError(RuntimeError):
    """Another live process holds the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def owner_of(directory: str | Path) -> dict | None:
    """The lock's content (pid, host, started), or None when unlocked; {} when unreadable."""
    try:
        return json.loads((Path(directory) / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def is_stale(owner: dict, age: float) -> bool:
    """Whether a lock whose file was last refreshed `age` seconds ago belongs to nobody alive."""
    if owner.get("host") == platform.node() and isinstance(owner.get("pid"), int):
        return owner["pid"] != os.getpid() and not _alive(owner["pid"])
    return age > STALE


class RunLock:
    """`with RunLock(folder):` holds the folder's lock for the block; refuses with RunLockedError when a live
    process holds it, and takes over a stale lock (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # less the umask
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": platform.node(), "started": time.time()}, f)
            self._start_heartbeat()
            return
        raise RunLockedError(f"could not take the lock {self.path}: another process took it at the same time")

    def _handle_existing(self) -> None:
        owner = owner_of(self.path.parent) or {}
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: try again
        if not is_stale(owner, age):
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
            raise RunLockedError(
                f"{self.path.parent} is in use by process {owner.get('pid', '?')} on host {owner.get('host', '?')} "
                f"(since {since}, last heartbeat {age:.0f} s ago). Wait for it to finish, stop it, or use another "
                f"--out folder; a lock whose owner died is taken over automatically (after {STALE:.0f} s without "
                "a heartbeat when the owner ran on another machine).")
        self.took_over = owner
        self.path.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT):
                try:
                    os.utime(self.path)
                except OSError:
                    return
        self._thread = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if (owner_of(self.path.parent) or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
