"""The built-in example: a small VGG-style CNN for 28×28 grey images (Fashion-MNIST).

Takes float32 images in [0, 1], NCHW [N, 1, 28, 28], returns logits [N, 10]. Input scaling is learnt by
the first BatchNorm, so no normalisation step is needed outside the model.
"""

from __future__ import annotations

from torch import nn


def conv_block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class ExampleCNN(nn.Module):
    def __init__(self, widths: tuple[int, int, int, int, int] = (16, 32, 48, 64, 96), num_classes: int = 10):
        super().__init__()
        a, b, c, d, e = widths
        self.features = nn.Sequential(
            *conv_block(1, a), *conv_block(a, b), nn.MaxPool2d(2),
            *conv_block(b, c), *conv_block(c, d), nn.MaxPool2d(2),
            *conv_block(d, e), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(e, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def build(num_classes: int = 10) -> nn.Module:
    return ExampleCNN(num_classes=num_classes)
