"""ONNX Runtime on this host: the graphs it executes, providers, and (re-exported from `hwprune.timing`,
which a device agent imports without torch or onnx) sessions and the timing protocol.

ONNX Runtime itself enters through `hwprune.timing` only.
"""

from __future__ import annotations

from dataclasses import replace

import onnx
from onnx import helper

from hwprune.device import LOCAL, Device
from hwprune.targets import RuntimeSettings
from hwprune.timing import (  # noqa: F401  (the timing protocol, used as runtime.X throughout)
    CALIBRATION_PROTOCOL,
    CALL_SLOW_ABOVE,
    KERNEL_PROTOCOL,
    NUMERIC_TYPES,
    ORT_ERRORS,
    SENTINEL_EVERY,
    SENTINEL_PROTOCOL,
    SLOW_PHASE_ABOVE,
    WHOLE_MODEL_PROTOCOL,
    HostLevel,
    HostReading,
    LatencyStats,
    Patience,
    Sentinel,
    TimingProtocol,
    available_providers,
    compute_model_bytes,
    node_times_in_context,
    null_model_bytes,
    random_inputs,
    run,
    session,
    session_options,
    time_many,
    time_model,
    time_side_by_side,
    version,
)


def optimized_graph(model: onnx.ModelProto, settings: RuntimeSettings, device: Device = LOCAL
                    ) -> tuple[onnx.ModelProto, dict[str, tuple[list[int], int]]]:
    """The graph ONNX Runtime executes for `model` under `settings` on `device` (its fusions, NCHWc layouts,
    channel padding, layout reorders), with the shape and element type of every tensor, found by running it
    once there."""
    optimized = onnx.load_from_string(device.optimized_model(model, settings))
    probe = onnx.ModelProto()
    probe.CopyFrom(optimized)
    outputs = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in outputs:
                probe.graph.output.append(helper.make_empty_tensor_value_info(name))
                outputs.add(name)
    types = device.tensor_types(probe, as_built(settings))
    shapes = {name: (shape, helper.np_dtype_to_tensor_dtype(dtype)) for name, (shape, dtype) in types.items()}
    return optimized, shapes


def runnable_here(settings: RuntimeSettings, device: Device = LOCAL) -> RuntimeSettings:
    """The target's providers `device` has (for numerical checks), else ONNX Runtime's CPU provider."""
    here = tuple(p for p in settings.providers if p in device.providers())
    return replace(settings, providers=here or ("CPUExecutionProvider",))


def as_built(settings: RuntimeSettings) -> RuntimeSettings:
    """The same settings with graph optimisation off: for graphs that are already what the runtime runs."""
    return replace(settings, graph_optimization="disable")


def null_model() -> onnx.ModelProto:
    """The sentinel's null graph (`timing.null_model_bytes`) as a ModelProto."""
    return onnx.load_from_string(null_model_bytes())


def compute_model() -> onnx.ModelProto:
    """The sentinel's MatMul graph (`timing.compute_model_bytes`) as a ModelProto."""
    return onnx.load_from_string(compute_model_bytes())
