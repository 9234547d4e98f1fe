"""experiments.harness.synthetic: the offline stand-in's images and labels (its cache: test_data.py)."""

import pytest
import torch

from experiments.harness.data import to_float
from experiments.harness.synthetic import synthetic_digits


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_digits(1000, seed=0)


def test_synthetic_shapes_and_balance(digits):
    images, labels = digits
    assert images.shape == (1000, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (1000,) and labels.dtype == torch.int64
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 100))
    assert images.min() < 40 and images.max() > 215  # uses the range
    assert images.float().std(dim=(1, 2, 3)).min() > 5  # no blank image


def test_synthetic_is_deterministic(digits):
    images, labels = synthetic_digits(1000, seed=0)
    assert torch.equal(images, digits[0]) and torch.equal(labels, digits[1])
    assert not torch.equal(synthetic_digits(1000, seed=1)[0], digits[0])


def test_synthetic_labels_are_learnable():
    """Nearest class mean on grey pixels, standardised per image with the digit made bright:
    about 0.7 measured (chance 0.1)."""
    train_images, train_labels = synthetic_digits(2000, seed=1)
    test_images, test_labels = synthetic_digits(500, seed=2)

    def features(images: torch.Tensor) -> torch.Tensor:
        grey = torch.einsum("nchw,c->nhw", to_float(images), torch.tensor([0.299, 0.587, 0.114]))
        grey = (grey - grey.mean((1, 2), keepdim=True)) / grey.std((1, 2), keepdim=True)
        polarity = grey[:, 8:24, 8:24].mean((1, 2)).sign()  # the centre holds the digit
        return (grey * polarity[:, None, None]).flatten(1)

    x_train, x_test = features(train_images), features(test_images)
    means = torch.stack([x_train[train_labels == k].mean(0) for k in range(10)])
    accuracy = (torch.cdist(x_test, means).argmin(1) == test_labels).float().mean()
    assert accuracy > 0.4


def test_negative_size_is_rejected():
    with pytest.raises(ValueError, match="n must be >= 0"):
        synthetic_digits(-1, seed=0)
