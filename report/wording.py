"""Sentences chosen from the measured outcome: every branch is written out, and the numbers pick one.

The descriptive answers (1.3 b-d, f and 2.2 d) read a run's summary.json `observations`
(experiments.measurements.observe); 2.3(a) reads the T study's timings; 3.7 and 3.9 the ablations' collapse
indicator. Each function adds \\val keys to `values`; a number that is not there leaves its keys
unset, so the text shows the missing mark instead of a sentence. The thresholds below decide the
words, and the text states them.
"""
from __future__ import annotations

import math

from experiments.presentation import names
from experiments.presentation.summaries import DDPMSummary, DigitPatterns, Observations, StripObservations, VAESummary
from report import gates
from report.gates import Gate
from report.latex import escape, number, percent
from report.runs import T_SLOTS, RunFolder, finite

SHARPNESS_BAND = 1.25      # a Laplacian-energy ratio within [1/1.25, 1.25] reads "about as sharp as"
DIGITS_SAME_WITHIN = 0.05  # clear-digit fractions within 5 points read "about as often"
UNSURE_BELOW = 0.5         # a classifier confident on fewer test images than this cannot judge digit patterns
CLASS_TV_CLOSE = 0.15      # class proportions within this total-variation distance read "close"
EVEN_AT_LEAST = 0.5        # strips whose mean step is at least half their largest step read "smooth"
FID_SAME_WITHIN = 0.10     # classifier-FIDs within 10% (relative) read "about the same"
COST_BAND = 1.25           # a measured time ratio within [1/1.25, 1.25] x the expected one reads "as expected"
NOISE_ABOVE = 4.0          # a Laplacian-energy ratio above 4 is pixel noise, not detail (no real image set has it)
FLAT_BELOW = 0.05          # a Laplacian-energy ratio below 5% is a nearly flat image: almost no edges at all
STILL_STEP = 0.01          # interpolation frames changing by under 1% of the intensity range per step: nearly constant
THRESHOLDS = {"noise-above": f"{NOISE_ABOVE:g}", "flat-below": percent(FLAT_BELOW, 0),
              "still-step": percent(STILL_STEP, 0), "chance-margin": f"{round(100 * gates.CHANCE_MARGIN)}",
              "sharpness-band": f"{SHARPNESS_BAND:g}", "digits-same-within": f"{100 * DIGITS_SAME_WITHIN:g}",
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


def every(n: int, unit: str) -> str:
    """'every epoch' for 1, 'every 5 epochs' otherwise."""
    return f"every {unit}" if n == 1 else f"every {n} {unit}s"


def over_first(n: int, unit: str) -> str:
    """A warm-up's length: 'no warm-up' for 0, 'over the first epoch', 'over the first 5 epochs'."""
    return "no warm-up" if n <= 0 else f"a linear warm-up over the first {unit if n == 1 else f'{n} {unit}s'}"


def step_range(first: int, last: int, var: str = "t") -> str:
    """The steps first..last in running text (LaTeX): "step $t=2$", "steps $t=2$ and $3$", "steps $t=2,\\dots,9$";
    "no step" when last < first."""
    if last < first:
        return "no step"
    if last == first:
        return f"step ${var}={first}$"
    if last == first + 1:
        return f"steps ${var}={first}$ and ${last}$"
    return f"steps ${var}={first},\\dots,{last}$"


def strata_phrase(exact_steps: int, strata: int, draws: int, evaluations: int) -> str:
    """How the DDPM bound's sum over t = 2..T was stratified (measurements.bound): steps t = 2, ..., exact_steps + 1
    one by one, the rest in `strata` near-equal strata, `draws` draws of t in each, `evaluations` network passes."""
    exact = step_range(2, exact_steps + 1)
    own = "a stratum of its own" if exact_steps == 1 else "each a stratum of its own"
    rest = gates.counted(strata, "near-equal stratum", "near-equal strata")
    split = (f"every step in {rest}" if exact_steps <= 0 else f"{exact} {own}" if strata <= 0 else
             f"{exact} {own} and the rest in {rest}")
    return (f"{split}, with {gates.counted(draws, 'draw')} of $t$ in each stratum "
            f"({gates.counted(evaluations, 'evaluation')} of the noise model per image)")


NEARLY_ALL = 0.9    # DRS keeping at least 90% of the samples "kept nearly all": it changed the set little
SMALL_PART = 0.1    # DRS keeping at most 10% "kept a small fraction": e^h is dominated by a few samples


def accepted_phrase(fraction: float, who: str) -> str:
    """What discriminator rejection sampling kept of `who`'s held-out samples, by the fraction: "all", "nearly all"
    (>= NEARLY_ALL), "a small fraction" (<= SMALL_PART), "none", else the percentage, with what that means."""
    pct = percent(fraction)
    if fraction >= 1:
        return f"all of {who} held-out samples ({pct}), so it left that set as it was"
    if fraction >= NEARLY_ALL:
        return f"nearly all of {who} held-out samples ({pct}): their weights $e^{{h}}$ were nearly equal"
    if fraction <= 0:
        return f"none of {who} held-out samples"
    if fraction <= SMALL_PART:
        return f"a small fraction of {who} held-out samples ({pct}): a few samples dominated the weights $e^{{h}}$"
    return f"{pct} of {who} held-out samples"


def trained_phrase(counts: dict[str, int]) -> str:
    """What the discriminators trained on, from {"the VAE's": n, ...}: "32 samples and as many test images", or with
    different counts "32 samples (the VAE's) or 16 (the DDPM's) and as many test images"."""
    if len(set(counts.values())) == 1:
        return f"{gates.counted(next(iter(counts.values())), 'sample')} and as many test images"
    parts = [f"{gates.counted(n, 'sample') if k == 0 else n} ({who})" for k, (who, n) in enumerate(counts.items())]
    return " or ".join(parts) + " and as many test images"


def listing(items: list[str]) -> str:
    """a; a and b; a, b and c."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def sharpness_phrase(ratio: float, against: str, blobs: bool | None = None, contrast: float | None = None,
                     rule: str | None = None) -> str:
    """Completes "The samples are ...": blobs / nearly flat / blurrier than / about as sharp as / sharper than /
    noise, against `against` (what the figure shows comes first: blobs, flat patches and pixel noise are named as
    such). `blobs`, `contrast` and `rule`: the blob rule's verdict, the pixel-contrast ratio and the rule in words
    (experiments.measurements.observe), None in summaries written before them."""
    energy = f"Laplacian energy {share(ratio)} theirs"
    if contrast is not None:
        energy += f", pixel contrast {share(contrast)} theirs"
    if blobs:
        by = escape(rule) if rule else "of experiments.measurements.observe"
        return f"blobs: smooth colour fields without edges or strokes ({energy}; blobs by the rule {by})"
    if ratio < FLAT_BELOW:
        return (f"nearly flat, far blurrier than {against}: {energy}, so they show almost no edges or strokes, "
                "close to patches of uniform colour")
    if ratio < 1 / SHARPNESS_BAND:
        return f"blurrier than {against}: {energy}"
    if ratio <= SHARPNESS_BAND:
        return f"about as sharp as {against} ({energy})"
    if ratio > NOISE_ABOVE:
        return (f"noise rather than sharp images: {energy}, far more high-frequency energy than {against} have, "
                "which is what pixel noise gives, not crisper strokes")
    return (f"sharper than {against} by this measure ({energy}); in generated images, more high-frequency energy "
            "than in real ones points to residual noise or speckle rather than to crisper strokes")


def sharpness_short(ratio: float, against: str, blobs: bool | None = None) -> str:
    """The answer sheet's form of sharpness_phrase: one word and the ratio."""
    energy = f"Laplacian energy {share(ratio)} {against}'"
    word = ("blobs" if blobs else "nearly flat" if ratio < FLAT_BELOW else "blurry" if ratio < 1 / SHARPNESS_BAND
            else "about as sharp as real" if ratio <= SHARPNESS_BAND else "noise" if ratio > NOISE_ABOVE else
            "sharper than real (speckle)")
    return f"{word} ({energy})"


def sharpness_gate(ratio: float, who: str, blobs: bool | None = None) -> Gate:
    """Whether a Laplacian-energy ratio describes images whose sharpness compares: not pixel noise, not flat, not
    blobs with almost no edges (below FLAT_BELOW)."""
    if ratio > NOISE_ABOVE:
        return Gate(False, f"{who} are noise (Laplacian energy {share(ratio)} the test images')")
    if ratio < FLAT_BELOW:
        what = "blobs without edges" if blobs else "nearly flat"
        return Gate(False, f"{who} are {what} (Laplacian energy {share(ratio)} the test images')")
    return gates.TELLS


def blur_heading(ratio: float, blobs: bool | None = None) -> str:
    """The heading of 1.3(d)'s explanation, agreeing with what the samples show."""
    if blobs:
        return "Why the samples are smooth blobs."
    if ratio < FLAT_BELOW:
        return "Why the samples are flat rather than merely blurry."
    if ratio < 1 / SHARPNESS_BAND:
        return "Why the samples are blurry."
    return "Why blur was expected, although these samples do not show it."


def reference_gate(reference: DigitPatterns) -> Gate:
    """The classifier can judge digit patterns only if it reads most real test images as clear digits."""
    if reference.confident_fraction >= UNSURE_BELOW:
        return gates.TELLS
    return Gate(False, f"the classifier itself reads only {percent(reference.confident_fraction, 0)} of real test "
                       f"images as clear digits (at least {percent(UNSURE_BELOW, 0)} needed)")


def unsure(reference: DigitPatterns) -> str | None:
    """The caveat when the classifier itself is unsure on most real test images, else None."""
    gate = reference_gate(reference)
    return None if gate.tells else gate.why


def digits_phrase(samples: DigitPatterns, reference: DigitPatterns, classifier: Gate = gates.TELLS) -> str:
    """What the clear-digit fraction of the samples says, against the test images' own; `classifier`: whether
    the run's digit classifier is above chance at all."""
    gate = gates.first_failing(classifier, reference_gate(reference))
    if not gate.tells:
        return gates.cannot("whether the samples show digit patterns", gate)
    if samples.confident_fraction >= reference.confident_fraction - DIGITS_SAME_WITHIN:
        return "digit patterns are about as clear in the samples as in real images"
    if samples.confident_fraction >= reference.confident_fraction / 2:
        return "digit patterns are present in many samples, but clear less often than in real images"
    return "most samples show no digit the classifier can read clearly, unlike real images"


def class_tv(a: list[int], b: list[int]) -> float:
    """Total-variation distance between two class histograms: half the L1 distance of their proportions."""
    return 0.5 * sum(abs(x / sum(a) - y / sum(b)) for x, y in zip(a, b))


def digits_short(samples: DigitPatterns, reference: DigitPatterns, classifier: Gate = gates.TELLS) -> str:
    """The answer sheet's form of digits_phrase."""
    gate = gates.first_failing(classifier, reference_gate(reference))
    if not gate.tells:
        return f"digits: cannot tell ({gate.short})"
    return (f"clear digits {percent(samples.confident_fraction, 0)} of samples, "
            f"{percent(reference.confident_fraction, 0)} of test images")


def tv_noise(a: list[int], b: list[int]) -> float:
    """The total-variation distance that sampling alone gives between histograms of sizes sum(a), sum(b) drawn
    from one distribution (their pooled proportions p): 0.5 sum_k E|N(0, p_k(1-p_k)(1/n_a + 1/n_b))|."""
    n_a, n_b = sum(a), sum(b)
    pooled = [(x + y) / (n_a + n_b) for x, y in zip(a, b)]
    return 0.5 * sum(math.sqrt(2 / math.pi * p * (1 - p) * (1 / n_a + 1 / n_b)) for p in pooled)


def classes_phrase(samples: DigitPatterns, reference: DigitPatterns, classifier: Gate = gates.TELLS) -> str:
    """Which classes the samples are read as, against the test images' proportions; the verdict only when the
    classifier can read digits and the sets are large enough for their distance to stand out of sampling noise."""
    hist, ref = samples.class_histogram, reference.class_histogram
    never = [str(c) for c, n in enumerate(hist) if n == 0]
    top = max(range(len(hist)), key=hist.__getitem__)
    cover = ("all ten digits appear among the samples' predicted classes" if not never else
             f"the samples' predicted classes cover {len(hist) - len(never)} of the ten digits (never "
             + listing(never) + ")")
    tv, noise = class_tv(hist, ref), tv_noise(hist, ref)
    sizes = Gate(noise < CLASS_TV_CLOSE, f"at {gates.counted(sum(hist), 'sample')} and "
                 f"{gates.counted(sum(ref), 'test image')}, sampling alone gives a distance of about "
                 f"{number(noise, '.2f')}, not less than the {CLASS_TV_CLOSE:g} that reads as close")
    gate = gates.first_failing(classifier, reference_gate(reference), sizes)
    if not gate.tells:
        verdict = gates.cannot("whether the class proportions differ", gate)
    elif tv <= CLASS_TV_CLOSE:
        verdict = "so the samples follow the test images' class proportions closely"
    elif tv > 2 * noise:
        verdict = "so the samples' class proportions differ from the test images' (the model favours some digits)"
    else:
        verdict = gates.cannot("whether the class proportions differ", Gate(
            False, f"the distance is within twice the {number(noise, '.2f')} that sampling alone gives"))
    return (f"{cover}; the most frequent is digit {top} ({percent(hist[top] / sum(hist), 0)} of the samples, against "
            f"{percent(ref[top] / sum(ref), 0)} of the test images); the total-variation distance between the two "
            f"class distributions is {number(tv, '.2f')}{', ' if verdict.startswith('so ') else ': '}{verdict}")


def classifier_gate(run: RunFolder) -> Gate:
    """Whether the run's digit classifier reads digits at all: above chance on the run's test images."""
    accuracy = getattr(run.summary, "classifier_test_accuracy", None) if run.summary else None
    n = run.config.get("test_size") or run.provenance.get("n_test")
    return gates.above_chance(accuracy, n if finite(n) else None, "the digit classifier")


def run_observations(values: dict[str, str], p: str, obs: Observations, classifier: Gate = gates.TELLS) -> None:
    """One run's sample statistics (1.3 b-d, 2.2 d): p-obs-* values, and their phrases."""
    s, ref = obs.samples, obs.reference
    values.update({
        f"{p}-obs-n": str(s.digits.n_images), f"{p}-obs-ref-n": str(ref.n_images),
        f"{p}-obs-threshold": f"{s.digits.threshold:g}",
        f"{p}-obs-sharpness": significant(s.sharpness_ratio),
        f"{p}-obs-sharpness-phrase": sharpness_phrase(s.sharpness_ratio, "the test images", s.blobs,
                                                      s.contrast_ratio, s.blob_rule),
        f"{p}-obs-blur-heading": blur_heading(s.sharpness_ratio, s.blobs),
        f"{p}-obs-confident": percent(s.digits.confident_fraction, 0),
        f"{p}-obs-ref-confident": percent(ref.confident_fraction, 0),
        f"{p}-obs-digits-phrase": digits_phrase(s.digits, ref, classifier),
        f"{p}-obs-classes-phrase": classes_phrase(s.digits, ref, classifier),
        f"{p}-obs-class-tv": number(class_tv(s.digits.class_histogram, ref.class_histogram), ".2f"),
        f"{p}-obs-fid": significant(s.classifier_fid, 3), f"{p}-obs-fid-n": str(s.fid_size),
        f"{p}-obs-sharpness-short": sharpness_short(s.sharpness_ratio, "the test images", s.blobs),
        f"{p}-obs-digits-short": digits_short(s.digits, ref, classifier)})
    if obs.reconstructions is not None:
        r = obs.reconstructions
        values[f"{p}-obs-recon-short"] = sharpness_short(r.sharpness_ratio, "the originals")
        values[f"{p}-obs-recon-n"] = str(r.n_images)
        values[f"{p}-obs-recon-sharpness"] = significant(r.sharpness_ratio)
        values[f"{p}-obs-recon-phrase"] = sharpness_phrase(r.sharpness_ratio, "their originals")
        if r.t is not None:
            values[f"{p}-obs-recon-t"] = str(r.t)
    if obs.interpolations is not None:
        interpolation_observations(values, p, obs, classifier)


def still_gate(strips: dict[str, StripObservations]) -> Gate:
    """Smoothness means something only when the decoded frames change: a mean step of at least STILL_STEP."""
    if all(s.mean_step >= STILL_STEP for s in strips.values()):
        return gates.TELLS
    steps = listing([f"{significant(100 * s.mean_step)}\\% of the intensity range per step between "
                     + ("test images" if kind == "test" else "prior draws") for kind, s in strips.items()])
    return Gate(False, f"the decoded frames are nearly constant ({steps}; under {percent(STILL_STEP, 0)} "
                       "counts as constant), so there is no path whose regularity could be judged")


def interpolation_observations(values: dict[str, str], p: str, obs: Observations,
                               classifier: Gate = gates.TELLS) -> None:
    """1.3(f): per strip set (test, prior) the mean step, evenness and middle frames; the smoothness verdict."""
    strips: dict[str, StripObservations] = {"test": obs.interpolations.test, "prior": obs.interpolations.prior}
    for kind, s in strips.items():
        values[f"{p}-interp-{kind}-step"] = significant(100 * s.mean_step) + r"\%"
        values[f"{p}-interp-{kind}-evenness"] = number(s.evenness, ".2f")
        values[f"{p}-interp-{kind}-middle"] = percent(s.middle_confident_fraction, 0)
    values[f"{p}-interp-pairs"] = str(strips["test"].n_strips)
    values[f"{p}-interp-steps"] = str(strips["test"].n_frames)
    word = {kind: "smooth" if s.evenness >= EVEN_AT_LEAST else "uneven" for kind, s in strips.items()}
    still = still_gate(strips)
    if not still.tells:
        values[f"{p}-interp-verdict"] = f"not judged: {still.why}"
    elif word["test"] == word["prior"]:
        values[f"{p}-interp-verdict"] = f"{word['test']} both between test images and between prior draws"
    else:
        values[f"{p}-interp-verdict"] = f"{word['test']} between test images but {word['prior']} between prior draws"
    values[f"{p}-interp-short"] = (f"cannot tell ({still.short})" if not still.tells else
                                   values[f"{p}-interp-verdict"].replace(" both between", " between"))
    middle = min(s.middle_confident_fraction for s in strips.values())
    gate = gates.first_failing(classifier, reference_gate(obs.reference))
    if not gate.tells:
        values[f"{p}-interp-middle-phrase"] = gates.cannot("whether the intermediate images look like digits", gate)
    elif middle >= obs.reference.confident_fraction - DIGITS_SAME_WITHIN:
        values[f"{p}-interp-middle-phrase"] = "the path stays among images as digit-like as real ones"
    else:
        values[f"{p}-interp-middle-phrase"] = ("the path passes through images the classifier does not read as "
                                               "clear digits, as in a cross-fade between the two ends")


def observation_numbers(values: dict[str, str], runs: dict[str, RunFolder | None]) -> None:
    """Every run's observations, then the DDPM against the VAE (2.2 d) when both have them."""
    found: dict[str, Observations] = {}
    classifiers: dict[str, Gate] = {}
    for slot in ("vae", "ddpm"):
        run = runs.get(slot)
        if run is not None and run.summary is not None and run.summary.observations is not None:
            found[slot] = run.summary.observations
            classifiers[slot] = classifier_gate(run)
            run_observations(values, slot, found[slot], classifiers[slot])
    if len(found) == 2:
        ddpm_against_vae(values, found["ddpm"], found["vae"], runs["ddpm"].summary, runs["vae"].summary,
                         gates.first_failing(classifiers["ddpm"], classifiers["vae"]))


MIN_FID_IMAGES = 100   # a classifier-FID on fewer images per set is dominated by its small-sample bias


def ddpm_against_vae(values: dict[str, str], d: Observations, v: Observations, ds: DDPMSummary,
                     vs: VAESummary, classifier: Gate = gates.TELLS) -> None:
    """2.2(d): the DDPM's samples against the VAE's on the same statistics, and which is closer to the test images;
    each measure enters the verdict only when its gate says it can tell (`classifier`: both runs' classifiers)."""
    rd, rv = max(d.samples.sharpness_ratio, 1e-12), max(v.samples.sharpness_ratio, 1e-12)
    cd, cv = d.samples.digits.confident_fraction, v.samples.digits.confident_fraction
    fd, fv = d.samples.classifier_fid, v.samples.classifier_fid
    sharp = gates.first_failing(sharpness_gate(rd, "the DDPM's samples", d.samples.blobs),
                                sharpness_gate(rv, "the VAE's samples", v.samples.blobs))
    digits = gates.first_failing(classifier, reference_gate(d.reference), reference_gate(v.reference))
    comparable = fid_comparability(values, d.samples.fid_size, v.samples.fid_size,
                                   ds.classifier_test_accuracy, vs.classifier_test_accuracy)
    fid = gates.first_failing(
        gates.Gate(comparable, "the two FIDs are not comparable (see above)"), classifier,
        gates.enough(min(d.samples.fid_size, v.samples.fid_size), MIN_FID_IMAGES, "image per set",
                     "a classifier-FID", "images per set"))
    words: list[str] = []
    if sharp.tells:
        word = ("sharper than" if rd > rv * SHARPNESS_BAND else
                "blurrier than" if rd < rv / SHARPNESS_BAND else "about as sharp as")
        words.append(f"{word} the VAE's by the Laplacian energy")
        values["p2-structure-agreement"] = {
            "sharper than": "This run agrees: its DDPM samples are sharper than its VAE samples by the Laplacian "
                            "energy.",
            "about as sharp as": "This run does not show the difference: by the Laplacian energy its DDPM and VAE "
                                 "samples are about as sharp.",
            "blurrier than": "This run does not show it: its DDPM samples are blurrier than its VAE samples by the "
                             "Laplacian energy, which a denoiser that has not yet learned fine detail could explain.",
        }[word]
    else:
        values["p2-structure-agreement"] = (f"This run cannot test it: {sharp.why}, not a sharpness that compares "
                                            "with the other model's.")
    if digits.tells:
        words.append("read as clear digits " + ("more often than" if cd > cv + DIGITS_SAME_WITHIN else
                                                "less often than" if cd < cv - DIGITS_SAME_WITHIN else
                                                "about as often as") + " the VAE's")
    if fid.tells:
        words.append("of a classifier-FID " + ("about the same as" if abs(fd - fv) <= FID_SAME_WITHIN * max(fd, fv)
                                               else "lower (closer to the test images) than" if fd < fv else
                                               "higher (further from the test images) than") + " the VAE's (FIDs "
                     f"within {percent(FID_SAME_WITHIN, 0)} of each other count as the same)")
    closer = {"sharpness": abs(math.log(rv)) - abs(math.log(rd)), "clear digits": cd - cv,
              "classifier-FID": fv - fd}
    margin = {"sharpness": math.log(SHARPNESS_BAND), "clear digits": DIGITS_SAME_WITHIN,
              "classifier-FID": FID_SAME_WITHIN * max(fd, fv)}
    told = {"sharpness": sharp, "clear digits": digits, "classifier-FID": fid}
    usable = [k for k in closer if told[k].tells]
    values["p2-compare-vs-vae"] = ("The DDPM's samples are " + listing(words) + "." if words else
                                   "None of the three measures compares the two models in this run.")
    values["p2-verdict-short"] = ("cannot tell which is closer to the test images ("
                                  + listing(list(dict.fromkeys(told[k].short for k in closer))) + ")")
    if not usable:
        reasons = listing(list(dict.fromkeys(g.why for g in told.values())))
        values["p2-verdict-vs-vae"] = f"this run cannot tell which model's samples are closer to the test images: " \
                                      f"{reasons}"
        return
    better = [k for k in usable if closer[k] > margin[k]]
    worse = [k for k in usable if closer[k] < -margin[k]]
    values["p2-verdict-vs-vae"] = verdict(better, worse, [k for k in usable if k not in better + worse])
    values["p2-verdict-short"] = values["p2-verdict-vs-vae"].removeprefix("the ").replace("the test images", "test")
    left = [k for k in closer if k not in usable]
    if left:
        values["p2-verdict-vs-vae"] += "; " + "; ".join(f"{k} cannot tell ({told[k].why})" for k in left)


def verdict(better: list[str], worse: list[str], same: list[str]) -> str:
    """Which model's samples are closer to the test images, measure by measure."""
    if better and worse:
        return (f"the comparison is mixed: the DDPM's samples are closer to the test images in {listing(better)} "
                f"and further from them in {listing(worse)}")
    if not better and not worse:
        return "the two models' samples are about equally close to the test images on every measure that can tell"
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


# --------------------------------------------------------------------------- loss curves

RISE_ABOVE = 0.01   # a last test loss more than 1% above its minimum reads as rising


def loss_trend(losses: list[float], what: str = "test loss") -> str:
    """What a loss curve per epoch shows, in one sentence: falling, flat, or rising after its minimum."""
    losses = [x for x in losses if finite(x)]
    if len(losses) < 2:
        return f"With {gates.counted(len(losses), 'epoch')} the {what} shows no trend."
    best = min(range(len(losses)), key=losses.__getitem__)
    first, last = losses[0], losses[-1]
    fmt = ".4g"
    if last - losses[best] > RISE_ABOVE * abs(losses[best]):
        return (f"The {what} rises after epoch {best + 1} (from {number(losses[best], fmt)} to {number(last, fmt)} "
                f"at epoch {len(losses)}): on the test set the model got worse in its last "
                + ("epoch." if len(losses) - best == 2 else f"{len(losses) - best - 1} epochs."))
    if abs(last - first) <= RISE_ABOVE * abs(first):
        return f"The {what} stays flat over the {len(losses)} epochs ({number(first, fmt)} to {number(last, fmt)})."
    return f"The {what} falls over the {len(losses)} epochs, from {number(first, fmt)} to {number(last, fmt)}."


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

MIN_STEPS = 100   # optimiser steps before SimSiam designs can differ (the smoke preset takes 8; real runs thousands)
ABLATION_ROLE = {"no-stop-grad": "the run without the stop-gradient", "no-predictor": "the run without the predictor",
                 "proj-4096": "the run with the larger projector output", "batch-4096": "the large-batch run"}


def steps_gate(values: dict[str, str], slot: str) -> Gate:
    """Whether a SimSiam run trained long enough for its design to show: at least MIN_STEPS optimiser steps."""
    epochs, per_epoch = values.get(f"{slot}-epochs"), values.get(f"{slot}-steps-per-epoch")
    if epochs is None or per_epoch is None:
        return gates.TELLS  # unknown length: the verdict stands on the indicator alone
    steps = int(epochs) * int(per_epoch)
    lr = values.get(f"{slot}-peak-lr")
    at = f" at learning rate {lr}" if lr else ""
    return gates.Gate(steps >= MIN_STEPS, f"after {gates.counted(steps, 'optimiser step')}{at} every run is still "
                                          f"near its shared initialisation (fewer than the {MIN_STEPS} steps a "
                                          "comparison of designs needs)")


def collapse_summary(values: dict[str, str]) -> None:
    """3.7 and 3.9: which of the two ablations that restore symmetry collapsed, with the baseline beside; each
    ablation's own collapse sentence (3.5, 3.8); whether the ablations have moved apart at all."""
    base = f"simsiam-{names.BASELINE}"
    for ablation, role in ABLATION_ROLE.items():
        word, ratio = values.get(f"simsiam-{ablation}-collapse-word"), values.get(f"simsiam-{ablation}-collapse-ratio")
        if word is not None:
            values[f"simsiam-{ablation}-collapse-sentence"] = (
                f"By the collapse indicator {role} collapsed (std$\\cdot\\sqrt d={ratio}$, below "
                f"{values.get('collapse-threshold', '?')}), so its kNN accuracy is that of a collapsed encoder, not a "
                "measure of the change alone." if word == "collapsed" else
                f"By the collapse indicator {role} did not collapse (std$\\cdot\\sqrt d={ratio}$).")
    apart = [values.get(f"simsiam-{a}-apart") for a in ABLATION_ROLE]
    if apart and all(a == "no" for a in apart):
        steps = steps_gate(values, base)
        values["simsiam-not-apart"] = (
            "The ablations have not moved apart: no final kNN accuracy differs from the baseline's beyond the 95\\% "
            "interval of the difference" + (f"; {steps.why}." if not steps.tells else "."))
    else:
        values["simsiam-not-apart"] = ""
    words = {a: values.get(f"simsiam-{a}-collapse-word") for a in (names.BASELINE, "no-stop-grad", "no-predictor")}
    if None in words.values():
        return
    ratio = {a: values[f"simsiam-{a}-collapse-ratio"] for a in words}
    detail = (f"std$\\cdot\\sqrt d$ {ratio['no-stop-grad']} without the stop-gradient, {ratio['no-predictor']} "
              f"without the predictor, {ratio[names.BASELINE]} for the baseline")
    predictor = "collapsed" if words["no-predictor"] == "collapsed" else "did not collapse"
    values["simsiam-no-predictor-clause"] = (f"our run without the predictor (3.5(a)) {predictor} "
                                             f"(std$\\cdot\\sqrt d={ratio['no-predictor']}$)")
    steps = steps_gate(values, base)
    if not steps.tells:
        values["simsiam-collapse-summary"] = gates.cannot("which of these designs prevents collapse", steps) \
            + f" ({detail})"
        return
    collapsed = [a for a in ("no-stop-grad", "no-predictor") if words[a] == "collapsed"]
    if len(collapsed) == 2:
        sentence = "both ablations collapsed"
    elif collapsed:
        other = next(a for a in ("no-stop-grad", "no-predictor") if a not in collapsed)
        sentence = f"only {ABLATION_ROLE[collapsed[0]]} collapsed, not {ABLATION_ROLE[other]}"
    else:
        sentence = "neither ablation collapsed in the epochs trained, unlike in Chen \\& He's experiments"
    if words[names.BASELINE] == "not collapsed":
        base_words = "while the baseline did not" if collapsed else "and neither did the baseline"
    else:
        base_words = (f"{'and' if collapsed else 'but'} the baseline collapsed{' too' if collapsed else ''}, so these "
                      "runs do not separate the designs")
    values["simsiam-collapse-summary"] = f"{sentence} ({detail}), {base_words}"
