"""Contract tests for q3_solution.py and q3_misc.py (Problem 3, SimSiam): CPU, small inputs.

Oracles: the parameter spec in tests/spec/state_dicts.json, torch.nn.functional.cosine_similarity,
einsum, hand-computed losses, and the reference construction order of the starter's SimSiam.
"""
import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision import transforms

import q3_misc
import q3_solution as q3

ROOT = Path(__file__).resolve().parents[1]
SPEC_KEYS = {
    None: "q3_solution.SimSiam(torchvision.models.resnet18, dim=2048, pred_dim=512, MLP_mode=None)",
    "no_pred_mlp": "q3_solution.SimSiam(torchvision.models.resnet18, dim=2048, pred_dim=512, MLP_mode='no_pred_mlp')",
    "fixed_random_init":
        "q3_solution.SimSiam(torchvision.models.resnet18, dim=2048, pred_dim=512, MLP_mode='fixed_random_init')",
}
MODES = list(SPEC_KEYS)


class TinyBackbone(nn.Module):
    """A torchvision-style constructor (num_classes, zero_init_residual): two convs, width 16, then `fc`."""

    def __init__(self, num_classes: int = 10, zero_init_residual: bool = False):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def cifar_resnet18(num_classes: int = 10, zero_init_residual: bool = False) -> nn.Module:
    """resnet18 with the CIFAR stem (3x3 stride-1 conv1, no max-pool), same signature as torchvision's."""
    net = torchvision.models.resnet18(num_classes=num_classes, zero_init_residual=zero_init_residual)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def tiny(**kwargs) -> q3.SimSiam:
    return q3.SimSiam(TinyBackbone, **{"dim": 32, "pred_dim": 8, **kwargs})


@pytest.fixture
def views():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)


@pytest.fixture(scope="module", params=MODES, ids=str)
def resnet_simsiam(request):
    torch.manual_seed(0)
    return request.param, q3.SimSiam(torchvision.models.resnet18, dim=2048, pred_dim=512, MLP_mode=request.param)


def encoder_params(model: q3.SimSiam) -> list[torch.Tensor]:
    return [p for p in model.encoder.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- SimSiam: parameters and structure

def test_state_dict_matches_the_spec(resnet_simsiam, state_dict_spec):
    mode, model = resnet_simsiam
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert ours == state_dict_spec[SPEC_KEYS[mode]]
    assert list(ours) == list(state_dict_spec[SPEC_KEYS[mode]])  # same order too
    other = q3.SimSiam(torchvision.models.resnet18, MLP_mode=mode)
    other.load_state_dict(model.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))


def test_projector_and_predictor_layers():
    made = []

    def recording_resnet18(**kwargs):
        net = torchvision.models.resnet18(**kwargs)
        made.append((net, net.fc))
        return net

    model = q3.SimSiam(recording_resnet18, dim=64, pred_dim=16)
    assert model.stop_gradient is True and model.MLP_mode is None
    projector = model.encoder.fc
    assert [type(m) for m in projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    backbone, original_fc = made[0]
    assert model.encoder is backbone and projector[6] is original_fc and original_fc.out_features == 64
    assert (projector[0].in_features, projector[0].out_features, projector[0].bias) == (512, 512, None)
    assert (projector[3].in_features, projector[3].out_features, projector[3].bias) == (512, 512, None)
    assert projector[7].num_features == 64 and not projector[7].affine
    assert not projector[6].bias.requires_grad and projector[6].weight.requires_grad  # bias frozen, weight trained
    assert [type(m) for m in model.predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (model.predictor[0].in_features, model.predictor[0].out_features, model.predictor[0].bias) == (64, 16, None)
    assert model.predictor[3].in_features == 16 and model.predictor[3].out_features == 64
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["encoder.fc.6.bias"]


def test_the_backbone_classifier_becomes_the_projector_output():
    made = []

    def recording(**kwargs):
        made.append(kwargs)
        return TinyBackbone(**kwargs)

    model = q3.SimSiam(recording, dim=32, pred_dim=8)
    assert made == [{"num_classes": 32, "zero_init_residual": True}]
    fc = model.encoder.fc[6]
    assert isinstance(fc, nn.Linear) and (fc.in_features, fc.out_features) == (16, 32)
    assert model.encoder.fc[0].weight.shape == (16, 16)  # w is the backbone's own feature width


def test_zero_init_residual_is_passed_to_the_resnet():
    model = q3.SimSiam(torchvision.models.resnet18, dim=64, pred_dim=16)
    assert torch.count_nonzero(model.encoder.layer1[0].bn2.weight) == 0


def test_fixed_random_init_predictor_is_frozen_small_and_unbiased():
    torch.manual_seed(1)
    model = q3.SimSiam(torchvision.models.resnet18, dim=2048, pred_dim=512, MLP_mode="fixed_random_init")
    assert model.MLP_mode == "fixed_random_init"
    assert not any(p.requires_grad for p in model.predictor.parameters())
    for layer in (model.predictor[0], model.predictor[3]):
        assert abs(layer.weight.std().item() - 0.01) < 2e-4 and abs(layer.weight.mean().item()) < 1e-4
    assert torch.count_nonzero(model.predictor[3].bias) == 0
    assert all(p.requires_grad for name, p in model.encoder.named_parameters() if name != "fc.6.bias")


def test_no_pred_mlp_predictor_is_the_identity(views):
    model = tiny(MLP_mode="no_pred_mlp")
    assert isinstance(model.predictor, nn.Identity)
    p1, p2, z1, z2 = model(*views)
    assert torch.equal(p1, z1) and torch.equal(p2, z2)
    assert p1.requires_grad and not z1.requires_grad


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="MLP_mode"):
        tiny(MLP_mode="no_predictor")
    with pytest.raises(TypeError, match="fc"):
        q3.SimSiam(lambda num_classes, zero_init_residual: nn.Linear(3, num_classes))


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_randomness_is_drawn_in_the_reference_order(mode):
    """Seeded construction equals the starter's: backbone, projector layers, predictor, then its re-init."""
    torch.manual_seed(2)
    model = tiny(MLP_mode=mode)
    after_model = torch.rand(3)

    torch.manual_seed(2)
    backbone = TinyBackbone(num_classes=32, zero_init_residual=True)
    projector = [nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16)]
    hidden, output = nn.Linear(32, 8, bias=False), nn.Linear(8, 32)
    if mode == "fixed_random_init":
        hidden.weight.data.normal_(0.0, 0.01)
        output.weight.data.normal_(0.0, 0.01)
        output.bias.data.zero_()
    assert torch.equal(torch.rand(3), after_model)

    for ours, ref in zip(model.encoder.features.parameters(), backbone.features.parameters()):
        assert torch.equal(ours, ref)
    assert torch.equal(model.encoder.fc[0].weight, projector[0].weight)
    assert torch.equal(model.encoder.fc[3].weight, projector[2].weight)
    assert torch.equal(model.encoder.fc[6].weight, backbone.fc.weight)
    if mode != "no_pred_mlp":
        assert torch.equal(model.predictor[0].weight, hidden.weight)
        assert torch.equal(model.predictor[3].weight, output.weight)
        assert torch.equal(model.predictor[3].bias, output.bias)


# --------------------------------------------------------------------------- SimSiam: forward, stop-gradient, loss

def test_forward_shapes_with_torchvision_and_cifar_stem_resnets(views):
    for base in (torchvision.models.resnet18, cifar_resnet18):
        model = q3.SimSiam(base, dim=64, pred_dim=16)
        outputs = model(*(v[:, :, :16, :16] for v in views))  # 16x16 keeps the stride-1 stem cheap
        assert [o.shape for o in outputs] == [(4, 64)] * 4
        assert model.encoder.fc[0].in_features == 512


def test_forward_is_encoder_then_predictor_per_view(views):
    model = tiny().train()
    p1, p2, z1, z2 = model(*views)
    ref_z1, ref_z2 = model.encoder(views[0]), model.encoder(views[1])  # BN on batch statistics: same outputs
    torch.testing.assert_close(z1, ref_z1)
    torch.testing.assert_close(z2, ref_z2)
    torch.testing.assert_close(p1, model.predictor(ref_z1))
    torch.testing.assert_close(p2, model.predictor(ref_z2))


def _oracle_loss(model: q3.SimSiam, x1, x2, detach: bool) -> torch.Tensor:
    z1, z2 = model.encoder(x1), model.encoder(x2)
    p1, p2 = model.predictor(z1), model.predictor(z2)
    if detach:
        z1, z2 = z1.detach(), z2.detach()
    return -0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean())


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_encoder_gradient_matches_the_oracle(views, stop_gradient):
    torch.manual_seed(3)
    model = tiny(stop_gradient=stop_gradient).train()
    params = encoder_params(model)
    loss = model.loss(*model(*views))
    ours = torch.autograd.grad(loss, params)
    expected = torch.autograd.grad(_oracle_loss(model, *views, detach=stop_gradient), params)
    other = torch.autograd.grad(_oracle_loss(model, *views, detach=not stop_gradient), params)
    scale = max(e.abs().max().item() for e in expected)
    for g, e in zip(ours, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5 * scale)
    assert any(g.abs().sum() > 0 for g in ours)  # the loss does reach the encoder
    assert any(not torch.allclose(g, o, rtol=1e-2, atol=1e-2 * scale) for g, o in zip(ours, other))  # detach matters


def test_stop_gradient_cuts_the_targets_from_the_encoder(views):
    p1, p2, z1, z2 = tiny(stop_gradient=True).train()(*views)
    assert not z1.requires_grad and not z2.requires_grad and z1.grad_fn is None and z2.grad_fn is None
    assert p1.requires_grad and p2.requires_grad


def test_without_stop_gradient_the_targets_reach_the_encoder(views):
    model = tiny(stop_gradient=False).train()
    assert model.stop_gradient is False
    _, _, z1, z2 = model(*views)
    weights = torch.randn_like(z1)  # a plain sum of BN outputs would be constant
    grads = torch.autograd.grad((weights * (z1 + z2)).sum(), encoder_params(model))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_loss_by_hand():
    p1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z2 = torch.tensor([[0.0, 1.0], [2.0, 2.0]])   # cos(p1, z2) = [0, 1], mean 1/2
    p2 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z1 = torch.tensor([[6.0, 8.0], [-1.0, 0.0]])  # cos(p2, z1) = [1, -1], mean 0
    loss = tiny().loss(p1, p2, z1, z2)
    assert loss.shape == ()
    torch.testing.assert_close(loss, torch.tensor(-0.25))


def test_loss_range_and_extremes():
    model = tiny()
    torch.manual_seed(4)
    p1, p2, z1, z2 = torch.randn(4, 8, 16).unbind(0)
    assert -1 <= model.loss(p1, p2, z1, z2).item() <= 1
    torch.testing.assert_close(model.loss(p1, p2, p2, p1), torch.tensor(-1.0))
    torch.testing.assert_close(model.loss(p1, p2, -p2, -p1), torch.tensor(1.0))
    torch.testing.assert_close(model.loss(p1, p2, 3 * p2, 0.5 * p1), torch.tensor(-1.0))  # scale-invariant


def test_loss_rejects_bad_arguments():
    model = tiny()
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="similarity_function"):
        model.loss(x, x, x, x, similarity_function="L2")
    with pytest.raises(ValueError, match="shape"):
        model.loss(x, x, x, torch.randn(3, 7))


@pytest.mark.parametrize("mode", [None, "fixed_random_init"], ids=str)
def test_training_steps_leave_frozen_parameters_alone(views, mode):
    """SGD with weight decay, as in the starter: the fc bias, and a fixed predictor, never move."""
    torch.manual_seed(5)
    model = tiny(MLP_mode=mode).train()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    expected = {"encoder.fc.6.bias"} | ({f"predictor.{k}" for k in ("0.weight", "1.weight", "1.bias", "3.weight",
                                                                       "3.bias")} if mode else set())
    assert frozen.keys() == expected
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(10):
        loss = model.loss(*model(*views))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if mode is None:
        assert losses[-1] < losses[0] - 0.05, losses  # the two views' representations are pulled together
    parameters = dict(model.named_parameters())
    for name, before in frozen.items():
        assert torch.equal(parameters[name], before), name


def test_runs_on_another_device_without_cpu_assumptions(views):
    """On the meta device every tensor must follow the model/input: any CPU-created tensor would fail."""
    model = tiny().to("meta")
    outputs = model(*(v.to("meta") for v in views))
    assert all(o.device.type == "meta" for o in outputs)
    assert model.loss(*outputs).device.type == "meta"


# --------------------------------------------------------------------------- CosineSimilarity and bdot

def test_cosine_similarity_matches_torch():
    torch.manual_seed(6)
    a, b = torch.randn(6, 10), torch.randn(6, 10)
    torch.testing.assert_close(q3.CosineSimilarity()(a, b), F.cosine_similarity(a, b))
    torch.testing.assert_close(q3.CosineSimilarity()(a, 2 * a), torch.ones(6))
    x, y = torch.randn(4, 5, 6), torch.randn(4, 5, 6)
    for dim in (0, 1, 2, -1):
        out = q3.CosineSimilarity(dim=dim)(x, y)
        torch.testing.assert_close(out, F.cosine_similarity(x, y, dim=dim))
    u, v = torch.randn(4, 1, 6), torch.randn(5, 6)  # broadcast to (4, 5, 6)
    torch.testing.assert_close(q3.CosineSimilarity(dim=-1)(u, v), F.cosine_similarity(u, v, dim=-1))


def test_cosine_similarity_of_zero_vectors_is_zero_with_finite_gradient():
    a = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    b = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    out = q3.CosineSimilarity()(a, b)
    assert torch.equal(out, torch.zeros(3))
    out.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_cosine_similarity_guards_the_product_of_norms():
    """||x1|| = ||x2|| = 1e-5: the product 1e-10 is below eps = 1e-8, so the result is dot / 1e-8, not cos."""
    u, v = torch.tensor([[0.6, 0.8]], dtype=torch.float64), torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    out = q3.CosineSimilarity()(1e-5 * u, 1e-5 * v)
    torch.testing.assert_close(out, torch.tensor([1e-10 * 0.6 / 1e-8], dtype=torch.float64))
    assert q3.CosineSimilarity(eps=1e-12)(1e-5 * u, 1e-5 * v).item() == pytest.approx(0.6)


def test_bdot_matches_einsum():
    torch.manual_seed(7)
    a, b = torch.randn(5, 9), torch.randn(5, 9)
    out = q3.bdot(a, b)
    assert out.shape == (5,)
    torch.testing.assert_close(out, torch.einsum("bs,bs->b", a, b))
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        q3.bdot(a, b[:, :4])
    with pytest.raises(ValueError):
        q3.bdot(a[None], b[None])


# --------------------------------------------------------------------------- q3_misc: augmentation

def test_two_crops_transform_draws_two_independent_views():
    augment = transforms.Compose([transforms.RandomResizedCrop(16, scale=(0.08, 1.0)),
                                  transforms.RandomHorizontalFlip()])
    two = q3_misc.TwoCropsTransform(augment)
    image = torch.rand(3, 32, 32)
    torch.manual_seed(8)
    views = two(image)
    assert isinstance(views, list) and len(views) == 2
    assert views[0].shape == views[1].shape == (3, 16, 16)
    assert not torch.equal(views[0], views[1])
    torch.manual_seed(8)
    first, second = augment(image), augment(image)  # exactly two successive draws of the base transform
    assert torch.equal(views[0], first) and torch.equal(views[1], second)


# --------------------------------------------------------------------------- q3_misc: checkpoints

def _trained(seed: int, **kwargs):
    """A tiny SimSiam and its SGD optimizer after one step, so BN statistics and momentum buffers are set."""
    torch.manual_seed(seed)
    model = tiny(**kwargs).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(2, 4, 3, 32, 32)
    model.loss(*model(*x)).backward()
    optimizer.step()
    return model, optimizer


def _save(path: Path, model: nn.Module, optimizer, epoch: int = 7, prefix: str = "") -> Path:
    state = {prefix + key: value for key, value in model.state_dict().items()}
    q3_misc.save_checkpoint({"epoch": epoch, "arch": "tiny", "state_dict": state,
                             "optimizer": optimizer.state_dict()}, path)
    return path


def _assert_same_optimizer_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"] and sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        assert torch.equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"])


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "data-parallel"])
def test_load_checkpoints_round_trip(tmp_path, prefix):
    model, optimizer = _trained(9)
    path = _save(tmp_path / "checkpoint_0006.pth.tar", model, optimizer, prefix=prefix)
    fresh, fresh_optimizer = _trained(10)
    assert not torch.equal(fresh.encoder.fc[0].weight, model.encoder.fc[0].weight)
    out_model, out_optimizer, start_epoch = q3_misc.load_checkpoints(str(path), fresh, fresh_optimizer, None)
    assert out_model is fresh and out_optimizer is fresh_optimizer and start_epoch == 7
    for (ka, a), (kb, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert ka == kb and torch.equal(a, b), ka
    _assert_same_optimizer_state(optimizer, fresh_optimizer)


def test_load_checkpoints_maps_tensors_where_asked(tmp_path, monkeypatch):
    model, optimizer = _trained(11)
    path = _save(tmp_path / "c.pth.tar", model, optimizer)
    asked, real_load = [], torch.load

    def spy(*args, map_location=None, **kwargs):
        asked.append(map_location)
        return real_load(*args, map_location="cpu", **kwargs)  # no GPU here: record, then load on the CPU

    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    for gpu in (None, 0, "cpu", torch.device("cpu")):
        q3_misc.load_checkpoints(path, model, optimizer, gpu)
    assert asked == ["cpu", "cuda:0", "cpu", torch.device("cpu")]
    with pytest.raises(TypeError, match="gpu"):
        q3_misc.load_checkpoints(path, model, optimizer, 1.5)


def test_load_checkpoints_model_only(tmp_path):
    model, optimizer = _trained(12)
    fresh, _ = _trained(13)
    _, out_optimizer, epoch = q3_misc.load_checkpoints(_save(tmp_path / "c.pt", model, optimizer, epoch=3),
                                                       fresh, None, None)
    assert out_optimizer is None and epoch == 3
    assert torch.equal(fresh.predictor[0].weight, model.predictor[0].weight)


def test_load_checkpoints_missing_file(tmp_path):
    model, optimizer = _trained(14)
    missing = tmp_path / "nowhere" / "checkpoint.pth.tar"
    with pytest.raises(FileNotFoundError, match="nowhere.*train"):
        q3_misc.load_checkpoints(missing, model, optimizer, None)


def test_load_checkpoints_mismatched_model(tmp_path):
    model, optimizer = _trained(15)
    path = _save(tmp_path / "dim32.pth.tar", model, optimizer)
    other = q3.SimSiam(TinyBackbone, dim=24, pred_dim=8)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"dim32\.pth\.tar.*shape mismatch.*encoder\.fc\.6\.weight"):
        q3_misc.load_checkpoints(path, other, other_optimizer, None)
    no_predictor = tiny(MLP_mode="no_pred_mlp")
    with pytest.raises(ValueError, match=r"unexpected \(8\): predictor\.0\.weight"):
        q3_misc.load_checkpoints(path, no_predictor, torch.optim.SGD(no_predictor.parameters(), lr=0.1), None)


def test_load_checkpoints_rejects_incomplete_checkpoints_and_foreign_optimizers(tmp_path):
    model, optimizer = _trained(16)
    path = tmp_path / "weights_only.pt"
    q3_misc.save_checkpoint({"state_dict": model.state_dict()}, path)
    with pytest.raises(ValueError, match=r"weights_only\.pt.*\['optimizer', 'epoch'\]"):
        q3_misc.load_checkpoints(path, model, optimizer, None)
    state = model.state_dict()
    del state["encoder.fc.1.running_var"]
    q3_misc.save_checkpoint({"state_dict": state, "optimizer": optimizer.state_dict(), "epoch": 1}, path)
    with pytest.raises(ValueError, match=r"missing \(1\): encoder\.fc\.1\.running_var"):
        q3_misc.load_checkpoints(path, model, optimizer, None)
    path = _save(tmp_path / "c.pt", model, optimizer)
    predictor_only = torch.optim.SGD(model.predictor.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer state"):
        q3_misc.load_checkpoints(path, model, predictor_only, None)


@pytest.mark.parametrize("damage", ["truncated", "junk", "empty"])
def test_load_checkpoints_corrupt_file(tmp_path, damage):
    model, optimizer = _trained(17)
    path = _save(tmp_path / "c.pth.tar", model, optimizer)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "junk": b"not a checkpoint", "empty": b""}[damage])
    with pytest.raises(RuntimeError, match=r"c\.pth\.tar.*corrupt"):
        q3_misc.load_checkpoints(path, model, optimizer, None)


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "runs" / "checkpoint.pth.tar"
    q3_misc.save_checkpoint({"epoch": 1}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        q3_misc.save_checkpoint({"epoch": 2, "unpicklable": lambda: None}, path)
    assert os.listdir(path.parent) == ["checkpoint.pth.tar"]  # no temporary file left behind
    assert torch.load(path)["epoch"] == 1  # the good checkpoint survived the failed save


@pytest.mark.parametrize("prefix", ["module.", ""], ids=["data-parallel", "plain"])
def test_load_pretrained_checkpoints_copies_the_backbone_only(tmp_path, prefix):
    torch.manual_seed(18)
    simsiam = q3.SimSiam(torchvision.models.resnet18, dim=64, pred_dim=16).train()
    simsiam(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))  # move the BN running statistics
    optimizer = torch.optim.SGD(simsiam.parameters(), lr=0.1)
    path = _save(tmp_path / "pretrained.pth.tar", simsiam, optimizer, prefix=prefix)

    classifier = torchvision.models.resnet18(num_classes=10)
    fc_before = {k: v.clone() for k, v in classifier.fc.state_dict().items()}
    linear_optimizer = torch.optim.SGD(classifier.fc.parameters(), lr=0.1)
    out_model, out_optimizer, start_epoch = q3_misc.load_pretrained_checkpoints(
        str(path), classifier, linear_optimizer, None)
    assert out_model is classifier and out_optimizer is linear_optimizer and start_epoch == 0
    source = simsiam.encoder.state_dict()
    for key, value in classifier.state_dict().items():
        if key.startswith("fc."):
            assert torch.equal(value, fc_before[key.removeprefix("fc.")]), key
        else:
            assert torch.equal(value, source[key]), key
    assert source["bn1.running_mean"].abs().sum() > 0  # the copied statistics are not the defaults


def test_load_pretrained_checkpoints_rejects_other_backbones(tmp_path):
    torch.manual_seed(19)
    simsiam = q3.SimSiam(cifar_resnet18, dim=64, pred_dim=16)
    path = _save(tmp_path / "cifar_stem.pth.tar", simsiam, torch.optim.SGD(simsiam.parameters(), lr=0.1))
    classifier = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(ValueError, match=r"cifar_stem\.pth\.tar.*shape mismatch \(1\): conv1\.weight"):
        q3_misc.load_pretrained_checkpoints(path, classifier, None, None)
    model, optimizer = _trained(20)
    tiny_path = _save(tmp_path / "tiny.pth.tar", model, optimizer)
    with pytest.raises(ValueError, match=r"tiny\.pth\.tar.*missing"):
        q3_misc.load_pretrained_checkpoints(tiny_path, classifier, None, None)
    q3_misc.save_checkpoint({"state_dict": {"fc.weight": torch.zeros(10, 512)}}, tmp_path / "head.pt")
    with pytest.raises(ValueError, match="no backbone tensors"):
        q3_misc.load_pretrained_checkpoints(tmp_path / "head.pt", classifier, None, None)
    with pytest.raises(FileNotFoundError, match="absent"):
        q3_misc.load_pretrained_checkpoints(tmp_path / "absent.pt", classifier, None, None)


# --------------------------------------------------------------------------- standalone, basic ops, no side effects

ALLOWED_IMPORTS = {"torch", "torchvision", "numpy", "matplotlib", "tqdm", "einops", "PIL", *sys.stdlib_module_names}


@pytest.mark.parametrize("name", ["q3_solution.py", "q3_misc.py"])
def test_imports_only_allowed_libraries(name):
    tree = ast.parse((ROOT / name).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import"
            imported.add(node.module.split(".")[0])
    assert imported and imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS


def test_source_uses_basic_ops_only():
    src = (ROOT / "q3_solution.py").read_text()
    for banned in ("cosine_similarity", "normalize(", "torch.distributions", ".cuda(", "!pip", "%pip", "experiments"):
        assert banned not in src, banned


IMPORT_PROBE = """
import torch
import q3_solution, q3_misc
print(torch.cuda.is_initialized(), torch.rand(1).item())
"""


def test_import_has_no_side_effects(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True) for _ in range(2)]
    assert list(tmp_path.iterdir()) == []  # no data folder, no files
    assert {r.stdout.split()[0] for r in runs} == {"False"}
    assert all(len(r.stdout.split()) == 2 for r in runs)  # nothing else printed
    assert runs[0].stdout != runs[1].stdout  # the global RNG was not seeded at import
