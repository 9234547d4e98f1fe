"""experiments/problems/flow.py: the RealNVP is invertible, its log-determinant is the Jacobian's, its bits/dim the
formula's."""
import math
from dataclasses import replace

import pytest
import torch

from experiments.harness.files import load_artifact, read_metrics
from experiments.presentation import summaries
from experiments.problems import flow


def randomised(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """The model with every parameter redrawn (the zero-initialised output convolutions make it the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def test_squeeze_round_trip_and_layout():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    s = flow.squeeze(x)
    assert s.shape == (2, 12, 2, 2)
    assert torch.equal(s[0, :4, 0, 0], torch.tensor([x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]))
    assert torch.equal(flow.unsqueeze(s), x)


def test_round_trip_x_to_z_to_x():
    model = randomised(flow.RealNVP(scales=3, width=8, blocks=1)).double()
    y = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    z, _ = model(y)
    assert z.shape == (4, 3 * 32 * 32)
    assert (model.inverse(z) - y).abs().max().item() < 1e-5


def test_multi_scale_shapes():
    model = flow.RealNVP(scales=3, width=4, blocks=0)
    assert model.latent_shapes((3, 32, 32)) == [(6, 16, 16), (12, 8, 8), (12, 8, 8)]
    assert sum(c * h * w for c, h, w in model.latent_shapes((3, 32, 32))) == 3 * 32 * 32
    h, logdet, z = model.scales[0](torch.randn(2, 3, 32, 32))
    assert h.shape == z.shape == (2, 6, 16, 16) and logdet.shape == (2,)
    h, _, z = model.scales[2](torch.randn(2, 12, 8, 8))
    assert h.shape == (2, 12, 8, 8) and z is None


def test_log_det_equals_autograd_jacobian():
    """On a tiny input (3 x 4 x 4 = 48 dimensions) with random weights: log|det dz/dy| of the layers equals
    log|det| of the full Jacobian autograd computes."""
    model = randomised(flow.RealNVP(scales=2, width=6, blocks=1), seed=1, std=0.3).double()
    y = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    _, logdet = model(y)
    jacobian = torch.autograd.functional.jacobian(lambda v: model(v.view(1, 3, 4, 4))[0][0], y.flatten())  # (48, 48)
    sign, logabsdet = torch.linalg.slogdet(jacobian)
    assert sign.item() != 0
    assert logdet.item() == pytest.approx(logabsdet.item(), abs=1e-8)
    assert abs(logdet.item()) > 0.1, "random weights give a non-trivial determinant"


def test_logit_transform_log_det_is_its_derivative():
    x = torch.rand(2, 3, 2, 2, dtype=torch.float64)
    y, logdet = flow.logit_transform(x)
    derivative = torch.autograd.functional.jacobian(lambda v: flow.logit_transform(v)[0].sum(), x)  # diagonal map
    assert torch.allclose(logdet, derivative.log().flatten(1).sum(1))


@pytest.mark.parametrize("value", [0, 100, 255])
def test_bits_per_dim_of_constant_images_is_the_formula(value):
    """The untrained flow is the identity after the logit, so for images of one value c dequantised with u,
    z = logit(a), a = alpha + (1 - 2 alpha)(c + u)/256 per pixel and the 8-bit log-density per dimension is
    log N(z) + log(1 - 2 alpha) - log a - log(1 - a) - log 256."""
    model = flow.RealNVP(scales=2, width=4, blocks=1)
    images = torch.full((2, 3, 8, 8), value, dtype=torch.uint8)
    u = torch.full(images.shape, 0.5)
    bpd = flow.bits_per_dim(flow.log_prob_8bit(model, images, u), images[0].numel())
    a = flow.ALPHA + (1 - 2 * flow.ALPHA) * (value + 0.5) / 256
    z = math.log(a / (1 - a))
    per_dim = -0.5 * z * z - 0.5 * math.log(2 * math.pi) + math.log(1 - 2 * flow.ALPHA) - math.log(a * (1 - a)) \
        - math.log(256)
    assert bpd.tolist() == pytest.approx([-per_dim / math.log(2)] * 2, rel=1e-5)


def test_samples_are_uint8_images_and_temperature_shrinks_their_spread():
    model = flow.RealNVP(scales=3, width=4, blocks=0)
    hot = flow.sample(model, 16, 1.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    cold = flow.sample(model, 16, 0.7, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert hot.dtype == torch.uint8 and hot.shape == (16, 3, 32, 32)
    assert cold.float().std() < hot.float().std()


def test_one_step_lowers_the_training_loss():
    torch.manual_seed(0)
    model = flow.RealNVP(scales=2, width=8, blocks=1)
    images = torch.randint(100, 140, (8, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    before = flow.training_loss(model, images, torch.Generator().manual_seed(1)).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        loss = flow.training_loss(model, images, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert flow.training_loss(model, images, torch.Generator().manual_seed(1)).item() < before


def test_bad_masks_and_sizes_are_refused():
    with pytest.raises(ValueError, match="mask"):
        flow.Coupling(3, "diagonal", 4, 1)
    with pytest.raises(ValueError, match="scales"):
        flow.RealNVP(scales=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        flow.RealNVP(scales=3, width=4, blocks=0)(torch.zeros(1, 3, 6, 6))


TIMING_KEYS = {"train_seconds", "epoch_seconds", "wall_seconds", "images_per_s"}


def quick(tmp_path, **overrides) -> flow.FlowConfig:
    """The smoke preset on 128 images with a small final evaluation: the loop and its checkpoints are tested."""
    return replace(flow.config_for("smoke", data="synthetic", data_root=str(tmp_path / "data"), device="cpu"),
                   train_size=128, n_final_samples=16, classifier_epochs=1, discriminator_samples=16,
                   discriminator_epochs=1, **overrides)


def interrupt_in_epoch_2(module, monkeypatch) -> None:
    """Make the 2nd training epoch's 2nd batch raise KeyboardInterrupt (Ctrl-C)."""
    real, calls = module.data.iterate_batches, {"n": 0}

    def interrupted(*args, **kwargs):
        for i, idx in enumerate(real(*args, **kwargs)):
            if kwargs.get("shuffle") and calls["n"] == 1 and i == 1:
                raise KeyboardInterrupt
            yield idx
        calls["n"] += bool(kwargs.get("shuffle"))
    monkeypatch.setattr(module.data, "iterate_batches", interrupted)


def assert_resume_is_exact(module, cfg, tmp_path, monkeypatch) -> dict:
    """A run interrupted in epoch 2 and resumed ends as an uninterrupted one: the same metrics, the same final
    samples and summary (timings aside). Returns the resumed run's summary."""
    straight = module.run(cfg, tmp_path / "straight")
    real = module.data.iterate_batches
    interrupt_in_epoch_2(module, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        module.run(cfg, tmp_path / "resumed")
    assert [m["epoch"] for m in read_metrics(tmp_path / "resumed")] == [1]
    monkeypatch.setattr(module.data, "iterate_batches", real)
    resumed = module.run(cfg, tmp_path / "resumed", resume=True)
    drop = lambda records: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]  # noqa: E731
    assert drop(read_metrics(resumed)) == drop(read_metrics(straight))
    assert torch.equal(load_artifact(resumed, "final_samples.pt"), load_artifact(straight, "final_samples.pt"))
    a, b = summaries.read(resumed).to_dict(), summaries.read(straight).to_dict()
    for key in ("fid", "precision", "recall"):
        assert a[key] == b[key], key
    return a


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    summary = assert_resume_is_exact(flow, quick(tmp_path, epochs=3), tmp_path, monkeypatch)
    assert summary["problem"] == "flow" and summary["bits_per_dim"] > 0
    figures = {p.name for p in (tmp_path / "resumed" / "figures").glob("*.png")}
    assert {"loss.png", "samples_over_training.png", "samples_T1.png", "samples_T0.7.png"} <= figures
