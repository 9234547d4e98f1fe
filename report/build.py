"""Build the report: find the run folders, turn their numbers into LaTeX macros, copy their
figures, then compile report.tex to report/report.pdf.

    python -m report.build [--results DIR] [--run SLOT=FOLDER ...] [--preset full|smoke] [--no-pdf]

Run from the repository root (scripts/build_report.sh does; relative --results and --run folders are
read from the directory it was started in). A build holds report/build/.lock throughout: a second
build on the same checkout waits for it. A folder that holds no run is refused (a report of
placeholders only would replace report.pdf); report.pdf is replaced atomically, and a build
interrupted (Ctrl-C, kill) leaves it as it was and the next build working. The work is split by job:
report.runs finds and reads the run folders, report.numbers computes the values the text
reads, report.figures copies and draws the figures, report.latex writes the LaTeX.

What it reads, per run folder (see experiments/harness/runs.py): config.json, provenance.json,
metrics.jsonl, summary.json, figures/*.png, and for Problem 1.3(e) one artifact
(latent_profiles.pt). It never writes into a run folder.

What it writes, under report/build/ (git-ignored, rebuilt each time):
    numbers.tex      \\setval{key}{value} for every number, name and command the text uses;
                     report.tex reads a value with \\val{key}, which shows a visible
                     "[missing: key]" box when the build could not produce it
    figures.tex      \\setfig{slot/name}{path} for every figure copied; \\fig{slot}{name}{caption}
                     shows a framed placeholder naming the command that produces a missing one
    provenance.tex   the first-page table: dataset, hardware, wall-clock and status of each run
    tables.tex       the tables of the practical part (latent peaks, samples compared, T study,
                     SimSiam ablations)
    student.tex      the title page's \\studentname / \\studentid from A3_STUDENT_NAME / A3_STUDENT_ID when
                     set; they override report/student.tex (written by hand, git-ignored; see
                     report/student.example.tex). A field set by neither shows a placeholder saying how to fill it.
    figures/<slot>/  the PNGs, copied (stable paths), and the cross-run figures drawn by
                     experiments.presentation.figures (DDPM T study, SimSiam comparisons)

Slots: one per experiment the report uses. Under --results (default results/) a slot takes the
most recently modified folder whose name matches its run name (experiments.presentation.names), any preset:
    vae                  vae-<preset>
    ddpm                 ddpm-<preset>
    ddpm-Tlow/ddpm-Thigh ddpm-<p>-T<T> of the main DDPM run's preset p, T below/above its T
                         (preferring T/2 and 3T/2, the runs `python -m experiments all` makes)
    simsiam-<ablation>   simsiam-<preset>-<ablation>[-<backbone>]
--run SLOT=FOLDER names a slot's folder explicitly.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.harness.lock import LOCK, RunLock, RunLockedError, owner_of
from experiments.presentation import names
from report import families, latex
from report.figures import copy_figures, cross_figures
from report.numbers import compute_numbers, vae_artifact_numbers
from report.runs import SLOTS, load_run, select_runs

REPORT = Path(__file__).resolve().parent
ROOT = REPORT.parent
BUILD = REPORT / "build"


def generate(results: Path | None, overrides: dict[str, Path], build: Path = BUILD,
             preset: str | None = None) -> dict[str, Any]:
    """Write build/{numbers,figures,provenance,tables,student}.tex and build/figures/ from the run folders.
    Returns {"runs": {slot: RunFolder | None}, "values": {...}, "figures": {...}}."""
    paths = select_runs(results, overrides)
    runs = {slot: (load_run(slot, path) if path is not None else None) for slot, path in paths.items()}
    if preset is None:
        presets = {r.config.get("preset") for r in runs.values() if r is not None} - {None}
        preset = presets.pop() if len(presets) == 1 else "full"
    if (build / "figures").exists():
        shutil.rmtree(build / "figures")  # no figure of an earlier build survives
    build.mkdir(parents=True, exist_ok=True)
    values = compute_numbers(runs, preset, results)
    figures = copy_figures(runs, build)
    figures.update(cross_figures(runs, build, values))
    latent_rows = vae_artifact_numbers(values, runs.get("vae"))
    tables = {"tstudy": latex.tstudy_table(runs), "simsiam": latex.simsiam_table(runs),
              "observations": latex.observations_table(runs)}
    if latent_rows:
        tables["latent"] = latex.latent_table(latent_rows)
    chapter = families.chapter(results, runs, build, preset)   # "Four families on one yardstick"
    values.update(chapter.values)
    figures.update(chapter.figures)
    tables["families"] = chapter.table
    latex.write_build(build, values, figures, latex.provenance_table(runs, values), tables,
                      latex.student_tex(os.environ))
    return {"runs": runs, "values": values, "figures": figures}


def compile_pdf(report: Path = REPORT) -> Path:
    """latexmk -pdf report.tex (aux files in build/latex/), then report/report.pdf replaced atomically.

    build/latex/ is reused only after a build that succeeded (it then holds COMPLETE): one interrupted or
    failed leaves latexmk's bookkeeping remembering the error, so the next build starts LaTeX afresh.
    latexmk runs in its own process group, stopped whole (pdflatex too) when the build is interrupted."""
    latexmk = shutil.which("latexmk")
    if latexmk is None or shutil.which("pdflatex") is None:
        raise FileNotFoundError("latexmk/pdflatex not found: run `bash scripts/build_report.sh`, which installs "
                                "them (apt-get: texlive-latex-base texlive-latex-recommended texlive-latex-extra "
                                "latexmk)")
    outdir = report / "build" / "latex"
    if outdir.exists() and not (outdir / COMPLETE).exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / COMPLETE).unlink(missing_ok=True)
    code, output = run_group([latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
                              f"-outdir={outdir.relative_to(report)}", "report.tex"], report)
    if code != 0:
        log = outdir / "report.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else output.splitlines()
        if not any(line.startswith("!") or LATEX_ERROR.match(line) for line in lines):
            raise RuntimeError(f"latexmk stopped (exit {code}) without a LaTeX error in {log}: was LaTeX killed? "
                               f"{report / 'report.pdf'} is unchanged; run the build again")
        tail = "\n".join(lines[-40:])
        raise RuntimeError(f"latexmk failed (exit {code}); end of {log}:\n{tail}")
    pdf = report / "report.pdf"
    replace_file(outdir / "report.pdf", pdf)
    (outdir / COMPLETE).touch()
    return pdf


COMPLETE = ".complete"  # in build/latex/: the last build there succeeded
LATEX_ERROR = re.compile(r"^[^:\s]+:\d+: ")  # -file-line-error's "file:line: message"


def run_group(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run `command` in a new process group; (exit code, stdout and stderr). Any exception while waiting (Ctrl-C,
    SIGTERM) kills the whole group first, so that no pdflatex goes on writing into build/latex/."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace", start_new_session=True)
    try:
        output, _ = process.communicate()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process.returncode, output


def replace_file(source: Path, target: Path) -> None:
    """Copy `source` over `target` atomically (a temp file beside it, then a rename), with the umask's permissions:
    `target` is either the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
        with os.fdopen(fd, "wb") as f, open(source, "rb") as src:
            shutil.copyfileobj(src, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def build_lock(build: Path):
    """Hold build/.lock (experiments.harness.lock, as a run folder's) for a whole build; a second build on the same
    checkout waits for the first to finish (a lock whose build died is taken over)."""
    lock = RunLock(build)
    waiting = False
    while True:
        try:
            lock.acquire()
            break
        except RunLockedError:
            if not waiting:
                owner = owner_of(build) or {}
                print(f"waiting for the report build of process {owner.get('pid', '?')} to finish ({build / LOCK})",
                      file=sys.stderr)
                waiting = True
            time.sleep(0.5)
    try:
        yield
    finally:
        lock.release()


def resolve(folder: str, base: Path) -> Path:
    """`folder` as the caller meant it: relative to `base`, the directory the build was started from
    (scripts/build_report.sh passes it as $A3_CALLER_DIR, as it changes to the repository root)."""
    return (base / Path(folder).expanduser()).absolute()


def check_results(results: Path, paths: dict[str, Path | None], *, given: bool = True) -> None:
    """Refuse a --results folder that does not exist (when `given`: the default results/ may be absent when --run
    names the runs) or when no run folder was found in it nor given by --run: a report of placeholders only
    would silently replace report.pdf."""
    expected = ("run folders named vae-<preset>, ddpm-<preset>[-T<T>], simsiam-<preset>-<ablation> (written by "
                f"`{names.PYTHON} -m experiments ...`, default --out results/<run name>)")
    if not results.is_dir() and (given or not any(paths.values())):
        raise ValueError(f"--results {results} is not a folder; expected the folder holding your {expected}")
    if not any(paths.values()):
        raise ValueError(f"--results {results} holds no run folder; expected {expected}; pass --results with the "
                         "folder that holds them, or --run SLOT=FOLDER")


def parse_overrides(items: list[str], base: Path | None = None) -> dict[str, Path]:
    """{slot: folder} from --run SLOT=FOLDER items, each folder relative to `base` (default: the current one)."""
    overrides = {}
    for item in items:
        slot, sep, folder = item.partition("=")
        if not sep or not slot or not folder:
            raise ValueError(f"--run expects SLOT=FOLDER (e.g. ddpm=results/ddpm-full), got {item!r}")
        path = resolve(folder, base) if base is not None else Path(folder)
        if not path.is_dir():
            raise ValueError(f"--run {slot}={folder}: {path} is not a folder")
        overrides[slot] = path
    return overrides



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m report.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=None, help="folder holding the run folders (default: results/ of the "
                        "repository); a relative one is read from the directory the build was started in")
    parser.add_argument("--run", action="append", default=[], metavar="SLOT=FOLDER",
                        help=f"use FOLDER for SLOT (one of: {', '.join(SLOTS)}); repeatable")
    parser.add_argument("--preset", default=None, help="preset named in the commands of placeholders "
                        "(default: the preset of the runs found, else full)")
    parser.add_argument("--no-pdf", action="store_true", help="write report/build/ only, do not run LaTeX")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)  # a kill stops LaTeX and leaves report.pdf as it was, as Ctrl-C does
    base = Path(os.environ.get("A3_CALLER_DIR") or os.getcwd())
    try:
        with build_lock(BUILD):
            return build(resolve(args.results, base) if args.results else ROOT / "results",
                         parse_overrides(args.run, base), args.preset, pdf=not args.no_pdf,
                         given=args.results is not None)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        print(f"interrupted: {REPORT / 'report.pdf'} is unchanged; the next build starts LaTeX afresh",
              file=sys.stderr)
        return 130


def build(results: Path, overrides: dict[str, Path], preset: str | None, *, pdf: bool, given: bool = True) -> int:
    """One build, under the build folder's lock: check the runs (given: whether --results was), generate build/,
    compile report.pdf."""
    check_results(results, select_runs(results, overrides), given=given)
    built = generate(results, overrides, BUILD, preset)
    for warning in latex.student_warnings(os.environ, REPORT):  # the title page's name and student ID
        print(f"warning: {warning}", file=sys.stderr)
    for slot, run in built["runs"].items():
        print(f"{slot:22s} {run.path if run else 'missing: ' + built['values'][f'cmd-{slot}']}")
    if pdf:
        print(f"report: {compile_pdf(REPORT)}")
    return 0


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
