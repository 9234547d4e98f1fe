"""More than one GPU: data-parallel runs started by torchrun, on PyTorch's own engine (torch.distributed and
DistributedDataParallel). No launcher and no communication layer of our own.

    torchrun --standalone --nproc_per_node=N -m experiments simsiam ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in each process's environment; `setup` reads them, joins the
process group (NCCL on CUDA, gloo on CPU) and puts the rank on cuda:LOCAL_RANK. A plain `python -m experiments`
has none of them: world size 1, no process group, nothing below changes what it does.

The contract of a distributed run (each problem module follows it):
- the preset's batch is the global batch; every rank draws the same shuffled order (and the same step noise:
  the DDPM's t and eps, the VAE's reparameterisation noise, SimSiam's augmentations) for the whole global batch
  from the same stream, and keeps its own contiguous slice (`local_slice`), so the optimiser sees the batches of
  a one-GPU run and DDP's gradient average is the one-GPU gradient;
- rank 0 alone (`is_writer`) holds the run folder's lock and writes; evaluation passes run on rank 0 alone while
  the others wait; rank 0's RNG state is then given to every rank (`share_rng_state`), so that the next epoch's
  draws are the same everywhere, as in one process.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

# Rank 0 runs evaluations (kNN, samples) while the others wait at a barrier: a generous collective timeout.
TIMEOUT = datetime.timedelta(hours=2)


def world_size() -> int:
    """The number of processes of this run: WORLD_SIZE under torchrun, else 1."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def is_distributed() -> bool:
    return world_size() > 1


def is_writer() -> bool:
    """Whether this process writes the run folder: rank 0 (or the only process)."""
    return rank() == 0


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process with a world of more than one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str | None = None) -> torch.device | None:
    """Under torchrun, join the process group (idempotent) and return this rank's device: cuda:LOCAL_RANK when
    CUDA is present and `device` does not ask for the CPU, else cpu (gloo). Without torchrun: None, nothing done."""
    if not launched():
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))
    if cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible: start "
                             f"torchrun with --nproc_per_node={torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT,
                                device_id=torch.device("cuda", local) if cuda else None)
    if dist.get_rank() != 0:
        os.environ["TQDM_DISABLE"] = "1"  # one set of progress bars: rank 0's
    return torch.device("cuda", local) if cuda else torch.device("cpu")


def backend() -> str | None:
    """The process group's backend ('nccl', 'gloo'), or None in one process."""
    return dist.get_backend() if is_distributed() else None


def teardown() -> None:
    """Leave the process group (at the end of a run, or when it stopped with an error)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def record() -> dict[str, Any]:
    """provenance.json's fields for the layout of the run (sync_batch_norm: set by a problem that converts)."""
    return {"world_size": world_size(), "backend": backend(), "sync_batch_norm": False}


def barrier() -> None:
    """Wait for every rank (nothing in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (a picklable object); `obj` itself in one process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_writer(fn: Callable[[], T]) -> T | None:
    """fn() on rank 0 alone, the others waiting; an exception there is raised on every rank (so no rank waits
    forever on one that stopped). Returns fn's result on rank 0, None elsewhere."""
    if not is_distributed():
        return fn()
    result, error = None, None
    if is_writer():
        try:
            result = fn()
        except Exception as e:  # any error: given to the other ranks, then raised here
            error = e
    error = broadcast(error)
    if error is not None:
        raise error
    return result


@contextmanager
def writer_first() -> Iterator[None]:
    """The block on rank 0 first, then on the others (e.g. loading data that rank 0 caches or downloads)."""
    if is_distributed() and not is_writer():
        barrier()
    yield
    if is_distributed() and is_writer():
        barrier()


def mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over the ranks (x itself in one process): e.g. an epoch's loss, each rank's over its
    share of every batch, becomes the loss over the global batches."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


def local_slice(batch: int) -> slice:
    """This rank's contiguous share of a global batch of `batch` items: batch / world_size of them."""
    n = world_size()
    if batch % n:
        raise ValueError(f"the batch of {batch} does not split over {n} processes: choose a batch size divisible "
                         f"by the number of GPUs (--nproc_per_node), or another number of GPUs")
    share = batch // n
    return slice(rank() * share, (rank() + 1) * share)


def share_rng_state(generators: dict[str, torch.Generator]) -> None:
    """Give rank 0's RNG states (python, numpy, torch CPU, this rank's CUDA device, the run's generators) to
    every rank: after a pass that ran on rank 0 alone, or a resume, every rank draws what rank 0 would."""
    if not is_distributed():
        return
    from experiments.harness.rng import rng_state, set_rng_state
    state = rng_state(generators)
    state.pop("cuda", None)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["device_cuda"] = torch.cuda.get_rng_state()
    state = broadcast(state)
    set_rng_state(state, generators)
    if "device_cuda" in state:
        torch.cuda.set_rng_state(state["device_cuda"])


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` under DistributedDataParallel (its gradients averaged over the ranks), or itself in one process.
    The parameters start as rank 0's (DDP broadcasts them)."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def no_sync(model: nn.Module, last: bool):
    """DDP's no_sync() for every micro-batch but the last (gradients accumulate locally, one all-reduce per
    step); a no-op context otherwise."""
    if isinstance(model, nn.parallel.DistributedDataParallel) and not last:
        return model.no_sync()
    from contextlib import nullcontext
    return nullcontext()


class GroupBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the whole global batch for CPU (gloo) runs, where torch.nn.SyncBatchNorm refuses
    (it needs GPU inputs): per channel, the sums of x and x^2 and the count are all-reduced with
    torch.distributed.nn.functional.all_reduce, which is differentiable, so the gradient flows through the
    global statistics as it does through SyncBatchNorm's. mean = S1 / N, var = S2 / N - mean^2 (biased, used
    to normalise), running_var updated with the unbiased N / (N - 1) var, as nn.BatchNorm does.
    On CUDA runs `sync_batch_norm` uses torch.nn.SyncBatchNorm itself."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a batch (N, C, ...) of at least 2 dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count.view(1)]))  # (2C + 1,)
        C, n = x.shape[1], sums[-1]
        mean = sums[:C] / n
        var = sums[C:2 * C] / n - mean * mean
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        shape = [1, C] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every batch norm of `model` normalising over the global batch: torch.nn.SyncBatchNorm on CUDA
    (convert_sync_batchnorm, as the official SimSiam code does), GroupBatchNorm on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_group(model)


def _convert_group(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        out = GroupBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_group(child))
    return out
