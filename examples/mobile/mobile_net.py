"""A user-supplied model for `--config`: MobileNetV2-style blocks (depthwise convolutions, inverted
residuals) and an Inception-style concat branch, sized for 28×28 grey images."""

from __future__ import annotations

import torch
from torch import nn

# Building blocks may come from anywhere importable; here, hwprune's own MobileNetV2 blocks.
from hwprune.models.mobilenet_v2 import InvertedResidual, conv_bn


class ConcatBranch(nn.Module):
    """Two parallel branches joined by channel concatenation."""

    def __init__(self, c_in: int, c_a: int, c_b: int) -> None:
        super().__init__()
        self.a = conv_bn(c_in, c_a)
        self.b = conv_bn(c_in, c_b, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class MobileNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 16, 3),
            InvertedResidual(16, 16, 1, 2),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            ConcatBranch(24, 24, 24),
            InvertedResidual(48, 64, 2, 4),
            InvertedResidual(64, 64, 1, 4),
            conv_bn(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build() -> nn.Module:
    return MobileNet()
