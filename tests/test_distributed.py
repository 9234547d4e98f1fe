"""More than one GPU, on CPU: 2 processes joined over gloo (experiments.harness.distributed), started with
torch.multiprocessing as torchrun would start them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), compared
with one process on the whole batch."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from experiments.harness import distributed, lock, runs
from experiments.harness.execution import eager
from experiments.problems import ddpm, simsiam, vae
from experiments.problems.diffusion import EMA, Diffusion

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker, out: Path, *args) -> list[dict]:
    """worker(out, *args) on WORLD gloo ranks; each rank's torch.save(..., out / f"rank{r}.pt") read back."""
    port = free_port()
    mp.start_processes(_entry, args=(port, worker, out, args), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def _entry(r: int, port: int, worker, out: Path, args: tuple) -> None:
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.setup("cpu")
    try:
        torch.save(worker(out, *args), out / f"rank{r}.pt")
    finally:
        distributed.teardown()


def close(a: dict, b: dict, tol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=tol, rtol=tol), (k, (a[k] - b[k]).abs().max())
        else:
            assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------- SimSiam

SIMSIAM = simsiam.config_for("smoke", backbone="tiny", dim=32, pred_dim=16, batch_size=8)


def simsiam_views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)


def simsiam_model() -> simsiam.q3_solution.SimSiam:
    torch.manual_seed(0)
    return simsiam.build_model(SIMSIAM)


def simsiam_steps(model, net, local, micro_batch=None) -> dict:
    optimizer = simsiam.build_optimizer(model, SIMSIAM)
    x1, x2 = simsiam_views()
    for _ in range(2):
        simsiam.train_step(net, optimizer, x1[local], x2[local], eager(), micro_batch)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def simsiam_worker(out: Path, sync: bool) -> dict:
    model = simsiam_model()
    if sync:
        model = simsiam.sync_bn_model(model, torch.device("cpu"))
    return simsiam_steps(model, distributed.wrap(model, torch.device("cpu")), distributed.local_slice(8))


def test_simsiam_with_synced_batch_norm_equals_one_process(tmp_path):
    one = simsiam_steps(m := simsiam_model(), m, slice(None))
    ranks = spawn(simsiam_worker, tmp_path, True)
    close(ranks[0], ranks[1], 0)  # DDP keeps the ranks identical
    close(ranks[0], one)          # two steps: the gradients and the batch norm statistics of the whole batch


def test_simsiam_without_synced_batch_norm_equals_the_micro_batch_path(tmp_path):
    micro = simsiam_steps(m := simsiam_model(), m, slice(None), micro_batch=4)
    one = simsiam_steps(m := simsiam_model(), m, slice(None))
    ranks = spawn(simsiam_worker, tmp_path, False)
    # The weights: each half normalised over itself, gradients averaged. (The running statistics are not
    # compared: rank 0's saw its half alone, the micro-batch path's both halves in turn.)
    weights = {name for name, _ in simsiam_model().named_parameters()}
    close({k: ranks[0][k] for k in weights}, {k: micro[k] for k in weights})
    assert not all(torch.allclose(one[k], ranks[0][k], atol=1e-5) for k in weights)  # not the whole batch's


# --------------------------------------------------------------------------- DDPM

# The assignment's lr 1e-4 (the smoke preset's is 1e-3): Adam's first steps move each weight by about lr * sign(g),
# so a gradient near 0 whose float sum differs in its last bits between 2 ranks and 1 can move by up to lr.
# dim 16, not 8: with 8 channels in GroupNorm's 8 groups, the bias before each norm has a gradient of exactly 0 in
# exact arithmetic, pure round-off in floats, which Adam turns into steps of size lr.
DDPM = ddpm.config_for("smoke", dim=16, dim_mults=(1, 2), timesteps=10, batch_size=4, lr=1e-4)


def ddpm_steps(net_of, local) -> dict:
    torch.manual_seed(0)
    model = ddpm.build_model(DDPM)
    net = net_of(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=DDPM.lr)
    ema = EMA(model, DDPM.ema_decay)
    diffusion = Diffusion(DDPM.timesteps, DDPM.beta_start, DDPM.beta_end)
    step = ddpm.training_step(model, optimizer, ema, diffusion, eager(), net=net)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.manual_seed(3)  # the global RNG, as seed_everything leaves it on every rank
    for _ in range(2):
        t, eps = diffusion.draw(x)
        step(x[local], t[local], eps[local], ema.next_weight())
    return {**{k: v.detach().clone() for k, v in model.state_dict().items()},
            **{f"ema.{k}": v.detach().clone() for k, v in ema.model.state_dict().items()}}


def ddpm_worker(out: Path) -> dict:
    return ddpm_steps(lambda m: distributed.wrap(m, torch.device("cpu")), distributed.local_slice(4))


def test_two_ddpm_steps_on_two_ranks_equal_one_process(tmp_path):
    one = ddpm_steps(lambda m: m, slice(None))
    ranks = spawn(ddpm_worker, tmp_path)
    close(ranks[0], ranks[1], 0)
    close(ranks[0], one)


# --------------------------------------------------------------------------- VAE

VAE = vae.config_for("smoke", batch_size=4, lr=1e-4)  # the assignment's lr (see DDPM)


def vae_steps(net_of, local) -> dict:
    torch.manual_seed(0)
    model = vae.build_model(VAE)
    if distributed.is_distributed():  # as vae.run does: the encoder's batch norms over the global batch
        model = distributed.sync_batch_norm(model, torch.device("cpu"))
    # SGD, not the run's Adam: Adam's first steps move each weight by about lr * sign(g), and among the VAE's 10^6
    # weights a few have |g| at the level of float round-off, where 2 ranks' sum and 1 process's differ in sign.
    # The gradients, which is what DDP computes, are what SGD's steps compare.
    optimizer = torch.optim.SGD(model.parameters(), lr=VAE.lr, momentum=0.9)
    step = vae.training_step(model, optimizer, eager(), net=net_of(model))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.manual_seed(3)
    losses = [step(x[local]) for _ in range(2)]
    return {**{k: v.detach().clone() for k, v in model.state_dict().items()}, "losses": torch.stack(losses)}


def vae_worker(out: Path) -> dict:
    local = distributed.local_slice(4)
    return vae_steps(lambda m: distributed.wrap(vae.SharedNoise(m, 4, local), torch.device("cpu")), local)


def test_two_vae_steps_on_two_ranks_equal_one_process(tmp_path):
    one = vae_steps(lambda m: None, slice(None))  # the graded forward, its noise from the global RNG
    ranks = spawn(vae_worker, tmp_path)
    for r in ranks:
        r.pop("losses")
    one.pop("losses")
    close(ranks[0], ranks[1], 0)
    close(ranks[0], one)


# --------------------------------------------------------------------------- one writer

@runs.locked
def write_from_every_rank(cfg, out: Path) -> dict:
    """Every rank opens the folder as start() does and tries to write: only rank 0's writes may land."""
    run = distributed.on_writer(lambda: runs.Run(out, cfg))
    run = run or runs.Run(out, cfg, writer=False)
    run.log({"epoch": 1, "rank": distributed.rank()})
    run.save_artifact(f"rank{distributed.rank()}.pt", torch.zeros(1))
    run.write_json(f"rank{distributed.rank()}.json", {})
    distributed.barrier()
    owner = lock.owner_of(out)
    distributed.barrier()  # no rank returns (and rank 0 releases the lock) before every rank has read the owner
    return {"pid": os.getpid(), "owner": owner}


def writer_worker(out: Path) -> dict:
    return write_from_every_rank(VAE, out / "run")


def test_only_rank_zero_writes_and_holds_the_lock(tmp_path):
    ranks = spawn(writer_worker, tmp_path)
    assert ranks[0]["owner"]["pid"] == ranks[0]["pid"] == ranks[1]["owner"]["pid"] != ranks[1]["pid"]
    folder = tmp_path / "run"
    assert [json.loads(line)["rank"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [0]
    assert sorted(p.name for p in (folder / "artifacts").iterdir()) == ["rank0.pt"]
    assert (folder / "rank0.json").exists() and not (folder / "rank1.json").exists()
    assert not (folder / ".lock").exists()  # released by its owner


def test_one_process_is_unchanged():
    assert distributed.world_size() == 1 and distributed.is_writer() and distributed.local_slice(6) == slice(0, 6)
    assert distributed.record() == {"world_size": 1, "backend": None, "sync_batch_norm": False}


# --------------------------------------------------------------------------- torchrun, end to end

def torchrun(problem: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "experiments", problem, "--preset", "smoke", "--data", "synthetic", "--device",
                           "cpu", "--out", str(out), *(extra or ("--epochs", "1"))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.e2e
@pytest.mark.parametrize("problem", ["simsiam", "ddpm"])
def test_smoke_run_under_torchrun(tmp_path, problem):
    done = torchrun(problem, tmp_path / problem)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / problem
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["world_size"] == 2 and provenance["backend"] == "gloo"
    assert provenance["sync_batch_norm"] is (problem == "simsiam")  # the DDPM has no batch norm
    assert (folder / "summary.json").exists()
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 1
    if problem == "simsiam":  # resumed in one process for a second epoch: allowed, and recorded
        done = subprocess.run([sys.executable, "-m", "experiments", problem, "--preset", "smoke", "--data",
                               "synthetic", "--device", "cpu", "--epochs", "2", "--out", str(folder), "--resume"],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["world_size"] == 1 and provenance["sync_batch_norm"] is False
        assert provenance["resume_changes"][-1] == {"after_epoch": 1, "changes": {"epochs": [1, 2],
                                                                                  "world_size": [2, 1]}}


TIMINGS = ("seconds", "per_s")


def numbers(folder: Path) -> dict:
    """summary.json without its timings (at any depth: the spectrum's own "seconds" too)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not any(t in k for t in TIMINGS)}
        return x
    return strip(json.loads((folder / "summary.json").read_text()))


@pytest.mark.e2e
def test_a_rank_killed_mid_run_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    extra = ("--epochs", "3")
    whole = torchrun("simsiam", tmp_path / "whole", *extra)
    assert whole.returncode == 0, whole.stderr[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    folder = tmp_path / "killed"
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "experiments", "simsiam", "--preset", "smoke", "--data", "synthetic", "--device",
                            "cpu", "--out", str(folder), *extra], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (folder / "checkpoint.pt").exists():  # epoch 1 is checkpointed: epoch 2 is under way
            assert job.poll() is None, "the run ended before its first checkpoint"
            time.sleep(0.05)
        os.kill(lock.owner_of(folder)["pid"], signal.SIGKILL)  # rank 0, the writer, holder of the lock
        assert job.wait(timeout=300) != 0  # torchrun ends the job when a rank dies
    finally:
        if job.poll() is None:
            job.kill()
    assert not (folder / "summary.json").exists()
    resumed = torchrun("simsiam", folder, *extra, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert numbers(folder) == numbers(tmp_path / "whole")


# --------------------------------------------------------------------------- the report

def test_the_report_says_what_batch_norm_normalised_over_on_several_gpus():
    from report.numbers import batch_norm_over
    from report.runs import RunFolder
    assert batch_norm_over(4096, 4096) == "the 4096 images of each view of the whole batch"
    assert "whole batch, synchronised over 4 GPUs" in batch_norm_over(4096, 1024, 4, synced=True)
    assert "2048 images of each view of a micro-batch on 4 GPUs" in batch_norm_over(4096, 512, 4, synced=True)
    per_gpu = batch_norm_over(4096, 1024, 4, synced=False)
    assert per_gpu.startswith("the 1024 images of each view on one GPU") and "micro-batches" not in per_gpu
    run = RunFolder("simsiam-baseline", Path("x"), provenance={
        "device": "cuda:0", "device_name": "NVIDIA H100", "precision": "fp32", "world_size": 4,
        "backend": "nccl", "sync_batch_norm": True})
    assert run.hardware == "NVIDIA H100 (cuda:0), fp32, 4 processes (nccl), synced batch norm"


def test_synced_batch_norm_keeps_the_checkpoint_format():
    """A checkpoint moves between one GPU and several: the converted model's state_dict has the same keys and
    tensors (SyncBatchNorm on CUDA, GroupBatchNorm on CPU), and outside a process group it computes as before."""
    model = simsiam_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for device in ("cuda", "cpu"):
        converted = simsiam.sync_bn_model(simsiam_model(), torch.device(device))
        kinds = {type(m) for m in converted.modules()}
        assert (torch.nn.SyncBatchNorm if device == "cuda" else distributed.GroupBatchNorm) in kinds
        assert not {torch.nn.BatchNorm1d, torch.nn.BatchNorm2d} & kinds
        assert converted.state_dict().keys() == before.keys()
        close(converted.state_dict(), before, 0)
    converted = simsiam.sync_bn_model(simsiam_model(), torch.device("cpu"))
    x1, x2 = simsiam_views()
    model.train(), converted.train()
    close({"p": model(x1, x2)[0]}, {"p": converted(x1, x2)[0]}, 0)
