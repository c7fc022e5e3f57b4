"""Fashion-MNIST from IDX files (Debian's `dataset-fashion-mnist`), no download at run time."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hwprune.errors import DataError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "HWPRUNE_DATA"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
INSTALL_HINT = ("install it with `sudo apt-get install -y dataset-fashion-mnist`, or pass --data-dir / "
                f"set {ENV_VAR} to a folder with the four IDX files (optionally .gz)")
VAL_SIZE = 5000
CLASSES = 10


def resolve_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, then $HWPRUNE_DATA, then Debian's install location."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return DEFAULT_DIR


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"Fashion-MNIST file '{stem}[.gz]' not found in {folder}", hint=INSTALL_HINT)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (uint8 payload), checking magic number and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a gzip stream damaged inside
        raise DataError(f"cannot read {path}: {exc}", hint=INSTALL_HINT) from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number)",
                        hint="the file is corrupt; reinstall the dataset")
    ndim = raw[3]
    if ndim == 0:
        raise DataError(f"{path} is not an IDX array (0 dimensions)", hint="the file is corrupt; reinstall the dataset")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header needs {4 + 4 * ndim} bytes, the file has {len(raw)}",
                        hint="the file is corrupt; reinstall the dataset")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    payload = raw[4 + 4 * ndim:]
    expected = math.prod(dims)  # Python ints: np.prod of four 32-bit sizes can overflow
    if len(payload) != expected:
        raise DataError(f"{path} is {'truncated' if len(payload) < expected else 'longer than its header says'}: "
                        f"expected {expected} bytes, got {len(payload)}",
                        hint="the file is corrupt; reinstall the dataset")
    try:
        return np.frombuffer(payload, dtype=np.uint8).reshape(dims)
    except ValueError:  # e.g. a zero dimension beside one numpy cannot address (found by Hypothesis)
        raise DataError(f"{path} declares dimensions {list(dims)} that no array can have",
                        hint="the file is corrupt; reinstall the dataset") from None


class ImageDataset(Dataset):
    """uint8 images (N, H, W) → float32 (1, H, W) in [0, 1]; optional flip+shift augmentation.

    Augmentation draws from torch's global RNG, which every training run seeds (and checkpoints): a stage's
    result then depends on its own seed only, not on what earlier stages drew, so a resumed run matches.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool = False) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].float().div_(255.0).unsqueeze(0)
        return (flip_and_shift(x) if self.augment else x), int(self.labels[i])


def flip_and_shift(x: torch.Tensor) -> torch.Tensor:
    """Light augmentation of a [C, H, W] image: a horizontal flip half the time, a shift of up to 2 pixels
    (zero-filled), drawn from torch's global RNG."""
    flip, dy, dx = torch.randint(0, 5, (3,)).tolist()
    if flip % 2:
        x = x.flip(-1)
    return torch.nn.functional.pad(x, (2, 2, 2, 2))[:, dy:dy + x.shape[1], dx:dx + x.shape[2]]


def load_arrays(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    folder = resolve_dir(data_dir)
    if not folder.is_dir():
        raise DataError(f"Fashion-MNIST folder {folder} does not exist", hint=INSTALL_HINT)
    arrays = {}
    for key, stem in FILES.items():
        path = _find(folder, stem)
        arrays[key] = array = read_idx(path)
        ndim = 3 if key.endswith("images") else 1  # (N, H, W) images, (N,) labels
        if array.ndim != ndim or not len(array):
            raise DataError(f"{path}: expected {'images (N, H, W)' if ndim == 3 else 'labels (N,)'} with N ≥ 1, "
                            f"got shape {array.shape}", hint="the file is corrupt or not Fashion-MNIST")
        if ndim == 1 and array.max() >= CLASSES:
            raise DataError(f"{path}: label {int(array.max())} is out of range (Fashion-MNIST has {CLASSES} "
                            "classes)", hint="the file is corrupt or not Fashion-MNIST")
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(f"{folder}: {split} images and labels differ in count", hint=INSTALL_HINT)
        if arrays[f"{split}_images"].shape[1:] != arrays["train_images"].shape[1:]:
            raise DataError(f"{folder}: train and test images differ in size", hint=INSTALL_HINT)
    return arrays


def build(data_dir: str | None = None, seed: int = 0, limit: int | None = None
          ) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, test): 55k/5k split of the training set by a seeded permutation, 10k test.

    `limit` caps every split (for quick tests).
    """
    a = load_arrays(data_dir)
    order = np.random.default_rng(seed).permutation(len(a["train_labels"]))
    val_idx, train_idx = order[:VAL_SIZE], order[VAL_SIZE:]
    cap = (lambda idx: idx[:limit]) if limit else (lambda idx: idx)
    test_idx = np.arange(len(a["test_labels"]))
    return (
        ImageDataset(a["train_images"][cap(train_idx)], a["train_labels"][cap(train_idx)], augment=True),
        ImageDataset(a["train_images"][cap(val_idx)], a["train_labels"][cap(val_idx)]),
        ImageDataset(a["test_images"][cap(test_idx)], a["test_labels"][cap(test_idx)]),
    )
