"""experiments/presentation/names.py: the names every consumer imports agree with the experiments, the run-name
grammar round-trips, and the module stays free of torch and matplotlib (report/ imports it)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from experiments.presentation import names
from tests.conftest import ROOT


def test_names_import_nothing_heavy():
    code = ("import sys; from experiments.presentation import names; "
            "print(sorted({'torch', 'matplotlib', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_names_agree_with_the_experiments():
    from experiments.problems import ddpm, simsiam

    assert tuple(simsiam.ABLATIONS) == names.ABLATION_NAMES
    assert set(simsiam.BACKBONES) == set(names.BACKBONES)
    assert names.DEFAULT_TIMESTEPS == {name: cfg.timesteps for name, cfg in ddpm.PRESETS.items()}
    assert {a.question for a in names.ABLATIONS} - {""} == set(names.QUESTIONS)


@pytest.mark.parametrize("problem, preset, variant", [
    ("vae", "full", {}), ("ddpm", "smoke", {}), ("ddpm", "full", {"timesteps": 500}),
    ("simsiam", "full", {"ablation": "no-stop-grad"}),
    ("simsiam", "smoke", {"ablation": "baseline", "backbone": "resnet18-cifar"}),
    ("flow", "full", {}), ("gan", "smoke", {}),
])
def test_run_names_round_trip_through_the_experiments(problem, preset, variant):
    from experiments.problems import ddpm, flow, gan, simsiam, vae

    module = {"vae": vae, "ddpm": ddpm, "simsiam": simsiam, "flow": flow, "gan": gan}[problem]
    name = module.run_name(module.config_for(preset, **variant))
    parsed = names.parse_run_name(name)
    assert (parsed.problem, parsed.preset) == (problem, preset)
    for key, value in variant.items():
        assert getattr(parsed, key) == value
    assert names.command(problem, preset, **variant).startswith(
        f".venv/bin/python -m experiments {problem} --preset {preset}")


def test_questions_compare_with_the_baseline():
    assert names.compared("q4") == ("baseline", "no-stop-grad")
    assert names.compared("q5b") == ("baseline", "proj-4096", "batch-4096")
    with pytest.raises(ValueError, match="question must be one of"):
        names.compared("q9")
