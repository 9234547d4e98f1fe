"""The chapter "Four families on one yardstick": a flow, the VAE, the DDPM and a GAN side by side.

Reads the four runs' summary.json (the yardstick's fields, experiments.measurements.yardstick and
summaries.YardstickFields)
and writes what report/families.tex shows: one table row per family, the \\val keys of one paragraph per family,
and two figures drawn by experiments.measurements.yardstick from the run folders (only when it can be imported: the
report
itself imports neither torch nor matplotlib). Each sentence of a paragraph is chosen by the measured numbers
with the thresholds below, which the text states, so that it stays true on smoke runs.

Runs: the VAE and the DDPM are the report's slots vae and ddpm; the flow and the GAN are the latest folders
flow-<preset> and gan-<preset> under --results (experiments.presentation.names).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from experiments.presentation import names
from report.latex import escape, number, percent
from report.runs import RunFolder, finite, load_run, modified, scan
from report.wording import listing, significant

NO_LIKELIHOOD = "none: no likelihood"
BITS_SAME_WITHIN = 0.05      # bits/dim closer than this read "about the same"
FID_SAME_WITHIN = 0.10       # classifier-FIDs within 10% (relative) of each other read "about the same"
PR_GAP = 0.10                # precision and recall closer than this read "balanced"
JSD_SAME_WITHIN = 0.02       # JSD estimates (nats) closer than this read "about the same"
THRESHOLDS = {"bits": f"{BITS_SAME_WITHIN:g}", "fid": percent(FID_SAME_WITHIN, 0), "pr": f"{PR_GAP:g}",
              "jsd": f"{JSD_SAME_WITHIN:g}"}
DIVERGENCE = {
    "flow": "the forward Kullback-Leibler divergence $\\mathrm{KL}(p_\\text{data}\\,\\|\\,p_\\theta)$, exactly: "
            "its loss is the negative log-likelihood",
    "vae": "the forward Kullback-Leibler divergence $\\mathrm{KL}(p_\\text{data}\\,\\|\\,p_\\theta)$ through an "
           "upper bound on the negative log-likelihood (the negative ELBO)",
    "ddpm": "the forward Kullback-Leibler divergence $\\mathrm{KL}(p_\\text{data}\\,\\|\\,p_\\theta)$ through a "
            "(reweighted) variational bound, over many denoising steps",
    "gan": "the Jensen-Shannon divergence: at the optimal discriminator the discriminator's loss is "
           "$2\\log 2 - 2\\,\\mathrm{JSD}$, and the non-saturating generator loss then minimises "
           "$\\mathrm{KL}(p_G\\,\\|\\,p_\\text{data}) - 2\\,\\mathrm{JSD}$ (Arjovsky and Bottou, 2017), a reverse KL",
}


@dataclass
class Row:
    """One family's line of the table, from its summary (None: not measured)."""
    family: str
    bits_per_dim: float | None
    bits_per_dim_method: str          # how it was obtained, or NO_LIKELIHOOD for the GAN
    fid: float | None
    precision: float | None
    recall: float | None
    sharpness_ratio: float | None
    clear_digit_share: float | None
    jsd: float | None
    sample_seconds_64: float | None
    parameters: int | None
    train_flops_per_image: float | None
    fid_size: int | None = None
    classifier_accuracy: float | None = None


def bits_per_dim(family: str, summary) -> tuple[float | None, str]:
    """(bits/dim on the 8-bit scale, how it was obtained): the flow's exact value, the VAE's importance-sampled
    estimate, the DDPM's variational bound; the GAN has none (None, NO_LIKELIHOOD)."""
    if family == "gan":
        return None, NO_LIKELIHOOD
    if family == "flow":
        return summary.bits_per_dim, "exact"
    if family == "vae":
        return summary.test_bits_per_dim_8bit, f"importance-sampled, $K = {summary.ll_K}$"
    if family == "ddpm":
        bound = summary.bound
        return (bound.nll_bound.bits_per_dim if bound else None), "variational bound"
    raise ValueError(f"family must be one of {names.FAMILIES}, got {family!r}")


def row(family: str, summary) -> Row:
    """The table's row of a family's summary (VAESummary, DDPMSummary, FlowSummary or GANSummary)."""
    bpd, method = bits_per_dim(family, summary)
    obs, drs = summary.observations, summary.discriminator
    return Row(family=family, bits_per_dim=bpd, bits_per_dim_method=method, fid=summary.fid,
               precision=summary.precision, recall=summary.recall,
               sharpness_ratio=obs.samples.sharpness_ratio if obs else None,
               clear_digit_share=obs.samples.digits.confident_fraction if obs else None,
               jsd=drs.jsd.estimate if drs else None, sample_seconds_64=summary.sample_seconds_64,
               parameters=summary.parameters, train_flops_per_image=summary.train_flops_per_image,
               fid_size=summary.yardstick_size, classifier_accuracy=summary.classifier_test_accuracy)


def table_rows(summaries: dict[str, object]) -> list[Row]:
    """Rows in names.FAMILIES order for the families whose summary is given ({family: summary or None})."""
    return [row(family, summaries[family]) for family in names.FAMILIES if summaries.get(family) is not None]


def format_bits(r: Row) -> str:
    """The bits/dim cell: the value and how it was obtained, or what the family lacks (never a blank)."""
    if r.bits_per_dim is not None:
        return f"{number(r.bits_per_dim, '.2f')} ({r.bits_per_dim_method})"
    return NO_LIKELIHOOD if r.bits_per_dim_method == NO_LIKELIHOOD else "not measured"


# --------------------------------------------------------------------------- the table

def _cell(x: float | int | None, fmt: str) -> str:
    return "n/a" if x is None or not finite(x) else number(x, fmt)


def table(rows: list[Row], missing: dict[str, str]) -> str:
    """One booktabs row per family (names.FAMILIES order); a missing family's row names its command."""
    by_family = {r.family: r for r in rows}
    head = ["family", "bits/dim (8-bit)", "cl.-FID", "precision", "recall", "sharpness", "clear digits",
            "JSD (nats)", "64 samples", "parameters", "train GFLOP/img"]
    lines = [r"\begin{center}\footnotesize\resizebox{\linewidth}{!}{%", r"\begin{tabular}{@{}l" + "r" * 10 + "@{}}",
             r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for family in names.FAMILIES:
        title = escape(names.FAMILY_TITLES[family])
        r = by_family.get(family)
        if r is None:
            lines.append(title + r" & \multicolumn{10}{l}{\textbf{missing run}: \texttt{"
                         + escape(missing[family]) + r"}} \\")
            continue
        cells = [format_bits(r), _cell(r.fid, ".3g"), _cell(r.precision, ".2f"), _cell(r.recall, ".2f"),
                 _cell(r.sharpness_ratio, ".2f"),
                 percent(r.clear_digit_share, 0) if finite(r.clear_digit_share) else "n/a",
                 _cell(r.jsd, ".3f"),
                 f"{r.sample_seconds_64:.3g} s" if finite(r.sample_seconds_64) else "n/a",
                 f"{r.parameters / 1e6:.2f} M" if finite(r.parameters) else "n/a",
                 _cell(r.train_flops_per_image / 1e9 if finite(r.train_flops_per_image) else None, ".3g")]
        lines.append(title + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{center}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the paragraphs

SHORT = {"flow": "flow", "vae": "VAE", "ddpm": "DDPM", "gan": "GAN"}   # in running text: "the flow", "the VAE"


def _the(families: list[str]) -> str:
    return listing([f"the {SHORT[f]}" for f in families])


def peers(r: Row, rows: list[Row]) -> list[Row]:
    """The other rows whose FID and precision/recall compare with r's: the same number of images, and digit
    classifiers trained identically (the same test accuracy)."""
    return [o for o in rows if o.family != r.family and o.fid_size == r.fid_size
            and o.classifier_accuracy == r.classifier_accuracy]


def rank_phrase(value: float, others: dict[str, float], within: float, relative: bool, what: str) -> str:
    """Where `value` stands among the other families' values of a measure: "the lowest X", "the highest X" (with
    the families within the margin named), "about the same X as ...", or "between the others'"; within: the
    margin, relative to the larger value when `relative`. "" when there is nothing to compare with."""
    if not others:
        return ""
    margin = (lambda a: within * max(abs(a), abs(value))) if relative else (lambda a: within)
    above = [f for f, v in others.items() if v - value > margin(v)]     # families with a higher value
    below = [f for f, v in others.items() if value - v > margin(v)]
    ties = [f for f in others if f not in above + below]
    tied = f", with {_the(ties)} within the margin" if ties else ""
    if not above and not below:
        return f"about the same {what} as {_the(ties)}"
    if not below:
        return f"the lowest {what}{tied}"
    if not above:
        return f"the highest {what}{tied}"
    return f"a {what} between the others'"


def paragraph(r: Row, rows: list[Row]) -> str:
    """The family's paragraph: what it minimises, then each measurement's sentence chosen by the numbers."""
    others = [o for o in rows if o.family != r.family]
    sentences = [f"The {SHORT[r.family]} minimises {DIVERGENCE[r.family]}."]
    with_bits = {o.family: o.bits_per_dim for o in others if finite(o.bits_per_dim)}
    bits_rank = rank_phrase(r.bits_per_dim, with_bits, BITS_SAME_WITHIN, False, "bits/dim") \
        if finite(r.bits_per_dim) else ""
    if finite(r.bits_per_dim):
        sentences.append(f"Its bits/dim ({r.bits_per_dim_method}) is {number(r.bits_per_dim, '.2f')}"
                         + (f", {bits_rank} of the families that define one" if bits_rank else "") + ".")
    elif r.family == "gan":
        sentences.append("It defines no likelihood, so it has no bits/dim: the table says so, and the scatter "
                         "plot puts it on an axis line of its own.")
    fids = {o.family: o.fid for o in peers(r, rows) if finite(o.fid)}
    if finite(r.fid) and fids:
        fid_rank = rank_phrase(r.fid, fids, FID_SAME_WITHIN, True, "classifier-FID")
        group = "" if len(fids) == len(others) else f" (of the families it compares with: {_the(list(fids))})"
        if bits_rank.startswith("the lowest") and fid_rank.startswith("the highest"):
            sentences.append(f"It has the best bits/dim but the worst classifier-FID ({_g(r.fid)}){group}: a good "
                             "likelihood does not make good samples (Theis et al., 2016).")
        else:
            sentences.append(f"Its classifier-FID, {_g(r.fid)}, is {fid_rank}{group}.")
    elif finite(r.fid):
        sentences.append(f"Its classifier-FID is {_g(r.fid)}; no other family's was measured on as many images "
                         "with an identically trained classifier, so it is not ranked.")
    if finite(r.precision) and finite(r.recall):
        sentences.append(pr_sentence(r))
    if finite(r.jsd):
        jsds = {o.family: o.jsd for o in others if finite(o.jsd)}
        jsd_rank = rank_phrase(r.jsd, jsds, JSD_SAME_WITHIN, False, "estimate")
        sentences.append(f"Part III's discriminator puts the Jensen-Shannon divergence between its samples and test "
                         f"images at {number(r.jsd, '.3f')} nats (at most $\\log 2 \\approx 0.693$)"
                         + (f", {jsd_rank}" if jsd_rank else "") + ".")
    if finite(r.sample_seconds_64):
        fastest = min((o for o in rows if finite(o.sample_seconds_64)), key=lambda o: o.sample_seconds_64)
        ratio = r.sample_seconds_64 / max(fastest.sample_seconds_64, 1e-12)
        sentences.append(f"Drawing 64 images took {significant(r.sample_seconds_64)} s"
                         + (", the fastest of the four." if fastest.family == r.family else
                            f", {significant(ratio)} times as long as the fastest, the {SHORT[fastest.family]}."))
    return " ".join(sentences)


def pr_sentence(r: Row) -> str:
    """Precision against recall, and whether that is what the family's divergence predicts: forward KL
    penalises missing the data's mass (mode covering: recall at least precision); the GAN's reverse-KL term
    tolerates missing modes (mode seeking: precision at least recall)."""
    p, q = r.precision, r.recall
    measured = f"precision {number(p, '.2f')} and recall {number(q, '.2f')}"
    if p - q > PR_GAP:
        shape = ("a larger share of its samples lies on the data's manifold than of the test images on its "
                 "samples' manifold (precision above recall)")
    elif q - p > PR_GAP:
        shape = ("a larger share of the test images lies on its samples' manifold than of its samples on the "
                 "data's (recall above precision)")
    else:
        shape = "precision and recall are balanced"
    seeking = r.family == "gan"
    agrees = (p - q > PR_GAP or abs(p - q) <= PR_GAP) if seeking else (q - p > PR_GAP or abs(p - q) <= PR_GAP)
    predicted = ("a mode-seeking divergence predicts precision at least as high as recall" if seeking else
                 "forward KL is mode-covering and predicts recall at least as high as precision")
    return f"With {measured}, {shape}; {predicted}, and this run {'agrees' if agrees else 'does not'}."


def _g(x: float) -> str:
    return number(x, ".3g")


def comparability(rows: list[Row]) -> str:
    """Which families' FIDs, precisions and recalls compare (the same images, identically trained classifiers)."""
    groups: dict[tuple, list[str]] = {}
    for r in rows:
        groups.setdefault((r.fid_size, r.classifier_accuracy), []).append(r.family)
    if len(groups) == 1 and len(rows) == len(names.FAMILIES):
        return ("The four families' FIDs, precisions and recalls compare: each uses the same number of samples and "
                "test images, in the features of identically trained digit classifiers.")
    parts = [f"{_the(fams)} ({size} images each)" for (size, _), fams in groups.items() if len(fams) > 1]
    return ("Classifier-FID, precision and recall compare only between runs that use the same number of images and "
            "identically trained digit classifiers (the smoke presets differ in both); here "
            + ("that holds for " + "; and for ".join(parts) if parts else "no two runs share them")
            + ", and each paragraph ranks a FID only among the families it compares with.")


# --------------------------------------------------------------------------- the chapter

@dataclass
class Chapter:
    values: dict[str, str] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    table: str = ""


def family_runs(results: Path | None, runs: dict[str, RunFolder | None]) -> dict[str, RunFolder | None]:
    """The four families' runs: the report's vae and ddpm slots, the latest flow-* and gan-* under `results`."""
    found = {"vae": runs.get("vae"), "ddpm": runs.get("ddpm")}
    candidates = scan(results) if results else []
    for family in names.FAMILY_PROBLEMS:
        paths = [c.path for c in candidates if c.slot == family]
        found[family] = load_run(family, max(paths, key=modified)) if paths else None
    return {f: found[f] for f in names.FAMILIES}


def chapter(results: Path | None, runs: dict[str, RunFolder | None], build: Path, preset: str) -> Chapter:
    """Everything report/families.tex reads: \\val keys fam-*, the table, the figures families/*."""
    found = family_runs(results, runs)
    finished = {f: r.summary for f, r in found.items() if r is not None and r.summary is not None}
    rows = table_rows(finished)
    commands = {f: names.command(f, preset) for f in names.FAMILIES}
    missing = [f for f in names.FAMILIES if f not in finished]
    out = Chapter(table=table(rows, commands))
    v = out.values
    v["status-families"] = escape("needs a finished run of each family; missing or unfinished: "
                                  + ", ".join(missing) if missing else "could not be drawn")
    v["cmd-families"] = escape("; ".join(commands[f] for f in missing) or commands["flow"])
    for key, text in THRESHOLDS.items():
        v[f"fam-threshold-{key}"] = text
    for f in names.FAMILIES:
        r = next((x for x in rows if x.family == f), None)
        v[f"fam-par-{f}"] = paragraph(r, rows) if r else (
            f"No finished {escape(names.FAMILY_TITLES[f])} run was found; it is made by \\texttt{{"
            f"{escape(commands[f])}}}.")
        if found[f] is not None and found[f].dataset:
            v[f"fam-dataset-{f}"] = escape(found[f].dataset)
    v["fam-comparable"] = comparability(rows)
    out.figures = draw(found, rows, build)
    return out


def draw(found: dict[str, RunFolder | None], rows: list[Row], build: Path) -> dict[str, str]:
    """The sample grids and the FID / bits-per-dim scatter (experiments.measurements.yardstick), when it can be
    imported."""
    dirs = {f: (r.path if r is not None and (r.path / "artifacts" / "final_samples.pt").exists() else None)
            for f, r in found.items()}
    if not any(dirs.values()):
        return {}
    try:
        os.environ.setdefault("MPLBACKEND", "Agg")
        from experiments.measurements import yardstick
    except ImportError as e:
        print(f"note: the families' figures are not drawn, experiments.measurements.yardstick unavailable ({e})",
              file=sys.stderr)
        return {}
    folder = build / "figures" / "families"
    folder.mkdir(parents=True, exist_ok=True)
    points = {r.family: (r.bits_per_dim, r.fid) for r in rows if finite(r.fid)}
    jobs = [("grids", lambda: yardstick.sample_grids(dirs, folder))]
    if points:
        jobs.append(("fid-vs-bits", lambda: yardstick.fid_against_bits(points, folder)))
    drawn = {}
    for name, job in jobs:
        try:
            path = job()
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
            print(f"note: the families' {name} figure is not drawn ({e})", file=sys.stderr)
            continue
        drawn[f"families/{path.stem}"] = path.relative_to(build.parent).as_posix()
    return drawn
