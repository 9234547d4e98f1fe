"""Nothing silently wrong around the runs: option values that would exhaust memory, a finished run resumed with
another learning rate, a damaged data cache, the folders and files a run leaves, and the commands messages print.

The report build's faults (interrupted, concurrent, --results) are in tests/test_report_build.py.
"""
import dataclasses
import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from experiments.harness import data, loop, synthetic
from experiments.presentation import names
from experiments.problems import vae
from report import build
from tests.conftest import ROOT
from tests.test_faults import flip_bytes, refused, smoke_args, tiny

# Runs `code` after the imports with the address space capped at what they took plus 2 GiB: allocating in
# proportion to a huge option value raises MemoryError there instead of taking the machine's memory.
CAPPED = """
import resource, sys
from experiments import __main__ as cli
from experiments.harness import loop
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 2 ** 31, resource.RLIM_INFINITY))
"""


def run_capped(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CAPPED + code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


# --------------------------------------------------------------------------- options bounded, memory bounded

def test_a_huge_epochs_is_refused_in_one_line_before_any_allocation(tmp_path):
    done = run_capped("sys.exit(cli.main(sys.argv[1:]))", *smoke_args(tmp_path, "--epochs", "1000000000"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: --epochs must be an integer in [1, 10,000] (the presets train 2 to 100 epochs), got 1000000000"]
    assert not (tmp_path / "run").exists()


def test_snapshot_epochs_are_computed_lazily():
    done = run_capped("import itertools; s = loop.snapshot_epochs(5, 10 ** 12); "
                      "print(len(s), 10 ** 12 in s, 10 ** 12 - 1 in s, list(itertools.islice(s, 3)))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["200000000000", "True", "False", "[5,", "10,", "15]"]
    with pytest.raises(ValueError, match="snapshot_every must be an integer of at least 1"):
        loop.snapshot_epochs(0, 10)


# --------------------------------------------------------------------------- a finished run and --lr

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[vae.VAEConfig, Path]:
    """A tiny 1-epoch VAE run, finished, written with the umask 022."""
    tmp = tmp_path_factory.mktemp("finished")
    old = os.umask(0o022)
    try:
        cfg = tiny(tmp / "data", epochs=1)
        return cfg, vae.run(cfg, tmp / "run")
    finally:
        os.umask(old)


def test_resume_with_another_lr_never_changes_a_finished_runs_config(finished_run, tmp_path):
    cfg, original = finished_run
    run_dir = shutil.copytree(original, tmp_path / "run")
    kept = {name: (run_dir / name).read_bytes() for name in ("config.json", "provenance.json", "summary.json")}
    with pytest.raises(ValueError, match=r"has trained all its 1 epochs \(with lr 0.002\), so --lr 0.0002 would "
                                         r"train nothing.*add --epochs N \(N > 1\)"):
        vae.run(dataclasses.replace(cfg, lr=cfg.lr / 10), run_dir, resume=True)
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept

    # Extended by one epoch at a tenth of the rate: allowed, recorded, and the report names both rates.
    vae.run(dataclasses.replace(cfg, lr=cfg.lr / 10, epochs=2), run_dir, resume=True)
    changes = json.loads((run_dir / "provenance.json").read_text())["resume_changes"]
    assert changes == [{"after_epoch": 1, "changes": {"epochs": [1, 2], "lr": [0.002, 0.0002]}}]
    values = build.generate(None, {"vae": run_dir}, tmp_path / "build")["values"]
    assert values["vae-lr"] == "0.002 (epoch 1), then 0.0002 (epoch 2)"
    assert values["vae-status"] == "finished; trained at learning rate 0.002 (epoch 1), then 0.0002 (epoch 2)"
    assert "(finished; trained at learning rate 0.002 (epoch 1), then 0.0002 (epoch 2))" in (
        tmp_path / "build" / "provenance.tex").read_text()  # on the first page, beside the run


def test_a_finished_run_resumed_with_lr_by_an_older_version_names_the_rate_it_was_trained_at(finished_run, tmp_path):
    _, original = finished_run
    run_dir = shutil.copytree(original, tmp_path / "run")
    for name, edit in (("config.json", lambda c: {**c, "lr": 0.0002}),
                       ("provenance.json", lambda p: {**p, "resume_changes": [
                           {"after_epoch": 1, "changes": {"lr": [0.002, 0.0002]}}]})):
        (run_dir / name).write_text(json.dumps(edit(json.loads((run_dir / name).read_text()))))
    values = build.generate(None, {"vae": run_dir}, tmp_path / "build")["values"]
    assert values["vae-lr"] == "0.002" and values["vae-status"].endswith("trained at learning rate 0.002")


# --------------------------------------------------------------------------- files: modes, leftovers

def test_run_files_follow_the_umask(finished_run):
    _, run_dir = finished_run
    modes = {str(p.relative_to(run_dir)): p.stat().st_mode & 0o777 for p in run_dir.rglob("*")}
    assert modes and {m for p, m in modes.items() if (run_dir / p).is_file()} == {0o644}, modes
    assert {m for p, m in modes.items() if (run_dir / p).is_dir()} == {0o755}, modes


def test_a_refused_run_leaves_no_out_folder(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    out = tmp_path / "new" / "nested" / "run"
    err = refused(capsys, [*smoke_args(tmp_path), "--out", str(out), "--data-root", str(a_file / "data")])
    assert "--data-root" in err and not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder that existed before stays
    refused(capsys, [*smoke_args(tmp_path), "--out", str(tmp_path / "kept"), "--data-root", str(a_file / "data")])
    assert (tmp_path / "kept").is_dir()


def test_a_device_as_data_root_is_named_as_such(tmp_path, capsys):
    err = refused(capsys, smoke_args(tmp_path, "--data-root", "/dev/null"))
    assert "--data-root /dev/null is not a folder but a character device" in err and "File exists" not in err


def test_a_read_only_resume_folder_is_to_be_made_writable(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kw):
        if Path(dir) == out:  # as in a folder with mode 0o555, which root (running the tests) could write
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # the module harness.files writes through
    err = refused(capsys, [*smoke_args(tmp_path), "--resume"])
    assert f"--out {out} is not a writable folder (Permission denied); make it writable (chmod -R u+w {out})" in err


# --------------------------------------------------------------------------- commands in messages

def test_messages_print_the_command_that_continues_this_run(tmp_path, capsys, monkeypatch):
    def interrupted(cfg, out, *, resume):
        raise KeyboardInterrupt

    monkeypatch.setattr(vae, "run", interrupted)
    from experiments import __main__ as cli
    assert cli.main(smoke_args(tmp_path)) == 130
    expected = (f"{shlex.quote(names.interpreter())} -m experiments vae --preset smoke --out {tmp_path / 'run'} "
                f"--data synthetic --data-root {tmp_path / 'data'} --device cpu --resume")
    assert expected in capsys.readouterr().err
    monkeypatch.undo()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    err = refused(capsys, smoke_args(tmp_path))
    assert f"To continue it:\n  {expected}" in err


def test_the_interpreter_is_printed_as_typed(tmp_path, monkeypatch):
    python = tmp_path / ".venv" / "bin" / "python"
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.chdir(tmp_path)
    assert names.interpreter() == ".venv/bin/python"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert names.interpreter() == str(python)
    assert names.command("vae", "smoke", out="my runs/vae", data="synthetic").startswith(
        ".venv/bin/python -m experiments vae --preset smoke --out 'my runs/vae' --data synthetic")


# --------------------------------------------------------------------------- the synthetic data cache

@pytest.mark.parametrize("damage", ["flip", "truncate", "no checksum"])
def test_a_damaged_synthetic_cache_is_rebuilt_with_one_warning(tmp_path, monkeypatch, capsys, damage):
    monkeypatch.setenv("A3_SYNTHETIC_CACHE", str(tmp_path / "cache"))
    first = data.load_split("synthetic", "train", tmp_path, synthetic_size=200)
    (path,) = (tmp_path / "cache").glob("*.pt")
    if damage == "flip":  # size unchanged, in the images' bytes: torch.load reads it without complaint
        size = path.stat().st_size
        flip_bytes(path)
        assert path.stat().st_size == size
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:  # written before checksums
        torch.save({"images": first.images, "labels": first.labels}, path)
    capsys.readouterr()
    again = data.load_split("synthetic", "train", tmp_path, synthetic_size=200)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: the synthetic data cache {path} ")
    assert lines[0].endswith("; rendering it again")
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    data.load_split("synthetic", "train", tmp_path, synthetic_size=200)  # repaired: read without a word
    assert capsys.readouterr().err == ""


def test_a_smoke_run_renders_only_the_images_it_uses(tmp_path, monkeypatch):
    monkeypatch.setenv("A3_SYNTHETIC_CACHE", str(tmp_path / "cache"))
    cfg = vae.config_for("smoke", data="synthetic", data_root=str(tmp_path / "data"), device="cpu")
    train, test, provenance = data.load_train_test(cfg, "svhn")
    assert (len(train), len(test)) == (cfg.train_size, cfg.test_size) == (provenance["n_train"], provenance["n_test"])
    v = synthetic.VERSION
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        f"digits-v{v}-test-{cfg.test_size}-seed0.pt", f"digits-v{v}-train-{cfg.train_size}-seed0.pt"]
