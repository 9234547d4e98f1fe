"""Build the report: find the run folders, turn their numbers into LaTeX macros, copy their
figures, then compile report.tex to report/report.pdf.

    python -m report.build [--results DIR] [--run SLOT=FOLDER ...] [--preset full|smoke] [--no-pdf]

Run from the repository root (scripts/build_report.sh does). The work is split by job:
report.runs finds and reads the run folders, report.numbers computes the values the text
reads, report.figures copies and draws the figures, report.latex writes the LaTeX.

What it reads, per run folder (see experiments/runs.py): config.json, provenance.json,
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
                     experiments.figures (DDPM T study, SimSiam comparisons)

Slots: one per experiment the report uses. Under --results (default results/) a slot takes the
most recently modified folder whose name matches its run name (experiments.names), any preset:
    vae                  vae-<preset>
    ddpm                 ddpm-<preset>
    ddpm-Tlow/ddpm-Thigh ddpm-<p>-T<T> of the main DDPM run's preset p, T below/above its T
                         (preferring T/2 and 3T/2, the runs `python -m experiments all` makes)
    simsiam-<ablation>   simsiam-<preset>-<ablation>[-<backbone>]
--run SLOT=FOLDER names a slot's folder explicitly.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from report import latex
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
    values = compute_numbers(runs, preset)
    figures = copy_figures(runs, build)
    figures.update(cross_figures(runs, build, values))
    latent_rows = vae_artifact_numbers(values, runs.get("vae"))
    tables = {"tstudy": latex.tstudy_table(runs), "simsiam": latex.simsiam_table(runs),
              "observations": latex.observations_table(runs)}
    if latent_rows:
        tables["latent"] = latex.latent_table(latent_rows)
    latex.write_build(build, values, figures, latex.provenance_table(runs, values), tables,
                      latex.student_tex(os.environ))
    return {"runs": runs, "values": values, "figures": figures}


def compile_pdf(report: Path = REPORT) -> Path:
    """latexmk -pdf report.tex (aux files in build/latex/), then copy the PDF to report/report.pdf."""
    latexmk = shutil.which("latexmk")
    if latexmk is None or shutil.which("pdflatex") is None:
        raise FileNotFoundError("latexmk/pdflatex not found: run `bash scripts/build_report.sh`, which installs "
                                "them (apt-get: texlive-latex-base texlive-latex-recommended texlive-latex-extra "
                                "latexmk)")
    outdir = report / "build" / "latex"
    outdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
                           f"-outdir={outdir.relative_to(report)}", "report.tex"],
                          cwd=report, capture_output=True, text=True)
    if done.returncode != 0:
        log = outdir / "report.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else done.stdout[-4000:]
        raise RuntimeError(f"latexmk failed (exit {done.returncode}); end of {log}:\n{tail}")
    pdf = report / "report.pdf"
    shutil.copyfile(outdir / "report.pdf", pdf)
    return pdf



def parse_overrides(items: list[str]) -> dict[str, Path]:
    overrides = {}
    for item in items:
        slot, sep, folder = item.partition("=")
        if not sep or not slot or not folder:
            raise ValueError(f"--run expects SLOT=FOLDER (e.g. ddpm=results/ddpm-full), got {item!r}")
        if not Path(folder).is_dir():
            raise ValueError(f"--run {slot}={folder}: {folder} is not a folder")
        overrides[slot] = Path(folder)
    return overrides



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m report.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(ROOT / "results"), help="folder holding the run folders")
    parser.add_argument("--run", action="append", default=[], metavar="SLOT=FOLDER",
                        help=f"use FOLDER for SLOT (one of: {', '.join(SLOTS)}); repeatable")
    parser.add_argument("--preset", default=None, help="preset named in the commands of placeholders "
                        "(default: the preset of the runs found, else full)")
    parser.add_argument("--no-pdf", action="store_true", help="write report/build/ only, do not run LaTeX")
    args = parser.parse_args(argv)
    try:
        built = generate(Path(args.results), parse_overrides(args.run), BUILD, args.preset)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for warning in latex.student_warnings(os.environ, REPORT):  # the title page's name and student ID
        print(f"warning: {warning}", file=sys.stderr)
    for slot, run in built["runs"].items():
        print(f"{slot:22s} {run.path if run else 'missing: ' + built['values'][f'cmd-{slot}']}")
    if args.no_pdf:
        return 0
    try:
        pdf = compile_pdf(REPORT)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"report: {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
