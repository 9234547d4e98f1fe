"""Question 4 in the real runs: the spectrum of SimSiam's features and how its predictor aligns with it.

Q4 (report/theory/q4.tex) studies linear SimSiam: with the stop-gradient and a predictor W_p,
W W^T - W_p^T W_p is conserved and W_p tends to F12 F1^{-1}; DirectPred (Tian, Chen & Ganguli,
2021, "Understanding self-supervised learning dynamics without contrastive pairs", ICML)
observed that the trained predictor's eigenvectors align with those of the feature correlation
F = E[z z^T], and without the stop-gradient the features collapse. Here, on a trained model:
the spectrum of F over a fixed batch (collapse shows as a low effective rank) and the
alignment of the predictor's linear map with F's eigenvectors.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.func import jacrev

from experiments.harness import files
from experiments.presentation.summaries import SPECTRUM_FOLDER, Alignment, SpectrumResult

# --------------------------------------------------------------------------- spectrum of F

def feature_correlation(z: torch.Tensor) -> torch.Tensor:
    """F = E[z z^T] = z^T z / N over a batch z (N, d): (d, d) float64 on z's device.

    Uncentred, the correlation matrix of DirectPred (its F = E[f f^T]), not the covariance.
    """
    if z.dim() != 2 or len(z) == 0:
        raise ValueError(f"z must be a non-empty (N, d) tensor, got {tuple(z.shape)}")
    z = z.detach().double()
    return z.T @ z / len(z)  # (d, d)


def spectrum(F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (d,) in descending order and eigenvectors U (d, d), column i for eigenvalue i.

    F symmetric (d, d); F = U diag(eigenvalues) U^T.
    """
    eigenvalues, U = torch.linalg.eigh(F)  # ascending
    return eigenvalues.flip(0), U.flip(1)


def effective_rank(eigenvalues: torch.Tensor) -> float:
    """exp(entropy of p), p_i = lambda_i / sum_j lambda_j (Roy & Vetterli, 2007); in [1, d].

    Negative eigenvalues (round-off of a PSD matrix) count as 0; r equal eigenvalues and the
    rest 0 give r. A collapsed representation has an effective rank near 1.
    """
    lam = eigenvalues.double().clamp_min(0)
    p = lam / lam.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum()).item()  # xlogy: 0 log 0 = 0


# --------------------------------------------------------------------------- the predictor

def predictor_linear_map(predictor: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """W_p (d, d): the predictor's Jacobian dp/dz at the batch mean z_bar = mean(z), z (N, d).

    Computed with `torch.func.jacrev` in eval mode (batch norm with its running statistics,
    so the map does not depend on a batch); each submodule's mode is restored afterwards.
    For the bottleneck MLP it is W2 diag(relu'(.)) diag(gamma / sigma) W1 at z_bar: the local
    linear map of a piecewise-linear predictor. `nn.Identity()` gives I. Same dtype and device as z.
    """
    z_bar = z.detach().mean(dim=0)  # (d,)
    modes = [(module, module.training) for module in predictor.modules()]
    predictor.eval()
    try:
        W_p = jacrev(lambda v: predictor(v[None])[0])(z_bar)  # (d, d): W_p[i, j] = dp_i / dz_j
    finally:
        for module, training in modes:
            module.training = training
    return W_p.detach()


ROTATIONS = 16   # random bases of F's eigenspace drawn for the chance levels' Monte Carlo parts


def diagonal_share_chance(M: torch.Tensor) -> float:
    """E ||diag(R^T M R)||^2 / ||M||_F^2 over R Haar-distributed on O(r), M (r, r): the diagonal share of M in a
    uniformly random orthonormal basis, in closed form,

        (tr(M)^2 + tr(M^2) + ||M||_F^2) / ((r + 2) ||M||_F^2).

    Derivation: R^T M R has Frobenius norm ||M||_F, and each column q of R is uniform on the sphere, where
    q^T M q = q^T S q with S = (M + M^T) / 2 and E (q^T S q)^2 = (tr(S)^2 + 2 tr(S^2)) / (r (r + 2)) (the fourth
    moments of the sphere); tr S = tr M and 2 tr(S^2) = tr(M^2) + ||M||_F^2. It is 1 for M = c I, about 1/r for
    i.i.d. entries, and large for a near-identity or positive semi-definite M, whatever its eigenvectors.
    """
    frobenius = M.square().sum()
    return ((M.trace() ** 2 + (M @ M).trace() + frobenius) / ((len(M) + 2) * frobenius)).item()


def excess(statistic: float, chance: float) -> float | None:
    """(statistic - chance) / (1 - chance): 0 at chance level, 1 for full alignment; None when chance is 1 (W_p a
    multiple of the identity on span(U), which shares every basis: alignment is then undefined)."""
    return None if 1 - chance < 1e-9 else (statistic - chance) / (1 - chance)


def haar(r: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """R (r, r) float64 on `device`, Haar-distributed on O(r): QR of a Gaussian matrix (drawn on the CPU from
    `generator`, so the same on every device), columns' signs fixed by diag(R) (Mezzadri, 2007, "How to generate
    random matrices from the classical compact groups")."""
    Q, R = torch.linalg.qr(torch.randn(r, r, generator=generator, dtype=torch.float64).to(device))
    return Q * torch.sign(R.diagonal())


def alignment(W_p: torch.Tensor, eigvecs: torch.Tensor, k: int, *, rotations: int = ROTATIONS,
              seed: int = 0) -> Alignment:
    """How far W_p (d, d) shares the eigenvectors of F (a summaries.Alignment); the top k of them one by one.

    eigvecs U (d, r), r <= d orthonormal columns: F's eigenvectors, largest eigenvalue first. Pass only
    the r = rank(F) that carry its spectrum (r = N when F comes from N < d samples): the basis of F's null
    space is arbitrary, so including it would dilute the diagonal even for a W_p that commutes with F.
      cosines             cos(W_p u_i, u_i) for i < k (signed; 1 where u_i is an eigenvector of W_p
                          with a positive eigenvalue, -1 for a negative one, 0 if W_p u_i = 0)
      diagonal            u_i^T W_p u_i for i < k: W_p's eigenvalue along u_i when aligned
      diagonal_fraction   ||diag(M)||^2 / ||M||_F^2 with M = U^T W_p U (r, r), W_p within span(U): 1
                          exactly when that is diagonal in F's eigenbasis (W_p commutes with F, for
                          distinct eigenvalues)
      mean_abs_cos        the mean of |cosines|
    Each statistic is compared with its chance level: its expectation for the same W_p when F's eigenbasis is
    replaced by a uniformly random orthonormal basis U R of the same span (R Haar on O(r); when r = d, as with
    N >= d images, a uniformly random eigenbasis of R^d). A map whose eigenvectors have nothing to do with F
    lands there, and that level depends on W_p: 1 for W_p = I, near 1/r only for a map with i.i.d. entries, far
    above 1/r for a nearly symmetric positive semi-definite W_p (what DirectPred finds SimSiam's predictor to be).
      chance              the diagonal fraction's, in closed form (`diagonal_share_chance`)
      cos_chance          mean |cos|'s, by Monte Carlo over `rotations` random bases (seeded by `seed`), every
                          column a draw; cos_chance_se its standard error (across the rotations)
      chance_spread       the standard deviation of the diagonal fraction over those random bases, and
      cos_chance_spread   that of a mean |cos| over k of their columns: how far from chance an unrelated map lands
      excess, cos_excess  (statistic - chance) / (1 - chance) (`excess`), 1 when fully aligned
    Within a degenerate eigenspace of F the basis is arbitrary too, so there these read low even for a
    commuting W_p. Cost: `rotations` QR factorisations and 2 products of r x r matrices, in float64 on U's device
    (1.0 s at r = 256 on one thread of this 2-core CPU, shared with other work).
    """
    d, r = eigvecs.shape
    if W_p.shape != (d, d) or not 1 <= k <= r:
        raise ValueError(f"need W_p ({d}, {d}) and 1 <= k <= {r}, got {tuple(W_p.shape)} and k={k}")
    if rotations < 2:
        raise ValueError(f"rotations must be >= 2 (the chance levels' spread needs two), got {rotations}")
    U = eigvecs.double()
    W_p = W_p.double().to(U.device)
    tiny = torch.finfo(torch.float64).tiny
    M = U.T @ W_p @ U  # (r, r): W_p in F's eigenbasis
    WU = W_p @ U       # (d, r): W_p u_i, column i
    cosines = M.diagonal()[:k] / WU[:, :k].norm(dim=0).clamp_min(tiny)
    fraction = (M.diagonal().square().sum() / M.square().sum().clamp_min(tiny)).item()
    generator = torch.Generator().manual_seed(seed)
    fractions, abs_cos = [], []
    for _ in range(rotations):  # random bases U R of span(U)
        R = haar(r, generator, U.device)                                    # (r, r)
        diagonal = (R * (M @ R)).sum(0)                                     # (r,) r_i^T M r_i
        fractions.append((diagonal.square().sum() / M.square().sum().clamp_min(tiny)).item())
        abs_cos.append((diagonal / (WU @ R).norm(dim=0).clamp_min(tiny)).abs())  # (r,) |cos(W_p U r_i, U r_i)|
    abs_cos = torch.stack(abs_cos)                                          # (rotations, r)
    groups = abs_cos[:, : r // k * k].reshape(-1, k).mean(1)                # null draws of a mean over k columns
    chance, cos_chance = diagonal_share_chance(M), abs_cos.mean().item()
    mean_abs_cos = cosines.abs().mean().item()
    return Alignment(
        cosines=cosines.tolist(), diagonal=M.diagonal()[:k].tolist(), diagonal_fraction=fraction, chance=chance,
        chance_spread=torch.tensor(fractions).std().item(), excess=excess(fraction, chance),
        mean_abs_cos=mean_abs_cos, cos_chance=cos_chance,
        cos_chance_se=(abs_cos.mean(1).std() / math.sqrt(rotations)).item(),
        cos_chance_spread=groups.std().item(), cos_excess=excess(mean_abs_cos, cos_chance), rotations=rotations)


# --------------------------------------------------------------------------- the measurement

@torch.no_grad()
def encode(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Projections z = f(x) (N, d) float32 of normalised images (N, 3, H, W) by `model.encoder`, in eval mode.

    Batches move to the encoder's device; each submodule's mode is restored afterwards.
    """
    device = next(model.encoder.parameters()).device
    modes = [(module, module.training) for module in model.encoder.modules()]
    model.encoder.eval()
    try:
        z = [model.encoder(images[i : i + batch_size].to(device)).float() for i in range(0, len(images), batch_size)]
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(z)  # (N, d)


PREDICTOR_MAP = ("the Jacobian dp/dz of the predictor at the batch mean of z, in eval mode (batch norm with its "
                 "running statistics): W2 diag(relu') diag(gamma / sigma) W1, the local linear map")


def measure(model: nn.Module, images_or_z: torch.Tensor, *, epoch: int = 0, k: int = 16, n_eigenvalues: int = 32,
            batch_size: int = 256) -> SpectrumResult:
    """F's spectrum and the predictor's alignment with it for a SimSiam model (`encoder`, `predictor`), after `epoch`.

    images_or_z: normalised images (N, 3, H, W), encoded by `encode`, or projections z (N, d).
    Keep N fixed across runs, and N >= d (F has rank <= N): F is estimated from that batch. F is
    accumulated in float64; its eigendecomposition runs in float64 on a CPU (some 20 s on one thread at
    d = 2048: prefer the smoke preset's d = 256 there) and in float32 on a GPU (consumer GPUs run float64
    at 1/32 of the float32 rate or less; eigenvalues below about 1e-6 of the largest are then round-off).
    The fields (summaries.SpectrumResult): the top n_eigenvalues of F divided by the largest, the largest,
    tr F, the effective rank of the whole spectrum (1 = collapsed to a line, d = isotropic), and `alignment`
    of the predictor's Jacobian at the mean z with F's top k eigenvectors, within the span of its top
    min(N, d) (None for a model without a predictor, `nn.Identity`).
    """
    start = time.perf_counter()
    z = images_or_z if images_or_z.dim() == 2 else encode(model, images_or_z, batch_size)  # (N, d)
    F = feature_correlation(z)  # (d, d) float64
    eigenvalues, U = spectrum(F if F.device.type == "cpu" else F.float())
    r = min(z.shape)  # rank(F) <= N
    k, n_eigenvalues = min(k, r), min(n_eigenvalues, z.shape[1])
    aligned = None
    if not isinstance(model.predictor, nn.Identity):
        aligned = alignment(predictor_linear_map(model.predictor, z), U[:, :r], k)
    return SpectrumResult(
        epoch=epoch, eigenvalues=(eigenvalues[:n_eigenvalues] / eigenvalues[0]).tolist(),
        largest=eigenvalues[0].item(), trace=F.trace().item(), effective_rank=effective_rank(eigenvalues),
        alignment=aligned, predictor_map=PREDICTOR_MAP, d=z.shape[1], n=len(z), seconds=time.perf_counter() - start)


def for_run(run_, model: nn.Module, images: torch.Tensor, *, epoch: int, every: int, epochs: int) -> None:
    """Question 4 in a SimSiam run, after `epoch`: every `every` epochs and at the last, `measure` on the
    fixed batch of normalised images (N, 3, H, W), saved as artifacts/spectrum/epoch_NNN.json (a
    summaries.SpectrumResult; summaries.spectra reads them back)."""
    if epoch % every and epoch != epochs:
        return
    result = measure(model, images, epoch=epoch)
    files.atomic_write_json(result.to_dict(), run_.artifacts / SPECTRUM_FOLDER / f"epoch_{epoch:03d}.json")
