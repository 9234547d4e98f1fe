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
  (`synthetic_digits`), for machines without a network (tests, CI, benchmarks).
- ``auto``: the problem's real dataset when its files are present or downloadable, else the
  synthetic stand-in, announced loudly (warning and stderr).

The synthetic stand-in renders 6,000-8,000 images/s on 2 CPU cores (its 20,000 training images
in about 3 s) and is cached under ``root/synthetic/`` as one file per split.
"""

from __future__ import annotations

import functools
import hashlib
import math
import socket
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageDraw, ImageFont
from torchvision.datasets.utils import check_integrity
from tqdm import tqdm

from experiments.runs import atomic_save

REAL_DATASETS = ("svhn", "cifar10")
CHOICES = ("auto", "svhn", "cifar10", "synthetic")
SOURCES = ("svhn", "cifar10", "synthetic")
SPLITS = ("train", "test")
SYNTHETIC_SIZES = {"train": 20000, "test": 5000}  # default sizes of the stand-in's splits
SYNTHETIC_VERSION = 1  # in the cache's file names: bump when the rendering changes

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
    images (default SYNTHETIC_SIZES[split]) from (seed, split), cached in root/synthetic/;
    train and test are different images.
    """
    _check_choice("source", source, SOURCES)
    _check_choice("split", split, SPLITS)
    root = Path(root)
    if source != "synthetic":
        return _load_real(source, split, root, download)
    n = SYNTHETIC_SIZES[split] if synthetic_size is None else synthetic_size
    images, labels = _cached_synthetic(root / "synthetic", split, n, seed)
    return ImageSet(images=images, labels=labels, source="synthetic", split=split)



def load_train_test(cfg, real: str) -> tuple[ImageSet, ImageSet, dict]:
    """The train and test sets an experiment config asks for, and where they came from.

    cfg: any experiment config with data, data_root, seed, train_size, test_size, batch_size;
    real: the problem's real dataset ("svhn" or "cifar10"). The provenance dict (for the run's
    provenance.json) names the source actually used and the split sizes."""
    source, provenance = resolve_source(cfg.data, real, cfg.data_root)
    train = load_split(source, "train", cfg.data_root, seed=cfg.seed).subset(cfg.train_size, cfg.seed)
    test = load_split(source, "test", cfg.data_root, seed=cfg.seed).subset(cfg.test_size, cfg.seed)
    if len(train) < cfg.batch_size:
        raise ValueError(f"train_size {len(train)} is smaller than one batch ({cfg.batch_size})")
    return train, test, {**provenance, "n_train": len(train), "n_test": len(test)}

def _cached_synthetic(folder: Path, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stand-in's split, from its cache file when that is readable, else rendered and cached."""
    path = folder / f"digits-v{SYNTHETIC_VERSION}-{split}-{n}-seed{seed}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, weights_only=True)
            images, labels = cached["images"], cached["labels"]
            if images.dtype == torch.uint8 and images.shape == (n, 3, 32, 32) and labels.shape == (n,):
                return images, labels
        except Exception:  # truncated or foreign: it is only our cache, so render it again
            pass
    images, labels = synthetic_digits(n, _split_seed(seed, split))
    atomic_save({"images": images, "labels": labels}, path)
    return images, labels


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


# ---------------------------------------------------------------------------------------------
# The synthetic stand-in: house-number-like digits
# ---------------------------------------------------------------------------------------------

# Fonts shipped in matplotlib's mpl-data/fonts/ttf: sans, serif, mono; regular, bold, oblique.
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "STIXGeneralBol.ttf",
    "cmss10.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
)
_CELL = 48  # side of a glyph's cell in the atlas, pixels
_INK = 0.75  # digit height / cell height
_SUPER = 2  # digits are sampled at 2x and average-pooled: anti-aliasing
_CHUNK = 1024  # images rendered at once (bounds memory)
_LUMA = (0.299, 0.587, 0.114)  # RGB -> luminance (ITU-R BT.601)


def synthetic_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic stand-in: n house-number-like images and their labels.

    Each image shows one to three digits in one font; the label is the centre digit.
    Labels are balanced (arange(n) % 10, shuffled). Deterministic in (n, seed); a different n
    gives a different set (not a prefix of the other).

    Returns images (n, 3, 32, 32) uint8 and labels (n,) int64.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=generator)]
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        chunk = labels[start : start + _CHUNK]
        images[start : start + len(chunk)] = _render(chunk, generator)
    return images, labels


@functools.lru_cache(maxsize=1)
def _glyph_atlas() -> tuple[torch.Tensor, torch.Tensor]:
    """Each (font, digit) rendered once as an alpha mask.

    Returns masks (F * 10, 1, CELL, CELL) float32 in [0, 1], row font * 10 + digit, ink centred
    in the cell and all digits of a font at one height; and widths (F * 10,): ink width / CELL.
    """
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    masks, widths = [], []
    for name in _FONT_FILES:
        if not (folder / name).is_file():  # matplotlib versions differ in what they ship
            continue
        font_masks = _render_font(folder / name)
        masks.append(font_masks)
        widths.append(_ink_widths(font_masks))
    if not masks:
        raise FileNotFoundError(f"none of the fonts {_FONT_FILES} found in {folder}")
    return torch.cat(masks)[:, None], torch.cat(widths)


def _render_font(path: Path) -> torch.Tensor:
    """The ten digits of one font, (10, CELL, CELL) in [0, 1]: a common height INK * CELL and
    baseline, each digit's ink centred horizontally."""
    top, bottom = _digit_band(ImageFont.truetype(str(path), size=100))
    font = ImageFont.truetype(str(path), size=round(100 * _INK * _CELL / (bottom - top)))
    top, bottom = _digit_band(font)
    baseline = round(_CELL / 2 - (top + bottom) / 2)  # centres the band of digits vertically
    cells = []
    for digit in "0123456789":
        wide = _draw(font, digit, (2 * _CELL, _CELL), (_CELL // 2, baseline))
        left, _, right, _ = wide.getbbox()
        start = (left + right) // 2 - _CELL // 2  # window of CELL columns centred on the ink
        cells.append(torch.from_numpy(np.asarray(wide, dtype=np.float32)[:, start : start + _CELL] / 255.0))
    return torch.stack(cells)


def _digit_band(font: ImageFont.FreeTypeFont) -> tuple[int, int]:
    """Highest top and lowest bottom of the ten digits' ink, in pixels relative to the baseline."""
    size = int(font.size)
    boxes = [_draw(font, digit, (4 * size, 4 * size), (size, 3 * size)).getbbox() for digit in "0123456789"]
    return min(box[1] for box in boxes) - 3 * size, max(box[3] for box in boxes) - 3 * size


def _draw(font: ImageFont.FreeTypeFont, text: str, size: tuple[int, int], pen: tuple[int, int]) -> Image.Image:
    """`text` in white on a black greyscale image of `size`, its baseline starting at `pen`."""
    image = Image.new("L", size, 0)
    ImageDraw.Draw(image).text(pen, text, font=font, fill=255, anchor="ls")
    return image


def _ink_widths(masks: torch.Tensor) -> torch.Tensor:
    """Ink width / CELL of each mask (10, CELL, CELL)."""
    columns = masks.amax(dim=1) > 0.1  # (10, CELL): columns holding ink
    index = torch.arange(_CELL).expand_as(columns)
    first = torch.where(columns, index, _CELL).amin(dim=1)
    last = torch.where(columns, index, -1).amax(dim=1)
    return (last - first + 1).float() / _CELL


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _render(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images (B, 3, 32, 32) uint8 for centre digits `labels` (B,)."""
    B = len(labels)
    masks, widths = _glyph_atlas()
    alpha = _digit_alpha(labels, masks, widths, generator)  # (B, 1, 32, 32)
    background, foreground = _contrasting_pair(B, generator)  # (B, 3) each
    x, y = _pixel_centres(32)[None, :], _pixel_centres(32)[:, None]
    back = background[:, :, None, None] + _shading(background, generator, x, y)
    fore = foreground[:, :, None, None] + _uniform(generator, -0.1, 0.1, B, 3, 1, 1) * _ramp(B, generator, x, y)
    image = torch.lerp(back, fore, alpha)  # alpha compositing, (B, 3, 32, 32)
    image = _gaussian_blur(image, _uniform(generator, 0.3, 1.1, B))
    image = image + _uniform(generator, 0.0, 0.05, B, 1, 1, 1) * torch.randn(image.shape, generator=generator)
    return (image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _digit_alpha(
    labels: torch.Tensor, masks: torch.Tensor, widths: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Coverage (B, 1, 32, 32) of the centre digits `labels` (B,), each with up to two neighbours in its font."""
    B = len(labels)
    fonts = torch.randint(0, len(masks) // 10, (B, 1), generator=generator)
    left, right = torch.randint(0, 10, (2, B), generator=generator)
    glyphs = fonts * 10 + torch.stack([left, labels, right], dim=1)  # (B, 3): atlas rows, left to right
    shown = torch.rand(B, 3, generator=generator) < torch.tensor([0.6, 1.0, 0.6])
    theta = _placement(widths[glyphs], generator)  # (B, 3, 2, 3)

    size = 32 * _SUPER
    rows = shown.flatten().nonzero().squeeze(1)  # only the digits shown are sampled
    sampled = torch.zeros(B * 3, 1, size, size)
    grid = _affine_grid(theta.flatten(0, 1)[rows], size)
    sampled[rows] = F.grid_sample(masks[glyphs.flatten()[rows]], grid, align_corners=False)
    alpha = sampled.view(B, 3, size, size).amax(dim=1, keepdim=True)  # (B, 1, size, size)
    return F.avg_pool2d(alpha, _SUPER)


def _placement(widths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """affine_grid matrices (B, 3, 2, 3) placing three glyphs side by side, the middle one centred.

    widths (B, 3): ink width / cell height of each glyph. In image coordinates p ([-1, 1]) the
    glyph k of cell coordinates u ([-1, 1]) lands at
        p = shift + R (M u + offset_k),  M = height / 2 [[stretch, shear], [0, 1]],
    with R a rotation of the whole group about its centre; affine_grid wants u as a function of p.
    """
    B = len(widths)
    height = 2.0 * _uniform(generator, 0.45, 0.8, B) / _INK  # cell height; digits are 45-80% of the image
    stretch = _uniform(generator, 0.8, 1.25, B)
    shear = _uniform(generator, -0.2, 0.2, B)
    angle = _uniform(generator, -math.pi / 12, math.pi / 12, B)  # +-15 degrees
    shift = _uniform(generator, -0.1, 0.1, B, 2)  # +-1.6 pixels
    gap = height * _uniform(generator, 0.03, 0.2, B)  # between neighbouring digits' ink

    ink = (height * stretch)[:, None] * widths  # (B, 3) ink widths in image units
    offset = torch.zeros(B, 3, 2)
    offset[:, 0, 0] = -((ink[:, 0] + ink[:, 1]) / 2 + gap)
    offset[:, 2, 0] = (ink[:, 1] + ink[:, 2]) / 2 + gap

    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    m = torch.zeros(B, 2, 2)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 1] = stretch, shear, 1.0
    a = rotation @ (m * (height / 2)[:, None, None])  # (B, 2, 2): p = a u + b_k
    b = shift[:, None] + (rotation[:, None] @ offset[..., None])[..., 0]  # (B, 3, 2)
    a_inv = torch.linalg.inv(a)[:, None].expand(B, 3, 2, 2)
    return torch.cat([a_inv, -(a_inv @ b[..., None])], dim=-1)  # u = a^-1 p - a^-1 b_k


def _affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """F.affine_grid(theta, (N, 1, size, size), align_corners=False), by broadcasting (faster on CPU)."""
    coords = _pixel_centres(size)
    t = theta[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    grid = (t[:, :, 0] * coords[None, :] + t[:, :, 2]) + t[:, :, 1] * coords[:, None]  # (N, 2, size, size)
    return grid.permute(0, 2, 3, 1)


def _pixel_centres(size: int) -> torch.Tensor:
    """Coordinates (size,) of pixel centres in [-1, 1], as affine_grid and grid_sample (align_corners=False)."""
    return (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1


def _contrasting_pair(B: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random background and foreground RGB colours (B, 3) whose luminances differ by >= 0.3."""
    luma = torch.tensor(_LUMA)
    pair = _random_colours(B, generator, luma)  # (B, 2, 3)
    while True:
        low_contrast = ((pair[:, 0] - pair[:, 1]) @ luma).abs() < 0.3
        if not low_contrast.any():
            return pair[:, 0], pair[:, 1]
        pair[low_contrast] = _random_colours(int(low_contrast.sum()), generator, luma)


def _random_colours(B: int, generator: torch.Generator, luma: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) RGB colours in [0, 1], from greyish to fully saturated."""
    rgb = torch.rand(B, 2, 3, generator=generator)
    grey = (rgb @ luma)[..., None]
    return grey + _uniform(generator, 0.1, 1.0, B, 2, 1) * (rgb - grey)


def _shading(colour: torch.Tensor, generator: torch.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What a plain background `colour` (B, 3) gains, (B, 3, 32, 32): a gradient and clutter.

    Each of six layers (a ramp, two faint lines, two blobs, in about a third of the images an
    edge such as a plate's border) is a weight map times a colour shift; the shifts of the
    clutter point towards random colours.
    """
    B = len(colour)
    ramp, lines, blobs = _ramp(B, generator, x, y), _lines(B, 2, generator, x, y), _blobs(B, 2, generator, x, y)
    layers = torch.cat([ramp, lines, blobs, _edge(B, generator, x, y)], dim=1)  # (B, 6, 32, 32)
    tints = torch.rand(B, 5, 3, generator=generator) - colour[:, None]  # (B, 5, 3)
    shifts = torch.cat([_uniform(generator, -0.2, 0.2, B, 1, 3), tints], dim=1)  # (B, 6, 3)
    return torch.bmm(shifts.transpose(1, 2), layers.flatten(2)).view(B, 3, 32, 32)  # sum over layers


def _ramp(B: int, generator: torch.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, 1, 32, 32): a linear ramp in [-1, 1] in a random direction."""
    phi = _uniform(generator, 0.0, 2 * math.pi, B, 1, 1, 1)
    return (torch.cos(phi) * x + torch.sin(phi) * y) / math.sqrt(2)


def _lines(B: int, k: int, generator: torch.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, k, 32, 32): faint straight lines, weight <= 0.3."""
    phi = _uniform(generator, 0.0, math.pi, B, k, 1, 1)
    distance = torch.cos(phi) * x + torch.sin(phi) * y - _uniform(generator, -1.0, 1.0, B, k, 1, 1)
    width = _uniform(generator, 0.02, 0.08, B, k, 1, 1)
    return _uniform(generator, 0.0, 0.3, B, k, 1, 1) * torch.exp(-((distance / width) ** 2))


def _blobs(B: int, k: int, generator: torch.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, k, 32, 32): faint Gaussian blobs, weight <= 0.25."""
    cx, cy = _uniform(generator, -1.0, 1.0, 2, B, k, 1, 1)
    sigma = _uniform(generator, 0.15, 0.5, B, k, 1, 1)
    distance2 = (x - cx) ** 2 + (y - cy) ** 2
    return _uniform(generator, 0.0, 0.25, B, k, 1, 1) * torch.exp(-distance2 / (2 * sigma**2))


def _edge(B: int, generator: torch.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, 1, 32, 32): a soft step near the border in about a third of the images, else 0."""
    phi = _uniform(generator, 0.0, 2 * math.pi, B, 1, 1, 1)
    position = _uniform(generator, 0.6, 0.95, B, 1, 1, 1)
    step = torch.sigmoid((torch.cos(phi) * x + torch.sin(phi) * y - position) / 0.03)
    shown = torch.rand(B, 1, 1, 1, generator=generator) < 0.35
    return shown * _uniform(generator, 0.3, 0.8, B, 1, 1, 1) * step


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image (B, C, H, W) with its own Gaussian of std `sigma` (B,) pixels (separable, 5 taps)."""
    B, C, H, W = images.shape
    taps = torch.arange(-2, 3, dtype=images.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(C, dim=0)  # (B * C, 5)
    flat = images.reshape(1, B * C, H, W)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), kernel[:, None, :, None], groups=B * C)
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=B * C)
    return flat.reshape(B, C, H, W)
