"""Randomness: one seed per run, named random streams derived from it, and their saved state."""
from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stream_seed(seed: int, name: str) -> int:
    """The seed of the run's random stream `name`: 63 bits of sha256("<seed>/<name>"), stable across
    processes and versions (Python's hash() is salted per process). Distinct names give unrelated
    streams, so adding a stream never shifts another (the trouble with seed + k offsets)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def stream(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` for one purpose of a run (e.g. "shuffle", "final-samples"),
    seeded with stream_seed(seed, name): the same name gives the same draws, another name others."""
    return torch.Generator(device).manual_seed(stream_seed(seed, name))


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG a run draws from: python, numpy, torch CPU and CUDA, and the run's own generators."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
