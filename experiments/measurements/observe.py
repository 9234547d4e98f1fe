"""Measured answers to the questions that ask what samples look like (1.3 b-d, f and 2.2 d).

Three statistics, each a number a sentence can follow from:
- **sharpness**: the energy of a Laplacian filter's response, mean over pixels of (lap * x)^2 on the
  grey-level image in [0, 1]; blur removes high frequencies, so a blurred set has less of it. Reported
  as the ratio of a generated set's energy to the test images' (1: as sharp; < 1: blurrier).
- **blobs**: samples that are smooth colour fields, with contrast but without edges: their Laplacian energy
  below `BLOB_SHARPNESS_BELOW` (25%) of the test images' while their pixel contrast (grey-level variance within an
  image, mean over images) is at least `BLOB_CONTRAST_AT_LEAST` (25%) of theirs. Low energy with low contrast is a
  flat image instead, and high energy is detail or noise.
- **digit patterns**: the share of images that a digit classifier assigns one class with probability
  >= `CONFIDENT` (0.9), and the histogram of the predicted classes.
- **interpolation smoothness**: the root-mean-square change per pixel between consecutive frames of a
  strip, how even those steps are (mean step / largest step: 1 for equal steps, near 1/(n-1) when a
  single step does all the change), and whether the middle frames still look like digits.

Besides, the classifier-FID proxy (experiments.measurements.classifier.classifier_fid) of the samples against as many
test images, so that the VAE's and the DDPM's samples compare on the same four numbers. `vae` and `ddpm`
measure a finished run's artifacts for its summary.json (experiments.presentation.summaries.Observations).

Cost: the digit classifier (about 120k parameters) reads a few hundred images (samples, as many test images,
interpolation frames), and the VAE encodes and decodes as many test images once: 0.25 s for the VAE and 0.03 s
for the DDPM in the smoke preset on 2 CPU cores (measured); in the full preset (100 final samples, 96 middle
frames, 64-dimensional features) it is the same few hundred images, well under a second on a GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from experiments.harness import data, files, rng, runs
from experiments.measurements import classifier as digit_classifier
from experiments.presentation.summaries import (
    DigitPatterns,
    Interpolations,
    Observations,
    ReconstructionObservations,
    SampleObservations,
    StripObservations,
)

CONFIDENT = 0.9
# The 3x3 discrete Laplacian (4-neighbour), applied to each image's grey level.
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def grey(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float grey level (N, 1, H, W) in [0, 1] (ITU-R 601 luma weights)."""
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise TypeError(f"expected uint8 images (N, 3, H, W), got {images_uint8.dtype} {tuple(images_uint8.shape)}")
    weights = torch.tensor([0.299, 0.587, 0.114], device=images_uint8.device).view(1, 3, 1, 1)
    return (images_uint8.float() / 255 * weights).sum(1, keepdim=True)


def laplacian_energy(images_uint8: torch.Tensor) -> float:
    """Mean over images and interior pixels of (Laplacian * grey)^2: high-frequency content."""
    x = grey(images_uint8)
    response = F.conv2d(x, LAPLACIAN.to(x.device).view(1, 1, 3, 3))  # (N, 1, H-2, W-2), no padding
    return response.pow(2).mean().item()


def sharpness_ratio(generated_uint8: torch.Tensor, reference_uint8: torch.Tensor) -> float:
    """Laplacian energy of the generated images over that of the reference (test) images."""
    return laplacian_energy(generated_uint8) / laplacian_energy(reference_uint8)


BLOB_SHARPNESS_BELOW = 0.25    # blobs: under a quarter of the test images' Laplacian energy (few edges) ...
BLOB_CONTRAST_AT_LEAST = 0.25  # ... with at least a quarter of their pixel contrast (not a flat image)
BLOB_RULE = (f"Laplacian energy below {BLOB_SHARPNESS_BELOW:.0%} of the test images' with a pixel contrast (grey-level "
             f"variance within an image) at least {BLOB_CONTRAST_AT_LEAST:.0%} of theirs")


def contrast(images_uint8: torch.Tensor) -> float:
    """Mean over images of the grey level's variance over an image's pixels: 0 for a flat image."""
    return grey(images_uint8).var(dim=(2, 3), correction=0).mean().item()


def contrast_ratio(generated_uint8: torch.Tensor, reference_uint8: torch.Tensor) -> float | None:
    """Pixel contrast of the generated images over that of the reference images; None when theirs is 0."""
    reference = contrast(reference_uint8)
    return contrast(generated_uint8) / reference if reference > 0 else None


def blobs(sharpness: float, contrast_ratio_: float | None) -> bool | None:
    """The blob rule (BLOB_RULE): few edges but not flat; None when the contrast could not be compared."""
    if contrast_ratio_ is None:
        return None
    return sharpness < BLOB_SHARPNESS_BELOW and contrast_ratio_ >= BLOB_CONTRAST_AT_LEAST


@torch.no_grad()
def digit_patterns(classifier: torch.nn.Module, images_uint8: torch.Tensor, device: torch.device | str,
                   batch_size: int = 500) -> DigitPatterns:
    """The share of images classified with probability >= CONFIDENT, and the predicted-class histogram."""
    was_training = classifier.training
    classifier.eval()
    probs = torch.cat([classifier(data.to_float(images_uint8[i:i + batch_size].to(device))).softmax(1).cpu()
                       for i in range(0, len(images_uint8), batch_size)])   # (N, 10)
    classifier.train(was_training)
    top, label = probs.max(1)
    return DigitPatterns(n_images=len(probs), threshold=CONFIDENT,
                         confident_fraction=(top >= CONFIDENT).float().mean().item(),
                         mean_top_probability=top.mean().item(),
                         class_histogram=torch.bincount(label, minlength=probs.shape[1]).tolist())


def interpolation_steps(strips_uint8: torch.Tensor) -> dict:
    """strips (P, n, 3, H, W) uint8 -> the RMS change per pixel between consecutive frames, in [0, 1]
    units: its mean, and evenness = mean step / largest step per strip, averaged over strips."""
    if strips_uint8.dim() != 5 or strips_uint8.shape[1] < 3:
        raise ValueError(f"expected strips (P, n >= 3, 3, H, W), got {tuple(strips_uint8.shape)}")
    x = strips_uint8.float() / 255
    steps = (x[:, 1:] - x[:, :-1]).pow(2).mean((2, 3, 4)).sqrt()   # (P, n - 1)
    evenness = steps.mean(1) / steps.max(1).values.clamp_min(1e-12)
    return {"mean_step": steps.mean().item(), "evenness": evenness.mean().item(),
            "steps": steps.mean(0).tolist()}


def middle_frames(strips_uint8: torch.Tensor) -> torch.Tensor:
    """The frames strictly between the two ends of each strip, (P * (n - 2), 3, H, W)."""
    return strips_uint8[:, 1:-1].reshape(-1, *strips_uint8.shape[2:])


def strip_observations(classifier: torch.nn.Module, strips_uint8: torch.Tensor,
                       device: torch.device | str) -> StripObservations:
    """The steps of interpolation strips (P, n, 3, H, W) and how many of their middle frames read as digits."""
    middle = digit_patterns(classifier, middle_frames(strips_uint8), device)
    return StripObservations(n_strips=strips_uint8.shape[0], n_frames=strips_uint8.shape[1],
                             **interpolation_steps(strips_uint8), middle_confident_fraction=middle.confident_fraction)


def sample_observations(classifier: torch.nn.Module, samples: torch.Tensor, reference: torch.Tensor,
                        device: torch.device | str) -> SampleObservations:
    """The samples' sharpness and contrast against the reference images (and whether they are blobs), their digit
    patterns, and the classifier-FID between as many samples and reference images (the first
    min(len(samples), len(reference)) of each)."""
    n = min(len(samples), len(reference))
    sharpness, contrasts = sharpness_ratio(samples, reference), contrast_ratio(samples, reference)
    return SampleObservations(sharpness_ratio=sharpness,
                              digits=digit_patterns(classifier, samples, device),
                              classifier_fid=digit_classifier.classifier_fid(classifier, samples[:n], reference[:n],
                                                                             device=device),
                              fid_size=n, contrast_ratio=contrasts, blobs=blobs(sharpness, contrasts),
                              blob_rule=BLOB_RULE)


def observations(classifier: torch.nn.Module, samples: torch.Tensor, reference: torch.Tensor,
                 device: torch.device | str, *,
                 reconstructions: tuple[torch.Tensor, torch.Tensor] | None = None, reconstruction_t: int | None = None,
                 strips: dict[str, torch.Tensor] | None = None) -> Observations:
    """Everything the descriptive questions need, from uint8 image sets: the samples against the reference
    (test) images, with the reference's own digit patterns; optionally the sharpness of reconstructions
    against their originals, given as (original, reconstruction) (from noise step `reconstruction_t` for
    a DDPM), and interpolation strips {"test": (P, n, ...), "prior": (P, n, ...)}."""
    recon = None
    if reconstructions is not None:
        original, reconstruction = reconstructions
        recon = ReconstructionObservations(sharpness_ratio=sharpness_ratio(reconstruction, original),
                                           n_images=len(reconstruction), t=reconstruction_t)
    interpolations = None
    if strips is not None:
        interpolations = Interpolations(**{kind: strip_observations(classifier, strips[kind], device)
                                           for kind in ("test", "prior")})
    return Observations(samples=sample_observations(classifier, samples, reference, device),
                        reference=digit_patterns(classifier, reference, device),
                        reconstructions=recon, interpolations=interpolations)


def reference_images(test: data.ImageSet, n: int, seed: int) -> torch.Tensor:
    """n test images (all when fewer), the same for a VAE and a DDPM run of the same seed and test set."""
    return test.subset(n, rng.stream_seed(seed, "observe-reference")).images


@torch.no_grad()
def vae(run_: runs.Run, cfg, model: torch.nn.Module, classifier: torch.nn.Module, test: data.ImageSet,
        device: torch.device) -> Observations:
    """A VAE run's observations: its final samples and interpolation strips (read back from its artifacts),
    and the reconstructions mu_theta(mu_phi(x)) of the reference test images, as the snapshots draw them."""
    samples = files.load_artifact(run_.dir, "final_samples.pt")
    reference = reference_images(test, len(samples), cfg.seed)
    model.eval()
    recon = torch.cat([data.to_uint8(model.decode(model.encode(x).mode()).mode().cpu())
                       for x in (data.to_float(reference[i:i + cfg.eval_batch_size]).to(device)
                                 for i in range(0, len(reference), cfg.eval_batch_size))])
    return observations(classifier, samples, reference, device, reconstructions=(reference, recon),
                        strips=files.load_artifact(run_.dir, "interpolations.pt"))


@torch.no_grad()
def ddpm(run_: runs.Run, cfg, classifier: torch.nn.Module, test: data.ImageSet,
         device: torch.device) -> Observations:
    """A DDPM run's observations: its final samples, and the reconstructions of the study of 2.2(c) from its
    smallest noise step t' (read back from reconstructions.pt) against their originals."""
    samples = files.load_artifact(run_.dir, "final_samples.pt")
    study = files.load_artifact(run_.dir, "reconstructions.pt")
    return observations(classifier, samples, reference_images(test, len(samples), cfg.seed), device,
                        reconstructions=(study["original"], study["reconstructions"][0]),
                        reconstruction_t=study["levels"][0])
