"""The synthetic stand-in: house-number-like 32x32 RGB digits, for machines without a network.

Each image shows one to three digits in one of the fonts that ship inside matplotlib (sans,
serif, mono; regular, bold, oblique); the label is the centre digit, classes balanced. Random
foreground/background colours with a luminance contrast of at least 0.3, background gradients
and clutter (lines, blobs, a plate's edge), small rotations, scales, shears and shifts, blur
and noise. Deterministic in (n, seed): `synthetic_digits(n, seed)`.

Rendering: every (font, digit) is drawn once by PIL into an atlas of alpha masks
(`_glyph_atlas`); each image then places up to three glyphs with one affine map per glyph
(`grid_sample`, at 2x and average-pooled) and composites them over a shaded background, all
as batched tensor operations. About 6,000-8,000 images/s on 2 CPU cores.

`experiments.harness.data` caches the rendered splits (`load_split("synthetic", ...)`); the cache's
file names carry VERSION.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

VERSION = 1  # in the data cache's file names: bump when the rendering changes

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
