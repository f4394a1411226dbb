"""ChangeFormer-v6 (Bandara & Patel, "A Transformer-Based Siamese Network for Change
Detection", IGARSS 2022), re-implemented from wgcban/ChangeFormer (HEAD afd1b7e:
``models/ChangeFormer.py`` ``ChangeFormerV6``, ``EncoderTransformer_v3``,
``DecoderTransformer_v3``; ``models/ChangeFormerBaseNetworks.py``; ``models/networks.py``).

Architecture (``ChangeFormerV6(input_nc=3, output_nc=2, embed_dim=256)``, the
``scripts/run_ChangeFormer_{LEVIR,WHU}.sh`` configuration; 41,026,674 parameters = paper 41.0M:
encoder 28,937,408, decoder 12,089,266):

* shared Siamese encoder ``Tenc_x2``: 4 stages, embed dims 64/128/320/512, depths 3/3/4/3,
  heads 1/2/4/8, MLP ratio 4, spatial-reduction ratios 8/4/2/1, qkv bias, dropout 0.1,
  attention dropout 0.1, stochastic depth 0.1 (linear over the 13 blocks). Overlapping patch
  embeds are Conv k7 s4 (stage 1) and **Conv k7 s2** (stages 2-4), padding 3, + LayerNorm
  (eps 1e-5). A block is the SegFormer block: LN (eps 1e-6) → efficient attention (q Linear;
  kv Linear on a Conv(k=sr, s=sr)+LN reduced sequence where sr > 1) → residual; LN → Mix-FFN
  (Linear → DWConv3×3 → GELU → Linear) → residual. A final LN (eps 1e-6) per stage; outputs
  at 1/4, 1/8, 1/16, 1/32.
* decoder ``TDec_x2`` (E = embed_dim = 256): per stage a Linear(C_i→E) on each date;
  ``diff_c*`` Conv3×3(2E→E)-ReLU-BN-Conv3×3(E→E)-ReLU on concat(pre, post) plus the bilinear
  ×2 upsampled coarser difference (coarse to fine); ``make_pred_c*`` Conv3×3(E→2)-ReLU-BN-
  Conv3×3(2→2) side outputs; ``linear_fuse`` Conv1×1(4E→E)+BN on the four maps at 1/4; then
  2 × [ConvTranspose(k4, s2, p1) → ResidualBlock (conv-ReLU-conv × 0.1 + skip)] → Conv3×3(E→2).

Outputs. The official model returns a list of 5 logit maps: [1/32, 1/16, 1/8, 1/4, full].
``forward(pre, post)`` returns the final full-resolution map only (what the suite's shared
cross-entropy loop trains and what official inference uses, ``multi_scale_infer=False``);
``forward_all(pre, post)`` (or ``side_outputs=True``, which makes ``forward`` return the list)
gives all five, and :func:`multi_scale_loss` is the official multi-scale training loss:
sum_i w_i · CE(out_i, nearest-downsampled labels) with ``MULTI_SCALE_WEIGHTS =
(0.5, 0.5, 0.5, 0.8, 1.0)`` over [1/32, 1/16, 1/8, 1/4, full] (``multi_scale_train=True`` in the
official scripts). While ``side_outputs`` is False, the four ``make_pred_c*`` heads (4 × 4,652
parameters at E=256) take no part in the loss: they stay registered (the paper's count includes
them) but are frozen (``requires_grad=False``) so no optimizer or gradient check sees unused
parameters; set ``side_outputs=True`` before building the optimizer to train them.

Official training recipe (``main_cd.py``, ``models/trainer.py``, ``run_ChangeFormer_*.sh``):
inputs normalised with mean = std = 0.5 (i.e. [-1, 1], as the suite feeds), 256², batch 16;
AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.01, linear decay to 0 over 200 epochs;
cross-entropy (ignore_index 255) with multi-scale training (weights above); inference on the
last output. Initialisation: ``define_G`` → ``init_net`` re-initialises every Conv/ConvTranspose/
Linear weight with N(0, 0.02) and zero bias and every BatchNorm weight with N(1, 0.02)
(overriding the encoder's own trunc-normal init): this module does the same
(``official_init=True``). The scripts then pass ``--pretrain`` (LEVIR: ``pretrained_changeformer.pt``;
WHU/DSIFN: ``segformer.b2.512x512.ade.160k.pth``) to ``load_state_dict(..., strict=False)``; the
SegFormer checkpoint's keys start with ``backbone.``/``decode_head.`` while the model's start with
``Tenc_x2.``/``TDec_x2.``, so that call loads nothing (wgcban/ChangeFormer issue #18) and the
WHU run effectively trains from ``init_net``'s random init.

Module and parameter names follow the official code (``Tenc_x2.patch_embed1.proj``,
``Tenc_x2.block1.0.attn.kv``, ``TDec_x2.diff_c4.0``, ``TDec_x2.change_probability.conv2d``, ...),
so the released ChangeFormerV6 checkpoints (``model_G_state_dict``) load with ``strict=True``.

Known deviations from the official code:

* attention uses ``F.scaled_dot_product_attention`` (same maths: scale head_dim^-0.5, dropout on
  the attention probabilities in training);
* the coarse-to-fine additions upsample to the finer map's size instead of ``scale_factor=2``
  (identical when H and W are multiples of 32, the only sizes the official code accepts;
  other sizes work here);
* ``decoder_softmax`` (a sigmoid on the outputs, off in every official script) is not offered;
  ``forward`` returns logits;
* side heads frozen unless ``side_outputs=True`` (see above); no mmcv/timm dependency.

The demo size keeps every module and the code path with widths 8/16/32/32, depth 1 per stage,
heads 1/1/2/2 and E = 16 (178,258 parameters); inputs must be multiples of 32 there too
for the 1/32 stage to exist (32 and 64 work).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines import ModelSpec
from baselines.blocks import ConvLayer, ResidualBlock, UpsampleConvLayer

MULTI_SCALE_WEIGHTS = (0.5, 0.5, 0.5, 0.8, 1.0)
"""Official loss weights over the outputs [1/32, 1/16, 1/8, 1/4, full] (``--multi_pred_weights``)."""

# --------------------------------------------------------------------------- encoder


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at eval or p = 0)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class OverlapPatchEmbed(nn.Module):
    """Conv(k, stride, padding k//2) → tokens (B, HW, C) → LayerNorm (default eps)."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class Attention(nn.Module):
    """SegFormer efficient self-attention: keys/values from a spatially reduced sequence."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, sr_ratio: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        k, v = self.kv(x).reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Mix-FFN: Linear → DWConv3×3 → GELU → Dropout → Linear → Dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), h, w)))
        return self.drop(self.fc2(x))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, attn_drop: float,
                 drop_path: float, sr_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=True, attn_drop=attn_drop, proj_drop=drop,
                              sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class EncoderTransformerV3(nn.Module):
    """The shared encoder (official ``EncoderTransformer_v3`` with V6's arguments)."""

    def __init__(self, in_chans: int = 3, embed_dims: Sequence[int] = (64, 128, 320, 512),
                 num_heads: Sequence[int] = (1, 2, 4, 8), mlp_ratio: float = 4.0, drop_rate: float = 0.1,
                 attn_drop_rate: float = 0.1, drop_path_rate: float = 0.1, depths: Sequence[int] = (3, 3, 4, 3),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), patch_size: int = 7):
        super().__init__()
        total = sum(depths)
        # torch.linspace(0, rate, total) without .item() (which the meta device forbids)
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        cur = 0
        for i in range(4):
            stride, cin = (4, in_chans) if i == 0 else (2, embed_dims[i - 1])
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(7 if i == 0 else patch_size, stride, cin,
                                                                   embed_dims[i]))
            setattr(self, f"block{i + 1}", nn.ModuleList(
                Block(embed_dims[i], num_heads[i], mlp_ratio, drop_rate, attn_drop_rate, dpr[cur + j], sr_ratios[i])
                for j in range(depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-6))
            cur += depths[i]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


# --------------------------------------------------------------------------- decoder


class MLP(nn.Module):
    """Linear embedding of a (B, C, H, W) map → (B, HW, E)."""

    def __init__(self, input_dim: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(input_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))


def conv_diff(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


def make_prediction(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout),
                         nn.Conv2d(cout, cout, 3, padding=1))


class DecoderTransformerV3(nn.Module):
    """Difference decoder with side outputs (official ``DecoderTransformer_v3``)."""

    def __init__(self, in_channels: Sequence[int] = (64, 128, 320, 512), embedding_dim: int = 256,
                 output_nc: int = 2):
        super().__init__()
        e = embedding_dim
        for i in (4, 3, 2, 1):
            setattr(self, f"linear_c{i}", MLP(in_channels[i - 1], e))
        for i in (4, 3, 2, 1):
            setattr(self, f"diff_c{i}", conv_diff(2 * e, e))
        for i in (4, 3, 2, 1):
            setattr(self, f"make_pred_c{i}", make_prediction(e, output_nc))
        self.linear_fuse = nn.Sequential(nn.Conv2d(e * len(in_channels), e, kernel_size=1), nn.BatchNorm2d(e))
        self.convd2x = UpsampleConvLayer(e, e, kernel_size=4, stride=2)
        self.dense_2x = nn.Sequential(ResidualBlock(e))
        self.convd1x = UpsampleConvLayer(e, e, kernel_size=4, stride=2)
        self.dense_1x = nn.Sequential(ResidualBlock(e))
        self.change_probability = ConvLayer(e, output_nc, kernel_size=3, stride=1, padding=1)

    def side_heads(self) -> list[nn.Module]:
        return [getattr(self, f"make_pred_c{i}") for i in (4, 3, 2, 1)]

    def forward(self, feats1: list[torch.Tensor], feats2: list[torch.Tensor],
                side_outputs: bool = True) -> list[torch.Tensor]:
        """Outputs [1/32, 1/16, 1/8, 1/4, full] (only [full] when side_outputs is False)."""
        size1 = feats1[0].shape[-2:]
        outputs, ups, prev = [], [], None
        for i in (4, 3, 2, 1):
            linear, c1, c2 = getattr(self, f"linear_c{i}"), feats1[i - 1], feats2[i - 1]
            n, _, h, w = c1.shape
            e1 = linear(c1).transpose(1, 2).reshape(n, -1, h, w)
            e2 = linear(c2).transpose(1, 2).reshape(n, -1, h, w)
            cur = getattr(self, f"diff_c{i}")(torch.cat((e1, e2), dim=1))
            if prev is not None:
                cur = cur + F.interpolate(prev, size=(h, w), mode="bilinear", align_corners=False)
            if side_outputs:
                outputs.append(getattr(self, f"make_pred_c{i}")(cur))
            ups.append(cur if i == 1 else F.interpolate(cur, size=size1, mode="bilinear", align_corners=False))
            prev = cur
        x = self.linear_fuse(torch.cat(ups, dim=1))  # order _c4_up, _c3_up, _c2_up, _c1 as official
        x = self.dense_2x(self.convd2x(x))
        x = self.dense_1x(self.convd1x(x))
        outputs.append(self.change_probability(x))
        return outputs


# --------------------------------------------------------------------------- model


class ChangeFormerV6(nn.Module):
    """ChangeFormer-v6: ``forward(pre, post)`` → logits [B, output_nc, H, W].

    Args:
        input_nc: input channels per date.
        output_nc: classes (2 for the suite's cross-entropy).
        embed_dim: decoder width E (256 in the official scripts; 64 is ``main_cd.py``'s default).
        embed_dims, depths, num_heads, mlp_ratio, sr_ratios, patch_size: encoder shape (V6 values
            by default; ``patch_size`` is the kernel of the stage 2-4 patch embeds).
        drop_rate, attn_drop_rate, drop_path_rate: 0.1 each in V6.
        side_outputs: if True, ``forward`` returns the official list of 5 outputs and the side
            heads are trainable; if False (default), ``forward`` returns the final map and the side
            heads are frozen. Assigning ``model.side_outputs`` later toggles both.
        official_init: re-initialise as the official ``init_net`` does (N(0, 0.02) conv/linear weights).
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 2, embed_dim: int = 256,
                 embed_dims: Sequence[int] = (64, 128, 320, 512), depths: Sequence[int] = (3, 3, 4, 3),
                 num_heads: Sequence[int] = (1, 2, 4, 8), mlp_ratio: float = 4.0,
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), patch_size: int = 7, drop_rate: float = 0.1,
                 attn_drop_rate: float = 0.1, drop_path_rate: float = 0.1, side_outputs: bool = False,
                 official_init: bool = True):
        super().__init__()
        self.Tenc_x2 = EncoderTransformerV3(input_nc, embed_dims, num_heads, mlp_ratio, drop_rate, attn_drop_rate,
                                            drop_path_rate, depths, sr_ratios, patch_size)
        self.TDec_x2 = DecoderTransformerV3(embed_dims, embed_dim, output_nc)
        if official_init:
            self.apply(_init_net)
        self.side_outputs = side_outputs

    @property
    def side_outputs(self) -> bool:
        return self._side_outputs

    @side_outputs.setter
    def side_outputs(self, enabled: bool) -> None:
        self._side_outputs = bool(enabled)
        for head in self.TDec_x2.side_heads():
            head.requires_grad_(self._side_outputs)

    def forward_all(self, pre: torch.Tensor, post: torch.Tensor) -> list[torch.Tensor]:
        """The official five outputs: logits at [1/32, 1/16, 1/8, 1/4, full] resolution."""
        return self.TDec_x2(self.Tenc_x2(pre), self.Tenc_x2(post), side_outputs=True)

    def forward(self, pre: torch.Tensor, post: torch.Tensor):
        if self._side_outputs:
            return self.forward_all(pre, post)
        return self.TDec_x2(self.Tenc_x2(pre), self.Tenc_x2(post), side_outputs=False)[-1]


def multi_scale_loss(outputs: Sequence[torch.Tensor], target: torch.Tensor,
                     weights: Sequence[float] = MULTI_SCALE_WEIGHTS, ignore_index: int = 255) -> torch.Tensor:
    """The official multi-scale training loss: sum_i w_i · CE(outputs[i], labels at that size).

    ``target`` is [B, H, W] (class indices); it is nearest-downsampled to each coarser output, as
    ``models/trainer.py::_backward_G`` does.
    """
    if len(outputs) != len(weights):
        raise ValueError(f"{len(outputs)} outputs but {len(weights)} weights")
    loss = outputs[0].new_zeros(())
    for weight, pred in zip(weights, outputs):
        t = target
        if pred.shape[-2:] != target.shape[-2:]:
            t = F.interpolate(target[:, None].float(), size=pred.shape[-2:], mode="nearest")[:, 0].long()
        loss = loss + weight * F.cross_entropy(pred, t, ignore_index=ignore_index)
    return loss


def _init_net(m: nn.Module) -> None:
    """``models/networks.py::init_weights(init_type='normal', init_gain=0.02)``."""
    if any(p.is_meta for p in m.parameters(recurse=False)):
        return  # nothing to initialise on the meta device (and normal_ is slow there)
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


DEMO = dict(embed_dim=16, embed_dims=(8, 16, 32, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))


def build(size: str, num_classes: int = 2, **options) -> ChangeFormerV6:
    if size == "demo":
        options = {**DEMO, **options}
    return ChangeFormerV6(output_nc=num_classes, **options)


SPECS = [
    ModelSpec("changeformer-v6", "ChangeFormer-v6", "cd", 41.0, build,
              build_note="re-implemented wgcban/ChangeFormer ChangeFormerV6(embed_dim=256) (afd1b7e): Siamese "
                         "SegFormer-style encoder 64/128/320/512, depths 3/3/4/3, difference decoder E=256 with "
                         "4 side outputs (frozen unless side_outputs=True); 41,026,674 params",
              weights=()),
]
