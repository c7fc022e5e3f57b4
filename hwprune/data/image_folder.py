"""`[data] image_folder`: (train, val, test) datasets from one subfolder of images per class, for users with
images but no data factory.

Every image is decoded with Pillow up front into one uint8 array, so a corrupt or odd-sized file stops the run
(exit 3, naming the file) before anything trains rather than mid-epoch, and an epoch reads memory, not disk.
Splits come from `train/`, `val/`, `test/` subfolders when the folder has them; a missing one is held out of
the training images, stratified by class, by the run's seed (`hwprune.data.splits`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hwprune.data.fashion_mnist import flip_and_shift
from hwprune.data.splits import Holdout, split
from hwprune.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # compared in lower case
SPLITS = ("train", "val", "test")
GRAY_MODES = ("1", "L", "LA")  # decoded as "L" (alpha dropped): one channel
HINT = "see README 'Data without code': one subfolder per class, images of one size, optional train/ val/ test/"


class ImageFolderDataset(Dataset):
    """uint8 images (N, C, H, W) → float32 (C, H, W) in [0, 1] with the class index; `classes` names the indices.

    With `augment` (the training split), the built-in example's light augmentation: a horizontal flip half the
    time and a shift of up to 2 pixels (zero padded). It draws from torch's global RNG, which every training run
    seeds (and checkpoints), so a resumed run matches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...],
                 augment: bool = False) -> None:
        self.images = images
        self.labels = labels
        self.classes = classes
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i].float().div_(255.0)
        return (flip_and_shift(x) if self.augment else x), int(self.labels[i])


@dataclass(frozen=True)
class Listing:
    """The image files of one split folder, with their class indices, in class then file-name order."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[Path, ...]
    labels: tuple[int, ...]


def _entries(folder: Path) -> list[Path]:
    """What a folder holds, sorted, hidden entries (.git, .DS_Store, .ipynb_checkpoints) left out."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})", hint="check its permissions"
                        ) from None


def _visible_dirs(folder: Path) -> list[str]:
    """Subfolder names, sorted: the classes (or the split folders)."""
    return [p.name for p in _entries(folder) if p.is_dir()]


def _layout(root: Path) -> dict[str, Path]:
    """The split folders: train/ (val/, test/) when present, else the folder itself is the training split."""
    if not (root / "train").is_dir():
        return {"train": root}
    strays = [name for name in _visible_dirs(root) if name not in SPLITS]
    if strays:
        raise DataError(f"{root}: has a train/ split folder and also '{strays[0]}/' beside it",
                        hint="with train/ (val/, test/) the class folders go inside each split folder")
    return {s: root / s for s in SPLITS if (root / s).is_dir()}


def _list(root: Path) -> Listing:
    classes = _visible_dirs(root)
    if not classes:
        raise DataError(f"{root}: no class subfolders (one subfolder per class, holding its images)", hint=HINT)
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[Path] = []
    for index, name in enumerate(classes):
        entries = [p for p in _entries(root / name) if p.is_file()]
        images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += [p for p in entries if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(f"{root / name}: class folder '{name}' holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})", hint="add its images or remove the folder")
        files += images
        labels += [index] * len(images)
    if skipped:
        log.warning("%s: skipped %d file(s) without an image extension (e.g. %s)", root, len(skipped), skipped[0])
    return Listing(root, tuple(classes), tuple(files), tuple(labels))


def _decode(path: Path) -> tuple[np.ndarray, str]:
    """(H, W) or (H, W, 3) uint8 pixels and the original mode; a file Pillow cannot decode fully is a DataError."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything: a truncated file fails here, not at first use
            mode = image.mode
            if mode.startswith("I") or mode == "F":
                raise DataError(f"{path}: {mode} images (16-bit or float pixels) are not supported",
                                hint="save the images with 8 bits per channel (grayscale or RGB)")
            return np.asarray(image.convert("L" if mode in GRAY_MODES else "RGB")), mode
    except DataError:
        raise
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, … on damaged files
        text = str(exc).strip().splitlines()
        raise DataError(f"{path}: cannot decode the image ({type(exc).__name__}: {text[0] if text else ''})",
                        hint="replace or remove the file") from None


def _family(mode: str) -> str:
    return "grayscale" if mode in GRAY_MODES else "colour"


def load_images(files: tuple[Path, ...]) -> torch.Tensor:
    """All files as one uint8 tensor (N, C, H, W): one size and one mode family (grayscale or colour) for all."""
    first, first_mode = _decode(files[0])
    images = np.empty((len(files), 1 if first.ndim == 2 else 3, *first.shape[:2]), dtype=np.uint8)
    for i, path in enumerate(files):
        pixels, mode = (first, first_mode) if i == 0 else _decode(path)
        if pixels.shape[:2] != first.shape[:2]:
            (h, w), (fh, fw) = pixels.shape[:2], first.shape[:2]
            raise DataError(f"{path} is {w}×{h} pixels but {files[0]} is {fw}×{fh}: all images must have one size",
                            hint="resize the images to one size")
        if _family(mode) != _family(first_mode):
            raise DataError(f"{path} is {_family(mode)} ({mode}) but {files[0]} is {_family(first_mode)} "
                            f"({first_mode}): all images must be grayscale or all colour",
                            hint="convert the images to one mode (e.g. all RGB)")
        images[i] = pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(images)


def build(root: Path, seed: int) -> tuple[ImageFolderDataset, ImageFolderDataset, ImageFolderDataset]:
    """(train, val, test); a split without its folder is a seeded, stratified 10 % of the training images."""
    if not root.is_dir():
        raise DataError(f"image folder {root} {'is not a folder' if root.exists() else 'does not exist'}",
                        hint="[data] image_folder is relative to the config file's folder; check the path")
    listings = {s: _list(folder) for s, folder in _layout(root).items()}
    classes = listings["train"].classes
    for listing in listings.values():
        if listing.classes != classes:
            missing = sorted(set(classes) - set(listing.classes))
            extra = sorted(set(listing.classes) - set(classes))
            raise DataError(f"{listing.root}: its class folders differ from {listings['train'].root}'s "
                            f"(missing: {', '.join(missing) or 'none'}; extra: {', '.join(extra) or 'none'})",
                            hint="every split folder needs the same class subfolders")
    images = load_images(tuple(f for listing in listings.values() for f in listing.files))
    labels = torch.tensor([label for listing in listings.values() for label in listing.labels], dtype=torch.int64)
    bounds = np.cumsum([0, *(len(listing.files) for listing in listings.values())])
    given = {s: np.arange(start, end) for s, start, end in zip(listings, bounds[:-1], bounds[1:])}
    train = given["train"]
    cut = Holdout(seed, val="val" not in given, test="test" not in given)
    kept, val, test = split(len(train), cut, str(listings["train"].root), labels=labels.numpy()[train])
    index = {"train": train[kept], "val": given.get("val", train[val]), "test": given.get("test", train[test])}
    # Indexing copies, so the datasets do not keep the whole decoded array alive.
    return tuple(ImageFolderDataset(images[torch.from_numpy(i)], labels[torch.from_numpy(i)], classes,  # type: ignore
                                    augment=s == "train") for s, i in index.items())
