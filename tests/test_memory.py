"""Memory planning (experiments.harness.memory) and SimSiam's micro-batched training step.

The budget test measures, on CPU, the activations autograd saves for one training step of every
full preset and ablation, in fp16 (a half precision experiments.harness.execution may pick on a T4), and checks that the
batch the planner picks for a 16 GB T4 fits 13 GiB."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import vae_solution
from experiments.harness import memory
from experiments.harness.execution import Execution, eager
from experiments.problems import ddpm, simsiam, vae
from experiments.problems.diffusion import Diffusion

T4_BUDGET = 13 * memory.GiB


def t4_precision(monkeypatch) -> Execution:
    """fp16, a T4's (sm_75) half precision, applied on the CPU, where the measurement runs."""
    return eager("cpu", "fp16")


# --------------------------------------------------------------------------- the pieces

def test_saved_bytes_and_per_sample_bytes_of_known_graphs():
    x = torch.randn(8, 10, requires_grad=True)
    assert memory.saved_bytes(lambda: (x ** 2).sum()) == 8 * 10 * 4  # pow saves its input, (8, 10) float32
    layer = torch.nn.Linear(100, 10, bias=False)
    # dL/dW = dy^T x needs x: 100 float32 values per sample; W's own storage is a fixed cost and cancels.
    assert memory.per_sample_bytes(lambda b: layer(torch.randn(b, 100)).sum()) == 100 * 4


def test_plan_micro_batch_takes_the_largest_fitting_divisor():
    assert memory.plan_micro_batch(1024, per_sample=1.0, budget=2000) == 1024
    assert memory.plan_micro_batch(1024, per_sample=1.0, budget=1000) == 512
    assert memory.plan_micro_batch(96, per_sample=1.0, budget=50) == 48
    assert memory.plan_micro_batch(4096, per_sample=3.0, budget=4096) == 1024
    with pytest.raises(ValueError, match="--micro-batch"):
        memory.plan_micro_batch(64, per_sample=10.0, budget=15)


def test_device_budget_is_none_off_cuda():
    assert memory.device_budget(torch.device("cpu")) is None


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = replace(simsiam.config_for("smoke", backbone="tiny"), dim=32, pred_dim=8)
    return simsiam.build_model(cfg), cfg


def step(model, x1, x2, micro_batch):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is the gradient: w' = w - g
    loss = simsiam.train_step(model, optimizer, x1, x2, eager(), micro_batch)
    return loss, {k: v.detach().clone() for k, v in model.named_parameters()}


def test_micro_batch_equal_to_the_batch_is_the_plain_step_exactly():
    model, _ = tiny_model()
    x1, x2 = torch.randn(2, 16, 3, 32, 32)
    twin = copy.deepcopy(model)
    loss_a, after_a = step(model, x1, x2, None)
    loss_b, after_b = step(twin, x1, x2, 16)
    assert torch.equal(loss_a, loss_b) and all(torch.equal(after_a[k], after_b[k]) for k in after_a)


def test_with_batch_norm_frozen_micro_batches_give_the_same_gradient():
    """In eval mode batch norm uses its running statistics: samples no longer interact, so the mean
    loss's gradient is the weighted sum of the micro-batches' gradients."""
    model, _ = tiny_model()
    model.eval()
    x1, x2 = torch.randn(2, 16, 3, 32, 32)
    twin = copy.deepcopy(model)
    loss_a, after_a = step(model, x1, x2, None)
    loss_b, after_b = step(twin, x1, x2, 4)
    torch.testing.assert_close(loss_a, loss_b)
    for k in after_a:
        torch.testing.assert_close(after_a[k], after_b[k], rtol=1e-5, atol=1e-6)


def test_in_training_mode_batch_norm_normalises_over_each_micro_batch():
    """The documented difference: with batch norm in training mode the micro-batched step differs."""
    model, _ = tiny_model()
    x1, x2 = torch.randn(2, 16, 3, 32, 32)
    twin = copy.deepcopy(model)
    _, after_a = step(model, x1, x2, None)
    _, after_b = step(twin, x1, x2, 4)
    assert any(not torch.allclose(after_a[k], after_b[k]) for k in after_a)


def test_the_simsiam_planner_uses_the_override_the_cpu_or_the_budget(monkeypatch):
    model, cfg = tiny_model()
    cfg = replace(cfg, batch_size=64)
    prec = eager()
    assert simsiam.plan_micro_batch(model, cfg, prec) == 64                          # CPU: no limit
    assert simsiam.plan_micro_batch(model, replace(cfg, micro_batch=16), prec) == 16  # --micro-batch
    per_image = simsiam.step_bytes_per_image(model, prec)
    assert per_image > 0
    monkeypatch.setattr(memory, "device_budget", lambda device: 10 * per_image)
    assert simsiam.plan_micro_batch(model, cfg, prec) == 8  # largest divisor of 64 with <= 10 images
    with pytest.raises(ValueError, match="micro_batch"):
        replace(cfg, micro_batch=24)  # does not divide the batch


def test_measuring_does_not_touch_the_model():
    model, _ = tiny_model()
    before = copy.deepcopy(model.state_dict())
    simsiam.step_bytes_per_image(model, eager())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- every full preset on a T4

def simsiam_per_image(cfg, prec) -> float:
    torch.manual_seed(0)
    return simsiam.step_bytes_per_image(simsiam.build_model(cfg), prec)


def ddpm_per_image(cfg, prec) -> float:
    torch.manual_seed(0)
    model = ddpm.build_model(cfg).train()
    diffusion = Diffusion(cfg.timesteps)
    return memory.per_sample_bytes(lambda b: diffusion.loss(model, torch.randn(b, 3, 32, 32), prec))


def vae_per_image(cfg, prec) -> float:
    torch.manual_seed(0)
    model = vae.build_model(cfg).train()

    def loss(b):
        with prec.autocast():
            _, nll, kl = model(torch.randn(b, 3, 32, 32))
        return (nll.float() + kl.float()).mean()
    return memory.per_sample_bytes(loss)


FULL_RUNS = ([("vae", None), ("ddpm", None)] + [("simsiam", a) for a in simsiam.ABLATIONS]
             + [("simsiam-cifar-stem", a) for a in ("baseline", "batch-4096")])


@pytest.mark.parametrize("problem, ablation", FULL_RUNS)
def test_every_full_preset_fits_a_t4(monkeypatch, problem, ablation):
    prec = t4_precision(monkeypatch)
    assert prec.name == "fp16"
    if problem == "vae":
        cfg = vae.config_for("full")
        per_image = vae_per_image(cfg, prec)
    elif problem == "ddpm":
        cfg = ddpm.config_for("full")
        per_image = ddpm_per_image(cfg, prec)
    else:
        backbone = "resnet18-cifar" if problem == "simsiam-cifar-stem" else "resnet18"
        cfg = simsiam.config_for("full", ablation=ablation, backbone=backbone)
        per_image = simsiam_per_image(cfg, prec)
    micro = memory.plan_micro_batch(cfg.batch_size, per_image, memory.BUDGET_FRACTION * memory.T4_FREE_BYTES)
    assert per_image * micro <= T4_BUDGET
    if problem in ("vae", "ddpm"):
        assert micro == cfg.batch_size  # they train without accumulation: the whole batch must fit
    if problem == "simsiam" and ablation != "batch-4096":
        assert micro == cfg.batch_size  # the starter's resnet18 at batch 1024 needs no accumulation on a T4


def test_the_vae_log_likelihood_chunk_fits_a_t4():
    """log_likelihood decodes `chunk` latents at once under no_grad (fp32); the activations autograd
    would save for that decode bound what is alive at once, so their size bounds the chunk's memory."""
    cfg = vae.config_for("full")
    torch.manual_seed(0)
    model = vae_solution.VAE(in_channels=3, input_size=32, z_dim=cfg.z_dim)
    per_decode = memory.per_sample_bytes(lambda b: model.decode(torch.randn(b, cfg.z_dim)).mode().sum())
    chunk = cfg.ll_chunk or 4096  # what experiments.problems.vae uses on a GPU
    assert per_decode * chunk <= T4_BUDGET
    # and the encoder pass of an evaluation batch, also kept by log_likelihood
    per_image = memory.per_sample_bytes(lambda b: F.relu(model.encoder(torch.randn(b, 3, 32, 32))).sum())
    assert per_image * cfg.eval_batch_size <= T4_BUDGET / 10
