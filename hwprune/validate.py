"""`hwprune validate`: re-check a shipped model file against a target (valid graph, runs on ONNX Runtime with
finite outputs, its latency measured where this host is the target's device, else predicted from the
target's profile, and stated which, against the target's budget); and ONNX Runtime's offline-optimised copy
of a model (`--optimize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from hwprune import atomic, export, onnxgraph, profiles, runtime
from hwprune.device import LOCAL, Device
from hwprune.errors import ConfigError, ExportError
from hwprune.latency import LatencyModel
from hwprune.targets import ResolvedBudget, RuntimeSettings, Target


def offline_level(host_is_device: bool, settings: RuntimeSettings) -> str:
    """ONNX Runtime's extended and "all" levels write fusions and layouts specific to one execution provider
    and CPU (NCHWc blocks): only a file for this host's device gets the target's level; one meant for another
    device gets the portable "basic" level (constant folding, redundant-node removal)."""
    return settings.graph_optimization if host_is_device else "basic"


def write_optimized(proto: onnx.ModelProto, target: Target, host_is_device: bool, path: Path,
                    device: Device = LOCAL) -> str:
    """ONNX Runtime's offline-optimised model for the target, as `device` (this host, or the device behind
    an agent) builds it, written atomically; returns the level used."""
    settings = target.runtime_settings()
    level = offline_level(host_is_device, settings)
    runnable = replace(runtime.runnable_here(settings, device), graph_optimization=level)
    atomic.write_bytes(path, device.optimized_model(proto, runnable))
    return level


@dataclass(frozen=True)
class Validation:
    """What `hwprune validate` found for one model file and target."""

    path: Path
    target: str
    built_for: str | None  # the target named in the model's metadata
    providers: tuple[str, ...]  # those the model ran on here
    latency_ms: float
    latency_source: str  # "measured" or "predicted"
    how: str  # how the latency was obtained, in words
    budget: ResolvedBudget | None  # None: not checkable (see budget_basis)
    budget_basis: str
    metadata: dict[str, str]
    budget_source: str | None = None  # "target", "model metadata", "--budget-ms"; None: not checkable
    batch: int = 1  # the batch it ran and was timed at
    dynamic_batch: bool = False  # the file has a symbolic batch axis (then run at the target's batch)

    @property
    def budget_ms(self) -> float | None:
        return None if self.budget is None else self.budget.ms

    @property
    def budget_met(self) -> bool | None:
        return None if self.budget is None else self.budget.met_by(self.latency_ms)


def load(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file", hint="give the model.onnx hwprune wrote")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ExportError(f"{path}: not a readable ONNX model ({type(exc).__name__})",
                          hint="the file is corrupt or not ONNX") from None
    export.check(proto)
    return proto


def check(path: Path, target: Target, profiles_dir: Path, budget_ms: float | None = None,
          device: Device = LOCAL) -> Validation:
    """Run and time (or predict) the model for `target` on `device` (this host, or the device behind an
    agent); `budget_ms` given replaces the target's budget."""
    proto = load(path)
    dynamic = export.has_dynamic_batch(proto)
    if dynamic:  # one file for every batch: checked and timed at the target's
        proto = export.fixed_batch(proto, target.batch)
    metadata = {p.key: p.value for p in proto.metadata_props}
    settings = target.runtime_settings()
    here = runtime.runnable_here(settings, device)
    try:
        _check_io(runtime.session(proto, runtime.runnable_here(settings)), path)  # what hwprune can feed
        outputs = device.outputs(proto, here)
    except runtime.ORT_ERRORS as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot run the model ({_first_line(exc)})",
                          hint="the model uses an operator, type or shape this ONNX Runtime does not support") from None
    numeric = [o for o in outputs if isinstance(o, np.ndarray) and o.dtype.kind in "fc"]
    if not all(np.isfinite(o).all() for o in numeric):
        raise ExportError(f"{path}: ONNX Runtime produced non-finite outputs", hint="the model is broken")
    profile = profiles.open_profile(target.profile, settings, profiles_dir, target.arch, device=device)
    try:
        if profiles.host_is_device(target, profile, device):
            stats = device.time_side_by_side([proto], settings, runtime.TimingProtocol())[0]
            latency, source = stats.median_ms, "measured"
            how = (f"measured on {device.label} with ONNX Runtime {device.ort_version()}, "
                   f"{'/'.join(settings.providers)}, {settings.intra_op_threads} thread(s), median of the quietest "
                   "timing blocks")
        else:
            kernels = (onnxgraph.kernels(proto) if profile.analytic is not None
                       else onnxgraph.runtime_kernels(*runtime.optimized_graph(proto, profile.settings, device)))
            prediction = LatencyModel(profile, architecture_key="").predict(kernels)
            latency, source = prediction.latency_ms, "predicted"
            how = (f"predicted from profile '{profile.id}' ({profile.provenance.get('kind')}): {len(kernels)} "
                   "kernels, uncalibrated (a shipped file does not say which calibrated architecture it came from)")
    except runtime.ORT_ERRORS as exc:  # e.g. the target's optimisation level fails where "basic" did not
        raise ExportError(f"{path}: ONNX Runtime cannot run the model with the target's settings "
                          f"({_first_line(exc)})", hint="the model uses an operator this ONNX Runtime does not "
                                                        "support at that optimisation level") from None
    if budget_ms is not None:
        budget, basis, budget_source = (ResolvedBudget(budget_ms, target.budget, None, ""),
                                        f"{budget_ms:g} ms (absolute, from --budget-ms)", "--budget-ms")
    else:
        budget, basis = _budget(target, metadata)
        budget_source = None if budget is None else "target" if target.budget.ms is not None else "model metadata"
    batch = int(proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1) if proto.graph.input else 1
    return Validation(path, target.name, metadata.get("hwprune.target"), here.providers, latency, source, how,
                      budget, basis, metadata, budget_source, batch, dynamic)


def _check_io(sess, path: Path) -> None:
    """What hwprune can feed and time: inputs of fixed shape (a latency is of one shape) and numeric or boolean
    tensors in and out (timing binds every output to a preallocated numeric buffer)."""
    for i in sess.get_inputs():
        if any(not isinstance(d, int) or d < 0 for d in i.shape):
            raise ExportError(f"{path}: input '{i.name}' has a dynamic shape {i.shape}; hwprune validate runs and "
                              "times one fixed shape (a dynamic batch axis alone is set to the target's batch)",
                              hint="export the model with a fixed input shape, or with only the batch dynamic "
                                   "([export] dynamic_batch = true)")
    for kind, values in (("input", sess.get_inputs()), ("output", sess.get_outputs())):
        for v in values:
            if v.type not in runtime.NUMERIC_TYPES:
                raise ExportError(f"{path}: {kind} '{v.name}' is of type {v.type}; hwprune validate runs and times "
                                  "models whose inputs and outputs are numeric or boolean tensors",
                                  hint="validate the numeric part of the model (the model.onnx hwprune writes)")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _budget(target: Target, metadata: dict[str, str]) -> tuple[ResolvedBudget | None, str]:
    """The target's budget; a speedup budget needs the dense latency the model's metadata records for the
    same target (None and the reason when it cannot be had)."""
    if target.budget.ms is not None:
        resolved = target.budget.resolve(None)
        return resolved, resolved.describe()
    built_for = metadata.get("hwprune.target")
    if built_for is None:
        return None, (f"{target.budget.describe()}: not checkable, the model has no hwprune metadata (no dense "
                      "latency to take the speedup over)")
    if built_for != target.name:
        return None, (f"{target.budget.describe()}: not checkable, the model was built for target '{built_for}', "
                      f"so its metadata records no dense latency on '{target.name}'")
    try:
        dense = float(metadata.get("hwprune.dense_latency_ms", "nan"))
    except ValueError:
        dense = math.nan
    if not (math.isfinite(dense) and dense > 0):
        return None, (f"{target.budget.describe()}: not checkable, the model's metadata records no valid dense "
                      f"latency (hwprune.dense_latency_ms = {metadata.get('hwprune.dense_latency_ms')!r:.40})")
    resolved = target.budget.resolve(dense, f"recorded when the model was built, "
                                            f"{metadata.get('hwprune.latency_source', 'unknown')}")
    return resolved, (f"{target.budget.describe()} of the dense latency recorded when the model was built "
                      f"({dense:.4f} ms, {metadata.get('hwprune.latency_source', 'unknown')})")

