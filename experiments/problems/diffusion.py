"""The diffusion machinery the DDPM experiment runs on, for any number of steps T.

The graded `ddpm_solution.py` fixes T = 1000 at module level and keeps every intermediate
image of a sampling run on the host, as its contract says. Training runs with T = 500 or
1500 (Problem 2.3a), fast previews and the reconstruction study need more than that, so
this module holds the same process as a `Diffusion` object, built from a beta schedule
named in `SCHEDULES` ("linear", the default, is the graded `linear_beta_schedule`):

    q(x_t | x_0)      = N(sqrt(abar_t) x_0, (1 - abar_t) I)                     (Ho et al. 2020, eq. 4)
    p(x_{t-1} | x_t)  = N(1/sqrt(alpha_t) (x_t - beta_t/sqrt(1 - abar_t) eps), beta~_t I)   (eq. 11)
    DDIM step         = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z    (Song et al. 2021, eq. 12)

At T = 1000 the schedule, the loss and the ancestral step equal the graded functions, draw
for draw (tests/test_diffusion.py). Time indices are 0-based, as in the graded file: index
i is the paper's step t = i + 1. Samplers keep one batch of images only, draw their noise
from an explicit `torch.Generator`, and run each step as the run's `Execution` says (precision,
layout, compilation: experiments.harness.execution).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

import ddpm_solution
from experiments.harness.execution import Execution


def linear_schedule(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """The assignment's: beta_t evenly spaced from beta_start to beta_end (Ho et al. 2020), the graded function."""
    return ddpm_solution.linear_beta_schedule(beta_start, beta_end, timesteps)


def cosine_schedule(timesteps: int, beta_start: float, beta_end: float, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021, eq. 17): abar_t = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2,
    beta_t = 1 - abar_t / abar_{t-1} clipped at 0.999 (their eq. 18's bound). beta_start, beta_end unused."""
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]                                                    # (T + 1,), abar_0 = 1
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999).float()         # (T,)


# Beta schedules by name: (timesteps, beta_start, beta_end) -> betas (T,) float32 on the CPU.
SCHEDULES: dict[str, Callable[[int, float, float], torch.Tensor]] = {
    "linear": linear_schedule,
    "cosine": cosine_schedule,
}


class Diffusion:
    """The forward process with `timesteps` steps and the beta schedule `schedule` (a name in
    SCHEDULES); schedule tensors on `device`.

    Computed on the CPU in float32 with the graded file's (and the starter's) expressions, then moved,
    so that at T = 1000 with the "linear" schedule every tensor equals the graded one bit for bit."""

    def __init__(self, timesteps: int = 1000, beta_start: float = ddpm_solution.beta_start,
                 beta_end: float = ddpm_solution.beta_end, *, schedule: str = "linear",
                 device: torch.device | str = "cpu"):
        if timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {timesteps}")
        if not 0 < beta_start < beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown beta schedule {schedule!r}; choose one of {list(SCHEDULES)}")
        self.T, self.schedule = timesteps, schedule
        betas = SCHEDULES[schedule](timesteps, beta_start, beta_end)
        alphas = 1. - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = F.pad(abar[:-1], (1, 0), value=1.)
        self.betas = betas.to(device)
        self.alphas_cumprod = abar.to(device)
        self.alphas_cumprod_prev = abar_prev.to(device)
        self.sqrt_alphas_cumprod = torch.sqrt(abar).to(device)
        self.sqrt_one_minus_alphas_cumprod = torch.sqrt(1. - abar).to(device)
        self.sqrt_recip_alphas = (1. / torch.sqrt(alphas)).to(device)
        self.posterior_variance = (betas * (1. - abar_prev) / (1. - abar)).to(device)
        self.eps_coef = (betas / torch.sqrt(1. - abar)).to(device)  # beta_t / sqrt(1 - abar_t), eq. 11's

    @staticmethod
    def _at(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # gather, not a[t]: an index outside [0, T) raises instead of a negative one wrapping around.
        return a.to(t.device).gather(0, t.long()).view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)

    # ------------------------------------------------------------------ training
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return self._at(self.sqrt_alphas_cumprod, t) * x0 + self._at(self.sqrt_one_minus_alphas_cumprod, t) * noise

    def draw(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, eps) of one training batch from the global RNG: t uniform in [0, T) (B,), then eps ~ N(0, I)
        shaped like x0, in `t_sample` then `p_losses`'s order."""
        t = torch.randint(0, self.T, (x0.shape[0],), device=x0.device)
        return t, torch.randn_like(x0)

    def loss(self, model: nn.Module, x0: torch.Tensor, execution: Execution | None = None, *,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Smooth-L1 noise-prediction loss at steps t with noise eps (drawn by `draw` when not given), the
        network under the execution's autocast (none: fp32)."""
        if t is None or noise is None:
            t, noise = self.draw(x0)
        with execution.autocast() if execution else nullcontext():
            eps = model(self.q_sample(x0, t, noise), t)
        return F.smooth_l1_loss(eps.float(), noise)

    # ------------------------------------------------------------------ sampling
    def p_step(self, model: nn.Module, x: torch.Tensor, i: int, generator: torch.Generator | None = None,
               *, execution: Execution | None = None) -> torch.Tensor:
        """One ancestral step x_{i+1} -> x_i (paper: x_t -> x_{t-1}, t = i + 1); no noise at i = 0."""
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if i > 0 else None
        update = execution.compiled(ancestral_update, "ancestral sampler") if execution else ancestral_update
        return update(model, x, t, self.sqrt_recip_alphas[i], self.eps_coef[i], self.posterior_variance[i], z,
                      execution)

    @torch.inference_mode()
    def sample(self, model: nn.Module, x: torch.Tensor, *, start: int | None = None,
               generator: torch.Generator | None = None, execution: Execution | None = None,
               progress: bool = True) -> torch.Tensor:
        """Ancestral sampling from x at step index `start` (default T - 1, i.e. x = x_T) down to x_0, each step
        run as the execution says (its precision, layout and compilation; none: fp32 eager).

        Only the current batch is kept, on x's device: (B, C, H, W) in, (B, C, H, W) out."""
        start = self.T - 1 if start is None else start
        if not 0 <= start < self.T:
            raise ValueError(f"start must be a step index in [0, {self.T - 1}], got {start}")
        x = execution.layout(x) if execution else x
        for i in tqdm(range(start, -1, -1), desc=f"sampling {start + 1} steps", leave=False, disable=not progress):
            x = self.p_step(model, x, i, generator, execution=execution)
        return x.contiguous()

    def ddim_steps(self, n_steps: int, start: int | None = None) -> list[int]:
        """n_steps step indices evenly spaced from `start` (default T - 1) down to 0, descending."""
        start = self.T - 1 if start is None else start
        if not 1 <= n_steps <= start + 1:
            raise ValueError(f"n_steps must be in [1, {start + 1}], got {n_steps}")
        if n_steps == 1:
            return [start]
        return sorted({round(start * k / (n_steps - 1)) for k in range(n_steps)}, reverse=True)

    @torch.inference_mode()
    def ddim_sample(self, model: nn.Module, x: torch.Tensor, *, n_steps: int = 50, eta: float = 0.0,
                    start: int | None = None, generator: torch.Generator | None = None,
                    execution: Execution | None = None, progress: bool = True) -> torch.Tensor:
        """DDIM (Song et al. 2021) over a sub-sequence of `n_steps` indices; deterministic at eta = 0.

        With every step and eta = 1 it is the ancestral sampler: sigma_t^2 = beta~_t, same mean."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        steps = self.ddim_steps(n_steps, start)
        x = execution.layout(x) if execution else x
        update = execution.compiled(ddim_update, "DDIM sampler") if execution else ddim_update
        for k, i in enumerate(tqdm(steps, desc=f"DDIM {len(steps)} steps", leave=False, disable=not progress)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            abar = self.alphas_cumprod[i]
            abar_prev = self.alphas_cumprod[steps[k + 1]] if k + 1 < len(steps) else torch.ones_like(abar)
            z = (torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                 if eta > 0 and k + 1 < len(steps) else None)
            x = update(model, x, t, abar, abar_prev, eta, z, execution)
        return x.contiguous()

    @torch.inference_mode()
    def reconstruct(self, model: nn.Module, x0: torch.Tensor, levels: Iterable[int], *,
                    generator: torch.Generator | None = None,
                    execution: Execution | None = None) -> dict[int, torch.Tensor]:
        """Problem 2.2(c): noise x_0 to step t' (q_sample) and denoise back with the reverse process.

        levels: paper steps t' in [1, T]. Returns {t': x_0 reconstructed}, each shaped like x0."""
        out = {}
        for level in levels:
            if not 1 <= level <= self.T:
                raise ValueError(f"noise levels are steps in [1, {self.T}], got {level}")
            t = torch.full((x0.shape[0],), level - 1, device=x0.device, dtype=torch.long)
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            out[level] = self.sample(model, self.q_sample(x0, t, noise), start=level - 1,
                                     generator=generator, execution=execution, progress=False)
        return out


# The sampler steps, as functions of tensors only (the step's coefficients are 0-d tensors), so that one
# compiled graph serves every step i; the noise z is drawn outside, from the sampler's generator.

def predict_eps(model: nn.Module, x: torch.Tensor, t: torch.Tensor, execution: Execution | None) -> torch.Tensor:
    """The network's eps(x_t, t) (B, C, H, W) in float32, under the execution's autocast."""
    with execution.autocast() if execution else nullcontext():
        return model(x, t).float()


def ancestral_update(model: nn.Module, x: torch.Tensor, t: torch.Tensor, sqrt_recip_alpha: torch.Tensor,
                     eps_coef: torch.Tensor, posterior_variance: torch.Tensor, z: torch.Tensor | None,
                     execution: Execution | None) -> torch.Tensor:
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) + sqrt(beta~_t) z  (eq. 11); z None: the mean."""
    eps = predict_eps(model, x, t, execution)
    mean = sqrt_recip_alpha * (x - eps_coef * eps)
    return mean if z is None else mean + posterior_variance.sqrt() * z


def ddim_update(model: nn.Module, x: torch.Tensor, t: torch.Tensor, abar: torch.Tensor, abar_prev: torch.Tensor,
                eta: float, z: torch.Tensor | None, execution: Execution | None) -> torch.Tensor:
    """One DDIM step from abar_t to abar_s (Song et al. 2021, eq. 12); z None: no noise term."""
    eps = predict_eps(model, x, t, execution)
    x0_hat = (x - (1 - abar).sqrt() * eps) / abar.sqrt()                      # eq. 9 solved for x_0
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()  # eq. 16
    x = abar_prev.sqrt() * x0_hat + (1 - abar_prev - sigma ** 2).clamp_min(0).sqrt() * eps
    return x if z is None else x + sigma * z


def noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Starting noise x_T ~ N(0, I) of `shape`, drawn from `generator` on its device; pass the same
    generator to the sampler, so that its later draws continue the same stream."""
    return torch.randn(shape, generator=generator, device=generator.device)


class EMA:
    """Exponential moving average of `model`'s weights, with warm-up: the decay grows as
    (1 + n) / (10 + n) up to `decay`, so early averages are not dominated by the random init.

    `model` is the averaged copy (eval mode, no gradients): sample from it. A hand-written
    update rather than torch's AveragedModel, whose warm-up would need a host sync per step."""

    def __init__(self, source: nn.Module, decay: float = 0.9995, warmup: bool = True):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.model = copy.deepcopy(source).eval().requires_grad_(False)
        floats = lambda m: [v for v in m.state_dict().values() if v.is_floating_point()]  # noqa: E731
        self._ema, self._source = floats(self.model), floats(source)  # views of the live tensors

    def current_decay(self) -> float:
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def update(self) -> None:
        """theta_ema <- d * theta_ema + (1 - d) * theta, for every parameter and float buffer."""
        self.blend(self.next_weight())

    def next_weight(self) -> torch.Tensor:
        """1 - d of the next update as a 0-d float32 tensor on the model's device, and the update counted: a
        compiled step takes it as an input, so the warm-up's changing decay never recompiles it."""
        weight = torch.full((), 1 - self.current_decay(), device=self._ema[0].device)
        self.updates += 1
        return weight

    @torch.no_grad()
    def blend(self, weight: torch.Tensor) -> None:
        """theta_ema <- theta_ema + weight (theta - theta_ema) (torch.lerp), weight from next_weight()."""
        torch._foreach_lerp_(self._ema, self._source, [weight] * len(self._ema))

    def tensors(self) -> list[torch.Tensor]:
        """The averaged tensors and the live ones they follow (fixed addresses, which CUDA graphs can keep)."""
        return [*self._ema, *self._source]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]
