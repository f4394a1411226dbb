"""RS3Mamba (Ma, Zhang & Pun, "RS3Mamba: Visual State Space Model for Remote Sensing Image
Semantic Segmentation", IEEE GRSL 2024), re-implemented from sstary/SSRS ``RS3Mamba/``
(commit 707b454: ``model/RS3Mamba.py``, ``model/SwinUMamba.py``).

Architecture (``RS3Mamba(decode_channels=64, dropout=0.1, backbone_name="swsl_resnet18",
window_size=8)``, 43.33M parameters = paper 43.3M):

* main branch: timm ResNet-18 (``features_only``, out_indices 1-4: 64/128/256/512 ch at 1/4-1/32);
* auxiliary branch: stem Conv7×7 s2 (3→48) + InstanceNorm(affine), then ``VSSMEncoder``
  (patch 2, dims 96/192/384/768, depths 2/2/9/2, d_state 16, drop_path 0.2); a VSSBlock is
  ``x + SS2D(LN(x))`` without MLP; SS2D = in_proj d→4d (x, z), DWConv3×3+SiLU, 4-direction
  selective scan, LN, ×SiLU(z), out_proj;
* a FusionBlock after every ResNet stage: window attention (rel-pos bias) on the ResNet features
  + ConvBN3×3/1×1 on the VSS features, strip pooling, SeparableConvBN, MLP; replaces the stream;
* UNetFormer decoder (decode 64 ch, GLTB blocks with 8 heads, window 8, WF fusions, feature
  refinement head), bilinear upsampling to the input size.

Module and parameter names follow the official code (``backbone``, ``vssm_encoder.layers.*``,
``Fuse.*``, ``decoder.*``), so the official ``load_pretrained_ckpt`` key mapping of the
VMamba-Tiny checkpoint applies unchanged.

Known deviations from the official code:

* random initialisation: no SWSL ResNet-18 or VMamba-Tiny weights are loaded here
  (the official training starts from both); the ResNet is timm ``resnet18`` (same architecture
  as ``swsl_resnet18``, the name timm 1.x keeps as a pretrained tag only);
* the selective scan is ``baselines.mamba.selective_scan``: mamba_ssm's fused kernel on CUDA
  where it imports, else a pure-PyTorch reference (exact, slow for long sequences);
* reflect padding falls back to replicate padding where the map is too small to reflect
  (the official code raises there, e.g. for the 1/32 map of inputs under ~160 px);
* window attention uses ``F.scaled_dot_product_attention`` with the rel-pos bias as an additive
  mask (the same maths); no einops/monai dependency; the decoder's ``init_weight`` is omitted
  (it touches no module in the official code either); inplace dropout is not inplace;
* the fusion window size is a parameter (official: FusionBlock's default 8, independent of
  ``window_size``); both are 8 at the paper size.

The suite feeds images in [-1, 1]; the official loader feeds pixel/255 in [0, 1] (no mean/std).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from baselines import ModelSpec
from baselines.mamba.ss2d import ss2d_core, ssm_parameters

# --------------------------------------------------------------------------- small layers


def _same_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, kernel_size=3, stride=1, bias=False):
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, _same_padding(kernel_size, stride), bias=bias),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, kernel_size=3, stride=1, bias=False):
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, _same_padding(kernel_size, stride), bias=bias),
                         nn.BatchNorm2d(cout))


class Conv(nn.Sequential):
    def __init__(self, cin, cout, kernel_size=3, stride=1, bias=False):
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, _same_padding(kernel_size, stride), bias=bias))


class SeparableConvBN(nn.Sequential):
    def __init__(self, cin, cout, kernel_size=3):
        super().__init__(nn.Conv2d(cin, cin, kernel_size, padding=_same_padding(kernel_size), groups=cin, bias=False),
                         nn.BatchNorm2d(cout),
                         nn.Conv2d(cin, cout, kernel_size=1, bias=False))


class Mlp(nn.Module):
    """1×1-conv MLP with ReLU6."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.ReLU6()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect padding, or replicate where a side is too small to reflect (official: error)."""
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    mode = "reflect" if max(left, right) < w and max(top, bottom) < h else "replicate"
    return F.pad(x, pad, mode=mode)


def _drop_path(p: float) -> nn.Module:
    from timm.layers import DropPath

    return DropPath(p) if p > 0 else nn.Identity()


# --------------------------------------------------------------------------- UNetFormer attention


class GlobalLocalAttention(nn.Module):
    """UNetFormer's global-local attention; with ``local_dim`` it is RS3Mamba's FusionAttention.

    The global part is window self-attention (relative position bias) on x; the local part is
    ConvBN3×3 + ConvBN1×1 on y (x itself when y is None); their sum goes through strip average
    pools and a SeparableConvBN.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, local_dim: int | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if window_size < 2 or window_size % 2:
            raise ValueError(f"window_size must be even and >= 2, got {window_size}")
        local_dim = local_dim or dim
        self.num_heads, self.ws = num_heads, window_size
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = Conv(dim, 3 * dim, kernel_size=1)
        self.local1 = ConvBN(local_dim, dim, kernel_size=3)
        self.local2 = ConvBN(local_dim, dim, kernel_size=1)
        self.proj = SeparableConvBN(dim, dim, kernel_size=window_size)
        self.attn_x = nn.AvgPool2d((window_size, 1), stride=1, padding=(window_size // 2 - 1, 0))
        self.attn_y = nn.AvgPool2d((1, window_size), stride=1, padding=(0, window_size // 2 - 1))
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
        coords = coords.flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window_size - 1) + rel[..., 1])
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hp, wp = x.shape
        ws, heads = self.ws, self.num_heads
        hh, ww, d = hp // ws, wp // ws, c // heads
        # 'b (qkv h d) (hh ws1) (ww ws2) -> qkv (b hh ww) h (ws1 ws2) d'
        qkv = self.qkv(x).reshape(b, 3, heads, d, hh, ws, ww, ws)
        q, k, v = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, b * hh * ww, heads, ws * ws, d)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.reshape(ws * ws, ws * ws, heads).permute(2, 0, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0), scale=self.scale)
        # '(b hh ww) h (ws1 ws2) d -> b (h d) (hh ws1) (ww ws2)'
        out = out.reshape(b, hh, ww, heads, ws, ws, d).permute(0, 3, 6, 1, 4, 2, 5)
        return out.reshape(b, c, hp, wp)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        _, _, h, w = x.shape
        y = x if y is None else y
        local = self.local2(y) + self.local1(y)
        ws = self.ws
        x = _pad(x, (0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        attn = self._window_attention(x)[:, :, :h, :w]
        out = self.attn_x(_pad(attn, (0, 0, 0, 1))) + self.attn_y(_pad(attn, (0, 1, 0, 0)))
        out = self.proj(_pad(out + local, (0, 1, 0, 1)))
        return out[:, :, :h, :w]


class Block(nn.Module):
    """UNetFormer's GLTB: x + attn(BN(x)), x + MLP(BN(x))."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FusionBlock(nn.Module):
    """RS3Mamba's fusion of a ResNet stage (x, global attention) with a VSS stage (y, local convs)."""

    def __init__(self, dim: int, ssm_dim: int, num_heads: int = 16, window_size: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.normx = nn.BatchNorm2d(dim)
        self.normy = nn.BatchNorm2d(ssm_dim)
        self.attn = GlobalLocalAttention(dim, num_heads, window_size, local_dim=ssm_dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x, y):
        x = x + self.attn(self.normx(x), self.normy(y))
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------- UNetFormer decoder


class WF(nn.Module):
    """Weighted fusion of the upsampled decoder map and a (1×1-projected) skip."""

    def __init__(self, in_channels: int, decode_channels: int, eps: float = 1e-8):
        super().__init__()
        self.pre_conv = Conv(in_channels, decode_channels, kernel_size=1)
        self.weights = nn.Parameter(torch.ones(2))
        self.eps = eps
        self.post_conv = ConvBNReLU(decode_channels, decode_channels, kernel_size=3)

    def fuse(self, x, res):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        weights = F.relu(self.weights)
        weights = weights / (weights.sum() + self.eps)
        return self.post_conv(weights[0] * self.pre_conv(res) + weights[1] * x)

    def forward(self, x, res):
        return self.fuse(x, res)


class FeatureRefinementHead(WF):
    def __init__(self, in_channels: int, decode_channels: int):
        super().__init__(in_channels, decode_channels)
        dc = decode_channels
        self.pa = nn.Sequential(nn.Conv2d(dc, dc, 3, padding=1, groups=dc), nn.Sigmoid())
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), Conv(dc, dc // 16, kernel_size=1), nn.ReLU6(),
                                Conv(dc // 16, dc, kernel_size=1), nn.Sigmoid())
        self.shortcut = ConvBN(dc, dc, kernel_size=1)
        self.proj = SeparableConvBN(dc, dc, kernel_size=3)
        self.act = nn.ReLU6()

    def forward(self, x, res):
        x = self.fuse(x, res)
        shortcut = self.shortcut(x)
        x = self.pa(x) * x + self.ca(x) * x
        return self.act(self.proj(x) + shortcut)


class Decoder(nn.Module):
    def __init__(self, encoder_channels, decode_channels: int, dropout: float, window_size: int,
                 num_classes: int, num_heads: int = 8):
        super().__init__()
        if decode_channels < 16:
            raise ValueError("decode_channels must be >= 16 (the refinement head's channel attention uses dc // 16)")
        self.pre_conv = ConvBN(encoder_channels[-1], decode_channels, kernel_size=1)
        self.b4 = Block(decode_channels, num_heads, window_size)
        self.b3 = Block(decode_channels, num_heads, window_size)
        self.p3 = WF(encoder_channels[-2], decode_channels)
        self.b2 = Block(decode_channels, num_heads, window_size)
        self.p2 = WF(encoder_channels[-3], decode_channels)
        self.p1 = FeatureRefinementHead(encoder_channels[-4], decode_channels)
        self.segmentation_head = nn.Sequential(ConvBNReLU(decode_channels, decode_channels),
                                               nn.Dropout2d(p=dropout),
                                               Conv(decode_channels, num_classes, kernel_size=1))

    def forward(self, res1, res2, res3, res4, h, w):
        x = self.b4(self.pre_conv(res4))
        x = self.b3(self.p3(x, res3))
        x = self.b2(self.p2(x, res2))
        x = self.segmentation_head(self.p1(x, res1))
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- VSS encoder


class SS2D(nn.Module):
    """2D selective scan (VMamba v0 SS2D as in SwinUMamba.py); channels-last [B, H, W, C] in and out."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_state = d_state
        self.d_inner = d_inner = expand * d_model
        self.dt_rank = dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=True)
        self.act = nn.SiLU()
        # x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds (official order)
        for name, param in ssm_parameters(d_inner, dt_rank, d_state, dt_min, dt_max, dt_init_floor).items():
            self.register_parameter(name, param)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """[B, d_inner, H, W] → the 4 directions' scans merged, [B, d_inner, H·W] (float32)."""
        return ss2d_core(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))
        y = self.forward_core(x).transpose(1, 2).reshape(b, h, w, -1)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """x + DropPath(SS2D(LN(x))), no MLP."""

    def __init__(self, hidden_dim: int, drop_path: float, d_state: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim)  # VSSLayer passes nn.LayerNorm (eps 1e-5)
        self.self_attention = SS2D(hidden_dim, d_state=d_state)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x):
        return x + self.drop_path(self.self_attention(self.ln_1(x)))


class VSSLayer(nn.Module):
    def __init__(self, dim: int, depth: int, drop_path: list[float], d_state: int):
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, drop_path[i], d_state) for i in range(depth))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class PatchEmbed2D(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging2D(nn.Module):
    """2×2 neighbours concatenated → LN(4C) → Linear(4C → 2C); odd sizes lose the last row/column."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        _, h, w, _ = x.shape
        x = x[:, : h - h % 2, : w - w % 2]
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class VSSMEncoder(nn.Module):
    """Patch embedding + 4 VSS stages; returns [input, stage1, ..., stage4] channels-first."""

    def __init__(self, patch_size: int = 2, in_chans: int = 48, depths=(2, 2, 9, 2), dims=(96, 192, 384, 768),
                 d_state: int = 16, drop_path_rate: float = 0.2):
        super().__init__()
        if any(b != 2 * a for a, b in zip(dims, dims[1:])):
            raise ValueError(f"VSS dims must double from stage to stage (patch merging), got {dims}")
        self.patch_embed = PatchEmbed2D(patch_size, in_chans, dims[0])
        n = sum(depths)
        dpr = [drop_path_rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]  # torch.linspace(0, rate, n)
        self.layers = nn.ModuleList(
            VSSLayer(dims[i], depths[i], dpr[sum(depths[:i]):sum(depths[:i + 1])], d_state) for i in range(len(depths)))
        self.downsamples = nn.ModuleList(PatchMerging2D(dims[i]) for i in range(len(depths) - 1))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        outs = [x]
        x = self.patch_embed(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            outs.append(x.permute(0, 3, 1, 2))
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
        return outs


# --------------------------------------------------------------------------- the model


class RS3Mamba(nn.Module):
    """RS3Mamba: ResNet main branch + VSS auxiliary branch, fused per stage, UNetFormer decoder.

    Args:
        num_classes: output classes.
        decode_channels, dropout, window_size: the decoder's width, dropout and window.
        fusion_window_size, fusion_heads: the FusionBlocks' window and heads (official 8, 16).
        decoder_heads: heads of the decoder's GLTB blocks (official 8).
        backbone: timm model name of the main branch; backbone_kwargs go to timm.create_model.
        stem_channels: the auxiliary stem's width (official 48).
        vss_dims, vss_depths, d_state, drop_path_rate, patch_size: the VSSMEncoder's settings.
    Input: [B, 3, H, W]; output logits [B, num_classes, H, W].
    """

    def __init__(self, num_classes: int = 2, decode_channels: int = 64, dropout: float = 0.1,
                 window_size: int = 8, fusion_window_size: int = 8, fusion_heads: int = 16, decoder_heads: int = 8,
                 backbone: str = "resnet18", backbone_kwargs: dict | None = None, stem_channels: int = 48,
                 vss_dims=(96, 192, 384, 768), vss_depths=(2, 2, 9, 2), d_state: int = 16,
                 drop_path_rate: float = 0.2, patch_size: int = 2):
        super().__init__()
        import timm

        self.backbone = timm.create_model(backbone, features_only=True, output_stride=32, out_indices=(1, 2, 3, 4),
                                          pretrained=False, **(backbone_kwargs or {}))
        # Aliases of the backbone's modules, as in the official code (parameters counted once).
        self.conv1, self.bn1, self.act1, self.maxpool = (self.backbone.conv1, self.backbone.bn1,
                                                         self.backbone.act1, self.backbone.maxpool)
        self.layers = nn.ModuleList([self.backbone.layer1, self.backbone.layer2,
                                     self.backbone.layer3, self.backbone.layer4])
        self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3),
                                  nn.InstanceNorm2d(stem_channels, eps=1e-5, affine=True))
        self.vssm_encoder = VSSMEncoder(patch_size, stem_channels, vss_depths, vss_dims, d_state, drop_path_rate)
        encoder_channels = self.backbone.feature_info.channels()
        self.decoder = Decoder(encoder_channels, decode_channels, dropout, window_size, num_classes, decoder_heads)
        self.Fuse = nn.ModuleList(FusionBlock(encoder_channels[i], vss_dims[i], fusion_heads, fusion_window_size)
                                  for i in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        vss_outs = self.vssm_encoder(self.stem(x))
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        feats = []
        for layer, fuse, y in zip(self.layers, self.Fuse, vss_outs[1:], strict=True):
            x = fuse(layer(x), y)
            feats.append(x)
        return self.decoder(*feats, h, w)


# A narrow RS3Mamba with the same code path: tiny ResNet (1 block per stage), 4 VSS stages of
# depth 1 with d_state 4, window 4 (works at 32×32 input, where the 1/32 map is 1×1).
DEMO = {
    "decode_channels": 16, "window_size": 4, "fusion_window_size": 4, "fusion_heads": 4, "decoder_heads": 4,
    "backbone_kwargs": {"layers": (1, 1, 1, 1), "channels": (16, 24, 32, 48), "stem_width": 16},
    "stem_channels": 8, "vss_dims": (8, 16, 32, 64), "vss_depths": (1, 1, 1, 1), "d_state": 4,
    "drop_path_rate": 0.2,
}


def build(size: str, num_classes: int = 2, **options) -> RS3Mamba:
    if size == "demo":
        options = {**DEMO, **options}
    return RS3Mamba(num_classes=num_classes, **options)


# The official load_pretrained_ckpt: VMamba-Tiny's backbone keys into vssm_encoder, without
# its patch embedding (RS3Mamba's stem differs) and final norm/head.
_VMAMBA_SKIP = {"norm.weight", "norm.bias", "head.weight", "head.bias", "patch_embed.proj.weight",
                "patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"}


def load_vmamba_tiny(model: RS3Mamba, path) -> None:
    """Load ``vmamba_tiny_e292.pth`` into the VSS branch as sstary/SSRS does (its key renaming:
    ``layers.i.downsample`` → ``downsamples.i``); a key of another shape is an error."""
    import re

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    own = model.vssm_encoder.state_dict()
    loaded = {}
    for key, value in ckpt.get("model", ckpt).items():
        if key in _VMAMBA_SKIP:
            continue
        key = re.sub(r"^layers\.(\d+)\.downsample", r"downsamples.\1", key)
        if key in own:
            if value.shape != own[key].shape:
                raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}")
            loaded[key] = value
    if not loaded:
        raise ValueError(f"{path} holds no VMamba-Tiny encoder weights")
    model.vssm_encoder.load_state_dict({**own, **loaded})


def load_pretrained(model: RS3Mamba, path) -> None:
    """The two checkpoints of the official setup, told apart by file name."""
    from noise2map.weights import load_into

    if "vmamba" in str(path):
        load_vmamba_tiny(model, path)
    else:
        load_into(model.backbone, path)


SPECS = [
    ModelSpec("rs3mamba", "RS3Mamba", "ss", 43.3, build,
              build_note="re-implemented sstary/SSRS RS3Mamba (707b454): ResNet-18 + VSS branch (dims 96-768, "
                         "depths 2/2/9/2, d_state 16), fusion per stage, UNetFormer decoder 64 ch, window 8; "
                         "pure-PyTorch selective scan off CUDA; SWSL ResNet-18 and VMamba-Tiny ImageNet weights",
              weights=("resnet18.fb_swsl_ig1b_ft_in1k.safetensors", "vmamba_tiny_e292.pth"),
              weights_loader=load_pretrained),
]
