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

from experiments.presentation import names, summaries
from experiments.presentation.summaries import (
    AmortisationGaps,
    DDPMSummary,
    Estimate,
    ProbeResult,
    SimSiamSummary,
    VAESummary,
    VariationalBound,
)
from report import gates, sheet, wording
from report.latex import compare, duration, escape, number, percent
from report.runs import SLOTS, T_SLOTS, RunFolder, finite, placeholder_options, problem_of, resume_command, slot_command

COLLAPSED_BELOW = 0.2   # collapse std x sqrt(d) under which a SimSiam run counts as collapsed
MIN_STUDY_IMAGES = 50   # a label-preservation rate on fewer images moves by more than 7 points per image pair
SAME_WITHIN = 0.5       # kNN accuracies closer than this many points are "about the same"
# Config fields the text quotes, as values <slot>-<field with hyphens> (e.g. vae-n-samples).
CONFIG_VALUES = ("batch_size", "lr", "z_dim", "timesteps", "dim", "beta_start", "beta_end", "n_samples",
                 "n_reconstructions", "n_final_samples", "snapshot_every", "preview_steps", "pred_dim",
                 "momentum", "weight_decay", "base_lr", "knn_temperature", "warmup_epochs")
UNIFORM_8BIT = 8.0      # bits per dimension of a uniform distribution over a pixel's 256 levels
# -log2 of N(x; mu, 1)'s peak density on the 8-bit scale: no decoder with the graded unit variance scores below it.
UNIT_VARIANCE_FLOOR_8BIT = 0.5 * math.log2(2 * math.pi) + math.log2(127.5)
REDRAW = {"vae": "vae_figures", "ddpm": "ddpm_figures", "simsiam": "simsiam_figures"}  # presentation.figures
# Summary fields written by the final evaluation (the report's measurements); a run finished before one existed
# gets it by redoing that evaluation: summary.json deleted, the run resumed (no epoch is retrained).
REDO = {"vae": ("observations", "amortisation", "discriminator"), "ddpm": ("observations", "bound", "discriminator")}


def fix_command(slot: str, run: RunFolder | None, preset: str, main_timesteps: int | None,
                placeholder: dict | None = None) -> tuple[str, str]:
    """(status, command) for a slot: what is missing and the command that produces it (placeholder: the
    options of a missing run's command, report.runs.placeholder_options)."""
    if run is None:
        return "no run folder found", slot_command(slot, preset, main_timesteps, **(placeholder or {}))
    folder = str(run.path)
    if not run.finished:  # the same options as the run's config, in its folder
        return f"run folder {folder} is unfinished (no summary.json)", resume_command(slot, run, preset)
    lacking = [f for f in REDO.get(problem_of(slot), ()) if run.summary is not None
               and getattr(run.summary, f, None) is None]
    if lacking:  # finished by an older version: redo the final evaluation, the training stays
        return (f"run folder {folder} finished before its final evaluation measured {', '.join(lacking)}",
                f"rm {Path(folder) / 'summary.json'} && {resume_command(slot, run, preset)}")
    function = REDRAW[problem_of(slot)]
    return (f"run folder {folder} is finished but lacks this figure",
            f"{names.PYTHON} -c \"from experiments.presentation import figures; figures.{function}('{folder}')\"")


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
        values[f"{s}-epochs-phrase"] = gates.counted(run.epochs, "epoch")
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
        world = run.provenance.get("world_size") or 1
        values[f"{s}-bn-over"] = batch_norm_over(batch, run.provenance.get("micro_batch") or batch // world, world,
                                                 bool(run.provenance.get("sync_batch_norm")))
    if finite(run.config.get("snapshot_every")):
        every = int(run.config["snapshot_every"])
        values[f"{s}-snapshot-phrase"] = wording.every(every, "epoch")
        sampler = f"the full $T$-step ancestral sampler on {values.get(f'{s}-n-samples', 'a few')} images"
        values[f"{s}-snapshot-clause"] = (f"every epoch also runs {sampler}." if every == 1 else
                                          f"{wording.every(every, 'epoch')} it also runs {sampler}, which is why "
                                          "those epochs are longer.")
    if finite(run.config.get("warmup_epochs")):
        values[f"{s}-warmup-phrase"] = wording.over_first(int(run.config["warmup_epochs"]), "epoch")
    if run.provenance.get("fallback_reason"):
        values[f"{s}-fallback"] = escape(run.provenance["fallback_reason"])
    if (rates := lr_history(run)) is not None:  # resumed with another --lr: the rates the epochs were trained at
        values[f"{s}-status"] += f"; trained at learning rate {rates}"
        if "lr" in run.config:
            values[f"{s}-lr"] = rates


def lr_history(run: RunFolder) -> str | None:
    """The learning rates a run's epochs were trained at, when not only its config's: from provenance.json's
    resume_changes ({"after_epoch": e, "changes": {"lr": [old, new]}} per resume that changed it), e.g.
    "0.0001 (epochs 1--10), then 1e-05 (epochs 11--30)". None when every epoch used the config's rate."""
    field = "base_lr" if "base_lr" in run.config else "lr"
    changes = [(c["after_epoch"], c["changes"][field]) for c in run.provenance.get("resume_changes") or []
               if isinstance(c, dict) and field in c.get("changes", {})]
    done = run.epochs or run.config.get("epochs")
    if not changes or not finite(done):
        return None
    stretches = [(old, after) for after, (old, _) in changes] + [(changes[-1][1][1], done)]  # (rate, up to epoch)
    segments, first = [], 1  # [rate, first epoch, last epoch] of each stretch of epochs trained at one rate
    for rate, last in stretches:
        if last < first:  # no epoch was trained at this rate
            continue
        if segments and segments[-1][0] == rate:
            segments[-1][2] = last
        else:
            segments.append([rate, first, last])
        first = last + 1
    if len(segments) == 1 and segments[0][0] == run.config.get(field):
        return None
    if len(segments) == 1:  # the config names a rate no epoch was trained at (a finished run resumed with --lr)
        return escape(segments[0][0])
    return ", then ".join(f"{escape(rate)} (epoch{f' {a}' if a == b else f's {a}--{b}'})" for rate, a, b in segments)



def batch_norm_over(batch: int, micro_batch: int, world: int = 1, synced: bool = False) -> str:
    """What SimSiam's batch norm normalised over: each view of the batch, or of each micro-batch when the
    batch ran as micro-batches with accumulated gradients (experiments.harness.memory); on `world` GPUs
    (torchrun), micro_batch is per GPU, and synced batch norm (SyncBatchNorm) pools the GPUs' images."""
    if world > 1:
        gpus = f"{world} GPUs"
        if synced and micro_batch * world >= batch:
            return f"the {batch} images of each view of the whole batch, synchronised over {gpus} (SyncBatchNorm)"
        if synced:
            return (f"the {micro_batch * world} images of each view of a micro-batch on {gpus} together "
                    f"(SyncBatchNorm; micro-batches of {micro_batch} per GPU, gradients accumulated)")
        return (f"the {micro_batch} images of each view on one GPU (the batch of {batch} split over {gpus}"
                f"{', then into micro-batches' if micro_batch * world < batch else ''}, batch norm per GPU "
                "without SyncBN)")
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
    put("classifier-acc", s.classifier_test_accuracy, percent)
    for key, metric in (("test-nll", "test_nll"), ("test-kl", "test_kl")):
        if finite(run.last(metric)):
            values[f"vae-{key}"] = number(run.last(metric), ".1f")
    if finite(run.last("test_kl")):
        values["vae-test-kl-bits"] = number(run.last("test_kl") / math.log(2), ".1f")
    if (epochs := _snapshot_epochs(run, "samples")) is not None:
        values["vae-snapshot-epochs"] = epochs
    values["vae-test-loss-trend"] = wording.loss_trend([m.get("test_loss") for m in run.metrics])
    decoder_variance_numbers(values, s)



def decoder_variance_numbers(values: dict[str, str], s: VAESummary) -> None:
    """1.3: the 8-bit bits/dim against a uniform distribution, the unit variance's floor, and the test ELBO
    with a fitted decoder variance (experiments.measurements.decoder_variance)."""
    values["vae-bpd-8bit-unit-floor"] = number(UNIT_VARIANCE_FLOOR_8BIT, ".2f")
    unit, fitted = s.test_bits_per_dim_8bit, s.test_elbo_bits_per_dim_8bit_fitted_variance
    pixel = "a uniform distribution over the 256 levels of each pixel"
    if finite(unit):
        values["vae-bpd-8bit-vs-uniform"] = compare(
            unit, UNIFORM_8BIT, higher=f"above 8 bits per dimension: worse than {pixel}",
            lower=f"below 8 bits per dimension: better than {pixel}", same=f"8 bits per dimension, as {pixel}")
    if finite(fitted):
        values["vae-bpd-8bit-fitted"] = number(fitted, ".3f")
    if finite(unit) and finite(fitted):
        gap = number(abs(unit - fitted), ".2f")
        values["vae-bpd-8bit-fitted-vs-unit"] = compare(fitted, unit, higher=f"{gap} bits per dimension above",
                                                        lower=f"{gap} bits per dimension below")



def latent_numbers(values: dict[str, str], run_dir: Path) -> list[tuple[int, int, list[tuple[int, float]]]]:
    """1.3(e): active latent dimensions (Burda et al. 2016: Var_x E[z_u|x] > 0.01) and, per class,
    the most class-specific dimensions (experiments.presentation.figures.class_specificity). Returns the rows
    (class, count, [(dim, score), ...]) of the peaks table."""
    from experiments.harness.files import load_artifact
    from experiments.presentation import figures

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



def vae_artifact_numbers(values: dict[str, str], run: RunFolder | None) -> list | None:
    """The numbers of 1.3(e) read from a finished VAE run's artifacts (needs torch and experiments);
    returns the rows of the latent peaks table, None when unavailable."""
    if run is None or not run.finished:
        return None
    try:
        rows = latent_numbers(values, run.path)
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
        study = run.config.get("recon_size")
        study = int(study) if finite(study) else None
        tstar_numbers(values, p, s.t_star, s.timesteps or run.config.get("timesteps"), gates.first_failing(
            gates.above_chance(s.classifier_test_accuracy, _n_test(run), "the digit classifier"),
            gates.above_chance(s.recon_clean_accuracy, study, "the digit classifier on the study's clean images"),
            gates.enough(study, MIN_STUDY_IMAGES, "image", "a label-preservation rate")))
    if p == "ddpm":
        values["ddpm-test-loss-trend"] = wording.loss_trend([m.get("test_loss_ema") for m in run.metrics],
                                                            "test loss of the EMA weights")
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


def tstar_numbers(values: dict[str, str], p: str, t_star: float | None, T: int | None,
                  classifier: gates.Gate = gates.TELLS) -> None:
    """2.2(c): t*, where label preservation falls below halfway (None: never), and its fraction of T; only when
    the classifier that judges label preservation is above chance on the study's clean images."""
    values[f"{p}-tstar-caption"] = "the dashed line marks $t^*$."
    if not classifier.tells:
        values[f"{p}-tstar-caption"] = ("the dashed line marks where the curve crosses the rule's threshold, not a "
                                        "$t^*$: the classifier is at chance (see the text).")
        values[f"{p}-tstar"] = "n/a"
        values[f"{p}-tstar-frac"] = "n/a"
        values[f"{p}-tstar-result"] = ("Not interpretable: " + gates.cannot("$t^*$", classifier)
                                       + ", so whether a reconstruction keeps its label says nothing about the "
                                       "denoiser, and the curve's crossing is not reported as $t^*$.")
        values[f"{p}-tstar-answer"] = "not interpretable: classifier at chance"
        return
    if t_star is None:
        values[f"{p}-tstar"] = "not reached"
        values[f"{p}-tstar-frac"] = "n/a"
        values[f"{p}-tstar-result"] = ("$t^*$ is not reached: the label is preserved at least half of the time at "
                                       "every level studied.")
        values[f"{p}-tstar-answer"] = "$t^*$ not reached at the levels studied"
    else:
        values[f"{p}-tstar"] = number(t_star, ".0f")
        frac = f", i.e.\\ {percent(t_star / T, 0)} of the $T={T}$ steps" if T else ""
        if T:
            values[f"{p}-tstar-frac"] = percent(t_star / T, 0)
        values[f"{p}-tstar-result"] = f"$t^*={number(t_star, '.0f')}${frac}."
        values[f"{p}-tstar-answer"] = f"$t^*={number(t_star, '.0f')}${frac}"


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
        gate = gates.first_failing(gates.above_chance(best.accuracy, probe.n_test, "the best bottleneck probe"),
                                   gates.points_differ(best.accuracy, probe.n_test, probe.raw_pixels, probe.n_test,
                                                       "the difference"))
        values["ddpm-probe-best-vs-raw"] = compare(best.accuracy, probe.raw_pixels, higher="above", lower="below",
                                                   tolerance=0.005, same="within half a point of")
        values["ddpm-probe-verdict"] = (
            f"the best bottleneck probe ({percent(best.accuracy)}, $t={best.t}$) is "
            f"{values['ddpm-probe-best-vs-raw']} the pixel baseline" if gate.tells else
            gates.cannot("whether the bottleneck features beat raw pixels", gate))


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
        size = gates.enough(min(low.quality_size, high.quality_size), wording.MIN_FID_IMAGES, "image per set",
                            "a classifier-FID", "images per set")
        values["tstudy-fid-high-vs-low"] = compare(
            high.quality_classifier_fid, low.quality_classifier_fid, higher="higher (worse) than",
            lower="lower (better) than") if size.tells else (
            "not comparable with the one (" + size.why + ")")



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



def _n_test(run: RunFolder) -> int | None:
    """Test images a run's accuracies were measured on: its config's test_size, else its data's test split."""
    n = run.config.get("test_size") or run.provenance.get("n_test")
    return int(n) if finite(n) else None


def simsiam_comparisons(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Each ablation's final kNN accuracy against the baseline's: the phrase that completes
    "<ablation's accuracy> is ... the baseline's" (e.g. "5.2 points lower than"), and the gap in points; a
    direction only when the 95% interval of the difference on the test images excludes 0 (report.gates)."""
    base = runs.get(f"simsiam-{names.BASELINE}")
    base_acc = _final_knn(base)
    if base_acc is None:
        return
    for ablation in (a for a in names.ABLATION_NAMES if a != names.BASELINE):
        run = runs.get(f"simsiam-{ablation}")
        acc = _final_knn(run)
        if acc is None:
            continue
        diff = 100 * (acc - base_acc)  # points
        gap = number(abs(diff), ".1f")
        n, n_base = _n_test(run), _n_test(base)
        gate = (gates.points_differ(acc, n, base_acc, n_base, "the difference") if n and n_base else
                gates.Gate(False, "the number of test images was not recorded"))
        if gate.tells:
            values[f"simsiam-{ablation}-vs-baseline"] = compare(
                diff, 0.0, higher=f"{gap} points higher than", lower=f"{gap} points lower than",
                tolerance=SAME_WITHIN, same=f"within {SAME_WITHIN} points of")
        else:
            low, high = gates.proportion_difference(acc, n or 0, base_acc, n_base or 0)
            values[f"simsiam-{ablation}-vs-baseline"] = (
                f"indistinguishable (a {number(diff, '+.1f')}-point difference, 95\\% interval "
                f"[{number(100 * low, '+.1f')}, {number(100 * high, '+.1f')}] on "
                f"{gates.counted(n or 0, 'test image')}) from")
        values[f"simsiam-{ablation}-apart"] = "yes" if gate.tells else "no"
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


def compute_numbers(runs: dict[str, RunFolder | None], preset: str, results: Path | None = None) -> dict[str, str]:
    """Every value the text reads with \\val{key}, as LaTeX (results: the folder the runs were looked for in)."""
    values: dict[str, str] = {"preset": escape(preset), "collapse-threshold": str(COLLAPSED_BELOW),
                              "same-within": str(SAME_WITHIN)}
    main_T = runs["ddpm"].config.get("timesteps") if runs.get("ddpm") else None
    for slot in SLOTS:
        run = runs.get(slot)
        status, command = fix_command(slot, run, preset, main_T, placeholder_options(runs, results))
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
    measured_numbers(values, runs)        # Part III: Q1 and Q2
    measured_q3_q4_numbers(values, runs)  # Part III: Q3 and Q4
    simsiam_comparisons(values, runs)
    problem_numbers(values, runs)
    # Sentences chosen by the measured outcome (report.wording), and the thresholds that choose them.
    values.update(wording.THRESHOLDS)
    wording.observation_numbers(values, runs)
    wording.tstudy_verdicts(values, runs)
    wording.collapse_summary(values)
    sheet.answer_numbers(values)
    return values


# --------------------------------------------------------------------------- Part III: the theory measured

WITHIN_SE = 2   # a measured quantity counts as zero (or two as equal) within this many standard errors


def _seconds(v: float) -> str:
    """Seconds for running text, milliseconds below one second."""
    return f"{1000 * v:.3g} ms" if v < 1 else duration(v)


def _bits_se(se: float | None, dims: int) -> float | None:
    """A standard error in nats per image as bits per dimension."""
    return None if se is None else se / (dims * math.log(2))


def _total_se(e: Estimate) -> float:
    """Monte Carlo and across-image standard errors together (independent)."""
    return math.hypot(e.mc_se, e.image_se or 0.0)


def measured_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Part III, Q1 and Q2.3 measured: the VAE's inference gaps (vae-gap-*), the DDPM's bound (ddpm-bound-*)
    and the two models' bits/dim compared; nothing for a run without the measurement."""
    vae, ddpm = runs.get("vae"), runs.get("ddpm")
    gaps = vae.summary.amortisation if vae is not None and vae.summary else None
    bound = ddpm.summary.bound if ddpm is not None and ddpm.summary else None
    if gaps is not None:
        gap_numbers(values, gaps, vae.summary.train_wall_seconds)
        gap_outcomes(values, gaps)
    if bound is not None:
        bound_numbers(values, bound, ddpm.summary.train_wall_seconds, ddpm.summary.timesteps)
    if gaps is not None and bound is not None:
        bound_against_vae(values, bound, gaps, same_images=_same_images(vae, ddpm))


def _same_images(vae: RunFolder, ddpm: RunFolder) -> bool:
    """Whether the two runs measured the same test images: the same data source, seed, test set and number of
    images (both draw them with the stream experiments.presentation.names.MEASURED_IMAGES)."""
    return vae.provenance.get("source") == ddpm.provenance.get("source") and all(
        vae.config.get(a) == ddpm.config.get(b) for a, b in (("seed", "seed"), ("test_size", "test_size"),
                                                             ("gap_size", "bound_size")))


def _estimate_numbers(values: dict[str, str], key: str, e: Estimate, dims: int | None = None) -> None:
    """<key>-nats, <key>-mc-se, <key>-image-se in nats; with dims, <key>-bpd and its SEs in bits/dim."""
    put = _putter(values, key)
    values[f"{key}-nats"] = number(e.nats, ".2f")
    put("mc-se", e.mc_se, lambda v: number(v, ".2f"))
    put("image-se", e.image_se, lambda v: number(v, ".2f"))
    if dims is not None and e.bits_per_dim is not None:
        put("bpd", e.bits_per_dim, lambda v: number(v, ".3f"))
        put("bpd-mc-se", _bits_se(e.mc_se, dims), lambda v: number(v, ".3f"))
        put("bpd-image-se", _bits_se(e.image_se, dims), lambda v: number(v, ".3f"))


def gap_numbers(values: dict[str, str], g: AmortisationGaps, train_seconds: float | None) -> None:
    """Q1.3-1.4 on the VAE: the three estimates and two gaps, in nats and bits/dim, and their times (1.4b)."""
    for key, e in (("amortised", g.amortised_elbo), ("per-point", g.per_point_elbo), ("ll", g.log_likelihood),
                   ("graded", g.graded_log_likelihood)):
        if e is not None:
            _estimate_numbers(values, f"vae-gap-{key}", e, g.dims)
    values["vae-gap-proposal"] = LL_PROPOSALS.get(g.ll_proposal, escape(g.ll_proposal))
    if g.graded_log_likelihood is not None:
        graded, se = g.graded_log_likelihood, math.hypot(g.graded_log_likelihood.mc_se, g.log_likelihood.mc_se)
        difference = number(abs(g.log_likelihood.nats - graded.nats), ".2f")
        values["vae-gap-graded-versus"] = compare(
            graded.nats, g.log_likelihood.nats, tolerance=WITHIN_SE * se, higher=f"{difference}~nats above",
            lower=f"{difference}~nats below", same=f"within {WITHIN_SE} Monte Carlo standard errors of")
    _estimate_numbers(values, "vae-gap-amortisation", g.amortisation_gap)
    _estimate_numbers(values, "vae-gap-approximation", g.approximation_gap)
    put = _putter(values, "vae-gap")
    for key, count in (("n", g.n_images), ("k", g.ll_K), ("steps", g.per_point_steps)):
        put(key, count, str)
    if g.per_point_converged is not None:
        values["vae-gap-stopped"] = ("when its tolerance was met" if g.per_point_converged else
                                     "at its step limit, before its tolerance was met")
    put("rule", g.stopping_rule, escape)
    for key, seconds in (("seconds-amortised", g.seconds_amortised), ("seconds-per-point", g.seconds_per_point),
                         ("seconds", g.seconds)):
        put(key, seconds, _seconds)
    if finite(train_seconds) and train_seconds > 0:
        values["vae-gap-cost-fraction"] = percent(g.seconds / train_seconds)
    if g.seconds_amortised > 0:
        ratio = g.seconds_per_point / g.seconds_amortised
        values["vae-gap-speed-ratio"] = f"{ratio:,.0f}".replace(",", "\\,") if ratio >= 10 else number(ratio, ".1f")
        values["vae-gap-speed-phrase"] = (
            f"as 1.4(b) predicts, the per-point optimisation took {values['vae-gap-speed-ratio']} times as long as "
            "the encoder's single pass" if ratio > 1 else
            "contrary to 1.4(b), the per-point optimisation was not slower than the encoder's pass")


def gap_outcomes(values: dict[str, str], g: AmortisationGaps) -> None:
    """The words of Q1's sentences, chosen by the measured gaps' signs against their Monte Carlo errors."""
    gap, se = g.amortisation_gap.nats, WITHIN_SE * g.amortisation_gap.mc_se
    if gap > se:
        sign = "positive, as 1.3 predicts"
    elif gap >= 0:
        sign = "positive but within Monte Carlo error of zero: on these images the encoder is as good as per-point " \
               "optimisation, the case of equality in 1.3"
    elif gap >= -se:
        sign = "negative but within Monte Carlo error of zero, which 1.3 allows of an estimate"
    else:
        sign = "negative beyond Monte Carlo error: the per-point optimisation did not converge, since 1.3 rules " \
               "out a negative gap at the per-point optimum"
    values["vae-gap-sign"] = sign
    k, n = g.negative_images, g.n_images
    values["vae-gap-negative-phrase"] = (
        f"none of the {n} images has a gap below $-{WITHIN_SE}$ of its own Monte Carlo standard errors" if k == 0 else
        f"{k} of the {n} images have a gap below $-{WITHIN_SE}$ of their own Monte Carlo standard errors: there "
        "the optimum chosen on the evaluation noise did worse on fresh noise, so the optimisation had not converged")
    approx, se = g.approximation_gap.nats, WITHIN_SE * g.approximation_gap.mc_se
    per_point = g.ll_proposal == "per-point"
    values["vae-gap-approximation-phrase"] = (
        "positive, but the per-point optimisation stopped at its step limit, so part of it may be amortisation gap "
        "that the optimisation had not yet removed rather than the cost of the family"
        if approx > se and g.per_point_converged is False else
        "positive: even the best diagonal Gaussian misses the true posterior, the cost of the family itself"
        if approx > se else
        "zero within Monte Carlo error: as far as the importance-sampled estimate can tell, the best diagonal "
        "Gaussian is the true posterior" if approx >= -se else
        "negative beyond Monte Carlo error, which no posterior allows (it is a KL divergence): the importance "
        "weights are heavier-tailed than their standard error assumes, so this estimate cannot be trusted"
        if per_point else
        f"negative beyond Monte Carlo error: the estimate $\\log p_K(\\mathbf{{x}})\\le\\log p(\\mathbf{{x}})$ "
        f"with $K={g.ll_K}$ draws from the encoder's $q$ falls below the per-point ELBO, so the importance sampling "
        "is too loose to see this gap")
    values["vae-gap-comparison"] = gap_comparison(g.amortisation_gap, g.approximation_gap, g.n_images, per_point,
                                                  g.per_point_converged is not False)


LL_PROPOSALS = {
    "per-point": "the per-point optimum $q^*_{\\mathbf{x}}$, whose importance weights are nearly constant when it is "
                 "close to the posterior",
    "encoder": "the encoder's $q_\\phi$ (a measurement made before the proposal was $q^*_{\\mathbf{x}}$): its slack "
               "grows with the amortisation gap, so the approximation gap below is biased low"}


MIN_GAP_IMAGES = 30   # a normal 95% interval of a mean over images (Student's t quantile at 4 images: 3.18, not 1.96)


def gap_interval(amortisation: Estimate, approximation: Estimate) -> tuple[float, float]:
    """95% interval of (amortisation gap - approximation gap), nats. Its standard error joins the Monte Carlo errors
    (independent draws) and the spread over the images; the summary keeps each gap's standard error over the images
    but not their correlation, so the difference's is bounded by their sum (the worst case, perfectly
    anti-correlated gaps), which keeps the interval conservative."""
    over_images = (amortisation.image_se or 0.0) + (approximation.image_se or 0.0)
    se = math.hypot(math.hypot(amortisation.mc_se, approximation.mc_se), over_images)
    d = amortisation.nats - approximation.nats
    return d - gates.Z95 * se, d + gates.Z95 * se


def gap_comparison(amortisation: Estimate, approximation: Estimate, n_images: int, per_point_proposal: bool,
                   converged: bool) -> str:
    """Q1's sentence comparing the two gaps: a direction only when at least MIN_GAP_IMAGES images were measured and
    the 95% interval of their difference (gap_interval) excludes 0 (report.gates). Their sum, log p(x) -
    ELBO(q_phi), does not depend on q*_x, and each bias moves one way: with the encoder's q_phi as the proposal (older
    summaries) the approximation gap is biased low, so only "smaller than" can be read; a per-point optimisation
    stopped at its step limit (not `converged`) moves part of the amortisation gap into the approximation gap, so
    only "larger than" can."""
    low, high = gap_interval(amortisation, approximation)
    failing = [g for g in (gates.enough(n_images, MIN_GAP_IMAGES, "image", "a 95\\% interval over images"),
                           gates.interval_excludes_tie(low, high, "the difference of the two gaps", unit="~nats"))
               if not g.tells]
    if failing:  # every reason, as both usually fail together on a short run
        why = gates.Gate(False, "; ".join(g.why for g in failing))
        return "This run " + gates.cannot("which gap is larger", why).removeprefix("this run ") + "."
    larger = low > 0
    if larger and not per_point_proposal:
        return ("The amortisation gap is of undetermined size relative to the approximation gap: the approximation "
                "gap's estimate is biased low.")
    if not larger and not converged:
        return ("The amortisation gap is of undetermined size relative to the approximation gap: the per-point "
                "optimisation stopped at its step limit, which leaves part of the amortisation gap in the "
                "approximation gap.")
    return f"The amortisation gap is {'larger' if larger else 'smaller'} than the approximation gap."


BOUND_TERMS = {"reconstruction": "the decoder term $L_0$", "denoising": "the denoising terms $\\sum_{t=2}^T L_{t-1}$",
               "prior": "the prior term $L_T$"}
BOUND_DECODERS = {
    "discrete": "the discretised decoder of Ho et al.\\ (2020, eq.~13), a probability of each pixel's 8-bit bin, "
                "so that the bound is on the 8-bit scale as it stands",
    "gaussian": "a continuous Gaussian density on the $[-1,1]$ scale, moved to the 8-bit scale by "
                "$\\log 127.5$ nats per dimension"}
BOUND_VARIANCES = {"posterior": "$\\sigma_t^2=\\tilde\\beta_t$, as the run samples", "beta": "$\\sigma_t^2=\\beta_t$"}


def bound_numbers(values: dict[str, str], b: VariationalBound, train_seconds: float | None, T: int) -> None:
    """Q2.3 on the DDPM: the bound in nats and bits/dim, its three parts and their shares, how t was drawn."""
    _estimate_numbers(values, "ddpm-bound", b.nll_bound, b.dims)
    put = _putter(values, "ddpm-bound")
    for key, v in (("n", b.n_images), ("exact-steps", b.exact_steps), ("strata", b.strata),
                   ("draws", b.draws_per_stratum), ("evaluations", b.network_evaluations)):
        put(key, v, str)
    values["ddpm-bound-strata-phrase"] = wording.strata_phrase(b.exact_steps, b.strata, b.draws_per_stratum,
                                                               b.network_evaluations)
    parts = {"reconstruction": b.reconstruction, "denoising": b.denoising, "prior": b.prior}
    for key, v in parts.items():
        put(key, v, lambda v: number(v, ".1f"))
        put(f"{key}-share", v / b.nll_bound.nats, percent)
    values["ddpm-bound-largest"] = BOUND_TERMS[max(parts, key=parts.get)]
    values["ddpm-bound-prior-phrase"] = (
        f"negligible: after $T={T}$ steps $\\mathbf{{x}}_T$ is almost pure noise" if b.prior < 0.01 * b.nll_bound.nats
        else f"not negligible: after only $T={T}$ steps $q(\\mathbf{{x}}_T|\\mathbf{{x}}_0)$ keeps part of the image")
    values["ddpm-bound-decoder"] = BOUND_DECODERS.get(b.decoder, escape(b.decoder))
    values["ddpm-bound-variance"] = BOUND_VARIANCES.get(b.variance, escape(b.variance))
    put("seconds", b.seconds, _seconds)
    if finite(train_seconds) and train_seconds > 0:
        values["ddpm-bound-cost-fraction"] = percent(b.seconds / train_seconds)


def bound_against_vae(values: dict[str, str], b: VariationalBound, g: AmortisationGaps, same_images: bool) -> None:
    """Q2.3: the DDPM's bound against the VAE's importance-sampled estimate, both -log p(x) in bits/dim on the
    8-bit scale, equal within WITHIN_SE standard errors (Monte Carlo and across images, both models)."""
    ddpm, vae = b.nll_bound.bits_per_dim, g.log_likelihood.bits_per_dim
    se = math.hypot(_bits_se(_total_se(b.nll_bound), b.dims), _bits_se(_total_se(g.log_likelihood), g.dims))
    images = gates.enough(min(b.n_images, g.n_images), MIN_GAP_IMAGES, "image", "a standard error over images")
    if not images.tells and ddpm <= vae + WITHIN_SE * se:  # "above" needs no precision: a bound above cannot rank
        values["ddpm-bound-vs-vae"] = (
            f"{'below' if ddpm < vae else 'above'} the VAE's importance-sampled estimate, {number(vae, '.3f')}, but "
            + gates.cannot("whether the two differ", images))
    else:
        values["ddpm-bound-vs-vae"] = compare(
            ddpm, vae, tolerance=WITHIN_SE * se,
            lower="below the VAE's importance-sampled estimate: since the bound lies above the DDPM's negative "
                  "log-likelihood, the DDPM's is lower than that estimate by at least the difference",
            higher="above the VAE's importance-sampled estimate: being an upper bound, it cannot rank the two models, "
                   "as the DDPM's own negative log-likelihood lies somewhere below it",
            same=f"within {WITHIN_SE} standard errors of the VAE's importance-sampled estimate")
    values["ddpm-bound-images-phrase"] = (
        "the same test images as the VAE's (same data, seed, test set and number of images)" if same_images else
        "other test images than the VAE's (the runs differ in data, seed, test set or number of images)")


# --------------------------------------------------------------------------- Part III: the theory on our models

FID_SAME_WITHIN = 0.05        # classifier-FIDs within this fraction of each other count as "about the same"
# The predictor's alignment is read on the excess of W_p's diagonal fraction in F's eigenbasis over its chance level
# (its expectation for the same W_p in a uniformly random basis, experiments.measurements.spectrum.alignment), 0 at
# chance and 1
# when fully aligned, and only where the fraction lies beyond ALIGNED_SPREADS standard deviations of its spread over
# random bases (an unrelated map lands within them):
ALIGNED_EXCESS = 0.5          # excess above which the predictor is "aligned" ...
PARTLY_ALIGNED_EXCESS = 0.1   # ... above which "partly aligned"
ALIGNED_SPREADS = 3
SPECTRUM_COLLAPSED_BELOW = 0.25  # effective rank or tr F below this fraction of the baseline's: "collapsed"
# What the linear model of Question 4 predicts for an ablation's spectrum: (what was removed, the prediction).
COLLAPSE_PREDICTED = {"no-stop-grad": ("the stop-gradient", "4.3"),
                      "no-predictor": ("the predictor", "the linear calculation of 4.5")}


def scientific(x: float) -> str:
    """A positive number of any size for running text: 2048, 20.5, 0.543, or $5.0\\cdot10^{-6}$ below 0.01."""
    if x >= 100:
        return f"{x:.0f}"
    if x == 0 or x >= 0.01:
        return f"{x:#.3g}".rstrip(".")
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"${mantissa}\\cdot10^{{{int(exponent)}}}$"


def measured_q3_q4_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Part III: Question 3 on the VAE and DDPM samples, Question 4 on the SimSiam runs."""
    values.update({"fid-same-within": percent(FID_SAME_WITHIN, 0), "aligned-excess": str(ALIGNED_EXCESS),
                   "partly-aligned-excess": str(PARTLY_ALIGNED_EXCESS), "aligned-spreads": str(ALIGNED_SPREADS),
                   "spectrum-collapsed-below": str(SPECTRUM_COLLAPSED_BELOW)})
    found = {}
    for slot in ("vae", "ddpm"):
        run = runs.get(slot)
        if run is not None and run.summary is not None and run.summary.discriminator is not None:
            found[slot] = run.summary.discriminator
            discriminator_numbers(values, slot, found[slot], wording.classifier_gate(run))
    if found:
        discriminator_closing(values, found)
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


MIN_HELD_OUT = 30   # held-out images per set for a bootstrap interval of a mean over them (as MIN_GAP_IMAGES)


def discriminator_numbers(values: dict[str, str], slot: str, r: summaries.DiscriminatorResult,
                          classifier: gates.Gate = gates.TELLS) -> None:
    """Question 3 on one run's samples: the JSD estimate, DRS's accepted fraction, and whether the accepted samples
    are closer to the test images than a random subset of the same size, by the classifier FID and by the JSD."""
    put = _putter(values, f"{slot}-drs")
    for key, interval in (("jsd", r.jsd), ("jsd-accepted", r.jsd_accepted), ("jsd-subset", r.jsd_subset)):
        put(key, interval.estimate, lambda v: number(v, ".3f"))
        put(f"{key}-interval", interval, lambda i: f"[{number(i.low, '.3f')}, {number(i.high, '.3f')}]")
    put("level", r.jsd.level, lambda v: percent(v, 0))
    held_out = gates.enough(min(r.n_fake_test, r.n_real_test), MIN_HELD_OUT, "held-out image per set",
                            "a bootstrap interval over held-out images", "held-out images per set")
    values[f"{slot}-drs-jsd-bound-word"] = jsd_word(r.jsd, held_out, r.n_fake_train, r.epochs)
    values[f"{slot}-drs-rule"] = drs_rule(r.gamma_quantile)
    put("accepted", r.accepted_fraction, percent)
    for key, count in (("n-accepted", r.n_accepted), ("n-test", r.n_fake_test), ("n-train", r.n_fake_train),
                       ("epochs", r.epochs)):
        put(key, count, str)
    put("seconds", r.seconds, duration)
    for key, value in (("fid-samples", r.fid_samples), ("fid-accepted", r.fid_accepted), ("fid-subset", r.fid_subset)):
        put(key, value, scientific)
    closer_fid = None
    if finite(r.fid_accepted) and finite(r.fid_subset):
        values[f"{slot}-drs-fid-word"] = compare(r.fid_accepted, r.fid_subset, higher="higher (farther) than",
                                                 lower="lower (closer) than", tolerance=FID_SAME_WITHIN * r.fid_subset,
                                                 same="about the same as")
        closer_fid = r.fid_accepted < (1 - FID_SAME_WITHIN) * r.fid_subset
    a, s = r.jsd_accepted, r.jsd_subset
    values[f"{slot}-drs-jsd-word"] = ("below" if a.high < s.low else "above" if a.low > s.high
                                      else "within the bootstrap intervals of")
    everything = gates.Gate(r.n_accepted < r.n_fake_test, "DRS kept every held-out sample, so the accepted set is "
                                                          "the whole set and there is nothing to compare")
    fid_gate = gates.first_failing(everything, classifier, gates.enough(
        r.n_accepted, wording.MIN_FID_IMAGES, "accepted sample", "a classifier-FID"))
    values[f"{slot}-drs-verdict"] = drs_verdict(closer_fid, a.high < s.low, fid_gate,
                                                gates.first_failing(everything, held_out))


MODEL_NAMES = {"vae": "the VAE's", "ddpm": "the DDPM's"}


def discriminator_closing(values: dict[str, str], results: dict[str, summaries.DiscriminatorResult]) -> None:
    """Question 3's closing paragraph, from the measured counts: what the discriminators trained on, and what DRS
    kept of each model's held-out samples."""
    values["drs-trained-phrase"] = wording.trained_phrase({MODEL_NAMES[s]: r.n_fake_train for s, r in results.items()})
    values["drs-accepted-sentence"] = "DRS kept " + "; it kept ".join(
        wording.accepted_phrase(r.accepted_fraction, MODEL_NAMES[s]) for s, r in results.items()) + "."


def jsd_word(jsd: summaries.Interval, held_out: gates.Gate = gates.TELLS, n_train: int | None = None,
             epochs: int | None = None) -> str:
    """What the held-out JSD estimate says: clearly above 0 (a difference found), negative (reported as measured, not
    clipped), or not clearly above 0; a discriminator that finds no difference does not show that there is none, and
    an interval over fewer than MIN_HELD_OUT held-out images shows nothing either way."""
    if not held_out.tells:
        return "but " + gates.cannot("whether the samples differ from the test images", held_out)
    trained = (f"; a discriminator trained on {gates.counted(n_train, 'sample')} for {gates.counted(epochs, 'epoch')} "
               "may miss a difference" if n_train is not None and epochs is not None else "")
    if jsd.low > 0:
        return "clearly above 0: the discriminator found a difference"
    if jsd.estimate < 0:
        return ("negative: on the held-out images the discriminator did worse than the constant $D=1/2$ (it fitted "
                "its training half too closely); the JSD itself is not negative, and the estimate is reported as "
                "measured, not clipped at 0. So this discriminator found no difference, and "
                + gates.cannot("whether the samples differ from the test images",
                               gates.Gate(False, "its interval includes 0" + trained)))
    return ("not clearly above 0: the discriminator found no reliable difference, and "
            + gates.cannot("whether the samples differ from the test images",
                           gates.Gate(False, "its interval includes 0" + trained)))


def drs_rule(gamma_quantile: float | None) -> str:
    """How the measurement's DRS chose its acceptance probabilities, in words."""
    if gamma_quantile is None:
        return "$e^{h(x)-\\max h}$, without Azadi et al.'s shift $\\gamma$ (the exact rule when $D=D^*$)"
    return (f"Azadi et al.'s $\\sigma(F(x)-\\gamma)$, $\\gamma$ the {percent(gamma_quantile, 0)} quantile of $F$ "
            "over the samples (no longer exact when $D=D^*$)")


def drs_verdict(closer_fid: bool | None, closer_jsd: bool, fid: gates.Gate = gates.TELLS,
                jsd: gates.Gate = gates.TELLS) -> str:
    """The clause on whether discriminator rejection sampling brought the samples closer to the test images; each
    measure speaks only when its gate tells (`fid`: enough accepted samples, a classifier above chance; `jsd`:
    enough held-out images), and neither when DRS kept every sample."""
    if not fid.tells and not jsd.tells:
        reasons = gates.Gate(False, "; ".join(dict.fromkeys(g.why for g in (fid, jsd))))
        return gates.cannot("whether resampling brought the samples closer to the test images", reasons)
    if closer_fid is None or not fid.tells:
        why = "too few samples were accepted for a classifier-FID" if closer_fid is None else \
            f"the classifier-FID cannot tell ({fid.why})"
        if not jsd.tells:
            return f"{why}, and the JSD estimate cannot tell ({jsd.why})"
        return (f"{why}; by the JSD estimate resampling brought them "
                + ("closer to the test images" if closer_jsd else "not clearly closer to the test images"))
    if not jsd.tells:
        return ("by the classifier-FID proxy resampling brought the samples " + ("closer to" if closer_fid else
                "not closer to") + f" the test images; the JSD estimate cannot tell ({jsd.why})")
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
        put(f"trace{suffix}", r.trace, scientific)
    put("spectrum-d", last.d, str)
    put("spectrum-n", last.n, str)
    put("spectrum-seconds", sum(r.seconds for r in results), duration)
    values[f"{slot}-spectrum-epochs"] = ", ".join(str(r.epoch) for r in results)
    al = last.alignment
    if al is None:
        return
    put("align-fraction", al.diagonal_fraction, lambda v: number(v, ".3f"))
    put("align-chance", al.chance, lambda v: number(v, ".3f"))
    put("align-r", min(last.n, last.d), str)
    put("align-cos", sum(abs(c) for c in al.cosines) / len(al.cosines), lambda v: number(v, ".2f"))
    put("align-k", len(al.cosines), str)
    if al.chance_spread is not None:
        put("align-spread", al.chance_spread, scientific)
        put("align-excess", al.excess, lambda v: number(v, ".2f"))
        put("align-cos-chance", al.cos_chance, lambda v: number(v, ".2f"))
        put("align-cos-chance-se", al.cos_chance_se, scientific)
        put("align-cos-excess", al.cos_excess, lambda v: number(v, ".2f"))
        put("align-rotations", al.rotations, str)
    values[f"{slot}-align-verdict"] = alignment_words(alignment_verdict(al), wording.steps_gate(values, slot))


ALIGNMENT_WORDS = {
    "aligned": "aligned with F's eigenvectors, as DirectPred observed",
    "partly aligned": "partly aligned with F's eigenvectors: beyond chance, short of the alignment DirectPred observed",
    "not aligned": "not aligned with F's eigenvectors: its diagonal fraction is what a random eigenbasis gives the "
                   "same map, unlike what DirectPred observed after long training",
    "undefined": "a multiple of the identity on F's eigenspace, which shares every basis, so its alignment is "
                 "undefined",
    "unknown": "of unknown alignment: this measurement compared its diagonal fraction with 1/r, which is the chance "
               "level only of a map with independent entries; rerun the run to measure it against the chance level "
               "of its own map"}


def alignment_words(verdict: str, steps: gates.Gate) -> str:
    """ALIGNMENT_WORDS[verdict]; for a run too short to have trained its predictor (report.wording.steps_gate), what
    was measured without the comparison with DirectPred, which observed the alignment after long training."""
    if steps.tells or verdict in ("undefined", "unknown"):
        return ALIGNMENT_WORDS[verdict]
    return (f"{verdict} with F's eigenvectors, but "
            + gates.cannot("whether training aligns it, as DirectPred observed", steps))


def alignment_verdict(al: summaries.Alignment) -> str:
    """A key of ALIGNMENT_WORDS: "aligned" / "partly aligned" when the diagonal fraction lies beyond ALIGNED_SPREADS
    spreads of its chance level and its excess exceeds ALIGNED_EXCESS / PARTLY_ALIGNED_EXCESS, else "not aligned";
    "undefined" at a chance level of 1, "unknown" for a summary measured against 1/r (no spread recorded)."""
    if al.chance_spread is None:
        return "unknown"
    if al.excess is None:
        return "undefined"
    beyond = al.diagonal_fraction - al.chance > ALIGNED_SPREADS * al.chance_spread
    if beyond and al.excess > ALIGNED_EXCESS:
        return "aligned"
    if beyond and al.excess > PARTLY_ALIGNED_EXCESS:
        return "partly aligned"
    return "not aligned"


def collapse_numbers(values: dict[str, str], slot: str, r: summaries.SpectrumResult,
                     base: summaries.SpectrumResult) -> None:
    """An ablation's last spectrum against the baseline's: effective rank and tr F as fractions of the baseline's,
    and whether it collapsed (either below SPECTRUM_COLLAPSED_BELOW of the baseline's), against the prediction."""
    rank, scale = r.effective_rank / base.effective_rank, r.trace / base.trace if base.trace > 0 else math.inf
    values[f"{slot}-erank-ratio"] = scientific(rank)
    values[f"{slot}-trace-ratio"] = scientific(scale)
    removed, theory = COLLAPSE_PREDICTED[slot.removeprefix("simsiam-")]
    steps = wording.steps_gate(values, slot)
    values[f"{slot}-spectrum-verdict"] = (
        f"collapsed without {removed}, as {theory} predicts" if min(rank, scale) < SPECTRUM_COLLAPSED_BELOW
        else f"did not collapse without {removed} in this run, although {theory} predicts that it does" if steps.tells
        else f"did not collapse without {removed} in this run, but "
             + gates.cannot(f"whether it would, as {theory} predicts", steps))
