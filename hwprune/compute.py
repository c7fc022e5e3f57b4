"""Where torch trains and scores: `[train] device` ("auto", "cpu", "cuda", "cuda:N") resolved against what this
torch build sees, with the autocast precision that pays there. Latencies are never measured here (that is
device.py: ONNX Runtime on the target); this is only the training workstation's accelerator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwprune.config import TrainConfig
from hwprune.errors import ConfigError


@dataclass(frozen=True)
class Compute:
    """A resolved training device and the autocast dtype on it (None: full float32)."""

    device: torch.device
    autocast: torch.dtype | None

    def describe(self) -> dict[str, str]:
        name = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU")
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.autocast]
        return {"device": str(self.device), "name": name, "precision": precision}


def resolve(config: TrainConfig) -> Compute:
    """`auto` is the first CUDA GPU when torch sees one, else the CPU; a GPU asked for and not there is a
    config error (exit 2), not a silent fall-back to hours of CPU training.

    Precision `auto` is bfloat16 autocast on a GPU that computes it natively (tensor cores: Ampere or newer),
    else float16 autocast on a GPU (with loss scaling), and float32 on the CPU (where bf16 is emulated on most
    CPUs and slower); `fp32`, `bf16` and `fp16` force one."""
    spec = config.device
    if spec == "auto":
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    elif spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"[train] device = '{spec}' but this torch ({torch.__version__}) sees no CUDA GPU",
                              hint="use device = 'auto' (the GPU when there is one) or 'cpu'; a CPU-only torch "
                                   "build needs the CUDA build of torch to train on a GPU")
        device = torch.device(spec if ":" in spec else "cuda:0")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"[train] device = '{spec}' but torch sees {torch.cuda.device_count()} GPU(s)",
                              hint="GPUs are numbered from cuda:0")
    else:
        device = torch.device("cpu")
    return Compute(device, _autocast(config.precision, device))


def _autocast(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("[train] precision = 'fp16' needs a CUDA device (float16 training on a CPU is "
                              "emulated and slow)", hint="use precision = 'bf16' or 'fp32' on the CPU")
        return torch.float16
    if device.type == "cuda":  # "auto"
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device | None) -> Iterator[nn.Module]:
    """`model` on `device` for a while, then back on the CPU (where slimming, export and checkpoints work)."""
    if device is None or device.type == "cpu":
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.cpu()


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors (also inside tuples, lists and dicts of a batch) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
