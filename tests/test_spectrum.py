"""Question 4's spectrum measurements on linear networks whose answers are known, and a tiny SimSiam."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import q3_solution as q3
from experiments.measurements import spectrum as spec
from experiments.presentation.summaries import SpectrumResult, spectra


class TinyBackbone(nn.Module):
    """A torchvision-style constructor for SimSiam: conv, pool, and a classifier `fc` it turns into the projector."""

    def __init__(self, num_classes: int, zero_init_residual: bool = False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _linear_features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x ~ N(0, I) (n, d), a fixed A (d, d), z = x A^T, so E[z z^T] = A A^T."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, A, x @ A.T


def test_feature_correlation_is_the_uncentred_second_moment_of_a_linear_map():
    x, A, z = _linear_features(50, 4, 0)
    F = spec.feature_correlation(z + 3.0)  # uncentred: a shift changes F
    assert torch.allclose(spec.feature_correlation(z), A @ (x.T @ x / len(x)) @ A.T)  # exact for the batch
    assert torch.allclose(F, spec.feature_correlation(z) + 3.0 * (z.mean(0)[:, None] + z.mean(0)[None, :]) + 9.0)


def test_spectrum_matches_the_closed_form_within_sampling_error():
    _, A, z = _linear_features(40_000, 4, 1)
    eigenvalues, U = spec.spectrum(spec.feature_correlation(z))
    expected = torch.linalg.eigvalsh(A @ A.T).flip(0)  # descending
    assert (eigenvalues[:-1] >= eigenvalues[1:]).all()
    # sample eigenvalues of a Wishart matrix: relative error ~ sqrt(2 / n) = 0.007
    assert torch.allclose(eigenvalues, expected, rtol=0.05)
    assert torch.allclose(U @ torch.diag(eigenvalues) @ U.T, spec.feature_correlation(z))


def test_effective_rank_of_equal_eigenvalues_is_the_rank():
    g = torch.Generator().manual_seed(2)
    d, r = 12, 5
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    F = 3.0 * Q[:, :r] @ Q[:, :r].T  # rank r, r equal eigenvalues, round-off elsewhere
    assert spec.effective_rank(spec.spectrum(F)[0]) == pytest.approx(r, rel=1e-9)
    assert spec.effective_rank(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert 1 < spec.effective_rank(torch.tensor([4.0, 2.0, 1.0])) < 3


def test_a_polynomial_in_F_is_fully_aligned_and_a_random_map_is_not():
    _, _, z = _linear_features(500, 16, 3)
    F = spec.feature_correlation(z)
    _, U = spec.spectrum(F)
    for W_p in (F, F @ F + 2 * F + 0.5 * torch.eye(16, dtype=F.dtype)):
        out = spec.alignment(W_p, U, 5)
        assert out.cosines == pytest.approx([1.0] * 5, abs=1e-9)
        assert out.diagonal_fraction == pytest.approx(1.0, abs=1e-9)
    assert spec.alignment(-F, U, 3).cosines == pytest.approx([-1.0] * 3, abs=1e-9)
    random = spec.alignment(torch.randn(16, 16, generator=torch.Generator().manual_seed(4)), U, 5)
    assert random.diagonal_fraction < 0.3 and max(abs(c) for c in random.cosines) < 0.9
    assert abs(random.diagonal_fraction - random.chance) < 3 * random.chance_spread


def test_the_diagonal_share_chance_level_is_its_random_basis_expectation():
    """The closed form against a Monte Carlo over Haar rotations, for a non-symmetric map: E over R of the
    diagonal share of R^T M R; and its two ends, 1 for the identity and about 1/r for i.i.d. entries."""
    g = torch.Generator().manual_seed(0)
    r = 10
    M = torch.randn(r, r, generator=g, dtype=torch.float64) + 0.7 * torch.eye(r, dtype=torch.float64)
    shares = torch.stack([(lambda D: D.diagonal().square().sum() / D.square().sum())(R.T @ M @ R)
                          for R in (spec.haar(r, g) for _ in range(4000))])
    se = shares.std() / math.sqrt(len(shares))
    assert abs(spec.diagonal_share_chance(M) - shares.mean().item()) < 4 * se
    assert spec.diagonal_share_chance(torch.eye(r, dtype=torch.float64)) == pytest.approx(1.0)
    big = torch.randn(400, 400, generator=g, dtype=torch.float64)
    assert spec.diagonal_share_chance(big) == pytest.approx(1 / 400, rel=0.05)
    R = spec.haar(r, g)
    assert torch.allclose(R.T @ R, torch.eye(r, dtype=torch.float64))


def _unrelated_psd(d: int, seed: int, floor: float) -> torch.Tensor:
    """A positive semi-definite d x d map whose eigenvectors are drawn independently of anything else."""
    g = torch.Generator().manual_seed(seed)
    Q = spec.haar(d, g)
    return Q @ torch.diag(floor + torch.rand(d, generator=g, dtype=torch.float64)) @ Q.T


@pytest.mark.parametrize("floor", [0.0, 2.0])   # the second: a larger trace share, a diagonal share near 1
def test_an_unrelated_positive_semi_definite_predictor_reads_not_aligned(floor):
    from report.numbers import alignment_verdict
    _, _, z = _linear_features(400, 32, 8)
    _, U = spec.spectrum(spec.feature_correlation(z))
    out = spec.alignment(_unrelated_psd(32, 9, floor), U, 8, rotations=64)
    assert out.diagonal_fraction > 10 / 32                        # far above 1/r: 1/r would call it aligned
    assert abs(out.diagonal_fraction - out.chance) < 3 * out.chance_spread
    assert abs(out.mean_abs_cos - out.cos_chance) < 3 * out.cos_chance_spread + 3 * out.cos_chance_se
    assert abs(out.excess) < 0.1 and out.rotations == 64
    assert alignment_verdict(out) == "not aligned"


def test_a_predictor_sharing_the_eigenvectors_of_F_reads_aligned():
    from report.numbers import alignment_verdict
    _, _, z = _linear_features(400, 32, 10)
    eigenvalues, U = spec.spectrum(spec.feature_correlation(z))
    W_p = U @ torch.diag(eigenvalues.sqrt() / eigenvalues[0].sqrt() + 1.0) @ U.T   # PSD, near-identity, aligned
    out = spec.alignment(W_p, U, 8)
    assert out.diagonal_fraction == pytest.approx(1.0) and out.chance > 0.9      # 1/r = 0.03 would flatter it
    assert out.excess == pytest.approx(1.0) and out.cos_excess == pytest.approx(1.0)
    assert alignment_verdict(out) == "aligned"
    identity = spec.alignment(torch.eye(32, dtype=torch.float64), U, 8)           # shares every basis
    assert identity.chance == pytest.approx(1.0) and identity.excess is None
    assert alignment_verdict(identity) == "undefined"


def test_a_non_symmetric_predictor_is_told_from_its_transpose():
    """W_p = U T U^T, T upper triangular: u_1 is an eigenvector of W_p (cos 1) but not of W_p^T, and
    cos(W u, u) = u^T W u / ||W u|| has the same numerator for both, so only the right norm tells them apart."""
    g = torch.Generator().manual_seed(11)
    _, _, z = _linear_features(300, 6, 12)
    _, U = spec.spectrum(spec.feature_correlation(z))
    T = torch.triu(torch.rand(6, 6, generator=g, dtype=torch.float64)) + torch.eye(6, dtype=torch.float64)
    W_p = U @ T @ U.T
    out, transposed = spec.alignment(W_p, U, 6), spec.alignment(W_p.T, U, 6)
    expected = [(T[i, i] / T[:, i].norm()).item() for i in range(6)]           # cos(W_p u_i, u_i), by hand
    assert out.cosines == pytest.approx(expected, abs=1e-12)
    assert transposed.cosines == pytest.approx([(T[i, i] / T[i].norm()).item() for i in range(6)], abs=1e-12)
    assert out.cosines[0] == pytest.approx(1.0) and transposed.cosines[0] < 0.99
    assert out.diagonal == pytest.approx(transposed.diagonal)


def test_alignment_ignores_the_null_space_of_a_rank_deficient_F():
    # F from N = 5 < d = 12 samples has rank 5; W_p = F + A with A acting on F's null space only commutes with F,
    # but eigh's basis of that null space is arbitrary, so only the top 5 eigenvectors show the alignment
    _, _, z = _linear_features(5, 12, 6)
    eigenvalues, U = spec.spectrum(spec.feature_correlation(z))
    null = U[:, 5:]  # (12, 7)
    A = 30 * null @ torch.randn(7, 7, generator=torch.Generator().manual_seed(7), dtype=torch.float64) @ null.T
    W_p = spec.feature_correlation(z) + A
    assert spec.alignment(W_p, U[:, :5], 5).diagonal_fraction == pytest.approx(1.0, abs=1e-9)
    assert spec.alignment(W_p, U[:, :5], 5).excess == pytest.approx(1.0, abs=1e-9)
    assert spec.alignment(W_p, U, 5).diagonal_fraction < 0.5
    with pytest.raises(ValueError, match="k <= 5"):
        spec.alignment(W_p, U[:, :5], 6)


def test_alignment_diagonal_is_the_eigenvalue_along_each_eigenvector():
    _, _, z = _linear_features(300, 6, 5)
    eigenvalues, U = spec.spectrum(spec.feature_correlation(z))
    sqrt_F = U @ torch.diag(eigenvalues.sqrt()) @ U.T  # DirectPred's W_p = F^{1/2}
    out = spec.alignment(sqrt_F, U, 6)
    assert out.diagonal == pytest.approx(eigenvalues.sqrt().tolist())


def test_predictor_map_of_a_linear_predictor_is_the_product_of_its_weights():
    torch.manual_seed(0)
    d, m = 8, 3
    predictor = nn.Sequential(nn.Linear(d, m, bias=False), nn.Linear(m, d))
    z = torch.randn(10, d)
    W_p = spec.predictor_linear_map(predictor, z)
    assert torch.allclose(W_p, predictor[1].weight @ predictor[0].weight, atol=1e-6)
    assert torch.equal(spec.predictor_linear_map(nn.Identity(), z), torch.eye(d))


def test_predictor_map_of_the_simsiam_predictor_uses_running_statistics_and_restores_the_mode():
    torch.manual_seed(0)
    model = q3.SimSiam(TinyBackbone, dim=8, pred_dim=4)
    W1, bn, W2 = model.predictor[0].weight, model.predictor[1], model.predictor[3].weight
    with torch.no_grad():
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), bn.weight.uniform_(0.5, 1.5)
        bn.bias.copy_(torch.tensor([3.0, -3.0, 3.0, -3.0]))  # two units on, two off at z_bar
    z = torch.randn(20, 8)
    model.train()
    W_p = spec.predictor_linear_map(model.predictor, z)
    assert model.predictor.training and bn.training
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (4,)
    active = ((W1 @ z.mean(0) - bn.running_mean) * scale + bn.bias > 0).float()  # relu'(.) at z_bar
    assert 0 < active.sum() < 4
    assert torch.allclose(W_p, W2 @ torch.diag(active * scale) @ W1, atol=1e-6)


@pytest.mark.parametrize("mode", [None, "no_pred_mlp"])
def test_measure_on_a_tiny_simsiam(mode):
    torch.manual_seed(0)
    model = q3.SimSiam(TinyBackbone, dim=16, pred_dim=4, MLP_mode=mode).train()
    images = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = spec.measure(model, images, epoch=3, k=4, n_eigenvalues=8, batch_size=32)
    assert model.training and model.encoder.training
    assert out.epoch == 3 and out.d == 16 and out.n == 64 and out.seconds > 0
    assert out.eigenvalues[0] == 1.0 and len(out.eigenvalues) == 8
    assert all(a >= b for a, b in zip(out.eigenvalues, out.eigenvalues[1:]))
    assert 1 <= out.effective_rank <= 16
    z = spec.encode(model, images)
    assert out.trace == pytest.approx(z.double().square().sum(1).mean().item(), rel=1e-6)
    assert out.largest == pytest.approx(torch.linalg.eigvalsh(spec.feature_correlation(z))[-1].item(), rel=1e-6)
    if mode == "no_pred_mlp":  # no predictor: the spectrum only
        assert out.alignment is None
    else:
        assert len(out.alignment.cosines) == 4 and 0 <= out.alignment.diagonal_fraction <= 1
    assert math.isclose(spec.measure(model, z, k=4).effective_rank, out.effective_rank, rel_tol=1e-9)
    assert SpectrumResult.from_dict(json.loads(json.dumps(out.to_dict()))) == out


def test_for_run_measures_every_few_epochs_and_at_the_last(tmp_path):
    torch.manual_seed(0)
    model = q3.SimSiam(TinyBackbone, dim=16, pred_dim=4)
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    run_ = SimpleNamespace(dir=tmp_path, artifacts=tmp_path / "artifacts")
    for epoch in range(1, 6):
        spec.for_run(run_, model, images, epoch=epoch, every=2, epochs=5)
    measured = spectra(tmp_path)
    assert [r.epoch for r in measured] == [2, 4, 5] and all(r.n == 8 and r.alignment is not None for r in measured)
    assert spectra(tmp_path / "elsewhere") == []


def test_linear_simsiam_without_stop_gradient_collapses_as_4_4_predicts():
    """4.4 (no predictor, no stop-gradient): J = 1/2 E||W (x1 - x2)||^2, gradient descent gives W(t) = W(0) e^{-2 X' t}.
    Trained by autograd on views x_k = x + noise, the spectrum of F = E[f f^T] shrinks towards 0 and its
    effective rank falls, as the closed form says, direction by direction (the noisiest first)."""
    g = torch.Generator().manual_seed(0)
    d, n, lr, steps = 6, 4096, 0.05, 200
    scales = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0, 1.2], dtype=torch.float64)  # X' = diag(scales^2)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    W0 = torch.eye(d, dtype=torch.float64) + 0.1 * torch.randn(d, d, generator=g, dtype=torch.float64)
    W = W0.clone().requires_grad_(True)
    for _ in range(steps):
        noise = torch.randn(2, n, d, generator=g, dtype=torch.float64) * scales
        x1, x2 = x + noise[0], x + noise[1]
        loss = 0.5 * ((x1 - x2) @ W.T).square().sum(1).mean()  # both branches differentiated (no stop-gradient)
        W.grad = None
        loss.backward()
        with torch.no_grad():
            W -= lr * W.grad
    predicted = W0 @ torch.diag(torch.exp(-2 * scales ** 2 * lr * steps))  # W(0) e^{-2 X' t}, t = lr * steps
    assert torch.allclose(W.detach(), predicted, atol=0.03)
    before = spec.effective_rank(spec.spectrum(spec.feature_correlation(x @ W0.T))[0])
    after = spec.effective_rank(spec.spectrum(spec.feature_correlation(x @ W.detach().T))[0])
    assert after < before / 2 and W.detach().norm() < W0.norm() / 5
