"""Helpers shared by the benchmark scripts: naming the machine, and glibc's allocator setting."""
from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and core count, for the header of a benchmark's output."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu" and Path("/proc/cpuinfo").exists():
        models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")]
        return f"{models[0]}, {len(models)} cores" if models else platform.machine()
    return platform.processor() or device.type


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed blocks (no mmap for blocks up to 32 MB, no trimming); False if not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3                                # from glibc's malloc.h
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
