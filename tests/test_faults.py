"""Nothing silently wrong: every fault a run folder can meet is refused with one message, or recovered exactly.

Lock, damaged checkpoints, stale outputs, non-finite weights, bad options, a full disk, corrupt JSON,
out-of-range diffusion steps, and kill -9 at any point of the DDPM and SimSiam runs.
"""
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

import ddpm_solution
from experiments import __main__ as cli
from experiments.harness import files, runs
from experiments.harness.files import DiskFullError, read_checkpoint, read_metrics
from experiments.harness.precision import Precision
from experiments.presentation import names
from experiments.problems import vae
from experiments.problems.diffusion import Diffusion
from tests.conftest import ROOT
from tests.test_precision import tiny_vae, without_timings


def tiny(root: Path, **kw) -> vae.VAEConfig:
    return tiny_vae(root, precision="fp32", **kw)


def smoke_args(tmp_path: Path, *extra: str, problem: str = "vae", out: str = "run") -> list[str]:
    return [problem, "--preset", "smoke", "--data", "synthetic", "--device", "cpu", "--out", str(tmp_path / out),
            "--data-root", str(tmp_path / "data"), *extra]


def refused(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 and one `error:` message without a traceback; the message."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[list[dict], dict]:
    """An uninterrupted tiny 2-epoch VAE run: its metrics and summary."""
    tmp = tmp_path_factory.mktemp("ref")
    run_dir = vae.run(tiny(tmp / "data", epochs=2), tmp / "run")
    return read_metrics(run_dir), json.loads((run_dir / "summary.json").read_text())


def assert_same(run_dir: Path, reference) -> None:
    assert without_timings(read_metrics(run_dir)) == without_timings(reference[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_log_likelihood_nats"] == reference[1]["test_log_likelihood_nats"]


# --------------------------------------------------------------------------- 1. the lock

def test_a_second_process_on_a_locked_folder_is_refused_with_the_owner(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from experiments.harness.lock import RunLock; "
         "RunLock(sys.argv[1]).acquire();"
         " print('locked', flush=True); time.sleep(60)", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = refused(capsys, smoke_args(tmp_path))
        assert f"in use by process {holder.pid} on host" in err and os.uname().nodename in err
        assert not (out / "config.json").exists()  # refused before any work
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_held_during_the_run_and_released_after(tmp_path, monkeypatch):
    seen = []
    real = vae.final_artifacts
    monkeypatch.setattr(vae, "final_artifacts", lambda run_, *a: (seen.append(runs.RunLock(run_.dir).path.exists()),
                                                                  real(run_, *a)))
    run_dir = vae.run(tiny(tmp_path / "data", epochs=1), tmp_path / "run")
    assert seen == [True] and not (run_dir / ".lock").exists()


# --------------------------------------------------------------------------- 2. damaged checkpoints

def flip_bytes(path: Path, n: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + n] = bytes(b ^ 0xFF for b in raw[middle:middle + n])
    path.write_bytes(bytes(raw))


def test_a_damaged_checkpoint_falls_back_to_the_previous_epoch_and_ends_exact(tmp_path, reference, capsys):
    cfg = tiny(tmp_path / "data", epochs=2)
    run_dir = vae.run(cfg, tmp_path / "run")
    assert read_checkpoint(run_dir / "checkpoint.prev.pt")["epoch"] == 1
    flip_bytes(run_dir / "checkpoint.pt")
    (run_dir / "summary.json").unlink()
    vae.run(cfg, run_dir, resume=True)
    err = capsys.readouterr().err
    assert "checkpoint.pt is damaged" in err and "falling back to" in err and "(epoch 1)" in err
    assert read_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 2
    assert_same(run_dir, reference)


@pytest.mark.parametrize("damage", ["flip", "truncate", "random"])
def test_a_damaged_checkpoint_without_a_previous_one_is_refused_in_one_line(tmp_path, capsys, damage):
    assert cli.main(smoke_args(tmp_path, "--epochs", "1")) == 0
    path = tmp_path / "run" / "checkpoint.pt"
    if damage == "flip":
        flip_bytes(path)
    else:
        path.write_bytes(path.read_bytes()[:1000] if damage == "truncate" else os.urandom(5000))
    capsys.readouterr()
    err = refused(capsys, smoke_args(tmp_path, "--epochs", "2", "--resume"))
    assert "checkpoint.pt is damaged" in err and "no checkpoint.prev.pt to fall back on" in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- 3. stale outputs

def test_a_restart_without_checkpoint_moves_the_old_outputs_aside(tmp_path, capsys):
    assert cli.main(smoke_args(tmp_path, "--epochs", "1")) == 0
    (tmp_path / "run" / "checkpoint.pt").unlink()
    capsys.readouterr()
    assert cli.main(smoke_args(tmp_path, "--epochs", "1", "--seed", "7")) == 0
    run_dir = tmp_path / "run"
    [aside] = run_dir.glob("previous-*")
    assert f"moved its earlier summary.json, metrics.jsonl, artifacts, figures, config.json, provenance.json into " \
           f"{aside}" in capsys.readouterr().err
    assert json.loads((aside / "config.json").read_text())["seed"] == 0 and (aside / "summary.json").exists()
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 7
    assert cli.main(smoke_args(tmp_path, "--epochs", "1", "--seed", "7", out="seed7")) == 0
    assert untimed(json.loads((run_dir / "summary.json").read_text())) == \
        untimed(json.loads((tmp_path / "seed7" / "summary.json").read_text()))


def untimed(summary):
    """A summary's JSON without its timings (keys naming seconds), at every depth."""
    if isinstance(summary, dict):
        return {k: untimed(v) for k, v in summary.items() if "seconds" not in k}
    return [untimed(v) for v in summary] if isinstance(summary, list) else summary


def test_fewer_epochs_than_done_is_refused(tmp_path, capsys):
    assert cli.main(smoke_args(tmp_path, "--epochs", "2")) == 0
    err = refused(capsys, smoke_args(tmp_path, "--epochs", "1", "--resume"))
    assert "--epochs 1 is below the 2 epochs" in err


def test_a_deleted_config_and_another_seed_is_refused_from_the_checkpoint(tmp_path, capsys):
    assert cli.main(smoke_args(tmp_path, "--epochs", "1")) == 0
    (tmp_path / "run" / "config.json").unlink()
    err = refused(capsys, smoke_args(tmp_path, "--epochs", "2", "--seed", "7", "--resume"))
    assert "seed: saved 0 vs now 7" in err and "checkpoint.pt" in err


def test_deleted_metrics_are_restored_from_the_checkpoint(tmp_path, reference, capsys):
    cfg = tiny(tmp_path / "data", epochs=2)
    vae.run(tiny(tmp_path / "data", epochs=1), tmp_path / "run")
    (tmp_path / "run" / "metrics.jsonl").unlink()
    vae.run(cfg, tmp_path / "run", resume=True)
    assert "does not match the checkpoint" in capsys.readouterr().err
    assert_same(tmp_path / "run", reference)


def test_deleted_artifacts_are_refused_on_resume(tmp_path, capsys):
    assert cli.main(smoke_args(tmp_path, "--epochs", "1")) == 0
    for p in sorted((tmp_path / "run" / "artifacts").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    err = refused(capsys, smoke_args(tmp_path, "--epochs", "2", "--resume"))
    assert "are missing (reconstructions/epoch_001.pt" in err and "cannot be remade" in err


def test_finished_compares_the_checkpoint_epoch_not_only_the_summary(tmp_path):
    cfg = tiny(tmp_path / "data", epochs=2)
    run_dir = vae.run(cfg, tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    run = runs.Run(run_dir, cfg, resume=True)
    assert run.finished()
    run.epoch = 1  # a summary whose epochs match the config but not the checkpoint
    assert not run.finished() and summary["epochs"] == 2


# --------------------------------------------------------------------------- 4. non-finite weights

def test_nan_weights_with_a_finite_loss_are_never_checkpointed(tmp_path, monkeypatch, capsys):
    real, calls = Precision.step, {"n": 0}

    def step_then_poison(self, optimizer):  # the last step of epoch 2 (10 steps an epoch) leaves NaN weights
        real(self, optimizer)
        calls["n"] += 1
        if calls["n"] == 20:
            with torch.no_grad():
                optimizer.param_groups[0]["params"][0].fill_(float("nan"))

    monkeypatch.setattr(Precision, "step", step_then_poison)
    err = refused(capsys, smoke_args(tmp_path, "--epochs", "3"))
    assert "epoch 2: 1 tensors are not finite (model." in err and "checkpoint.pt (epoch 1) is kept" in err
    command = err.strip().splitlines()[-1].strip()
    assert command == shlex.join([names.interpreter(), "-m", "experiments", "vae", "--preset", "smoke", "--out",
                                  str(tmp_path / "run"), "--data", "synthetic", "--data-root", str(tmp_path / "data"),
                                  "--device", "cpu", "--epochs", "3", "--lr", "0.0002", "--resume"])
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["epoch"] == 1 and not files.non_finite(checkpoint["state"])
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1]
    monkeypatch.setattr(Precision, "step", real)
    assert cli.main(shlex.split(command)[3:]) == 0
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert provenance["resume_changes"] == [{"after_epoch": 1, "changes": {"lr": [0.002, 0.0002]}}]


# --------------------------------------------------------------------------- 5. bad options, refused first

@pytest.mark.parametrize(("extra", "message"), [
    (["--epochs", "0"], "--epochs must be an integer in [1, 10,000]"),
    (["--epochs", "-1"], "--epochs must be an integer in [1, 10,000]"),
    (["--epochs", "10001"], "--epochs must be an integer in [1, 10,000] (the presets train 2 to 100 epochs), got "
                            "10001"),
    (["--seed", "-1", "--epochs", "0"], "--seed must be an integer in [0, 4294967295], got -1"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--lr", "nan"], "--lr must be a positive number"),
])
def test_bad_options_are_refused(tmp_path, capsys, extra, message):
    assert message in refused(capsys, smoke_args(tmp_path, *extra))
    assert not (tmp_path / "run").exists()


def test_unwritable_folders_are_refused(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "--out" in refused(capsys, [*smoke_args(tmp_path), "--out", str(a_file / "run")])
    assert "--out /proc/nope/run is not a writable folder" in refused(capsys, [*smoke_args(tmp_path), "--out",
                                                                               "/proc/nope/run"])
    err = refused(capsys, [*smoke_args(tmp_path), "--data-root", str(a_file / "data")])
    assert f"--data-root {a_file / 'data'} is not a writable folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert "is not a writable folder" in refused(capsys, [*smoke_args(tmp_path), "--out", str(tmp_path / "ro")])


def test_timesteps_are_bounded(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(smoke_args(tmp_path, "--timesteps", "1e9", problem="ddpm"))
    assert exit_.value.code == 2 and "invalid int value: '1e9'" in capsys.readouterr().err
    err = refused(capsys, smoke_args(tmp_path, "--timesteps", "1000000000", problem="ddpm"))
    assert "--timesteps must be an integer T in [1, 10,000]" in err


def test_simsiam_epochs_message_does_not_talk_about_warm_up(tmp_path, capsys):
    for ablation in ("baseline", "batch-4096"):
        err = refused(capsys, smoke_args(tmp_path, "--epochs", "0", "--ablation", ablation, problem="simsiam"))
        assert "--epochs must be an integer in [1, 10,000]" in err and "warmup" not in err


# --------------------------------------------------------------------------- 6. a full disk

def test_a_full_disk_during_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch, capsys):
    real = files.write_checkpoint

    def full_at_epoch_2(f, state):
        if state["epoch"] == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, state)

    monkeypatch.setattr(runs, "write_checkpoint", full_at_epoch_2)
    err = refused(capsys, smoke_args(tmp_path, "--epochs", "2"))
    last = err.strip().splitlines()[-1]  # after the progress bars, one line
    assert last.startswith("error: the disk is full") and "checkpoint.pt" in last and err.count("error:") == 1
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_a_full_disk_during_an_artifact_keeps_the_old_one(tmp_path, monkeypatch):
    run = runs.Run(tmp_path / "run", tiny(tmp_path / "data"))
    run.save_artifact("samples/epoch_001.pt", torch.arange(3))

    def full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match="the disk is full .* while writing .*epoch_001.pt; the file keeps"):
        run.save_artifact("samples/epoch_001.pt", torch.zeros(3))
    monkeypatch.undo()
    assert torch.equal(torch.load(run.artifacts / "samples" / "epoch_001.pt"), torch.arange(3))
    assert [p.name for p in (run.artifacts / "samples").iterdir()] == ["epoch_001.pt"]


def test_a_full_disk_during_a_figure_keeps_the_old_figure(tmp_path):
    path = tmp_path / "figures" / "loss.png"
    fig = plt.figure()
    files.save_figure(fig, path)
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    fig.savefig = full
    with pytest.raises(DiskFullError, match="the disk is full .* while writing .*loss.png"):
        files.save_figure(fig, path)
    plt.close(fig)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["loss.png"]


# --------------------------------------------------------------------------- 7. corrupt JSON, temp files

def test_a_corrupt_config_names_the_file(tmp_path, capsys):
    assert cli.main(smoke_args(tmp_path, "--epochs", "1")) == 0
    (tmp_path / "run" / "config.json").write_text('{"seed": 0,,')
    err = refused(capsys, smoke_args(tmp_path, "--epochs", "1", "--resume"))
    assert "config.json is not valid JSON" in err


def test_a_corrupt_summary_is_named_and_redone(tmp_path, reference, capsys):
    cfg = tiny(tmp_path / "data", epochs=2)
    run_dir = vae.run(cfg, tmp_path / "run")
    (run_dir / "summary.json").write_text('{"epochs": 2')
    vae.run(cfg, run_dir, resume=True)
    assert "summary.json is not valid JSON" in capsys.readouterr().err
    assert_same(run_dir, reference)


def test_a_half_written_last_metrics_line_is_dropped_and_a_middle_one_named(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    assert read_metrics(tmp_path) == [{"epoch": 1}]
    assert "dropped the half-written last line 2" in capsys.readouterr().err
    path.write_text('{"epoch": 1\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl, line 1, is not valid JSON"):
        read_metrics(tmp_path)


def test_temp_files_of_a_killed_write_are_removed_on_the_next_start(tmp_path, reference):
    cfg = tiny(tmp_path / "data", epochs=2)
    vae.run(tiny(tmp_path / "data", epochs=1), tmp_path / "run")
    leftovers = [tmp_path / "run" / ".checkpoint.pt.abc123.tmp", tmp_path / "run" / "artifacts" / ".x.pt.1.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    vae.run(cfg, tmp_path / "run", resume=True)
    assert not any(p.exists() for p in leftovers)
    assert_same(tmp_path / "run", reference)


# --------------------------------------------------------------------------- 8. diffusion steps out of range

@pytest.mark.parametrize("t", [-1, 10])
def test_steps_outside_0_T_raise(t):
    a = torch.linspace(0, 1, 10)
    with pytest.raises((ValueError, IndexError, RuntimeError)):
        ddpm_solution.extract(a, torch.tensor([t]), (1, 3, 32, 32))
    with pytest.raises(RuntimeError, match="out of bounds"):
        Diffusion(10, 1e-4, 0.02)._at(a, torch.tensor([t]))


# --------------------------------------------------------------------------- 9. kill -9 anywhere, e2e

def kill_when(args: list[str], ready, timeout: float = 300) -> None:
    """Start the CLI, SIGKILL it as soon as ready() holds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "experiments", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def resume(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "experiments", *args, "--resume"], cwd=ROOT, env=env, check=True,
                   capture_output=True)


@pytest.mark.e2e
@pytest.mark.parametrize("problem", ["ddpm", "simsiam"])
def test_resume_after_kill_9(tmp_path, problem):
    epochs = 3 if problem == "ddpm" else 6
    shorter = ["--timesteps", "10"] if problem == "ddpm" else []  # T = 10: the kill is about the loop, not sampling
    args = smoke_args(tmp_path, "--epochs", str(epochs), *shorter, problem=problem)
    kill_when(args, lambda: len(read_metrics(tmp_path / "run")) >= 2)
    killed_at = len(read_metrics(tmp_path / "run"))
    assert 2 <= killed_at < epochs, "the run was not killed mid-way"
    resume(args)
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == list(range(1, epochs + 1))
    assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.e2e
def test_resume_after_kill_9_in_the_final_evaluation(tmp_path):
    args = smoke_args(tmp_path, "--epochs", "2")
    artifacts = tmp_path / "run" / "artifacts"
    kill_when(args, lambda: (artifacts / "final_samples.pt").exists())
    assert not (tmp_path / "run" / "summary.json").exists(), "the run was not killed in its final evaluation"
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2
    resume(args)
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2]
    assert cli.main(smoke_args(tmp_path, "--epochs", "2", out="straight")) == 0
    got, want = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("run", "straight"))
    assert got["test_log_likelihood_nats"] == want["test_log_likelihood_nats"]
