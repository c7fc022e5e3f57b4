"""Analytic latency for devices this host cannot measure: a roofline over the exported graph's kernels.

kernel time = max(FLOPs / (peak · compute efficiency), bytes / (bandwidth · memory efficiency)) + launch
overhead, channel counts padded up to the device's vector width (its channel alignment). Every number comes
from the profile file, where each is cited. The method's error is measured on the x86 reference host by
`benchmarks/latency_prediction.py` (its `analytic` columns), and reported as such, never as a measurement.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwprune.onnxgraph import Kernel

_BYTES = {1: 4, 10: 2, 16: 2, 7: 8, 6: 4}  # ONNX element type → bytes (float, float16, bfloat16, int64, int32)


# plausible bounds of each figure: GFLOP/s and GB/s of anything from a microcontroller to a data-centre GPU
_RANGES = {"peak_gflops": (1e-3, 1e9), "memory_gbps": (1e-3, 1e9), "compute_efficiency": (1e-3, 1.0),
           "memory_efficiency": (1e-3, 1.0), "kernel_overhead_us": (0.0, 1e9), "call_overhead_us": (0.0, 1e9)}


@dataclass(frozen=True)
class AnalyticSpec:
    """Published device figures (for the target's precision) and the assumptions the roofline adds."""

    peak_gflops: float  # peak arithmetic throughput available to the target's threads/precision
    memory_gbps: float  # DRAM bandwidth
    channel_multiple: int  # vector width in channels: counts are padded up to it
    kernel_overhead_us: float  # per kernel (operator dispatch or GPU launch)
    call_overhead_us: float  # per inference call
    compute_efficiency: float = 1.0  # fraction of peak a real kernel reaches
    memory_efficiency: float = 1.0  # fraction of bandwidth a real kernel reaches
    sources: dict[str, str] = field(default_factory=dict)  # field → citation or stated assumption

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnalyticSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"unknown analytic field '{unknown[0]}'")
        spec = cls(**data)
        for name in ("peak_gflops", "memory_gbps", "compute_efficiency", "memory_efficiency", "kernel_overhead_us",
                     "call_overhead_us"):
            value = getattr(spec, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"analytic.{name} must be a finite number, got {value!r}")
            low, high = _RANGES[name]  # rates near 0 would make a kernel's time overflow to inf
            if not low <= value <= high:
                raise ValueError(f"analytic.{name} must be in [{low:g}, {high:g}], got {value!r}")
        multiple = spec.channel_multiple
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"analytic.channel_multiple must be a positive integer, got {multiple!r}")
        if not isinstance(spec.sources, dict):
            raise ValueError(f"analytic.sources must be an object (field → citation), got {spec.sources!r}")
        missing = [f for f in ("peak_gflops", "memory_gbps", "channel_multiple", "kernel_overhead_us",
                               "call_overhead_us") if f not in spec.sources]
        if missing:
            raise ValueError(f"analytic.sources must cite '{missing[0]}'")
        return spec


def _pad(channels: int, multiple: int) -> int:
    return int(math.ceil(channels / multiple) * multiple)


def kernel_cost(kernel: Kernel, spec: AnalyticSpec) -> tuple[float, float]:
    """(FLOPs, bytes moved) of one exported kernel on a device with `spec`'s channel alignment."""
    s = json.loads(kernel.signature)
    shapes = {name: (dims, dtype) for name, dims, dtype in s["inputs"]}
    shapes.update({name: (dims, dtype) for name, dims, dtype, _ in s["inits"]})
    out_name, out_shape, out_type = s["outputs"][0]
    m = spec.channel_multiple

    def nbytes(dims: list[int], dtype: int, channel_axis: int | None = 1) -> float:
        dims = list(dims)
        if channel_axis is not None and len(dims) >= 3:  # [N, C, *spatial]: 1-D, 2-D and 3-D feature maps
            dims[channel_axis] = _pad(dims[channel_axis], m)
        return float(np.prod(dims or [1])) * _BYTES.get(dtype, 4)

    moved = sum(nbytes(d, t) for _, d, t in s["inputs"]) + nbytes(out_shape, out_type)
    flops = 0.0
    for op, _, ins, _, attrs in s["nodes"]:
        if op == "Conv":
            w_dims = shapes[ins[1]][0]
            group = dict(attrs).get("group", 1)
            c_out, c_in_per_group, *kernel_hw = w_dims
            c_in_eff = _pad(c_in_per_group, m) if group == 1 else c_in_per_group
            n, _, *spatial = out_shape  # Conv1d, Conv2d or Conv3d
            flops += 2.0 * n * float(np.prod(spatial)) * _pad(c_out, m) * c_in_eff * float(np.prod(kernel_hw))
            moved += _pad(c_out, m) * c_in_eff * float(np.prod(kernel_hw)) * _BYTES.get(shapes[ins[1]][1], 4)
        elif op in ("Gemm", "MatMul"):
            w_dims = shapes.get(ins[1], ([1], 1))[0]
            flops += 2.0 * float(np.prod(out_shape)) * float(w_dims[-1] if op == "Gemm" else w_dims[0])
            moved += float(np.prod(w_dims)) * 4
        elif op not in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"):
            flops += float(np.prod(out_shape)) * max(1, len([i for i in ins if i in shapes]))
    return flops, moved


def kernel_ms(kernel: Kernel, spec: AnalyticSpec) -> float:
    flops, moved = kernel_cost(kernel, spec)
    compute_s = flops / (spec.peak_gflops * 1e9 * spec.compute_efficiency)
    memory_s = moved / (spec.memory_gbps * 1e9 * spec.memory_efficiency)
    return max(compute_s, memory_s) * 1e3 + spec.kernel_overhead_us / 1e3
