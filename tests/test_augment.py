"""experiments.harness.augment against torchvision: exact per-step oracles, and the statistics of whole pipelines.

Statistical comparisons draw n independent samples per side with fixed seeds (so each test is deterministic) and
use thresholds with a false-alarm rate of about 1e-3 or less: the two-sample Kolmogorov-Smirnov statistic below
c sqrt((n + m) / (n m)), c = sqrt(ln(2 / 1e-3) / 2) = 1.95 (conservative for discrete samples), and proportions
and means within 4 standard errors. The PIL pipeline rounds to uint8 after each step, which moves values by
about 1/255; the thresholds below leave room for that where it says so.
"""
import colorsys
import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import stats

from experiments.harness import augment as A
from experiments.harness.synthetic import synthetic_digits

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # outputs in [0, 1], as after ToTensor
COLOUR = (200, 100, 50)  # an orange whose jitter never clamps: see test_single_jitter_factor_ranges


def ks_limit(n: int, m: int, alpha: float = 1e-3) -> float:
    return math.sqrt(math.log(2 / alpha) / 2) * math.sqrt((n + m) / (n * m))


def ks(a, b) -> float:
    return stats.ks_2samp(np.asarray(a), np.asarray(b)).statistic


def within(p_hat: float, p: float, n: int, k: float = 4.0) -> bool:
    return abs(p_hat - p) <= k * math.sqrt(p * (1 - p) / n)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pil_views(images: torch.Tensor, pipeline: T.Compose, seed: int) -> torch.Tensor:
    """The per-image reference on each uint8 image (B, 3, H, W): (B, 3, size, size)."""
    torch.manual_seed(seed)
    return torch.stack([pipeline(Image.fromarray(image.permute(1, 2, 0).numpy())) for image in images])


def constant_images(n: int, colour=COLOUR, side: int = 8) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8)[None, :, None, None].expand(n, 3, side, side).contiguous()


# --------------------------------------------------------------------------- crop boxes


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40), (8, 40)])
def test_crop_boxes_match_get_params(height, width):
    """Area fraction, aspect ratio and position of the boxes; (8, 40) takes the central fallback ~10% of times."""
    n, scale, ratio = 4000, (0.08, 1.0), (3 / 4, 4 / 3)
    top, left, h, w = A.sample_crop_boxes(n, height, width, scale, ratio, generator=generator(0))
    assert ((top >= 0) & (left >= 0) & (h >= 1) & (w >= 1) & (top + h <= height) & (left + w <= width)).all()

    torch.manual_seed(1)
    image = torch.empty(3, height, width)
    ref = torch.tensor([T.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)])
    ref_top, ref_left, ref_h, ref_w = ref.T
    limit = ks_limit(n, n)
    assert ks(h * w / (height * width), ref_h * ref_w / (height * width)) < limit
    assert ks((w / h).log(), (ref_w / ref_h).log()) < limit
    assert ks(top, ref_top) < limit and ks(left, ref_left) < limit
    fallback = (h == height) & (w == min(width, round(height * 4 / 3)))
    ref_fallback = (ref_h == height) & (ref_w == min(width, round(height * 4 / 3)))
    p = ref_fallback.float().mean().item()
    assert abs(fallback.float().mean().item() - p) <= 4 * math.sqrt(2 * max(p, 1e-3) / n)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("height, width", [(32, 32), (64, 48)])
def test_crop_resize_flip_matches_pil(height, width):
    """PIL crops, resizes (bilinear, antialiased when shrinking) and flips; it rounds to uint8 twice (two passes)."""
    n = 100
    images = torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=generator(2))
    params = A.sample_params(n, height, width, generator=generator(3))
    out = A.crop_resize_flip(images, params, 32)
    for b in range(n):
        pil = Image.fromarray(images[b].permute(1, 2, 0).numpy())
        box = [int(v[b]) for v in (params.top, params.left, params.height, params.width)]
        ref = TF.resized_crop(pil, *box, [32, 32], interpolation=T.InterpolationMode.BILINEAR)
        ref = TF.to_tensor(TF.hflip(ref) if params.flip[b] else ref)
        assert (out[b] - ref).abs().max() <= 1 / 255 + 1e-5, f"image {b}, box {box}"
    assert params.flip.any() and not params.flip.all()


def test_crop_resize_matches_tensor_interpolation():
    """Upsampling: the same as torchvision's float resized_crop (bilinear, align_corners=False), to float precision."""
    n = 50
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator(4))
    params = A.sample_params(n, 32, 32, generator=generator(5))
    out = A.crop_resize_flip(images, params, 32)
    for b in range(n):
        box = [int(v[b]) for v in (params.top, params.left, params.height, params.width)]
        ref = TF.resized_crop(images[b].float() / 255, *box, [32, 32], antialias=False)
        torch.testing.assert_close(out[b], ref.flip(-1) if params.flip[b] else ref, atol=1e-5, rtol=0)


def test_identity_path_is_exact():
    """Whole-image crop, no flip, jitter or grayscale, mean 0, std 1: ToTensor exactly."""
    config = A.AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, **PLAIN)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=generator(6))
    torch.testing.assert_close(A.SimSiamAugment(config)(images), images.float() / 255, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- colour: exact per step


def test_adjust_hue_matches_torchvision():
    x = torch.rand(64, 3, 8, 8, generator=generator(7))
    x[:16] = (x[:16] * 4).round() / 4                  # ties between channels and gray pixels
    delta = torch.rand(64, generator=generator(8)) - 0.5
    ref = torch.stack([TF.adjust_hue(x[b], float(delta[b])) for b in range(64)])
    torch.testing.assert_close(A.adjust_hue(x, delta), ref, atol=1e-5, rtol=0)


def test_color_jitter_follows_each_images_own_order():
    """Each image matches torchvision's adjust_* applied in that image's order (all 24 orders, clamps hit).

    torchvision's tensor gray weighs red 0.2989 (PIL and this module 0.299): differences up to ~1e-4.
    """
    orders = torch.tensor(list(itertools.permutations(range(4)))).repeat(10, 1)   # (240, 4)
    B = len(orders)
    x = torch.rand(B, 3, 8, 8, generator=generator(9))
    factors = torch.cat([2 * torch.rand(B, 3, generator=generator(10)),            # 0..2: clamps at 1
                         torch.rand(B, 1, generator=generator(11)) - 0.5], dim=1)
    mask = torch.arange(B) % 7 != 0                                                  # every 7th image: no jitter
    out = A.color_jitter_(x.clone(), factors, orders, mask)
    assert torch.equal(out[~mask], x[~mask])
    steps = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]

    def reference(b: int, order) -> torch.Tensor:
        y = x[b]
        for step in order:
            y = steps[step](y, float(factors[b, step]))
        return y

    jittered = mask.nonzero()[:, 0].tolist()
    for b in jittered:
        torch.testing.assert_close(out[b], reference(b, orders[b].tolist()), atol=1e-3, rtol=0)
    # The order matters on these inputs: one shared order would fail the check above.
    assert sum((out[b] - reference(b, range(4))).abs().max() > 0.05 for b in jittered) > len(jittered) // 2


def test_orders_are_uniform_permutations_per_image():
    n = 4800
    order = A.sample_params(n, 32, 32, generator=generator(12)).order
    assert (order.sort(dim=1).values == torch.arange(4)).all()
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(dim=1)
    counts = torch.unique(codes, return_counts=True)[1]
    assert len(counts) == 24
    expected = n / 24
    assert ((counts - expected) ** 2 / expected).sum() < stats.chi2.ppf(1 - 1e-3, df=23)


# --------------------------------------------------------------------------- colour: factor distributions


def hue_turns(rgb: torch.Tensor) -> torch.Tensor:
    return torch.tensor([colorsys.rgb_to_hsv(*map(float, c))[0] for c in rgb])


def recover_factor(step: int, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The factor of a single jitter step from the output colours (n, 3) of the constant colour x (3,).

    Brightness scales; contrast and saturation both blend a constant image with its gray, which they keep;
    hue shifts the HSV hue (colorsys is the oracle).
    """
    if step == A.BRIGHTNESS:
        return out[:, 1] / x[1]
    if step in (A.CONTRAST, A.SATURATION):
        g = sum(w * c for w, c in zip(A.LUMA, x))
        return (out[:, 0] - g) / (x[0] - g)
    return (hue_turns(out) - hue_turns(x[None]) + 0.5).remainder(1) - 0.5


@pytest.mark.parametrize("step", [A.BRIGHTNESS, A.CONTRAST, A.SATURATION, A.HUE])
def test_single_jitter_factor_ranges(step):
    """One jitter step at a time on a constant colour: factors in [0.6, 1.4], hue shifts in [-0.1, 0.1], uniform.

    Compared with torchvision's ColorJitter (tensor: same formulas, no uint8 rounding) on the same colour. The
    colour never clamps: at 1.4 brightness green is 0.55, saturation and contrast keep 0.08 <= x <= 0.91.
    """
    n = 2000
    strengths = [0.0] * 4
    strengths[step] = (0.4, 0.4, 0.4, 0.1)[step]
    config = A.AugmentConfig(size=4, jitter=tuple(strengths), jitter_p=1.0, grayscale_p=0.0, **PLAIN)
    x = torch.tensor(COLOUR) / 255
    out = A.SimSiamAugment(config)(constant_images(n, side=4), generator(13))[:, :, 0, 0]
    torch.manual_seed(14)
    jitter = T.ColorJitter(*strengths)
    ref = torch.stack([jitter(x[:, None, None])[:, 0, 0] for _ in range(n)])

    factor, ref_factor = recover_factor(step, out, x), recover_factor(step, ref, x)
    low, high = config.factor_ranges()[step]
    assert low - 1e-3 <= factor.min() < low + 0.02 and high - 0.02 < factor.max() <= high + 1e-3
    assert stats.kstest(factor.numpy(), stats.uniform(low, high - low).cdf).statistic < ks_limit(n, 10**9)
    assert ks(factor, ref_factor) < ks_limit(n, n)


# --------------------------------------------------------------------------- whole pipeline vs PIL


DEFAULT = A.AugmentConfig()


def unnormalise(x: torch.Tensor, config: A.AugmentConfig = DEFAULT) -> torch.Tensor:
    return x * torch.tensor(config.std)[:, None, None] + torch.tensor(config.mean)[:, None, None]


def test_jitter_and_grayscale_probabilities_match_pil():
    """Constant colour: gray output (p 0.2), unchanged colour (no jitter, no gray: 0.8 x 0.2), else jittered."""
    n = 2000
    images = constant_images(n)
    x = torch.tensor(COLOUR) / 255
    augment = A.SimSiamAugment()
    for out in (augment(images, generator(15)), pil_views(images, A.torchvision_pipeline(), seed=16)):
        rgb = unnormalise(out)[:, :, 0, 0]                                     # constant images stay constant
        is_gray = (rgb.max(dim=1).values - rgb.min(dim=1).values) < 1e-4
        unchanged = ~is_gray & ((rgb - x).abs().max(dim=1).values < 1 / 255)
        assert within(is_gray.float().mean().item(), 0.2, n)
        assert within(unchanged.float().mean().item(), 0.16, n)
        assert within((~is_gray & ~unchanged).float().mean().item(), 0.64, n)


def test_jittered_colours_match_pil():
    """The distribution of the output colour of one constant image, channel by channel (KS), against PIL.

    Both on PIL's grid of uint8 levels: the distributions have atoms (unchanged, clamped and hue-only values keep
    a channel exactly), which float rounding would put on either side of PIL's. PIL truncates each blend to a
    level below, which moves about one level's mass, up to ~2%: 0.02 added to the limit.
    """
    n = 2000
    images = constant_images(n)
    mine = unnormalise(A.SimSiamAugment()(images, generator(17)))[:, :, 0, 0]
    ref = unnormalise(pil_views(images, A.torchvision_pipeline(), seed=18))[:, :, 0, 0]
    mine, ref = (mine * 255).round(), (ref * 255).round()
    for c in range(3):
        assert ks(mine[:, c], ref[:, c]) < ks_limit(n, n) + 0.02, f"channel {c}"


def test_flip_probability_matches_pil():
    """A gray ramp, dark to bright left to right: the output decreases iff flipped (every other step is monotone)."""
    n = 2000
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8)
    images = ramp.expand(n, 3, 32, 32).contiguous()
    for out in (A.SimSiamAugment()(images, generator(19)), pil_views(images, A.torchvision_pipeline(), seed=20)):
        first, last = out[:, 0, :, :4].mean(dim=(1, 2)), out[:, 0, :, -4:].mean(dim=(1, 2))
        decided = (last - first).abs() > 1e-3                                  # not flattened by a clamp
        assert decided.float().mean() > 0.95
        assert within((first > last)[decided].float().mean().item(), 0.5, int(decided.sum()))


def test_output_statistics_match_pil():
    """Per-image channel means and standard deviations of the views of synthetic digits: equal averages (4 SE)."""
    images, _ = synthetic_digits(1000, seed=0)
    x1, x2 = A.two_views(images, A.SimSiamAugment(), generator(21))
    mine = torch.cat([x1, x2])
    ref = torch.cat([pil_views(images, A.torchvision_pipeline(), seed) for seed in (22, 23)])
    for statistic in (lambda x: x.mean(dim=(2, 3)), lambda x: x.std(dim=(2, 3))):
        a, b = statistic(mine), statistic(ref)                                 # (2000, 3) each
        se = (a.var(dim=0) / len(a) + b.var(dim=0) / len(b)).sqrt()
        assert ((a.mean(dim=0) - b.mean(dim=0)).abs() < 4 * se).all(), (a.mean(dim=0), b.mean(dim=0), se)


# --------------------------------------------------------------------------- interface


def test_shapes_dtype_and_layout():
    images = torch.randint(0, 256, (5, 3, 40, 36), dtype=torch.uint8)
    x = A.SimSiamAugment()(images)
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32 and x.device == images.device
    x1, x2 = A.two_views(images, A.SimSiamAugment(channels_last=True))
    assert x1.shape == x2.shape == (5, 3, 32, 32)
    assert x1.is_contiguous(memory_format=torch.channels_last) and not x1.is_contiguous()
    assert not torch.equal(x1, x2)
    assert A.SimSiamAugment(A.AugmentConfig(size=24))(images).shape == (5, 3, 24, 24)


def test_chunks_do_not_change_the_result():
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8, generator=generator(28))
    params = A.sample_params(50, 32, 32, generator=generator(29))
    torch.testing.assert_close(A.apply(images, params, chunk_size=7), A.apply(images, params), atol=1e-6, rtol=0)


def test_seeded_generator_reproduces_views():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    augment = A.SimSiamAugment()
    assert torch.equal(A.two_views(images, augment, generator(24))[0], A.two_views(images, augment, generator(24))[0])
    assert not torch.equal(augment(images, generator(24)), augment(images, generator(25)))
    torch.manual_seed(26)
    first = augment(images)
    torch.manual_seed(26)
    assert torch.equal(first, augment(images))


def test_rejects_bad_input():
    augment = A.SimSiamAugment()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(TypeError, match="uint8"):
        augment(images.float())
    with pytest.raises(TypeError, match="uint8"):
        augment(images.numpy())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        augment(images[0])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        augment(images[:, :1])
    with pytest.raises(ValueError, match="generator"):
        augment(images.to("meta"), generator(0))
    with pytest.raises(TypeError, match="uint8"):
        A.two_views(images.float(), augment)
    for bad in (dict(scale=(0.5, 0.1)), dict(ratio=(0.0, 1.0)), dict(flip_p=1.5), dict(jitter=(0.4, 0.4, 0.4, 0.6)),
                dict(std=(1.0, 0.0, 1.0)), dict(size=0)):
        with pytest.raises(ValueError):
            A.AugmentConfig(**bad)
    with pytest.raises(ValueError, match="cpu_chunk_size"):
        A.SimSiamAugment(cpu_chunk_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    params = A.sample_params(64, 32, 32, generator=generator(27))
    on_cuda = A.AugmentParams(**{k: v.cuda() for k, v in vars(params).items()})
    torch.testing.assert_close(A.apply(images.cuda(), on_cuda).cpu(), A.apply(images, params), atol=1e-4, rtol=0)
    x = A.SimSiamAugment()(images.cuda(), torch.Generator(device="cuda").manual_seed(0))
    assert x.device.type == "cuda" and x.shape == (64, 3, 32, 32)
