"""benchmarks/cost.py: what FlopCounterMode counts, on a layer with a known count and on the SimSiam backbones."""
import pytest
import torch

from benchmarks import cost
from experiments import simsiam


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_linear_layer_counts(device):
    B, n_in, n_out = 4, 10, 20
    layer = torch.nn.Linear(n_in, n_out, device=device)
    x = torch.randn(B, n_in, device=device)
    forward = 2 * B * n_in * n_out                      # one multiply-add = 2 FLOPs; the bias is not counted
    assert cost.count_flops(lambda: layer(x)) == forward
    # Backward of an input that needs no gradient: the weight gradient only, one more matmul.
    assert cost.count_flops(lambda: layer(x).sum().backward()) == 2 * forward
    x.requires_grad_(True)                              # and the input gradient: 3x the forward
    assert cost.count_flops(lambda: layer(x).sum().backward()) == 3 * forward


def test_meta_device_counts_what_the_cpu_counts():
    cfg = simsiam.config_for("smoke", backbone="resnet18")
    assert cost.flops_per_step("simsiam", cfg, batch=2, device="meta") == \
        cost.flops_per_step("simsiam", cfg, batch=2, device="cpu")


@pytest.mark.parametrize("backbone, gflop_per_view", [("resnet18", 0.22), ("resnet18-cifar", 3.34)])
def test_simsiam_step_per_view(backbone, gflop_per_view):
    """The full preset's step, forward + backward, per view (the issue's figures; measured 0.239 and 3.351)."""
    cfg = simsiam.config_for("full", backbone=backbone)
    per_view = cost.flops_per_step("simsiam", cfg, batch=2) / 4 / 1e9   # 2 images x 2 views
    assert per_view == pytest.approx(gflop_per_view, rel=0.1)
    assert cost.flops_per_step("simsiam", cfg, batch=4) == 2 * cost.flops_per_step("simsiam", cfg, batch=2)


def test_report_has_every_run_and_evaluation():
    text = cost.report(0.3)
    for name in ["vae-full", "ddpm-smoke", "simsiam-full-batch-4096 (resnet18-cifar)", "log-likelihood, K = 100",
                 "final samples: 100 images x 1000 steps"]:
        assert name in text
    assert "30% of each GPU" in text


def test_projected_line_names_the_gpu_or_says_why_not():
    from experiments import vae

    cfg = vae.config_for("full")
    t4 = cost.projected_line("vae", cfg, device_name="Tesla T4")
    assert "on this T4, an ESTIMATED" in t4 and "30 epochs" in t4
    assert "no estimate for CPU" in cost.projected_line("vae", cfg, device_name="CPU")
