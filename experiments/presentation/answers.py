"""What each descriptive question asks, and where a run's summary.json holds its measured answer.

The notebooks show, under each figure, `markdown(item)` (the question and the summary fields that answer
it) and print `answer(run_dir, item)` (those fields' values for the run); the report words the same
numbers (report.wording). Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.presentation import summaries


@dataclass(frozen=True)
class Question:
    asks: str                                 # the assignment's question, in short
    fields: tuple[tuple[str, str, str], ...]  # (what it is, dotted path in summary.json, format spec)


SAMPLE_FIELDS = (
    ("sharpness ratio, Laplacian energy of the samples / the test images' (< 1: blurrier)",
     "observations.samples.sharpness_ratio", ".2g"),
    ("samples the digit classifier reads as one digit with probability >= 0.9",
     "observations.samples.digits.confident_fraction", ".0%"),
    ("the same for as many test images", "observations.reference.confident_fraction", ".0%"),
    ("samples per predicted class 0..9", "observations.samples.digits.class_histogram", ""),
    ("test images per predicted class 0..9", "observations.reference.class_histogram", ""),
    ("classifier-FID, samples vs as many test images (lower: closer)", "observations.samples.classifier_fid", ".3g"),
)
QUESTIONS = {
    "1.3b": Question("Samples generated during training, every 5 epochs (the last panel is the final model).",
                     SAMPLE_FIELDS[:1]),
    "1.3c": Question("Reconstructions of test images every 5 epochs: how much detail do they keep?", (
        ("sharpness ratio of the final reconstructions to their originals (< 1: blurrier)",
         "observations.reconstructions.sharpness_ratio", ".2g"),
        ("final test loss, the negative ELBO in nats per image", "final_test_loss", ".1f"))),
    "1.3d": Question("The samples at the end of training: what do they look like, do they show digit patterns, "
                     "are they blurry?", SAMPLE_FIELDS),
    "1.3f": Question("Is the interpolation between two points smooth; do the images change regularly?", (
        ("evenness between test images, mean step / largest step (1: equal steps; < 0.5: uneven)",
         "observations.interpolations.test.evenness", ".2f"),
        ("evenness between prior draws", "observations.interpolations.prior.evenness", ".2f"),
        ("mean RMS change per pixel per step, between test images", "observations.interpolations.test.mean_step",
         ".2g"),
        ("frames between the ends read as a clear digit, between test images",
         "observations.interpolations.test.middle_confident_fraction", ".0%"))),
    "2.2c": Question("Reconstructions from a noised test image: at which t* can the original no longer be restored?", (
        ("t*", "t_star", ".0f"), ("rule", "t_star_rule", ""), ("noise steps t'", "recon_levels", ""),
        ("label preserved at each t'", "recon_label_preserved", ".2f"),
        ("sharpness ratio of the reconstructions at the smallest t' to their originals",
         "observations.reconstructions.sharpness_ratio", ".2g"))),
    "2.2d": Question("The samples at the end of training: digit patterns? blurry? How do they compare with the "
                     "VAE's (same statistics in the VAE run's summary)?", SAMPLE_FIELDS),
    "2.3a": Question("T = 500 and 1500: effect on training and sampling time and on sample quality.", (
        ("T", "timesteps", "d"), ("training seconds per epoch", "train_seconds_per_epoch", ".1f"),
        ("sampling seconds per image", "sample_seconds_per_image", ".3g"),
        ("classifier-FID on quality_size samples", "quality_classifier_fid", ".3g"))),
    "3.4": Question("Training with and without the stop-gradient (and the other ablations): kNN accuracy and "
                    "collapse.", (
        ("final kNN accuracy", "final_knn_accuracy", ".1%"), ("final training loss", "final_loss", ".3f"),
        ("collapse indicator: std of the l2-normalised outputs (0: collapsed)", "final_collapse_std", ".4f"),
        ("its value for outputs spread over the sphere, 1/sqrt(d)", "collapse_std_reference", ".4f"))),
}


def question(item: str) -> Question:
    if item not in QUESTIONS:
        raise KeyError(f"unknown item {item!r}; one of: {', '.join(QUESTIONS)}")
    return QUESTIONS[item]


def markdown(item: str) -> str:
    """The notebook cell under an item's figure: what is asked, which summary.json fields answer it."""
    q = question(item)
    section = f"{item[:3]}({item[3:]})" if len(item) > 3 else item
    lines = [f"**Asked ({section}):** {q.asks}", "",
             f"**Measured answer** (worded in the report's {section}), in the run's `summary.json`:"]
    lines += [f"- `{path}`: {what}" for what, path, _ in q.fields]
    return "\n".join(lines)


MISSING = object()


def _lookup(d: Any, path: str) -> Any:
    """The value at a dotted path of nested dicts; MISSING when a part of the path is absent (or None)."""
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return MISSING
        d = d[key]
    return d


def _format(value: Any, spec: str) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_format(v, spec) for v in value) + "]"
    return format(value, spec) if spec and isinstance(value, (int, float)) else str(value)


def answer(run_dir: str | Path, item: str) -> str:
    """The values of an item's summary fields for the run in `run_dir`, one per line; says so when the run
    has no summary yet, or its summary predates a field."""
    q = question(item)
    if not (Path(run_dir) / summaries.FILE).exists():
        return f"{run_dir}: no {summaries.FILE} yet (the run is unfinished)"
    d = summaries.read(run_dir).to_dict()
    lines = []
    for what, path, spec in q.fields:
        value = _lookup(d, path)
        shown = "not in this summary (written before the field existed, or not measured)" if value is MISSING \
            else "None" if value is None else _format(value, spec)
        lines.append(f"{path} = {shown}    # {what}")
    return "\n".join(lines)
