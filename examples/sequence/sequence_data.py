"""Fashion-MNIST as sequences: each image becomes [28 features, 28 steps] (a row per step), a 3-D input."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from hwprune.data import fashion_mnist


class Rows(Dataset):
    """(image [1, H, W], label) → (sequence [W, H]: pixel columns as features, rows as steps, label)."""

    def __init__(self, images: Dataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.images[i]
        return image[0].t().contiguous(), label


def build(data_dir: str | None = None, seed: int = 0) -> tuple[Dataset, Dataset, Dataset]:
    return tuple(Rows(split) for split in fashion_mnist.build(data_dir, seed))  # type: ignore[return-value]
