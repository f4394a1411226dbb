"""Decoder blocks that ChangeFormer-v6 and ELGC-Net share (ELGC-Net's decoder grew out of
ChangeFormer's code). Attribute names follow the official modules so checkpoints load as is."""

from __future__ import annotations

import torch
from torch import nn


class ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.conv2d = nn.Conv2d(cin, cout, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x)


class UpsampleConvLayer(nn.Module):
    """ConvTranspose2d(k, s, padding 1): ×2 upsampling for k = 4, s = 2."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 4, stride: int = 2):
        super().__init__()
        self.conv2d = nn.ConvTranspose2d(cin, cout, kernel_size, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x)


class ResidualBlock(nn.Module):
    """x + 0.1 · conv(ReLU(conv(x)))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, 1, 1)
        self.conv2 = ConvLayer(channels, channels, 3, 1, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * 0.1
