"""ONNX Runtime sessions with a target's settings, and the timing protocol.

The only module that imports onnxruntime. Timing binds inputs and pre-allocated outputs once (IOBinding),
so a measurement is the runtime's own work plus one call's overhead, never Python-side copies.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from hwprune.errors import ExportError, ProfileError
from hwprune.targets import RuntimeSettings

# What ONNX Runtime raises for a model it cannot load, optimise or run (its own types, not RuntimeError):
# callers that run a user's model (`hwprune validate`) turn these into a one-line error.
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_ort_state, name) for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile",
                                           "NoModel", "NotFound", "NotImplemented", "RuntimeException", "EPFail")
    if hasattr(_ort_state, name))

_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class TimingProtocol:
    """Warm up, then time single calls until both `min_repeats` and `min_time_s` are reached. Measure at
    least `min_attempts` times, and up to `attempts` while the spread (IQR / median) exceeds
    `noise_limit`; keep the attempt with the lowest median (other load on a shared machine only ever
    slows a run down, so the least disturbed attempt is the best estimate)."""

    warmup: int = 10
    min_repeats: int = 30
    min_time_s: float = 0.05
    max_repeats: int = 5000
    attempts: int = 3
    noise_limit: float = 0.10
    min_attempts: int = 2

    def to_json(self) -> dict:
        return asdict(self)


# Kernels: 0.02 s per attempt, attempts seconds apart (see time_many); longer attempts cost table-building
# time for little accuracy (README, latency prediction).
KERNEL_PROTOCOL = TimingProtocol(min_time_s=0.02)
# Whole models: 1.5 s per model in 12 interleaved blocks, the quietest third pooled (see time_side_by_side):
# on a shared machine a model's latency can flip between a quiet and a slower level every few seconds.
WHOLE_MODEL_PROTOCOL = TimingProtocol(warmup=50, min_repeats=240, min_time_s=1.5, attempts=3, noise_limit=0.05,
                                      min_attempts=1)
CALIBRATION_PROTOCOL = replace(WHOLE_MODEL_PROTOCOL, min_time_s=1.0)
BLOCKS = 12
QUIET_FRACTION = 1 / 3


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p90_ms: float
    spread: float  # interquartile range / median
    n: int
    attempts: int

    def to_json(self) -> dict:
        return asdict(self)


def version() -> str:
    return ort.__version__


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def session(model: onnx.ModelProto | bytes, settings: RuntimeSettings, save_optimized: str | None = None
            ) -> ort.InferenceSession:
    missing = [p for p in settings.providers if p not in ort.get_available_providers()]
    if missing:
        raise ProfileError(f"execution provider {missing[0]} is not available on this host",
                           hint=f"available: {', '.join(ort.get_available_providers())}")
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    options = _options(settings)
    if save_optimized:
        options.optimized_model_filepath = save_optimized
    return ort.InferenceSession(payload, options, providers=list(settings.providers))


def _options(settings: RuntimeSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPT[settings.graph_optimization]
    options.log_severity_level = 3
    return options


def optimized_graph(model: onnx.ModelProto, settings: RuntimeSettings
                    ) -> tuple[onnx.ModelProto, dict[str, tuple[list[int], int]]]:
    """The graph ONNX Runtime executes for `model` under `settings` (its fusions, NCHWc layouts, channel
    padding, layout reorders), with the shape and element type of every tensor, found by running it once."""
    with tempfile.TemporaryDirectory() as tmp:
        session(model, settings, save_optimized=f"{tmp}/optimized.onnx")
        optimized = onnx.load(f"{tmp}/optimized.onnx")
    probe = onnx.ModelProto()
    probe.CopyFrom(optimized)
    outputs = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in outputs:
                probe.graph.output.append(helper.make_empty_tensor_value_info(name))
                outputs.add(name)
    sess = session(probe, as_built(settings))
    feeds = random_inputs(sess)
    values = dict(zip((o.name for o in sess.get_outputs()), sess.run(None, feeds), strict=True)) | feeds
    shapes = {name: (list(v.shape), helper.np_dtype_to_tensor_dtype(v.dtype)) for name, v in values.items()}
    return optimized, shapes


def runnable_here(settings: RuntimeSettings) -> RuntimeSettings:
    """The target's providers this host has (for numerical checks), else ONNX Runtime's CPU provider."""
    here = tuple(p for p in settings.providers if p in ort.get_available_providers())
    return replace(settings, providers=here or ("CPUExecutionProvider",))


def as_built(settings: RuntimeSettings) -> RuntimeSettings:
    """The same settings with graph optimisation off: for graphs that are already what the runtime runs."""
    return replace(settings, graph_optimization="disable")


def random_inputs(sess: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        if any(not isinstance(d, int) for d in i.shape):
            raise ProfileError(f"input '{i.name}' has a dynamic shape {i.shape}", hint="export with a fixed shape")
        dtype = _NUMPY_TYPES.get(i.type)
        if dtype is None:
            raise ExportError(f"input '{i.name}' has type {i.type}, which hwprune cannot feed",
                              hint=f"inputs may be {', '.join(sorted(_NUMPY_TYPES))}")
        # floats uniform in [0, 1); integers and booleans 0/false, always a valid index or mask
        feeds[i.name] = rng.random(i.shape).astype(dtype)
    return feeds


# ONNX Runtime's input type names → numpy (a model's input need not be float32: ids, masks, float64)
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
                **{f"tensor({t})": np.dtype(t).type for t in ("int8", "int16", "int32", "int64", "uint8", "uint16",
                                                             "uint32", "uint64")},
                "tensor(bool)": np.bool_}
NUMERIC_TYPES = frozenset(_NUMPY_TYPES)


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return sess.run(None, feeds)


def _bound(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> ort.IOBinding:
    binding = sess.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    outputs = run(sess, feeds)  # learn output shapes and dtypes once
    for meta, value in zip(sess.get_outputs(), outputs, strict=True):
        buffer = ort.OrtValue.ortvalue_from_numpy(np.empty_like(value))
        binding.bind_ortvalue_output(meta.name, buffer)
    return binding


def _one_attempt(sess: ort.InferenceSession, binding: ort.IOBinding, protocol: TimingProtocol) -> np.ndarray:
    for _ in range(protocol.warmup):
        sess.run_with_iobinding(binding)
    times: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    while len(times) < protocol.max_repeats and (
            len(times) < protocol.min_repeats or clock() - start < protocol.min_time_s * 1e9):
        t0 = clock()
        sess.run_with_iobinding(binding)
        times.append(clock() - t0)
    return np.asarray(times, dtype=np.float64) / 1e6


def _stats(ms: np.ndarray, attempt: int) -> LatencyStats:
    q25, q50, q75, q90 = np.percentile(ms, [25, 50, 75, 90])
    return LatencyStats(float(q50), float(q90), float((q75 - q25) / q50), len(ms), attempt)


def time_side_by_side(models: list[onnx.ModelProto | bytes], settings: RuntimeSettings,
                      protocol: TimingProtocol = WHOLE_MODEL_PROTOCOL, blocks: int = BLOCKS) -> list[LatencyStats]:
    """Latencies of several models timed in interleaved blocks, so drifting machine load hits all alike.

    Each model's time is split into `blocks` short blocks spread over the whole measurement; its statistics
    come from its quietest third of blocks (lowest block medians) pooled: load on a shared machine only
    ever adds time, so the least disturbed blocks are the best estimate of what the model costs, and every
    model is treated the same way. Their ratios (e.g. a speedup) are what a shared machine measures best.
    """
    sessions = [session(m, settings) for m in models]
    bindings = [_bound(s, random_inputs(s)) for s in sessions]
    block = replace(protocol, warmup=max(2, protocol.warmup // blocks), min_time_s=protocol.min_time_s / blocks,
                    min_repeats=max(10, protocol.min_repeats // blocks))
    for sess, binding in zip(sessions, bindings, strict=True):
        _one_attempt(sess, binding, replace(block, warmup=protocol.warmup, min_repeats=0, min_time_s=0))
    best: list[LatencyStats] | None = None
    for attempt in range(1, protocol.attempts + 1):
        samples: list[list[np.ndarray]] = [[] for _ in models]
        for _ in range(blocks):
            for i, (sess, binding) in enumerate(zip(sessions, bindings, strict=True)):
                samples[i].append(_one_attempt(sess, binding, block))
        stats = [_stats(_quietest(s), attempt) for s in samples]
        if best is None or sum(s.median_ms for s in stats) < sum(s.median_ms for s in best):
            best = stats
        if attempt >= protocol.min_attempts and all(s.spread <= protocol.noise_limit for s in stats):
            break
    assert best is not None
    return best


def _quietest(blocks: list[np.ndarray]) -> np.ndarray:
    """The samples of the least disturbed blocks (lowest medians), at least one block."""
    keep = max(1, round(len(blocks) * QUIET_FRACTION))
    return np.concatenate(sorted(blocks, key=lambda b: float(np.median(b)))[:keep])


def time_many(models: list[onnx.ModelProto | bytes], settings: RuntimeSettings,
              protocol: TimingProtocol = KERNEL_PROTOCOL, chunk: int = 40) -> list[LatencyStats]:
    """Latencies of many small models (table kernels), each timed in separate passes over a chunk of them.

    A model's attempts lie seconds apart, so one burst of load on a shared machine rarely disturbs them
    all; the least disturbed attempt (lowest median) counts, and models whose attempts disagree by more
    than the noise limit get more, up to `protocol.attempts`.
    """
    one = replace(protocol, attempts=1, min_attempts=1)
    results: list[LatencyStats] = []
    for start in range(0, len(models), chunk):
        sessions = [session(m, settings) for m in models[start:start + chunk]]
        bindings = [_bound(s, random_inputs(s)) for s in sessions]
        samples: list[list[np.ndarray]] = [[] for _ in sessions]
        for attempt in range(protocol.attempts):
            for i, (sess, binding) in enumerate(zip(sessions, bindings, strict=True)):
                medians = [float(np.median(a)) for a in samples[i]]
                if attempt >= protocol.min_attempts and max(medians) <= min(medians) * (1 + protocol.noise_limit):
                    continue
                samples[i].append(_one_attempt(sess, binding, one))
        for attempts in samples:
            best = min(range(len(attempts)), key=lambda a: float(np.median(attempts[a])))
            results.append(_stats(attempts[best], len(attempts)))
    return results


def node_times_in_context(model: onnx.ModelProto | bytes, settings: RuntimeSettings, runs: int = 300
                          ) -> dict[str, float]:
    """Median time (ms) of every node of the optimised graph inside the real network run, from ONNX Runtime's
    own profiler over `runs` calls (the first tenth discarded as warm-up). The profiler adds its own cost to
    every node, so these are shares of the whole rather than milliseconds."""
    options = _options(settings)
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = f"{tmp}/profile"
        payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
        sess = ort.InferenceSession(payload, options, providers=list(settings.providers))
        feeds = random_inputs(sess)
        for _ in range(runs):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as trace_file:
            trace = json.load(trace_file)
    times: dict[str, list[float]] = {}
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            times.setdefault(event["name"][: -len("_kernel_time")], []).append(event["dur"] / 1000)
    return {name: float(np.median(ms[len(ms) // 10:])) for name, ms in times.items()}


def time_model(model: onnx.ModelProto | bytes, settings: RuntimeSettings,
               protocol: TimingProtocol = TimingProtocol()) -> LatencyStats:
    """Latency of one inference call of `model` under `protocol` (quietest blocks, as side by side)."""
    return time_side_by_side([model], settings, protocol)[0]
