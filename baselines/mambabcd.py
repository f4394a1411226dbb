"""MambaBCD-Base (Chen, Song, Han, Xia & Yokoya, "ChangeMamba: Remote Sensing Change Detection
With Spatiotemporal State Space Model", IEEE TGRS 2024), re-implemented from
ChenHongruixuan/MambaCD (commit 96c3240: ``changedetection/models/MambaBCD.py`` class
``STMambaBCD``, ``changedetection/models/{Mamba_backbone,ChangeDecoder}.py``,
``classification/models/vmamba.py``, ``changedetection/configs/vssm1/vssm_base_224.yaml``,
``changedetection/script/train_MambaBCD.py``).

Architecture (``STMambaBCD`` with ``vssm_base_224.yaml`` merged over ``configs/config.py``;
**92,399,874 parameters** = backbone 87,534,592 + ChangeDecoder 4,865,024 + ``main_clf`` 258,
i.e. 87.53M + 4.87M = 92.40M = paper 92.4M; the official module tree built on the CPU gives the
same figures, and its state-dict keys and shapes are the ones of this module):

* ``encoder`` = ``Backbone_VSSM`` (VMamba-Base, one encoder shared by both dates), channels-last
  (``norm_layer="ln"``: ``nn.LayerNorm`` over the last dim, eps 1e-5):

  - patch-embed v2 (``patch_embed.{0..7}``): Conv3×3 s2 (3→64) → LN → GELU → Conv3×3 s2
    (64→128) → LN (stride 4 in all);
  - 4 stages, depths [2, 2, 15, 2], dims 128/256/512/1024, drop_path linspace(0, 0.6) over the
    21 blocks; ``layers.i.downsample`` = v3: Conv3×3 s2 (C→2C) + LN (Identity after stage 4);
  - VSSBlock: ``x + DropPath(SS2D(LN(x)))``, then ``x + DropPath(MLP(LN(x)))`` (MLP 4×, GELU);
  - SS2D, forward type ``v3noz`` (no z-gate): ``in_proj`` Linear(d→2d, no bias) → DWConv3×3
    (no bias) → SiLU → 4-direction cross-scan (row-major, column-major, their reverses) → per
    direction ``x_proj`` (→ dt_rank + 2·N, no bias), ``dt_proj`` (dt_rank = ceil(d/16), with
    bias, softplus), A = −exp(A_log) with d_state N = **1**, D skip → selective scan →
    cross-merge (sum) → ``out_norm`` LN(2d) → ``out_proj`` Linear(2d→d, no bias);
  - ``outnorm{i}``: an LN on every stage's output (before its downsample), returned [B,C,H,W].
* ``decoder`` = ``ChangeDecoder`` (width 128, hard-coded in the official code), per level
  k = 4, 3, 2, 1 (1/32 … 1/4):

  - ``st_block_k1``: Conv1×1(2C→128) on channel-concat [pre, post] → VSSBlock(128);
  - ``st_block_k2``: Conv1×1(C→128) on pre/post **interleaved column by column** (width 2W:
    pre in the even columns, post in the odd ones) → VSSBlock(128);
  - ``st_block_k3``: Conv1×1(C→128) on pre | post **side by side** (width 2W) → VSSBlock(128);
  - the decoder VSSBlocks have the backbone's SSM settings and drop_path 0.1;
  - ``fuse_layer_k``: Conv1×1(5·128→128)+BN+ReLU on [k1, k2 even cols, k2 odd cols, k3 left
    half, k3 right half];
  - top-down: bilinear upsample to the finer level + add, then ``smooth_layer_k`` (ResBlock:
    Conv3×3-BN-ReLU-Conv3×3-BN + identity, ReLU) at levels 3, 2, 1.
* ``main_clf`` Conv1×1(128→2) on the 1/4 map, bilinear upsampling to the input size.

Module and parameter names follow the official code (``encoder.patch_embed.N``,
``encoder.layers.i.blocks.j.{norm,op,norm2,mlp}``, ``encoder.layers.i.downsample.{1,3}``,
``encoder.outnorm{i}``, ``decoder.st_block_kx.{0,2}``, ``decoder.fuse_layer_k.{0,1}``,
``decoder.smooth_layer_k.{conv1,bn1,conv2,bn2}``, ``main_clf``), so an official MambaBCD
checkpoint's state dict loads unchanged.

Weights. The official training starts the encoder from the VMamba-Base ImageNet-1K checkpoint
``vssm_base_0229_ckpt_epoch_237.pth`` (Zenodo record 14037770:
https://zenodo.org/records/14037770/files/vssm_base_0229_ckpt_epoch_237.pth?download=1 ; the
same file as VMamba's release
https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth).
It is a dict whose ``"model"`` entry is a ``VSSM`` state dict: its keys are the encoder's
without the ``encoder.`` prefix, plus ``classifier.{norm,head}.*`` (dropped), and without the
four ``outnorm{i}`` LNs (which keep their 1/0 init). The official ``load_pretrained`` does
``Backbone_VSSM.load_state_dict(ckpt["model"], strict=False)``;
:func:`load_vmamba_backbone` does the same with a check that nothing else is missing. The
suite's ``noise2map.weights.load_into`` cannot load it as is (a torch pickle with a ``model``
entry and four missing ``outnorm`` keys), hence ``weights=()`` in :data:`SPECS`.

Official training recipe (``train_MambaBCD.py``, ``datasets/make_data_loader.py``,
``datasets/imutils.py``): images on the 0-255 scale normalised with the ImageNet mean
[123.675, 116.28, 103.53] and std [58.395, 57.12, 57.375] (``imutils.normalize_img``; see
:func:`imagenet_normalise` and the ``imagenet_input`` option); random 256² crops, flips, rot90;
loss CE (ignore 255) + 0.75·Lovász-softmax on the softmax probabilities
(:func:`official_loss`); AdamW lr 1e-4, weight decay 5e-4 (script defaults); batch 16;
iteration-based training (README: 320k iterations for Small on SYSU); encoder from the
VMamba-Base ImageNet checkpoint above, everything else at PyTorch's default init.

Known deviations from the official code:

* the selective scan is ``baselines.mamba.selective_scan``: mamba_ssm's fused kernel on CUDA
  where it imports, else a pure-PyTorch reference (exact, but sequential over L = H·W, and
  H·2W in the decoder's interleaved/side-by-side branches) — instead of VMamba's
  ``selective_scan_cuda_oflex`` (same recurrence, float32 output);
* the interleaved and side-by-side maps are built with stack/cat instead of filling
  ``torch.empty(...).cuda()`` (so the model runs on any device);
* both dates go through the shared encoder in one batch (the encoder has no BatchNorm, so this
  equals two calls; drop-path masks are per sample either way);
* drop-path rates are computed in Python (official: ``torch.linspace(...).item()``), so the
  model can be built on the meta device;
* the decoder width (official: 128, hard-coded) and the decoder's drop_path are parameters,
  used only by the demo size;
* the suite feeds [-1, 1] images and the model uses them as is by default, as the suite's other
  baselines do; ``imagenet_input=True`` converts them to the official ImageNet normalisation
  first (what the ImageNet-pretrained encoder expects).

The demo size keeps every module and the code path with dims 16/32/64/128, depths [1,1,1,1],
decoder width 16 (:data:`DEMO`; 487,762 parameters). At 32×32 input the stages are 8², 4², 2²
and 1² (the 1×1 stage works: scans of length 1, 2 in the decoder's 2W branches). Sizes that are
not multiples of 32 also run (the strided convs round up, the decoder upsamples to each
level's size), as in the official code.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from baselines import ModelSpec
from baselines.mamba.ss2d import ss2d_core, ssm_parameters

#: ImageNet statistics on the 0-255 scale (MambaCD ``datasets/imutils.normalize_img``).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

VMAMBA_BASE_CHECKPOINT = "vssm_base_0229_ckpt_epoch_237.pth"
VMAMBA_BASE_URL = f"https://zenodo.org/records/14037770/files/{VMAMBA_BASE_CHECKPOINT}?download=1"
VMAMBA_BASE_MIRROR = f"https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/{VMAMBA_BASE_CHECKPOINT}"


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images → the official input: 0-255 scale, minus ImageNet mean, over its std."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x + 1) * 127.5 - mean) / std


def _drop_path(p: float) -> nn.Module:
    from timm.layers import DropPath

    return DropPath(p)  # official: DropPath(drop_path) even at 0 (no parameters either way)


class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class Mlp(nn.Module):
    """Channels-last MLP: Linear → GELU → Linear (dropout 0 in every MambaCD config)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


# --------------------------------------------------------------------------- SS2D (v3noz)


class SS2D(nn.Module):
    """VMamba's SS2D, forward type ``v3noz``, channels-last: [B, H, W, d] → [B, H, W, d].

    No z-gate (``in_proj`` d → d_inner only), depthwise conv without bias, 4 scan directions,
    LayerNorm over d_inner after the cross-merge. ``initialize="v0"`` (Mamba's): dt_proj
    weights U(±dt_rank^-0.5), dt bias = softplus⁻¹(dt) with dt log-uniform in [1e-3, 0.1]
    (floor 1e-4), A_log = log(1..N), D = 1; x_proj at ``nn.Linear``'s default init.
    """

    def __init__(self, d_model: int, d_state: int = 1, ssm_ratio: float = 2.0, dt_rank: int | str = "auto",
                 d_conv: int = 3, conv_bias: bool = False, dropout: float = 0.0, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_state = d_state
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.dt_rank = dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        # Registration order as in the official __initv2__ (state-dict order).
        self.out_norm = nn.LayerNorm(d_inner)
        self.in_proj = nn.Linear(d_model, d_inner, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner,
                                bias=conv_bias)
        ssm = ssm_parameters(d_inner, dt_rank, d_state, dt_min, dt_max, dt_init_floor)
        self.x_proj_weight = ssm.pop("x_proj_weight")
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        for name, param in ssm.items():  # dt_projs_weight, dt_projs_bias, A_logs, Ds
            self.register_parameter(name, param)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """[B, d_inner, H, W] → the 4 directions' scans merged, LN'd: [B, H, W, d_inner]."""
        b, _, h, w = x.shape
        y = ss2d_core(self, x)  # [B, d_inner, L]
        return self.out_norm(y.transpose(1, 2).reshape(b, h, w, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(x).permute(0, 3, 1, 2).contiguous()
        x = self.act(self.conv2d(x))
        y = self.forward_core(x).to(x.dtype)
        return self.dropout(self.out_proj(y))


class VSSBlock(nn.Module):
    """``x + DropPath(SS2D(LN(x)))``, then ``x + DropPath(MLP(LN(x)))``; channels-last."""

    def __init__(self, hidden_dim: int, drop_path: float = 0.0, ssm_d_state: int = 1, ssm_ratio: float = 2.0,
                 ssm_dt_rank: int | str = "auto", ssm_conv: int = 3, ssm_conv_bias: bool = False,
                 ssm_drop_rate: float = 0.0, mlp_ratio: float = 4.0, mlp_drop_rate: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.op = SS2D(hidden_dim, d_state=ssm_d_state, ssm_ratio=ssm_ratio, dt_rank=ssm_dt_rank,
                       d_conv=ssm_conv, conv_bias=ssm_conv_bias, dropout=ssm_drop_rate)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.mlp = Mlp(hidden_dim, int(hidden_dim * mlp_ratio), mlp_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------- backbone


class BackboneVSSM(nn.Module):
    """VMamba ``Backbone_VSSM`` (patch-embed v2, downsample v3, channels-last LN, per-stage out-norm).

    Returns the 4 stages' normalised outputs, [B, C_i, H/2^(i+2), W/2^(i+2)].
    """

    def __init__(self, depths=(2, 2, 15, 2), dims=128, drop_path_rate: float = 0.6, in_chans: int = 3,
                 **block_kwargs):
        super().__init__()
        if isinstance(dims, int):
            dims = [dims * 2 ** i for i in range(len(depths))]
        self.dims = list(dims)
        n = sum(depths)
        dpr = [drop_path_rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]  # torch.linspace(0, rate, n)
        d0 = self.dims[0]
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_chans, d0 // 2, kernel_size=3, stride=2, padding=1),
            Permute(0, 2, 3, 1), nn.LayerNorm(d0 // 2), Permute(0, 3, 1, 2), nn.GELU(),
            nn.Conv2d(d0 // 2, d0, kernel_size=3, stride=2, padding=1),
            Permute(0, 2, 3, 1), nn.LayerNorm(d0),
        )
        self.layers = nn.ModuleList()
        for i in range(len(depths)):
            if i < len(depths) - 1:
                dim, out = self.dims[i], self.dims[i + 1]
                downsample = nn.Sequential(Permute(0, 3, 1, 2), nn.Conv2d(dim, out, kernel_size=3, stride=2, padding=1),
                                           Permute(0, 2, 3, 1), nn.LayerNorm(out))
            else:
                downsample = nn.Identity()
            rates = dpr[sum(depths[:i]):sum(depths[:i + 1])]
            blocks = nn.Sequential(*(VSSBlock(self.dims[i], rate, **block_kwargs) for rate in rates))
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=downsample)))
        self.apply(self._init_weights)  # VSSM's init, applied before the out-norms are added (LN 1/0 anyway)
        for i, dim in enumerate(self.dims):
            self.add_module(f"outnorm{i}", nn.LayerNorm(dim))

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # [B, H/4, W/4, C]
        outs = []
        for i, layer in enumerate(self.layers):
            o = layer.blocks(x)
            x = layer.downsample(o)
            outs.append(getattr(self, f"outnorm{i}")(o).permute(0, 3, 1, 2).contiguous())
        return outs


# --------------------------------------------------------------------------- change decoder


class ResBlock(nn.Module):
    """Conv3×3-BN-ReLU-Conv3×3-BN + identity, ReLU (no bias)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False) + y


def interleave_columns(pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] × 2 → [B, C, H, 2W]: pre in the even columns, post in the odd ones."""
    return torch.stack([pre, post], dim=-1).flatten(-2)


class ChangeDecoder(nn.Module):
    """MambaCD's ChangeDecoder: three spatio-temporal VSSBlock branches per level, fusion, top-down.

    Args:
        encoder_dims: the 4 encoder widths (fine to coarse).
        channels: the decoder width (official: 128).
        drop_path: drop-path of the decoder's VSSBlocks (official: 0.1).
        block_kwargs: the VSSBlocks' SSM/MLP settings (the backbone's).
    """

    def __init__(self, encoder_dims, channels: int = 128, drop_path: float = 0.1, **block_kwargs):
        super().__init__()
        self.channels = channels
        for level in (4, 3, 2, 1):
            dim = encoder_dims[level - 1]
            for branch, cin in ((1, 2 * dim), (2, dim), (3, dim)):
                self.add_module(f"st_block_{level}{branch}", nn.Sequential(
                    nn.Conv2d(cin, channels, kernel_size=1), Permute(0, 2, 3, 1),
                    VSSBlock(channels, drop_path, **block_kwargs), Permute(0, 3, 1, 2)))
        for level in (4, 3, 2, 1):
            self.add_module(f"fuse_layer_{level}", nn.Sequential(
                nn.Conv2d(5 * channels, channels, kernel_size=1), nn.BatchNorm2d(channels), nn.ReLU()))
        for level in (3, 2, 1):
            self.add_module(f"smooth_layer_{level}", ResBlock(channels))

    def _level(self, level: int, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        w = pre.shape[-1]
        p1 = getattr(self, f"st_block_{level}1")(torch.cat([pre, post], dim=1))
        p2 = getattr(self, f"st_block_{level}2")(interleave_columns(pre, post))
        p3 = getattr(self, f"st_block_{level}3")(torch.cat([pre, post], dim=-1))
        maps = [p1, p2[..., ::2], p2[..., 1::2], p3[..., :w], p3[..., w:]]
        return getattr(self, f"fuse_layer_{level}")(torch.cat(maps, dim=1))

    def forward(self, pre_features, post_features) -> torch.Tensor:
        p = self._level(4, pre_features[3], post_features[3])
        for level in (3, 2, 1):
            fused = self._level(level, pre_features[level - 1], post_features[level - 1])
            p = getattr(self, f"smooth_layer_{level}")(_upsample_add(p, fused))
        return p


# --------------------------------------------------------------------------- the model


class STMambaBCD(nn.Module):
    """MambaBCD: shared VMamba encoder, ChangeDecoder, 1×1 classifier, bilinear to input size.

    Args:
        num_classes: output classes (official: 2).
        depths, dims, drop_path_rate: the backbone's stages (Base: [2, 2, 15, 2], 128, 0.6).
        decoder_channels, decoder_drop_path: the ChangeDecoder's width and drop-path (128, 0.1).
        ssm_d_state, ssm_ratio, ssm_dt_rank, ssm_conv, ssm_conv_bias, mlp_ratio: the SSM/MLP
            settings of every VSSBlock (Base: 1, 2.0, "auto", 3, False, 4.0).
        imagenet_input: convert the [-1, 1] input to the official ImageNet normalisation.
    Input: pre, post [B, 3, H, W] in [-1, 1]; output logits [B, num_classes, H, W].
    """

    def __init__(self, num_classes: int = 2, depths=(2, 2, 15, 2), dims=128, drop_path_rate: float = 0.6,
                 decoder_channels: int = 128, decoder_drop_path: float = 0.1, ssm_d_state: int = 1,
                 ssm_ratio: float = 2.0, ssm_dt_rank: int | str = "auto", ssm_conv: int = 3,
                 ssm_conv_bias: bool = False, mlp_ratio: float = 4.0, imagenet_input: bool = False):
        super().__init__()
        block_kwargs = dict(ssm_d_state=ssm_d_state, ssm_ratio=ssm_ratio, ssm_dt_rank=ssm_dt_rank,
                            ssm_conv=ssm_conv, ssm_conv_bias=ssm_conv_bias, mlp_ratio=mlp_ratio)
        self.imagenet_input = imagenet_input
        self.encoder = BackboneVSSM(depths, dims, drop_path_rate, **block_kwargs)
        self.decoder = ChangeDecoder(self.encoder.dims, decoder_channels, decoder_drop_path, **block_kwargs)
        self.main_clf = nn.Conv2d(decoder_channels, num_classes, kernel_size=1)

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        if self.imagenet_input:
            pre, post = imagenet_normalise(pre), imagenet_normalise(post)
        batch = pre.shape[0]
        features = self.encoder(torch.cat([pre, post], dim=0))  # shared encoder, no BatchNorm
        pre_features = [f[:batch] for f in features]
        post_features = [f[batch:] for f in features]
        out = self.main_clf(self.decoder(pre_features, post_features))
        return F.interpolate(out, size=pre.shape[-2:], mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- loss, weights


def lovasz_softmax(probas: torch.Tensor, labels: torch.Tensor, ignore: int | None = 255) -> torch.Tensor:
    """Lovász-softmax (Berman et al. 2018), ``classes="present"``, over the whole batch.

    probas: [B, C, H, W] class probabilities; labels: [B, H, W]. Pixels labelled ``ignore`` are
    left out. With hard (0/1) probabilities it equals the mean over present classes of 1 − IoU.
    """
    classes = probas.shape[1]
    probas = probas.permute(0, 2, 3, 1).reshape(-1, classes)
    labels = labels.reshape(-1)
    if ignore is not None:
        keep = labels != ignore
        probas, labels = probas[keep], labels[keep]
    losses = []
    for c in range(classes):
        fg = (labels == c).float()
        if fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        fg_sorted = fg[perm]
        total = fg_sorted.sum()
        intersection = total - fg_sorted.cumsum(0)
        union = total + (1 - fg_sorted).cumsum(0)
        jaccard = 1 - intersection / union
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors_sorted, grad))
    if not losses:
        return probas.sum() * 0.0
    return torch.stack(losses).mean()


def official_loss(logits: torch.Tensor, target: torch.Tensor, lovasz_weight: float = 0.75) -> torch.Tensor:
    """The official training loss: CE (ignore 255) + 0.75 · Lovász-softmax(softmax(logits))."""
    ce = F.cross_entropy(logits, target, ignore_index=255)
    return ce + lovasz_weight * lovasz_softmax(F.softmax(logits, dim=1), target, ignore=255)


def load_vmamba_backbone(model: STMambaBCD, path: str | Path) -> None:
    """Load the VMamba-Base ImageNet checkpoint into ``model.encoder`` as the official code does.

    The file is a torch pickle ``{"model": VSSM state dict, ...}``; its keys are the encoder's
    (no prefix) plus ``classifier.*``, which is dropped. Only the ``outnorm{i}`` LNs may be
    missing (the official load is ``strict=False`` and leaves them at their init); anything else
    missing or of another shape is an error.
    """
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=False)
    state = ckpt.get("model", ckpt)
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    own = model.encoder.state_dict()
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if any(not k.startswith("outnorm") for k in missing):
        raise ValueError(f"{path} does not fit the VMamba encoder: missing or mismatched {missing[:5]}")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ValueError(f"{path} has keys the VMamba encoder lacks: {unexpected[:5]}")
    model.encoder.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------- builders

#: A narrow MambaBCD with the same code path (works at 32×32: stages 8², 4², 2², 1²).
DEMO = {"depths": (1, 1, 1, 1), "dims": 16, "decoder_channels": 16, "drop_path_rate": 0.1}


def build(size: str, num_classes: int = 2, **options) -> STMambaBCD:
    if size == "demo":
        options = {**DEMO, **options}
    return STMambaBCD(num_classes=num_classes, **options)


SPECS = [
    ModelSpec("mambabcd-base", "MambaBCD-Base", "cd", 92.4, build,
              build_note="re-implemented ChenHongruixuan/MambaCD STMambaBCD (96c3240) with vssm_base_224.yaml: "
                         "VMamba-Base encoder (depths 2/2/15/2, dims 128-1024, d_state 1, v3noz, drop_path 0.6) "
                         "shared by both dates + ChangeDecoder (3 VSSBlock branches per level), 92.40M; "
                         "pure-PyTorch selective scan off CUDA; encoder from the VMamba-Base ImageNet weights "
                         f"({VMAMBA_BASE_CHECKPOINT}, Zenodo 14037770)",
              weights=(VMAMBA_BASE_CHECKPOINT,), weights_loader=lambda model, path: load_vmamba_backbone(model, path)),
]
