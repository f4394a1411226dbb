"""ELGC-Net (Noman, Fiaz, Cholakkal, Khan & Khan, "ELGC-Net: Efficient Local-Global Context
Aggregation for Remote Sensing Change Detection", IEEE TGRS 2024), re-implemented from
techmn/elgcnet (commit 9cf7522: ``models/elgcnet.py``, ``models/networks.py::define_G``).

Configuration ``ELGCNet(dec_embed_dim=256)`` (``main_cd.py --dec_embed_dim 256``; the other
arguments at their defaults: input_nc 3, output_nc 2, depths [3, 3, 4, 3], enc_channels
[64, 96, 128, 256]); 10,574,338 parameters = paper 10.6M.

* encoder (shared by both dates), four stages at 1/4, 1/8, 1/16, 1/32: OverlapPatchEmbed
  Conv7×7 (stride 4, then 2, 2, 2; padding 3; no norm), then EncoderBlocks
  ``x + ELGCA(LN(x))``, ``x + MLP(LN(x))`` with a channels-first LayerNorm (eps 1e-6);
  MLP = Conv1×1(C→4C) → GELU → ``x + GELU(DWConv3×3(x))`` → Conv1×1(4C→C);
* ELGCA(C, heads=4): half the channels → DWConv3×3 + GELU (local); the other half →
  Conv1×1(C/2 → 4·C/4) + GELU, split into 4 groups of C/4: q = sum of the first heads−3 groups
  → AvgPool3 s2 p1, k = group −3 → MaxPool2 s2, v = group −2 (full resolution), lfeat = group −1;
  pooled-transpose attention ``softmax(q kᵀ, dim=1)ᵀ v`` (C/4 × C/4 channel attention) gives C/4
  channels at full HW; output concat [local (C/2), lfeat (C/4), attention (C/4)].
  ``ELGCNet(heads=...)`` is not passed on by the official code: every block uses heads=4;
* decoder (E = 256): Conv1×1(C_i→E) per stage and date, Fusion_Block Conv1×1(2E→E)+GELU on
  concat(pre, post), bilinear resize of the 4 fused maps to 1/4, Conv1×1(4E→E)+BN, then twice
  [ConvTranspose k4 s2 p1 + ResidualBlock (conv-ReLU-conv ×0.1 + skip)] and Conv3×3(E→classes):
  logits at the input resolution.

Module and parameter names follow the official code (``enc.block1.0.attn.qkvl``,
``dec.linear_fuse.0``, ``dec.dense_2x.0.conv1.conv2d``, ...), so the official state dicts load
with ``load_state_dict`` unchanged. Initialisation as the official code: the encoder's convs
~ N(0, sqrt(2 / fan_out)) with zero bias, its LayerNorms 1/0, the decoder at PyTorch's defaults.

Pretrained weights: none. The official training (``main_cd.py --pretrain`` defaults to None)
starts from this random init; the checkpoints on Hugging Face (``mubashir04/elgcnet``, linked
from the README) are ELGC-Net models already trained on the change-detection benchmarks, not an
initialisation, so the spec lists no checkpoint (``weights=()``).

Official training recipe (``main_cd.py``, ``models/trainer.py``), recorded only (the suite trains
every model with one shared loop): cross-entropy (ignore_index 255) on the last output; AdamW
lr 3.1e-4, betas (0.9, 0.999), weight decay 0.01; linear decay to 0 (``1 - epoch /
(max_epochs + 1)``); 300 epochs; batch 32; input 256², normalised with mean = std = 0.5
(i.e. [-1, 1], what the suite feeds); augmentation (BIT's ``CDDataAugmentation``) h/v flip,
scale-random-crop, random blur.

Known deviations from the official code:

* the forward returns the logits tensor, not the official one-element list ``[logits]``;
* the key pooling is ``MaxPool2d(2, 2, ceil_mode=True)``: identical on even-sized maps; on
  odd-sized maps (the official code raises there, e.g. the 1×1 stage-4 map of a 32×32 input) it
  keeps the key and query token counts equal (both ceil(H/2)·ceil(W/2));
* the official output matches the input size only when H and W are multiples of 4 (32 for the
  pooling); here the logits are bilinearly resized to the input size when they differ
  (a no-op for multiples of 4);
* ``num_classes`` sets the output channels (official ``output_nc``); no timm/scipy dependency;
  the unused ``nn.Sigmoid`` (``dec.active``, no parameters) and ``drop_path_rate`` (never used
  by the official blocks) are not kept;
* the demo size (53k parameters: channels 8/8/16/16, one block per stage, E = 16) keeps the
  code path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from baselines import ModelSpec
from baselines.blocks import ConvLayer, ResidualBlock, UpsampleConvLayer


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """ConvNeXt's channels-first LayerNorm (biased variance over C, eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class OverlapPatchEmbed(nn.Module):
    def __init__(self, patch_size: int = 7, stride: int = 4, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        hidden = dim * mlp_ratio
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        x = x + self.act(self.pos(x))
        return self.fc2(x)


class ELGCA(nn.Module):
    """Efficient local-global context aggregation (C must be a multiple of 4, heads ≥ 4)."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        if dim % 4 or heads < 4:
            raise ValueError(f"ELGCA needs dim % 4 == 0 and heads >= 4, got dim={dim}, heads={heads}")
        self.heads = heads
        self.dwconv = nn.Conv2d(dim // 2, dim // 2, 3, padding=1, groups=dim // 2)
        self.qkvl = nn.Conv2d(dim // 2, (dim // 4) * heads, 1)
        self.pool_q = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.pool_k = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)  # official: floor mode
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x1, x2 = torch.split(x, [c // 2, c // 2], dim=1)
        x1 = self.act(self.dwconv(x1))  # local branch
        x2 = self.act(self.qkvl(x2)).reshape(b, self.heads, c // 4, h, w)
        q = self.pool_q(x2[:, :-3].sum(dim=1)).flatten(2)  # B, C/4, N'
        k = self.pool_k(x2[:, -3]).flatten(2)  # B, C/4, N'
        v = x2[:, -2].flatten(2)  # B, C/4, HW
        lfeat = x2[:, -1]
        attn = torch.softmax(q @ k.transpose(1, 2), dim=1).transpose(1, 2)  # B, C/4, C/4
        x2 = (attn @ v).reshape(b, c // 4, h, w)
        return torch.cat([x1, lfeat, x2], dim=1)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 4, heads: int = 4):
        super().__init__()
        self.layer_norm1 = LayerNorm(dim, eps=1e-6)
        self.layer_norm2 = LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, mlp_ratio)
        self.attn = ELGCA(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    """Four stages at 1/4, 1/8, 1/16, 1/32; returns the four feature maps."""

    def __init__(self, patch_size: int = 7, in_chans: int = 3, embed_dims=(64, 96, 128, 256),
                 depths=(3, 3, 4, 3), mlp_ratios=(4, 4, 4, 4)):
        super().__init__()
        self.patch_embed1 = OverlapPatchEmbed(7, 4, in_chans, embed_dims[0])
        self.patch_embed2 = OverlapPatchEmbed(patch_size, 2, embed_dims[0], embed_dims[1])
        self.patch_embed3 = OverlapPatchEmbed(patch_size, 2, embed_dims[1], embed_dims[2])
        self.patch_embed4 = OverlapPatchEmbed(patch_size, 2, embed_dims[2], embed_dims[3])
        for i in range(4):
            setattr(self, f"block{i + 1}", nn.ModuleList(
                EncoderBlock(embed_dims[i], mlp_ratios[i]) for _ in range(depths[i])))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            outs.append(x)
        return outs


def _init_weights(m: nn.Module) -> None:
    """The encoder's ``_init_weights``: convs N(0, sqrt(2 / fan_out)), zero bias."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------
class LinearProj(nn.Module):
    def __init__(self, input_dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(input_dim, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Fusion_Block(nn.Module):  # noqa: N801 (the official name, kept for the module tree)
    def __init__(self, in_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(2 * in_channels, in_channels, 1)
        self.act = nn.GELU()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(torch.cat([x1, x2], dim=1)))


class Decoder(nn.Module):
    def __init__(self, in_channels=(64, 96, 128, 256), embedding_dim: int = 256, output_nc: int = 2):
        super().__init__()
        e = embedding_dim
        for i in range(len(in_channels), 0, -1):  # official registration order: c4 .. c1
            setattr(self, f"linear_c{i}", LinearProj(in_channels[i - 1], e))
        self.linear_fuse = nn.Sequential(nn.Conv2d(e * len(in_channels), e, 1), nn.BatchNorm2d(e))
        for i in range(1, len(in_channels) + 1):
            setattr(self, f"diff_c{i}", Fusion_Block(e))
        self.convd2x = UpsampleConvLayer(e, e, kernel_size=4, stride=2)
        self.dense_2x = nn.Sequential(ResidualBlock(e))
        self.convd1x = UpsampleConvLayer(e, e, kernel_size=4, stride=2)
        self.dense_1x = nn.Sequential(ResidualBlock(e))
        self.change_probability = ConvLayer(e, output_nc, 3, 1, 1)

    def forward(self, feats1: list[torch.Tensor], feats2: list[torch.Tensor]) -> torch.Tensor:
        size = feats1[0].shape[-2:]
        fused = []
        for i in (4, 3, 2, 1):  # official order of the concatenation: c4, c3, c2, c1
            proj = getattr(self, f"linear_c{i}")
            f = getattr(self, f"diff_c{i}")(proj(feats1[i - 1]), proj(feats2[i - 1]))
            if i > 1:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            fused.append(f)
        x = self.linear_fuse(torch.cat(fused, dim=1))
        x = self.dense_2x(self.convd2x(x))
        x = self.dense_1x(self.convd1x(x))
        return self.change_probability(x)


class ELGCNet(nn.Module):
    """ELGC-Net: shared ELGCA encoder, per-scale fusion of both dates, upsampling decoder.

    Args:
        num_classes: output channels (logits).
        depths: EncoderBlocks per stage.
        enc_channels: stage widths (multiples of 4).
        dec_embed_dim: decoder width E.
    """

    def __init__(self, num_classes: int = 2, depths=(3, 3, 4, 3), enc_channels=(64, 96, 128, 256),
                 dec_embed_dim: int = 256, input_nc: int = 3):
        super().__init__()
        self.enc = Encoder(patch_size=7, in_chans=input_nc, embed_dims=enc_channels, depths=depths)
        self.dec = Decoder(in_channels=enc_channels, embedding_dim=dec_embed_dim, output_nc=num_classes)

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        x = self.dec(self.enc(pre), self.enc(post))
        if x.shape[-2:] != pre.shape[-2:]:  # inputs whose sides are not multiples of 4
            x = F.interpolate(x, size=pre.shape[-2:], mode="bilinear", align_corners=False)
        return x


PAPER = {"dec_embed_dim": 256}
DEMO = {"enc_channels": (8, 8, 16, 16), "depths": (1, 1, 1, 1), "dec_embed_dim": 16}


def build(size: str, num_classes: int = 2, **options) -> ELGCNet:
    if size not in ("paper", "demo"):
        raise ValueError(f"size must be 'paper' or 'demo', got {size!r}")
    return ELGCNet(num_classes=num_classes, **{**(DEMO if size == "demo" else PAPER), **options})


SPECS = [
    ModelSpec("elgc-net", "ELGC-Net", "cd", 10.6, build,
              build_note="ELGCNet(dec_embed_dim=256): ELGCA encoder 64/96/128/256, depths 3/3/4/3, "
                         "decoder E=256; random init, as the official training starts",
              weights=()),
]
