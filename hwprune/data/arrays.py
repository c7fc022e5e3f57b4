"""`[data] npz`: (train, val, test) datasets from a NumPy .npz file, for users with arrays but no data factory.

The file is read with `allow_pickle=False`, so nothing in it runs as code, and every array is checked here
(names, dtypes, ranks, lengths, shapes across splits, finite values, labels ≥ 0): bad data stops the run with
exit 3 naming the file and the array, before anything trains. A missing validation or test split is held out
of the training arrays by the run's seed (`hwprune.data.splits`).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hwprune.data.splits import Holdout, split
from hwprune.errors import DataError

SPLITS = ("train", "val", "test")
NAMES = tuple(f"{axis}_{s}" for s in SPLITS for axis in ("x", "y"))
HINT = ("save the arrays with np.savez(path, x_train=..., y_train=..., x_val=..., y_val=..., x_test=..., "
        "y_test=...) (val and test optional); see README 'Data without code'")
NUMERIC = ("f", "i", "u")  # dtype kinds: float, signed and unsigned integer
INT64_MAX = np.iinfo(np.int64).max


class ArrayDataset(Dataset):
    """Samples (x[i], y[i]) of two tensors held whole in memory (no augmentation: arrays are not images)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def _line(exc: BaseException) -> str:
    """An exception's text as one line: error messages are one line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def read(path: Path) -> dict[str, np.ndarray]:
    """Every array in the file, read eagerly, so a damaged member is found now rather than mid-training."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found",
                        hint="[data] npz is relative to the config file's folder; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an .npz file", hint="check [data] npz") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        reason = "it holds pickled data, which is never loaded" if "pickled" in str(exc) else _line(exc)
        raise DataError(f"cannot read {path} as a NumPy .npz file ({reason})", hint=HINT) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single .npy array, not named arrays (.npz)", hint=HINT)
    arrays = {}
    with archive:
        for name in archive.files:
            try:
                value = archive[name]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise DataError(f"{path}: array '{name}' holds Python objects (dtype=object), which are never "
                                    "loaded (they would need pickle)", hint="store numbers: " + HINT) from None
                raise DataError(f"{path}: array '{name}' is corrupt ({_line(exc)})", hint=HINT) from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DataError(f"{path}: array '{name}' is corrupt ({_line(exc)})", hint=HINT) from None
            if not isinstance(value, np.ndarray):
                raise DataError(f"{path}: member '{name}' is not a NumPy array", hint=HINT)
            arrays[name] = value
    return arrays


def _check_names(path: Path, arrays: dict[str, np.ndarray]) -> None:
    has = ", ".join(sorted(arrays)) or "no arrays"
    for name in ("x_train", "y_train"):
        if name not in arrays:
            raise DataError(f"{path}: required array '{name}' is missing (the file has: {has})", hint=HINT)
    for s in ("val", "test"):
        if (f"x_{s}" in arrays) != (f"y_{s}" in arrays):
            given, missing = (f"x_{s}", f"y_{s}") if f"x_{s}" in arrays else (f"y_{s}", f"x_{s}")
            raise DataError(f"{path}: '{given}' is given without '{missing}' (the file has: {has})",
                            hint=f"give both {given} and {missing}, or neither (then {s} is held out of train)")
    unknown = sorted(set(arrays) - set(NAMES))
    if unknown:
        raise DataError(f"{path}: unknown array '{unknown[0]}' (the file has: {has})",
                        hint=f"allowed arrays: {', '.join(NAMES)}")


def _first_bad(mask: np.ndarray) -> int:
    """Index of the first sample with any True in `mask` (samples along axis 0)."""
    return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


def _check_array(path: Path, name: str, a: np.ndarray) -> None:
    """One array on its own: numeric, non-empty, of an allowed rank, finite, labels ≥ 0 and within int64."""
    where = f"{path}: array '{name}'"
    if a.dtype.kind not in NUMERIC:
        raise DataError(f"{where} has dtype {a.dtype}; it must hold floats or integers", hint=HINT)
    if a.size == 0:
        raise DataError(f"{where} is empty (shape {a.shape})", hint=HINT)
    if name.startswith("x_") and a.ndim < 2:
        raise DataError(f"{where} has shape {a.shape}; x must be (samples, ...) with at least one value per sample",
                        hint="for one feature per sample use shape (samples, 1)")
    if name.startswith("y_"):
        if a.dtype.kind == "f" and a.ndim not in (1, 2):
            raise DataError(f"{where} has shape {a.shape}; float y must be 1-D (samples,) or 2-D (samples, "
                            "outputs) for multi-output regression", hint=HINT)
        if a.dtype.kind != "f" and a.ndim != 1:
            raise DataError(f"{where} has shape {a.shape}; integer y (class indices) must be 1-D (samples,)",
                            hint="store one class index per sample, or float targets for regression")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            raise DataError(f"{where} holds a non-finite value (nan or inf) in sample {_first_bad(bad)}",
                            hint="remove or repair those samples")
        return
    if a.dtype.kind == "u" and a.itemsize == 8 and int(a.max()) > INT64_MAX:
        raise DataError(f"{where} holds {int(a.max())}, beyond int64 (sample {_first_bad(a > INT64_MAX)})",
                        hint=HINT)
    if name.startswith("y_") and a.dtype.kind == "i" and int(a.min()) < 0:
        raise DataError(f"{where} holds a negative class index ({int(a.min())} in sample {_first_bad(a < 0)})",
                        hint="class indices run from 0 to classes − 1")


def _family(a: np.ndarray) -> str:
    return "float" if a.dtype.kind == "f" else "integer"


def _check_pair(path: Path, s: str, x: np.ndarray, y: np.ndarray, train: tuple[np.ndarray, np.ndarray]) -> None:
    """A split's x and y agree with each other and, past the sample axis, with the training split."""
    if len(x) != len(y):
        raise DataError(f"{path}: 'x_{s}' has {len(x)} samples but 'y_{s}' has {len(y)}",
                        hint="x and y of a split must have one entry per sample")
    for axis, a, ref in (("x", x, train[0]), ("y", y, train[1])):
        if a.shape[1:] != ref.shape[1:]:
            raise DataError(f"{path}: '{axis}_{s}' samples have shape {a.shape[1:]} but '{axis}_train' samples "
                            f"have {ref.shape[1:]}", hint="every split must hold samples of one shape")
        if _family(a) != _family(ref):
            raise DataError(f"{path}: '{axis}_{s}' holds {_family(a)}s ({a.dtype}) but '{axis}_train' holds "
                            f"{_family(ref)}s ({ref.dtype})", hint="store every split with the same kind of dtype")


def _tensor(a: np.ndarray) -> torch.Tensor:
    """Floats → float32; integers (class indices, token ids) → int64. Native byte order, contiguous."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32 if a.dtype.kind == "f" else np.int64))


def build(path: Path, seed: int) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset]:
    """(train, val, test) from the file; a split it lacks is a seeded 10 % of the training arrays."""
    arrays = read(path)
    _check_names(path, arrays)
    for name, a in arrays.items():
        _check_array(path, name, a)
    given = {s: (arrays[f"x_{s}"], arrays[f"y_{s}"]) for s in SPLITS if f"x_{s}" in arrays}
    for s, (x, y) in given.items():
        _check_pair(path, s, x, y, given["train"])
    x, y = given["train"]
    train_idx, val_idx, test_idx = split(len(y), Holdout(seed, val="val" not in given, test="test" not in given),
                                         str(path))
    parts = {"train": (x[train_idx], y[train_idx]),
             "val": given.get("val", (x[val_idx], y[val_idx])),
             "test": given.get("test", (x[test_idx], y[test_idx]))}
    return tuple(ArrayDataset(_tensor(px), _tensor(py)) for px, py in parts.values())  # type: ignore[return-value]
