"""SimSiam's two-view augmentation, batched on the device, every random choice drawn per sample.

The starter's pipeline (SimSiam, Chen & He 2021, Sec. 4 and Appendix A, CIFAR-10 variant) runs per image on PIL
in DataLoader workers (`torchvision_pipeline`):

    RandomResizedCrop(32, scale=(0.08, 1), ratio=(3/4, 4/3)) -> RandomHorizontalFlip(0.5)
    -> RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8) -> RandomGrayscale(0.2)
    -> ToTensor -> Normalize(CIFAR10_MEAN, CIFAR10_STD)

`SimSiamAugment` applies the same distribution of transforms to a whole uint8 batch (B, 3, H, W) where it lives
(CPU or CUDA): `sample_params` draws each image's crop box, flip, jitter factors and order, grayscale, from a
`torch.Generator` when one is given (on the images' device), else from that device's global RNG; `apply`
runs them. `two_views` gives the two views of a batch:

    images = train_set.images.to(device)                    # (N, 3, 32, 32) uint8, once
    augment = SimSiamAugment(channels_last=True)
    generator = torch.Generator(device=device).manual_seed(seed)
    for index in torch.randperm(len(images), device=device, generator=generator).split(512):
        x1, x2 = two_views(images[index], augment, generator)   # (512, 3, 32, 32) float32 each

Each step, on x in [0, 1] (ToTensor's scale):

1. Crop box, torchvision's `RandomResizedCrop.get_params` vectorised: 10 attempts of area ~ U(scale) H W and
   log(w / h) ~ U(log ratio), w = round(sqrt(area r)), h = round(sqrt(area / r)); the first attempt that fits
   wins, its top-left corner uniform over the valid positions; when none fits, the central crop (clipped to
   `ratio`).
2. Resize to size x size as PIL's bilinear `resize` does: output pixel i reads the crop around
   (i + 1/2) length / size - 1/2 with a triangle filter of half-width max(1, length / size) (antialiasing when
   shrinking), restricted to the crop and normalised. The filter is separable, so crop + resize + flip is
   out = R_y img R_x^T with per-sample (size, H) and (size, W) weight matrices: two batched matmuls.
3. Horizontal flip with p = 0.5: the rows of R_x reversed.
4. Colour jitter with p = 0.8, torchvision's formulas (`torchvision.transforms.functional.adjust_*`), each
   step clamped to [0, 1]: brightness x <- b x; contrast x <- c x + (1 - c) mean(gray(x)); saturation
   x <- s x + (1 - s) gray(x); hue h <- h + delta in HSV. b, c, s ~ U(max(0, 1 - 0.4), 1 + 0.4),
   delta ~ U(-0.1, 0.1), and the four steps in a uniformly random order per sample (torchvision draws
   `randperm(4)` per image).
5. Grayscale with p = 0.2: every channel <- gray(x) = 0.299 r + 0.587 g + 0.114 b (ITU-R 601-2, PIL's "L").
6. Normalise: (x - mean) / std per channel.

Differences from the PIL pipeline: PIL computes in uint8, rounding after every step (its HSV hue has 256 levels
and `adjust_hue` truncates delta to a multiple of 1/255 turn); here everything is float32, so single pixels
differ by about 1/255 and the distributions of every statistic agree (tests/test_augment.py). torchvision's
tensor functions weigh red by 0.2989 instead of PIL's 0.299 in gray(x).

Kornia 0.9.0, read (kornia/augmentation) and measured on this machine's 2 CPU cores, 1024 images 32 x 32:
- `RandomResizedCrop`: its `ResizedCropGenerator` draws as torchvision does (10 attempts per sample, area
  uniform, log-ratio uniform, rounded sizes, first fit), except that its fallback crop gets a random offset
  where torchvision centres it (the same box for square images). It crops with a Python loop over the
  samples (`cropping_mode="slice"`) and by default with `align_corners=True`, which maps the crop's corner
  pixel centres onto the output's, a different grid from PIL's resize (`align_corners=False` matches when
  upsampling). 140 ms per batch.
- `ColorJitter` uses torchvision's formulas (`adjust_brightness_accumulative`, contrast towards the mean of
  the grayscale image, saturation towards the grayscale image, hue in HSV), its factor ranges and the
  clamps after each step, but one order, `torch.randperm(4)`, for the whole batch: not per sample.
  `ColorJiggle` differs more (additive brightness, contrast without the mean, saturation scaled in HSV).
  560 ms per batch.
- Neither takes a `torch.Generator`: both draw from the global RNG, on the CPU by default.
So this module uses none of it: the sampler, the matmul resize and the per-sample-order jitter are a few dozen
lines that draw from an explicit generator on the images' device and avoid per-sample Python loops
(benchmarks/bench_augment.py has the timings).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms as T
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
LUMA = (0.299, 0.587, 0.114)  # gray = 0.299 r + 0.587 g + 0.114 b, as PIL's convert("L")
ATTEMPTS = 10  # crop boxes tried per image before the central fallback, as torchvision
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # the jitter steps, indices into factors and order
_HUE_OFFSETS = (5.0, 3.0, 1.0)  # HSV -> RGB: channel n of (r, g, b) reads k_n = (offset_n + 6 h) mod 6


@dataclass(frozen=True)
class AugmentConfig:
    """The pipeline's hyperparameters; the defaults are the starter's SimSiam CIFAR-10 pipeline.

    size: output side. scale: range of the crop's area as a fraction of the image's. ratio: range of the crop's
    width / height. flip_p, jitter_p, grayscale_p: probabilities of flip, colour jitter and grayscale.
    jitter: ColorJitter's (brightness, contrast, saturation, hue) strengths. mean, std: Normalize's.
    """

    size: int = 32
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size >= 1):
            raise ValueError(f"size must be a positive int, got {self.size!r}")
        for name in ("scale", "ratio"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        for name in ("flip_p", "jitter_p", "grayscale_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[HUE] > 0.5:
            raise ValueError(f"jitter must be (brightness, contrast, saturation, hue) >= 0 with hue <= 0.5, "
                             f"got {self.jitter}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must have 3 entries, std > 0; got {self.mean}, {self.std}")

    def factor_ranges(self) -> tuple[tuple[float, float], ...]:
        """(low, high) of the brightness, contrast, saturation factors and of the hue shift, as ColorJitter's."""
        return (*((max(0.0, 1 - j), 1 + j) for j in self.jitter[:HUE]), (-self.jitter[HUE], self.jitter[HUE]))


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for B images, all on one device.

    top, left, height, width: (B,) int64, the crop box in input pixels. flip: (B,) bool.
    jitter: (B,) bool, colour jitter applied. factors: (B, 4) float32, the brightness, contrast and saturation
    factors and the hue shift (turns). order: (B, 4) int64, per image a permutation of (BRIGHTNESS, CONTRAST,
    SATURATION, HUE), the jitter steps in the order they run. grayscale: (B,) bool.
    """

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    grayscale: torch.Tensor

    def __getitem__(self, index: slice | torch.Tensor) -> AugmentParams:
        """The draws of the images selected by index, along the batch dimension."""
        return AugmentParams(**{name: value[index] for name, value in vars(self).items()})


# ---------------------------------------------------------------------------------------------
# Drawing the parameters
# ---------------------------------------------------------------------------------------------


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`RandomResizedCrop.get_params` for n images of height x width at once: (top, left, h, w), each (n,) int64.

    Per image, ATTEMPTS draws of area ~ U(scale) height width and r = w / h with log r ~ U(log ratio), giving
    w = round(sqrt(area r)), h = round(sqrt(area / r)); the first that fits in the image is kept, with
    top ~ U{0..height - h} and left ~ U{0..width - w}; if none fits, the central crop of the image, its
    aspect ratio clipped to `ratio`.
    """
    area = _uniform(scale[0], scale[1], (n, ATTEMPTS), generator, device) * (height * width)
    r = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), (n, ATTEMPTS), generator, device))
    w, h = torch.sqrt(area * r).round(), torch.sqrt(area / r).round()       # (n, ATTEMPTS); round half to even
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = (fits.cumsum(dim=1) == 0).sum(dim=1, keepdim=True)              # (n, 1) index of the first fit
    found = first[:, 0] < ATTEMPTS
    first = first.clamp(max=ATTEMPTS - 1)

    # Fallback: the whole image, cut to the nearest allowed aspect ratio (torchvision's central crop).
    if width / height < min(ratio):
        w0, h0 = width, round(width / min(ratio))
    elif width / height > max(ratio):
        w0, h0 = round(height * max(ratio)), height
    else:
        w0, h0 = width, height
    h = torch.where(found, h.gather(1, first)[:, 0], float(h0)).long()
    w = torch.where(found, w.gather(1, first)[:, 0], float(w0)).long()
    u = torch.rand((2, n), generator=generator, device=device)
    top = torch.where(found, (u[0] * (height - h + 1)).long(), (height - h) // 2)   # floor(U (m + 1)) ~ U{0..m}
    left = torch.where(found, (u[1] * (width - w + 1)).long(), (width - w) // 2)
    return top, left, h, w


def sample_params(
    n: int,
    height: int,
    width: int,
    config: AugmentConfig = AugmentConfig(),
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> AugmentParams:
    """Independent draws of every random choice of the pipeline for n images of height x width, on `device`.

    The jitter factors and order are drawn for every image, used where `jitter` is True. The order is a uniform
    permutation per image: the argsort of 4 i.i.d. uniforms.
    """
    top, left, h, w = sample_crop_boxes(n, height, width, config.scale, config.ratio,
                                        generator=generator, device=device)
    u = torch.rand((3, n), generator=generator, device=device)
    low, high = torch.tensor(config.factor_ranges(), device=device).T      # (4,) each
    factors = low + (high - low) * torch.rand((n, 4), generator=generator, device=device)
    order = torch.rand((n, 4), generator=generator, device=device).argsort(dim=1)
    return AugmentParams(top=top, left=left, height=h, width=w, flip=u[0] < config.flip_p,
                         jitter=u[1] < config.jitter_p, factors=factors, order=order,
                         grayscale=u[2] < config.grayscale_p)


# ---------------------------------------------------------------------------------------------
# Geometry: crop, resize, flip
# ---------------------------------------------------------------------------------------------


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """PIL's bilinear resize of the span [start, start + length) of an axis to out_size pixels, as matrices.

    start, length: (B,) int64; flip: (B,) bool, reverse the output. Returns R (B, out_size, in_size) with
    out = R @ pixels along that axis: output pixel i reads around c_i = start + (i + 1/2) length / out_size - 1/2
    (pixel centres at integers) with the triangle filter max(0, 1 - |j - c_i| / s), s = max(1, length / out_size),
    over the pixels j of the span only, normalised to sum 1.
    """
    i = torch.arange(out_size, device=start.device, dtype=torch.float32)
    if flip is not None:
        i = torch.where(flip[:, None], out_size - 1 - i, i)                 # (B, out_size)
    length = length[:, None].float()
    centre = start[:, None] + (i + 0.5) * length / out_size - 0.5           # (B, out_size)
    support = (length / out_size).clamp(min=1.0)[..., None]                 # (B, 1, 1)
    j = torch.arange(in_size, device=start.device, dtype=torch.float32)
    weight = (1 - (j - centre[..., None]).abs() / support).clamp(min=0)     # (B, out_size, in_size)
    inside = (j >= start[:, None, None]) & (j < start[:, None, None] + length[..., None])
    weight = weight * inside
    return weight / weight.sum(dim=-1, keepdim=True)


def crop_resize_flip(images: torch.Tensor, params: AugmentParams, size: int) -> torch.Tensor:
    """Crop each image to its box, resize to size x size (bilinear), flip where asked; ToTensor's [0, 1] scale.

    images: (B, 3, H, W) uint8. Returns (B, 3, size, size) float32: R_y img R_x^T / 255 per image and channel.
    """
    B, C, H, W = images.shape
    r_y = resize_weights(params.top, params.height, H, size) / 255                   # (B, size, H)
    r_x = resize_weights(params.left, params.width, W, size, flip=params.flip)       # (B, size, W)
    rows = torch.bmm(images.float().view(B, C * H, W), r_x.transpose(1, 2))          # (B, C H, size)
    return r_y[:, None] @ rows.view(B, C, H, size)                                   # (B, C, size, size)


# ---------------------------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------------------------
# Masks over pixels enter as 0/1 factors rather than as bool tensors (torch.where, bool * float): on CPU those
# are 10-25x slower than an add (torch 2.14). x (1 - m) + y m is exactly x or y.


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): 0.299 r + 0.587 g + 0.114 b."""
    y = x[:, 0:1] * LUMA[0]
    return y.add_(x[:, 1:2], alpha=LUMA[1]).add_(x[:, 2:3], alpha=LUMA[2])


def adjust_hue(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by delta (B,) turns, as torchvision's adjust_hue: RGB -> HSV, h + delta, HSV -> RGB.

    x: (B, 3, H, W) in [0, 1]. The value v = max(r, g, b) and the chroma c = v - min(r, g, b) stay; the hue in
    turns is h = (g - b) / 6c if v = r, (b - r + 2c) / 6c if v = g (and not r), (r - g + 4c) / 6c otherwise, and
    back in RGB channel n is v - c clamp(min(k_n, 4 - k_n), 0, 1) with k_n = (offset_n + 6 (h + delta)) mod 6,
    offsets (5, 3, 1). Gray pixels (c = 0) are unchanged.
    """
    r, g, b = x.unbind(dim=1)                                               # (B, H, W) each
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)
    is_r = 1 - torch.sign(v - r)                                            # 1 where v = r, else 0
    is_g = (1 - torch.sign(v - g)) * (1 - is_r)
    is_b = 1 - is_r - is_g
    six_hc = is_r * (g - b) + is_g * (b - r + 2 * c) + is_b * (r - g + 4 * c)
    six_h = six_hc / c.clamp(min=1e-12) + 6 * delta[:, None, None]         # 6 (h + delta); |six_hc| <= 5c
    offsets = torch.tensor(_HUE_OFFSETS, device=x.device, dtype=x.dtype)[:, None, None]
    k = offsets + six_h[:, None]                                            # (B, 3, H, W)
    k.sub_(k.div(6).floor_().mul_(6))                                       # mod 6
    torch.minimum(k, 4 - k, out=k).clamp_(0, 1)
    return k.mul_(c[:, None]).neg_().add_(v[:, None])                      # v - c clamp(min(k, 4 - k), 0, 1)


def _blend_step_(x: torch.Tensor, step: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """One slot of brightness / contrast / saturation, chosen per image by step (B,), in place on x.

    x <- clamp(f x + (1 - f) t, 0, 1) with the factor f (B,) and t = 0, mean(gray(x)) or gray(x) for
    brightness, contrast, saturation; f = 1 leaves x as it is.
    """
    y = gray(x)                                                             # (B, 1, H, W)
    w_saturation = ((1 - f) * (step == SATURATION))[:, None, None, None]
    w_contrast = ((1 - f) * (step == CONTRAST))[:, None, None, None] * y.mean(dim=(2, 3), keepdim=True)
    return x.mul_(f[:, None, None, None]).add_(torch.addcmul(w_contrast, y, w_saturation)).clamp_(0, 1)


def color_jitter_(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter on the images where mask (B,) is True, each with its own factors and order; in place.

    x: (B, 3, H, W) in [0, 1]; factors (B, 4) and order (B, 4) as in AugmentParams. The hue step runs once, on
    the whole batch; the other three are blends (`_blend_step_`) that run in three slots before it and three
    after it, slot k doing, per image, the step at position k of its order if that falls on its side of the hue
    step, and nothing (factor 1) otherwise.
    """
    hue_at = order.argsort(dim=1)[:, HUE]                                   # (B,) position of the hue step
    for k in range(3):
        f = factors.gather(1, order[:, k:k + 1])[:, 0]
        _blend_step_(x, order[:, k], torch.where(mask & (k < hue_at), f, 1.0))
    m = mask[:, None, None, None].to(x.dtype)
    rotated = adjust_hue(x, factors[:, HUE]).mul_(m)
    x.mul_(1 - m).add_(rotated)
    for k in range(1, 4):
        f = factors.gather(1, order[:, k:k + 1])[:, 0]
        _blend_step_(x, order[:, k], torch.where(mask & (k > hue_at), f, 1.0))
    return x


def grayscale_(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every channel <- gray(x) on the images where mask (B,) is True; in place."""
    m = mask[:, None, None, None].to(x.dtype)
    y = gray(x).mul_(m)
    return x.mul_(1 - m).add_(y)


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------


def apply(images: torch.Tensor, params: AugmentParams, config: AugmentConfig = AugmentConfig(), *,
          chunk_size: int | None = None, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Run the pipeline with the given draws: uint8 (B, 3, H, W) -> normalised float32 (B, 3, size, size).

    chunk_size: process that many images at a time (None: all at once); the result does not depend on it.
    memory_format: the layout of the result.
    """
    B = len(images)
    chunk_size = chunk_size or max(B, 1)
    out = torch.empty(B, 3, config.size, config.size, device=images.device, memory_format=memory_format)
    for lo in range(0, B, chunk_size):
        p = params[lo:lo + chunk_size]
        x = crop_resize_flip(images[lo:lo + chunk_size], p, config.size)
        color_jitter_(x, p.factors, p.order, p.jitter)
        grayscale_(x, p.grayscale)
        normalize(x, config, out=out[lo:lo + chunk_size])
    return out


def normalize(x: torch.Tensor, config: AugmentConfig = AugmentConfig(), *,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Normalize's last step: float (B, 3, H, W) in [0, 1] -> (x - mean) / std per channel (config's mean and std),
    into `out` when given."""
    mean = torch.tensor(config.mean, device=x.device)[:, None, None]  # (3, 1, 1)
    std = torch.tensor(config.std, device=x.device)[:, None, None]
    return torch.sub(x, mean, out=out).div_(std)


class SimSiamAugment(nn.Module):
    """One random view per image of a uint8 batch, on the batch's device: `forward(images, generator=None)`.

    config: the pipeline (default: the starter's). channels_last: return the views in channels_last memory
    format (the layout convolutions prefer on GPU). cpu_chunk_size: on CPU, images processed at a time, which
    keeps the working set in cache (about twice as fast as 1024 at once); other devices take the whole batch.
    Holds no state: the device follows the images.
    """

    def __init__(self, config: AugmentConfig = AugmentConfig(), *, channels_last: bool = False,
                 cpu_chunk_size: int = 128) -> None:
        super().__init__()
        if cpu_chunk_size < 1:
            raise ValueError(f"cpu_chunk_size must be >= 1, got {cpu_chunk_size}")
        self.config = config
        self.channels_last = channels_last
        self.cpu_chunk_size = cpu_chunk_size

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """images: (B, 3, H, W) uint8 -> (B, 3, size, size) float32, normalised.

        generator: a torch.Generator on the images' device; None draws from that device's global RNG.
        """
        _check_images(images)
        if generator is not None and generator.device.type != images.device.type:
            raise ValueError(f"generator is on {generator.device} but the images are on {images.device}: "
                             f"create it with torch.Generator(device={str(images.device)!r})")
        B, _, H, W = images.shape
        params = sample_params(B, H, W, self.config, generator=generator, device=images.device)
        chunk_size = self.cpu_chunk_size if images.device.type == "cpu" else None
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return apply(images, params, self.config, chunk_size=chunk_size, memory_format=memory_format)


def two_views(images: torch.Tensor, augment: SimSiamAugment,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent views (x1, x2), each (B, 3, size, size), of a uint8 batch (B, 3, H, W), in one pass."""
    _check_images(images)
    x1, x2 = augment(torch.cat([images, images]), generator).chunk(2)
    return x1, x2


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be a uint8 tensor (B, 3, H, W) with values 0..255, got {kind}; "
                        "pass the dataset's uint8 images (ImageSet.images), not ToTensor's floats")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}; "
                         "add a batch dimension with images[None] or move channels first with permute(0, 3, 1, 2)")


def torchvision_pipeline(config: AugmentConfig = AugmentConfig()) -> T.Compose:
    """The per-image reference: the same pipeline as torchvision transforms of one PIL image."""
    return T.Compose([
        T.RandomResizedCrop(config.size, scale=config.scale, ratio=config.ratio),
        T.RandomHorizontalFlip(config.flip_p),
        T.RandomApply([T.ColorJitter(*config.jitter)], p=config.jitter_p),
        T.RandomGrayscale(config.grayscale_p),
        T.ToTensor(),
        T.Normalize(config.mean, config.std),
    ])
