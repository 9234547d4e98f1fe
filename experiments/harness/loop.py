"""The epoch loop: train, evaluate, log and checkpoint each epoch; resume exactly where a run stopped."""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from experiments.harness import distributed
from experiments.harness.config import lr_field
from experiments.harness.devices import synchronize
from experiments.harness.files import non_finite
from experiments.harness.rng import rng_state, set_rng_state
from experiments.harness.runs import Run


class NonFiniteLossError(RuntimeError):
    """A training epoch produced a NaN/inf loss or weights; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class SnapshotEpochs:
    """Every `every`-th epoch of 1..epochs, and the last: a lazy sequence (`in`, len, iteration), so that no
    value of --epochs makes a run allocate in proportion to it."""
    every: int
    epochs: int

    def __contains__(self, epoch: object) -> bool:
        in_range = isinstance(epoch, int) and 1 <= epoch <= self.epochs
        return in_range and (epoch % self.every == 0 or epoch == self.epochs)

    def __len__(self) -> int:
        return self.epochs // self.every + (self.epochs % self.every != 0)

    def __iter__(self) -> Iterator[int]:
        yield from range(self.every, self.epochs + 1, self.every)
        if self.epochs % self.every:
            yield self.epochs


def snapshot_epochs(every: int, epochs: int) -> SnapshotEpochs:
    """Every `every`-th epoch (every >= 1), and the last, in increasing order, computed lazily."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"snapshot_every must be an integer of at least 1, got {every!r}")
    return SnapshotEpochs(every, epochs)


def progress(batches: Iterable[torch.Tensor], total: int, epoch: int) -> tqdm:
    """The bar of one training epoch over `total` batches; `show_rate` updates its postfix."""
    return tqdm(batches, total=total, desc=f"epoch {epoch}", leave=False, unit="batch")


def show_rate(bar: tqdm, step: int, loss_sum: torch.Tensor, batch_size: int, t0: float, every: int = 50) -> None:
    """After `step` steps (1-based) of an epoch begun at t0: every `every` steps only (a host sync),
    the running mean loss (loss_sum / step) and the images per second in the bar's postfix."""
    if step % every == 0:
        rate = step * batch_size / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{loss_sum.item() / step:.4g}", img_s=f"{rate:.0f}")


def projection(epoch_seconds: float, epochs: int, done: int, device: torch.device) -> str:
    """The projected training time of the whole run, and what is left of it, from one epoch's time
    (its training and per-epoch evaluation) on `device`; `done` epochs are finished."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return (f"projected: {epochs} epochs x {epoch_seconds:.0f} s = {duration(epochs * epoch_seconds)} of training "
            f"on {name}, {duration((epochs - done) * epoch_seconds)} of it still to go, then the final evaluation")


def duration(seconds: float) -> str:
    """'1 h 05 min', '12 min 30 s' or '42 s'."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def fit(run: Run, *, epochs: int, device: torch.device, state: dict[str, Any],
        generators: dict[str, torch.Generator], train_epoch: Callable[[int], dict],
        after_epoch: Callable[[int], dict], desc: str, lr: float | None = None) -> list[dict]:
    """Train epochs (last checkpointed epoch + 1) .. `epochs`, checkpointing after each.

    state: named objects with state_dict/load_state_dict (model, optimizer, EMA, ...), saved whole.
    train_epoch(epoch) -> {"loss": ..., "images": n, other means}; after_epoch(epoch) -> extra
    metrics (evaluation, snapshots). lr: the optimizer's learning rate, set after loading a checkpoint
    (a resume may change it). Returns all metrics records of the run.

    Under torchrun (experiments.harness.distributed) every rank trains; after_epoch, the metrics line and the
    checkpoint run on rank 0 alone while the others wait (an error there stops every rank), and rank 0's RNG
    states then pass to every rank, so the next epoch draws on each what one process would draw.
    """
    start = resume_state(run, state, generators, lr)
    distributed.share_rng_state(generators)
    wall = run.history[-1]["wall_seconds"] if run.history else 0.0
    bar = tqdm(range(start + 1, epochs + 1), desc=desc, initial=start, total=epochs, unit="epoch")
    for epoch in bar:
        synchronize(device)
        t0 = time.perf_counter()
        stats = train_epoch(epoch)
        synchronize(device)
        train_seconds = time.perf_counter() - t0
        check_finite(run, epoch, stats["loss"], state)

        def finish_epoch(epoch: int, t0: float, stats: dict, train_seconds: float) -> None:
            nonlocal wall
            extra = after_epoch(epoch)
            synchronize(device)
            epoch_seconds = time.perf_counter() - t0
            wall += epoch_seconds
            images = stats.pop("images")
            record = {"epoch": epoch, **stats, **extra, "train_seconds": train_seconds,
                      "epoch_seconds": epoch_seconds, "wall_seconds": wall,
                      "images_per_s": images / train_seconds}
            run.log(record)
            if epoch == start + 1:
                tqdm.write(projection(epoch_seconds, epochs, epoch, device))
            bar.set_postfix(loss=f"{record['loss']:.4g}", img_s=f"{record['images_per_s']:.0f}")
            run.save_checkpoint({"epoch": epoch, "state": {n: o.state_dict() for n, o in state.items()},
                                 "rng": rng_state(generators), "config": dataclasses.asdict(run.config),
                                 "metrics": list(run.history), "artifacts": run.artifact_names()})
        distributed.on_writer(functools.partial(finish_epoch, epoch, t0, stats, train_seconds))
        run.epoch = epoch
        distributed.share_rng_state(generators)
    return run.metrics()


def resume_state(run: Run, state: dict[str, Any], generators: dict[str, torch.Generator],
                 lr: float | None) -> int:
    """Load the run's checkpoint into `state` and the RNGs, make metrics.jsonl match it; the epoch it ended."""
    checkpoint = run.load_checkpoint()
    if checkpoint is not None:
        for name, obj in state.items():
            obj.load_state_dict(checkpoint["state"][name])
        set_rng_state(checkpoint["rng"], generators)
        if lr is not None and "optimizer" in state:
            for group in state["optimizer"].param_groups:
                group["lr"] = lr
        tqdm.write(f"resuming {run.dir} after epoch {run.epoch}")
    run.restore_metrics()  # drops lines of an epoch that never reached its checkpoint
    return run.epoch


def check_finite(run: Run, epoch: int, loss: float, state: dict[str, Any]) -> None:
    """Raise NonFiniteLossError when the epoch's loss, or any weight or optimizer state, is NaN or inf:
    such a state is never checkpointed, the last good checkpoint is kept."""
    bad = [] if math.isfinite(loss) else [f"the training loss is {loss}"]
    names = non_finite({n: o.state_dict() for n, o in state.items()})
    if names:
        bad.append(f"{len(names)} tensors are not finite ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    if bad:
        kept = f"{run.checkpoint_path} (epoch {run.epoch}) is kept" if run.epoch else "no checkpoint exists yet"
        field = lr_field(run.config)
        raise NonFiniteLossError(f"epoch {epoch}: {' and '.join(bad)}; stopped, {kept}. Resume with a lower "
                                 f"learning rate (--lr, now {field} = {getattr(run.config, field)}), "
                                 "or inspect the data.")
