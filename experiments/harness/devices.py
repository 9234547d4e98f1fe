"""The device a run uses, and a clock that waits for it."""
from __future__ import annotations

import time

import torch

from experiments.harness.execution import candidates


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else Apple MPS, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but CUDA is not available here; use --device cpu or auto")
    return device


def device_line(device: str = "auto") -> str:
    """What a notebook prints after its configuration: the device a run will use and how it picks its precision."""
    picked = pick_device(device)
    if picked.type != "cuda":
        return f"device: {picked} | precision: fp32 (experiments.harness.execution; override with precision=...)"
    return (f"device: {torch.cuda.get_device_name(picked)} | precision: the fastest of "
            f"{', '.join(candidates(picked))}, measured at the start of each run (experiments.harness.execution; "
            "override with precision=...)")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """time.perf_counter() once the device's queued work has finished: differences time the work itself."""
    synchronize(device)
    return time.perf_counter()
