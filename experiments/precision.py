"""The numeric precision of a run, decided once per device, and the two things it controls:
the autocast context of every forward pass and the gradient scaler of every optimiser step.

Policy for `--precision auto` (the default):
    CUDA, compute capability >= 8.0 (A100, L4, H100, ...)   bf16 autocast
    CUDA, compute capability 7.x (Colab's T4, V100)         fp16 autocast + GradScaler
    anything else (CPU, MPS, older GPUs)                    fp32

`torch.cuda.is_bf16_supported` is not the test: it answers True on a T4 (sm_75), where bf16
is emulated, has no tensor-core support and no cuDNN convolution engines, so it is slow or
fails. fp16 has a narrow exponent range, so its gradients are scaled (Micikevicius et al.,
"Mixed Precision Training", ICLR 2018); bf16 keeps fp32's exponent range and needs no scaler.
`--precision bf16|fp16|fp32` overrides the policy (CPU autocast runs bf16 and fp16 too, which
is how the tests exercise the GPU path).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

CHOICES = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def policy(device: torch.device, requested: str = "auto") -> str:
    """The precision a run on `device` uses: `requested` unless it is 'auto' (see the module docstring)."""
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {CHOICES}, got {requested!r}")
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "fp32"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16" if major == 7 else "fp32"


def autocast(device: torch.device | str, precision: str):
    """Autocast to the precision's dtype on `device` (a no-op for fp32)."""
    if precision not in DTYPES:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


class Precision:
    """A run's precision on its device: `autocast()` for forward passes; `backward(loss)` and
    `step(optimizer)` for training, through a gradient scaler that is active for fp16 only.

    Its state (the scaler's scale and growth tracker) is saved in checkpoints, so that a resumed
    fp16 run continues with the same scale; state saved by another precision is ignored.
    """

    def __init__(self, device: torch.device, requested: str = "auto"):
        self.device = torch.device(device)
        self.name = policy(self.device, requested)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")

    def autocast(self):
        return autocast(self.device, self.name)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step() on unscaled gradients; with fp16, skipped when they hold inf/NaN."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {"name": self.name, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") == self.name and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
