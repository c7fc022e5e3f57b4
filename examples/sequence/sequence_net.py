"""A Conv1d/Linear network for sequences: [N, features, steps] → class logits.

Here each Fashion-MNIST image is read as a sequence of 28 rows (steps) of 28 pixels (features), the way a
recurrent or temporal-convolution model reads a signal; any [N, C, L] sequence data fits the same network
(set `features` and the config's input_shape).
"""

from __future__ import annotations

from torch import nn


def block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv1d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]


class SequenceNet(nn.Module):
    def __init__(self, features: int = 28, classes: int = 10) -> None:
        super().__init__()
        self.encoder = nn.Sequential(*block(features, 64), *block(64, 96, 2), *block(96, 128, 2),
                                     nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.encoder(x))


def build() -> nn.Module:
    return SequenceNet()
