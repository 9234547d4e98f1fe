"""Sentences chosen from the measured outcome: every branch is written out, and the numbers pick one.

The descriptive answers (1.3 b-d, f and 2.2 d) read a run's summary.json `observations`
(experiments.observe); 2.3(a) reads the T study's timings; 3.7 and 3.9 the ablations' collapse
indicator. Each function adds \\val keys to `values`; a number that is not there leaves its keys
unset, so the text shows the missing mark instead of a sentence. The thresholds below decide the
words, and the text states them.
"""
from __future__ import annotations

import math

from experiments import names
from experiments.summaries import DDPMSummary, DigitPatterns, Observations, StripObservations, VAESummary
from report.latex import escape, number, percent
from report.runs import T_SLOTS, RunFolder, finite

SHARPNESS_BAND = 1.25      # a Laplacian-energy ratio within [1/1.25, 1.25] reads "about as sharp as"
DIGITS_SAME_WITHIN = 0.05  # clear-digit fractions within 5 points read "about as often"
UNSURE_BELOW = 0.5         # a classifier confident on fewer test images than this cannot judge digit patterns
CLASS_TV_CLOSE = 0.15      # class proportions within this total-variation distance read "close"
EVEN_AT_LEAST = 0.5        # strips whose mean step is at least half their largest step read "smooth"
FID_SAME_WITHIN = 0.10     # classifier-FIDs within 10% (relative) read "about the same"
COST_BAND = 1.25           # a measured time ratio within [1/1.25, 1.25] x the expected one reads "as expected"
THRESHOLDS = {"sharpness-band": f"{SHARPNESS_BAND:g}", "digits-same-within": f"{100 * DIGITS_SAME_WITHIN:g}",
              "unsure-below": percent(UNSURE_BELOW, 0), "class-tv-close": f"{CLASS_TV_CLOSE:g}",
              "even-at-least": f"{EVEN_AT_LEAST:g}", "fid-same-within": percent(FID_SAME_WITHIN, 0),
              "cost-band": f"{COST_BAND:g}"}   # as the text quotes them


def significant(x: float, digits: int = 2) -> str:
    """A number with `digits` significant digits, never in exponent notation above 1: 0.0085, 0.42, 80, 1234."""
    text = f"{x:.{digits}g}"
    return number(x, ".0f") if "e" in text and abs(x) >= 1 else number(x, f".{digits}g")


def share(ratio: float) -> str:
    """A ratio before "theirs": 0.42 -> "42\\% of", 0.0085 -> "0.85\\% of", 80.2 -> "80 times"."""
    if ratio > 1:
        return f"{significant(ratio)} times"
    return f"{significant(100 * ratio)}\\% of"


def listing(items: list[str]) -> str:
    """a; a and b; a, b and c."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def sharpness_phrase(ratio: float, against: str) -> str:
    """Completes "The samples are ...": blurrier than / about as sharp as / sharper than `against`."""
    energy = f"Laplacian energy {share(ratio)} theirs"
    if ratio < 1 / SHARPNESS_BAND:
        return f"blurrier than {against}: {energy}"
    if ratio <= SHARPNESS_BAND:
        return f"about as sharp as {against} ({energy})"
    return (f"sharper than {against} by this measure ({energy}); in generated images, more high-frequency energy "
            "than in real ones points to residual noise or speckle rather than to crisper strokes")


def unsure(reference: DigitPatterns) -> str | None:
    """The caveat when the classifier itself is unsure on most real test images, else None."""
    if reference.confident_fraction >= UNSURE_BELOW:
        return None
    return (f"the classifier itself reads only {percent(reference.confident_fraction, 0)} of real test images as "
            "clear digits, so this count says little about digit patterns in this run")


def digits_phrase(samples: DigitPatterns, reference: DigitPatterns) -> str:
    """What the clear-digit fraction of the samples says, against the test images' own."""
    caveat = unsure(reference)
    if caveat:
        return caveat
    if samples.confident_fraction >= reference.confident_fraction - DIGITS_SAME_WITHIN:
        return "digit patterns are about as clear in the samples as in real images"
    if samples.confident_fraction >= reference.confident_fraction / 2:
        return "digit patterns are present in many samples, but clear less often than in real images"
    return "most samples show no digit the classifier can read clearly, unlike real images"


def class_tv(a: list[int], b: list[int]) -> float:
    """Total-variation distance between two class histograms: half the L1 distance of their proportions."""
    return 0.5 * sum(abs(x / sum(a) - y / sum(b)) for x, y in zip(a, b))


def classes_phrase(samples: DigitPatterns, reference: DigitPatterns) -> str:
    """Which classes the samples are read as, against the test images' proportions."""
    hist, ref = samples.class_histogram, reference.class_histogram
    never = [str(c) for c, n in enumerate(hist) if n == 0]
    top = max(range(len(hist)), key=hist.__getitem__)
    cover = ("all ten digits appear among the samples' predicted classes" if not never else
             f"the samples' predicted classes cover {len(hist) - len(never)} of the ten digits (never "
             + ", ".join(never) + ")")
    tv = class_tv(hist, ref)
    if tv <= CLASS_TV_CLOSE:
        verdict = "so the samples follow the test images' class proportions closely"
    elif unsure(reference):
        verdict = "a difference that, with a classifier this unsure of real images, says little about the model"
    else:
        verdict = "so the samples' class proportions differ from the test images' (the model favours some digits)"
    return (f"{cover}; the most frequent is digit {top} ({percent(hist[top] / sum(hist), 0)} of the samples, against "
            f"{percent(ref[top] / sum(ref), 0)} of the test images); the total-variation distance between the two "
            f"class distributions is {number(tv, '.2f')}, {verdict}")


def run_observations(values: dict[str, str], p: str, obs: Observations) -> None:
    """One run's sample statistics (1.3 b-d, 2.2 d): p-obs-* values, and their phrases."""
    s, ref = obs.samples, obs.reference
    values.update({
        f"{p}-obs-n": str(s.digits.n_images), f"{p}-obs-ref-n": str(ref.n_images),
        f"{p}-obs-threshold": f"{s.digits.threshold:g}",
        f"{p}-obs-sharpness": significant(s.sharpness_ratio),
        f"{p}-obs-sharpness-phrase": sharpness_phrase(s.sharpness_ratio, "the test images"),
        f"{p}-obs-blur-heading": ("Why the samples are blurry." if s.sharpness_ratio < 1 / SHARPNESS_BAND else
                                  "Why blur was expected, although these samples do not show it."),
        f"{p}-obs-confident": percent(s.digits.confident_fraction, 0),
        f"{p}-obs-ref-confident": percent(ref.confident_fraction, 0),
        f"{p}-obs-digits-phrase": digits_phrase(s.digits, ref),
        f"{p}-obs-classes-phrase": classes_phrase(s.digits, ref),
        f"{p}-obs-class-tv": number(class_tv(s.digits.class_histogram, ref.class_histogram), ".2f"),
        f"{p}-obs-fid": significant(s.classifier_fid, 3), f"{p}-obs-fid-n": str(s.fid_size)})
    if obs.reconstructions is not None:
        r = obs.reconstructions
        values[f"{p}-obs-recon-n"] = str(r.n_images)
        values[f"{p}-obs-recon-sharpness"] = significant(r.sharpness_ratio)
        values[f"{p}-obs-recon-phrase"] = sharpness_phrase(r.sharpness_ratio, "their originals")
        if r.t is not None:
            values[f"{p}-obs-recon-t"] = str(r.t)
    if obs.interpolations is not None:
        interpolation_observations(values, p, obs)


def interpolation_observations(values: dict[str, str], p: str, obs: Observations) -> None:
    """1.3(f): per strip set (test, prior) the mean step, evenness and middle frames; the smoothness verdict."""
    strips: dict[str, StripObservations] = {"test": obs.interpolations.test, "prior": obs.interpolations.prior}
    for kind, s in strips.items():
        values[f"{p}-interp-{kind}-step"] = significant(100 * s.mean_step) + r"\%"
        values[f"{p}-interp-{kind}-evenness"] = number(s.evenness, ".2f")
        values[f"{p}-interp-{kind}-middle"] = percent(s.middle_confident_fraction, 0)
    values[f"{p}-interp-pairs"] = str(strips["test"].n_strips)
    values[f"{p}-interp-steps"] = str(strips["test"].n_frames)
    word = {kind: "smooth" if s.evenness >= EVEN_AT_LEAST else "uneven" for kind, s in strips.items()}
    if word["test"] == word["prior"]:
        values[f"{p}-interp-verdict"] = f"{word['test']} both between test images and between prior draws"
    else:
        values[f"{p}-interp-verdict"] = f"{word['test']} between test images but {word['prior']} between prior draws"
    middle = min(s.middle_confident_fraction for s in strips.values())
    caveat = unsure(obs.reference)
    if caveat:
        values[f"{p}-interp-middle-phrase"] = caveat
    elif middle >= obs.reference.confident_fraction - DIGITS_SAME_WITHIN:
        values[f"{p}-interp-middle-phrase"] = "the path stays among images as digit-like as real ones"
    else:
        values[f"{p}-interp-middle-phrase"] = ("the path passes through images the classifier does not read as "
                                               "clear digits, as in a cross-fade between the two ends")


def observation_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Every run's observations, then the DDPM against the VAE (2.2 d) when both have them."""
    found: dict[str, Observations] = {}
    for slot in ("vae", "ddpm"):
        run = runs.get(slot)
        if run is not None and run.summary is not None and run.summary.observations is not None:
            found[slot] = run.summary.observations
            run_observations(values, slot, found[slot])
    if len(found) == 2:
        ddpm_against_vae(values, found["ddpm"], found["vae"], runs["ddpm"].summary, runs["vae"].summary)


def ddpm_against_vae(values: dict[str, str], d: Observations, v: Observations, ds: DDPMSummary,
                     vs: VAESummary) -> None:
    """2.2(d): the DDPM's samples against the VAE's on the same statistics, and which is closer to the test images."""
    rd, rv = max(d.samples.sharpness_ratio, 1e-12), max(v.samples.sharpness_ratio, 1e-12)
    cd, cv = d.samples.digits.confident_fraction, v.samples.digits.confident_fraction
    fd, fv = d.samples.classifier_fid, v.samples.classifier_fid
    values["p2-sharpness-vs-vae"] = ("sharper than" if rd > rv * SHARPNESS_BAND else
                                     "blurrier than" if rd < rv / SHARPNESS_BAND else "about as sharp as")
    values["p2-structure-agreement"] = {
        "sharper than": "This run agrees: its DDPM samples are sharper than its VAE samples by the Laplacian energy.",
        "about as sharp as": "This run does not show the difference: by the Laplacian energy its DDPM and VAE samples "
                             "are about as sharp.",
        "blurrier than": "This run does not show it: its DDPM samples are blurrier than its VAE samples by the "
                         "Laplacian energy, which a denoiser that has not yet learned fine detail could explain.",
    }[values["p2-sharpness-vs-vae"]]
    values["p2-confident-vs-vae"] = ("more often than" if cd > cv + DIGITS_SAME_WITHIN else
                                     "less often than" if cd < cv - DIGITS_SAME_WITHIN else "about as often as")
    same_fid = abs(fd - fv) <= FID_SAME_WITHIN * max(fd, fv)
    values["p2-fid-vs-vae"] = ("about the same as" if same_fid else
                               "lower (closer to the test images) than" if fd < fv else
                               "higher (further from the test images) than")
    comparable = fid_comparability(values, d.samples.fid_size, v.samples.fid_size,
                                   ds.classifier_test_accuracy, vs.classifier_test_accuracy)
    closer = {"sharpness": abs(math.log(rv)) - abs(math.log(rd)), "clear digits": cd - cv}
    margin = {"sharpness": math.log(SHARPNESS_BAND), "clear digits": DIGITS_SAME_WITHIN}
    if comparable:
        closer["classifier-FID"], margin["classifier-FID"] = fv - fd, FID_SAME_WITHIN * max(fd, fv)
    better = [k for k in closer if closer[k] > margin[k]]
    worse = [k for k in closer if closer[k] < -margin[k]]
    values["p2-verdict-vs-vae"] = verdict(better, worse, [k for k in closer if k not in better + worse])


def verdict(better: list[str], worse: list[str], same: list[str]) -> str:
    """Which model's samples are closer to the test images, measure by measure."""
    if better and worse:
        return (f"the comparison is mixed: the DDPM's samples are closer to the test images in {listing(better)} "
                f"and further from them in {listing(worse)}")
    if not better and not worse:
        return "the two models' samples are about equally close to the test images on every measure of the table"
    side, which = ("closer to", better) if better else ("further from", worse)
    rest = f", and about the same in {listing(same)}" if same else ""
    return f"the DDPM's samples are {side} the test images than the VAE's in {listing(which)}{rest}"


def fid_comparability(values: dict[str, str], nd: int, nv: int, acc_d: float | None, acc_v: float | None) -> bool:
    """Whether the two classifier-FIDs compare (same set size, identically trained classifiers), in words."""
    if nd != nv:
        values["p2-fid-comparable"] = (
            f"The two FIDs use sets of different sizes ({nd} DDPM and {nv} VAE samples, each against as many test "
            "images); the estimate is biased upwards for small sets, so they do not compare, and the verdict "
            "below leaves them out.")
        return False
    if not (finite(acc_d) and finite(acc_v)) or acc_d != acc_v:
        values["p2-fid-comparable"] = (
            "The two runs' digit classifiers differ (test accuracy " + (percent(acc_d) if finite(acc_d) else "unknown")
            + " and " + (percent(acc_v) if finite(acc_v) else "unknown") + "), so their FIDs are distances in "
            "different feature spaces and do not compare; the verdict below leaves them out.")
        return False
    values["p2-fid-comparable"] = (
        f"Both FIDs compare {nd} samples with {nd} test images in the features of classifiers trained identically "
        f"(same seed, data and epochs; both {percent(acc_d)} accurate on the test set), so they compare directly.")
    return True


# --------------------------------------------------------------------------- 2.3(a)

def cost_verdict(measured: float, expected: float, model: str, hardware: str) -> str:
    """Completes "the measured ratio is X, ...": against the ratio `expected` that `model` (a cost linear in T, or
    independent of it) predicts, within a factor COST_BAND."""
    machine = f"this machine ({hardware})"
    if expected / COST_BAND <= measured <= expected * COST_BAND:
        return f"as expected from {model}"
    if measured < 1 < expected:
        return ("not the expected ratio: the run with more steps was not slower, which no per-step cost explains; "
                f"these timings on {machine} measure something else (e.g.\\ other work sharing the machine), "
                "not the cost of a step")
    if 1 < expected and measured < expected:
        return (f"not the expected ratio: on {machine} a fixed cost that does not grow with $T$ (start-up, "
                "transfers, Python overhead) is a large part of the time at these $T$, which pulls the ratio "
                "towards 1")
    return (f"not the expected ratio, which {model} does not explain; each time is measured once on {machine}, "
            "so variation from the machine (other processes, clock changes) can account for it")


def tstudy_verdicts(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """2.3(a): sampling and training time ratios between the T/2 and 3T/2 runs against the cost model's:
    the ratio of T for sampling (T network passes), 1 for training (one pass per step, whatever T)."""
    low, high = (runs.get(slot) for slot in T_SLOTS)
    if not (low and high and low.summary and high.summary):
        return
    hardware = escape(high.hardware or "this machine")
    T = high.summary.timesteps / low.summary.timesteps
    for key, field, expected, model in (("sampling", "sample_seconds_per_image", T, "the linear cost"),
                                        ("train", "train_seconds_per_epoch", 1, "a cost independent of $T$")):
        a, b = getattr(low.summary, field), getattr(high.summary, field)
        if finite(a) and finite(b) and a > 0:
            values[f"tstudy-{key}-verdict"] = cost_verdict(b / a, expected, model, hardware)


# --------------------------------------------------------------------------- 3.7, 3.9

def collapse_summary(values: dict[str, str]) -> None:
    """3.7 and 3.9: which of the two ablations that restore symmetry collapsed, with the baseline beside."""
    words = {a: values.get(f"simsiam-{a}-collapse-word") for a in (names.BASELINE, "no-stop-grad", "no-predictor")}
    if None in words.values():
        return
    ratio = {a: values[f"simsiam-{a}-collapse-ratio"] for a in words}
    detail = (f"std$\\cdot\\sqrt d$ {ratio['no-stop-grad']} without the stop-gradient, {ratio['no-predictor']} "
              f"without the predictor, {ratio[names.BASELINE]} for the baseline")
    collapsed = [a for a in ("no-stop-grad", "no-predictor") if words[a] == "collapsed"]
    what = {"no-stop-grad": "the run without the stop-gradient", "no-predictor": "the run without the predictor"}
    if len(collapsed) == 2:
        sentence = "both ablations collapsed"
    elif collapsed:
        other = next(a for a in what if a not in collapsed)
        sentence = f"only {what[collapsed[0]]} collapsed, not {what[other]}"
    else:
        sentence = "neither ablation collapsed in the epochs trained, unlike in Chen \\& He's experiments"
    if words[names.BASELINE] == "not collapsed":
        base = "while the baseline did not" if collapsed else "and neither did the baseline"
    else:
        base = (f"{'and' if collapsed else 'but'} the baseline collapsed{' too' if collapsed else ''}, so these runs "
                "do not separate the designs")
    values["simsiam-collapse-summary"] = f"{sentence} ({detail}), {base}"
