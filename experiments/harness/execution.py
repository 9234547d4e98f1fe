"""How every step of a run executes, decided once per run: the device, the numeric precision, the
memory layout and whether steps run compiled. Training steps, samplers and evaluations take the
run's `Execution`; nothing else decides any of these. This is the one statement of the policy:

precision   `--precision bf16|fp16|fp32` forces one; a resumed run keeps its checkpoint's. `auto` (the
            default) measures on CUDA: a few training steps of the run's own model, batch and step
            function (eager, warm-up excluded, on fresh copies under a forked RNG, so the run itself is
            untouched) in each precision the GPU supports, and keeps the fastest; a candidate must beat
            fp32 by more than TIE_MARGIN, else fp32 wins the tie. Candidates:
                fp32   always; with TF32 matmuls and convolutions on compute capability >= 8.0
                       (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
                bf16   compute capability >= 8.0 (A100, L4, H100, ...)
                fp16   compute capability >= 7.0, with a GradScaler (T4, V100, ...)
            `torch.cuda.is_bf16_supported()` is not the test: it answers True on a T4 (sm_75), where bf16
            is emulated, without tensor cores or cuDNN convolution engines. On CPU and MPS, auto is fp32,
            not timed (CPU autocast is emulated and slower). fp16 gradients are scaled (Micikevicius et
            al., "Mixed Precision Training", ICLR 2018); bf16 keeps fp32's exponent range, no scaler.
            Measured, not assumed: at batch 64 these models are bound by per-kernel overhead, and the
            casts autocast adds can make half precision slower than fp32 (issue "Fast on the GPU").
layout      channels_last on CUDA (cuDNN's NHWC convolution kernels), the default layout elsewhere.
compile     `--compile auto` (the default): on CUDA, the DDPM's and the VAE's training steps (forward,
            loss, backward, optimiser step, EMA update) and the DDPM samplers run under
            torch.compile(mode="reduce-overhead"), i.e. as CUDA graphs, which remove the per-kernel
            launch overhead; on CPU they run eager, where compiling costs more than it saves on runs of
            this size. `none` is eager; `default` and `reduce-overhead` force that torch.compile mode
            (`default` runs on CPU: the tests use it). SimSiam's step is always eager: its batch of 1024
            is not overhead bound, and its learning rate changes every step, which a compiled optimiser
            step would recompile for. A compile that fails on the first call falls back to eager, with one
            line saying why. Compiled results equal eager ones up to floating-point reassociation.
            Under torchrun (several processes, experiments.harness.distributed) steps run eager: the step is
            not compiled around DistributedDataParallel's gradient hooks.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from experiments.harness.precision import NAMES, Precision

PRECISIONS = ("auto", *NAMES)
COMPILE_MODES = ("auto", "none", "default", "reduce-overhead")
TIE_MARGIN = 0.05       # a half precision is chosen only when its step is more than 5% faster than fp32's
TIMED_STEPS = 5         # steps timed per candidate ...
WARMUP_STEPS = 2        # ... after this many untimed ones (cuDNN autotuning, allocator warm-up)


def check_choices(precision: str, compile: str) -> None:
    """ValueError unless `precision` is in PRECISIONS and `compile` in COMPILE_MODES."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if compile not in COMPILE_MODES:
        raise ValueError(f"--compile must be one of {COMPILE_MODES}, got {compile!r}")


def capability(device: torch.device) -> tuple[int, int]:
    """The CUDA compute capability of `device`; (0, 0) off CUDA."""
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else (0, 0)


def candidates(device: torch.device) -> list[str]:
    """The precisions `auto` times on `device`, fp32 first (see the module docstring)."""
    major, _ = capability(device)
    return ["fp32"] + (["bf16"] if major >= 8 else []) + (["fp16"] if major >= 7 else [])


def uses_tf32(device: torch.device) -> bool:
    """Whether fp32 matmuls and convolutions run in TF32 on `device` (compute capability >= 8.0)."""
    return capability(device)[0] >= 8


def time_steps(step: Callable[[], Any], clock: Callable[[], float], steps: int = TIMED_STEPS,
               warmup: int = WARMUP_STEPS) -> float:
    """Seconds per call of `step`: `warmup` untimed calls, then the mean of `steps` calls between two clock()
    reads (clock synchronises the device, so the difference is the work itself)."""
    for _ in range(warmup):
        step()
    t0 = clock()
    for _ in range(steps):
        step()
    return (clock() - t0) / steps


def fastest(seconds: dict[str, float], margin: float = TIE_MARGIN) -> str:
    """The precision with the shortest step, unless it beats fp32 by `margin` (a fraction) or less: then fp32."""
    best = min(seconds, key=seconds.get)
    return best if seconds[best] < seconds["fp32"] * (1 - margin) else "fp32"


def choose_precision(device: torch.device, requested: str, *, kept: str | None = None,
                     trial: Callable[[Execution], Callable[[], Any]] | None = None,
                     clock: Callable[[], float] | None = None) -> tuple[str, dict]:
    """The run's precision and its record for provenance.json: {"precision_choice": a sentence,
    "precision_step_seconds": {candidate: seconds per step} (empty when nothing was timed)}.

    requested: the config's precision; kept: the checkpoint's, for a resumed run; trial(execution) builds
    a fresh copy of the run's model, optimiser and a batch and returns one eager training step on them as
    that execution runs it (one per candidate precision); clock: seconds after the device's work (default:
    perf_counter after a synchronise), injectable for tests. The trials run under a forked RNG: the run's
    own draws are not moved."""
    check_choices(requested, "auto")
    if requested != "auto":
        return requested, {"precision_choice": f"{requested}, forced by --precision", "precision_step_seconds": {}}
    if kept is not None:
        return kept, {"precision_choice": f"{kept}, kept from the checkpoint", "precision_step_seconds": {}}
    names = candidates(device)
    if len(names) == 1 or trial is None:
        return "fp32", {"precision_choice": f"fp32, not timed ({device.type})", "precision_step_seconds": {}}
    clock = clock or device_clock(device)
    seconds = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name in names:
            try:
                seconds[name] = time_steps(trial(Execution(device, name, "none")), clock)
            except torch.OutOfMemoryError:  # a candidate that does not fit is not a choice
                seconds[name] = math.inf
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the trial's copies are gone: give their memory back to the run
    choice = fastest(seconds)
    listing = ", ".join(f"{n} {1e3 * s:.2f} ms" for n, s in seconds.items())
    return choice, {"precision_choice": f"{choice}, the fastest training step of {listing} (ties within "
                                        f"{TIE_MARGIN:.0%} go to fp32)",
                    "precision_step_seconds": seconds}


def device_clock(device: torch.device) -> Callable[[], float]:
    """time.perf_counter() once `device`'s queued work has finished."""
    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()
    return clock


def compile_mode(requested: str, device: torch.device, compiles: bool) -> str:
    """The torch.compile mode a run uses ("none": eager): for a problem whose steps compile, `requested`
    unless it is "auto", which is "reduce-overhead" (CUDA graphs) on CUDA and eager elsewhere; else "none"."""
    check_choices("auto", requested)
    if not compiles:
        return "none"
    if requested != "auto":
        return requested
    return "reduce-overhead" if device.type == "cuda" else "none"


class Compiled:
    """`fn` under torch.compile(mode=mode), called like fn.

    Under CUDA graphs (reduce-overhead) each call begins a new step (torch.compiler.cudagraph_mark_step_begin)
    and its tensor outputs are cloned, so a result kept past the next call is never overwritten by it (the
    error "accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run"). When the
    first call fails to compile, the RNG state is put back and fn runs eager from then on, with one line
    saying why. Callers pass tensors of fixed shapes (drop_last batches) so that nothing recompiles."""

    def __init__(self, fn: Callable, mode: str, what: str):
        self.fn, self.mode, self.what = fn, mode, what
        # Each run compiles its step anew (its own model's guards); several runs in one process (a notebook,
        # `python -m experiments all`) would pass dynamo's default limit of 8 and silently run eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.compiled = None if mode == "none" else torch.compile(fn, mode=mode)
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        if self.compiled is None:
            return self.fn(*args)
        if self.calls == 0:
            rng = torch.random.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
            try:
                return self._call(*args)
            except Exception as error:  # a compiler error can be of any type
                reason = (str(error).strip().splitlines() or [""])[0][:160]
                print(f"{self.what}: torch.compile(mode={self.mode!r}) failed, running eager "
                      f"({type(error).__name__}: {reason})", file=sys.stderr)
                self.compiled = None
                torch.random.set_rng_state(rng[0])
                if rng[1] is not None:
                    torch.cuda.set_rng_state_all(rng[1])
                return self.fn(*args)
        return self._call(*args)

    def _call(self, *args: Any) -> Any:
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*args)
        self.calls += 1
        if self.mode == "reduce-overhead":
            out = torch.utils._pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, out)
        return out


class Execution:
    """How a run's steps execute (the module docstring states the policy): on `device`, in `precision`
    (a Precision: autocast and gradient scaler), in channels_last on CUDA, compiled per `compile`.

    record: what provenance.json says of the choice (experiments.harness.runs.environment adds it)."""

    def __init__(self, device: torch.device | str, precision: str = "fp32", compile: str = "none",
                 record: dict | None = None):
        if precision not in PRECISIONS[1:]:
            raise ValueError(f"an Execution needs a decided precision, one of {PRECISIONS[1:]}, got {precision!r} "
                             "(experiments.harness.execution.choose_precision decides 'auto')")
        if compile not in COMPILE_MODES[1:]:
            raise ValueError(f"an Execution needs a decided compile mode, one of {COMPILE_MODES[1:]}, got "
                             f"{compile!r} (experiments.harness.execution.compile_mode decides 'auto')")
        self.device = torch.device(device)
        self.precision = Precision(self.device, precision)
        self.compile = compile
        self.channels_last = self.device.type == "cuda"
        self.tf32 = uses_tf32(self.device)
        self.record = {"precision": precision, "compile": compile, "channels_last": self.channels_last,
                       "tf32": self.tf32, **(record or {})}
        self._compiled: dict[Any, Compiled] = {}
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
            torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest convolution kernels, found once

    @property
    def name(self) -> str:
        """The precision's name: fp32, bf16 or fp16."""
        return self.precision.name

    def describe(self) -> str:
        """One line for the run's output."""
        tf32 = " with TF32 matmuls and convolutions" if self.tf32 and self.name == "fp32" else ""
        layout = ", channels_last" if self.channels_last else ""
        how = f"torch.compile(mode={self.compile!r})" if self.compile != "none" else \
            "eager" if self.device.type == "cuda" else "eager (--compile auto compiles on CUDA only)"
        return (f"execution: {self.device}, {self.record.get('precision_choice', self.name)}{tf32}{layout}; "
                f"steps {how} (experiments.harness.execution)")

    # precision ------------------------------------------------------------------
    def autocast(self):
        """The autocast context of a forward pass in this precision (a no-op for fp32)."""
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.backward(loss)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step() on unscaled gradients; with fp16, skipped when they hold inf/NaN."""
        self.precision.step(optimizer)

    # layout ------------------------------------------------------------------------
    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` moved to the device, in its memory layout."""
        return model.to(self.device, memory_format=torch.channels_last if self.channels_last else
                        torch.preserve_format)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch (B, C, H, W) in the run's memory layout (channels_last on CUDA), else as it is."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    # compilation -----------------------------------------------------------------
    def compiled(self, fn: Callable, what: str) -> Callable:
        """`fn` as this run calls it: compiled per the run's mode (Compiled), or fn itself when eager. Compiled
        once per fn: the same function object gives the same wrapper, so samplers compile once per run."""
        if self.compile == "none":
            return fn
        if fn not in self._compiled:
            self._compiled[fn] = Compiled(fn, self.compile, what)
        return self._compiled[fn]

    # checkpoint state (the gradient scaler's) ------------------------------------
    def state_dict(self) -> dict:
        return self.precision.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.precision.load_state_dict(state)


class Timings:
    """Seconds of named passes on `device`: `with timings("bound"): ...` times the block (the device's queued work
    included), prints "<what>: bound took 12.3 s" and records it in `seconds` (a summary's evaluation_seconds)."""

    def __init__(self, device: torch.device, what: str = "final evaluation",
                 clock: Callable[[], float] | None = None):
        self.what, self.clock = what, clock or device_clock(torch.device(device))
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = self.clock()
        yield
        self.seconds[name] = self.clock() - t0
        print(f"{self.what}: {name} took {self.seconds[name]:.1f} s", file=sys.stderr)


def eager(device: torch.device | str = "cpu", precision: str = "fp32") -> Execution:
    """An eager Execution in `precision` on `device`: for evaluations and tests outside a run."""
    return Execution(device, precision, "none")
