"""CGNet-CD (Han, Wu, Hu, Wang & Chen, "Change Guiding Network: Incorporating Change Prior to
Guide Change Detection in Remote Sensing Imagery", IEEE JSTARS 2023), re-implemented from
ChengxiHAN/CGNet-CD (HEAD 7db98be: ``network/CGNet.py`` class ``CGNet``, ``train_CGNet.py``).

Architecture (``CGNet()``; 38,989,317 parameters with the official 1-channel outputs = paper 39.0M):

* Siamese encoder: VGG16-BN ``features`` (13 × Conv3×3-BN-ReLU, 5 max-pools), split as the
  official code does: ``inc = features[:5]`` (64 ch, full res, ends after the 2nd BN),
  ``down1 = [5:12]`` (128, 1/2), ``down2 = [12:22]`` (256, 1/4), ``down3 = [22:32]`` (512, 1/8),
  ``down4 = [32:42]`` (512, 1/16); each split starts with the previous stage's ReLU (and max-pool)
  and ends at a BatchNorm; the last ReLU and max-pool (42, 43) are never applied.
* fusion per level: ``conv_reduce_k`` = BasicConv2d(2C→C, 3×3, no bias, BN, ReLU) on
  concat(post, pre) (the official order: ``cat(B, A)``).
* coarse change map: ``decoder`` = BasicConv2d(512→64) + Conv3×3(64→classes) on layer4
  bilinearly upsampled (align_corners) to layer1's size (1/2).
* Change Guide Modules ``cgm_4`` (on layer4), ``cgm_3`` (on the decoder_module4 output),
  ``cgm_2`` (on the decoder_module3 output): guide g = P(change) of the coarse map interpolated to
  the feature size; q, k = Conv1×1(C→C/8)·(1+g), v = Conv1×1(C→C)·(1+g); softmax(qᵀk) over all
  HW positions (unscaled); out = γ·(v·attnᵀ) + x with γ initialised to 0.
* decoder: ``decoder_module4`` BasicConv2d(1024→512) on [up2(cgm4), layer3];
  ``decoder_module3`` BasicConv2d(768→256) on [up2(cgm3), layer2]; ``decoder_module2``
  BasicConv2d(384→128) on [up2(cgm2), layer1]; ``decoder_final`` BasicConv2d(128→64) +
  Conv1×1(64→classes); both maps are upsampled (bilinear, align_corners) to the input size.
* ``up_layer2/3/4`` (BasicConv2d 256/512/512, 5.31M) are defined but never called in the
  official forward; they are registered here too (the paper's 39.0M counts them) and frozen
  (``requires_grad=False``) since they never receive a gradient.

Parameter counts (checked in tests/test_changeformer_cgnet.py): official 1-channel build
38,989,317 (VGG16-BN features 14,723,136; unused up_layers 5,310,976); with ``num_classes=2``
(the suite's build) the two last convs gain 577 + 65 = 642 parameters: **38,989,959** (paper
39.0, −0.03 %), of which 33,678,983 take part in the forward (all but the up_layers).

Outputs. ``forward(pre, post)`` returns the final map's logits [B, classes, H, W] (what the
suite's shared cross-entropy loop trains and what official inference uses, ``preds[1]``).
``forward_both(pre, post)`` returns ``(coarse, final)`` in the official order, both at input
size; the official loss is the sum of the losses of both (:func:`deep_supervision_loss`).
With ``num_classes=1`` the model is the official BCE one (guide = sigmoid(logit)); with 2 or
more classes the guide is 1 − softmax(coarse)[background], which for 2 classes equals
sigmoid(l₁ − l₀), i.e. exactly the official guide with logit l₁ − l₀.

Memory. The CGMs attend over all HW positions: at 256² input the 1/4-scale CGM builds a
4096 × 4096 attention per image (16.7M entries, 64 MiB in float32, plus its gradient) and the
coarse head runs a 512→64 3×3 conv at 1/2 scale: heavy, as in the official code. The attention
goes through ``F.scaled_dot_product_attention(scale=1)`` (same maths; a fused kernel where the
backend has one).

Official training recipe (``train_CGNet.py``, ``utils/data_loader.py``): images resized to 256
and normalised with mean = std = 0.5 (i.e. [-1, 1], as the suite feeds), despite the ImageNet
encoder; augmentation: mosaic (p≈0.75), flips, crop, rotation, colour enhancement, label
"pepper" noise; loss ``BCEWithLogitsLoss(coarse) + BCEWithLogitsLoss(final)``; AdamW lr 5e-4,
weight decay 0.0025, CosineAnnealingWarmRestarts(T_0=15, T_mult=2) stepped per epoch; batch 8;
50 epochs. Initialisation: the encoder from ImageNet VGG16-BN (``models.vgg16_bn(pretrained=True)``),
everything else PyTorch's default init, γ = 0.

Weights. The encoder is the submodule ``encoder`` whose ``features`` Sequential has exactly
torchvision's VGG16-BN ``features`` indices (0-41; the two parameter-free tail modules 42-43 are
left out), so a torchvision/timm VGG16-BN checkpoint loads into ``model.encoder`` with its keys
unchanged (``features.N.*``; the classifier keys are extra). The official CGNet checkpoints use
``inc.N`` / ``down1.N`` / ... for the same layers: :func:`from_official_state_dict` renames them
(the layer indices are the same, since slicing an ``nn.Sequential`` keeps its indices).

Known deviations from the official code:

* the encoder is registered as ``encoder.features.{0..41}`` instead of ``inc/down1..down4``
  (same layers and indices, see above); random init follows torchvision's VGG init (kaiming
  fan-out) where the official code loads ImageNet weights;
* 2-class outputs for cross-entropy instead of the official 1-channel BCE outputs (configurable);
* up-sampling to the skip's size instead of a fixed ×2 (identical for inputs divisible by 16,
  the only sizes the official code accepts);
* the CGM does not keep ``self.energy`` / ``self.attention`` (visualisation attributes);
* the unused ``up_layer*`` are frozen.

The demo size keeps every module and the code path with VGG widths 16/32/32/32/32 (the same
2/2/3/3/3 convs per stage and the same split indices) and a 16-channel head (271,535
parameters); inputs must be multiples of 16 (32 and 64 work).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines import ModelSpec

VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
STAGE_SLICES = ((0, 5), (5, 12), (12, 22), (22, 32), (32, 42))
"""The official split of ``vgg16_bn.features``: inc, down1, down2, down3, down4."""
OFFICIAL_PREFIXES = ("inc", "down1", "down2", "down3", "down4")


def vgg16_bn_features(widths: Sequence[int] = (64, 128, 256, 512, 512), in_channels: int = 3) -> nn.Sequential:
    """torchvision's ``vgg16_bn().features[:42]`` with stage widths ``widths``, torchvision's init.

    Indices match torchvision's (Conv, BN, ReLU per conv; a MaxPool after each stage); the final
    ReLU (42) and MaxPool (43), which CGNet never applies and which hold no parameters, are omitted.
    """
    layers: list[nn.Module] = []
    cin = in_channels
    for stage, (width, n_convs) in enumerate(zip(widths, VGG16_CONVS_PER_STAGE, strict=True)):
        if stage:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        for _ in range(n_convs):
            conv = nn.Conv2d(cin, width, kernel_size=3, padding=1)
            if not conv.weight.is_meta:  # normal_ is slow on the meta device, and pointless there
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
            layers += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
    return nn.Sequential(*layers[:STAGE_SLICES[-1][1]])


class VGGEncoder(nn.Module):
    """VGG16-BN features, run as CGNet's five stages; returns the outputs of down1..down4."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512, 512)):
        super().__init__()
        self.features = vgg16_bn_features(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for start, stop in STAGE_SLICES:
            for i in range(start, stop):
                x = self.features[i](x)
            outs.append(x)
        return outs[1:]  # layer1 (1/2) … layer4 (1/16); the inc output only feeds down1


class BasicConv2d(nn.Module):
    """Conv(no bias)-BN-ReLU."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ChangeGuideModule(nn.Module):
    """Self-attention over all positions, with q, k, v scaled by (1 + change guide)."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``guide``: change probability [B, 1, H, W] at x's size."""
        b, c, h, w = x.shape
        scale = 1 + guide
        q = (self.query_conv(x) * scale).flatten(2).transpose(1, 2)  # B, HW, C/8
        k = (self.key_conv(x) * scale).flatten(2).transpose(1, 2)
        v = (self.value_conv(x) * scale).flatten(2).transpose(1, 2)  # B, HW, C
        # out[:, i] = sum_j softmax_j(q_i · k_j) v_j  (official: bmm(v, attnᵀ), no 1/sqrt(d) scale)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]
        return self.gamma * out.transpose(1, 2).reshape(b, c, h, w) + x


def _up_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``nn.UpsamplingBilinear2d(scale_factor=2)`` (align_corners) when sizes double exactly."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=True)


class CGNet(nn.Module):
    """CGNet-CD: ``forward(pre, post)`` → final logits [B, num_classes, H, W].

    Args:
        num_classes: output channels of both maps (2 for cross-entropy; 1 is the official BCE model).
        widths: VGG16-BN stage widths (64, 128, 256, 512, 512); the decoder follows them.
        head_width: hidden width of the coarse and final heads (64).
    """

    def __init__(self, num_classes: int = 2, widths: Sequence[int] = (64, 128, 256, 512, 512), head_width: int = 64):
        super().__init__()
        _, w1, w2, w3, w4 = widths
        self.num_classes = num_classes
        self.encoder = VGGEncoder(widths)

        self.conv_reduce_1 = BasicConv2d(2 * w1, w1, 3, 1, 1)
        self.conv_reduce_2 = BasicConv2d(2 * w2, w2, 3, 1, 1)
        self.conv_reduce_3 = BasicConv2d(2 * w3, w3, 3, 1, 1)
        self.conv_reduce_4 = BasicConv2d(2 * w4, w4, 3, 1, 1)

        # Defined but unused in the official CGNet.forward: kept for the parameter count, frozen.
        self.up_layer4 = BasicConv2d(w4, w4, 3, 1, 1)
        self.up_layer3 = BasicConv2d(w3, w3, 3, 1, 1)
        self.up_layer2 = BasicConv2d(w2, w2, 3, 1, 1)
        for unused in (self.up_layer4, self.up_layer3, self.up_layer2):
            unused.requires_grad_(False)

        self.decoder = nn.Sequential(BasicConv2d(w4, head_width, 3, 1, 1), nn.Conv2d(head_width, num_classes, 3, 1, 1))
        self.decoder_final = nn.Sequential(BasicConv2d(w1, head_width, 3, 1, 1), nn.Conv2d(head_width, num_classes, 1))

        self.cgm_2 = ChangeGuideModule(w2)
        self.cgm_3 = ChangeGuideModule(w3)
        self.cgm_4 = ChangeGuideModule(w4)

        self.decoder_module4 = BasicConv2d(w4 + w3, w3, 3, 1, 1)
        self.decoder_module3 = BasicConv2d(w3 + w2, w2, 3, 1, 1)
        self.decoder_module2 = BasicConv2d(w2 + w1, w1, 3, 1, 1)

    def _change_probability(self, logits: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 1:
            return torch.sigmoid(logits)
        return 1 - torch.softmax(logits, dim=1)[:, :1]

    def _guide(self, coarse: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # The official code interpolates the logits, then applies the sigmoid.
        return self._change_probability(F.interpolate(coarse, x.shape[-2:], mode="bilinear", align_corners=True))

    def forward_both(self, pre: torch.Tensor, post: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(coarse, final) logits at input size, as the official forward returns them."""
        size = pre.shape[-2:]
        feats_a, feats_b = self.encoder(pre), self.encoder(post)
        layer1, layer2, layer3, layer4 = (
            reduce(torch.cat((b, a), dim=1))
            for reduce, a, b in zip((self.conv_reduce_1, self.conv_reduce_2, self.conv_reduce_3, self.conv_reduce_4),
                                    feats_a, feats_b, strict=True))

        coarse = self.decoder(_up_to(layer4, layer1))  # at 1/2

        layer4 = self.cgm_4(layer4, self._guide(coarse, layer4))
        feature4 = self.decoder_module4(torch.cat([_up_to(layer4, layer3), layer3], 1))
        layer3 = self.cgm_3(feature4, self._guide(coarse, feature4))
        feature3 = self.decoder_module3(torch.cat([_up_to(layer3, layer2), layer2], 1))
        layer2 = self.cgm_2(feature3, self._guide(coarse, feature3))
        layer1 = self.decoder_module2(torch.cat([_up_to(layer2, layer1), layer1], 1))

        coarse = F.interpolate(coarse, size, mode="bilinear", align_corners=True)
        final = F.interpolate(self.decoder_final(layer1), size, mode="bilinear", align_corners=True)
        return coarse, final

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        return self.forward_both(pre, post)[1]


def deep_supervision_loss(coarse: torch.Tensor, final: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official loss, loss(coarse) + loss(final): BCE-with-logits for 1 channel, else cross-entropy."""
    if coarse.shape[1] == 1:
        t = target.float().reshape(coarse.shape)
        return (F.binary_cross_entropy_with_logits(coarse, t) + F.binary_cross_entropy_with_logits(final, t))
    return F.cross_entropy(coarse, target) + F.cross_entropy(final, target)


def from_official_state_dict(state: dict) -> dict:
    """Rename an official CGNet state dict (``inc.N.*``, ``down1.N.*``, …) to this module tree."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        head, _, rest = key.partition(".")
        out[f"encoder.features.{rest}" if head in OFFICIAL_PREFIXES else key] = value
    return out


DEMO = dict(widths=(16, 32, 32, 32, 32), head_width=16)


def build(size: str, num_classes: int = 2, **options) -> CGNet:
    if size == "demo":
        options = {**DEMO, **options}
    return CGNet(num_classes=num_classes, **options)


SPECS = [
    ModelSpec("cgnet-cd", "CGNet-CD", "cd", 39.0, build,
              build_note="re-implemented ChengxiHAN/CGNet-CD CGNet() (7db98be): Siamese VGG16-BN encoder, "
                         "change guide modules at 1/16, 1/8, 1/4, unused up_layer2-4 kept (frozen); "
                         "2-class outputs (38,989,959 params; 33.68M used in the forward)",
              weights=("vgg16_bn.tv_in1k.safetensors",)),
]
