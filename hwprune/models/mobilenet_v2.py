"""MobileNetV2 (Sandler et al. 2018) scaled for 28×28 grey images.

The paper's block structure (1×1 expand → 3×3 depthwise → 1×1 linear projection, ReLU6, identity shortcut
when stride 1 and widths match) with fewer, narrower stages and two stride-2 stages instead of five, so
the 28×28 input ends at 7×7. Shortcuts couple the channels of a stage; depthwise convs tie their channels
to the expansion before them.
"""

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
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = [conv_bn(c_in, hidden)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, c_out, act=False)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 1), (6, 64, 2, 2), (6, 96, 2, 1))


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, stem: int = 32, last: int = 320) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(in_channels, stem, 3)]
        c_in = stem
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        layers.append(conv_bn(c_in, last))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build(num_classes: int = 10) -> nn.Module:
    return MobileNetV2(num_classes=num_classes)
