"""The answer sheet of page 2: one line per practical question, from the numbers the body quotes.

`answer_numbers` adds `answer-<question>` values (e.g. answer-1.3d, answer-3.5b) built from the values that
report.numbers and report.wording computed for the body, so the sheet and the body cannot disagree. report.tex
lays the sheet out: one row per question (PRACTICAL here, the theory questions there), with the figure
(\\ref to the \\fig's label fig:<slot>/<name>) and the page (\\pageref to the question's label q:<question>).
"""
from __future__ import annotations

# Every practical question of the sheet and the figure that shows its answer (slot/name), None for the ones
# answered in text only; report.tex has one row per entry, and tests/test_report_sheet.py checks that.
PRACTICAL = {
    "1.3a": "vae/wall_clock", "1.3b": "vae/samples_over_training", "1.3c": "vae/reconstructions_over_training",
    "1.3d": "vae/final_samples", "1.3e": "vae/latent_profiles_heatmap", "1.3f": "vae/interpolations",
    "2.2a": "ddpm/wall_clock", "2.2b": "ddpm/samples_over_training", "2.2c": "ddpm/reconstruction_curves",
    "2.2d": "ddpm/ddpm_vs_vae", "2.3a": "tstudy/ddpm_timesteps", "2.3b": "ddpm/probe",
    "3.4": "simsiam/simsiam_q4", "3.5a": "simsiam/simsiam_q5a", "3.5b": "simsiam/simsiam_q5b", "3.5c": None,
    "3.6": None, "3.7": None, "3.8": None, "3.9": None}
THEORY = ("1.1", "1.2", "1.3", "1.4", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "3.1", "3.2",
          "4.1", "4.2", "4.3", "4.4", "4.5")


def _get(values: dict[str, str], key: str) -> str:
    """A value, or the \\val{key} that shows it as missing."""
    return values.get(key, r"\val{" + key + "}")


def _head(text: str) -> str:
    """A phrase up to its parenthesis: 'not distinguishable from (on 64 ...)' -> 'not distinguishable from'."""
    return text.split(" (")[0]


def _ablation(values: dict[str, str], ablation: str) -> str:
    """'kNN 12.5%, not distinguishable from the baseline's 14.1%; not collapsed (0.85)'."""
    s, b = f"simsiam-{ablation}", "simsiam-baseline"
    return (f"kNN {_get(values, s + '-final-knn')}, {_head(_get(values, s + '-vs-baseline'))} the baseline's "
            f"{_get(values, b + '-final-knn')}; {_get(values, s + '-collapse-word')} "
            f"({_get(values, s + '-collapse-ratio')})")


def answer_numbers(values: dict[str, str]) -> None:
    """answer-<question> for every practical question of PRACTICAL that the runs answer."""
    g = lambda key: _get(values, key)  # noqa: E731
    values.update({
        "answer-1.3a": f"{g('vae-wall')} for {g('vae-epochs-phrase')} ({g('vae-epoch-seconds')} per epoch)",
        "answer-1.3b": f"final samples {g('vae-obs-sharpness-short')}",
        "answer-1.3c": f"reconstructions {g('vae-obs-recon-short')}",
        "answer-1.3d": f"{g('vae-obs-sharpness-short')}; {g('vae-obs-digits-short')}",
        "answer-1.3e": f"{g('vae-peak-distinct-dims')} of {g('vae-z-total')} dimensions among the classes' peaks; "
                       f"largest score {g('vae-peak-max')} s.d.",
        "answer-1.3f": g("vae-interp-short"),
        "answer-2.2a": f"{g('ddpm-wall')} for {g('ddpm-epochs-phrase')} ({g('ddpm-epoch-seconds')} per epoch)",
        "answer-2.2b": f"final samples {g('ddpm-obs-sharpness-short')}",
        "answer-2.2c": g("ddpm-tstar-answer"),
        "answer-2.2d": g("p2-verdict-short"),
        "answer-2.3a": f"sampling time $\\times${g('tstudy-sampling-ratio')} for $T$ $\\times${g('tstudy-T-ratio')}: "
                       f"{_head(g('tstudy-sampling-verdict')).split(':')[0]}",
        "answer-2.3b": _head(g("ddpm-probe-verdict")).split(":")[0],
        "answer-3.4": _ablation(values, "no-stop-grad"),
        "answer-3.5a": _ablation(values, "no-predictor"),
        "answer-3.5b": f"$d={g('simsiam-proj-4096-d')}$: {_ablation(values, 'proj-4096')}; "
                       f"batch {g('simsiam-batch-4096-batch')}: {_ablation(values, 'batch-4096')}",
    })
