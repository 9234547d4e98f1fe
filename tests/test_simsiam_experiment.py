"""The SimSiam experiment end to end: a CLI smoke run of every ablation, the comparison figures, the
collapse of the unprotected Siamese network, resume, the lr schedule, the CIFAR backbone."""
import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from experiments import __main__ as cli
from experiments.harness import augment, data
from experiments.harness.execution import eager
from experiments.harness.files import read_checkpoint, read_metrics
from experiments.harness.loop import NonFiniteLossError
from experiments.measurements import monitors
from experiments.presentation import figures, names
from experiments.presentation.summaries import SimSiamSummary, spectra
from experiments.problems import simsiam

ASSIGNMENT_ABLATIONS = ["baseline", "no-stop-grad", "no-predictor", "proj-4096", "batch-4096"]  # Q4, Q5
ABLATIONS = list(names.ABLATION_NAMES)  # those, and any added in experiments/presentation/names.py
TIMING_KEYS = {"train_seconds", "epoch_seconds", "wall_seconds", "images_per_s"}
MONITOR_KEYS = {"knn_accuracy", "collapse_std", "collapse_std_reference"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One synthetic cache for the whole module (rendered once)."""
    return str(tmp_path_factory.mktemp("data"))


def tiny(data_root: str, **overrides) -> simsiam.SimSiamConfig:
    """The smoke preset with the test backbone: a few seconds per run on a CPU."""
    cfg = simsiam.config_for("smoke", data="synthetic", data_root=data_root, device="cpu", backbone="tiny")
    return replace(cfg, **overrides)


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


# --------------------------------------------------------------------------- CLI smoke, every ablation

@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, data_root):
    """`python -m experiments simsiam --preset smoke --ablation <name>` for every ablation, as typed."""
    tmp = tmp_path_factory.mktemp("cli")
    runs = {}
    for name in ABLATIONS:
        out = tmp / name
        code = cli.main(["simsiam", "--preset", "smoke", "--data", "synthetic", "--ablation", name, "--out", str(out),
                         "--data-root", data_root, "--device", "cpu"])
        assert code == 0, name
        runs[name] = out
    return runs


@pytest.mark.parametrize("name", ABLATIONS)
@pytest.mark.e2e
def test_cli_smoke_run_of_each_ablation(cli_runs, name):
    run_dir = cli_runs[name]
    config = json.loads((run_dir / "config.json").read_text())
    smoke = simsiam.PRESETS["smoke"]
    expected = {"baseline": {}, "no-stop-grad": {"stop_gradient": False}, "no-predictor": {"mlp_mode": "no_pred_mlp"},
                "proj-4096": {"dim": 2 * smoke.dim},
                "batch-4096": {"batch_size": 4 * smoke.batch_size, "warmup_epochs": 1}}[name]
    assert config["ablation"] == name and config["backbone"] == "resnet18" and config["seed"] == 2022
    for key in ("stop_gradient", "mlp_mode", "dim", "batch_size", "warmup_epochs"):
        assert config[key] == expected.get(key, getattr(smoke, key)), key

    cfg = simsiam.config_for("smoke", ablation=name)
    steps = smoke.train_size // cfg.batch_size
    metrics = read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert {"loss", "lr", "predictor_lr", *MONITOR_KEYS, *TIMING_KEYS} <= set(m)
        assert -1 <= m["loss"] <= 1 and 0 <= m["knn_accuracy"] <= 1
        assert m["collapse_std_reference"] == pytest.approx(1 / math.sqrt(config["dim"]))
        # the lr of the epoch's last step, set per step
        assert (m["lr"], m["predictor_lr"]) == pytest.approx(simsiam.learning_rates(cfg, m["epoch"] - 1 / steps))

    model = read_checkpoint(run_dir / "checkpoint.pt")["state"]["model"]
    assert ("predictor.0.weight" in model) == (name != "no-predictor")
    assert model["encoder.fc.6.weight"].shape == (config["dim"], 512)  # resnet18's 512 features -> d
    assert model["encoder.conv1.weight"].shape == (64, 3, 7, 7)  # the starter's resnet18 stem
    summary = SimSiamSummary.read(run_dir)
    assert summary.dataset == "synthetic" and summary.ablation == name and summary.epochs == 2
    assert summary.final_knn_accuracy == metrics[-1]["knn_accuracy"]
    assert summary.best_knn_accuracy == max(m["knn_accuracy"] for m in metrics)
    assert summary.knn_k == smoke.train_size  # k = 200 clipped to the memory bank
    assert 0 <= summary.linear_probe_accuracy <= 1
    for png in ("wall_clock.png", "training.png", "spectrum.png"):
        assert (run_dir / "figures" / png).stat().st_size > 5_000, png
    # Question 4 (Part III): F's spectrum after each epoch (smoke: every epoch), the last one in the summary.
    measured = spectra(run_dir)
    assert [r.epoch for r in measured] == [1, 2] and summary.spectrum == measured[-1]
    assert all(r.d == config["dim"] and r.n == smoke.test_size and 1 <= r.effective_rank <= r.d for r in measured)
    assert measured[-1].eigenvalues[0] == 1.0 and measured[-1].trace > 0
    assert (measured[-1].alignment is None) == (name == "no-predictor")


@pytest.mark.e2e
def test_comparison_figures_and_table_from_the_run_folders(cli_runs, tmp_path):
    dirs = [cli_runs[name] for name in ABLATIONS]
    paths = figures.simsiam_comparisons(dirs, tmp_path)
    assert sorted(p.name for p in paths) == ["simsiam_q4.png", "simsiam_q4_spectrum.png", "simsiam_q5a.png",
                                             "simsiam_q5b.png", "simsiam_table.png"]
    assert all(p.stat().st_size > 5_000 for p in paths)
    _, rows, markdown = figures.simsiam_table(dirs, tmp_path)
    assert [r["run"] for r in rows] == ABLATIONS
    baseline = SimSiamSummary.read(cli_runs["baseline"])
    assert rows[0]["final_knn"] == baseline.final_knn_accuracy
    assert rows[0]["linear_probe"] == baseline.linear_probe_accuracy
    assert len(markdown.splitlines()) == 2 + len(ABLATIONS) and "proj-4096" in markdown
    # A question whose ablations are not all there is drawn with what there is.
    assert figures.simsiam_comparison([cli_runs["baseline"]], tmp_path / "partial", "q5b").exists()


def test_cli_rejects_options_of_other_problems(capsys, tmp_path):
    code = cli.main(["simsiam", "--preset", "smoke", "--data", "synthetic", "--timesteps", "10", "--out",
                     str(tmp_path / "run"), "--device", "cpu"])
    assert code == 2 and "timesteps" in capsys.readouterr().err


# --------------------------------------------------------------------------- configuration

def test_presets_ablations_and_run_names():
    assert ABLATIONS[:len(ASSIGNMENT_ABLATIONS)] == ASSIGNMENT_ABLATIONS
    full = {name: simsiam.config_for("full", ablation=name) for name in ABLATIONS}
    base = full["baseline"]
    assert (base.seed, base.batch_size, base.dim, base.pred_dim, base.epochs) == (2022, 1024, 2048, 512, 100)
    assert (base.momentum, base.weight_decay, base.fix_pred_lr, base.warmup_epochs) == (0.9, 5e-4, True, 0)
    assert base.stop_gradient and base.mlp_mode is None and base.backbone == "resnet18"
    assert not full["no-stop-grad"].stop_gradient
    assert full["no-predictor"].mlp_mode == "no_pred_mlp"
    assert full["proj-4096"].dim == 4096 and full["proj-4096"].batch_size == 1024
    assert (full["batch-4096"].batch_size, full["batch-4096"].warmup_epochs) == (4096, 10)
    assert [simsiam.run_name(c) for c in full.values()] == [f"simsiam-full-{n}" for n in ABLATIONS]
    assert simsiam.run_name(simsiam.config_for("smoke", ablation="no-stop-grad", backbone="resnet18-cifar")) == \
        "simsiam-smoke-no-stop-grad-resnet18-cifar"
    assert simsiam.variants("full") == [{"ablation": n} for n in ABLATIONS]
    with pytest.raises(ValueError, match="ablation"):
        simsiam.config_for("full", ablation="no-such-thing")
    with pytest.raises(ValueError, match="backbone"):
        simsiam.config_for("full", backbone="vgg")


# --------------------------------------------------------------------------- learning rate

def test_linear_scaling_rule():
    assert simsiam.peak_lr(simsiam.config_for("full")) == pytest.approx(0.03 * 1024 / 256)
    assert simsiam.peak_lr(simsiam.config_for("full", ablation="batch-4096")) == pytest.approx(0.48)
    assert simsiam.peak_lr(simsiam.config_for("full", batch_size=512)) == pytest.approx(0.06)


def test_cosine_schedule_with_the_predictor_at_a_fixed_lr():
    cfg = simsiam.config_for("full")
    peak = 0.12
    for t in (0, 10, 25, 50, 75, 99.5):
        encoder, predictor = simsiam.learning_rates(cfg, t)
        assert encoder == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * t / 100)))
        assert predictor == pytest.approx(peak)
    assert simsiam.learning_rates(cfg, 50)[0] == pytest.approx(peak / 2)
    assert simsiam.learning_rates(replace(cfg, fix_pred_lr=False), 50) == pytest.approx((peak / 2, peak / 2))


def test_warm_up_then_cosine_for_batch_4096():
    cfg = simsiam.config_for("full", ablation="batch-4096")
    peak = 0.48
    for t in (0, 2.5, 5, 9.9):  # linear from 0, both groups
        assert simsiam.learning_rates(cfg, t) == pytest.approx((peak * t / 10, peak * t / 10))
    assert simsiam.learning_rates(cfg, 10) == pytest.approx((peak, peak))  # continuous at the end of warm-up
    for t in (10, 32.5, 55, 77.5, 99):  # cosine over the remaining 90 epochs; the predictor stays at the peak
        encoder, predictor = simsiam.learning_rates(cfg, t)
        assert encoder == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * (t - 10) / 90)))
        assert predictor == pytest.approx(peak)
    assert simsiam.learning_rates(cfg, 55)[0] == pytest.approx(peak / 2)


def test_optimizer_groups_follow_the_schedule():
    cfg = replace(simsiam.config_for("smoke", backbone="tiny"), epochs=10, warmup_epochs=2)
    model = simsiam.build_model(cfg)
    optimizer = simsiam.build_optimizer(model, cfg)
    assert [g["name"] for g in optimizer.param_groups] == ["encoder", "predictor"]
    encoder = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert model.encoder.fc[6].weight is not None and id(model.encoder.fc[6].bias) not in encoder  # frozen bias
    simsiam.set_learning_rates(optimizer, cfg, 6.0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(simsiam.learning_rates(cfg, 6.0))
    assert (optimizer.defaults["momentum"], optimizer.defaults["weight_decay"]) == (0.9, 5e-4)
    no_predictor = simsiam.build_optimizer(simsiam.build_model(replace(cfg, mlp_mode="no_pred_mlp")), cfg)
    assert [g["name"] for g in no_predictor.param_groups] == ["encoder"]


# --------------------------------------------------------------------------- backbones

def test_resnet18_cifar_stem():
    net = simsiam.resnet18_cifar(num_classes=10, zero_init_residual=True)
    conv1 = net.conv1
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.stride, conv1.padding, conv1.bias) == \
        (3, 64, (3, 3), (1, 1), (1, 1), None)
    assert isinstance(net.maxpool, nn.Identity)
    blocks = [b for b in net.modules() if isinstance(b, torchvision.models.resnet.BasicBlock)]
    assert len(blocks) == 8 and all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks)  # zero_init_residual
    shapes = {}
    net.layer4.register_forward_hook(lambda m, i, o: shapes.__setitem__("layer4", o.shape))
    net.layer1.register_forward_hook(lambda m, i, o: shapes.__setitem__("layer1", o.shape))
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert shapes == {"layer1": (2, 64, 32, 32), "layer4": (2, 512, 4, 4)}
    reference = torchvision.models.resnet18(num_classes=10)  # everything else is torchvision's resnet18
    assert {k: v.shape for k, v in net.state_dict().items() if k != "conv1.weight"} == \
        {k: v.shape for k, v in reference.state_dict().items() if k != "conv1.weight"}


def test_simsiam_state_dicts_match_the_spec(state_dict_spec):
    key = "q3_solution.SimSiam(torchvision.models.resnet18, dim=2048, pred_dim=512, MLP_mode=None)"
    spec = state_dict_spec[key]
    starter = simsiam.build_model(simsiam.config_for("full", backbone="resnet18"))
    assert {k: list(v.shape) for k, v in starter.state_dict().items()} == spec
    cifar_cfg = simsiam.config_for("full", backbone="resnet18-cifar")
    cifar = {k: list(v.shape) for k, v in simsiam.build_model(cifar_cfg).state_dict().items()}
    assert cifar == {**spec, "encoder.conv1.weight": [64, 3, 3, 3]}


def test_backbone_features_are_the_input_of_the_projector():
    torch.manual_seed(0)
    model = simsiam.build_model(simsiam.config_for("smoke", backbone="tiny")).eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    hz = simsiam.features(model.encoder, images, batch_size=4, ex=eager(), with_projection=True)
    h = simsiam.features(model.encoder, images, batch_size=4, ex=eager())
    x = simsiam.normalize(images)
    with torch.no_grad():
        expected_h = model.encoder[:-1](x)  # tiny_convnet is a Sequential: everything before fc
        expected_z = model.encoder(x)
    torch.testing.assert_close(h, expected_h)
    torch.testing.assert_close(hz, torch.cat([expected_h, expected_z], dim=1))
    mean = torch.tensor(augment.CIFAR10_MEAN)[:, None, None]
    torch.testing.assert_close(x, (images / 255 - mean) / torch.tensor(augment.CIFAR10_STD)[:, None, None])


# --------------------------------------------------------------------------- collapse

COLLAPSE_STEPS = 1000


def collapse_ratio_after_training(data_root: str, stop_gradient: bool) -> tuple[float, float]:
    """Train a tiny SimSiam (d = 64) on 16x16 views of the synthetic digits, the starter's augmentations,
    batch 256, cosine lr from 0.2, COLLAPSE_STEPS steps; returns (last loss, std(z / ||z||) * sqrt(d) on
    test images in eval mode): about 1 for outputs spread over the sphere, 0 at collapse."""
    train = data.load_split("synthetic", "train", data_root, seed=0).subset(1024, 0).images
    test = data.load_split("synthetic", "test", data_root, seed=0).subset(256, 0).images
    test = F.avg_pool2d(test.float(), 2).round().to(torch.uint8)  # (256, 3, 16, 16), as the views
    augmentation = augment.SimSiamAugment(augment.AugmentConfig(size=16))
    cfg = replace(simsiam.config_for("smoke", backbone="tiny"), dim=64, pred_dim=16, batch_size=256, base_lr=0.2,
                  epochs=10, stop_gradient=stop_gradient)
    torch.manual_seed(0)
    model = simsiam.build_model(cfg)
    optimizer = simsiam.build_optimizer(model, cfg)
    g = torch.Generator().manual_seed(1)
    for step in range(COLLAPSE_STEPS):
        simsiam.set_learning_rates(optimizer, cfg, cfg.epochs * step / COLLAPSE_STEPS)
        x1, x2 = augment.two_views(train[torch.randint(0, len(train), (cfg.batch_size,), generator=g)], augmentation, g)
        loss = simsiam.train_step(model, optimizer, x1, x2, eager())
    hz = simsiam.features(model.encoder, test, batch_size=256, ex=eager(), with_projection=True)
    z = hz[:, model.encoder.fc[0].in_features:]  # (256, d)
    return loss.item(), monitors.collapse_std(z) / monitors.collapse_std_reference(cfg.dim)


@pytest.mark.e2e  # two trainings of a minute: run by scripts/test.sh
def test_without_stop_gradient_the_outputs_collapse(data_root):
    """Q4 in miniature (Chen & He 2021, Sec. 4.1, Fig. 2): without the stop-gradient the network finds
    the degenerate solution, its loss near the minimum -1 and std(z / ||z||) far below 1/sqrt(d) (with
    batch norm at the projector's output, one outlier per batch of 256 already leaves about 0.12);
    SimSiam's stays near 1/sqrt(d). Measured on 6 seeds: 0.00-0.22 without, 0.99-1.00 with."""
    loss_collapsed, ratio_collapsed = collapse_ratio_after_training(data_root, stop_gradient=False)
    loss_simsiam, ratio_simsiam = collapse_ratio_after_training(data_root, stop_gradient=True)
    assert ratio_collapsed < 0.3 and loss_collapsed < -0.95
    assert ratio_simsiam > 0.8 and loss_simsiam > -0.9


# --------------------------------------------------------------------------- resume

@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """An uninterrupted 3-epoch run to compare resumed runs against."""
    tmp = tmp_path_factory.mktemp("ref")
    run_dir = simsiam.run(tiny(data_root, epochs=3), tmp / "run")
    return read_metrics(run_dir), SimSiamSummary.read(run_dir)


def assert_same_run(run_dir, reference):
    metrics, summary = reference
    assert without_timings(read_metrics(run_dir)) == without_timings(metrics)
    assert SimSiamSummary.read(run_dir).linear_probe_accuracy == summary.linear_probe_accuracy


def test_resume_after_ctrl_c_mid_epoch_matches_an_uninterrupted_run(tmp_path, data_root, reference, monkeypatch):
    cfg = tiny(data_root, epochs=3)
    calls = {"n": 0}
    real = simsiam.data.iterate_batches

    def interrupted(*args, **kwargs):
        for i, idx in enumerate(real(*args, **kwargs)):
            if kwargs.get("shuffle") and calls["n"] == 1 and i == 2:  # 2nd training epoch, 3rd batch
                raise KeyboardInterrupt
            yield idx
        calls["n"] += bool(kwargs.get("shuffle"))

    monkeypatch.setattr(simsiam.data, "iterate_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simsiam.run(cfg, tmp_path / "run")
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1]
    monkeypatch.setattr(simsiam.data, "iterate_batches", real)
    simsiam.run(cfg, tmp_path / "run", resume=True)
    assert_same_run(tmp_path / "run", reference)


def test_resume_refuses_a_different_config_and_extends_a_finished_run(tmp_path, data_root):
    cfg = tiny(data_root, epochs=1)
    simsiam.run(cfg, tmp_path / "run")
    first = read_metrics(tmp_path / "run")
    with pytest.raises(ValueError, match="momentum"):  # base_lr may change (--lr), the optimizer not
        simsiam.run(replace(cfg, momentum=0.5), tmp_path / "run", resume=True)
    with pytest.raises(FileExistsError):
        simsiam.run(cfg, tmp_path / "run")
    # More epochs: epoch 1 is kept as it was, epoch 2 follows (on the cosine of the new length).
    simsiam.run(replace(cfg, epochs=2), tmp_path / "run", resume=True)
    metrics = read_metrics(tmp_path / "run")
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[0] == first[0]
    assert SimSiamSummary.read(tmp_path / "run").epochs == 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_root, monkeypatch):
    real = simsiam.train_step
    calls = {"n": 0}

    def nan_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 4 else loss  # 4 steps per smoke epoch

    monkeypatch.setattr(simsiam, "train_step", nan_in_epoch_2)
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        simsiam.run(tiny(data_root, epochs=3), tmp_path / "run")
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1]
