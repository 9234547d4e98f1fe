"""A small digit classifier, and the Fréchet distance between its features of two image sets.

Used by the DDPM experiments (Problem 2): to read digits off reconstructions and samples, and
as a cheap sample-quality proxy, `classifier_fid`. That proxy is a "digit-classifier FID": the
Fréchet distance of FID (Heusel et al., 2017, "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium") computed on this network's penultimate features, not on
Inception-v3's pool features. Its values are not comparable with published FIDs, only with
each other (same classifier, same number of images).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from experiments.harness.data import iterate_batches, to_float
from experiments.measurements.monitors import extract_features

NUM_CLASSES = 10


class DigitClassifier(nn.Module):
    """CNN for (B, 3, 32, 32) images in [-1, 1]: three stride-2 conv blocks and a two-layer head.

    body: conv3x3/2 (3 -> 32) -> 16x16, conv3x3/2 (32 -> 64) -> 8x8, conv3x3/2 (64 -> 64) -> 4x4,
    each with batch norm and ReLU, then flatten (the digit's position matters: the label is the
    centre digit), Linear(1024, feature_dim) and ReLU. head: Linear(feature_dim, 10).
    About 120k parameters with feature_dim 64.
    """

    def __init__(self, *, feature_dim: int = 64):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.body = nn.Sequential(
            block(3, 32),  # (B, 32, 16, 16)
            block(32, 64),  # (B, 64, 8, 8)
            block(64, 64),  # (B, 64, 4, 4)
            nn.Flatten(),  # (B, 1024)
            nn.Linear(64 * 4 * 4, feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(feature_dim, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) in [-1, 1] -> (B, feature_dim): the penultimate vector."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) in [-1, 1] -> (B, 10) logits."""
        return self.head(self.body(x))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of x (B, C, H, W) by its own (dy, dx) uniform in [-max_shift, max_shift]^2.

    The border is extended by replication, so no black frame appears. Offsets are drawn on the
    CPU from `generator` and the result stays on x's device.
    """
    B, C, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator).to(x.device)  # (2, B)
    rows = offsets[0][:, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(W, device=x.device)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def seeded(make: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """make() initialised from `seed` without touching the caller's global RNG, on `device`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().to(device)


def adam_one_cycle(model: nn.Module, lr: float, total_steps: int) -> tuple[torch.optim.Adam, object]:
    """Adam with a one-cycle learning-rate schedule peaking at `lr` over `total_steps`; puts model in train mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)


def step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, schedule: object) -> None:
    """One optimiser step on `loss`, then one step of the learning-rate schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()


def train_classifier(
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 3e-3,
    device: torch.device | str = "cpu",
    seed: int = 0,
    augment_shift: bool = True,
    max_shift: int = 2,
    progress: bool = False,
) -> DigitClassifier:
    """Train a `DigitClassifier` on uint8 images (N, 3, 32, 32) and int64 labels (N,) in [0, 10).

    Adam with a one-cycle learning-rate schedule (peak `lr`), cross-entropy; with `augment_shift`
    each training image is translated by up to `max_shift` pixels. The images move to `device`
    once. Deterministic in `seed` (initialisation, order, shifts; the global RNG is left as it was).
    Returns the model in eval mode, on `device`.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.shape[1:] != (3, 32, 32):
        raise TypeError(f"images_uint8 must be uint8 (N, 3, 32, 32), got {images_uint8.dtype} "
                        f"{tuple(images_uint8.shape)}")
    if labels.dtype != torch.int64 or labels.shape != images_uint8.shape[:1]:
        raise ValueError(f"labels must be int64 ({len(images_uint8)},), got {labels.dtype} {tuple(labels.shape)}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    device = torch.device(device)
    model = seeded(DigitClassifier, seed, device)
    generator = torch.Generator().manual_seed(seed)
    images, targets = images_uint8.to(device), labels.to(device)
    optimizer, schedule = adam_one_cycle(model, lr, epochs * -(-len(images) // batch_size))
    for _ in tqdm(range(epochs), desc="digit classifier", unit="epoch", disable=not progress):
        for idx in iterate_batches(len(images), batch_size, shuffle=True, drop_last=False, generator=generator):
            idx = idx.to(device)
            x = to_float(images[idx])  # (B, 3, 32, 32) in [-1, 1]
            if augment_shift:
                x = random_shift(x, max_shift, generator)
            step(F.cross_entropy(model(x), targets[idx]), optimizer, schedule)
    return model.eval()


def for_run(train, test, *, epochs: int, device: torch.device, seed: int) -> tuple[DigitClassifier, float]:
    """The digit classifier a VAE or DDPM run measures its images with: trained on the run's training
    ImageSet (`train.images`, `train.labels`), with its accuracy on `test`; (model in eval mode, accuracy).
    Trains with gradients on even when called under torch.no_grad() (a run's final evaluation)."""
    with torch.enable_grad():
        model = train_classifier(train.images, train.labels, epochs=epochs, device=device, seed=seed)
    return model, accuracy(model, test.images, test.labels, device=device)


def predict(
    model: DigitClassifier, images_uint8: torch.Tensor, batch_size: int = 512, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Predicted digits (N,) int64 on `device` for uint8 images (N, 3, 32, 32)."""
    return extract_features(model, images_uint8, batch_size, device, to_float).argmax(dim=1)


def accuracy(model: DigitClassifier, images_uint8: torch.Tensor, labels: torch.Tensor, batch_size: int = 512,
             device: torch.device | str = "cpu") -> float:
    """Fraction in [0, 1] of images whose predicted digit equals `labels` (N,)."""
    if labels.shape != images_uint8.shape[:1]:
        raise ValueError(f"labels must have shape ({len(images_uint8)},), got {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("accuracy of an empty image set is undefined")
    predictions = predict(model, images_uint8, batch_size, device)
    return (predictions == labels.to(predictions.device)).float().mean().item()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the formula of FID).

    features_a: (N_a, D), features_b: (N_b, D), N_a, N_b >= 2. With means mu and unbiased
    covariances S of each set:

        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})

    computed in float64 on the CPU. Tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i) with lambda_i the
    eigenvalues of the symmetric PSD matrix S_a^{1/2} S_b S_a^{1/2} (similar to S_a S_b), and
    S_a^{1/2} from an eigendecomposition; eigenvalues below 0 (round-off) are clipped to 0.
    """
    for name, f in (("features_a", features_a), ("features_b", features_b)):
        if not f.is_floating_point() or f.dim() != 2 or len(f) < 2:
            raise ValueError(f"{name} must be a floating-point (N, D) tensor with N >= 2, got {f.dtype} "
                             f"{tuple(f.shape)}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature dimensions differ: {features_a.shape[1]} and {features_b.shape[1]}")
    mu_a, S_a = _mean_and_covariance(features_a)
    mu_b, S_b = _mean_and_covariance(features_b)
    lam_a, U_a = torch.linalg.eigh(S_a)
    sqrt_S_a = (U_a * lam_a.clamp_min(0).sqrt()) @ U_a.T  # (D, D), U diag(sqrt(lambda)) U^T
    M = sqrt_S_a @ S_b @ sqrt_S_a
    trace_sqrt = torch.linalg.eigvalsh((M + M.T) / 2).clamp_min(0).sqrt().sum()  # Tr((S_a S_b)^{1/2})
    d2 = (mu_a - mu_b).square().sum() + S_a.trace() + S_b.trace() - 2 * trace_sqrt
    return max(d2.item(), 0.0)


def _mean_and_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) -> mean (D,) and unbiased covariance (D, D), float64 on the CPU."""
    x = features.detach().to("cpu", torch.float64)
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (len(x) - 1)


def classifier_fid(model: DigitClassifier, images_a_uint8: torch.Tensor, images_b_uint8: torch.Tensor,
                   batch_size: int = 512, device: torch.device | str = "cpu") -> float:
    """Digit-classifier FID: `frechet_distance` of `model.features` (its `body`) over two uint8 image sets.

    A proxy for sample quality, not the Inception FID (see the module docstring): lower means
    the two sets are closer in this classifier's feature space. Both sets should hold the same
    number of images (the estimate is biased upwards for small sets).
    """
    features_a = extract_features(model.body, images_a_uint8, batch_size, device, to_float)
    features_b = extract_features(model.body, images_b_uint8, batch_size, device, to_float)
    return frechet_distance(features_a, features_b)
