"""Every name shared by the experiments, the figures and the report, defined once (standard library only).

The problems, the SimSiam ablations (what each question compares), the backbones, the datasets'
display names, the run-name grammar with its parser, the command that produces a run, and the DDPM
presets' T. Nothing heavy is imported here, so that report/ can read it without torch.

Run names (the folder of a run under results/):
    vae-<preset>
    ddpm-<preset>[-T<timesteps>]                  T when it is not the preset's
    simsiam-<preset>-<ablation>[-<backbone>]      the backbone when it is not DEFAULT_BACKBONE
    flow-<preset>, gan-<preset>                   the two families beside the assignment's
Adding a SimSiam ablation: its name, question and description in ABLATIONS below, and the config
fields it changes in experiments/problems/simsiam.py (ABLATIONS there).
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass

# --------------------------------------------------------------------------- problems and datasets

PROBLEMS = ("vae", "ddpm", "simsiam")
PROBLEM_NUMBERS = {"vae": 1, "ddpm": 2, "simsiam": 3}
PROBLEM_TITLES = {"vae": "Problem 1 (VAE)", "ddpm": "Problem 2 (DDPM)", "simsiam": "Problem 3 (SimSiam)"}
REAL_DATASETS = {"vae": "SVHN", "ddpm": "SVHN", "simsiam": "CIFAR-10"}  # what the assignment trains on
DATASET_NAMES = {"svhn": "SVHN", "cifar10": "CIFAR-10", "synthetic": "synthetic stand-in"}


def dataset_name(source: str) -> str:
    """The display name of a provenance `source` (svhn -> SVHN); unknown sources as given."""
    return DATASET_NAMES.get(source, source)


# --------------------------------------------------------------------------- SimSiam

@dataclass(frozen=True)
class Ablation:
    name: str          # as in run names and --ablation
    question: str      # the key in QUESTIONS of the question that compares it with the baseline ("" for it)
    description: str   # one line, for --help and listings


BASELINE = "baseline"
ABLATIONS = (
    Ablation(BASELINE, "", "the starter's SimSiam: stop-gradient, trainable predictor h"),
    Ablation("no-stop-grad", "q4", "the targets z are not detached"),
    Ablation("no-predictor", "q5a", "h is the identity (MLP_mode='no_pred_mlp')"),
    Ablation("proj-4096", "q5b", "projector output d doubled (2048 -> 4096)"),
    Ablation("batch-4096", "q5b", "batch x 4 (1024 -> 4096), lr by the linear rule, with warm-up"),
)
ABLATION_NAMES = tuple(a.name for a in ABLATIONS)
# The questions of Problem 3 that compare ablations with the baseline: their figure titles.
QUESTIONS = {
    "q4": "Q4: with and without stop-gradient",
    "q5a": "Q5(a): with and without the predictor h",
    "q5b": "Q5(b): projector output d = 4096, batch 4096",
}


def question_label(question: str) -> str:
    """q5a -> Q5a, as written beside an ablation in listings."""
    return "Q" + question.removeprefix("q")


def compared(question: str) -> tuple[str, ...]:
    """The ablations a question compares, the baseline first: compared("q4") -> ("baseline", "no-stop-grad")."""
    if question not in QUESTIONS:
        raise ValueError(f"question must be one of {list(QUESTIONS)}, got {question!r}")
    return (BASELINE, *(a.name for a in ABLATIONS if a.question == question))


def ablation_help() -> str:
    """One line per ablation: name, question, description (for --help)."""
    return "; ".join(f"{a.name}{f' ({question_label(a.question)})' if a.question else ''}: {a.description}"
                     for a in ABLATIONS)


# The assignment's network (torchvision's resnet18, ImageNet stem) is the default; `tiny` is for tests.
DEFAULT_BACKBONE = "resnet18"
CLI_BACKBONES = ("resnet18", "resnet18-cifar")
BACKBONES = (*CLI_BACKBONES, "tiny")
BACKBONE_HELP = ("resnet18 (default: torchvision's, as the starter) or resnet18-cifar "
                 "(3x3 stride-1 stem, no max-pool: 15x the FLOPs, for fast GPUs)")

# --------------------------------------------------------------------------- DDPM

# T of experiments/problems/ddpm.py's presets: a DDPM run name carries -T<T> only when T differs from these
# (tests/test_names.py checks they agree with ddpm.PRESETS).
DEFAULT_TIMESTEPS = {"full": 1000, "smoke": 50}


# --------------------------------------------------------------------------- two more families

# Beside the assignment's problems, a normalizing flow and a GAN measured on the VAE's and DDPM's yardstick
# (experiments.problems.flow, experiments.problems.gan, experiments.measurements.yardstick; run names flow-<preset>,
# gan-<preset>).
FAMILY_PROBLEMS = ("flow", "gan")
FAMILIES = ("flow", "vae", "ddpm", "gan")   # as the yardstick's table lists them: exact likelihood, two bounds, none
FAMILY_TITLES = {"flow": "Normalizing flow (RealNVP)", "vae": "VAE", "ddpm": "DDPM", "gan": "GAN (DCGAN)"}


def flow_run_name(preset: str) -> str:
    return f"flow-{preset}"


def gan_run_name(preset: str) -> str:
    return f"gan-{preset}"


# --------------------------------------------------------------------------- run names

def vae_run_name(preset: str) -> str:
    return f"vae-{preset}"


def ddpm_run_name(preset: str, timesteps: int) -> str:
    """ddpm-<preset>, plus -T<timesteps> when T is not the preset's (every T for an unknown preset)."""
    return f"ddpm-{preset}" + ("" if timesteps == DEFAULT_TIMESTEPS.get(preset) else f"-T{timesteps}")


def simsiam_run_name(preset: str, ablation: str, backbone: str = DEFAULT_BACKBONE) -> str:
    """simsiam-<preset>-<ablation>, plus -<backbone> when it is not the default."""
    return f"simsiam-{preset}-{ablation}" + ("" if backbone == DEFAULT_BACKBONE else f"-{backbone}")


@dataclass(frozen=True)
class RunName:
    """A run name, parsed: the problem, the preset, and the variant fields of that problem."""

    problem: str
    preset: str
    timesteps: int | None = None   # ddpm, when the name carries -T<timesteps>
    ablation: str | None = None    # simsiam
    backbone: str | None = None    # simsiam


_RUN_NAME = re.compile(r"^(?P<problem>[a-z]+)-(?P<preset>[A-Za-z0-9_]+)(?:-(?P<variant>.+))?$")


def parse_run_name(name: str) -> RunName | None:
    """The RunName of a folder name, None when it is not a run name.
    ddpm-full-T500 -> RunName("ddpm", "full", timesteps=500);
    simsiam-smoke-no-predictor-resnet18-cifar -> RunName("simsiam", "smoke", ablation="no-predictor",
    backbone="resnet18-cifar")."""
    m = _RUN_NAME.match(name)
    if not m or m["problem"] not in (*PROBLEMS, *FAMILY_PROBLEMS):
        return None
    problem, preset, variant = m["problem"], m["preset"], m["variant"]
    if problem in ("vae", "ddpm", *FAMILY_PROBLEMS) and variant is None:
        return RunName(problem, preset)
    if problem == "ddpm" and (t := re.fullmatch(r"T(\d+)", variant)):
        return RunName(problem, preset, timesteps=int(t[1]))
    if problem == "simsiam" and variant is not None:
        for ablation in sorted(ABLATION_NAMES, key=len, reverse=True):  # the longest name that fits
            if variant == ablation:
                return RunName(problem, preset, ablation=ablation, backbone=DEFAULT_BACKBONE)
            backbone = variant.removeprefix(ablation + "-")
            if variant.startswith(ablation + "-") and backbone in BACKBONES:
                return RunName(problem, preset, ablation=ablation, backbone=backbone)
    return None


# --------------------------------------------------------------------------- commands

PYTHON = ".venv/bin/python"  # the project's interpreter, where scripts/setup.sh installs it (the repository root)


def interpreter() -> str:
    """The running Python as a user can type it: relative to the current folder when inside it
    (.venv/bin/python), else its absolute path."""
    if not sys.executable:  # an embedded interpreter: the project's, as scripts/setup.sh installs it
        return PYTHON
    relative = os.path.relpath(sys.executable)
    return relative if "/" in relative and not relative.startswith("..") else sys.executable


def command(problem: str, preset: str | None, *, timesteps: int | None = None, ablation: str | None = None,
            backbone: str | None = None, out: str | None = None, resume: bool = False, python: str = PYTHON,
            **options) -> str:
    """The command line that produces (or, with out and resume, continues) a run; preset None leaves the
    default (full) implicit. command("ddpm", "full", timesteps=500) -> .venv/bin/python -m experiments ddpm
    --preset full --timesteps 500. `options` (data, data_root, epochs, seed, lr, ...) are added as --name value
    when not None (True: a flag, given alone): a resume repeats the options its run was started with. Values are
    shell-quoted."""
    if problem not in (*PROBLEMS, *FAMILY_PROBLEMS):
        raise ValueError(f"problem must be one of {(*PROBLEMS, *FAMILY_PROBLEMS)}, got {problem!r}")
    parts = [shlex.quote(python), "-m experiments", problem] + ([] if preset is None else [f"--preset {preset}"])
    if timesteps is not None:
        parts.append(f"--timesteps {timesteps}")
    if ablation is not None:
        parts.append(f"--ablation {ablation}")
    if backbone not in (None, DEFAULT_BACKBONE):
        parts.append(f"--backbone {backbone}")
    if out is not None:
        parts.append(f"--out {shlex.quote(str(out))}")
    parts += [f"--{name.replace('_', '-')}" + ("" if value is True else f" {shlex.quote(str(value))}")
              for name, value in options.items() if value is not None]   # a flag (--spectral-norm) alone
    if resume:
        parts.append("--resume")
    return " ".join(parts)


# --------------------------------------------------------------------------- Part III: the theory measured

# The random stream (experiments.harness.rng.stream_seed) that picks the test images the theory is measured on, one
# name for the VAE's gaps (experiments.measurements.amortisation) and the DDPM's bound
# (experiments.measurements.bound): runs with the same
# seed, test set and number of images measure the same images.
MEASURED_IMAGES = "measured-test-images"
