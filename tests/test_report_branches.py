"""The report's outcome-chosen sentences (report.wording): every branch, in words and in the built PDF.

Two sets of fake runs (tests/test_report.py's fixtures) pull every decision of the text to opposite
sides: blurry or sharp samples, smooth or uneven interpolations, a time ratio as the cost model
expects or far from it, collapsed ablations or not, comparable classifier-FIDs or not. Each set is
built into a PDF once; the text `pdftotext` extracts must carry the chosen sentences and never a
sentence of the other branch. The remaining branches are checked on the values alone.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from experiments.presentation.summaries import DDPMSummary, SimSiamSummary, VAESummary
from report import wording
from report.latex import percent
from tests.test_report import REPORT, build_pdf, complete_results, digits, needs_latex, observations

# Sentences of one branch that may never appear beside the other's (in the whole text).
EXCLUSIVE = [("interpolation is smooth both", "interpolation is uneven both"),
             ("both ablations collapsed", "neither ablation collapsed"),
             ("as expected from the linear cost", "the run with more steps was not slower"),
             ("The DDPM's samples are sharper than the VAE's", "The DDPM's samples are blurrier than the VAE's"),
             ("so they compare directly", "so they do not compare"),
             ("Why the samples are blurry.", "Why blur was expected, although"),
             ("This run agrees:", "This run does not show")]
GONE = ["written independently of any particular run", "does not describe the images of a particular run",
        "not collapsed and not collapsed", "respectively, against"]


def flat(text: str) -> str:
    """pdftotext output as one line: words split by hyphenation rejoined, hyphens and curly quotes dropped."""
    text = text.replace("\u2019", "'").replace("\f", " ")
    return re.sub(r"\s+", " ", re.sub(r"-\s*\n\s*", "", text)).replace("-", "")


def section(text: str, start: str, end: str) -> str:
    """The flat text from the heading of question `start` (at the start of a line) to the next line starting
    with `end` (a heading, or any line start such as "Part III")."""
    text = re.sub(r" +\)", ")", text.replace("\f", "\n"))  # pdftotext may space "(f )" apart
    body = text.find("\nContents\n")  # after the answer sheet, whose rows also start with the question numbers
    heading = re.compile(rf"^{re.escape(start)}(?: |$)", flags=re.M).search(text, max(body, 0))
    stop = re.compile(rf"^{re.escape(end)}(?: |$)", flags=re.M).search(text, heading.end())
    return flat(text[heading.start():stop.start()])


def has(text: str, phrase: str) -> bool:
    """Whether flat `text` holds flat `phrase`, also when a float's caption ("Figure n: ...") or a page number
    sits between two of its words (a sentence that crosses a page)."""
    words = flat(phrase).split()
    gap = r"(?:\s+\d+)?(?:\s+Figure \d+:.{0,800}?)?\s+"
    return re.search(gap.join(map(re.escape, words)), text) is not None


def rewrite(run: Path, schema: type, **changes) -> None:
    replace(schema.read(run), **changes).write(run)


def opposite_results(results: Path) -> Path:
    """The complete fake runs with every decision flipped from complete_results' defaults."""
    complete_results(results, figures=True, artifacts=True)
    rewrite(results / "vae-full", VAESummary, observations=observations(
        sharpness=2.0, confident=0.2, fid=9.0, reference=0.3, evenness=(0.3, 0.25), middle=0.1))
    rewrite(results / "ddpm-full", DDPMSummary, observations=observations(
        sharpness=0.2, confident=0.1, fid=20.0, reference=0.3, histogram=[14, 2] + [0] * 8, recon=2.5, recon_t=50))
    rewrite(results / "ddpm-full-T1500", DDPMSummary, sample_seconds_per_image=0.1375, train_seconds_per_epoch=96.0)
    for ablation in ("no-stop-grad", "no-predictor"):
        rewrite(results / f"simsiam-full-{ablation}", SimSiamSummary, final_collapse_std=0.02)
    return results


@pytest.fixture(scope="module", params=["expected", "opposite"])
def built(request, tmp_path_factory):
    """(branch, text of the PDF, values) for one set of runs; the expected set also has the student's notes of
    report/observations.example.tex as its observations.tex."""
    tmp = tmp_path_factory.mktemp(request.param)
    work = tmp / "report"
    work.mkdir()
    example = (REPORT / "observations.example.tex").read_text()
    if request.param == "expected":
        results = complete_results(tmp / "results", figures=True, artifacts=True)
        (work / "observations.tex").write_text(example)
    else:  # the example beside report.tex, under its own name, is never read
        results = opposite_results(tmp / "results")
        (work / "observations.example.tex").write_text(example)
    _, text, values = build_pdf(results, work)
    return request.param, text, values


CHOSEN = {
    "expected": [("1.3(d)", "1.3(e)", "samples are blurrier than the test images"),
                 ("1.3(c)", "1.3(d)", "reconstructions of 100 test images are blurrier than their originals"),
                 ("1.3(d)", "1.3(e)", "digit patterns are present in many samples, but clear less often"),
                 ("1.3(f)", "Problem 2:", "interpolation is smooth both between test images and between prior draws"),
                 ("2.2(d)", "2.3(a)", "the samples are about as sharp as the test images"),
                 ("2.2(d)", "2.3(a)", "The DDPM's samples are sharper than the VAE's"),
                 ("2.2(d)", "2.3(a)", "so they compare directly"),
                 ("2.2(d)", "2.3(a)", "closer to the test images than the VAE's in sharpness, clear digits and "
                                      "classifierFID"),
                 ("2.3(a)", "2.3(b)", "is 1.00, as expected from a cost independent of"),
                 ("2.3(a)", "2.3(b)", "3.04 for a ratio of T of 3.00, as expected from the linear cost"),
                 ("3.7", "3.8", "both ablations collapsed"),
                 ("1.3(d)", "1.3(e)", "Why the samples are blurry."),
                 ("2.2(d)", "2.3(a)", "This run agrees: its DDPM samples are sharper than its VAE samples"),
                 ("3.9", "Part III:", "both ablations collapsed"),
                 ("1.3(d)", "1.3(e)", "Student's observation (1.3d)")],
    "opposite": [("1.3(d)", "1.3(e)", "samples are sharper than the test images by this measure"),
                 ("1.3(d)", "1.3(e)", "the classifier itself reads only 30% of real test images as clear digits"),
                 ("1.3(f)", "Problem 2:", "interpolation is uneven both between test images and between prior draws"),
                 ("2.2(c)", "2.2(d)", "are, by the sharpness measure of 1.3(d), sharper than their originals"),
                 ("2.2(d)", "2.3(a)", "The DDPM's samples are blurrier than the VAE's"),
                 ("2.2(d)", "2.3(a)", "different sizes (16 DDPM and 100 VAE samples"),
                 ("2.2(d)", "2.3(a)", "further from the test images than the VAE's in sharpness; clear digits cannot "
                                      "tell (the classifier itself reads only 30%"),
                 ("2.3(a)", "2.3(b)", "is 1.60, not the expected ratio, which a cost independent of"),
                 ("2.3(a)", "2.3(b)", "0.55 for a ratio of T of 3.00, not the expected ratio: the run with more "
                                      "steps was not slower"),
                 ("3.7", "3.8", "neither ablation collapsed in the epochs trained"),
                 ("3.9", "Part III:", "and neither did the baseline"),
                 ("1.3(d)", "1.3(e)", "Why blur was expected, although these samples do not show it."),
                 ("2.2(d)", "2.3(a)", "This run does not show it: its DDPM samples are blurrier")],
}
# Sentences of the other branch, absent from the same sections.
AVOIDED = {
    "expected": [("1.3(d)", "1.3(e)", "sharper than the test images"), ("1.3(d)", "1.3(e)", "classifier itself"),
                 ("2.3(a)", "2.3(b)", "not the expected ratio"), ("3.7", "3.8", "neither"),
                 ("2.2(d)", "2.3(a)", "comparison is mixed")],
    "opposite": [("1.3(d)", "1.3(e)", "blurrier than the test images"), ("2.3(a)", "2.3(b)", "as expected from"),
                 ("3.7", "3.8", "both ablations"), ("1.3(d)", "1.3(e)", "Student's observation")],
}


@needs_latex
def test_each_branch_prints_its_sentences_and_not_the_others(built):
    branch, text, _ = built
    for start, end, phrase in CHOSEN[branch]:
        assert has(section(text, start, end), phrase), f"{branch}: {phrase!r} not in {start}"
    for start, end, phrase in AVOIDED[branch]:
        assert flat(phrase) not in section(text, start, end), f"{branch}: {phrase!r} in {start}"


@needs_latex
def test_no_contradictory_pair_and_no_run_independent_excuse(built):
    branch, text, _ = built
    body = flat(text)
    for a, b in EXCLUSIVE:
        assert not (flat(a) in body and flat(b) in body), f"{branch}: both {a!r} and {b!r}"
    for phrase in GONE:
        assert flat(phrase) not in body, phrase
    assert text.count("[missing:") == 1  # the legend's example on page 1: every sentence was chosen


def test_only_observations_tex_is_read():
    tex = (REPORT / "report.tex").read_text()
    assert r"\InputIfFileExists{observations.tex}" in tex and not re.search(r"\\input\w*\{observations\.example", tex)


# --------------------------------------------------------------------------- branches on the values alone

@pytest.mark.parametrize("measured, expected, start", [
    (3.1, 3.0, "as expected from the linear cost"),
    (1.6, 3.0, "not the expected ratio: on this machine (HW) a fixed cost"),
    (0.55, 3.0, "not the expected ratio: the run with more steps was not slower"),
    (4.5, 3.0, "not the expected ratio, which the linear cost does not explain"),
])
def test_sampling_ratio_verdicts(measured, expected, start):
    assert wording.cost_verdict(measured, expected, "the linear cost", "HW").startswith(start)


@pytest.mark.parametrize("words, start", [
    (("not collapsed", "collapsed", "not collapsed"), "only the run without the stopgradient collapsed, not the "
                                                      "run without the predictor"),
    (("not collapsed", "collapsed", "collapsed"), "both ablations collapsed"),
    (("collapsed", "collapsed", "collapsed"), "both ablations collapsed"),
    (("collapsed", "not collapsed", "not collapsed"), "neither ablation collapsed"),
])
def test_collapse_summary_names_which_ablations_collapsed(words, start):
    values = {}
    for ablation, word in zip(("baseline", "no-stop-grad", "no-predictor"), words):
        values[f"simsiam-{ablation}-collapse-word"] = word
        values[f"simsiam-{ablation}-collapse-ratio"] = "0.5"
    wording.collapse_summary(values)
    sentence = values["simsiam-collapse-summary"]
    assert flat(sentence).startswith(flat(start))
    assert ("do not separate the designs" in sentence) == (words[0] == "collapsed")


def test_missing_collapse_words_leave_the_sentence_unset():
    values = {"simsiam-baseline-collapse-word": "not collapsed"}
    wording.collapse_summary(values)
    assert "simsiam-collapse-summary" not in values


@pytest.mark.parametrize("ratio, start", [(0.5, "blurrier than"), (0.9, "about as sharp as"), (1.2, "about as sharp"),
                                          (1.5, "sharper than")])
def test_sharpness_phrase_bands(ratio, start):
    assert wording.sharpness_phrase(ratio, "X").startswith(start + (" X" if start.endswith("than") else ""))


def test_share_and_significant_never_print_exponents():
    assert wording.share(0.0085) == r"0.85\% of" and wording.share(0.42) == r"42\% of"
    assert wording.share(80.2) == "80 times" and wording.significant(1234.5, 3) == "1234"


def test_fid_comparability_and_mixed_verdict():
    values = {}
    assert not wording.fid_comparability(values, 100, 100, 0.95, 0.90)
    assert "classifiers differ" in values["p2-fid-comparable"] and percent(0.9) in values["p2-fid-comparable"]
    assert wording.fid_comparability(values, 100, 100, 0.95, 0.95)
    mixed = wording.verdict(["sharpness"], ["clear digits", "classifier-FID"], [])
    assert mixed.startswith("the comparison is mixed") and "clear digits and classifier-FID" in mixed
    assert wording.verdict([], [], ["sharpness"]).startswith("the two models' samples are about equally close")


def test_digit_phrases():
    assert wording.digits_phrase(digits(0.78), digits(0.8)).startswith("digit patterns are about as clear")
    assert wording.digits_phrase(digits(0.1), digits(0.8)).startswith("most samples show no digit")
    assert wording.class_tv([10, 0], [0, 10]) == 1 and wording.class_tv([5, 5], [1, 1]) == 0
    phrase = wording.classes_phrase(digits(0.5, [600, 400] + [0] * 8), digits(0.8, [100] * 10))
    assert "cover 2 of the ten digits (never 2, 3, 4, 5, 6, 7, 8 and 9)" in phrase and "differ" in phrase
    unsure = wording.classes_phrase(digits(0.5, [600, 400] + [0] * 8), digits(0.3, [100] * 10))
    assert "cannot tell whether the class proportions differ: the classifier itself reads only 30\\%" in unsure
