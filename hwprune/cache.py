"""Trained dense networks kept on disk, keyed by everything that determines them.

Dense training is the expensive stage and the same for every target: `hwprune --target a --target b` trains
once, and later invocations with the same model, data and recipe reuse it. The key hashes the model as
built (architecture and seeded initial weights, whatever factory made it), a sample of the data, the
training recipe, the seed and the torch version. Entries are written atomically and loaded with
`weights_only=True`: a cache file can never run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hwprune import atomic, compute, paths
from hwprune.config import ProjectConfig

log = logging.getLogger(__name__)
FORMAT = 2  # 2: augmentation from the seeded global RNG


def _tensor_digest(h: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, torch.Tensor):
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().contiguous().cpu().numpy().tobytes())
    elif isinstance(value, tuple | list):
        for v in value:
            _tensor_digest(h, v)
    else:
        h.update(repr(value).encode())


def data_fingerprint(data: tuple[Dataset, ...], samples: int = 256) -> str:
    """Split sizes and an evenly strided sample of items: a changed dataset changes the key."""
    h = hashlib.sha256()
    with torch.random.fork_rng():  # augmenting datasets draw from the global RNG: same draws every time
        torch.manual_seed(0)
        for split in data:
            n = len(split)
            h.update(str(n).encode())
            for i in range(0, n, max(1, n // samples)):
                _tensor_digest(h, split[i])
    return h.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """Architecture (module tree) and the seeded initial weights."""
    h = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        _tensor_digest(h, tensor)
    return h.hexdigest()


def dense_key(config: ProjectConfig, model: nn.Module, data: tuple[Dataset, ...]) -> str:
    recipe = {k: v for k, v in dataclasses.asdict(config.train).items()
              if k not in ("threads", "retrain_epochs", "distill", "distill_temperature")}  # not dense training
    material = {"format": FORMAT, "model": model_fingerprint(model), "data": data_fingerprint(data),
                "train": {**recipe, "device": compute.resolve(config.train).device.type},  # "auto" resolved
                "metric": config.eval.metric,  # the entry keeps the dense network's score
                "rewind_fraction": config.imp.rewind_fraction, "seed": config.seed,
                "torch": torch.__version__}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class DenseEntry:
    model_state: dict[str, torch.Tensor]
    theta_k_state: dict[str, torch.Tensor]
    accuracy: float
    rewind_at: int
    iterations: int
    training_seconds: float


def load(cache_dir: Path, key: str) -> DenseEntry | None:
    """The cached entry, or None when absent or unreadable (then it is trained again and replaced)."""
    path = paths.cache_entry(cache_dir, key)
    if not path.exists():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return DenseEntry(raw["model"], raw["theta_k"], float(raw["accuracy"]), int(raw["rewind_at"]),
                          int(raw["iterations"]), float(raw["training_seconds"]))
    except Exception as exc:  # a truncated or foreign file: retrain rather than fail
        log.warning("ignoring unreadable dense cache entry %s (%s)", path, exc)
        return None


def store(cache_dir: Path, key: str, entry: DenseEntry) -> Path | None:
    """Write the entry atomically; a cache that cannot be written only costs the reuse (warning)."""
    buffer = io.BytesIO()
    torch.save({"model": entry.model_state, "theta_k": entry.theta_k_state, "accuracy": entry.accuracy,
                "rewind_at": entry.rewind_at, "iterations": entry.iterations,
                "training_seconds": entry.training_seconds}, buffer)
    path = paths.cache_entry(cache_dir, key)
    try:
        atomic.write_bytes(path, buffer.getvalue())
    except Exception as exc:
        log.warning("could not cache the dense model in %s (%s); the next run will train it again", cache_dir, exc)
        return None
    return path
