"""FC-Siam-conc (Daudt et al., ICIP 2018) with a ResNet-50 encoder.

The architecture of torchgeo's ``FCSiamConc`` / change_detection.pytorch's
``Unet(siam_encoder=True, fusion_form="concat")``: one encoder shared by both dates, a
U-Net decoder whose skips are the two dates' features concatenated. No public build gives
the paper's 43.7M; with ResNet-50 (the encoder of the other SMP baselines) it has 40.35M,
the figure the ±2 % check uses (../shared/notes/baselines.md).
"""

from __future__ import annotations

import torch
from torch import nn

from baselines import ModelSpec


class FCSiamConc(nn.Module):
    """Siamese U-Net with concatenation skips.

    Args:
        encoder_name: an smp encoder name.
        encoder_depth: encoder stages (3–5); decoder_channels must have as many entries.
        decoder_channels: widths of the decoder blocks.
        num_classes: output classes.
    """

    def __init__(self, encoder_name: str = "resnet50", encoder_depth: int = 5,
                 decoder_channels=(256, 128, 64, 32, 16), num_classes: int = 2):
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
        from segmentation_models_pytorch.encoders import get_encoder

        self.encoder = get_encoder(encoder_name, in_channels=3, depth=encoder_depth, weights=None)
        channels = list(self.encoder.out_channels)
        # Stage 0 is the input itself: only the post image's is passed on, as torchgeo does.
        fused = [channels[0]] + [2 * c for c in channels[1:]]
        self.decoder = UnetDecoder(encoder_channels=fused, decoder_channels=decoder_channels,
                                   n_blocks=encoder_depth)
        self.segmentation_head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        f1, f2 = self.encoder(pre), self.encoder(post)
        features = [f2[0]] + [torch.cat([b, a], dim=1) for a, b in zip(f1[1:], f2[1:], strict=True)]
        return self.segmentation_head(self.decoder(features))


def build(size: str, num_classes: int = 2, **options) -> FCSiamConc:
    if size == "demo":
        options = {"encoder_name": "tu-resnet18", "encoder_depth": 3, "decoder_channels": (32, 16, 8), **options}
    return FCSiamConc(num_classes=num_classes, **options)


SPECS = [
    ModelSpec("fc-siam-conc", "FCSiamConc", "cd", 43.7, build, reference_params_m=40.35,
              build_note="shared ResNet-50 encoder, U-Net decoder with concatenated skips (40.35M; no build gives 43.7M)",
              weights=("resnet50.imagenet.safetensors",)),
]
