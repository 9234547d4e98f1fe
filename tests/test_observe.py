"""experiments.measurements.observe: the statistics behind the report's descriptive answers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from experiments.measurements import observe
from experiments.presentation.summaries import SampleObservations, VAESummary


def textured(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def blurred(images: torch.Tensor) -> torch.Tensor:
    x = F.avg_pool2d(images.float(), 3, stride=1, padding=1, count_include_pad=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def test_sharpness_ratio_is_one_for_the_same_set_and_below_one_after_blur():
    images = textured()
    assert observe.sharpness_ratio(images, images) == pytest.approx(1.0)
    assert observe.sharpness_ratio(blurred(images), images) < 0.3
    assert observe.laplacian_energy(torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)) == 0.0


def test_grey_rejects_float_images():
    with pytest.raises(TypeError, match="uint8"):
        observe.grey(torch.rand(2, 3, 32, 32))


class FixedClassifier(torch.nn.Module):
    """Logits chosen per image by its mean brightness: bright -> confident class 3, dark -> unsure.
    Its features (`body`, what the classifier-FID reads): the image averaged over 2x2 blocks, 12 numbers."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())

    def forward(self, x):  # x in [-1, 1], (B, 3, H, W)
        bright = (x.mean((1, 2, 3)) > 0).float()[:, None]
        confident = F.one_hot(torch.full((len(x),), 3), 10).float() * 10
        return bright * confident + (1 - bright) * torch.zeros(len(x), 10)


def test_digit_patterns_counts_confident_images_and_their_classes():
    bright = torch.full((3, 3, 32, 32), 250, dtype=torch.uint8)
    images = torch.cat([bright, torch.zeros(1, 3, 32, 32, dtype=torch.uint8)])
    out = observe.digit_patterns(FixedClassifier(), images, "cpu", batch_size=2)
    assert out.confident_fraction == pytest.approx(0.75) and out.n_images == 4 and out.threshold == 0.9
    assert out.class_histogram[3] == 3 and sum(out.class_histogram) == 4


def test_interpolation_steps_even_ramp_and_single_jump():
    frames = torch.arange(10, dtype=torch.uint8) * 25                       # 0, 25, ..., 225: equal steps
    ramp = frames.view(1, 10, 1, 1, 1).expand(2, 10, 3, 8, 8).contiguous()
    out = observe.interpolation_steps(ramp)
    assert out["evenness"] == pytest.approx(1.0) and out["mean_step"] == pytest.approx(25 / 255)
    jump = torch.zeros(1, 10, 3, 8, 8, dtype=torch.uint8)
    jump[:, 5:] = 200
    assert observe.interpolation_steps(jump)["evenness"] == pytest.approx(1 / 9)
    assert observe.middle_frames(ramp).shape == (16, 3, 8, 8)
    with pytest.raises(ValueError, match="strips"):
        observe.interpolation_steps(ramp[:, :2])


def test_observations_gathers_every_statistic(tmp_path):
    images = textured(8)
    strips = {"test": torch.stack([images[:4], images[4:]]), "prior": images[:5].unsqueeze(0)}  # (P, n, 3, 32, 32)
    dark = images // 4                                                   # mean brightness < 0: the classifier is unsure
    out = observe.observations(FixedClassifier(), blurred(images), dark, "cpu",
                               reconstructions=(images, blurred(images)), reconstruction_t=7, strips=strips)
    assert out.samples.sharpness_ratio < 1 and out.reconstructions.sharpness_ratio < 1
    assert out.reconstructions.t == 7 and out.reconstructions.n_images == 8
    assert out.reference.confident_fraction == 0 and out.reference.n_images == 8
    assert out.samples.fid_size == 8 and out.samples.classifier_fid > 0
    assert (out.interpolations.test.n_strips, out.interpolations.test.n_frames) == (2, 4)
    assert (out.interpolations.prior.n_strips, len(out.interpolations.prior.steps)) == (1, 4)
    # The schema round-trips through summary.json, nested parts included.
    VAESummary.partial(epochs=1, observations=out).write(tmp_path)
    assert VAESummary.read(tmp_path).observations == out


def test_the_classifier_fid_compares_as_many_samples_as_reference_images():
    images = textured(12)
    same = observe.sample_observations(FixedClassifier(), images[:6], images[:6], "cpu")
    assert same.classifier_fid == pytest.approx(0, abs=1e-4) and same.sharpness_ratio == pytest.approx(1)
    assert observe.sample_observations(FixedClassifier(), images, images[:5], "cpu").fid_size == 5


# --------------------------------------------------------------------------- the blob rule

def strokes(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Digit-like images: a dark background and a bright '7' of 3-pixel strokes at a random place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, 32, 32) * 0.4
    x = x.clone()
    for i in range(n):
        r, c = torch.randint(4, 10, (2,), generator=g).tolist()
        x[i, :, r:r + 3, c:c + 16] = 0.9
        x[i, :, r:r + 20, c + 13:c + 16] = 0.9
    return (x * 255).round().to(torch.uint8)


def smooth_fields(n: int = 16, seed: int = 1) -> torch.Tensor:
    """Blobs: one broad Gaussian bump of a random colour per image, no edge anywhere."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy, cx = torch.rand(2, n, 1, 1, generator=g) * 32
    bump = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 8.0 ** 2))
    x = 0.1 + torch.rand(n, 3, 1, 1, generator=g) * bump[:, None]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def box_blur(images: torch.Tensor, k: int, times: int) -> torch.Tensor:
    x = images.float()
    for _ in range(times):
        x = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
    return x.round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("make, blobs", [
    (lambda: strokes(seed=5), False),                      # other sharp digits: as sharp, as contrasted
    (smooth_fields, True),                                 # colour fields: contrast without edges
    (lambda: box_blur(strokes(), 5, 1), True),             # blurred digits: soft blobs where the strokes were
    (lambda: box_blur(strokes(), 9, 3), False),            # blurred until almost nothing is left: flat, not blobs
    (lambda: textured(16, 3), False),                      # pixel noise: far more Laplacian energy
    (lambda: torch.full((16, 3, 32, 32), 90, dtype=torch.uint8), False),   # flat: no contrast at all
])
def test_the_blob_rule_tells_blobs_from_digits_noise_and_flat_images(make, blobs):
    reference, images = strokes(), make()
    sharpness, contrast = observe.sharpness_ratio(images, reference), observe.contrast_ratio(images, reference)
    assert observe.blobs(sharpness, contrast) is blobs
    if blobs:
        assert sharpness < observe.BLOB_SHARPNESS_BELOW and contrast >= observe.BLOB_CONTRAST_AT_LEAST


def test_the_blob_rule_at_its_thresholds_and_without_a_contrast():
    assert observe.blobs(0.2499, 0.25) is True
    assert observe.blobs(0.25, 1.0) is False and observe.blobs(0.01, 0.2499) is False
    assert observe.blobs(0.01, None) is None
    flat = torch.full((2, 3, 32, 32), 7, dtype=torch.uint8)
    assert observe.contrast(flat) == 0 and observe.contrast_ratio(strokes(2), flat) is None


def test_sample_observations_record_the_blob_rule_and_old_summaries_still_read(tmp_path):
    out = observe.sample_observations(FixedClassifier(), smooth_fields(8), strokes(8), "cpu")
    assert out.blobs is True and out.contrast_ratio > 0.25 and "25%" in out.blob_rule
    old = out.to_dict()
    for key in ("contrast_ratio", "blobs", "blob_rule"):   # a summary written before the rule existed
        del old[key]
    read = SampleObservations.from_dict(old)
    assert read.blobs is None and read.contrast_ratio is None and read.sharpness_ratio == out.sharpness_ratio
