"""experiments.harness.lock: one process per run folder; a dead owner's lock is taken over."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.harness.lock import LOCK, STALE, RunLock, RunLockedError, owner_of

HOLDER = """
import sys, time
from experiments.harness.lock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_acquire_and_release(tmp_path):
    with RunLock(tmp_path):
        assert owner_of(tmp_path)["pid"] == os.getpid()
    assert owner_of(tmp_path) is None


def test_a_live_owner_is_refused_with_its_pid_and_a_dead_one_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"process {holder.pid} on host"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the lock file stays behind
        holder.wait()
    assert owner_of(tmp_path)["pid"] == holder.pid
    lock = RunLock(tmp_path)
    with lock:
        assert lock.took_over["pid"] == holder.pid and owner_of(tmp_path)["pid"] == os.getpid()


def test_another_hosts_lock_is_obeyed_while_its_heartbeat_is_fresh(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": "another-colab-vm", "started": time.time()}))
    with pytest.raises(RunLockedError, match="another-colab-vm"):
        RunLock(tmp_path).acquire()
    old = time.time() - STALE - 10
    os.utime(tmp_path / LOCK, (old, old))
    with RunLock(tmp_path) as lock:
        assert lock.took_over["host"] == "another-colab-vm"


def test_an_unreadable_lock_with_a_fresh_heartbeat_is_obeyed(tmp_path):
    (tmp_path / LOCK).write_text("{half a json")
    with pytest.raises(RunLockedError, match="in use"):
        RunLock(tmp_path).acquire()
