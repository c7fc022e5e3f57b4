"""A user-supplied model for `--config`: MobileNetV2-style blocks (depthwise convolutions, inverted
residuals) and an Inception-style concat branch, sized for 28×28 grey images."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
            ) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1×1 expand → 3×3 depthwise → 1×1 project; identity shortcut when shapes allow (couples channels)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.block = nn.Sequential(conv_bn(c_in, hidden), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                   conv_bn(hidden, c_out, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


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
