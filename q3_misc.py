"""Problem 3 helpers: the two-view augmentation and SimSiam checkpoints (IFT6135-H2023, Assignment 3).

A checkpoint is the dictionary the SimSiam reference training script (main_simsiam.py) saves:

    {"epoch": the next epoch to run, "arch": ..., "state_dict": model.state_dict(),
     "optimizer": optimizer.state_dict()}

Keys saved from a DataParallel / DistributedDataParallel model start with "module."; loading
strips it. `save_checkpoint` adds a "sha256" entry, a digest of everything else in the dictionary,
and loading verifies it, so a file damaged after it was written (a disk, a sync, a copy) is refused
instead of loading wrong weights; a checkpoint without that entry (plain `torch.save`, the starter's)
loads as before. Standalone: imports only torch and the standard library; nothing happens at import.
"""
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

DATA_PARALLEL_PREFIX = "module."
ENCODER_PREFIX = "encoder."            # SimSiam.encoder: backbone + projector
PROJECTOR_PREFIX = "encoder.fc."       # the projector replaced the backbone's classifier
CLASSIFIER_HEAD = ("fc.weight", "fc.bias")
TRAINING_KEYS = ("state_dict", "optimizer", "epoch")
CHECKSUM_KEY = "sha256"

Device = int | str | torch.device | None


class TwoCropsTransform:
    """x -> [t(x), t(x)]: two independent draws of the random augmentation t on the same image."""

    def __init__(self, base_transform: Callable[[Any], Any]):
        self.base_transform = base_transform

    def __call__(self, x: Any) -> list:
        return [self.base_transform(x), self.base_transform(x)]


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """torch.save(state, path) atomically, with a digest: write a temporary file beside `path`, then
    os.replace it, so an interrupted save never leaves a truncated file where a good checkpoint was."""
    path = os.fspath(path)
    state = {**state, CHECKSUM_KEY: digest(state)}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_checkpoints(resume: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                     gpu: Device):
    """Resume training from the checkpoint at `resume`: model and optimizer states, and the epoch.

    `gpu`: where the saved tensors are mapped, the CPU for None, "cuda:<gpu>" for an index, or a
    device (str or torch.device) as given. `optimizer` None loads the model only.
    Returns (model, optimizer, start_epoch), the first two loaded in place.
    Raises FileNotFoundError (no file), RuntimeError (unreadable file), ValueError (not a training
    checkpoint, or one whose tensors do not match the model's names and shapes, or the optimizer's groups).
    """
    checkpoint = _read_checkpoint(resume, gpu)
    missing = [key for key in TRAINING_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"{os.fspath(resume)!r} is not a training checkpoint: it lacks {missing}; "
                         f"expected the keys {list(TRAINING_KEYS)}, as the training loop saves them")
    state = checkpoint["state_dict"]
    if not any(key.startswith(DATA_PARALLEL_PREFIX) for key in model.state_dict()):
        state = {key.removeprefix(DATA_PARALLEL_PREFIX): value for key, value in state.items()}
    _check_tensors(state, model.state_dict(), resume)
    model.load_state_dict(state)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError) as err:
            raise ValueError(f"the optimizer state in {os.fspath(resume)!r} does not fit this optimizer "
                             f"(other parameter groups or sizes): {err}") from err
    return model, optimizer, int(checkpoint["epoch"])


def load_pretrained_checkpoints(pretrained: str | os.PathLike, model: nn.Module,
                                optimizer: torch.optim.Optimizer | None, gpu: Device):
    """Linear evaluation: copy the backbone of a SimSiam checkpoint into a plain classifier, `fc` left out.

    Keeps the checkpoint's "encoder.*" tensors ("module." stripped first) except the projector
    "encoder.fc.*", renamed without "encoder.": the classifier's own names (conv1.weight,
    layer1.0.bn1.running_mean, ...). Every tensor of `model` but fc.weight and fc.bias must be found,
    with its shape; `model.fc` keeps its values. `gpu` maps tensors as in `load_checkpoints`.
    Returns (model, optimizer, start_epoch=0): the starter's signature; the optimizer is untouched and
    linear evaluation starts at epoch 0.
    Raises FileNotFoundError, RuntimeError or ValueError as `load_checkpoints` does.
    """
    checkpoint = _read_checkpoint(pretrained, gpu)
    if "state_dict" not in checkpoint:
        raise ValueError(f"{os.fspath(pretrained)!r} has no 'state_dict' entry: expected a SimSiam checkpoint "
                         f"with the keys {list(TRAINING_KEYS)}")
    backbone = {}
    for key, value in checkpoint["state_dict"].items():
        key = key.removeprefix(DATA_PARALLEL_PREFIX)
        if key.startswith(ENCODER_PREFIX) and not key.startswith(PROJECTOR_PREFIX):
            backbone[key.removeprefix(ENCODER_PREFIX)] = value
    if not backbone:
        raise ValueError(f"{os.fspath(pretrained)!r} holds no backbone tensors: expected keys starting with "
                         f"'{ENCODER_PREFIX}' or '{DATA_PARALLEL_PREFIX}{ENCODER_PREFIX}', as SimSiam saves them")
    wanted = {key: value for key, value in model.state_dict().items() if key not in CLASSIFIER_HEAD}
    _check_tensors(backbone, wanted, pretrained)
    model.load_state_dict(backbone, strict=False)
    return model, optimizer, 0


def _map_location(gpu: Device) -> str | torch.device:
    """The CPU for None, "cuda:<gpu>" for an index, any other device as given."""
    if gpu is None:
        return "cpu"
    if isinstance(gpu, int) and not isinstance(gpu, bool):
        location = f"cuda:{gpu}"
    elif isinstance(gpu, (str, torch.device)):
        location = gpu
    else:
        raise TypeError(f"gpu must be None (CPU), a GPU index, or a device such as 'cpu' or 'cuda:0'; got {gpu!r}")
    if torch.device(location).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"gpu={gpu!r} asks for a CUDA device, but CUDA is not available on this machine; "
                           "pass gpu=None to load the checkpoint on the CPU")
    return location


def _read_checkpoint(path: str | os.PathLike, gpu: Device) -> dict:
    """torch.load(path) onto `gpu`'s device, with errors that name the file and what to do."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}: check the path, or train the model first "
                                f"so that the training loop writes one there")
    location = _map_location(gpu)  # outside the try: a bad or unavailable device is not a corrupt file
    try:
        checkpoint = torch.load(path, map_location=location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        first_line = (str(err).splitlines() or [""])[0]
        raise RuntimeError(f"cannot read the checkpoint {path!r}: it is corrupt, truncated, not written by torch.save, "
                           f"or holds objects other than tensors and plain containers; delete it and save it again "
                           f"({type(err).__name__}: {first_line})") from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path!r} holds a {type(checkpoint).__name__}, not a checkpoint dictionary")
    if CHECKSUM_KEY in checkpoint:
        stored = checkpoint.pop(CHECKSUM_KEY)
        if stored != digest(checkpoint):
            raise RuntimeError(f"the checkpoint {path!r} fails its checksum: it was damaged after it was written "
                               "(disk, Drive sync or copy). Restore an intact copy, or delete it and train again")
    return checkpoint


def digest(value: Any) -> str:
    """SHA-256 of a checkpoint's content: every tensor's key path, dtype, shape and bytes, and the repr of
    every other value, in sorted key order (the same for the state saved and the state loaded back)."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, dict):
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"{t.dtype}{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    else:
        h.update(repr(value).encode())


def _check_tensors(found: dict, wanted: dict, path: str | os.PathLike) -> None:
    """Raise a ValueError naming the file and every missing, unexpected or reshaped tensor."""
    problems = []
    missing = sorted(wanted.keys() - found.keys())
    unexpected = sorted(found.keys() - wanted.keys())
    reshaped = [f"{key} {tuple(found[key].shape)} in the file vs {tuple(wanted[key].shape)} in the model"
                for key in sorted(found.keys() & wanted.keys()) if found[key].shape != wanted[key].shape]
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", reshaped)):
        if keys:
            problems.append(f"{what} ({len(keys)}): {_preview(keys)}")
    if problems:
        raise ValueError(f"the checkpoint {os.fspath(path)!r} does not match the model (another architecture, "
                         f"dim or backbone?): " + "; ".join(problems))


def _preview(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")
