"""experiments.presentation.answers: the notebooks' pointers from each descriptive question to its summary.json
fields."""
from __future__ import annotations

import dataclasses

import pytest

from experiments.presentation import answers
from experiments.presentation.summaries import SimSiamSummary
from tests.test_report import VAE_SUMMARY, ddpm_summary


def full_summaries() -> list[dict]:
    simsiam = SimSiamSummary.partial(final_knn_accuracy=0.8, final_loss=-0.9, final_collapse_std=0.02,
                                     collapse_std_reference=0.022)
    return [VAE_SUMMARY.to_dict(), ddpm_summary(1000, 12.5, 0.5).to_dict(), simsiam.to_dict()]


@pytest.mark.parametrize("item", list(answers.QUESTIONS))
def test_every_field_named_exists_in_a_summary(item):
    for _, path, _ in answers.question(item).fields:
        assert any(answers._lookup(d, path) is not answers.MISSING for d in full_summaries()), path


def test_markdown_names_the_question_and_the_fields():
    text = answers.markdown("1.3d")
    assert text.startswith("**Asked (1.3(d)):**") and "`observations.samples.sharpness_ratio`" in text
    assert "report's 2.2(c)" in answers.markdown("2.2c") and "(3.4)" in answers.markdown("3.4")
    with pytest.raises(KeyError, match="unknown item '1.3z'"):
        answers.markdown("1.3z")


def test_answer_prints_the_runs_values(tmp_path):
    VAE_SUMMARY.write(tmp_path)
    lines = answers.answer(tmp_path, "1.3d").splitlines()
    assert lines[0].startswith("observations.samples.sharpness_ratio = 0.31 ")
    assert "observations.samples.digits.confident_fraction = 42% " in lines[1]
    assert "[10, 10, 10" in lines[3]
    assert answers.answer(tmp_path, "1.3f").splitlines()[0].startswith("observations.interpolations.test.evenness = "
                                                                       "0.82")


def test_answer_says_what_is_missing(tmp_path):
    assert "no summary.json yet" in answers.answer(tmp_path, "1.3d")
    dataclasses.replace(VAE_SUMMARY, observations=None).write(tmp_path)
    assert "not in this summary" in answers.answer(tmp_path, "1.3d").splitlines()[0]
