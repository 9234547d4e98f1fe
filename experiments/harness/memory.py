"""Memory planning: how many images of a logical batch one forward/backward pass can hold.

A training step's memory is dominated by the activations autograd saves for the backward pass,
which grow linearly with the batch: bytes(b) = fixed + b * per_sample. `per_sample_bytes`
measures that slope by catching every saved tensor (`torch.autograd.graph.saved_tensors_hooks`)
at two small batch sizes; the fixed part (weights and their half-precision copies) cancels.
`plan_micro_batch` then picks the largest micro-batch that divides the logical batch and fits
a byte budget; the run accumulates gradients over the micro-batches (experiments.problems.simsiam).

On a GPU the budget is a fraction of the free memory (`device_budget`); on the CPU there is no
limit short of the machine's memory, and the whole batch is one micro-batch.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

GiB = 2 ** 30
# The share of free GPU memory given to saved activations; the rest covers the backward pass's
# own temporaries (gradients of activations, convolution workspaces) and allocator fragmentation.
BUDGET_FRACTION = 0.7
# A 16 GB T4 as Colab gives it: 15.0 GiB visible, about 14.5 GiB free once the CUDA context and
# the model, optimiser and uint8 data set are resident (an assumption, used by the tests).
T4_FREE_BYTES = int(14.5 * GiB)


def saved_bytes(step: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward while step() runs its forward pass.
    step() returns the loss; its graph is dropped unused."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


def per_sample_bytes(step: Callable[[int], torch.Tensor], small: int = 2, large: int = 6) -> float:
    """Slope of saved_bytes(step(b)) in b, from b = small and b = large: the activation memory one
    more sample adds. step(b) runs the forward pass of a training step on a batch of b samples."""
    return (saved_bytes(lambda: step(large)) - saved_bytes(lambda: step(small))) / (large - small)


def plan_micro_batch(batch: int, per_sample: float, budget: float, minimum: int = 2) -> int:
    """The largest divisor m of `batch` with m * per_sample <= budget, and m >= minimum (batch norm
    needs two samples); equal micro-batches keep every step's batch-norm statistics comparable."""
    fitting = [m for m in range(minimum, batch + 1) if batch % m == 0 and m * per_sample <= budget]
    if not fitting:
        raise ValueError(f"not even {minimum} samples ({minimum * per_sample / GiB:.2f} GiB of activations) fit the "
                         f"{budget / GiB:.2f} GiB budget; choose a smaller model or another device, "
                         "or set --micro-batch explicitly")
    return max(fitting)


def device_budget(device: torch.device) -> float | None:
    """The activation budget on `device` in bytes: BUDGET_FRACTION of the free memory on CUDA, None
    (no limit) elsewhere."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return BUDGET_FRACTION * free
