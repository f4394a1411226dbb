"""BIT (Chen, Qi & Shi, "Remote Sensing Image Change Detection with Transformers", IEEE TGRS
2022), re-implemented from justchenhao/BIT_CD (commit adcd7ae: ``models/networks.py::
BASE_Transformer``, ``models/help_funcs.py``, ``models/resnet.py``).

Configuration ``base_transformer_pos_s4_dd8_dedim8`` (the released checkpoint's, ``scripts/eval.sh``):
``BASE_Transformer(input_nc=3, output_nc=2, token_len=4, resnet_stages_num=4, with_pos="learned",
enc_depth=1, dec_depth=8, decoder_dim_head=8)``; 11,943,754 parameters = paper 11.9M.

* backbone (shared by both dates): ResNet-18 built with ``replace_stride_with_dilation=
  [False, True, True]``; BIT's BasicBlock resets the dilation to 1, so layer3/layer4 are plain
  stride-1 3×3 convs. The forward runs conv1-bn-relu-maxpool → layer1 → layer2 → layer3
  (256 ch, 1/8), nearest ×2 (1/4), ``conv_pred`` Conv3×3(256→32). layer4, avgpool and fc are
  registered but never called (8.91M of the 11.94M; the paper's count includes them, so they
  are kept at the paper size);
* tokenizer: Conv1×1(32→4, no bias), softmax over HW, 4 attention-pooled tokens per date;
* encoder: the 8 tokens of both dates + a learned position embedding (1, 8, 32), one pre-LN
  Transformer layer (8 heads × 64, qkv without bias, FFN 32→64→32 GELU), split per date;
  the attention scale is ``dim ** -0.5`` with dim = 32 (not dim_head), as in the official code;
* decoder: per date, the pixels query that date's 4 tokens, 8 pre-LN cross-attention layers
  (8 heads × 8, q/k/v without bias, one LayerNorm shared by query and memory, FFN 32→64→32);
* head: |f1 − f2| → bilinear ×4 (align_corners=False) → Conv3×3(32→32, no bias)-BN-ReLU-
  Conv3×3(32→classes): logits at the input resolution.

Module and parameter names follow the official code (``resnet.layer1.0.conv1``,
``transformer.layers.0.0.fn.fn.to_qkv``, ``transformer_decoder.layers.7.1.fn.fn.net.3``, ...), so
the official state dict (``checkpoints/BIT_LEVIR/best_ckpt.pt`` → ``model_G_state_dict``) loads
with ``load_state_dict`` unchanged.

Initialisation: as the official ``define_G`` → ``init_net(init_type="normal", gain=0.02)``, which
runs over the whole network *after* the ImageNet ResNet-18 weights were loaded: every Conv/Linear
weight ~ N(0, 0.02) with zero bias, every BatchNorm2d weight ~ N(1, 0.02) with zero bias
(LayerNorms keep 1/0, the position embedding keeps ``randn``). The ImageNet weights therefore do
not survive; only the BatchNorm running statistics (buffers) stay ImageNet's in the official
code, and training-mode BatchNorm replaces them within the first few hundred steps. The
official training thus effectively starts from random init, and the spec lists no checkpoint
(``weights=()``).

Official training recipe (``main_cd.py``, ``models/trainer.py``, ``scripts/run_cd.sh``), recorded
only (the suite trains every model with one shared loop): cross-entropy (ignore_index 255) on the
logits; SGD lr 0.01, momentum 0.9, weight decay 5e-4; linear decay to 0 over the epochs
(``1 - epoch / (max_epochs + 1)``); batch 8; 200 epochs (the ``main_cd.py`` default is 100);
input 256², normalised with mean = std = 0.5 (i.e. [-1, 1], what the suite feeds);
augmentation h/v flip, scale-random-crop (1-1.2), random Gaussian blur. The training script's
default net is ``base_transformer_pos_s4_dd8`` (decoder dim_head 64, 12,402,506 parameters); the
released checkpoint and the paper's 11.9M are the ``dedim8`` variant built here.

Known deviations from the official code:

* no einops: the rearranges are ``reshape``/``permute`` (same maths); the in-place
  ``tokens += pos_embedding`` is out of place; the ``self.tokens``/``self.tokens_`` attributes
  the official forward stores for visualisation are not kept;
* the unused tokenizer-free/pooling, ``with_decoder_pos`` and ``with_decoder=False`` branches and
  ``output_sigmoid`` are not implemented (all off in this configuration; no parameters);
* the official forward only matches the input size when H and W are multiples of 8; here the
  logits are bilinearly resized to the input size when they differ (a no-op for multiples of 8);
* ``num_classes`` sets the head's outputs (official: ``output_nc=2``); the unused ResNet fc keeps
  1000 outputs whatever ``num_classes`` is;
* the demo size (a few tens of thousands of parameters: narrow ResNet of one block per stage,
  token dim 16, 2 heads, decoder depth 1) drops the unused layer4/fc (``keep_unused=False``) so
  that every parameter gets a gradient; the paper size keeps them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines import ModelSpec


# --------------------------------------------------------------------------------------------
# Backbone: the ResNet-18 of models/resnet.py as BIT builds it
# --------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision's BasicBlock; BIT's copy ignores dilation (always 1)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-18 with ``replace_stride_with_dilation=[False, True, True]`` as BIT builds it.

    layer2 has stride 2; layer3 and layer4 have stride 1 (their dilation is dropped by BIT's
    BasicBlock), so layer3's output is at 1/8 of the input.

    Args:
        widths: channels of layer1..layer4 (ResNet-18: 64, 128, 256, 512).
        blocks: BasicBlocks per layer (ResNet-18: 2, 2, 2, 2).
        fc_classes: outputs of the (unused) classifier.
        keep_unused: build layer4, avgpool and fc, which BIT registers but never calls.
    """

    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), fc_classes: int = 1000,
                 keep_unused: bool = True):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[0], blocks[0])
        self.layer2 = self._make_layer(widths[1], blocks[1], stride=2)
        self.layer3 = self._make_layer(widths[2], blocks[2])  # stride 2 replaced by "dilation"
        if keep_unused:
            self.layer4 = self._make_layer(widths[3], blocks[3])  # idem; never called by BIT
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(widths[3] * BasicBlock.expansion, fc_classes)
        for m in self.modules():  # torchvision's init (overwritten by BIT's init_net afterwards)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# Transformer pieces of models/help_funcs.py (same nesting, so the state-dict keys match)
# --------------------------------------------------------------------------------------------
class TwoLayerConv2d(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x, *args):
        return self.fn(x, *args) + x


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))


class PreNorm2(PreNorm):
    """One LayerNorm applied to both the query and the memory."""

    def forward(self, x, m):
        return self.fn(self.norm(x), self.norm(m))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """b n (h d) -> b h n d"""
    b, n, _ = t.shape
    return t.reshape(b, n, heads, -1).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    """b h n d -> b n (h d)"""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head self-attention; the scale is dim^-0.5 (model dim), as in BIT."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.scale = dim ** -0.5
        self.to_qkv = nn.Linear(dim, dim_head * heads * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim_head * heads, dim), nn.Dropout(dropout))

    def forward(self, x):
        q, k, v = (_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out(_merge(attn @ v))


class CrossAttention(nn.Module):
    """BIT's ``Cross_Attention``: queries from x, keys/values from the memory m."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0,
                 softmax: bool = True):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.scale = dim ** -0.5
        self.softmax = softmax
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x, m):
        q = _heads(self.to_q(x), self.heads)
        k, v = _heads(self.to_k(m), self.heads), _heads(self.to_v(m), self.heads)
        dots = q @ k.transpose(-1, -2) * self.scale
        attn = dots.softmax(dim=-1) if self.softmax else dots
        return self.to_out(_merge(attn @ v))


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([
            Residual(PreNorm(dim, Attention(dim, heads, dim_head, dropout))),
            Residual(PreNorm(dim, FeedForward(dim, mlp_dim, dropout))),
        ]) for _ in range(depth)])

    def forward(self, x):
        for attn, ff in self.layers:
            x = ff(attn(x))
        return x


class TransformerDecoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int,
                 dropout: float = 0.0, softmax: bool = True):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([
            Residual(PreNorm2(dim, CrossAttention(dim, heads, dim_head, dropout, softmax))),
            Residual(PreNorm(dim, FeedForward(dim, mlp_dim, dropout))),
        ]) for _ in range(depth)])

    def forward(self, x, m):
        """x: the queries (pixels), m: the memory (tokens)."""
        for attn, ff in self.layers:
            x = ff(attn(x, m))
        return x


# --------------------------------------------------------------------------------------------
# BIT
# --------------------------------------------------------------------------------------------
class BIT(nn.Module):
    """BIT's ``BASE_Transformer`` with a ResNet-18 cut after layer3 (``resnet_stages_num=4``).

    Args:
        num_classes: output channels (logits).
        token_len: semantic tokens per date.
        enc_depth / dec_depth: Transformer encoder / decoder layers.
        dim: token and feature width (``conv_pred`` output; 32 in BIT).
        heads: attention heads (8 in BIT) of both encoder and decoder.
        dim_head / decoder_dim_head: per-head width of the encoder / decoder attention.
        widths / blocks / keep_unused: the ResNet backbone (see ``ResNet``).
        decoder_softmax: softmax in the decoder's cross-attention.
        init_gain: std of BIT's ``init_net`` normal init (None keeps PyTorch's defaults).
    """

    def __init__(self, num_classes: int = 2, token_len: int = 4, enc_depth: int = 1, dec_depth: int = 8,
                 dim: int = 32, heads: int = 8, dim_head: int = 64, decoder_dim_head: int = 8,
                 widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), keep_unused: bool = True,
                 decoder_softmax: bool = True, init_gain: float | None = 0.02):
        super().__init__()
        # ResNet.__init__ of models/networks.py
        self.resnet = ResNet(widths, blocks, keep_unused=keep_unused)
        self.relu = nn.ReLU()
        self.upsamplex2 = nn.Upsample(scale_factor=2)
        self.upsamplex4 = nn.Upsample(scale_factor=4, mode="bilinear")
        self.classifier = TwoLayerConv2d(dim, num_classes)
        self.conv_pred = nn.Conv2d(widths[2], dim, kernel_size=3, padding=1)
        # BASE_Transformer.__init__
        self.token_len = token_len
        self.conv_a = nn.Conv2d(dim, token_len, kernel_size=1, bias=False)
        self.pos_embedding = nn.Parameter(torch.randn(1, 2 * token_len, dim))
        self.transformer = Transformer(dim, enc_depth, heads, dim_head, mlp_dim=2 * dim)
        self.transformer_decoder = TransformerDecoder(dim, dec_depth, heads, decoder_dim_head,
                                                      mlp_dim=2 * dim, softmax=decoder_softmax)
        if init_gain is not None:
            init_net(self, init_gain)

    def forward_single(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resnet
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        x = r.layer3(r.layer2(r.layer1(x)))  # 1/8
        return self.conv_pred(self.upsamplex2(x))  # 1/4

    def semantic_tokens(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        attention = self.conv_a(x).reshape(b, self.token_len, -1).softmax(dim=-1)
        return torch.einsum("bln,bcn->blc", attention, x.reshape(b, c, -1))

    def decode(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.transformer_decoder(x.flatten(2).transpose(1, 2), tokens)
        return x.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.forward_single(pre), self.forward_single(post)
        tokens = torch.cat([self.semantic_tokens(x1), self.semantic_tokens(x2)], dim=1)
        token1, token2 = self.transformer(tokens + self.pos_embedding).chunk(2, dim=1)
        x = torch.abs(self.decode(x1, token1) - self.decode(x2, token2))
        x = self.classifier(self.upsamplex4(x))
        if x.shape[-2:] != pre.shape[-2:]:  # inputs whose sides are not multiples of 8
            x = F.interpolate(x, size=pre.shape[-2:], mode="bilinear", align_corners=False)
        return x


def init_net(net: nn.Module, gain: float = 0.02) -> None:
    """BIT's ``init_weights(init_type="normal")``: Conv/Linear N(0, gain), BatchNorm2d N(1, gain)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


PAPER = {}  # the constructor defaults are base_transformer_pos_s4_dd8_dedim8
DEMO = {"widths": (8, 16, 32, 32), "blocks": (1, 1, 1, 1), "keep_unused": False, "dim": 16,
        "heads": 2, "dim_head": 8, "decoder_dim_head": 8, "dec_depth": 1}


def build(size: str, num_classes: int = 2, **options) -> BIT:
    if size not in ("paper", "demo"):
        raise ValueError(f"size must be 'paper' or 'demo', got {size!r}")
    return BIT(num_classes=num_classes, **{**(DEMO if size == "demo" else PAPER), **options})


SPECS = [
    ModelSpec("bit", "BIT", "cd", 11.9, build,
              build_note="BASE_Transformer base_transformer_pos_s4_dd8_dedim8 (ResNet-18 to layer3, 4 tokens, "
                         "enc depth 1, dec depth 8 × dim_head 8); 11.94M incl. the unused ResNet layer4+fc "
                         "(3.04M take part in the forward); random init as the official init_net leaves it",
              weights=()),
]
