"""The report build as a user runs it: interrupted during LaTeX, two at once, --results missing, empty or relative.

Each test builds a copy of report/ (code and LaTeX) in its own folder, so that `python -m report.build` writes
report/build/ and report.pdf there: the run folders are the fake ones of tests/test_report.py.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.harness.lock import RunLock
from report import build as build_module
from report.latex import escape
from tests.conftest import ROOT
from tests.test_report import complete_results, tex_figures, vae_run

needs_latex = pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("pdflatex") is None,
                                 reason="latexmk/pdflatex not installed (bash scripts/install_latex.sh)")


def report_copy(where: Path, *, first_page: bool = False) -> Path:
    """A copy of report/ in where/report (report.tex cut after its first page when `first_page`); `where`."""
    shutil.copytree(ROOT / "report", where / "report",
                    ignore=shutil.ignore_patterns("build", "report.pdf", "__pycache__", "student.tex",
                                                  "observations.tex"))
    if first_page:
        tex = (where / "report" / "report.tex").read_text()
        (where / "report" / "report.tex").write_text(tex[:tex.index("\\clearpage")] + "\\end{document}\n")
    return where


def start_build(work: Path, *args: str, cwd: Path | None = None, script: bool = False) -> subprocess.Popen:
    """`python -m report.build ARGS` on the copy in `work` (or scripts/build_report.sh there), started in `cwd`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = (["bash", str(work / "scripts" / "build_report.sh")] if script
               else [sys.executable, "-m", "report.build"])
    if not script and cwd is not None:
        env["PYTHONPATH"] = f"{work}{os.pathsep}{ROOT}"
    return subprocess.Popen([*command, *args], cwd=cwd or work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def build(work: Path, *args: str, **kw) -> tuple[int, str, str]:
    process = start_build(work, *args, **kw)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def pdflatex_in(folder: Path) -> list[int]:
    """PIDs of the pdflatex processes working in `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if entry.name.isdigit() and argv[0].endswith(b"pdflatex") and os.readlink(entry / "cwd") == str(folder):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def interrupt_during_latex(work: Path, stop) -> tuple[int, str]:
    """Start a full build and, once pdflatex runs, call stop(build process, pdflatex PIDs); (exit code, stderr)."""
    process = start_build(work, "--results", "results")
    deadline = time.monotonic() + 120
    while not (pids := pdflatex_in(work / "report")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pids, "pdflatex never started"
    stop(process, pids)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def one_line(err: str) -> str:
    """The one line of a message on stderr (after the build's notes and its name/ID placeholder warnings), checking
    there is no traceback."""
    lines = [line for line in err.strip().splitlines() if not line.startswith(("note: ", "warning: "))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.e2e
@needs_latex
@pytest.mark.parametrize("how", ["ctrl-c", "kill pdflatex"])
def test_a_build_interrupted_during_latex_leaves_report_pdf_and_the_next_build_working(tmp_path, how):
    work = report_copy(tmp_path, first_page=True)
    vae_run(work / "results")
    (work / "report" / "report.pdf").write_bytes(b"the previous report")

    def stop(process, pids):
        if how == "ctrl-c":
            process.send_signal(signal.SIGINT)
        else:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)

    code, err = interrupt_during_latex(work, stop)
    line = one_line(err)
    assert code != 0 and "report.pdf is unchanged" in line
    assert line.startswith("interrupted:" if how == "ctrl-c" else "error: latexmk stopped")
    assert (work / "report" / "report.pdf").read_bytes() == b"the previous report"
    assert not pdflatex_in(work / "report")  # Ctrl-C stops LaTeX too
    code, out, err = build(work, "--results", "results")
    assert code == 0, err
    assert (work / "report" / "report.pdf").read_bytes().startswith(b"%PDF")
    assert not list((work / "report").glob(".report.pdf.*"))  # no temp file of the atomic copy is left


def test_a_second_build_waits_for_the_first(tmp_path):
    work = report_copy(tmp_path)
    vae_run(work / "results", figures=tex_figures()["vae"])
    with RunLock(work / "report" / "build"):  # a build in progress
        second = start_build(work, "--results", "results", "--no-pdf")
        time.sleep(2)
        assert second.poll() is None, second.communicate()
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0 and "waiting for the report build of process" in err
    assert (work / "report" / "build" / "figures" / "vae").is_dir()


@pytest.mark.e2e
def test_concurrent_builds_all_succeed(tmp_path):
    work = report_copy(tmp_path)
    complete_results(work / "results", figures=True)
    builds = [start_build(work, "--results", "results", "--no-pdf") for _ in range(3)]
    for process in builds:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in err, err
    assert sorted(p.name for p in (work / "report" / "build" / "figures").iterdir())
    assert not (work / "report" / "build" / ".lock").exists()


def test_a_missing_or_empty_results_folder_is_refused_and_report_pdf_kept(tmp_path):
    work = report_copy(tmp_path)
    (work / "report" / "report.pdf").write_bytes(b"the previous report")
    code, _, err = build(work, "--results", str(tmp_path / "absent"))
    assert code == 2 and f"--results {tmp_path / 'absent'} is not a folder" in one_line(err)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a run")
    code, _, err = build(work, "--results", str(tmp_path / "empty"))
    line = one_line(err)
    assert code == 2 and "holds no run folder" in line and "vae-<preset>" in line
    assert (work / "report" / "report.pdf").read_bytes() == b"the previous report"
    assert not (work / "report" / "build" / "numbers.tex").exists()


def test_a_relative_results_folder_is_the_callers(tmp_path):
    """scripts/build_report.sh changes to the repository root; --results and --run stay relative to the caller."""
    work = report_copy(tmp_path)
    (work / "scripts").mkdir()
    for script in ("build_report.sh", "install_latex.sh"):
        shutil.copy(ROOT / "scripts" / script, work / "scripts" / script)
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / ".venv" / "bin" / "python").symlink_to(sys.executable)
    caller = tmp_path / "elsewhere"
    vae_run(caller / "mine", "vae-smoke")
    vae_run(work / "results", "vae-full")  # the repository's results/: not what was asked for
    if shutil.which("latexmk") is None:
        pytest.skip("build_report.sh installs LaTeX first")
    code, out, err = build(work, "--results", "mine", "--no-pdf", cwd=caller, script=True)
    assert code == 0, err
    assert str(caller / "mine" / "vae-smoke") in out and "results/vae-full" not in out
    code, out, err = build(work, "--results", "mine", "--run", "vae=mine/vae-smoke", "--no-pdf", cwd=caller,
                           script=True)
    assert code == 0 and str(caller / "mine" / "vae-smoke") in out, err


def test_a_missing_runs_command_writes_where_the_report_reads_from_the_runs_data(tmp_path):
    """Followed literally, the placeholder's command stays offline like the runs found, and writes under --results."""
    results = tmp_path / "my results"
    run = vae_run(results, "vae-smoke")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data": "synthetic", "data_root": "/data/a3"}))
    values = build_module.generate(results, {}, tmp_path / "build")["values"]
    expected = (f".venv/bin/python -m experiments ddpm --preset smoke --out '{results / 'ddpm-smoke'}' "
                "--data synthetic --data-root /data/a3")
    assert values["cmd-ddpm"] == escape(expected)


def test_runs_named_by_run_need_no_results_folder(tmp_path):
    work = report_copy(tmp_path)
    run = vae_run(tmp_path / "elsewhere")
    code, out, err = build(work, "--run", f"vae={run}", "--no-pdf")  # the default results/ does not exist
    assert code == 0 and str(run) in out, err
    code, _, err = build(work, "--results", "typo", "--run", f"vae={run}", "--no-pdf")
    assert code == 2 and f"--results {work / 'typo'} is not a folder" in one_line(err)
