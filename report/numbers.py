"""Computing the numbers the text reads: every \\val{key} of report.tex, as LaTeX, from the run folders.

Keys are <slot>-<name> (e.g. vae-ll-nats, simsiam-no-predictor-final-knn), p<problem>-<name> for a
problem, and status-<slot> / cmd-<slot> for what is missing and the command that produces it.
"""
from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments import names, summaries
from experiments.summaries import DDPMSummary, ProbeResult, SimSiamSummary, VAESummary
from report.latex import compare, duration, escape, number, percent
from report.runs import SLOTS, T_SLOTS, RunFolder, finite, problem_of, resume_command, slot_command

COLLAPSED_BELOW = 0.2   # collapse std x sqrt(d) under which a SimSiam run counts as collapsed
SAME_WITHIN = 0.5       # kNN accuracies closer than this many points are "about the same"
# Config fields the text quotes, as values <slot>-<field with hyphens> (e.g. vae-n-samples).
CONFIG_VALUES = ("batch_size", "lr", "z_dim", "timesteps", "dim", "beta_start", "beta_end", "n_samples",
                 "n_reconstructions", "n_final_samples", "snapshot_every", "preview_steps", "pred_dim",
                 "momentum", "weight_decay", "base_lr", "knn_temperature", "warmup_epochs")
REDRAW = {"vae": "vae_figures", "ddpm": "ddpm_figures", "simsiam": "simsiam_figures"}  # experiments.figures


def fix_command(slot: str, run: RunFolder | None, preset: str, main_timesteps: int | None) -> tuple[str, str]:
    """(status, command) for a slot: what is missing and the command that produces it."""
    if run is None:
        return "no run folder found", slot_command(slot, preset, main_timesteps)
    folder = str(run.path)
    if not run.finished:  # the same options as the run's config, in its folder
        return f"run folder {folder} is unfinished (no summary.json)", resume_command(slot, run, preset)
    function = REDRAW[problem_of(slot)]
    return (f"run folder {folder} is finished but lacks this figure",
            f"python -c \"from experiments import figures; figures.{function}('{folder}')\"")


# --------------------------------------------------------------------------- every run

def _common(values: dict[str, str], run: RunFolder) -> None:
    s = run.slot
    values[f"{s}-folder"] = escape(run.path)
    values[f"{s}-name"] = escape(run.path.name)
    values[f"{s}-status"] = "finished" if run.finished else escape(
        f"unfinished: epoch {run.epochs or 0} of {run.config.get('epochs', '?')}")
    if run.config.get("preset"):
        values[f"{s}-preset"] = escape(run.config["preset"])
    if run.dataset:
        values[f"{s}-dataset"] = escape(run.dataset)
    if run.hardware:
        values[f"{s}-hardware"] = escape(run.hardware)
    if run.epochs is not None:
        values[f"{s}-epochs"] = str(run.epochs)
    if finite(run.wall_seconds):
        values[f"{s}-wall"] = duration(run.wall_seconds)
        values[f"{s}-wall-seconds"] = f"{run.wall_seconds:.0f}"
    for key, metric, fmt in (("epoch-seconds", "epoch_seconds", duration),
                             ("train-seconds-per-epoch", "train_seconds", duration),
                             ("images-per-s", "images_per_s", lambda v: f"{v:,.0f}".replace(",", "\\,"))):
        value = run.median(metric)
        if value is not None:
            values[f"{s}-{key}"] = fmt(value)
    for key in CONFIG_VALUES:
        if finite(run.config.get(key)):
            values[f"{s}-{key.replace('_', '-')}"] = escape(run.config[key])
    if isinstance(run.config.get("backbone"), str):
        values[f"{s}-backbone"] = escape(run.config["backbone"])
    n_train, batch = run.provenance.get("n_train"), run.config.get("batch_size")
    if finite(n_train) and finite(batch) and batch > 0:
        values[f"{s}-steps-per-epoch"] = str(n_train // batch)  # drop_last, as every experiment's loader
    if finite(batch) and s.startswith("simsiam"):
        values[f"{s}-bn-over"] = batch_norm_over(batch, run.provenance.get("micro_batch") or batch)
    if run.provenance.get("fallback_reason"):
        values[f"{s}-fallback"] = escape(run.provenance["fallback_reason"])



def batch_norm_over(batch: int, micro_batch: int) -> str:
    """What SimSiam's batch norm normalised over: each view of the batch, or of each micro-batch when the
    batch ran as micro-batches with accumulated gradients (experiments.memory)."""
    if micro_batch >= batch:
        return f"the {batch} images of each view of the whole batch"
    return (f"the {micro_batch} images of each view of a micro-batch (the batch of {batch} ran as "
            f"{batch // micro_batch} micro-batches whose gradients were accumulated, as per-GPU batch norm "
            "without SyncBN does)")



def _snapshot_epochs(run: RunFolder, kind: str) -> str | None:
    folder = run.path / "artifacts" / kind
    epochs = sorted(int(m[1]) for p in folder.glob("epoch_*.pt") if (m := re.fullmatch(r"epoch_(\d+)\.pt", p.name)))
    return ", ".join(map(str, epochs)) if epochs else None



def _putter(values: dict[str, str], prefix: str) -> Callable[[str, Any, Callable[[Any], str]], None]:
    """put(key, value, format): values[prefix-key] = format(value) when the value is there (not None) and finite."""
    def put(key: str, v: Any, fmt: Callable[[Any], str]) -> None:
        if v is not None and (finite(v) or not isinstance(v, (int, float))):
            values[f"{prefix}-{key}"] = fmt(v)
    return put



# --------------------------------------------------------------------------- Problem 1

def vae_numbers(values: dict[str, str], run: RunFolder) -> None:
    last = run.metrics[-1] if run.metrics else {}
    s = run.summary or VAESummary.partial(  # an unfinished run still has its losses
        final_train_loss=last.get("loss"), final_test_loss=last.get("test_loss"))
    put = _putter(values, "vae")
    put("ll-nats", s.test_log_likelihood_nats, lambda v: number(v, ".1f"))
    put("bpd", s.test_bits_per_dim, lambda v: number(v, ".3f"))
    put("bpd-8bit", s.test_bits_per_dim_8bit, lambda v: number(v, ".3f"))
    put("ll-k", s.ll_K, str)
    put("ll-n", s.ll_n_images, lambda v: f"{v:,}".replace(",", "\\,"))
    put("final-train-loss", s.final_train_loss, lambda v: number(v, ".1f"))
    put("final-test-loss", s.final_test_loss, lambda v: number(v, ".1f"))
    for key, metric in (("test-nll", "test_nll"), ("test-kl", "test_kl")):
        if finite(run.last(metric)):
            values[f"vae-{key}"] = number(run.last(metric), ".1f")
    if finite(run.last("test_kl")):
        values["vae-test-kl-bits"] = number(run.last("test_kl") / math.log(2), ".1f")
    if (epochs := _snapshot_epochs(run, "samples")) is not None:
        values["vae-snapshot-epochs"] = epochs



def latent_numbers(values: dict[str, str], run_dir: Path) -> list[tuple[int, int, list[tuple[int, float]]]]:
    """1.3(e): active latent dimensions (Burda et al. 2016: Var_x E[z_u|x] > 0.01) and, per class,
    the most class-specific dimensions (experiments.figures.class_specificity). Returns the rows
    (class, count, [(dim, score), ...]) of the peaks table."""
    from experiments import figures
    from experiments.runs import load_artifact

    profiles = load_artifact(run_dir, "latent_profiles.pt")
    variance = profiles["overall_std"] ** 2                       # (z_dim,)
    score = figures.class_specificity(profiles)                  # (10, z_dim)
    values["vae-active-dims"] = str(int((variance > 0.01).sum()))
    values["vae-z-total"] = str(variance.numel())
    top = score.abs().argsort(dim=1, descending=True)[:, :figures.N_MARKED]
    rows = [(c, int(profiles["counts"][c]), [(int(d), float(score[c, d])) for d in top[c]]) for c in range(len(score))]
    values["vae-peak-max"] = number(float(score.abs().max()), ".2f")
    shared = {d for _, _, peaks in rows for d, _ in peaks}
    values["vae-peak-distinct-dims"] = str(len(shared))
    values["vae-peak-n-marked"] = str(figures.N_MARKED)
    return rows



def interpolation_numbers(values: dict[str, str], run_dir: Path) -> None:
    """1.3(f): how even the interpolation steps are. For each strip of n decoded images, the
    per-step change d_k = mean |x_{k+1} - x_k| (8-bit levels); evenness = max_k d_k / mean_k d_k
    (1 when every step changes the image by the same amount)."""
    from experiments.runs import load_artifact

    strips = load_artifact(run_dir, "interpolations.pt")
    for kind in ("test", "prior"):
        x = strips[kind].float()                                 # (P, n, 3, 32, 32)
        steps = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(2, 3, 4))  # (P, n - 1)
        evenness = steps.max(dim=1).values / steps.mean(dim=1).clamp_min(1e-8)
        values[f"vae-interp-{kind}-step"] = number(float(steps.mean()), ".1f")
        values[f"vae-interp-{kind}-evenness"] = number(float(evenness.mean()), ".2f")
        values[f"vae-interp-{kind}-evenness-worst"] = number(float(evenness.max()), ".2f")
    values["vae-interp-pairs"] = str(strips["test"].shape[0])
    values["vae-interp-steps"] = str(strips["test"].shape[1])



def vae_artifact_numbers(values: dict[str, str], run: RunFolder | None) -> list | None:
    """The numbers of 1.3(e, f) read from a finished VAE run's artifacts (needs torch and
    experiments); returns the rows of the latent peaks table, None when unavailable."""
    if run is None or not run.finished:
        return None
    try:
        rows = latent_numbers(values, run.path)
        interpolation_numbers(values, run.path)
    except (ImportError, FileNotFoundError, KeyError, RuntimeError, ValueError) as e:
        print(f"note: VAE artifact numbers unavailable ({e})", file=sys.stderr)
        return None
    return rows



# --------------------------------------------------------------------------- Problem 2

def ddpm_numbers(values: dict[str, str], run: RunFolder) -> None:
    """Problem 2, one DDPM run (main or T variant): quality, timings, losses, schedule and t*."""
    last = run.metrics[-1] if run.metrics else {}
    s = run.summary or DDPMSummary.partial(  # an unfinished run still has its losses
        final_train_loss=last.get("loss"), final_test_loss_ema=last.get("test_loss_ema"))
    p = run.slot
    put = _putter(values, p)
    put("fid", s.quality_classifier_fid, lambda v: number(v, ".2f"))
    put("confidence", s.quality_mean_confidence, lambda v: number(v, ".3f"))
    put("quality-size", s.quality_size, str)
    put("sample-seconds-per-image", s.sample_seconds_per_image, lambda v: number(v, ".3f"))
    put("sample-seconds", s.sample_seconds, duration)
    put("train-seconds-per-epoch", s.train_seconds_per_epoch, duration)
    put("final-train-loss", s.final_train_loss, lambda v: number(v, ".4f"))
    put("final-test-loss-ema", s.final_test_loss_ema, lambda v: number(v, ".4f"))
    put("timesteps", s.timesteps, str)
    schedule_numbers(values, p, s.alpha_bar or [])
    if run.finished:  # a finished run's t_star None means "not reached"
        tstar_numbers(values, p, s.t_star, s.timesteps or run.config.get("timesteps"))
    if p == "ddpm":
        ddpm_main_numbers(values, run, s)


def schedule_numbers(values: dict[str, str], p: str, alpha_bar: list[float]) -> None:
    """sqrt(alpha_bar_T) and where the SNR alpha_bar / (1 - alpha_bar) falls below 1, from the schedule the
    run saved (alpha_bar_t, t = 1..T); nothing for a run that saved none."""
    if not alpha_bar:
        return
    values[f"{p}-sqrt-abar-T"] = number(math.sqrt(alpha_bar[-1]), ".2g")
    below = next((t for t, a in enumerate(alpha_bar, 1) if a < 0.5), None)  # SNR abar / (1 - abar) < 1
    if below is not None:
        values[f"{p}-snr-one-t"] = str(below)
        values[f"{p}-snr-phrase"] = f"falls below 1 at $t={below}$"
    else:
        values[f"{p}-snr-phrase"] = (f"stays above 1 up to $t=T$ ($\\bar\\alpha_T={alpha_bar[-1]:.2f}$): "
                                     "with so few steps even $x_T$ keeps most of the signal")


def tstar_numbers(values: dict[str, str], p: str, t_star: float | None, T: int | None) -> None:
    """2.2(c): t*, where label preservation falls below halfway (None: never), and its fraction of T."""
    if t_star is None:
        values[f"{p}-tstar"] = "not reached"
        values[f"{p}-tstar-frac"] = "n/a"
    else:
        values[f"{p}-tstar"] = number(t_star, ".0f")
        if T:
            values[f"{p}-tstar-frac"] = percent(t_star / T, 0)


def ddpm_main_numbers(values: dict[str, str], run: RunFolder, s: DDPMSummary) -> None:
    """The main DDPM run only: classifier, reconstruction study (2.2c), snapshots and the probe (2.3b)."""
    put = _putter(values, "ddpm")
    put("classifier-acc", s.classifier_test_accuracy, percent)
    put("recon-clean-acc", s.recon_clean_accuracy, percent)
    put("n-final-samples", s.n_final_samples, str)
    if s.recon_levels:
        values["ddpm-recon-levels"] = ", ".join(map(str, s.recon_levels))
        values["ddpm-recon-first-level"] = str(s.recon_levels[0])
        values["ddpm-recon-last-level"] = str(s.recon_levels[-1])
    for key, series, fmt in (("recon-mse", s.recon_mse, lambda v: number(v, ".3f")),
                             ("recon-preserved", s.recon_label_preserved, percent)):
        if series:
            values[f"ddpm-{key}-first"] = fmt(series[0])
            values[f"ddpm-{key}-last"] = fmt(series[-1])
    if s.t_star_rule:
        values["ddpm-tstar-rule"] = escape(s.t_star_rule)
    for kind in ("samples", "previews"):
        if (epochs := _snapshot_epochs(run, kind)) is not None:
            values[f"ddpm-{kind}-epochs"] = epochs
    for key, name, split in (("probe-n-train", "probe_train", "n_train"), ("probe-n-test", "probe_test", "n_test")):
        asked, available = run.config.get(name), run.provenance.get(split)
        if finite(asked) and finite(available):
            values[f"ddpm-{key}"] = f"{min(asked, available):,}".replace(",", "\\,")
    if s.probe is not None:
        probe_numbers(values, s.probe)


def probe_numbers(values: dict[str, str], probe: ProbeResult) -> None:
    """2.3(b): the linear probe's accuracy at each t, on raw pixels, and the best against raw pixels."""
    levels = sorted(probe.levels, key=lambda level: level.t)
    for k, level in enumerate(levels, 1):
        values[f"ddpm-probe-t-{k}"] = str(level.t)
        values[f"ddpm-probe-acc-{k}"] = percent(level.accuracy)
    if finite(probe.raw_pixels):
        values["ddpm-probe-raw"] = percent(probe.raw_pixels)
    if levels and finite(probe.raw_pixels):
        best = max(levels, key=lambda level: level.accuracy)
        values["ddpm-probe-best"] = percent(best.accuracy)
        values["ddpm-probe-best-t"] = str(best.t)
        values["ddpm-probe-best-vs-raw"] = compare(best.accuracy, probe.raw_pixels, higher="above", lower="below",
                                                   tolerance=0.005, same="within half a point of")


def tstudy_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """2.3(a): ratios and directions between the T/2 and 3T/2 runs (and the main one)."""
    low, high = (runs.get(slot) and runs[slot].summary for slot in T_SLOTS)
    if not (low and high):
        return
    if finite(low.sample_seconds_per_image) and finite(high.sample_seconds_per_image):
        values["tstudy-sampling-ratio"] = number(high.sample_seconds_per_image / low.sample_seconds_per_image, ".2f")
    if finite(low.train_seconds_per_epoch) and finite(high.train_seconds_per_epoch):
        values["tstudy-train-ratio"] = number(high.train_seconds_per_epoch / low.train_seconds_per_epoch, ".2f")
    if finite(low.timesteps) and finite(high.timesteps):
        values["tstudy-T-ratio"] = number(high.timesteps / low.timesteps, ".2f")
    if finite(low.quality_classifier_fid) and finite(high.quality_classifier_fid):
        values["tstudy-fid-high-vs-low"] = compare(high.quality_classifier_fid, low.quality_classifier_fid,
                                                   higher="higher (worse) than", lower="lower (better) than")



# --------------------------------------------------------------------------- Problem 3

def simsiam_numbers(values: dict[str, str], run: RunFolder) -> None:
    p = run.slot
    s = run.summary or _simsiam_partial(run)
    put = _putter(values, p)
    put("final-knn", s.final_knn_accuracy, percent)
    put("final-knn-epoch", s.final_knn_epoch, str)
    put("best-knn", s.best_knn_accuracy, percent)
    put("best-knn-epoch", s.best_knn_epoch, str)
    put("final-loss", s.final_loss, lambda v: number(v, ".3f"))
    put("linear-probe", s.linear_probe_accuracy, percent)
    put("batch", s.batch_size, str)
    put("d", s.dim, str)
    put("peak-lr", s.peak_lr, lambda v: number(v, ".3g"))
    put("knn-k", s.knn_k, str)
    if finite(s.final_collapse_std) and finite(s.collapse_std_reference):
        ratio = s.final_collapse_std / s.collapse_std_reference
        values[f"{p}-collapse-ratio"] = number(ratio, ".2f")
        values[f"{p}-collapse-word"] = "collapsed" if ratio < COLLAPSED_BELOW else "not collapsed"


def _simsiam_partial(run: RunFolder) -> SimSiamSummary:
    """What an unfinished SimSiam run's metrics and config tell: its monitored epochs, last loss, batch and d."""
    monitored = [m for m in run.metrics if finite(m.get("knn_accuracy"))]
    known = {}
    if monitored:
        best = max(monitored, key=lambda m: m["knn_accuracy"])
        known = dict(final_knn_accuracy=monitored[-1]["knn_accuracy"], final_knn_epoch=monitored[-1]["epoch"],
                     best_knn_accuracy=best["knn_accuracy"], best_knn_epoch=best["epoch"],
                     final_collapse_std=monitored[-1].get("collapse_std"),
                     collapse_std_reference=monitored[-1].get("collapse_std_reference"))
    return SimSiamSummary.partial(**known, final_loss=run.metrics[-1].get("loss") if run.metrics else None,
                                  batch_size=run.config.get("batch_size"), dim=run.config.get("dim"))



def simsiam_comparisons(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Each ablation's final kNN accuracy against the baseline's: the phrase that completes
    "<ablation's accuracy> is ... the baseline's" (e.g. "5.2 points lower than"), and the gap in points."""
    base = runs.get(f"simsiam-{names.BASELINE}")
    base_acc = _final_knn(base)
    if base_acc is None:
        return
    for ablation in (a for a in names.ABLATION_NAMES if a != names.BASELINE):
        acc = _final_knn(runs.get(f"simsiam-{ablation}"))
        if acc is None:
            continue
        diff = 100 * (acc - base_acc)  # points
        gap = number(abs(diff), ".1f")
        values[f"simsiam-{ablation}-vs-baseline"] = compare(diff, 0.0, higher=f"{gap} points higher than",
                                                            lower=f"{gap} points lower than", tolerance=SAME_WITHIN,
                                                            same=f"within {SAME_WITHIN} points of")
        values[f"simsiam-{ablation}-knn-diff"] = gap



def _final_knn(run: RunFolder | None) -> float | None:
    if run is None:
        return None
    if run.summary and finite(run.summary.final_knn_accuracy):
        return run.summary.final_knn_accuracy
    monitored = [m["knn_accuracy"] for m in run.metrics if finite(m.get("knn_accuracy"))]
    return monitored[-1] if monitored else None



# --------------------------------------------------------------------------- all

def problem_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Per problem: the datasets, hardware and a provenance sentence (with a synthetic warning)."""
    for problem, n in names.PROBLEM_NUMBERS.items():
        found = [r for slot, r in runs.items() if r is not None and problem_of(slot) == problem]
        datasets = sorted({r.dataset for r in found if r.dataset})
        hardware = sorted({r.hardware for r in found if r.hardware})
        if datasets:
            values[f"p{n}-dataset"] = escape(" and ".join(datasets))
        if hardware:
            values[f"p{n}-hardware"] = escape("; ".join(hardware))
        real = names.REAL_DATASETS[problem]
        if any(r.synthetic for r in found):
            values[f"p{n}-warning"] = (
                r"\par\noindent\fbox{\parbox{0.96\linewidth}{\textbf{Not " + real
                + r" results.} Some figures and numbers of this problem come from the synthetic "
                r"stand-in dataset (house-number-like digits drawn offline), not from "
                + real + r"; see the provenance table on the first page.}}\par")
        else:
            values[f"p{n}-warning"] = ""


def compute_numbers(runs: dict[str, RunFolder | None], preset: str) -> dict[str, str]:
    """Every value the text reads with \\val{key}, as LaTeX."""
    values: dict[str, str] = {"preset": escape(preset), "collapse-threshold": str(COLLAPSED_BELOW),
                              "same-within": str(SAME_WITHIN)}
    main_T = runs["ddpm"].config.get("timesteps") if runs.get("ddpm") else None
    for slot in SLOTS:
        run = runs.get(slot)
        status, command = fix_command(slot, run, preset, main_T)
        values[f"status-{slot}"] = escape(status)
        values[f"cmd-{slot}"] = escape(command)
        if run is None:
            continue
        _common(values, run)
        if slot == "vae":
            vae_numbers(values, run)
        elif slot.startswith("ddpm"):
            ddpm_numbers(values, run)
        else:
            simsiam_numbers(values, run)
    tstudy_numbers(values, runs)
    simsiam_comparisons(values, runs)
    problem_numbers(values, runs)
    measured_numbers(values, runs)
    return values


# --------------------------------------------------------------------------- Part III: the theory on our models

FID_SAME_WITHIN = 0.05        # classifier-FIDs within this fraction of each other count as "about the same"
ALIGNED_ABOVE = 0.5           # diagonal fraction of W_p in F's eigenbasis above which the predictor is "aligned"
PARTLY_ALIGNED_TIMES = 10     # ... and above this many times chance (1/d), "partly aligned"
SPECTRUM_COLLAPSED_BELOW = 0.25  # effective rank or tr F below this fraction of the baseline's: "collapsed"
# What the linear model of Question 4 predicts for an ablation's spectrum: (what was removed, the prediction).
COLLAPSE_PREDICTED = {"no-stop-grad": ("the stop-gradient", "4.3"),
                      "no-predictor": ("the predictor", "the linear calculation of 4.5")}


def significant(x: float) -> str:
    """A positive number of any size for running text: 2048, 20.5, 0.543, or $5.0\\cdot10^{-6}$ below 0.01."""
    if x >= 100:
        return f"{x:.0f}"
    if x == 0 or x >= 0.01:
        return f"{x:#.3g}".rstrip(".")
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"${mantissa}\\cdot10^{{{int(exponent)}}}$"


def measured_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Part III: Question 3 on the VAE and DDPM samples, Question 4 on the SimSiam runs."""
    values.update({"fid-same-within": percent(FID_SAME_WITHIN, 0), "aligned-above": str(ALIGNED_ABOVE),
                   "partly-aligned-times": str(PARTLY_ALIGNED_TIMES),
                   "spectrum-collapsed-below": str(SPECTRUM_COLLAPSED_BELOW)})
    for slot in ("vae", "ddpm"):
        run = runs.get(slot)
        if run is not None and run.summary is not None and run.summary.discriminator is not None:
            discriminator_numbers(values, slot, run.summary.discriminator)
    spectra = {slot: _spectra(run) for slot, run in runs.items() if run is not None and problem_of(slot) == "simsiam"}
    for slot, results in spectra.items():
        if results:
            spectrum_numbers(values, slot, results)
    base = spectra.get(f"simsiam-{names.BASELINE}")
    for ablation in COLLAPSE_PREDICTED:
        if base and spectra.get(f"simsiam-{ablation}"):
            collapse_numbers(values, f"simsiam-{ablation}", spectra[f"simsiam-{ablation}"][-1], base[-1])


def _spectra(run: RunFolder) -> list[summaries.SpectrumResult]:
    """The run's per-epoch spectra (summaries.spectra); [] with a note when one cannot be read."""
    try:
        return summaries.spectra(run.path)
    except ValueError as e:
        print(f"note: spectra of {run.path} unavailable ({e})", file=sys.stderr)
        return []


def discriminator_numbers(values: dict[str, str], slot: str, r: summaries.DiscriminatorResult) -> None:
    """Question 3 on one run's samples: the JSD estimate, DRS's accepted fraction, and whether the accepted samples
    are closer to the test images than a random subset of the same size, by the classifier FID and by the JSD."""
    put = _putter(values, f"{slot}-drs")
    for key, interval in (("jsd", r.jsd), ("jsd-accepted", r.jsd_accepted), ("jsd-subset", r.jsd_subset)):
        put(key, interval.estimate, lambda v: number(v, ".3f"))
        put(f"{key}-interval", interval, lambda i: f"[{number(i.low, '.3f')}, {number(i.high, '.3f')}]")
    put("level", r.jsd.level, lambda v: percent(v, 0))
    put("jsd-bound-word", r.jsd.low, lambda low: "clearly above 0: the discriminator found a difference" if low > 0
        else "not clearly above 0: the discriminator found no reliable difference")
    put("accepted", r.accepted_fraction, percent)
    put("n-accepted", r.n_accepted, str)
    put("n-test", r.n_fake_test, str)
    put("n-train", r.n_fake_train, str)
    put("epochs", r.epochs, str)
    put("seconds", r.seconds, duration)
    for key, value in (("fid-samples", r.fid_samples), ("fid-accepted", r.fid_accepted), ("fid-subset", r.fid_subset)):
        put(key, value, significant)
    closer_fid = None
    if finite(r.fid_accepted) and finite(r.fid_subset):
        values[f"{slot}-drs-fid-word"] = compare(r.fid_accepted, r.fid_subset, higher="higher (farther) than",
                                                 lower="lower (closer) than", tolerance=FID_SAME_WITHIN * r.fid_subset,
                                                 same="about the same as")
        closer_fid = r.fid_accepted < (1 - FID_SAME_WITHIN) * r.fid_subset
    a, s = r.jsd_accepted, r.jsd_subset
    values[f"{slot}-drs-jsd-word"] = ("below" if a.high < s.low else "above" if a.low > s.high
                                      else "within the bootstrap intervals of")
    values[f"{slot}-drs-verdict"] = drs_verdict(closer_fid, a.high < s.low)


def drs_verdict(closer_fid: bool | None, closer_jsd: bool) -> str:
    """The clause on whether discriminator rejection sampling brought the samples closer to the test images."""
    if closer_fid is None:
        return ("too few samples were accepted for a classifier-FID; by the JSD estimate resampling brought them "
                + ("closer to the test images" if closer_jsd else "not clearly closer to the test images"))
    if closer_fid and closer_jsd:
        return "resampling brought the samples closer to the test images by both measures"
    if closer_fid or closer_jsd:
        return ("resampling brought the samples closer to the test images by the "
                + ("classifier-FID proxy but not clearly by the JSD estimate" if closer_fid
                   else "JSD estimate but not by the classifier-FID proxy"))
    return "resampling did not bring the samples closer to the test images by either measure"


def spectrum_numbers(values: dict[str, str], slot: str, results: list[summaries.SpectrumResult]) -> None:
    """Question 4 on one SimSiam run: F's effective rank and scale at the first and last measured epochs, and
    how far the predictor's linear map shares F's eigenvectors (DirectPred's alignment)."""
    first, last = results[0], results[-1]
    put = _putter(values, slot)
    for suffix, r in (("-first", first), ("", last)):
        put(f"spectrum-epoch{suffix}", r.epoch, str)
        put(f"erank{suffix}", r.effective_rank, lambda v: number(v, ".1f"))
        put(f"trace{suffix}", r.trace, significant)
    put("spectrum-d", last.d, str)
    put("spectrum-n", last.n, str)
    put("spectrum-seconds", sum(r.seconds for r in results), duration)
    values[f"{slot}-spectrum-epochs"] = ", ".join(str(r.epoch) for r in results)
    al = last.alignment
    if al is None:
        return
    put("align-fraction", al.diagonal_fraction, lambda v: number(v, ".3f"))
    put("align-chance", al.chance, lambda v: number(v, ".2g"))
    put("align-r", round(1 / al.chance), str)
    put("align-times-chance", al.diagonal_fraction / al.chance, significant)
    put("align-cos", sum(abs(c) for c in al.cosines) / len(al.cosines), lambda v: number(v, ".2f"))
    put("align-k", len(al.cosines), str)
    if al.diagonal_fraction > ALIGNED_ABOVE:
        values[f"{slot}-align-verdict"] = "aligned with F's eigenvectors, as DirectPred observed"
    elif al.diagonal_fraction > PARTLY_ALIGNED_TIMES * al.chance:
        values[f"{slot}-align-verdict"] = ("partly aligned with F's eigenvectors: more than chance, short of the "
                                           "alignment DirectPred observed")
    else:
        values[f"{slot}-align-verdict"] = ("not aligned with F's eigenvectors (chance level), unlike what DirectPred "
                                           "observed after long training")


def collapse_numbers(values: dict[str, str], slot: str, r: summaries.SpectrumResult,
                     base: summaries.SpectrumResult) -> None:
    """An ablation's last spectrum against the baseline's: effective rank and tr F as fractions of the baseline's,
    and whether it collapsed (either below SPECTRUM_COLLAPSED_BELOW of the baseline's), against the prediction."""
    rank, scale = r.effective_rank / base.effective_rank, r.trace / base.trace if base.trace > 0 else math.inf
    values[f"{slot}-erank-ratio"] = significant(rank)
    values[f"{slot}-trace-ratio"] = significant(scale)
    removed, theory = COLLAPSE_PREDICTED[slot.removeprefix("simsiam-")]
    values[f"{slot}-spectrum-verdict"] = (
        f"collapsed without {removed}, as {theory} predicts" if min(rank, scale) < SPECTRUM_COLLAPSED_BELOW
        else f"did not collapse without {removed} in this run, although {theory} predicts that it does")
