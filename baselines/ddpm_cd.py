"""DDPM-CD (Bandara, Nair & Patel, "DDPM-CD: Denoising Diffusion Probabilistic Models as
Feature Extractors for Change Detection", WACV 2025 / arXiv:2206.11892), re-implemented from
wgcban/ddpm-cd (commit 4970792: ``model/sr3_modules/unet.py``, ``model/sr3_modules/diffusion.py``,
``model/cd_modules/cd_head_v2.py``, ``model/cd_modules/se.py``, ``config/whu.json``,
``config/ddpm_train.json``).

Two networks (437,453,193 parameters = paper 437.5M):

* ``SR3UNet`` (391,048,067): the SR3 denoising UNet ``UNet(in_channel=3, out_channel=3,
  inner_channel=128, norm_groups=32, channel_mults=[1,2,4,8,8], attn_res=[16], res_blocks=2,
  dropout=0.2, image_size=256)``. ResnetBlock = GN-Swish-Conv3×3, + noise embedding (additive
  FeatureWiseAffine), GN-Swish-Dropout-Conv3×3, + 1×1 residual conv where the width changes;
  1-head self-attention (GN, qkv 1×1 without bias) at the 16×16 level and in the first of the
  two mid blocks; Conv3×3 s2 down, nearest ×2 + Conv3×3 up; res_blocks+1 up blocks per level,
  each concatenating a skip. It is conditioned on the *continuous* noise level √ᾱ through the
  WaveGrad sinusoidal encoding → Linear(128→512)-Swish-Linear(512→128).
* ``CDHeadV2`` (46,405,126): ``cd_head_v2(feat_scales=[2,5,8,11,14], out_channels=2,
  inner_channel=128, channel_multiplier=[1,2,4,8,8], img_size=256, time_steps=[50,100,400])``.

``DDPMCD`` = the frozen SR3UNet + the head. For each date and each t in ``time_steps`` it draws
√ᾱ uniformly between ``sqrt_alphas_cumprod_prev[t-1]`` and ``[t]`` of the CD schedule (linear,
T = 2000, β 1e-6 → 1e-2), noises the image with fresh Gaussian noise (q_sample) and runs the
UNet **once** keeping the 15 decoder ResBlock outputs (``feat_type: "dec"``, listed in reverse
order, so index 14/11/8/5/2 is the *first* up block of the 16²/32²/64²/128²/256² level). That
is 6 UNet passes per image pair, no iterative denoising. The features are stochastic: new noise
is drawn on every call (pass ``seed`` or a ``generator`` for reproducible features).

**The official head's quirk, kept:** the coarse-to-fine loop ends with the Block of scale 2
(256², 128 ch), but the classifier reads ``x`` (the upsampled output of the last
AttentionBlock), not that Block's ``diff``; so the last Block (196,864 parameters at paper size)
is computed and its output discarded. Its parameters never get a gradient (the official code
hands them to Adam, which skips them); here they are registered and counted, and their
``requires_grad`` is False so that "every trainable parameter gets a gradient" holds.

Pretraining objective (``GaussianDiffusion.p_losses`` with ``config/ddpm_train.json``): one
t ~ U{1..T} per batch, per-sample √ᾱ ~ U(sqrt_alphas_cumprod_prev[t-1], [t]),
x_noisy = √ᾱ·x0 + √(1-ᾱ)·ε, loss = **L2** between ε and the UNet output (MSELoss(sum) divided
by b·c·h·w, i.e. the mean). The pretraining schedule at 4970792 (and since 2022-04-26) is
**cosine** (T = 2000, s = 8e-3; linear_start/end ignored), while the CD configs use the linear
schedule above; the UNet sees a continuous noise level, so the two need not agree.
``pretraining_loss`` defaults to the cosine pretraining schedule. Official pretraining recipe:
orthogonal init (``orthogonal_init_``), AdamW lr 1e-5 (torch default weight decay 0.01),
batch 8, 256² crops + horizontal flip, images in [-1, 1], unconditional; the released
checkpoint ``I190000_E97_gen.pth`` is iteration 190k (epoch 97) on Million-AID.

Official CD training recipe (``config/whu.json``, ``model/cd_model.py``): the UNet frozen
(``netG.eval()`` + ``torch.no_grad()``), only the head optimised; head orthogonal init;
Adam lr 1e-4, linear lr decay; unweighted ``nn.CrossEntropyLoss``; batch 8; 80 epochs (WHU),
120 (LEVIR); images ``ToTensor`` scaled to [-1, 1], no augmentation, 256².

Official checkpoints (README §7, GitHub release ``initial_release``):

* ``I190000_E97_gen.pth``: ``GaussianDiffusion.state_dict()``, i.e. the UNet under the prefix
  ``denoise_fn.`` plus the diffusion schedule buffers (``betas``, ``alphas_cumprod``, ...,
  ``posterior_mean_coef2``). ``SR3UNet`` keeps the official module names, so ``load_unet``
  only drops the buffers and strips the prefix (``unet_state_dict_from``); the suite's own
  checkpoints (keys under ``unet.`` / ``model.unet.``, Lightning ``state_dict``) map the same way.
* ``best_cd_model_gen.pth`` (per dataset): ``cd_head_v2.state_dict()``, loadable with
  ``DDPMCD.load_head`` as is.

Known deviations from the official code:

* self-attention uses ``F.scaled_dot_product_attention`` (same maths: scale 1/√C for one head);
* the head runs each Block on both dates in one batched call (same maths as two calls);
* noise levels and noise come from torch's RNG (optionally a ``torch.Generator``), not NumPy's;
* ``DDPMCD`` runs the 6 UNet passes (2 dates × 3 t, each with its own noise level and noise,
  drawn in the official order) as one batch of 6·B images by default (``fuse_passes=False``:
  one by one, less peak memory); the maths is per-sample, so the features are the same up to
  floating-point reordering, and the FLOPs are those of 6 passes (≈1434 GFLOP = 717 GMAC per
  pass at 256², 8869 GFLOP for a pair with the head, measured with FlopCounterMode);
* ``DDPMCD`` keeps only the 5 decoder features the head reads (the official code keeps all 15
  encoder and 15 decoder maps of every pass); the head reads the same tensors;
* the frozen UNet lives inside the model (official: separate ``netG``/``netCD``), so
  ``state_dict()`` holds both and ``parameters()`` counts both; ``train()`` keeps the UNet in
  eval mode (dropout off, as ``get_feats`` does);
* the noise level is passed as [B] instead of [B, 1] (same encoding);
* the UNet is randomly initialised until ``load_unet`` is called: the paper-size model is only
  meaningful with pretrained weights (the suite's AID pretraining or ``I190000_E97_gen.pth``);
* the demo size (``DEMO_UNET``: inner_channel 8, channel_mults [1,2,2,4,4], norm_groups 4,
  attention at 8², 2 res blocks, image_size 32; 465,821 parameters) is a 32² miniature of the
  same code path (5 levels, 15 decoder features, the same feature indices and time steps), not
  an official configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from noise2map.keyed_random import keyed_normal, keyed_uniform, substream_keys

from baselines import ModelSpec

# --------------------------------------------------------------------------- configurations

#: ``config/whu.json`` ``model.unet`` + ``diffusion.image_size``.
PAPER_UNET = {"in_channel": 3, "out_channel": 3, "inner_channel": 128, "norm_groups": 32,
              "channel_mults": (1, 2, 4, 8, 8), "attn_res": (16,), "res_blocks": 2, "dropout": 0.2,
              "image_size": 256}
#: A 32² miniature of the same code path: 5 levels (32² … 2²), 15 decoder features.
DEMO_UNET = {"in_channel": 3, "out_channel": 3, "inner_channel": 8, "norm_groups": 4,
             "channel_mults": (1, 2, 2, 4, 4), "attn_res": (8,), "res_blocks": 2, "dropout": 0.2,
             "image_size": 32}
#: ``config/whu.json`` ``model_cd``.
FEAT_SCALES = (2, 5, 8, 11, 14)
TIME_STEPS = (50, 100, 400)
#: ``config/whu.json`` ``beta_schedule`` (train/val/test identical): the noise levels of the features.
CD_SCHEDULE = {"schedule": "linear", "n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2}
#: ``config/ddpm_train.json`` ``beta_schedule.train`` (cosine ignores linear_start/end).
PRETRAIN_SCHEDULE = {"schedule": "cosine", "n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2}

#: The official CD fine-tuning recipe (config/whu.json, model/cd_model.py).
TRAINING_RECIPE = {
    "optimizer": "adam", "lr": 1e-4, "lr_policy": "linear decay", "loss": "cross-entropy (unweighted)",
    "batch_size": 8, "epochs": {"WHU-CD": 80, "LEVIR-CD": 120}, "input": "[-1, 1], 256x256, no augmentation",
    "trainable": "head only (UNet frozen: eval + no_grad)", "head_init": "orthogonal",
}
#: The official DDPM pretraining recipe (config/ddpm_train.json, model/model.py).
PRETRAINING_RECIPE = {
    "objective": "epsilon prediction, L2 (mean)", "schedule": PRETRAIN_SCHEDULE, "optimizer": "adamw",
    "lr": 1e-5, "batch_size": 8, "init": "orthogonal", "input": "[-1, 1], 256x256 crops, horizontal flip",
    "released_checkpoint": "I190000_E97_gen.pth (190k iterations, Million-AID)",
}

# The GaussianDiffusion buffers stored beside ``denoise_fn.*`` in the official checkpoints.
_DIFFUSION_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
})


# --------------------------------------------------------------------------- noise schedule


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete DDPM schedule (float64 on the CPU), as ``GaussianDiffusion.set_new_noise_schedule``.

    ``sqrt_alphas_cumprod_prev`` follows the official NumPy attribute of that name: length T + 1,
    ``[1, √ᾱ_1, …, √ᾱ_T]`` (so index t is √ᾱ after t steps), not the length-T buffer.
    """

    betas: torch.Tensor

    @property
    def num_timesteps(self) -> int:
        return self.betas.numel()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.from_numpy(np.cumprod(1.0 - self.betas.numpy(), axis=0))

    @property
    def sqrt_alphas_cumprod(self) -> torch.Tensor:
        return self.alphas_cumprod.sqrt()

    @property
    def sqrt_alphas_cumprod_prev(self) -> torch.Tensor:
        return torch.from_numpy(np.sqrt(np.append(1.0, self.alphas_cumprod.numpy())))

    def continuous_noise_level(self, t: int, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """√ᾱ ~ U(sqrt_alphas_cumprod_prev[t-1], sqrt_alphas_cumprod_prev[t]) per sample, float32 [batch] (CPU).

        The uniform draw uses ``generator`` (on its device) or torch's global CPU RNG."""
        if not 1 <= t <= self.num_timesteps:
            raise ValueError(f"t must be in 1..{self.num_timesteps}, got {t}")
        prev = self.sqrt_alphas_cumprod_prev
        lo, hi = prev[t - 1], prev[t]
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device).cpu()
        return (lo + (hi - lo) * u).float()


@lru_cache(maxsize=8)
def make_schedule(schedule: str = "linear", n_timestep: int = 2000, linear_start: float = 1e-6,
                  linear_end: float = 1e-2, cosine_s: float = 8e-3) -> NoiseSchedule:
    """``make_beta_schedule`` of the official diffusion module (linear, quad, const, cosine)."""
    if schedule == "linear":
        betas = np.linspace(linear_start, linear_end, n_timestep, dtype=np.float64)
    elif schedule == "quad":
        betas = np.linspace(linear_start ** 0.5, linear_end ** 0.5, n_timestep, dtype=np.float64) ** 2
    elif schedule == "const":
        betas = linear_end * np.ones(n_timestep, dtype=np.float64)
    elif schedule == "cosine":
        steps = torch.arange(n_timestep + 1, dtype=torch.float64, device="cpu") / n_timestep + cosine_s
        alphas = torch.cos(steps / (1 + cosine_s) * math.pi / 2).pow(2)
        alphas = alphas / alphas[0]
        betas = (1 - alphas[1:] / alphas[:-1]).clamp(max=0.999).numpy()
    else:
        raise ValueError(f"unknown beta schedule {schedule!r}")
    return NoiseSchedule(torch.from_numpy(np.asarray(betas, dtype=np.float64)))


def _schedule(spec: NoiseSchedule | Mapping | None, default: Mapping) -> NoiseSchedule:
    if isinstance(spec, NoiseSchedule):
        return spec
    return make_schedule(**{**default, **(spec or {})})


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def q_sample(x0: torch.Tensor, noise_level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """√ᾱ·x0 + √(1-ᾱ)·ε with a per-sample continuous √ᾱ [B]."""
    level = noise_level.to(x0).view(-1, 1, 1, 1)
    return level * x0 + (1 - level ** 2).sqrt() * noise


def orthogonal_init_(module: nn.Module) -> nn.Module:
    """``init_weights(net, init_type="orthogonal")``: orthogonal Conv/Linear weights (gain 1), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain=1)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


# --------------------------------------------------------------------------- SR3 UNet
# Module and parameter names follow model/sr3_modules/unet.py so that official checkpoints load.


class PositionalEncoding(nn.Module):
    """WaveGrad encoding of a continuous noise level: [sin(l·10⁴^(-k/n)), cos(…)], k < n = dim/2."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, noise_level: torch.Tensor) -> torch.Tensor:
        count = self.dim // 2
        step = torch.arange(count, dtype=noise_level.dtype, device=noise_level.device) / count
        encoding = noise_level.unsqueeze(1) * torch.exp(-math.log(1e4) * step.unsqueeze(0))
        return torch.cat([torch.sin(encoding), torch.cos(encoding)], dim=-1)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class FeatureWiseAffine(nn.Module):
    """Adds Linear(noise embedding) per channel (``use_affine_level=False``, the SR3 default)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(in_channels, out_channels))

    def forward(self, x, noise_embed):
        return x + self.noise_func(noise_embed).view(x.shape[0], -1, 1, 1)


class Block(nn.Module):
    """GroupNorm → Swish → (Dropout) → Conv3×3, a ``Sequential`` under the name ``block``."""

    def __init__(self, dim: int, dim_out: int, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(groups, dim), Swish(),
                                   nn.Dropout(dropout) if dropout != 0 else nn.Identity(),
                                   nn.Conv2d(dim, dim_out, 3, padding=1))

    def forward(self, x):
        return self.block(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, noise_level_emb_dim: int, dropout: float = 0.0, norm_groups: int = 32):
        super().__init__()
        self.noise_func = FeatureWiseAffine(noise_level_emb_dim, dim_out)
        # Official: dropout only in block2.
        self.block1 = Block(dim, dim_out, groups=norm_groups)
        self.block2 = Block(dim_out, dim_out, groups=norm_groups, dropout=dropout)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, emb):
        h = self.block2(self.noise_func(self.block1(x), emb))
        return h + self.res_conv(x)


class SelfAttention(nn.Module):
    """GN → qkv 1×1 (no bias) → softmax(qkᵀ/√C) v → 1×1, + input."""

    def __init__(self, in_channel: int, n_head: int = 1, norm_groups: int = 32):
        super().__init__()
        self.n_head = n_head
        self.norm = nn.GroupNorm(norm_groups, in_channel)
        self.qkv = nn.Conv2d(in_channel, in_channel * 3, 1, bias=False)
        self.out = nn.Conv2d(in_channel, in_channel, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        head_dim = c // self.n_head
        # Official layout: view(b, heads, 3·head_dim, h, w).chunk(3, dim=2).
        qkv = self.qkv(self.norm(x)).view(b, self.n_head, 3 * head_dim, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=-1)  # [b, heads, hw, head_dim]
        # Official scale is 1/sqrt(channel); equal to SDPA's 1/sqrt(head_dim) for one head.
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(c))
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return self.out(out) + x


class ResnetBlocWithAttn(nn.Module):
    def __init__(self, dim: int, dim_out: int, *, noise_level_emb_dim: int, norm_groups: int = 32,
                 dropout: float = 0.0, with_attn: bool = False):
        super().__init__()
        self.with_attn = with_attn
        self.res_block = ResnetBlock(dim, dim_out, noise_level_emb_dim, norm_groups=norm_groups, dropout=dropout)
        if with_attn:
            self.attn = SelfAttention(dim_out, norm_groups=norm_groups)

    def forward(self, x, emb):
        x = self.res_block(x, emb)
        return self.attn(x) if self.with_attn else x


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x):
        return self.conv(self.up(x))


class SR3UNet(nn.Module):
    """The SR3 denoising UNet of DDPM-CD, conditioned on the continuous noise level √ᾱ.

    Args:
        in_channel, out_channel: image channels in and ε channels out.
        inner_channel: width of the first level (and of the noise embedding).
        norm_groups: GroupNorm groups.
        channel_mults: width multipliers per level (one level per entry).
        attn_res: resolutions (relative to ``image_size``) whose blocks have self-attention.
        res_blocks: ResBlocks per down level (the up path has res_blocks + 1).
        dropout: dropout in the second conv of every ResBlock.
        image_size: the nominal input size, used only to place attention.
    """

    def __init__(self, in_channel: int = 3, out_channel: int = 3, inner_channel: int = 128, norm_groups: int = 32,
                 channel_mults: Sequence[int] = (1, 2, 4, 8, 8), attn_res: Sequence[int] = (16,),
                 res_blocks: int = 2, dropout: float = 0.2, image_size: int = 256):
        super().__init__()
        self.res_blocks = res_blocks
        self.num_levels = len(channel_mults)
        self.decoder_channels: list[int] = []  # channels of the decoder features, official (reversed) order
        emb = inner_channel
        self.noise_level_mlp = nn.Sequential(PositionalEncoding(inner_channel),
                                             nn.Linear(inner_channel, inner_channel * 4), Swish(),
                                             nn.Linear(inner_channel * 4, inner_channel))
        pre_channel = inner_channel
        feat_channels = [pre_channel]
        now_res = image_size
        self.init_conv = nn.Conv2d(in_channel, inner_channel, kernel_size=3, padding=1)

        downs: list[nn.Module] = []
        for ind, mult in enumerate(channel_mults):
            use_attn = now_res in attn_res
            channel_mult = inner_channel * mult
            for _ in range(res_blocks):
                downs.append(ResnetBlocWithAttn(pre_channel, channel_mult, noise_level_emb_dim=emb,
                                                norm_groups=norm_groups, dropout=dropout, with_attn=use_attn))
                feat_channels.append(channel_mult)
                pre_channel = channel_mult
            if ind != self.num_levels - 1:
                downs.append(Downsample(pre_channel))
                feat_channels.append(pre_channel)
                now_res //= 2
        self.downs = nn.ModuleList(downs)

        self.mid = nn.ModuleList([
            ResnetBlocWithAttn(pre_channel, pre_channel, noise_level_emb_dim=emb, norm_groups=norm_groups,
                               dropout=dropout, with_attn=True),
            ResnetBlocWithAttn(pre_channel, pre_channel, noise_level_emb_dim=emb, norm_groups=norm_groups,
                               dropout=dropout, with_attn=False),
        ])

        ups: list[nn.Module] = []
        for ind in reversed(range(self.num_levels)):
            use_attn = now_res in attn_res
            channel_mult = inner_channel * channel_mults[ind]
            for _ in range(res_blocks + 1):
                ups.append(ResnetBlocWithAttn(pre_channel + feat_channels.pop(), channel_mult, noise_level_emb_dim=emb,
                                              norm_groups=norm_groups, dropout=dropout, with_attn=use_attn))
                self.decoder_channels.insert(0, channel_mult)
                pre_channel = channel_mult
            if ind > 0:
                ups.append(Upsample(pre_channel))
                now_res *= 2
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(pre_channel, out_channel, groups=norm_groups)

    @property
    def num_decoder_features(self) -> int:
        return self.num_levels * (self.res_blocks + 1)

    def decoder_feature_level(self, index: int) -> int:
        """Level of decoder feature ``index`` (0 = full resolution), official reversed order."""
        return index // (self.res_blocks + 1)

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor, return_features: bool = False,
                keep: Sequence[int] | None = None):
        """ε prediction for the noisy image ``x`` at the continuous noise level √ᾱ ([B], [B, 1] or scalar).

        With ``return_features`` it returns ``(eps, feats)``: the decoder ResBlock outputs, last
        first (the official ``Reverse(fd)``: index 0 = the last block at full resolution,
        index res_blocks = the first one). ``keep`` limits the list to those indices (the others
        are None), so unused maps are freed during the pass.
        """
        noise_level = torch.as_tensor(noise_level, dtype=x.dtype, device=x.device).reshape(-1)
        if noise_level.numel() == 1 and x.shape[0] != 1:
            noise_level = noise_level.expand(x.shape[0])
        emb = self.noise_level_mlp(noise_level)

        x = self.init_conv(x)
        skips = [x]
        for layer in self.downs:
            x = layer(x, emb) if isinstance(layer, ResnetBlocWithAttn) else layer(x)
            skips.append(x)
        for layer in self.mid:
            x = layer(x, emb)

        n = self.num_decoder_features
        keep_set = set(range(n)) if keep is None else set(keep)
        feats: list[torch.Tensor | None] = [None] * n
        j = n - 1  # the first decoder block is the last feature in the official order
        for layer in self.ups:
            if isinstance(layer, ResnetBlocWithAttn):
                x = layer(torch.cat((x, skips.pop()), dim=1), emb)
                if return_features and j in keep_set:
                    feats[j] = x
                j -= 1
            else:
                x = layer(x)
        eps = self.final_conv(x)
        return (eps, feats) if return_features else eps

    def pretraining_loss(self, x0: torch.Tensor, generator: torch.Generator | None = None,
                         schedule: NoiseSchedule | Mapping | None = None, loss_type: str = "l2") -> torch.Tensor:
        """``pretraining_loss(self, x0, …)``: SR3's ε-prediction objective."""
        return pretraining_loss(self, x0, generator, schedule, loss_type)


def pretraining_loss(unet: SR3UNet, x0: torch.Tensor, generator: torch.Generator | None = None,
                     schedule: NoiseSchedule | Mapping | None = None, loss_type: str = "l2") -> torch.Tensor:
    """SR3's training loss (``GaussianDiffusion.p_losses``) for clean images ``x0`` in [-1, 1].

    One t ~ U{1..T} for the batch, √ᾱ ~ U(sqrt_alphas_cumprod_prev[t-1], [t]) per sample,
    x_noisy = √ᾱ·x0 + √(1-ᾱ)·ε, loss = mean |ε̂ - ε|² (``loss_type="l2"``, the official config)
    or mean |ε̂ - ε| (``"l1"``). ``schedule`` defaults to the official pretraining schedule
    (cosine, T = 2000; ``PRETRAIN_SCHEDULE``); pass ``CD_SCHEDULE`` for the linear one.
    """
    sched = _schedule(schedule, PRETRAIN_SCHEDULE)
    b = x0.shape[0]
    t = int(torch.randint(1, sched.num_timesteps + 1, (1,), generator=generator,
                          device=generator.device if generator is not None else "cpu"))
    level = sched.continuous_noise_level(t, b, generator).to(x0.device)
    noise = _randn_like(x0, generator)
    eps = unet(q_sample(x0, level, noise), level)
    if loss_type == "l2":
        return F.mse_loss(eps.float(), noise.float())
    if loss_type == "l1":
        return F.l1_loss(eps.float(), noise.float())
    raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")


# --------------------------------------------------------------------------- change head
# Names follow model/cd_modules/cd_head_v2.py and se.py, so best_cd_model_gen.pth loads as is.


class ChannelSELayer(nn.Module):
    def __init__(self, num_channels: int, reduction_ratio: int = 2):
        super().__init__()
        reduced = num_channels // reduction_ratio
        self.fc1 = nn.Linear(num_channels, reduced)
        self.fc2 = nn.Linear(reduced, num_channels)

    def forward(self, x):
        s = x.mean(dim=(2, 3))
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))[:, :, None, None]


class SpatialSELayer(nn.Module):
    def __init__(self, num_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(num_channels, 1, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


class ChannelSpatialSELayer(nn.Module):
    """Concurrent spatial and channel squeeze & excitation (sum of the two)."""

    def __init__(self, num_channels: int, reduction_ratio: int = 2):
        super().__init__()
        self.cSE = ChannelSELayer(num_channels, reduction_ratio)
        self.sSE = SpatialSELayer(num_channels)

    def forward(self, x):
        return self.cSE(x) + self.sSE(x)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim_out, 3, padding=1), nn.ReLU(),
                                   ChannelSpatialSELayer(num_channels=dim_out, reduction_ratio=2))

    def forward(self, x):
        return self.block(x)


class HeadBlock(nn.Module):
    """Conv1×1(T·C→C)+ReLU (merges the time steps; absent for one t), then Conv3×3(C→C)+ReLU."""

    def __init__(self, dim: int, dim_out: int, n_time_steps: int):
        super().__init__()
        many = n_time_steps > 1
        self.block = nn.Sequential(nn.Conv2d(dim * n_time_steps, dim, 1) if many else nn.Identity(),
                                   nn.ReLU() if many else nn.Identity(),
                                   nn.Conv2d(dim, dim_out, 3, padding=1), nn.ReLU())

    def forward(self, x):
        return self.block(x)


def _level_channels(scale: int, inner_channel: int, channel_multiplier: Sequence[int], blocks_per_level: int) -> int:
    level = scale // blocks_per_level
    if not 0 <= level < len(channel_multiplier):
        raise ValueError(f"feature scale {scale} outside 0..{len(channel_multiplier) * blocks_per_level - 1}")
    return inner_channel * channel_multiplier[level]


class CDHeadV2(nn.Module):
    """``cd_head_v2``: coarse-to-fine difference decoder over multi-t diffusion features.

    Args:
        feat_scales: decoder-feature indices to use (sorted coarse → fine, i.e. descending).
        out_channels: classes.
        inner_channel, channel_multiplier: the UNet's widths (they give each feature's channels).
        img_size: kept for the official signature (unused, as in the official code).
        time_steps: the diffusion steps whose features are concatenated per level.
        blocks_per_level: decoder features per UNet level (res_blocks + 1; official: 3).
        init: ``"orthogonal"`` (official, train phase) or ``"default"`` (PyTorch's); skipped on meta.

    ``forward(feats_A, feats_B)`` takes, per date, a list over time steps of the decoder feature
    lists (``SR3UNet.forward(..., return_features=True)[1]``) and returns logits at the
    resolution of the finest feature scale. The Block of the finest scale is computed but its
    output is discarded, as in the official code (see the module docstring); its parameters
    have ``requires_grad=False``.
    """

    def __init__(self, feat_scales: Sequence[int] = FEAT_SCALES, out_channels: int = 2, inner_channel: int = 128,
                 channel_multiplier: Sequence[int] = (1, 2, 4, 8, 8), img_size: int = 256,
                 time_steps: Sequence[int] = TIME_STEPS, blocks_per_level: int = 3, init: str = "orthogonal"):
        super().__init__()
        self.feat_scales = sorted(feat_scales, reverse=True)
        if len(self.feat_scales) < 2:
            raise ValueError("cd_head_v2 needs at least two feature scales")
        self.img_size = img_size
        self.time_steps = tuple(time_steps)
        dims = [_level_channels(s, inner_channel, channel_multiplier, blocks_per_level) for s in self.feat_scales]
        self.decoder = nn.ModuleList()
        for i, dim in enumerate(dims):
            self.decoder.append(HeadBlock(dim, dim, len(self.time_steps)))
            if i != len(dims) - 1:
                self.decoder.append(AttentionBlock(dim, dims[i + 1]))
        clfr_emb_dim = 64
        self.clfr_stg1 = nn.Conv2d(dims[-1], clfr_emb_dim, kernel_size=3, padding=1)
        self.clfr_stg2 = nn.Conv2d(clfr_emb_dim, out_channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        if init == "orthogonal" and not self.clfr_stg2.weight.is_meta:
            orthogonal_init_(self)
        elif init not in ("orthogonal", "default"):
            raise ValueError(f"init must be 'orthogonal' or 'default', got {init!r}")
        # The official quirk: the finest Block's output never reaches the classifier.
        self.discarded_block.requires_grad_(False)

    @property
    def discarded_block(self) -> HeadBlock:
        return self.decoder[-1]

    def forward(self, feats_A: Sequence[Sequence[torch.Tensor]],
                feats_B: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        if len(feats_A) != len(self.time_steps) or len(feats_B) != len(self.time_steps):
            raise ValueError(f"expected features of {len(self.time_steps)} time steps per date")
        lvl, x, diff = 0, None, None
        for layer in self.decoder:
            if isinstance(layer, HeadBlock):
                scale = self.feat_scales[lvl]
                f_a = torch.cat([f[scale] for f in feats_A], dim=1)
                f_b = torch.cat([f[scale] for f in feats_B], dim=1)
                out_a, out_b = layer(torch.cat([f_a, f_b], dim=0)).chunk(2, dim=0)
                diff = torch.abs(out_a - out_b)
                if lvl != 0:
                    diff = diff + x
                lvl += 1
            else:
                diff = layer(diff)
                x = F.interpolate(diff, scale_factor=2, mode="bilinear", align_corners=False)
        # Classifier on x, not on the last diff (official).
        return self.clfr_stg2(self.relu(self.clfr_stg1(x)))


# --------------------------------------------------------------------------- DDPM-CD


def unet_state_dict_from(state: Mapping) -> dict[str, torch.Tensor]:
    """The SR3UNet weights in a checkpoint, under this module's (= the official) names.

    Accepts the official ``I*_gen.pth`` (``GaussianDiffusion.state_dict()``: ``denoise_fn.*``
    plus schedule buffers), a DataParallel one (``module.``), a Lightning checkpoint
    (``{"state_dict": …}``) of a module holding the UNet as ``unet`` or ``model.unet``, a
    ``DDPMCD.state_dict()`` (``unet.*``), or a bare ``SR3UNet.state_dict()``.
    """
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    sd = {k: v for k, v in state.items() if k not in _DIFFUSION_BUFFERS}
    for prefix in ("module.", "denoise_fn.", "model.", "unet."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _load(source) -> Mapping:
    if isinstance(source, (str, Path)):
        return torch.load(source, map_location="cpu", weights_only=True)
    return source


class DDPMCD(nn.Module):
    """Frozen SR3 UNet feature extractor + ``cd_head_v2``: ``forward(pre, post)`` → logits [B, C, H, W].

    Args:
        num_classes: output classes (official: 2).
        unet: SR3UNet keyword arguments (default ``PAPER_UNET``).
        feat_scales: decoder-feature indices read by the head (official [2, 5, 8, 11, 14]).
        time_steps: diffusion steps of the features (official [50, 100, 400]).
        schedule: ``make_schedule`` arguments of the feature noise levels (default ``CD_SCHEDULE``).
        seed: seed of a private CPU generator for the noise levels and noise (reproducible
            features); None uses torch's global RNGs (CPU for the levels, the input's device for the noise).
        head_init: ``"orthogonal"`` (official; ~10 s of QR on a small CPU at the paper size) or
            ``"default"`` (PyTorch's init; use it when a trained head is loaded anyway).
        fuse_passes: run the 2 dates × T steps UNet passes as one batch of 2·T·B images (the
            same per-sample computation as separate passes, far fewer kernel launches); False
            runs them one by one as the official code does (less peak memory).

    Inputs are images in [-1, 1] whose sides are divisible by 2^(levels-1) (16 at the paper size).
    The UNet stays in eval mode, runs under ``no_grad`` and has ``requires_grad=False``: an
    optimiser built over ``parameters()`` only updates the head (Adam/AdamW skip parameters
    without a gradient); ``head.parameters()`` is the official optimiser's parameter list.
    """

    def __init__(self, num_classes: int = 2, unet: Mapping | None = None, feat_scales: Sequence[int] = FEAT_SCALES,
                 time_steps: Sequence[int] = TIME_STEPS, schedule: Mapping | None = None, seed: int | None = None,
                 head_init: str = "orthogonal", fuse_passes: bool = True):
        super().__init__()
        self.fuse_passes = fuse_passes
        cfg = {**PAPER_UNET, **(unet or {})}
        self.unet = SR3UNet(**cfg)
        self.unet.requires_grad_(False)
        self.unet.eval()
        self.time_steps = tuple(int(t) for t in time_steps)
        self.schedule = _schedule(schedule, CD_SCHEDULE)
        for t in self.time_steps:
            if not 1 <= t <= self.schedule.num_timesteps:
                raise ValueError(f"time step {t} outside 1..{self.schedule.num_timesteps}")
        self.head = CDHeadV2(feat_scales, num_classes, cfg["inner_channel"], cfg["channel_mults"], cfg["image_size"],
                             self.time_steps, blocks_per_level=cfg["res_blocks"] + 1, init=head_init)
        self.generator = None if seed is None else torch.Generator(device="cpu").manual_seed(seed)

    def train(self, mode: bool = True):
        super().train(mode)
        self.unet.eval()  # frozen feature extractor: dropout off (official get_feats: netG.eval())
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor, t: int, generator: torch.Generator | None = None) -> list:
        """Decoder features of one image batch at step t (``GaussianDiffusion.feats``): only the head's scales."""
        level, noisy = self._noised(x, t, generator)
        return self.unet(noisy, level, return_features=True, keep=self.head.feat_scales)[1]

    def _noised(self, x: torch.Tensor, t: int, generator: torch.Generator | None):
        level = self.schedule.continuous_noise_level(t, x.shape[0], generator).to(x.device)
        return level, q_sample(x, level, _randn_like(x, generator))

    # The suite passes per-sample keys (noise2map.keyed_random), so a tile's feature noise is
    # the same in every batch, on any device and on re-evaluation.
    keyed_noise = True

    def _noised_keyed(self, x: torch.Tensor, t: int, keys: torch.Tensor):
        """``_noised`` with each sample's level and noise drawn from its own key."""
        prev = self.schedule.sqrt_alphas_cumprod_prev
        lo, hi = prev[t - 1], prev[t]
        level = (lo + (hi - lo) * keyed_uniform(keys).cpu()).float().to(x.device)
        noise = keyed_normal(substream_keys(keys, 1), tuple(x.shape[1:]), x.device, x.dtype)
        return level, q_sample(x, level, noise)

    def forward(self, pre: torch.Tensor, post: torch.Tensor, generator: torch.Generator | None = None,
                noise_keys: torch.Tensor | None = None) -> torch.Tensor:
        """``noise_keys`` (int64 [B]): keyed draws, one substream per (t, date); otherwise
        ``generator`` (or the model's seeded one, or torch's global RNG) in the official order."""
        g = generator if generator is not None else self.generator
        n_t, keep = len(self.time_steps), self.head.feat_scales
        with torch.no_grad():
            if noise_keys is not None:
                noised = [self._noised_keyed(x, t, substream_keys(noise_keys, 2 * j + d))
                          for j, t in enumerate(self.time_steps) for d, x in enumerate((pre, post))]
            else:  # official order of the draws: for each t, date A then date B
                noised = [self._noised(x, t, g) for t in self.time_steps for x in (pre, post)]
            if self.fuse_passes:  # the 2·T passes as one batch: per-sample maths, same result
                levels, noisy = (torch.cat(parts) for parts in zip(*noised, strict=True))
                feats = self.unet(noisy, levels, return_features=True, keep=keep)[1]
                per_pass = [[f.chunk(2 * n_t)[i] if f is not None else None for f in feats] for i in range(2 * n_t)]
            else:
                per_pass = [self.unet(x_t, lvl, return_features=True, keep=keep)[1] for lvl, x_t in noised]
        return self.head(per_pass[0::2], per_pass[1::2])

    def load_unet(self, source) -> DDPMCD:
        """Load the pretrained UNet (strict): a state dict or a path to one (``I190000_E97_gen.pth``,
        the suite's pretraining checkpoint, …; see ``unet_state_dict_from``)."""
        self.unet.load_state_dict(unet_state_dict_from(_load(source)), strict=True)
        self.unet.requires_grad_(False)
        self.unet.eval()
        return self

    def load_head(self, source) -> DDPMCD:
        """Load a trained head (official ``best_cd_model_gen.pth`` or ``head.*`` keys), strict."""
        sd = _load(source)
        if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
            sd = sd["state_dict"]
        for prefix in ("module.", "model.", "head."):
            if any(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        self.head.load_state_dict(sd, strict=True)
        self.head.discarded_block.requires_grad_(False)
        return self


def build(size: str, num_classes: int = 2, **options) -> DDPMCD:
    """DDPM-CD at the paper size (official WHU config) or the 32² demo size."""
    unet = {**(DEMO_UNET if size == "demo" else PAPER_UNET), **options.pop("unet", {})}
    return DDPMCD(num_classes=num_classes, unet=unet, **options)


def build_unet(size: str = "paper", **overrides) -> SR3UNet:
    """The SR3 UNet alone (for the pretraining stage), same sizes as ``build``."""
    return SR3UNet(**{**(DEMO_UNET if size == "demo" else PAPER_UNET), **overrides})


SPECS = [
    ModelSpec("ddpm-cd", "DDPM-CD", "cd", 437.5, build,
              build_note="SR3 UNet (391.05M, frozen, pretrained by DDPM) + cd_head_v2 (46.41M), "
                         "decoder features at t = 50/100/400: 6 UNet passes per pair (437.45M)",
              weights=(), pretrained_unet="sr3", batchnorm=False),
]
