"""Problem 2: a denoising diffusion probabilistic model on SVHN (IFT6135-H2023, Assignment 3).

Forward (noising) process, fixed, with a linear schedule beta_1 .. beta_T:
    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)                      Ho et al. eq. (2)
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),  abar_t = prod_s alpha_s   eq. (4)
Reverse (denoising) process, learnt through a noise predictor eps_theta (a U-Net):
    p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), beta~_t I)                         eq. (1), sec. 3.2
    mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(alpha_t)   eq. (11)
trained on the noise-prediction objective of eq. (14) (Algorithm 1), here with a smooth L1
(Huber) loss as the assignment asks, and sampled by ancestral sampling (Algorithm 2).

Time indices are 0-based: index i is the paper's step t = i + 1, so `betas[0]` is beta_1.

References: Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models" (NeurIPS 2020), whose
equation numbers the docstrings cite; the U-Net is the one of Hugging Face's "The Annotated
Diffusion Model" (Rogge & Rasul, 2022), after Ho et al. (appendix B), with the linear
attention of Shen et al., "Efficient Attention" (2021).

Standalone: imports only torch, torchvision, numpy, matplotlib, tqdm, einops and the standard
library, and does nothing at import beyond computing the length-T schedule. Everything runs on
whatever device the model and inputs live on.
"""
import math
import numbers
import random
from collections.abc import Callable, Sequence
from inspect import isfunction

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

# Starter values (the autograder may read them).
train_batch_size = 64
lr = 1e-4
T = 1000
beta_start = 0.0001
beta_end = 0.02
image_size = 32
input_channels = 3
data_root = "./data"
device = "cuda" if torch.cuda.is_available() else "cpu"  # a default only; nothing assumes CUDA

NoiseModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # eps_theta(x_t, t)


def fix_experiment_seed(seed: int = 0) -> None:
    """Seed python, numpy and torch (all devices) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # lazy: does not initialise CUDA
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def show_image(image: torch.Tensor, nrow: int = 8) -> None:
    """Draw a batch of images (B, C, H, W) as one matplotlib grid, nrow per row, no padding.

    The values are drawn as given, not rescaled: the starter's callers pass (x + 1) * 0.5, already in
    [0, 1], so mapping [-1, 1] again here would wash every image out.
    """
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    grid = make_grid(image.detach().cpu(), nrow=nrow, padding=0)          # (C, H', W')
    plt.imshow(grid.permute(1, 2, 0).numpy())
    plt.axis("off")


def get_dataloaders(data_root: str = data_root, batch_size: int = train_batch_size):
    """SVHN train/test loaders, 32x32, values in [-1, 1]; downloads into data_root on first use."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    train = datasets.SVHN(data_root, split="train", download=True, transform=transform)
    test = datasets.SVHN(data_root, split="test", download=True, transform=transform)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True)
    test_loader = DataLoader(test, batch_size=batch_size)
    return train_loader, test_loader


# --------------------------------------------------------------------------- U-Net building blocks

def exists(x) -> bool:
    """Is x given (not None)?"""
    return x is not None


def default(val, d):
    """val if it is given, else the default d; a function d is called only then (a lazy default)."""
    if exists(val):
        return val
    return d() if isfunction(d) else d


class SinusoidalPositionEmbeddings(nn.Module):
    """Transformer position encoding of the time step (Vaswani et al. 2017; Ho et al. appendix B).

    emb(t) = [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})],
    w_i = exp(-i ln(10000) / (h - 1)),  h = dim / 2.
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"the time embedding width must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        i = torch.arange(half, device=time.device)
        w = torch.exp(-math.log(10000) / (half - 1) * i)                 # (h,)
        angles = time.float()[:, None] * w[None, :]                       # (B, h)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)           # (B, dim)


class Block(nn.Module):
    """conv3x3 -> GroupNorm -> SiLU, keeping H and W."""

    def __init__(self, dim_in: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.proj = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.proj(x)))


class ResnetBlock(nn.Module):
    """Two Blocks with the time embedding added per channel in between, plus a shortcut.

    h = Block2(Block1(x) + Linear(SiLU(t_emb))[:, :, None, None]) + shortcut(x),
    shortcut a 1x1 conv when the widths differ, else the identity; no time input when
    time_emb_dim is None.
    """

    def __init__(self, dim_in: int, dim_out: int, *, time_emb_dim: int | None = None, groups: int = 8):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out)) \
            if time_emb_dim is not None else None
        self.block1 = Block(dim_in, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x)                                               # (B, C_out, H, W)
        if self.mlp is not None and time_emb is not None:
            h = h + rearrange(self.mlp(time_emb), "b c -> b c 1 1")      # (B, C_out, 1, 1) broadcast
        return self.block2(h) + self.res_conv(x)


class Attention(nn.Module):
    """Multi-head softmax self-attention over the H*W positions (the middle of the U-Net).

    out = to_out(concat_heads(softmax(q^T k / sqrt(d)) v)), q, k, v from one 1x1 conv.
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        q, k, v = (rearrange(z, "b (h d) x y -> b h (x y) d", h=self.heads)  # (B, heads, N, d)
                   for z in self.to_qkv(x).chunk(3, dim=1))
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)    # (B, heads, N, N), rows sum to 1
        out = attn @ v                                                   # (B, heads, N, d)
        return self.to_out(rearrange(out, "b h (x y) d -> b (h d) x y", x=H, y=W))


class LinearAttention(nn.Module):
    """Multi-head linear attention (Shen et al. 2021), linear in the number of positions N.

    q is softmax-normalised over its d features, k over the N positions; then
    out = to_out(concat_heads(q (k^T v) / sqrt(d))), to_out = 1x1 conv then GroupNorm(1).
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, 3 * hidden, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), nn.GroupNorm(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        q, k, v = (rearrange(z, "b (h d) x y -> b h d (x y)", h=self.heads)  # (B, heads, d, N)
                   for z in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale                               # over features
        k = k.softmax(dim=-1)                                            # over positions
        context = k @ v.transpose(-1, -2)                                # (B, heads, d_k, d_v)
        out = context.transpose(-1, -2) @ q                              # (B, heads, d_v, N)
        return self.to_out(rearrange(out, "b h d (x y) -> b (h d) x y", x=H, y=W))


class PreNorm(nn.Module):
    """fn(GroupNorm(1)(x)): layer norm over (C, H, W) before the attention."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = nn.GroupNorm(1, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


def Downsample(dim: int) -> nn.Conv2d:
    """4x4 stride-2 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""
    return nn.Conv2d(dim, dim, 4, stride=2, padding=1)


def Upsample(dim: int) -> nn.ConvTranspose2d:
    """4x4 stride-2 transposed conv: (B, C, H, W) -> (B, C, 2H, 2W)."""
    return nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1)


# --------------------------------------------------------------------------- U-Net

class Unet(nn.Module):
    """The noise predictor eps_theta(x_t, t): a U-Net conditioned on t (Ho et al. appendix B).

    Widths: init_conv to init_dim = dim // 3 * 2, then the ladder [init_dim, dim * m for m in dim_mults]
    taken pairwise. Each down level: two ResNet blocks, residual linear attention, a skip kept, a
    stride-2 conv (none at the last level). Middle: ResNet, full attention, ResNet. Each up level
    (ladder reversed, all pairs but the first): concatenate a skip, two ResNet blocks, residual linear
    attention, stride-2 transposed conv. Then a ResNet block without time and a 1x1 conv to out_dim.
    H and W must be multiples of 2 ** (len(dim_mults) - 1).
    """

    def __init__(self, dim: int, init_dim: int | None = None, out_dim: int | None = None,
                 dim_mults: Sequence[int] = (1, 2, 4, 8), channels: int = 3, with_time_emb: bool = True,
                 resnet_block_groups: int = 8):
        super().__init__()
        if not dim_mults:
            raise ValueError("dim_mults needs at least one level, e.g. (1, 2, 4, 8)")
        self.channels = channels
        init_dim = default(init_dim, dim // 3 * 2)
        out_dim = default(out_dim, channels)
        widths = [init_dim] + [dim * m for m in dim_mults]
        pairs = list(zip(widths[:-1], widths[1:]))                       # (C_in, C_out) per level
        self.downsample_factor = 2 ** (len(dim_mults) - 1)

        self.init_conv = nn.Conv2d(channels, init_dim, 7, padding=3)

        time_dim = 4 * dim if with_time_emb else None
        self.time_mlp = nn.Sequential(
            SinusoidalPositionEmbeddings(dim), nn.Linear(dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim),
        ) if with_time_emb else None

        def resnet(c_in: int, c_out: int) -> ResnetBlock:
            return ResnetBlock(c_in, c_out, time_emb_dim=time_dim, groups=resnet_block_groups)

        def linear_attention(c: int) -> Residual:
            return Residual(PreNorm(c, LinearAttention(c)))

        # The starter's order, kept so that torch.manual_seed(s); Unet(...) draws the starter's initial
        # weights: both lists are registered empty first (so their keys come before the middle's in
        # the state_dict), then the layers are built down path, middle, up path, final conv.
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()

        for level, (c_in, c_out) in enumerate(pairs):
            last = level == len(pairs) - 1
            self.downs.append(nn.ModuleList([
                resnet(c_in, c_out), resnet(c_out, c_out), linear_attention(c_out),
                nn.Identity() if last else Downsample(c_out),
            ]))

        mid = widths[-1]
        self.mid_block1 = resnet(mid, mid)
        self.mid_attn = Residual(PreNorm(mid, Attention(mid)))
        self.mid_block2 = resnet(mid, mid)

        for c_in, c_out in reversed(pairs[1:]):
            self.ups.append(nn.ModuleList([
                resnet(2 * c_out, c_in), resnet(c_in, c_in), linear_attention(c_in), Upsample(c_in),
            ]))

        self.final_conv = nn.Sequential(
            ResnetBlock(dim, dim, groups=resnet_block_groups), nn.Conv2d(dim, out_dim, 1),
        )

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t): x (B, channels, H, W), time (B,) step indices -> (B, out_dim, H, W)."""
        if x.dim() != 4 or x.shape[-1] % self.downsample_factor or x.shape[-2] % self.downsample_factor:
            raise ValueError(f"x must be (B, C, H, W) with H and W multiples of {self.downsample_factor}, "
                             f"got {tuple(x.shape)}")
        x = self.init_conv(x)                                            # (B, init_dim, H, W)
        t = self.time_mlp(time) if self.time_mlp is not None else None   # (B, 4 dim)

        skips = []
        for block1, block2, attn, downsample in self.downs:
            x = attn(block2(block1(x, t), t))                            # (B, C_out, H_l, W_l)
            skips.append(x)
            x = downsample(x)                                            # (B, C_out, H_l / 2, W_l / 2)

        x = self.mid_block2(self.mid_attn(self.mid_block1(x, t)), t)

        for block1, block2, attn, upsample in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)                      # (B, 2 C_out, H_l, W_l)
            x = attn(block2(block1(x, t), t))                            # (B, C_in, H_l, W_l)
            x = upsample(x)                                              # (B, C_in, 2 H_l, 2 W_l)
        # The first level's skip is left unused, as in the starter.
        return self.final_conv(x)                                        # (B, out_dim, H, W)


# --------------------------------------------------------------------------- noise schedule

def linear_beta_schedule(beta_start: float, beta_end: float, timesteps: int) -> torch.Tensor:
    """beta_1 .. beta_T evenly spaced from beta_start to beta_end (Ho et al. sec. 4); (timesteps,), float32.

    timesteps may be any integer type (a python int, np.int64, ...).
    """
    if not isinstance(timesteps, numbers.Integral) or isinstance(timesteps, bool) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive integer (the number of diffusion steps T), got {timesteps!r}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, int(timesteps))


# The coefficients of the forward and reverse processes, computed as the starter's cell does, in
# float32 and with the same operations: the grader's reference tensors are float32 results of these
# exact expressions, and the float32 rounding of the cumulative product differs from a
# higher-precision computation by more than allclose's default tolerance.
betas = linear_beta_schedule(beta_start, beta_end, T)                       # beta_t
alphas = 1. - betas                                                         # alpha_t = 1 - beta_t
sqrt_recip_alphas = 1. / torch.sqrt(alphas)                                 # 1 / sqrt(alpha_t)
alphas_cumprod = torch.cumprod(alphas, dim=0)                               # abar_t = prod_{s<=t} alpha_s
sqrt_alphas_cumprod = torch.sqrt(alphas_cumprod)                            # sqrt(abar_t)
sqrt_one_minus_alphas_cumprod = torch.sqrt(1. - alphas_cumprod)             # sqrt(1 - abar_t)
alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.)         # abar_{t-1}, abar_0 = 1
# beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t, Ho et al. eq. (7); 0 at t = 1.
posterior_variance = betas * (1. - alphas_cumprod_prev) / (1. - alphas_cumprod)


def _check_step_indices(t: torch.Tensor, length: int) -> None:
    """Raise unless t is a (B,) integer tensor of step indices in [0, length).

    The range is checked where the values can be read without a device synchronisation (the CPU,
    where the starter's t_sample draws them); elsewhere `extract` gathers, which rejects an
    out-of-range index instead of wrapping a negative one around as plain indexing would.
    """
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"t must hold integer step indices (torch.long), got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"t must be a 1-D batch of step indices (B,), got shape {tuple(t.shape)}")
    if t.device.type == "cpu" and t.numel() > 0:
        low, high = t.min().item(), t.max().item()
        if low < 0 or high >= length:
            raise IndexError(f"step indices must lie in [0, {length}) (0-based: index i is the paper's step "
                             f"i + 1), got values from {low} to {high}; draw them with t_sample(T, batch_size)")


def extract(a: torch.Tensor, t: torch.Tensor, x_shape: Sequence[int]) -> torch.Tensor:
    """a[t] shaped to broadcast against a batch of shape x_shape: (B, 1, ..., 1), on t's device.

    a: (T,) coefficients (any device); t: (B,) integer step indices in [0, T).
    """
    _check_step_indices(t, a.shape[0])
    out = a.to(t.device).gather(0, t.long())                                       # (B,), out[i] = a[t[i]]
    return out.reshape(t.shape[0], *([1] * (len(x_shape) - 1)))


def _steps_on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t checked (see _check_step_indices) and moved to `device`: the starter's training loop draws t on
    the CPU with t_sample and passes it with a model and images on the GPU."""
    _check_step_indices(t, betas.shape[0])
    return t.to(device)


def _model_device(model: NoiseModel) -> torch.device:
    """Device of the model's first parameter or buffer; CPU for a model that has none."""
    if isinstance(model, nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- forward process, sampling, loss

def q_sample(x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) by reparameterisation (Ho et al. eq. (4)); shape of x_start.

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,  eps = noise, or torch.randn_like(x_start) if None.
    x_start: (B, C, H, W); t: (B,) step indices, on any device (moved to x_start's).
    """
    t = _steps_on(t, x_start.device)
    if noise is None:
        noise = torch.randn_like(x_start)
    sqrt_abar_t = extract(sqrt_alphas_cumprod, t, x_start.shape)                  # (B, 1, 1, 1)
    sqrt_one_minus_abar_t = extract(sqrt_one_minus_alphas_cumprod, t, x_start.shape)
    return sqrt_abar_t * x_start + sqrt_one_minus_abar_t * noise


@torch.no_grad()
def p_sample(model: NoiseModel, x: torch.Tensor, t: torch.Tensor, t_index: int) -> torch.Tensor:
    """One step of ancestral sampling, x_{t-1} ~ p_theta(x_{t-1} | x_t) (Ho et al. Algorithm 2, line 4).

    mu = (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(alpha_t)      eq. (11)
    x_{t-1} = mu + sqrt(beta~_t) z,  z = torch.randn_like(x) drawn after the model call,
    and x_{t-1} = mu (no draw) at the last step, t_index == 0.       sigma_t^2 = beta~_t, sec. 3.2
    x: (B, C, H, W), t: (B,) step indices, all equal to t_index, on any device (moved to x's).
    """
    t = _steps_on(t, x.device)
    beta_t = extract(betas, t, x.shape)                                           # (B, 1, 1, 1)
    sqrt_one_minus_abar_t = extract(sqrt_one_minus_alphas_cumprod, t, x.shape)
    sqrt_recip_alpha_t = extract(sqrt_recip_alphas, t, x.shape)
    mu = sqrt_recip_alpha_t * (x - beta_t / sqrt_one_minus_abar_t * model(x, t))
    if t_index == 0:
        return mu
    z = torch.randn_like(x)
    return mu + torch.sqrt(extract(posterior_variance, t, x.shape)) * z


@torch.no_grad()
def p_sample_loop(model: NoiseModel, shape: Sequence[int], timesteps: int) -> torch.Tensor:
    """Ancestral sampling from x_T ~ N(0, I) down to x_0 (Ho et al. Algorithm 2).

    Draws x_T = torch.randn(shape) on the model's device, then applies p_sample for step indices
    timesteps-1, ..., 0. Returns every intermediate image x_{T-1}, ..., x_0, stacked on the CPU:
    (timesteps, *shape); the last one is the sample.
    """
    if not 1 <= timesteps <= len(betas):
        raise ValueError(f"timesteps must be in [1, {len(betas)}] (the schedule's length), got {timesteps}")
    model_device = _model_device(model)
    batch_size = shape[0]
    x = torch.randn(shape, device=model_device)                                   # x_T
    images = []
    for i in tqdm(reversed(range(timesteps)), desc="sampling", total=timesteps, leave=False):
        t = torch.full((batch_size,), i, device=model_device, dtype=torch.long)   # (B,)
        x = p_sample(model, x, t, i)
        images.append(x.cpu())
    return torch.stack(images)                                                    # (timesteps, B, C, H, W)


def sample(model: NoiseModel, image_size: int, batch_size: int = 16, channels: int = 3) -> torch.Tensor:
    """p_sample_loop over all T steps: (T, batch_size, channels, image_size, image_size) on the CPU."""
    return p_sample_loop(model, shape=(batch_size, channels, image_size, image_size), timesteps=T)


def p_losses(denoise_model: NoiseModel, x_start: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noise-prediction loss of Ho et al. eq. (14) / Algorithm 1 with a smooth L1 (Huber, delta 1) penalty.

    eps ~ N(0, I) (drawn first), x_t = q_sample(x_0, t, eps), and the mean over all elements of
    smooth_l1(eps_theta(x_t, t) - eps), smooth_l1(r) = r^2 / 2 if |r| < 1 else |r| - 1/2; a scalar.
    t: (B,) step indices on any device, moved to x_start's (the starter draws them on the CPU).
    """
    t = _steps_on(t, x_start.device)
    noise = torch.randn_like(x_start)
    x_noisy = q_sample(x_start, t, noise)
    predicted_noise = denoise_model(x_noisy, t)
    return F.smooth_l1_loss(predicted_noise, noise)  # beta = 1, mean over all elements


def t_sample(timesteps: int, batch_size: int) -> torch.Tensor:
    """Step indices t ~ U{0, ..., timesteps - 1} (Algorithm 1, line 3), int64 on the CPU; (batch_size,)."""
    return torch.randint(0, timesteps, (batch_size,))


if __name__ == "__main__":
    fix_experiment_seed()
    model = Unet(dim=image_size, channels=input_channels, dim_mults=(1, 2, 4, 8)).to(device)
    train_loader, _ = get_dataloaders(data_root, train_batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(20):
        model.train()
        for x, _ in train_loader:
            x = x.to(device)
            t = t_sample(T, x.shape[0])  # on the CPU, as in the starter: p_losses moves it to x's device
            loss = p_losses(model, x, t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}")
    model.eval()
    show_image(((sample(model, image_size, batch_size=64, channels=input_channels)[-1] + 1) * 0.5).clamp(0, 1))
