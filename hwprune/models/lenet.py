"""LeNet-300-100 (LeCun et al. 1998), the fully-connected network of the lottery-ticket paper (Frankle &
Carbin, ICLR 2019, Fig. 2): 784-300-100-10 with ReLU.

Takes float32 images in [0, 1], [N, 1, 28, 28] (flattened inside, so the built-in Fashion-MNIST loader feeds
it unchanged) or already flat [N, 784]; returns logits [N, 10]. The two hidden layers' neurons are its
prunable channels (groups `fc1`, `fc2`); the output layer is never pruned.
"""

from __future__ import annotations

from torch import nn


class LeNet300(nn.Module):
    def __init__(self, inputs: int = 784, hidden: tuple[int, int] = (300, 100), num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(inputs, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc3(self.relu(self.fc2(x)))


def build(num_classes: int = 10) -> nn.Module:
    return LeNet300(num_classes=num_classes)
