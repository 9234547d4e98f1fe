"""experiments.measurements.monitors and experiments.measurements.classifier against plain oracles: a brute-force
weighted
kNN, the closed-form Fréchet distance of Gaussians and scipy's sqrtm, the sphere's 1/sqrt(d),
separable and random-label probes, and a digit classifier trained on the synthetic stand-in."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from experiments.harness.data import to_float
from experiments.harness.execution import eager
from experiments.harness.synthetic import synthetic_digits
from experiments.measurements import classifier, monitors


def clustered(centres: torch.Tensor, n: int, spread: float, generator: torch.Generator):
    """n points around the rows of centres (C, D), Gaussian with std `spread`, and their int64 labels (n,)."""
    labels = torch.randint(0, len(centres), (n,), generator=generator)
    return centres[labels] + spread * torch.randn(n, centres.shape[1], generator=generator), labels


# --------------------------------------------------------------------------- kNN

def brute_force_knn(bank, bank_labels, queries, k, temperature, num_classes):
    """InstDisc's weighted kNN, one query at a time, in float64: full sort, a dict of class weights."""
    bank = bank.double() / bank.double().norm(dim=1, keepdim=True)
    predictions = []
    for q in queries.double():
        q = q / q.norm()
        similarities = (bank @ q).tolist()
        order = sorted(range(len(similarities)), key=lambda j: similarities[j], reverse=True)
        votes = {c: 0.0 for c in range(num_classes)}
        for j in order[:k]:
            votes[int(bank_labels[j])] += math.exp(similarities[j] / temperature)
        predictions.append(max(votes, key=votes.get))
    return torch.tensor(predictions)


@pytest.mark.parametrize("k", [1, 5, 40, 300])
def test_knn_matches_brute_force_for_every_chunk_size(k):
    generator = torch.Generator().manual_seed(k)
    centres = torch.randn(10, 8, generator=generator)
    bank, bank_labels = clustered(centres, 300, spread=1.0, generator=generator)  # overlapping classes
    queries, _ = clustered(centres, 60, spread=1.0, generator=generator)
    expected = brute_force_knn(bank, bank_labels, queries, k, 0.1, 10)
    for chunk_size in (1, 7, 64, 1000):
        predictions = monitors.knn_predict(bank, bank_labels, queries, k=k, temperature=0.1, chunk_size=chunk_size)
        assert predictions.dtype == torch.int64 and predictions.shape == (60,)
        assert torch.equal(predictions, expected), (k, chunk_size)


def test_knn_temperature_changes_the_vote_as_the_brute_force_does():
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 4, generator=generator)
    bank, bank_labels = clustered(centres, 200, spread=1.5, generator=generator)
    queries, _ = clustered(centres, 80, spread=1.5, generator=generator)
    for temperature in (0.02, 1.0, 10.0):
        expected = brute_force_knn(bank, bank_labels, queries, 50, temperature, 3)
        predictions = monitors.knn_predict(bank, bank_labels, queries, 50, temperature, 3, chunk_size=16)
        assert torch.equal(predictions, expected), temperature


def test_knn_accuracy_is_perfect_on_separated_clusters_and_scale_free():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 16, generator=generator)
    bank, bank_labels = clustered(centres, 500, spread=0.05, generator=generator)
    queries, query_labels = clustered(centres, 200, spread=0.05, generator=generator)
    assert monitors.knn_accuracy(bank, bank_labels, queries, query_labels, k=200) == 1.0
    scales = torch.rand(200, 1, generator=generator) * 100 + 0.01  # L2 normalisation: scale is irrelevant
    assert monitors.knn_accuracy(bank, bank_labels, scales * queries, query_labels, k=200, chunk_size=33) == 1.0
    wrong = (query_labels + 1) % 10
    assert monitors.knn_accuracy(bank, bank_labels, queries, wrong, k=200) == 0.0


def test_knn_rejects_bad_input():
    bank, labels = torch.randn(20, 4), torch.randint(0, 10, (20,))
    with pytest.raises(ValueError, match="k must lie"):
        monitors.knn_predict(bank, labels, torch.randn(3, 4), k=21)
    with pytest.raises(ValueError, match="same dimension"):
        monitors.knn_predict(bank, labels, torch.randn(3, 5), k=5)
    with pytest.raises(ValueError, match="train_labels"):
        monitors.knn_predict(bank, labels[:10], torch.randn(3, 4), k=5)
    with pytest.raises(ValueError, match="num_classes"):
        monitors.knn_predict(bank, labels + 10, torch.randn(3, 4), k=5)
    with pytest.raises(ValueError, match="temperature"):
        monitors.knn_predict(bank, labels, torch.randn(3, 4), k=5, temperature=0.0)


# --------------------------------------------------------------------------- collapse

def test_collapse_std_of_isotropic_outputs_is_one_over_sqrt_d():
    generator = torch.Generator().manual_seed(0)
    for d in (16, 128):
        z = 3.0 * torch.randn(20000, d, generator=generator)
        assert monitors.collapse_std(z) == pytest.approx(monitors.collapse_std_reference(d), rel=0.02)
    assert monitors.collapse_std_reference(2048) == pytest.approx(1 / 2048**0.5)


def test_collapse_std_of_a_collapsed_output_is_zero():
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(1, 64, generator=generator)
    z = direction + 1e-5 * torch.randn(1000, 64, generator=generator)
    assert monitors.collapse_std(z) < 1e-4
    assert monitors.collapse_std(z) < 0.01 * monitors.collapse_std_reference(64)


def test_collapse_std_ignores_per_sample_scale():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(500, 32, generator=generator) + torch.linspace(-1, 1, 32)  # anisotropic
    scales = torch.rand(500, 1, generator=generator) * 50 + 0.1
    assert monitors.collapse_std(scales * z) == pytest.approx(monitors.collapse_std(z), rel=1e-5)
    z_unit = z / z.norm(dim=1, keepdim=True)  # the oracle: numpy's unbiased std of z / ||z||
    expected = np.std(z_unit.double().numpy(), axis=0, ddof=1).mean()
    assert monitors.collapse_std(z) == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- linear probe

def separable(n: int, generator: torch.Generator):
    """Features whose labels are argmax_c (W x)_c for a fixed W: linearly separable by construction."""
    W = torch.randn(10, 20, generator=torch.Generator().manual_seed(123))
    x = torch.randn(n, 20, generator=generator) * 2 + 5  # offset and scale: standardisation handles them
    return x, (x @ W.T).argmax(dim=1)


def test_linear_probe_fits_separable_features():
    generator = torch.Generator().manual_seed(0)
    x_train, y_train = separable(2000, generator)
    x_test, y_test = separable(500, generator)
    result = monitors.linear_probe(x_train, y_train, x_test, y_test, epochs=10, lr=1e-2, batch_size=256,
                                   generator=torch.Generator().manual_seed(1))
    assert result.train > 0.95 and result.test > 0.9, result


def test_linear_probe_is_at_chance_on_random_labels_and_deterministic():
    generator = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(500, 20, generator=generator), torch.randn(2000, 20, generator=generator)
    y_train = torch.randint(0, 10, (500,), generator=generator)
    y_test = torch.randint(0, 10, (2000,), generator=generator)
    runs = [monitors.linear_probe(x_train, y_train, x_test, y_test, epochs=10, lr=1e-2, batch_size=50,
                                  generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert runs[0] == runs[1]  # same seed, same result
    test_accuracy, train_accuracy = runs[0]
    assert 0.05 < test_accuracy < 0.15  # chance is 0.1; 3 std of a 2000-sample mean is 0.02
    assert train_accuracy > test_accuracy + 0.05  # it fits noise in the train set, which does not transfer


def test_linear_probe_and_extract_features_reject_bad_input():
    x, y = torch.randn(20, 4), torch.randint(0, 10, (20,))
    with pytest.raises(ValueError, match="epochs >= 1"):
        monitors.linear_probe(x, y, x, y, epochs=0)
    with pytest.raises(ValueError, match="test_labels"):
        monitors.linear_probe(x, y, x, y[:5])
    with pytest.raises(TypeError, match="uint8"):
        monitors.extract_features(TinyBackbone(), torch.rand(4, 3, 32, 32), 2, "cpu", to_float)


# --------------------------------------------------------------------------- Fréchet distance

def test_frechet_distance_of_a_set_with_itself_is_zero_and_it_is_symmetric():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=generator) @ torch.randn(6, 6, generator=generator)
    b = torch.randn(300, 6, generator=generator) * 2 + 1
    assert classifier.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert classifier.frechet_distance(a, b) == pytest.approx(classifier.frechet_distance(b, a), rel=1e-9)
    assert classifier.frechet_distance(a, b) > 1.0


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    # For diagonal covariances the matrices commute: d^2 = ||mu_a - mu_b||^2 + sum_i (sigma_a,i - sigma_b,i)^2.
    generator = torch.Generator().manual_seed(0)
    mu_a, mu_b = torch.tensor([0.0, 1.0, -1.0, 2.0]), torch.tensor([0.5, 1.0, 1.0, 2.0])
    sigma_a, sigma_b = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([1.0, 0.5, 0.5, 3.0])
    a = mu_a + sigma_a * torch.randn(100000, 4, generator=generator, dtype=torch.float64)
    b = mu_b + sigma_b * torch.randn(100000, 4, generator=generator, dtype=torch.float64)
    expected = ((mu_a - mu_b) ** 2).sum() + ((sigma_a - sigma_b) ** 2).sum()  # 4.25 + 6.25
    assert classifier.frechet_distance(a, b) == pytest.approx(expected.item(), rel=0.01)


def test_frechet_distance_matches_scipy_sqrtm_for_full_covariances():
    generator = torch.Generator().manual_seed(0)
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    a = randn(500, 5) @ randn(5, 5)
    b = randn(700, 5) @ randn(5, 5) + 0.3
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    S_a, S_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(S_a + S_b - 2 * scipy.linalg.sqrtm(S_a @ S_b).real)
    assert classifier.frechet_distance(a.float(), b.float()) == pytest.approx(expected, rel=1e-4)
    assert classifier.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="dimensions differ"):
        classifier.frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="N >= 2"):
        classifier.frechet_distance(torch.randn(1, 3), torch.randn(10, 3))


# --------------------------------------------------------------------------- features and the classifier

class TinyBackbone(nn.Module):
    """conv + batch norm + pooling to a (B, 5) vector."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return self.net(x)  # (B, 5, 1, 1): extract_features flattens it


def test_extract_features_shape_eval_mode_and_batching():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    backbone.net[1].running_mean.uniform_(-0.5, 0.5)  # eval and train mode now differ
    images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8)
    features = monitors.extract_features(backbone, images, 8, "cpu", to_float)  # ragged last batch
    assert features.shape == (37, 5) and features.dtype == torch.float32
    assert backbone.training  # its mode is restored
    with torch.no_grad():
        expected = backbone.eval()(to_float(images)).flatten(1)
    torch.testing.assert_close(features, expected)
    backbone.train()
    wrapper = nn.Sequential(backbone.eval())  # a train-mode wrapper around an eval-mode network
    monitors.extract_features(wrapper, images, 16, "cpu", to_float)
    assert wrapper.training and not backbone.training and not backbone.net[1].training
    backbone.train()
    bf16 = monitors.extract_features(backbone, images, 16, "cpu", to_float, execution=eager("cpu", "bf16"))
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, expected, atol=0.05, rtol=0.05)


def test_random_shift_is_a_translation_of_the_padded_image():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 32, 32, generator=generator)
    assert torch.equal(classifier.random_shift(x, 0, generator), x)
    shifted = classifier.random_shift(x, 2, generator)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    offsets = []
    for i in range(16):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(shifted[i], padded[i, :, dy:dy + 32, dx:dx + 32])]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 1  # each image has its own shift


def test_train_classifier_is_seeded_and_leaves_the_global_rng_alone():
    images, labels = synthetic_digits(64, seed=3)
    state = torch.get_rng_state()
    models = [classifier.train_classifier(images, labels, epochs=1, batch_size=32, seed=5) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    for p, q in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(p, q)
    assert not models[0].training


@pytest.fixture(scope="module")
def digits_and_classifier():
    """3000 synthetic training digits, 4 epochs (about 3 CPU seconds), 1000 held-out digits.

    On one thread: these convolutions are too small to gain from two, and on a busy machine two
    threads that wait on each other made this fixture 8x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_images, train_labels = synthetic_digits(3000, seed=11)
        test_images, test_labels = synthetic_digits(1000, seed=12)
        model = classifier.train_classifier(train_images, train_labels, epochs=4, batch_size=64, lr=3e-3, seed=0)
    finally:
        torch.set_num_threads(threads)
    return model, test_images, test_labels


def test_classifier_reads_held_out_synthetic_digits(digits_and_classifier):
    model, images, labels = digits_and_classifier
    assert sum(p.numel() for p in model.parameters()) < 150_000
    predictions = classifier.predict(model, images, batch_size=300)
    assert predictions.shape == (1000,) and predictions.dtype == torch.int64
    accuracy = classifier.accuracy(model, images, labels, batch_size=300)
    assert accuracy == pytest.approx((predictions == labels).float().mean().item())
    assert accuracy >= 0.9
    assert model.features(to_float(images[:4])).shape == (4, 64)


def test_classifier_fid_is_small_within_a_distribution_and_large_across(digits_and_classifier):
    model, images, _ = digits_and_classifier
    same = classifier.classifier_fid(model, images[:500], images[500:])
    generator = torch.Generator().manual_seed(0)
    scrambled = images.flatten(1)[:, torch.randperm(3 * 32 * 32, generator=generator)].view_as(images)
    different = classifier.classifier_fid(model, images[:500], scrambled[500:])
    assert 0 <= same < 0.1 * different
    assert not model.training
