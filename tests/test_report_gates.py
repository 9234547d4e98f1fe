"""Verdicts and their gates (report.gates, report.wording, report.numbers): each gate with the measurement that
tells, the one that tells the other way, and the one that cannot tell; and every verdict that its gate refuses
reads "cannot tell", never a direction. Generator-level: no run folder, no LaTeX."""
from __future__ import annotations

import dataclasses
import re

import pytest

from experiments.presentation.summaries import (
    DDPMSummary,
    DiscriminatorResult,
    Estimate,
    Interpolations,
    Interval,
    StripObservations,
    VAESummary,
)
from report import gates, numbers, sheet, wording
from tests.test_report import digits, drs_result, fake_bound, fake_gaps, observations, spectrum_result

# --------------------------------------------------------------------------- the three kinds of gate


def test_wilson_interval_matches_the_textbook_value():
    low, high = gates.wilson(0.5, 100)
    assert abs(low - 0.4038) < 1e-3 and abs(high - 0.5962) < 1e-3
    assert gates.wilson(0.0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("low, high, tells", [(0.5, 2.0, True), (-3.0, -0.1, True), (-1.0, 1.0, False)])
def test_interval_excludes_tie_both_directions_and_the_tie(low, high, tells):
    gate = gates.interval_excludes_tie(low, high, "the difference", unit=" points")
    assert gate.tells == tells
    assert ("includes no difference" in gate.why) == (not tells)


@pytest.mark.parametrize("p1, p2, n, tells", [
    (0.80, 0.12, 1000, True),    # far apart, many images: a direction
    (0.12, 0.80, 1000, True),    # the other direction
    (0.14, 0.125, 64, False),    # the smoke runs: 64 test images, a point and a half apart
])
def test_points_differ_on_test_images(p1, p2, n, tells):
    gate = gates.points_differ(p1, n, p2, n, "the difference")
    assert gate.tells == tells
    if not tells:
        assert re.search(r"\[\$-\$\d+\.\d, \+\d+\.\d\] points, includes no difference", gate.why)


def test_proportion_difference_contains_the_difference_and_is_wider_for_fewer_images():
    low, high = gates.proportion_difference(0.6, 100, 0.5, 100)
    assert low < 0.1 < high
    narrow = gates.proportion_difference(0.6, 10_000, 0.5, 10_000)
    assert narrow[1] - narrow[0] < high - low and narrow[0] > 0


@pytest.mark.parametrize("accuracy, n, tells, words", [
    (0.953, 26032, True, ""),
    (0.140625, 128, False, r"at chance (14.1\% on 128 test images, chance 10\%"),     # the smoke DDPM's classifier
    (0.22, 16, False, r"not shown above chance (22\% on 16 test images"),   # 16 images cannot show it
    (None, 100, False, "was not measured"),
])
def test_above_chance(accuracy, n, tells, words):
    gate = gates.above_chance(accuracy, n, "the digit classifier")
    assert gate.tells == tells and words in gate.why


@pytest.mark.parametrize("count, tells, words", [(100, True, ""), (1, False, "1 image, fewer than the 100"),
                                                 (16, False, "16 images, fewer"), (None, False, "not recorded")])
def test_enough(count, tells, words):
    gate = gates.enough(count, 100, "image", "a classifier-FID")
    assert gate.tells == tells and words in gate.why


def test_first_failing_and_short_reason():
    bad = gates.above_chance(0.06, 64, "the digit classifier")
    assert gates.first_failing(gates.TELLS, bad, gates.Gate(False, "other")) == bad
    assert gates.first_failing(gates.TELLS, gates.TELLS).tells
    assert bad.short == "the digit classifier is at chance"
    assert gates.cannot("t*", bad).startswith("this run cannot tell t*: the digit classifier is at chance")


# --------------------------------------------------------------------------- verdicts against their gates

AT_CHANCE = gates.above_chance(0.078, 64, "the digit classifier")


@pytest.mark.parametrize("ratio, start", [(0.0, "nearly flat"), (0.0085, "nearly flat"), (0.5, "blurrier than X"),
                                          (1.0, "about as sharp as X"), (2.0, "sharper than X"),
                                          (80.0, "noise rather than sharp images")])
def test_sharpness_says_what_the_figure_shows(ratio, start):
    assert wording.sharpness_phrase(max(ratio, 1e-9), "X").startswith(start)


RULE = "Laplacian energy below 25% of the test images' with a pixel contrast at least 25% of theirs"


@pytest.mark.parametrize("ratio, blobs, contrast, start, short", [
    (0.0085, True, 0.6, "blobs: smooth colour fields without edges or strokes (Laplacian energy 0.85\\% of theirs, "
                        "pixel contrast 60\\% of theirs; blobs by the rule Laplacian energy below 25\\%", "blobs"),
    (0.2, True, 1.0, "blobs: smooth colour fields", "blobs"),
    (0.007, False, 0.105, "nearly flat", "nearly flat"),   # the smoke VAE: 10% of the test images' contrast: flat
    (0.5, False, 0.8, "blurrier than X", "blurry"),
    (53.0, False, 3.7, "noise rather than sharp images", "noise"),
    (0.0085, None, None, "nearly flat", "nearly flat"),    # a summary written before the rule: as before
])
def test_blobs_are_named_first_when_the_rule_fires(ratio, blobs, contrast, start, short):
    assert wording.sharpness_phrase(ratio, "X", blobs, contrast, RULE).startswith(start)
    assert wording.sharpness_short(ratio, "X", blobs).startswith(short + " (")
    assert (wording.blur_heading(ratio, blobs) == "Why the samples are smooth blobs.") == bool(blobs)


def test_blob_samples_reach_the_text_and_stop_a_sharpness_comparison():
    obs = observations(sharpness=0.0085, confident=0.5, fid=1.0)
    obs.samples = dataclasses.replace(obs.samples, contrast_ratio=0.6, blobs=True, blob_rule=RULE)
    values = {}
    wording.run_observations(values, "vae", obs)
    assert values["vae-obs-sharpness-phrase"].startswith("blobs") and "25\\%" in values["vae-obs-sharpness-phrase"]
    assert values["vae-obs-sharpness-short"].startswith("blobs (")
    gate = wording.sharpness_gate(0.0085, "the VAE's samples", blobs=True)
    assert not gate.tells and gate.why.startswith("the VAE's samples are blobs without edges")
    assert wording.sharpness_gate(0.2, "the VAE's samples", blobs=True).tells   # blurry blobs still compare


def test_digits_and_classes_refuse_a_classifier_at_chance():
    assert wording.digits_phrase(digits(0.9), digits(0.9), AT_CHANCE).startswith(
        "this run cannot tell whether the samples show digit patterns: the digit classifier is at chance")
    assert wording.digits_phrase(digits(0.0), digits(0.0)).startswith("this run cannot tell")  # test images at 0%
    phrase = wording.classes_phrase(digits(0.0, [0, 100] + [0] * 8), digits(0.0, [3, 37, 0, 0, 0, 0, 0, 23, 1, 0]))
    assert "cannot tell whether the class proportions differ" in phrase and "so the samples" not in phrase


def test_classes_phrase_three_ways():
    many = [300] * 10
    assert "follow the test images' class proportions closely" in wording.classes_phrase(
        digits(0.8, many), digits(0.8, many))
    skewed = [1500] + [167] * 9
    assert "differ from the test images'" in wording.classes_phrase(digits(0.8, skewed), digits(0.8, many))
    small = [6, 4] + [0] * 8       # 10 samples: sampling alone moves the distance more than the band
    phrase = wording.classes_phrase(digits(0.8, small), digits(0.8))
    assert "sampling alone gives a distance of about" in phrase and "cannot tell" in phrase


def strip(mean_step: float, evenness: float, n_strips: int = 3) -> StripObservations:
    return StripObservations(n_strips=n_strips, n_frames=10, mean_step=mean_step, evenness=evenness,
                             steps=[mean_step] * 9, middle_confident_fraction=0.7)


@pytest.mark.parametrize("steps, evenness, start", [
    ((0.0026, 0.0065), (0.66, 0.59), "not judged: the decoded frames are nearly constant"),  # the smoke VAE
    ((0.03, 0.03), (0.8, 0.7), "smooth both"),
    ((0.03, 0.03), (0.2, 0.3), "uneven both"),
])
def test_interpolation_verdict_refuses_constant_frames(steps, evenness, start):
    obs = observations(sharpness=0.5, confident=0.5, fid=1.0, evenness=(0.5, 0.5))
    obs.interpolations = Interpolations(test=strip(steps[0], evenness[0]), prior=strip(steps[1], evenness[1]))
    values = {}
    wording.interpolation_observations(values, "vae", obs)
    assert values["vae-interp-verdict"].startswith(start)


def ddpm_vae(sharp_d: float, sharp_v: float, fid_size: int, accuracy: float = 0.95):
    d = observations(sharpness=sharp_d, confident=0.7, fid=2.0, histogram=[fid_size // 10] * 10)
    v = observations(sharpness=sharp_v, confident=0.4, fid=5.0, histogram=[fid_size // 10] * 10)
    ds = DDPMSummary.partial(classifier_test_accuracy=accuracy)
    vs = VAESummary.partial(classifier_test_accuracy=accuracy)
    return d, v, ds, vs


def test_ddpm_against_vae_noise_cannot_agree():
    """The smoke report's 2.2(d): DDPM samples at 80x the test images' Laplacian energy, a classifier at chance,
    16 and 100 images: no "agrees", no "closer"."""
    d, v, ds, vs = ddpm_vae(80.0, 0.0085, 100, accuracy=0.078)
    values = {}
    wording.ddpm_against_vae(values, d, v, ds, vs, AT_CHANCE)
    assert values["p2-structure-agreement"].startswith("This run cannot test it: the DDPM's samples are noise")
    assert values["p2-verdict-vs-vae"].startswith("this run cannot tell which model's samples are closer")
    assert "agrees" not in values["p2-structure-agreement"] and "closer to the test images than" not in \
        values["p2-verdict-vs-vae"]


def test_ddpm_against_vae_tells_when_every_gate_passes():
    d, v, ds, vs = ddpm_vae(1.05, 0.31, 1000)
    values = {}
    wording.ddpm_against_vae(values, d, v, ds, vs)
    assert values["p2-structure-agreement"].startswith("This run agrees")
    assert values["p2-verdict-vs-vae"].startswith("the DDPM's samples are closer to the test images than the VAE's")
    assert "cannot" not in values["p2-verdict-vs-vae"]
    few = {}
    wording.ddpm_against_vae(few, *ddpm_vae(1.05, 0.31, 50))   # 50 images per FID set: FID left out, with why
    assert "classifier-FID cannot tell (50 images per set, fewer than the 100" in few["p2-verdict-vs-vae"]


@pytest.mark.parametrize("gate, t_star, start", [
    (gates.TELLS, 27.5, "$t^*=28$, i.e."),
    (gates.TELLS, None, "$t^*$ is not reached"),
    (gates.above_chance(0.14, 128, "the digit classifier"), 27.5, "Not interpretable: this run cannot tell $t^*$"),
])
def test_tstar_three_ways(gate, t_star, start):
    values = {}
    numbers.tstar_numbers(values, "ddpm", t_star, 50, gate)
    assert values["ddpm-tstar-result"].startswith(start)
    assert (values["ddpm-tstar"] == "n/a") == (not gate.tells)


def simsiam_values(steps_per_epoch: int, words: dict[str, str], apart: str = "no") -> dict[str, str]:
    values = {"simsiam-baseline-epochs": "2", "simsiam-baseline-steps-per-epoch": str(steps_per_epoch),
              "simsiam-baseline-peak-lr": "0.004", "collapse-threshold": "0.2"}
    for ablation in ("baseline", "no-stop-grad", "no-predictor", "proj-4096", "batch-4096"):
        values[f"simsiam-{ablation}-collapse-word"] = words.get(ablation, "not collapsed")
        values[f"simsiam-{ablation}-collapse-ratio"] = "0.1" if words.get(ablation) == "collapsed" else "0.9"
        if ablation != "baseline":
            values[f"simsiam-{ablation}-apart"] = apart
    return values


def test_collapse_summary_refuses_runs_too_short_to_separate_designs():
    values = simsiam_values(4, {"batch-4096": "collapsed"})
    wording.collapse_summary(values)
    assert values["simsiam-collapse-summary"].startswith(
        "this run cannot tell which of these designs prevents collapse: after 8 optimiser steps at learning rate "
        "0.004 every run is still near its shared initialisation")
    assert values["simsiam-not-apart"].startswith("The ablations have not moved apart") and "8 optimiser" in \
        values["simsiam-not-apart"]
    # 3.5(b): the large-batch run is collapsed by the report's own rule, and says so
    assert values["simsiam-batch-4096-collapse-sentence"].startswith("By the collapse indicator the large-batch run "
                                                                      "collapsed")
    # 3.8 cites the predictor run for what it did, not for the literature's collapse
    assert values["simsiam-no-predictor-clause"].startswith("our run without the predictor (3.5(a)) did not collapse")


def test_collapse_summary_with_enough_steps_gives_the_verdict():
    values = simsiam_values(400, {"no-stop-grad": "collapsed", "no-predictor": "collapsed"}, apart="yes")
    wording.collapse_summary(values)
    assert values["simsiam-collapse-summary"].startswith("both ablations collapsed")
    assert values["simsiam-not-apart"] == ""


@pytest.mark.parametrize("losses, start", [
    ([3157.8, 3270.8], "The test loss rises after epoch 1 (from 3158 to 3271 at epoch 2)"),   # the smoke VAE
    ([3.0, 2.0, 1.5], "The test loss falls over the 3 epochs"),
    ([1.0, 1.001], "The test loss stays flat"),
    ([1.0], "With 1 epoch the test loss shows no trend."),
    ([], "With 0 epochs the test loss shows no trend."),
])
def test_loss_trend_says_what_the_curve_does(losses, start):
    assert wording.loss_trend(losses).startswith(start)


# --------------------------------------------------------------------------- the answer sheet


def test_answer_sheet_lists_every_question_once_with_its_page():
    from pathlib import Path
    tex = (Path(__file__).resolve().parents[1] / "report" / "answers.tex").read_text()
    for q, fig in sheet.PRACTICAL.items():
        assert len(re.findall(rf"\\pageref{{q:{re.escape(q)}}}", tex)) == 1, q
        if fig:
            assert f"\\figref{{{fig}}}" in tex
    for q in sheet.THEORY:
        assert len(re.findall(rf"\\pageref{{q:t{re.escape(q)}}}", tex)) == 1, q
    body = "".join((Path(__file__).resolve().parents[1] / "report" / d).read_text()
                   for d in ("practical/p1.tex", "practical/p2.tex", "practical/p2_optional.tex", "practical/p3.tex",
                             "theory/q1.tex", "theory/q2.tex", "theory/q3.tex", "theory/q4.tex"))
    for label in [*sheet.PRACTICAL, *(f"t{q}" for q in sheet.THEORY)]:
        assert f"\\label{{q:{label}}}" in body, label


def test_answer_sheet_values_come_from_the_body_values():
    values = {"vae-wall": "19.0 s", "vae-epochs-phrase": "2 epochs", "vae-epoch-seconds": "9.5 s",
              "ddpm-tstar-answer": "not interpretable: classifier at chance",
              "p2-verdict-short": "cannot tell which is closer to the test images (the DDPM's samples are noise)"}
    sheet.answer_numbers(values)
    assert values["answer-1.3a"] == "19.0 s for 2 epochs (9.5 s per epoch)"
    assert values["answer-2.2c"] == values["ddpm-tstar-answer"] and values["answer-2.2d"] == values["p2-verdict-short"]
    assert r"\val{simsiam-no-stop-grad-final-knn}" in values["answer-3.4"]   # missing: shown as missing


# --------------------------------------------------------------------------- edge values: no template artefacts

ARTEFACTS = [r"\(s\)", r"\b1 (?:epoch|image|sample|step|point|strip|draw|run)s\b",
             r"\b(?:0|[2-9]|\d\d+) (?:epoch|image|sample|optimiser step|test image)\b(?!s)",
             r"every 1 ", r"few hundred", r"t ?= ?2, ?\\dots, ?[23]\$", r"small accepted fraction", r"\bnan\b",
             r"\binf\b", r"None", r"\b1 (?:near-equal )?strata\b", r"\b(?:0|[2-9]|\d\d+) (?:near-equal )?stratum\b"]


def renderings() -> list[str]:
    """Every sentence generator at its edge values: counts 0, 1, 2 and many; fractions 0% and 100%."""
    out = []
    for n in (0, 1, 2, 1000):
        out += [gates.counted(n, "epoch"), gates.counted(n, "test image"), wording.every(max(n, 1), "epoch"),
                wording.over_first(n, "epoch"), gates.enough(n, 100, "image", "a classifier-FID").why,
                wording.loss_trend([5.0 - k for k in range(n)][:50]), wording.loss_trend([1.0 + k for k in range(n)])]
    for accuracy in (0.0, 1.0):
        for n in (1, 2, 1000):
            out.append(gates.above_chance(accuracy, n, "the digit classifier").why)
            out.append(gates.points_differ(accuracy, n, 1 - accuracy, n, "the difference").why)
    for ratio in (1e-12, 1.0, 1000.0):
        out += [wording.sharpness_phrase(ratio, "the test images"), wording.sharpness_short(ratio, "the test images")]
        for contrast in (0.0, 1.0, 1000.0):
            out += [wording.sharpness_phrase(ratio, "the test images", contrast >= 0.25, contrast, RULE),
                    wording.sharpness_short(ratio, "the test images", contrast >= 0.25)]
    for confident in (0.0, 1.0):
        for n in (1, 2, 1000):
            one_class = [n] + [0] * 9
            every_class = [n] * 10
            for hist in (one_class, every_class):
                out += [wording.digits_phrase(digits(confident, hist), digits(confident, hist)),
                        wording.classes_phrase(digits(confident, hist), digits(1 - confident, every_class)),
                        wording.digits_short(digits(confident, hist), digits(confident, every_class))]
    for step in (0.0, 1.0):
        for n_strips in (1, 2):
            obs = observations(sharpness=0.5, confident=1.0, fid=1.0, evenness=(0.5, 0.5))
            obs.interpolations = Interpolations(test=strip(step, 1.0, n_strips), prior=strip(step, 0.0, n_strips))
            values = {}
            wording.interpolation_observations(values, "vae", obs)
            out += list(values.values())
    for steps_per_epoch in (1, 2, 1000):
        values = simsiam_values(steps_per_epoch, {})
        values["simsiam-baseline-epochs"] = "1"
        wording.collapse_summary(values)
        out += list(values.values())
    for n in (0, 1, 2, 1000):
        out += [wording.step_range(2, n + 1), wording.strata_phrase(n, n, n, n),
                wording.trained_phrase({"the VAE's": n}), wording.trained_phrase({"the VAE's": 1, "the DDPM's": n})]
    for fraction in (0.0, 0.01, 0.5, 0.94, 1.0):
        out.append(wording.accepted_phrase(fraction, "the VAE's"))
    for t_star, T in ((0.0, 1), (1.0, 2), (None, 1000)):
        values = {}
        numbers.tstar_numbers(values, "ddpm", t_star, T)
        out += list(values.values())
    return out


def test_every_generator_renders_edge_values_without_template_artefacts():
    for text in renderings():
        for artefact in ARTEFACTS:
            assert not re.search(artefact, text), f"{artefact!r} in {text!r}"


@pytest.mark.parametrize("last, text", [(1, "no step"), (2, "step $t=2$"), (3, "steps $t=2$ and $3$"),
                                        (4, r"steps $t=2,\dots,4$"), (21, r"steps $t=2,\dots,21$")])
def test_step_ranges_follow_the_numbers(last, text):
    assert wording.step_range(2, last) == text


@pytest.mark.parametrize("exact, strata, draws, start", [
    (2, 4, 2, "steps $t=2$ and $3$ each a stratum of its own and the rest in 4 near-equal strata, with 2 draws"),
    (1, 1, 1, "step $t=2$ a stratum of its own and the rest in 1 near-equal stratum, with 1 draw of $t$"),
    (0, 40, 4, "every step in 40 near-equal strata"),
    (20, 40, 4, r"steps $t=2,\dots,21$ each a stratum of its own and the rest in 40"),
    (49, 0, 1, r"steps $t=2,\dots,50$ each a stratum of its own, with 1 draw"),
])
def test_the_bound_stratification_clause_follows_the_counts(exact, strata, draws, start):
    assert wording.strata_phrase(exact, strata, draws, 13).startswith(start)


@pytest.mark.parametrize("fraction, start", [
    (1.0, r"all of the VAE's held-out samples (100.0\%), so it left that set as it was"),
    (0.938, r"nearly all of the VAE's held-out samples (93.8\%): their weights"),    # the smoke DDPM
    (0.5, r"50.0\% of the VAE's"), (0.05, r"a small fraction of the VAE's held-out samples (5.0\%)"),
    (0.0, "none of the VAE's held-out samples"),
])
def test_the_accepted_fraction_is_described_by_its_value(fraction, start):
    assert wording.accepted_phrase(fraction, "the VAE's").startswith(start)


def test_what_the_discriminators_trained_on_follows_the_counts():
    assert wording.trained_phrase({"the VAE's": 1}) == "1 sample and as many test images"
    assert wording.trained_phrase({"the VAE's": 16, "the DDPM's": 16}) == "16 samples and as many test images"
    assert wording.trained_phrase({"the VAE's": 32, "the DDPM's": 16}) == \
        "32 samples (the VAE's) or 16 (the DDPM's) and as many test images"
    values = {}
    numbers.discriminator_closing(values, {"vae": drs_result(), "ddpm": dataclasses.replace(
        drs_result(), accepted_fraction=1.0, n_fake_train=16)})
    assert values["drs-trained-phrase"].startswith("5000 samples (the VAE's) or 16 (the DDPM's)")
    assert values["drs-accepted-sentence"].startswith(r"DRS kept 12.5\% of the VAE's held-out samples; it kept all "
                                                      "of the DDPM's")


def test_plurals_follow_the_count():
    assert [gates.counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert wording.every(1, "epoch") == "every epoch" and wording.every(5, "epoch") == "every 5 epochs"
    assert wording.over_first(0, "epoch") == "no warm-up"
    assert wording.over_first(1, "epoch") == "a linear warm-up over the first epoch"
    assert wording.over_first(3, "epoch") == "a linear warm-up over the first 3 epochs"


# --------------------------------------------------------------------------- the title page's placeholders

def test_build_warns_while_name_or_id_is_a_placeholder(tmp_path):
    from pathlib import Path

    from report import latex
    example = (Path(__file__).resolve().parents[1] / "report" / "student.example.tex").read_text()
    (tmp_path / "student.example.tex").write_text(example)
    assert len(latex.student_warnings({}, tmp_path)) == 2           # neither the file nor the environment
    assert latex.student_warnings({"A3_STUDENT_NAME": "Ada", "A3_STUDENT_ID": "1"}, tmp_path) == []
    (tmp_path / "student.tex").write_text(example)                  # copied, not filled in
    assert all("still holds the example's" in w for w in latex.student_warnings({}, tmp_path))
    (tmp_path / "student.tex").write_text("\\studentname{Ada Lovelace}\n\\studentid{20231234}\n")
    assert latex.student_warnings({}, tmp_path) == []
    (tmp_path / "student.tex").write_text("\\studentname{Ada Lovelace}\n")
    assert [w.split(" is ")[0] for w in latex.student_warnings({}, tmp_path)] == ["the title page's studentid"]


# --------------------------------------------------------------------------- Part III, Q1: which gap is larger

def gap(nats: float, mc_se: float, image_se: float | None) -> Estimate:
    return Estimate(nats=nats, mc_se=mc_se, image_se=image_se)


@pytest.mark.parametrize("amortisation, approximation, n, start, words", [
    # The smoke VAE: 4 images, intervals far wider than the 14-nat difference: both reasons.
    (gap(31.29, 0.87, 21.11), gap(44.98, 8.05, 32.99), 4, "This run cannot tell which gap is larger: 4 images, "
     "fewer than the 30 a 95\\% interval over images needs; the 95\\% interval of the difference", "includes no"),
    (gap(31.29, 0.87, 0.5), gap(44.98, 0.5, 0.5), 4, "This run cannot tell which gap is larger: 4 images", "30"),
    (gap(5.0, 0.5, 2.0), gap(6.0, 0.5, 2.0), 500, "This run cannot tell which gap is larger: the 95\\% interval",
     "includes no difference"),
    (gap(5.0, 0.5, 0.4), gap(20.0, 1.0, 0.5), 30, "The amortisation gap is smaller than the approximation gap.", ""),
    (gap(20.0, 0.5, 0.4), gap(5.0, 1.0, 0.5), 500, "The amortisation gap is larger than the approximation gap.", ""),
    (gap(20.0, 0.5, None), gap(5.0, 1.0, None), 1, "This run cannot tell which gap is larger: 1 image, fewer", ""),
])
def test_the_gap_comparison_needs_enough_images_and_an_interval_that_excludes_the_tie(
        amortisation, approximation, n, start, words):
    text = numbers.gap_comparison(amortisation, approximation, n, per_point_proposal=True, converged=True)
    assert text.startswith(start) and words in text
    assert ("larger than" in text or "smaller than" in text) == (not text.startswith("This run cannot tell"))


# --------------------------------------------------------------------------- Part III: the other verdicts

def smoke_drs(accepted: int, n: int, jsd_low: float = 0.012) -> DiscriminatorResult:
    """Question 3 as on the smoke runs: n held-out images per set, `accepted` of the samples kept."""
    interval = Interval(estimate=jsd_low + 0.003, low=jsd_low, high=jsd_low + 0.006, level=0.95)
    subset = Interval(estimate=0.015, low=0.0127, high=0.0176, level=0.95)
    return dataclasses.replace(drs_result(), jsd=interval, jsd_accepted=interval, jsd_subset=subset,
                               accepted_fraction=accepted / n, n_accepted=accepted, n_fake_train=n, n_real_train=n,
                               n_fake_test=n, n_real_test=n, epochs=2, fid_accepted=0.726, fid_subset=0.725)


@pytest.mark.parametrize("result, classifier, bound_word, verdict", [
    # the smoke VAE: 32 held-out images, DRS kept all of them
    (smoke_drs(32, 32), AT_CHANCE, "clearly above 0", "this run cannot tell whether resampling brought the samples "
     "closer to the test images: DRS kept every held-out sample, so the accepted set is the whole set"),
    # the smoke DDPM: 16 held-out images, 15 kept
    (smoke_drs(15, 16), AT_CHANCE, "but this run cannot tell whether the samples differ from the test images: 16 "
     "held-out images per set, fewer than the 30",
     "this run cannot tell whether resampling brought the samples closer to the test images: the digit classifier is "
     "at chance"),
    (smoke_drs(15, 16, jsd_low=-0.01), gates.TELLS, "but this run cannot tell whether the samples differ",
     "this run cannot tell whether resampling"),
    (smoke_drs(40, 64, jsd_low=-0.002), gates.TELLS, "not clearly above 0: the discriminator found no reliable "
     "difference, and this run cannot tell whether the samples differ from the test images: its interval includes 0; "
     "a discriminator trained on 64 samples for 2 epochs may miss a difference",
     "the classifier-FID cannot tell (40 accepted samples, fewer than the 100"),
    (smoke_drs(400, 1000), AT_CHANCE, "clearly above 0", "the classifier-FID cannot tell (the digit classifier is at "
     "chance"),
    (smoke_drs(400, 1000), gates.TELLS, "clearly above 0", "resampling did not bring the samples closer to the test "
     "images by either measure"),
])
def test_the_discriminator_verdicts_follow_their_gates(result, classifier, bound_word, verdict):
    values = {}
    numbers.discriminator_numbers(values, "vae", result, classifier)
    assert values["vae-drs-jsd-bound-word"].startswith(bound_word)
    assert values["vae-drs-verdict"].startswith(verdict)


def test_a_negative_jsd_estimate_is_reported_and_cannot_tell():
    r = dataclasses.replace(smoke_drs(400, 1000), jsd=Interval(estimate=-0.02, low=-0.05, high=0.01, level=0.95))
    word = numbers.jsd_word(r.jsd, gates.TELLS, 1000, 5)
    assert word.startswith("negative: on the held-out images") and "not clipped at 0" in word
    assert "this run cannot tell whether the samples differ from the test images" in word


@pytest.mark.parametrize("steps_per_epoch, start", [
    (4, "not aligned with F's eigenvectors, but this run cannot tell whether training aligns it, as DirectPred "
        "observed: after 8 optimiser steps at learning rate 0.004"),
    (400, "not aligned with F's eigenvectors: its diagonal fraction is what a random eigenbasis gives"),
])
def test_the_alignment_verdict_needs_a_trained_predictor(steps_per_epoch, start):
    values = simsiam_values(steps_per_epoch, {})
    assert numbers.alignment_words("not aligned", wording.steps_gate(values, "simsiam-baseline")).startswith(start)
    assert numbers.alignment_words("unknown", wording.steps_gate(values, "simsiam-baseline")).startswith("of unknown")


@pytest.mark.parametrize("steps_per_epoch, erank, start", [
    (4, 90.0, "did not collapse without the stop-gradient in this run, but this run cannot tell whether it would, "
              "as 4.3 predicts: after 8 optimiser steps"),
    (400, 90.0, "did not collapse without the stop-gradient in this run, although 4.3 predicts that it does"),
    (4, 1.0, "collapsed without the stop-gradient, as 4.3 predicts"),
])
def test_the_collapse_verdict_of_question_4_needs_enough_steps(steps_per_epoch, erank, start):
    values = simsiam_values(steps_per_epoch, {})
    values["simsiam-no-stop-grad-epochs"], values["simsiam-no-stop-grad-steps-per-epoch"] = "2", str(steps_per_epoch)
    values["simsiam-no-stop-grad-peak-lr"] = "0.004"
    numbers.collapse_numbers(values, "simsiam-no-stop-grad", spectrum_result(2, erank), spectrum_result(2, 100.0))
    assert values["simsiam-no-stop-grad-spectrum-verdict"].startswith(start)


@pytest.mark.parametrize("bits, n, start", [
    (8.40, 4, "below the VAE's importance-sampled estimate, 8.453, but this run cannot tell whether the two differ: "
              "4 images, fewer than the 30"),
    (12.77, 4, "above the VAE's importance-sampled estimate: being an upper bound, it cannot rank"),   # the smoke run
    (3.3, 500, "below the VAE's importance-sampled estimate: since the bound lies above"),
])
def test_the_bound_against_the_vae_needs_enough_images_to_rank(bits, n, start):
    b = dataclasses.replace(fake_bound(bits), n_images=n)
    g = dataclasses.replace(fake_gaps(ll_nats=-3105.0), n_images=n)
    values = {}
    numbers.bound_against_vae(values, b, g, same_images=True)
    assert values["ddpm-bound-vs-vae"].startswith(start)
