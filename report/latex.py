"""Writing LaTeX: text made literal, numbers for running text, and the generated tables.

What report.tex reads from report/build/ (see report.build): numbers.tex (\\setval), figures.tex
(\\setfig), provenance.tex (the first-page table), tables.tex (\\settable) and student.tex (the title page's
name and student ID, from the environment).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.presentation import names
from report.runs import SIMSIAM_SLOTS, SLOTS, RunFolder, ablation_of, problem_of

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                   "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}", "<": r"\textless{}", ">": r"\textgreater{}",
                   "|": r"\textbar{}"}



def escape(text: Any) -> str:
    """Any text (paths, device names, commands) as LaTeX that prints it literally (OT1 encoding)."""
    return "".join(_LATEX_SPECIALS.get(c, c) for c in str(text))



def number(x: float, fmt: str = ".1f") -> str:
    """A number for running text: format `fmt`, a real minus sign."""
    s = format(x, fmt)
    return "$-$" + s[1:] if s.startswith("-") else s



def percent(x: float, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage: 0.853 -> 85.3\\%."""
    return f"{100 * x:.{digits}f}\\%"



def duration(seconds: float) -> str:
    """42.1 s, 3.5 min, 2 h 05 min."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"



def compare(value: float, reference: float, *, higher: str = "higher than", lower: str = "lower than",
            tolerance: float = 0.0, same: str = "equal to") -> str:
    """The word that completes "value is ... reference"."""
    if abs(value - reference) <= tolerance:
        return same
    return higher if value > reference else lower



# --------------------------------------------------------------------------- tables

def breakable(latex: str) -> str:
    """LaTeX text (escaped) that may break after each / and each hyphen inside a word: long paths, folder names."""
    return re.sub(r"(/|(?<=\w)-(?=\w))", r"\1\\allowbreak{}", latex)



def _listing(title: str, items: list[tuple[str, str]]) -> str:
    """A small two-column list under a title, the text column wrapped at the margin: (label, LaTeX text) per item."""
    rows = "\n".join(r"\texttt{" + escape(label) + "} & " + text + r" \\" for label, text in items)
    return ("\n\\par\\smallskip{\\footnotesize\\noindent " + title + "\\\\[2pt]\n"
            "\\begin{tabularx}{\\linewidth}{@{}l>{\\raggedright\\arraybackslash}X@{}}\n"
            + rows + "\n\\end{tabularx}\\par}\n")



# Text columns of the provenance table: ragged right, wrapped; widths in proportion (they sum to 3).
_WRAP = r">{\raggedright\arraybackslash\hsize=%.2f\hsize}X"


def provenance_table(runs: dict[str, RunFolder | None], values: dict[str, str]) -> str:
    """The first-page table: per problem, one row per slot (dataset, hardware, epochs, wall-clock), its text
    columns wrapped to the text width; then a warning naming the runs that used the synthetic stand-in,
    the folders read, and the commands that produce the missing runs."""
    columns = "@{}" + _WRAP % 0.95 + _WRAP % 0.9 + _WRAP % 1.15 + "rr@{}"
    lines = [r"{\small\noindent\begin{tabularx}{\linewidth}{" + columns + "}", r"\toprule",
             r"run & dataset & hardware & epochs & wall-clock \\"]
    for problem, title in names.PROBLEM_TITLES.items():
        lines += [r"\midrule", r"\multicolumn{5}{@{}l}{\textbf{" + title + r"}} \\"]
        lines += [_provenance_row(slot, runs.get(slot), values) for slot in SLOTS if problem_of(slot) == problem]
    lines += [r"\bottomrule", r"\end{tabularx}\par}"]
    return "\n".join(lines) + "\n" + _provenance_notes(runs, values)


def _provenance_row(slot: str, run: RunFolder | None, values: dict[str, str]) -> str:
    name = r"\texttt{" + breakable(escape(slot)) + "}"
    if run is None:
        return f"{name} & " + r"\multicolumn{4}{l}{\textbf{missing} (command below)} \\"
    cells = [values.get(f"{slot}-{k}", r"\val{" + f"{slot}-{k}" + "}")
             for k in ("dataset", "hardware", "epochs", "wall")]
    if run.synthetic:
        cells[0] = r"\textbf{" + cells[0] + "}"
    note = values.get(f"{slot}-status", "unfinished")  # "finished", unless unfinished or trained at several rates
    status = "" if run.finished and note == "finished" else r"\newline\textit{(" + note + ")}"
    return f"{name}{status} & " + " & ".join(cells) + r" \\"


def _provenance_notes(runs: dict[str, RunFolder | None], values: dict[str, str]) -> str:
    """Below the table: the synthetic-data warning, the folders read, the commands of missing runs."""
    body = ""
    found = [slot for slot in SLOTS if runs.get(slot) is not None]
    synthetic = [slot for slot in found if runs[slot].synthetic]
    if synthetic:
        body += ("\n\\medskip\\noindent\\fbox{\\parbox{\\dimexpr\\linewidth-2\\fboxsep-2\\fboxrule\\relax}{"
                 "\\textbf{Synthetic stand-in data.} The runs "
                 + ", ".join(r"\texttt{" + escape(s) + "}" for s in synthetic)
                 + " used the synthetic stand-in dataset (house-number-like digits generated offline, "
                   "10 classes), not SVHN or CIFAR-10. Their figures and numbers are \\textbf{not} SVHN or "
                   "CIFAR-10 results; they only show that the pipeline runs end to end.}}\n")
    # The folders read and the missing runs' commands go to an appendix (report.tex prints \runfolders there),
    # so that the title page keeps to one page and the answer sheet is page 2.
    listings = ""
    if found:
        listings += _listing("Run folders read:", [
            (slot, r"\texttt{" + breakable(escape(runs[slot].path)) + "}"
             + "".join(r" \textit{(" + escape(p) + ")}" for p in runs[slot].problems)) for slot in found])
    missing = [slot for slot in SLOTS if runs.get(slot) is None]
    if missing:
        listings += _listing("Missing runs, and the commands that produce them:",
                             [(slot, r"\texttt{" + breakable(values[f"cmd-{slot}"]) + "}") for slot in missing])
        body += ("\n\\smallskip\\noindent\\textbf{" + str(len(missing)) + " of " + str(len(SLOTS))
                 + " runs are missing}: " + ", ".join(r"\texttt{" + escape(s) + "}" for s in missing)
                 + "; the commands that produce them are on page~\\pageref{app:folders}.\n")
    return body + "\n\\gdef\\runfolders{" + listings + "}\n"


def latent_table(rows: list[tuple[int, int, list[tuple[int, float]]]]) -> str:
    lines = [r"\begin{center}\small", r"\begin{tabular}{@{}rrl@{}}", r"\toprule",
             r"class & images & most class-specific latent dimensions (score) \\", r"\midrule"]
    for c, count, peaks in rows:
        lines.append(f"{c} & {count} & " + ", ".join(f"$z_{{{d}}}$ ({number(v, '+.2f')})" for d, v in peaks)
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{center}"]
    return "\n".join(lines)



def run_table(runs: dict[str, RunFolder | None], rows: list[tuple[str, str]], columns: list[tuple[str, str]],
              first: str) -> str:
    """A booktabs table, one row per (slot, label) in `rows` and one column per (key, heading):
    the cell of a present run reads \val{slot-key}; a missing run gets one cell saying so."""
    lines = [r"\begin{center}\small", r"\begin{tabular}{@{}l" + "r" * len(columns) + "@{}}", r"\toprule",
             f"{first} & " + " & ".join(h for _, h in columns) + r" \\", r"\midrule"]
    for slot, label in rows:
        head = r"\texttt{" + escape(label) + "}"
        if runs.get(slot) is None:
            lines.append(head + r" & \multicolumn{" + str(len(columns)) + r"}{l}{\textbf{missing run} "
                         r"(its command is on the first page)} \\")
        else:
            lines.append(head + " & " + " & ".join(r"\val{" + f"{slot}-{k}" + "}" for k, _ in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{center}"]
    return "\n".join(lines)



def tstudy_table(runs: dict[str, RunFolder | None]) -> str:
    """2.3(a): T, epochs, timings, classifier-FID, confidence and t* of the three DDPM runs."""
    columns = [("timesteps", "$T$"), ("epochs", "epochs"), ("train-seconds-per-epoch", "train time / epoch"),
               ("sample-seconds-per-image", "sampling s / image"), ("fid", "classifier-FID"),
               ("confidence", "mean confidence"), ("tstar", "$t^*$")]
    return run_table(runs, [(slot, slot) for slot in ("ddpm-Tlow", "ddpm", "ddpm-Thigh")], columns, "run")



def simsiam_table(runs: dict[str, RunFolder | None]) -> str:
    """Problem 3: batch, d, epochs, final and best kNN accuracy, collapse, linear probe, wall-clock per ablation."""
    columns = [("batch", "batch"), ("d", "$d$"), ("epochs", "epochs"), ("final-knn", "final kNN"),
               ("best-knn", "best kNN"), ("best-knn-epoch", "at epoch"), ("collapse-ratio", r"std$\cdot\sqrt{d}$"),
               ("linear-probe", "linear probe"), ("wall", "wall-clock")]
    return run_table(runs, [(slot, ablation_of(slot)) for slot in SIMSIAM_SLOTS], columns, "ablation")



def observations_table(runs: dict[str, RunFolder | None]) -> str:
    """2.2(d): the VAE's and the DDPM's final samples on the same statistics (experiments.measurements.observe)."""
    columns = [("obs-n", "samples"), ("obs-sharpness", "sharpness"), ("obs-confident", "clear digits"),
               ("obs-ref-confident", "test: clear"), ("obs-class-tv", "class TV"),
               ("obs-fid", "cl.-FID"), ("obs-fid-n", "FID images")]
    return run_table(runs, [("vae", "VAE"), ("ddpm", "DDPM")], columns, "model")


# --------------------------------------------------------------------------- files

def _setter(command: str, key: str, value: str) -> str:
    if "\n" in value:
        raise ValueError(f"value of {key!r} spans lines; values must be one line of LaTeX")
    return f"\\{command}{{{key}}}{{{value}}}"



# The title page's fields: environment variable -> the report.tex command that sets it.
STUDENT_FIELDS = {"A3_STUDENT_NAME": "studentname", "A3_STUDENT_ID": "studentid"}


def student_tex(environ: Mapping[str, str]) -> str:
    """\\studentname{...} / \\studentid{...} for each of A3_STUDENT_NAME / A3_STUDENT_ID set and not blank,
    printed literally on one line."""
    fields = {command: " ".join(environ.get(var, "").split()) for var, command in STUDENT_FIELDS.items()}
    return "".join(f"\\{command}{{{escape(value)}}}\n" for command, value in fields.items() if value)


def student_warnings(environ: Mapping[str, str], report: Path) -> list[str]:
    """A warning per title-page field left as a placeholder: set by neither the environment (A3_STUDENT_NAME,
    A3_STUDENT_ID) nor report/student.tex (which may still hold the example's values)."""
    handwritten = (report / "student.tex").read_text() if (report / "student.tex").exists() else ""
    example = (report / "student.example.tex").read_text() if (report / "student.example.tex").exists() else ""
    warnings = []
    for var, command in STUDENT_FIELDS.items():
        if " ".join(environ.get(var, "").split()):
            continue
        line = next((ln.strip() for ln in handwritten.splitlines() if ln.strip().startswith(f"\\{command}{{")), None)
        if line is None:
            warnings.append(f"the title page's {command} is a placeholder: set {var} or write report/student.tex "
                            "(see report/student.example.tex and the README)")
        elif line in example:
            warnings.append(f"report/student.tex still holds the example's {command} ({line}): put yours there")
    return warnings


def write_build(build: Path, values: dict[str, str], figures: dict[str, str], provenance: str,
                tables: dict[str, str], student: str = "") -> None:
    """build/{numbers,figures,provenance,tables,student}.tex: \\setval, \\setfig, the first-page table,
    \\settable, and the title page's fields (`student_tex`)."""
    header = "% Generated by report.build from the run folders; do not edit.\n"

    def setters(command: str, items: dict[str, str]) -> str:
        return "".join(_setter(command, k, v) + "\n" for k, v in sorted(items.items()))

    (build / "numbers.tex").write_text(header + setters("setval", values))
    (build / "figures.tex").write_text(header + setters("setfig", figures))
    (build / "provenance.tex").write_text(header + provenance)
    (build / "tables.tex").write_text(header + "".join(f"\\settable{{{name}}}{{%\n{text}}}\n"
                                                       for name, text in tables.items()))
    (build / "student.tex").write_text(header + student)
