"""q3_misc checkpoints: a digest written with the checkpoint refuses damaged files; plain starter
checkpoints still load; a GPU index on a machine without CUDA says so."""
from __future__ import annotations

import random

import pytest
import torch

import q3_misc


def model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(8, 16)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_and_plain_checkpoints(tmp_path):
    model, optimizer = model_and_optimizer()
    q3_misc.save_checkpoint({"epoch": 3, "arch": "mlp", "state_dict": model.state_dict(),
                             "optimizer": optimizer.state_dict()}, tmp_path / "ours.pt")
    assert "sha256" in torch.load(tmp_path / "ours.pt", weights_only=True)  # torch.load still reads it
    fresh, fresh_opt = model_and_optimizer(seed=1)
    _, _, epoch = q3_misc.load_checkpoints(tmp_path / "ours.pt", fresh, fresh_opt, None)
    assert epoch == 3 and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                fresh.state_dict().values()))
    torch.save({"epoch": 2, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
               tmp_path / "starter.pth.tar")  # the starter's own torch.save: no digest
    assert q3_misc.load_checkpoints(tmp_path / "starter.pth.tar", fresh, fresh_opt, None)[2] == 2


def test_single_byte_flips_never_load_wrong_weights(tmp_path):
    model, optimizer = model_and_optimizer()
    path = tmp_path / "c.pt"
    q3_misc.save_checkpoint({"epoch": 1, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
                            path)
    good = path.read_bytes()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    rng = random.Random(0)
    refused = 0
    for _ in range(20):
        damaged = bytearray(good)
        damaged[rng.randrange(len(good))] ^= 0xFF
        path.write_bytes(bytes(damaged))
        fresh, fresh_opt = model_and_optimizer(seed=5)
        try:
            q3_misc.load_checkpoints(path, fresh, fresh_opt, None)
        except (RuntimeError, ValueError) as err:
            assert "checksum" in str(err) or "cannot read" in str(err) or "does not match" in str(err)
            refused += 1
            continue
        assert all(torch.equal(expected[k], v) for k, v in fresh.state_dict().items())  # loaded: exactly right
    assert refused >= 15


def test_a_gpu_index_without_cuda_says_so(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer()
    q3_misc.save_checkpoint({"epoch": 1, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
                            tmp_path / "c.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for gpu in (0, "cuda:0"):
        with pytest.raises(RuntimeError, match="CUDA is not available") as err:
            q3_misc.load_checkpoints(tmp_path / "c.pt", model, optimizer, gpu)
        assert "corrupt" not in str(err.value)
