"""A run's numeric precision on its device and the two things it controls: the autocast context of
every forward pass and the gradient scaler of every optimiser step. Which precision a run uses is
decided by experiments.harness.execution (the policy lives there, stated once).

fp16 has a narrow exponent range, so its gradients are scaled; bf16 keeps fp32's exponent range and
needs no scaler. CPU autocast runs bf16 and fp16 too, which is how the tests exercise the GPU path.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

NAMES = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Precision `name` (fp32, bf16 or fp16) on `device`: `autocast()` for forward passes; `backward(loss)`
    and `step(optimizer)` for training, through a gradient scaler that is active for fp16 only.

    Its state (the scaler's scale and growth tracker) is saved in checkpoints, so that a resumed
    fp16 run continues with the same scale; state saved by another precision is ignored.
    """

    def __init__(self, device: torch.device | str, name: str = "fp32"):
        if name not in NAMES:
            raise ValueError(f"precision must be one of {NAMES}, got {name!r}")
        self.device = torch.device(device)
        self.name = name
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")

    def autocast(self):
        """Autocast to the precision's dtype on the device (a no-op for fp32)."""
        if self.name not in DTYPES:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.name])

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
