"""TinyUNet: a two-level U-Net, for SS (one image) and CD (the two dates stacked as 6 channels).

The suite calls ``build(size, num_classes, **options)`` and then ``model(image)`` (SS) or
``model(pre, post)`` (CD), each image a float tensor [B, 3, H, W] in the suite's
normalisation, and expects logits [B, num_classes, H, W]. H and W are multiples of 4.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines import ModelSpec

WIDTHS = {"paper": 64, "demo": 8}  # the first level's channels; the second has twice as many


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TinyUNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 64):
        super().__init__()
        w = width
        self.enc1, self.enc2 = _block(in_channels, w), _block(w, 2 * w)
        self.bottom = _block(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), _block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), _block(2 * w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        x = torch.cat(images, dim=1)  # CD: early fusion of the two dates
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        b = self.bottom(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


def build_ss(size: str, num_classes: int = 2, **options) -> TinyUNet:
    return TinyUNet(3, num_classes, WIDTHS[size], **options)


def build_cd(size: str, num_classes: int = 2, **options) -> TinyUNet:
    return TinyUNet(6, num_classes, WIDTHS[size], **options)


SPECS = [
    # key, the name the tables print, task, the parameter count (M) your paper reports, builder
    ModelSpec("tiny-unet-ss", "TinyUNet-SS", "ss", 1.86, build_ss, build_note="two-level U-Net, 64/128/256 channels"),
    ModelSpec("tiny-unet-cd", "TinyUNet-CD", "cd", 1.86, build_cd,
              build_note="two-level U-Net on the two dates stacked (6 channels)"),
]
