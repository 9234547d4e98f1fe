"""The report's figures: each run's PNGs copied to build/figures/<slot>/, and the figures drawn across
runs with experiments.presentation.figures (the DDPM T study, the SimSiam comparisons), when it can be imported."""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from experiments.presentation import names
from report.latex import escape
from report.runs import SIMSIAM_SLOTS, RunFolder

T_STUDY = ("ddpm-Tlow", "ddpm", "ddpm-Thigh")


def figure_file(name: str) -> str:
    """A copied figure's file name: no underscores (safe in any LaTeX path)."""
    return name.replace("_", "-")


def copy_figures(runs: dict[str, RunFolder | None], build: Path) -> dict[str, str]:
    """Copy each run's figures/*.png to build/figures/<slot>/; {slot/name: path relative to report/}."""
    figures = {}
    for slot, run in runs.items():
        if run is None:
            continue
        for png in sorted((run.path / "figures").glob("*.png")):
            target = build / "figures" / slot / figure_file(png.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, target)
            figures[f"{slot}/{png.stem}"] = target.relative_to(build.parent).as_posix()
    return figures



def cross_status(runs: dict[str, RunFolder | None], values: dict[str, str]) -> None:
    """status-/cmd- values of the pseudo-slots tstudy and simsiam: what a cross-run figure lacks."""
    missing = [s for s in T_STUDY if runs.get(s) is None or not runs[s].finished]
    values["status-tstudy"] = escape(f"needs finished DDPM runs with several T; missing or unfinished: "
                                     f"{', '.join(missing)}" if missing else "could not be drawn")
    values["cmd-tstudy"] = "; ".join(values[f"cmd-{s}"] for s in missing) or values["cmd-ddpm"]
    found = [s for s in SIMSIAM_SLOTS if runs.get(s) is not None]
    values["status-simsiam"] = escape("no SimSiam run folder with a monitored epoch found" if not found
                                      else "could not be drawn")
    values["cmd-simsiam"] = ("; ".join(values[f"cmd-{s}"] for s in SIMSIAM_SLOTS if s not in found)
                             or values[f"cmd-simsiam-{names.BASELINE}"])


def cross_figures(runs: dict[str, RunFolder | None], build: Path, values: dict[str, str]) -> dict[str, str]:
    """The figures drawn across runs with experiments.presentation.figures: the T study (2.3a) and the SimSiam
    comparisons (Q4, Q5). Sets status-/cmd- values of the pseudo-slots tstudy and simsiam."""
    out = build / "figures" / "cross"
    cross_status(runs, values)
    t_done = [runs[s] for s in T_STUDY if runs.get(s) is not None and runs[s].finished]
    s_runs = [runs[s] for s in SIMSIAM_SLOTS if runs.get(s) is not None]
    jobs: list[tuple[str, Callable]] = []
    if len(t_done) >= 2:
        jobs.append(("tstudy", lambda f: [f.ddpm_timesteps([r.path for r in t_done], out)]))
    usable = [r for r in s_runs if any("knn_accuracy" in m for m in r.metrics)]
    if usable:
        jobs.append(("simsiam", lambda f: f.simsiam_comparisons([r.path for r in usable], out)))
    if not jobs:
        return {}
    try:
        os.environ.setdefault("MPLBACKEND", "Agg")
        from experiments.presentation import figures as drawing
    except ImportError as e:
        print(f"note: cross-run figures not drawn, experiments.presentation.figures unavailable ({e})", file=sys.stderr)
        return {}
    figures: dict[str, str] = {}
    for name, draw in jobs:
        try:
            paths = draw(drawing)
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
            print(f"note: {name} figure(s) not drawn ({e})", file=sys.stderr)
            continue
        for path in paths:
            target = path.with_name(figure_file(path.name))
            path.replace(target)
            figures[f"{name}/{path.stem}"] = target.relative_to(build.parent).as_posix()
    return figures
