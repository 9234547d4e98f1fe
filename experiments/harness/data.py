"""Data: SVHN and CIFAR-10 through torchvision, and an offline synthetic stand-in.

Every dataset ends up as an `ImageSet`: a uint8 tensor of images (N, 3, 32, 32) and int64
labels (N,), held in memory, so batches are plain index tensors (`iterate_batches`) and the
whole set can move to the device when it fits.

Where the data comes from is decided once, by `resolve_source`:

- ``svhn`` / ``cifar10``: the real files, read by torchvision's own readers
  (`torchvision.datasets.SVHN`, `torchvision.datasets.CIFAR10`) from a data root, downloaded
  there when the host is reachable. torchvision checks every file's md5 before parsing it, so
  a half-downloaded or damaged file is never used: it is reported (`DatasetError`, naming the
  file and the remedy), not silently replaced by other data.
- ``synthetic``: house-number-like digits rendered from the fonts that ship with matplotlib
  (`experiments.harness.synthetic`), for machines without a network (tests, CI, benchmarks).
- ``auto``: the problem's real dataset when its files are present or downloadable, else the
  synthetic stand-in, announced loudly (warning and stderr).

The synthetic stand-in renders 6,000-8,000 images/s on 2 CPU cores (its 20,000 training images
in about 3 s); a config renders only the images it uses (its train_size and test_size). This module
caches them under ``root/synthetic/``, one file per split and size, or in the folder named by the
environment variable A3_SYNTHETIC_CACHE when set (the test suite shares one across its runs). Each
cache file holds the sha256 of its tensors, checked on every load: a damaged one is rendered again,
with a warning.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision
from torchvision.datasets.utils import check_integrity
from tqdm import tqdm

from experiments.harness import synthetic
from experiments.harness.files import atomic_save, writable_folder
from experiments.harness.synthetic import synthetic_digits  # also reachable as data.synthetic_digits

REAL_DATASETS = ("svhn", "cifar10")
CHOICES = ("auto", "svhn", "cifar10", "synthetic")
SOURCES = ("svhn", "cifar10", "synthetic")
SPLITS = ("train", "test")
SYNTHETIC_SIZES = {"train": 20000, "test": 5000}  # default sizes of the stand-in's splits

_PROBE_TIMEOUT_S = 3.0


class DatasetError(RuntimeError):
    """A real dataset cannot be used; the message names the files and the remedy."""


@dataclass(frozen=True)
class ImageSet:
    """One split of a dataset, in memory.

    images: (N, 3, 32, 32) uint8, CPU. labels: (N,) int64 in [0, 10).
    source: "svhn" | "cifar10" | "synthetic". split: "train" | "test".
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: str
    split: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.shape[1:] != (3, 32, 32):
            raise ValueError(
                f"images must be uint8 (N, 3, 32, 32), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.labels) and not (0 <= int(self.labels.min()) and int(self.labels.max()) < 10):
            raise ValueError("labels must lie in [0, 10)")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None, seed: int = 0) -> ImageSet:
        """n images drawn at random without replacement (kept in dataset order); all when n is None or >= len."""
        if n is None or n >= len(self):
            return self
        if n < 0:
            raise ValueError(f"n must be >= 0 or None, got {n}")
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:n].sort().values
        return replace(self, images=self.images[index], labels=self.labels[index])


# ---------------------------------------------------------------------------------------------
# Choosing a source
# ---------------------------------------------------------------------------------------------


def resolve_source(data: str, real: str, root: str | Path) -> tuple[str, dict]:
    """Decide which dataset a run uses, before anything is loaded.

    data: one of CHOICES (what the user asked for); real: one of REAL_DATASETS (the problem's
    real dataset, used by "auto"). An explicit real source must be present in `root` or
    downloadable, else DatasetError. "auto" gives `real` when its files are present and intact
    or its download host is reachable, otherwise "synthetic", announced with a warning and on
    stderr. A file that is present but corrupt is never a reason to fall back: offline it
    raises DatasetError naming the file (online, torchvision downloads it afresh).

    Returns (source, provenance) with provenance
    {"requested": data, "source": source, "root": str(root), "fallback_reason": str | None}.
    """
    _check_choice("data", data, CHOICES)
    _check_choice("real", real, REAL_DATASETS)
    root = Path(root)
    if data == "synthetic":
        return "synthetic", _provenance(data, "synthetic", root, None)
    source = real if data == "auto" else data
    remote = _remote(source, SPLITS)
    if _available(remote, root) or _host_reachable(remote.urls[0]):
        return source, _provenance(data, source, root, None)
    host = urlparse(remote.urls[0]).hostname
    if data != "auto" or _corrupt_files(remote, root):
        raise _dataset_error(source, root, remote, f"files missing or corrupt and {host} is unreachable")
    reason = f"{source} files not found in {root} and {host} is unreachable"
    _announce_fallback(source, root, remote, reason)
    return "synthetic", _provenance(data, "synthetic", root, reason)


def _host_reachable(url: str) -> bool:
    """Whether a TCP connection to the host of `url` opens within a few seconds."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _provenance(requested: str, source: str, root: Path, reason: str | None) -> dict:
    return {"requested": requested, "source": source, "root": str(root), "fallback_reason": reason}


def _announce_fallback(source: str, root: Path, remote: _Remote, reason: str) -> None:
    """Warn, and write to stderr, that the synthetic stand-in replaces the real data."""
    looked_for = ", ".join(str(root / name) for name, _ in remote.files)
    message = (
        f"USING SYNTHETIC DATA instead of {source}: {reason}.\n"
        f"  Looked for: {looked_for}.\n"
        f"  To use the real data, run where {', '.join(remote.urls)} can be reached "
        f"(the files are downloaded into {root}), or place them there yourself.\n"
        "  Every figure and number from this run says it comes from the synthetic stand-in."
    )
    warnings.warn(message, stacklevel=3)
    tqdm.write(message, file=sys.stderr)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Real datasets, read by torchvision
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Remote:
    """What torchvision reads for one dataset, and where it downloads it from.

    files: (path relative to the root, md5) of each file the reader checks and parses.
    archive: (name, md5) of an archive that torchvision extracts into `files`, if any.
    """

    urls: tuple[str, ...]
    files: tuple[tuple[str, str], ...]
    archive: tuple[str, str] | None


def _remote(source: str, splits: tuple[str, ...]) -> _Remote:
    """The files of `source` needed for `splits`, read from torchvision's own md5 tables."""
    if source == "svhn":
        entries = [torchvision.datasets.SVHN.split_list[split] for split in splits]
        return _Remote(
            urls=tuple(url for url, _, _ in entries),
            files=tuple((name, md5) for _, name, md5 in entries),
            archive=None,
        )
    cifar = torchvision.datasets.CIFAR10
    # CIFAR10 checks all batches and the meta file whatever the split.
    listed = [*cifar.train_list, *cifar.test_list, [cifar.meta["filename"], cifar.meta["md5"]]]
    return _Remote(
        urls=(cifar.url,),
        files=tuple((f"{cifar.base_folder}/{name}", md5) for name, md5 in listed),
        archive=(cifar.filename, cifar.tgz_md5),
    )


def _file_state(path: Path, md5: str) -> str:
    """ "missing", "corrupt" (md5 mismatch: damaged or half downloaded) or "intact"."""
    if not path.is_file():
        return "missing"
    return "intact" if check_integrity(str(path), md5) else "corrupt"


def _available(remote: _Remote, root: Path) -> bool:
    """Whether torchvision can read the files without a network (intact files, or an intact archive)."""
    if all(_file_state(root / name, md5) == "intact" for name, md5 in remote.files):
        return True
    return remote.archive is not None and _file_state(root / remote.archive[0], remote.archive[1]) == "intact"


def _corrupt_files(remote: _Remote, root: Path) -> list[Path]:
    listed = [*remote.files, *([remote.archive] if remote.archive else [])]
    return [root / name for name, md5 in listed if _file_state(root / name, md5) == "corrupt"]


def _dataset_error(source: str, root: Path, remote: _Remote, cause: str) -> DatasetError:
    """One error naming every expected file with its state, the download URL(s) and the remedy."""
    states = "\n".join(f"    {root / name} ({_file_state(root / name, md5)})" for name, md5 in remote.files)
    if remote.archive is not None:
        name, md5 = remote.archive
        states += f"\n    or the archive {root / name} ({_file_state(root / name, md5)})"
    return DatasetError(
        f"Cannot load {source} from {root}: {cause}.\n"
        f"  Expected files:\n{states}\n"
        f"  Downloaded from: {', '.join(remote.urls)}\n"
        "  Remedy: delete any file marked corrupt (a damaged or half-finished download) and rerun "
        "with download=True where the network is reachable to re-download it (its md5 is checked), "
        f"or place intact copies of the files in {root}. Or use the synthetic stand-in (data 'synthetic')."
    )


def _load_real(source: str, split: str, root: Path, download: bool) -> ImageSet:
    """Read one split with torchvision's reader; any failure becomes one DatasetError."""
    remote = _remote(source, (split,))
    if download and not _available(remote, root) and not _host_reachable(remote.urls[0]):
        host = urlparse(remote.urls[0]).hostname
        raise _dataset_error(source, root, remote, f"files missing or corrupt and {host} is unreachable")
    try:
        if source == "svhn":
            svhn = torchvision.datasets.SVHN(root, split=split, download=download)
            images = torch.from_numpy(np.ascontiguousarray(svhn.data))  # (N, 3, 32, 32) already
            labels = torch.from_numpy(np.asarray(svhn.labels, dtype=np.int64))  # torchvision maps 10 -> 0
        else:
            cifar = torchvision.datasets.CIFAR10(root, train=split == "train", download=download)
            images = torch.from_numpy(cifar.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
            labels = torch.tensor(cifar.targets, dtype=torch.int64)
    except Exception as error:  # md5 mismatch, download or parse failure: the reader's errors have no common type
        raise _dataset_error(source, root, remote, f"{type(error).__name__}: {error}") from error
    return ImageSet(images=images, labels=labels.reshape(-1), source=source, split=split)


# ---------------------------------------------------------------------------------------------
# Loading a split
# ---------------------------------------------------------------------------------------------


def load_split(
    source: str,
    split: str,
    root: str | Path,
    *,
    download: bool = True,
    synthetic_size: int | None = None,
    seed: int = 0,
) -> ImageSet:
    """Load one split of `source` ("svhn", "cifar10" or "synthetic") into memory.

    Real sources are read by torchvision from `root` (downloaded there when `download` and the
    host is reachable); any failure raises DatasetError. "synthetic" renders `synthetic_size`
    images (default SYNTHETIC_SIZES[split]) from (seed, split), cached in root/synthetic/ (or
    $A3_SYNTHETIC_CACHE); train and test are different images.
    """
    _check_choice("source", source, SOURCES)
    _check_choice("split", split, SPLITS)
    root = Path(root)
    if source != "synthetic":
        return _load_real(source, split, root, download)
    n = SYNTHETIC_SIZES[split] if synthetic_size is None else synthetic_size
    images, labels = _cached_synthetic(Path(os.environ.get("A3_SYNTHETIC_CACHE") or root / "synthetic"), split, n, seed)
    return ImageSet(images=images, labels=labels, source="synthetic", split=split)


def load_train_test(cfg, real: str) -> tuple[ImageSet, ImageSet, dict]:
    """The train and test sets an experiment config asks for, and where they came from.

    cfg: any experiment config with data, data_root, seed, train_size, test_size, batch_size;
    real: the problem's real dataset ("svhn" or "cifar10"). The provenance dict (for the run's
    provenance.json) names the source actually used and the split sizes."""
    root = Path(cfg.data_root)
    if cfg.data == "synthetic" or not root.is_dir():  # the stand-in is cached there, a real set downloaded there
        writable_folder(root, "--data-root")
    source, provenance = resolve_source(cfg.data, real, cfg.data_root)
    train, test = (load_split(source, split, cfg.data_root, seed=cfg.seed, synthetic_size=_needed(split, size))
                   .subset(size, cfg.seed) for split, size in (("train", cfg.train_size), ("test", cfg.test_size)))
    if len(train) < cfg.batch_size:
        raise ValueError(f"train_size {len(train)} is smaller than one batch ({cfg.batch_size})")
    return train, test, {**provenance, "n_train": len(train), "n_test": len(test)}


def _needed(split: str, size: int | None) -> int:
    """How many images of the stand-in's `split` a config using `size` of them needs rendered: only those
    (a smoke run's few hundred, not the 20,000 of the full split)."""
    return SYNTHETIC_SIZES[split] if size is None else min(size, SYNTHETIC_SIZES[split])


def _cached_synthetic(folder: Path, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stand-in's split, from its cache file when that is intact, else rendered and cached.

    The file holds the tensors and the sha256 of their bytes (`_digest`), checked on every load: a cache that
    is truncated, damaged (bytes overwritten, size unchanged) or written without a checksum is rendered again,
    with a one-line warning, and replaced."""
    path = folder / f"digits-v{synthetic.VERSION}-{split}-{n}-seed{seed}.pt"
    if path.is_file():
        problem = _cache_problem(path, n)
        if isinstance(problem, tuple):
            return problem
        tqdm.write(f"warning: the synthetic data cache {path} {problem}; rendering it again", file=sys.stderr)
    images, labels = synthetic_digits(n, _split_seed(seed, split))
    atomic_save({"images": images, "labels": labels, "sha256": _digest(images, labels)}, path)
    return images, labels


def _cache_problem(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor] | str:
    """The (images, labels) cached in `path` when intact, else what is wrong with the file."""
    try:
        cached = torch.load(path, weights_only=True)
        images, labels, digest = cached["images"], cached["labels"], cached.get("sha256")
    except Exception as e:  # a damaged zip or pickle raises anything
        return f"is not readable ({type(e).__name__})"
    if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.dtype == torch.uint8
            and images.shape == (n, 3, 32, 32) and labels.dtype == torch.int64 and labels.shape == (n,)):
        return "does not hold the expected tensors"
    if digest is None:
        return "has no checksum (written by an older version)"
    if digest != _digest(images, labels):
        return "is damaged (its checksum does not match its content)"
    return images, labels


def _digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 of the images' and labels' bytes."""
    h = hashlib.sha256(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _split_seed(seed: int, split: str) -> int:
    """A seed per (seed, split), so train and test are drawn independently."""
    digest = hashlib.sha256(f"synthetic-digits/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# ---------------------------------------------------------------------------------------------
# Tensors and batches
# ---------------------------------------------------------------------------------------------


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1]: x / 127.5 - 1 (= ToTensor then Normalize(0.5, 0.5))."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {images.dtype}")
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255], clamped and rounded (inverse of to_float)."""
    if not images.is_floating_point():
        raise TypeError(f"to_uint8 expects floating-point images, got {images.dtype}")
    return ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def iterate_batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """int64 index tensors (CPU) covering range(n) in batches; the last partial one kept unless drop_last."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    return (order[start : start + batch_size] for start in range(0, stop, batch_size))
