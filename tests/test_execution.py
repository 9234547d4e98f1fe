"""experiments.harness.execution: the measured precision choice (with a fake clock), its record in provenance.json, a
resumed run keeping its precision, and compiled steps equal to eager ones (torch.compile's default mode, which
runs on CPU; its first compile takes minutes on 2 cores, so those tests are end-to-end)."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from experiments import __main__ as cli
from experiments.harness import config, execution, runs
from experiments.harness.execution import Compiled, Execution, choose_precision, eager, fastest
from experiments.harness.files import read_metrics
from experiments.problems import ddpm, vae
from experiments.problems.diffusion import EMA, Diffusion
from tests.test_precision import tiny_vae, without_timings

CUDA_LIKE = ["fp32", "bf16", "fp16"]  # the candidates on compute capability >= 8.0


def fake_timing(step_seconds: dict[str, float]):
    """(trial, clock): each step of a candidate advances the fake clock by its entry in step_seconds."""
    now = [0.0]

    def trial(ex: Execution):
        def step():
            now[0] += step_seconds[ex.name]
        return step
    return trial, lambda: now[0]


# --------------------------------------------------------------------------- the choice

def test_the_fastest_candidate_wins(monkeypatch):
    monkeypatch.setattr(execution, "candidates", lambda device: CUDA_LIKE)
    trial, clock = fake_timing({"fp32": 0.040, "bf16": 0.030, "fp16": 0.020})
    name, record = choose_precision(torch.device("cpu"), "auto", trial=trial, clock=clock)
    assert name == "fp16"
    assert record["precision_step_seconds"] == pytest.approx({"fp32": 0.040, "bf16": 0.030, "fp16": 0.020})
    assert record["precision_choice"].startswith("fp16, the fastest")


def test_ties_go_to_fp32(monkeypatch):
    monkeypatch.setattr(execution, "candidates", lambda device: CUDA_LIKE)
    # bf16 is 3% faster: within the 5% margin, so fp32 (no casts, no scaler) is kept
    trial, clock = fake_timing({"fp32": 0.040, "bf16": 0.0388, "fp16": 0.041})
    assert choose_precision(torch.device("cpu"), "auto", trial=trial, clock=clock)[0] == "fp32"
    assert fastest({"fp32": 1.0, "bf16": 0.96}) == "fp32" and fastest({"fp32": 1.0, "bf16": 0.94}) == "bf16"


def test_cpu_picks_fp32_untimed_and_forced_or_kept_precisions_are_not_timed():
    def never(ex):
        raise AssertionError("nothing is timed")
    cpu = torch.device("cpu")
    assert choose_precision(cpu, "auto", trial=never) == (
        "fp32", {"precision_choice": "fp32, not timed (cpu)", "precision_step_seconds": {}})
    assert choose_precision(cpu, "bf16", trial=never)[0] == "bf16"
    assert choose_precision(cpu, "auto", kept="fp16", trial=never)[1]["precision_choice"] == \
        "fp16, kept from the checkpoint"
    with pytest.raises(ValueError, match="--precision"):
        choose_precision(cpu, "half")


def test_the_candidates_follow_the_compute_capability(monkeypatch):
    for capability, expected in [((6, 1), ["fp32"]), ((7, 5), ["fp32", "fp16"]), ((9, 0), CUDA_LIKE)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 answers
        assert execution.candidates(torch.device("cuda")) == expected
        assert execution.uses_tf32(torch.device("cuda")) == (capability[0] >= 8)
    assert execution.candidates(torch.device("cpu")) == ["fp32"]


def test_compile_modes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert execution.compile_mode("auto", cpu, compiles=True) == "none"
    assert execution.compile_mode("auto", cuda, compiles=True) == "reduce-overhead"
    assert execution.compile_mode("default", cpu, compiles=True) == "default"
    assert execution.compile_mode("default", cuda, compiles=False) == "none"  # SimSiam
    with pytest.raises(ValueError, match="--compile"):
        vae.config_for("smoke", compile="fast")


def test_the_cli_option_and_old_configs():
    args = cli.parse_args(["ddpm", "--compile", "none", "--precision", "fp32"])
    assert (args.compile, args.precision) == ("none", "fp32")
    assert "--compile none" in cli.run_command("ddpm", args, Path("r"), {}, lr="1e-4")
    # a run begun with the boolean `compile` field (False) resumes under the new one
    assert config.same_config({"compile": False, "lr": 1e-4}, {"compile": "auto", "lr": 1e-4}) == {}
    assert "eager (--compile auto compiles on CUDA only)" in eager().describe()


def test_a_failed_compile_falls_back_to_eager_with_one_line(monkeypatch, capsys):
    def broken(fn, mode):
        def call(*args):
            torch.randn(3)  # a draw before failing: the eager rerun must not see it
            raise RuntimeError("no compiler here\nsecond line")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    step = Compiled(lambda x: x + torch.randn(()), "default", "test step")
    torch.manual_seed(0)
    out = step(torch.zeros(()))
    torch.manual_seed(0)
    assert torch.equal(out, torch.randn(()))  # the RNG was put back before the eager call
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["test step: torch.compile(mode='default') failed, running eager (RuntimeError: no compiler here)"]
    assert step.compiled is None


# --------------------------------------------------------------------------- in a run

def test_a_smoke_run_records_fp32_not_timed(tmp_path):
    out = vae.run(tiny_vae(tmp_path / "data", precision="auto", epochs=1), tmp_path / "run")
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["precision"] == "fp32" and provenance["precision_choice"] == "fp32, not timed (cpu)"
    assert provenance["compile"] == "none" and provenance["channels_last"] is False
    summary = json.loads((out / "summary.json").read_text())
    assert {"log-likelihood", "amortisation gap", "discriminator"} <= set(summary["evaluation_seconds"])


def fake_device_clock(monkeypatch, readings: list[float]):
    """The clock choose_precision reads: `readings` in turn (two per candidate: start and end), then the last one
    (the final evaluation's timings read it too)."""
    values = iter(readings)
    monkeypatch.setattr(execution, "device_clock", lambda device: lambda: next(values, readings[-1]))


def test_auto_times_the_run_without_changing_it_and_a_resume_keeps_the_choice(tmp_path, monkeypatch):
    """auto measures (fake clock: bf16 faster) on fresh copies under a forked RNG: the run equals one forced to
    bf16. Its resume keeps bf16 although the clock would now pick fp32."""
    monkeypatch.setattr(execution, "candidates", lambda device: ["fp32", "bf16"])
    fake_device_clock(monkeypatch, [0.0, 1.0, 1.0, 1.5])  # fp32 0.2 s a step, bf16 0.1 s
    measured = vae.run(tiny_vae(tmp_path / "data", precision="auto", epochs=1), tmp_path / "auto")
    provenance = json.loads((measured / "provenance.json").read_text())
    assert provenance["precision"] == "bf16"
    assert provenance["precision_step_seconds"] == pytest.approx({"fp32": 0.2, "bf16": 0.1})
    forced = vae.run(tiny_vae(tmp_path / "data", precision="bf16", epochs=1), tmp_path / "forced")
    assert without_timings(read_metrics(measured)) == without_timings(read_metrics(forced))

    fake_device_clock(monkeypatch, [0.0, 0.5, 0.5, 1.5])  # now fp32 would win
    vae.run(tiny_vae(tmp_path / "data", precision="auto", epochs=2), tmp_path / "auto", resume=True)
    provenance = json.loads((measured / "provenance.json").read_text())
    assert provenance["precision"] == "bf16" and provenance["precision_choice"] == "bf16, kept from the checkpoint"


# --------------------------------------------------------------------------- compiled == eager

def tiny_ddpm_step(ex: Execution, base: torch.nn.Module):
    model = copy.deepcopy(base)
    ema = EMA(model, 0.9)
    diffusion = Diffusion(10)
    step = ex.compiled(ddpm.training_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), ema, diffusion, ex),
                       "DDPM training step")
    return step, model, ema, diffusion


@pytest.mark.e2e  # compiling the U-Net's step takes minutes on 2 cores
def test_the_compiled_ddpm_step_and_samplers_equal_eager():
    """Losses equal to 1e-5 (relative) for 3 steps; the weights after them to 3 x lr (Adam moves a weight whose
    gradient is ~0 by +-lr, whichever way rounding tips it); the samplers to 1e-4."""
    cfg = replace(ddpm.config_for("smoke"), dim=8, dim_mults=(1, 2), timesteps=10)
    torch.manual_seed(0)
    base = ddpm.build_model(cfg)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    results = {}
    for name, ex in [("eager", eager()), ("compiled", Execution("cpu", "fp32", "default"))]:
        step, model, ema, diffusion = tiny_ddpm_step(ex, base)
        torch.manual_seed(2)
        losses = [step(x, *diffusion.draw(x), ema.next_weight()) for _ in range(3)]
        x_T = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        samples = diffusion.sample(ema.model, x_T, generator=torch.Generator().manual_seed(4), execution=ex,
                                   progress=False)
        ddim = diffusion.ddim_sample(ema.model, x_T, n_steps=4, execution=ex, progress=False)
        results[name] = torch.stack(losses), model, samples, ddim
    (eager_losses, eager_model, eager_samples, eager_ddim), (losses, model, samples, ddim) = results.values()
    torch.testing.assert_close(losses, eager_losses, rtol=1e-5, atol=0)
    for p, q in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=3e-3)
    torch.testing.assert_close(samples, eager_samples, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ddim, eager_ddim, rtol=1e-4, atol=1e-4)


@pytest.mark.e2e  # compiling the VAE's step takes minutes on 2 cores
def test_resume_after_a_compiled_epoch_is_exact(tmp_path, monkeypatch):
    """A VAE run with its training step compiled (default mode), interrupted in its 2nd epoch and resumed, ends
    with the numbers of the uninterrupted compiled run; and those are the eager run's, to 1e-4."""
    cfg = tiny_vae(tmp_path / "data", precision="fp32", compile="default", epochs=2)
    straight = vae.run(cfg, tmp_path / "straight")
    assert json.loads((straight / "provenance.json").read_text())["compile"] == "default"
    calls = {"n": 0}
    real = vae.data.iterate_batches

    def interrupted(*args, **kwargs):  # Ctrl-C at the 2nd batch of the 2nd training epoch
        for i, idx in enumerate(real(*args, **kwargs)):
            if kwargs.get("shuffle") and calls["n"] == 1 and i == 1:
                raise KeyboardInterrupt
            yield idx
        calls["n"] += bool(kwargs.get("shuffle"))

    monkeypatch.setattr(vae.data, "iterate_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vae.run(cfg, tmp_path / "resumed")
    monkeypatch.setattr(vae.data, "iterate_batches", real)
    vae.run(cfg, tmp_path / "resumed", resume=True)
    assert without_timings(read_metrics(tmp_path / "resumed")) == without_timings(read_metrics(straight))
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # the reparameterisation's draws as eager's
    fallback = vae.run(cfg, tmp_path / "fallback-random")
    eager_run = vae.run(replace(cfg, compile="none"), tmp_path / "eager")
    for a, b in zip(read_metrics(fallback), read_metrics(eager_run)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_runs_start_builds_one_execution(tmp_path):
    cfg = tiny_vae(tmp_path / "data", precision="fp16", epochs=1)
    setup = runs.start(cfg, tmp_path / "run", "svhn")
    assert isinstance(setup.execution, Execution) and setup.execution.name == "fp16"
    assert setup.execution.precision.scaler.is_enabled()
    assert not hasattr(setup, "prec")
