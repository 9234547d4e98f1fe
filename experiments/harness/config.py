"""Run configs: presets, the overrides a command gives, the checks they pass, and what a resume may change."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import torch

from experiments.harness.execution import check_choices

# Config fields a resumed run may change: how long to train, where, and the learning rate (to get past a
# divergence), not what is trained. The precision, compilation and micro-batch follow the device a run resumes on.
# Changes are recorded in provenance.json ("resume_changes").
RESUMABLE_CHANGES = frozenset({"epochs", "device", "data_root", "precision", "compile", "micro_batch", "lr",
                               "base_lr"})


MAX_SEED = 2 ** 32 - 1  # numpy's limit


# --epochs above this is refused: 100x the longest preset (SimSiam's 100; the SimSiam paper's CIFAR-10 runs
# use 800), and few enough that what a run keeps per epoch (a metrics line, snapshot artifacts) stays small.
MAX_EPOCHS = 10_000


@dataclasses.dataclass
class RunConfig:
    """The fields every experiment's config starts with (VAEConfig, DDPMConfig, SimSiamConfig add theirs)."""
    preset: str = "full"
    data: str = "auto"             # auto | the real dataset (svhn, cifar10) | synthetic (see experiments.harness.data)
    data_root: str = "data"
    seed: int = 0
    device: str = "auto"


def checked_overrides(presets: dict[str, Any], preset: str, overrides: dict[str, Any], problem: str) -> dict:
    """The options a user set (None: not set), after checking that `preset` exists and that each
    option is a field of the problem's config dataclass."""
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(presets[preset])}
    if unknown:
        raise ValueError(f"option(s) {sorted(unknown)} do not apply to the {problem} experiment")
    return overrides


MAX_TIMESTEPS = 10_000


def lr_field(cfg: Any) -> str:
    """The config field --lr sets: base_lr (SimSiam, scaled by the batch size) or lr."""
    return "base_lr" if hasattr(cfg, "base_lr") else "lr"


def check_config(cfg: Any) -> None:
    """Refuse values no run can use, before any work: the seed first, then epochs, device and learning rate."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer in [0, {MAX_SEED}], got {cfg.seed!r}")
    if isinstance(cfg.epochs, bool) or not isinstance(cfg.epochs, int) or not 1 <= cfg.epochs <= MAX_EPOCHS:
        raise ValueError(f"--epochs must be an integer in [1, {MAX_EPOCHS:,}] (the presets train 2 to 100 epochs), "
                         f"got {cfg.epochs!r}")
    if cfg.device != "auto":
        try:
            torch.device(cfg.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"--device {cfg.device!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    check_choices(cfg.precision, cfg.compile)
    lr = getattr(cfg, lr_field(cfg))
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive number, got {lr!r}")


def same_config(old: dict, new: dict) -> dict:
    """The fields, outside RESUMABLE_CHANGES, whose values differ: {name: (old, new)}. Only fields both configs
    have count: one the code gained after the run started (a `git pull` between two sessions, e.g. a new final
    measurement's settings) takes its current value, and one it dropped no longer means anything."""
    old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))  # as in config.json: tuples become lists
    return {k: (old[k], new[k]) for k in sorted(set(old) & set(new))
            if k not in RESUMABLE_CHANGES and old[k] != new[k]}
