"""experiments/problems/gan.py: the DCGAN's shapes, the signs of its losses, a discriminator step, the EMA generator
sampled."""
import math
from dataclasses import replace

import pytest
import torch

from experiments.problems import gan
from experiments.problems.diffusion import EMA
from tests.test_flow import assert_resume_is_exact


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_generator_and_discriminator_shapes(spectral_norm):
    torch.manual_seed(0)
    model = gan.GAN(z_dim=16, width=8, spectral_norm=spectral_norm)
    x = model.G(torch.randn(5, 16))
    assert x.shape == (5, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1                      # tanh: the images' [-1, 1]
    assert model.D(x).shape == (5,)
    has_batch_norm = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.D.modules())
    assert has_batch_norm != spectral_norm                      # spectral norm replaces D's batch norm


def test_loss_signs_and_values():
    zero = torch.zeros(4)
    assert gan.loss_d(zero, zero).item() == pytest.approx(2 * math.log(2))     # D(x) = 1/2 everywhere
    assert gan.train_jsd(2 * math.log(2)) == pytest.approx(0.0)
    assert gan.loss_g(zero).item() == pytest.approx(math.log(2))
    up, down = torch.full((4,), 3.0), torch.full((4,), -3.0)
    assert gan.loss_d(up, down) < gan.loss_d(zero, zero) < gan.loss_d(down, up)  # D right: lower; wrong: higher
    assert gan.loss_g(up) < gan.loss_g(zero) < gan.loss_g(down)                 # G gains as D is fooled
    for h_real, h_fake in ((up, down), (down, up), (zero, up)):
        assert gan.loss_d(h_real, h_fake) > 0 and gan.loss_g(h_fake) > 0
    # The non-saturating loss keeps a gradient when D rejects the fakes (h very negative).
    h = torch.full((4,), -10.0, requires_grad=True)
    gan.loss_g(h).backward()
    assert h.grad.abs().min() > 0.2


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_one_discriminator_step_lowers_its_loss_on_a_separable_batch(spectral_norm):
    torch.manual_seed(0)
    D = gan.GAN(z_dim=8, width=8, spectral_norm=spectral_norm).D.train()
    noise = torch.rand(2, 16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.4
    real, fake = 0.4 + noise[0], -0.8 + noise[1]            # bright against dark: a linear pixel test separates them
    before = gan.loss_d(D(real), D(fake))
    optimiser = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))   # the full preset's step
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    assert gan.loss_d(D(real), D(fake)).item() < before.item()


def test_the_ema_generator_is_the_one_sampled():
    torch.manual_seed(0)
    model = gan.GAN(z_dim=8, width=8)
    ema = EMA(model.G, 0.99)
    optimiser = torch.optim.Adam(model.G.parameters(), lr=1e-2)
    for _ in range(3):                                          # G moves away from its average
        loss = gan.generator_step_loss(model, 8)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        ema.update()
    images = gan.sample(ema, 6, torch.Generator().manual_seed(1), torch.device("cpu"), batch=4)
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        from_ema = gan.data.to_uint8(ema.model.eval()(z))
        from_live = gan.data.to_uint8(model.G.eval()(z))
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 32, 32)
    assert torch.equal(images, from_ema)
    assert not torch.equal(images, from_live)


def test_resumed_optimisers_take_the_new_learning_rate():
    model = gan.GAN(z_dim=8, width=8)
    optimisers = gan.Optimisers(model, 2e-4, 0.5)
    for group in optimisers.param_groups:                       # what loop.fit does on a resume with --lr
        group["lr"] = 1e-5
    assert optimisers.d.param_groups[0]["lr"] == optimisers.g.param_groups[0]["lr"] == 1e-5
    restored = gan.Optimisers(model, 2e-4, 0.5)
    restored.load_state_dict(optimisers.state_dict())
    assert restored.g.param_groups[0]["lr"] == 1e-5


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = replace(gan.config_for("smoke", data="synthetic", data_root=str(tmp_path / "data"), device="cpu"),
                  epochs=3, train_size=128, n_final_samples=16, classifier_epochs=1, discriminator_samples=16,
                  discriminator_epochs=1)
    summary = assert_resume_is_exact(gan, cfg, tmp_path, monkeypatch)
    assert summary["problem"] == "gan" and summary["final_loss_d"] > 0
    figures = {p.name for p in (tmp_path / "resumed" / "figures").glob("*.png")}
    assert {"loss.png", "samples_over_training.png", "samples.png"} <= figures
