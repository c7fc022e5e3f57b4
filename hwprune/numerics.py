"""Numerics of an exported model: ONNX Runtime's outputs against PyTorch's on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

from hwprune import inputs
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


def compare_outputs(proto: onnx.ModelProto, model: nn.Module, samples: list[inputs.Example],
                    settings: RuntimeSettings, tolerance: float = TOLERANCE, device: Device = LOCAL) -> NumericsCheck:
    """Max |ORT − PyTorch| over every output for `samples` (each shaped like the export example: one tensor, or
    a tuple for several inputs), ONNX Runtime's run on `device` (this host, or the device behind an agent, with
    its own providers). Raises when above tolerance."""
    graph_inputs = [(i.name, helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)) for i in proto.graph.input]
    payload = proto.SerializeToString()
    worst = 0.0
    with torch.no_grad():
        for x in samples:
            expected = [t.float().numpy() for t in inputs.outputs(inputs.call(model.eval(), x))]
            feeds = {name: t.numpy().astype(dtype) for (name, dtype), t in zip(graph_inputs, inputs.args(x))}
            got = device.outputs(payload, settings, feeds)
            if len(got) != len(expected):
                raise ExportError(f"the ONNX model has {len(got)} output(s), the PyTorch model {len(expected)}",
                                  hint="return tensors (or a tuple of them) from forward")
            for e, g in zip(expected, got):
                worst = max(worst, float(np.max(np.abs(e - g.astype(np.float32)))) if e.size else 0.0)
    check = NumericsCheck(worst, len(samples), tolerance)
    if not check.ok:
        raise ExportError(f"ONNX Runtime output differs from PyTorch by {worst:.2e} (> {tolerance:.0e})",
                          hint="an operator exports with different semantics; try another opset or rewrite it")
    return check
