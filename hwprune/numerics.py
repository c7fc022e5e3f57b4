"""Numerics of an exported model: ONNX Runtime's outputs against PyTorch's on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from hwprune.device import LOCAL, Device
from hwprune.errors import ExportError
from hwprune.targets import RuntimeSettings

TOLERANCE = 1e-4


@dataclass(frozen=True)
class NumericsCheck:
    max_abs_diff: float
    samples: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def compare_outputs(proto: onnx.ModelProto, model: nn.Module, inputs: list[torch.Tensor],
                    settings: RuntimeSettings, tolerance: float = TOLERANCE, device: Device = LOCAL) -> NumericsCheck:
    """Max |ORT − PyTorch| over `inputs` (each shaped like the export example), ONNX Runtime's run on
    `device` (this host, or the device behind an agent, with its own providers). Raises when above tolerance."""
    name = proto.graph.input[0].name
    payload = proto.SerializeToString()
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            expected = model.eval()(x).numpy()
            got = device.outputs(payload, settings, {name: x.numpy().astype(np.float32)})[0]
            worst = max(worst, float(np.max(np.abs(expected - got))))
    check = NumericsCheck(worst, len(inputs), tolerance)
    if not check.ok:
        raise ExportError(f"ONNX Runtime output differs from PyTorch by {worst:.2e} (> {tolerance:.0e})",
                          hint="an operator exports with different semantics; try another opset or rewrite it")
    return check
