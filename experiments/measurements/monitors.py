"""Monitors of a self-supervised encoder (Problem 3, SimSiam): features, kNN, collapse, linear probe.

- `extract_features`: a frozen backbone's features of a whole uint8 image set, in batches.
- `knn_predict` / `knn_accuracy`: the weighted kNN monitor of InstDisc (Wu et al., 2018,
  "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", Sec. 3.4),
  which SimSiam (Chen & He, 2021) reports during training: train features as the memory
  bank, test features as queries, k = 200 neighbours, temperature 0.1.
- `collapse_std`: the collapse indicator of SimSiam, Sec. 4.1 (Fig. 2, middle): the per-channel
  std of z / ||z||, about 1/sqrt(d) when the outputs spread over the sphere, 0 at collapse.
- `linear_probe`: logistic regression on frozen, standardised features.

Everything runs on the device the features live on, in chunks (memory bounded by the chunk
and batch sizes, not by the data set), and without autograd except in the probe's training.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from experiments.harness.data import iterate_batches
from experiments.harness.execution import Execution

# --------------------------------------------------------------------------- features

@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images_uint8: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    transform: Callable[[torch.Tensor], torch.Tensor],
    *,
    execution: Execution | None = None,
) -> torch.Tensor:
    """Features of a frozen backbone over a whole image set.

    images_uint8: (N, 3, H, W) uint8, on any device; moved to `device` one batch at a time.
    transform: maps a uint8 batch (B, 3, H, W) on `device` to the network's float input
    (e.g. `experiments.harness.data.to_float`, or a normalisation with dataset mean and std).
    execution: how the backbone runs (its precision's autocast and memory layout; experiments.harness.execution);
    None: fp32, the batch as `transform` makes it.

    The backbone runs in eval mode (batch norm with its running statistics); afterwards each
    submodule gets its previous mode back (a wrapper around a frozen or an eval-mode network
    leaves it as it was), so the monitor can be called in the middle of training.
    Returns (N, D) float32 on `device`, the backbone's output flattened after the batch dim.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4:
        raise TypeError(f"images_uint8 must be a uint8 (N, C, H, W) tensor, got {images_uint8.dtype} "
                        f"{tuple(images_uint8.shape)}")
    if len(images_uint8) == 0:
        raise ValueError("images_uint8 is empty: there is nothing to extract features from")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    modes = [(module, module.training) for module in backbone.modules()]  # each submodule's own mode
    backbone.eval()
    try:
        features = []
        for start in range(0, len(images_uint8), batch_size):
            x = transform(images_uint8[start : start + batch_size].to(device, non_blocking=True))
            with execution.autocast() if execution else nullcontext():
                h = backbone(execution.layout(x) if execution else x)
            features.append(h.flatten(1).float())  # (B, D)
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(features)


# --------------------------------------------------------------------------- weighted kNN

@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int = 10,
    chunk_size: int = 512,
) -> torch.Tensor:
    """Weighted kNN classification of each query against the memory bank (InstDisc, Sec. 3.4).

    train_features: (N, D) memory bank; train_labels: (N,) integers in [0, num_classes);
    test_features: (M, D) queries. Features are L2-normalised, so s_ij = cos(q_i, f_j); for
    each query the k most similar bank entries vote with weight exp(s_ij / temperature):

        score_i(c) = sum_{j in topk(i)} exp(s_ij / temperature) [y_j = c],   y_hat_i = argmax_c score_i(c)

    Queries are processed `chunk_size` at a time: memory O(chunk_size * N), on the bank's device.
    Returns (M,) int64 predictions on the bank's device.
    """
    _check_features("train_features", train_features)
    _check_features("test_features", test_features)
    _check_labels("train_labels", train_labels, len(train_features), num_classes)
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"train and test features must have the same dimension, got "
                         f"{train_features.shape[1]} and {test_features.shape[1]}")
    if not 1 <= k <= len(train_features):
        raise ValueError(f"k must lie in [1, {len(train_features)}] (the memory bank's size), got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    device = train_features.device
    bank = F.normalize(train_features.float(), dim=1)  # (N, D)
    bank_labels = train_labels.to(device)
    predictions = []
    for start in range(0, len(test_features), chunk_size):
        q = F.normalize(test_features[start : start + chunk_size].to(device).float(), dim=1)  # (B, D)
        s, j = (q @ bank.T).topk(k, dim=1)  # (B, k) similarities and bank indices of the neighbours
        w = torch.exp(s / temperature)  # (B, k)
        scores = torch.zeros(len(q), num_classes, device=device).scatter_add_(1, bank_labels[j], w)  # (B, C)
        predictions.append(scores.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64, device=device)


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, **knn) -> float:
    """Fraction in [0, 1] of queries whose `knn_predict` label (options `knn`: k, temperature, num_classes,
    chunk_size) equals `test_labels` (M,)."""
    _check_labels("test_labels", test_labels, len(test_features), knn.get("num_classes", 10))
    if len(test_labels) == 0:
        raise ValueError("test_features is empty: accuracy is undefined without queries")
    predictions = knn_predict(train_features, train_labels, test_features, **knn)
    return (predictions == test_labels.to(predictions.device)).float().mean().item()


def monitored_epochs(metrics: list[dict]) -> list[dict]:
    """The metrics.jsonl records of the epochs where the kNN and collapse monitors ran."""
    return [m for m in metrics if "knn_accuracy" in m]


def best_knn(metrics: list[dict]) -> dict:
    """The monitored epoch's record with the highest kNN accuracy (the earliest of ties)."""
    return max(monitored_epochs(metrics), key=lambda m: m["knn_accuracy"])


# --------------------------------------------------------------------------- collapse

@torch.no_grad()
def collapse_std(z: torch.Tensor) -> float:
    """SimSiam's collapse indicator (Sec. 4.1): mean over channels of std_i(z_i / ||z_i||).

    z: (N, d) outputs (e.g. the projector's z over a batch or a data set), N >= 2. The std is
    taken over samples for each of the d channels (unbiased), then averaged over channels.
    Invariant to a positive rescaling of each z_i. A collapsed encoder (every z_i the same
    direction) gives 0; outputs spread isotropically give about `collapse_std_reference(d)`.
    """
    _check_features("z", z)
    if len(z) < 2:
        raise ValueError(f"collapse_std needs at least 2 outputs to take a std over, got {len(z)}")
    z_unit = F.normalize(z.float(), dim=1)  # (N, d)
    return z_unit.std(dim=0).mean().item()


def collapse_std_reference(d: int) -> float:
    """1 / sqrt(d): the per-channel std of a unit vector uniform on the sphere in R^d.

    Each of its d coordinates has mean 0 and, as the squares sum to 1, variance 1/d.
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    return 1.0 / math.sqrt(d)


# --------------------------------------------------------------------------- linear probe

class ProbeAccuracy(NamedTuple):
    """Accuracies in [0, 1] of a linear probe."""

    test: float
    train: float


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    num_classes: int = 10,
) -> ProbeAccuracy:
    """Logistic regression on frozen features; returns its (test, train) accuracy.

    train_features: (N, D), train_labels: (N,), test_features: (M, D), test_labels: (M,).
    Features are standardised with the train set's statistics, x' = (x - mean) / std, then a
    linear map W x' + b (zero-initialised: the problem is convex) minimises

        L(W, b) = mean_i CE(W x'_i + b, y_i) + (weight_decay / 2) ||W||_F^2

    with Adam, `epochs` passes over shuffled mini-batches of `batch_size` (order drawn from
    `generator`, a CPU generator: a seeded one gives the same result each run). Runs on train_features' device.
    """
    _check_probe_inputs(train_features, train_labels, test_features, test_labels, num_classes)
    if epochs < 1 or batch_size < 1 or lr <= 0 or weight_decay < 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0, weight_decay >= 0; got epochs={epochs}, "
                         f"batch_size={batch_size}, lr={lr}, weight_decay={weight_decay}")
    device = train_features.device
    x_train = train_features.detach().float()
    mean, std = x_train.mean(dim=0), x_train.std(dim=0).clamp_min(1e-6)  # (D,), (D,)
    x_train = (x_train - mean) / std  # (N, D)
    x_test = (test_features.detach().to(device).float() - mean) / std  # (M, D)
    y_train, y_test = train_labels.to(device), test_labels.to(device)
    probe = nn.Linear(x_train.shape[1], num_classes).to(device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    adam = torch.optim.Adam(probe.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in iterate_batches(len(x_train), batch_size, shuffle=True, drop_last=False, generator=generator):
                idx = idx.to(device)
                adam.zero_grad(set_to_none=True)
                loss = F.cross_entropy(probe(x_train[idx]), y_train[idx])
                (loss + 0.5 * weight_decay * probe.weight.square().sum()).backward()
                adam.step()
    with torch.no_grad():
        train_accuracy = (probe(x_train).argmax(dim=1) == y_train).float().mean().item()
        test_accuracy = (probe(x_test).argmax(dim=1) == y_test).float().mean().item()
    return ProbeAccuracy(test=test_accuracy, train=train_accuracy)


# --------------------------------------------------------------------------- checks

def _check_features(name: str, features: torch.Tensor) -> None:
    if not features.is_floating_point() or features.dim() != 2:
        raise ValueError(f"{name} must be a floating-point (N, D) tensor, got {features.dtype} "
                         f"{tuple(features.shape)}")


def _check_probe_inputs(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                        test_labels: torch.Tensor, num_classes: int) -> None:
    _check_features("train_features", train_features)
    _check_features("test_features", test_features)
    _check_labels("train_labels", train_labels, len(train_features), num_classes)
    _check_labels("test_labels", test_labels, len(test_features), num_classes)
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"train and test features must have the same dimension, got "
                         f"{train_features.shape[1]} and {test_features.shape[1]}")
    if len(train_features) < 2 or len(test_features) < 1:
        raise ValueError("linear_probe needs at least 2 train and 1 test examples")


def _check_labels(name: str, labels: torch.Tensor, n: int, num_classes: int) -> None:
    if labels.dtype != torch.int64 or labels.shape != (n,):
        raise ValueError(f"{name} must be int64 of shape ({n},) (one label per feature row), got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if n and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise ValueError(f"{name} must lie in [0, num_classes={num_classes})")
