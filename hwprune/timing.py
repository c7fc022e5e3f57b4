"""The timing protocol: ONNX Runtime sessions with a target's settings, models timed call by call.

Importable with only numpy and onnxruntime (Python >= 3.8, no torch or onnx): the device agent times with
the very code a local run uses, so a table measured through it means what a local one does. Timing binds
inputs and pre-allocated outputs once (IOBinding), so a measurement is the runtime's own work plus one
call's overhead, never Python-side copies.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Union

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from hwprune.errors import ExportError, ProfileError

if TYPE_CHECKING:
    import onnx

    from hwprune.targets import RuntimeSettings

Model = Union["onnx.ModelProto", bytes]  # serialised ONNX, or a ModelProto (serialised on use)

# What ONNX Runtime raises for a model it cannot load, optimise or run (its own types, not RuntimeError):
# callers that run a user's model (`hwprune validate`) turn these into a one-line error.
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_ort_state, name) for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile",
                                           "NoModel", "NotFound", "NotImplemented", "RuntimeException", "EPFail")
    if hasattr(_ort_state, name))


def version() -> str:
    return ort.__version__


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class TimingProtocol:
    """Warm up, then time single calls until both `min_repeats` and `min_time_s` are reached. Measure at
    least `min_attempts` times, and up to `attempts` while attempts disagree by more than `noise_limit`
    or were taken in a slow phase of the host (see `Sentinel`; beyond `attempts` only while `patience_s`
    lasts); keep the least disturbed (other load on a shared machine only ever slows a run down)."""

    warmup: int = 10
    min_repeats: int = 30
    min_time_s: float = 0.05
    max_repeats: int = 5000
    attempts: int = 3
    noise_limit: float = 0.10
    min_attempts: int = 2
    patience_s: float = 10.0  # how long to keep measuring for quiet attempts beyond `attempts` (see Sentinel)
    quiet_calls: float = 1.0  # share of an attempt's calls kept, the fastest (see KERNEL_PROTOCOL)

    def to_json(self) -> dict:
        return asdict(self)


# Kernels: 0.02 s per attempt, started in a quiet phase of the host (see Sentinel, time_many); longer attempts
# cost table-building time for little accuracy (README, latency prediction). Of an attempt's calls the
# fastest fifth count (bursts within an attempt only slow calls down). Measured here: attempts the sentinel
# marks quiet agree within 0.5 % (90th percentile over 40 kernels), so one quiet attempt is enough; attempts
# it marks slow ran 1.02-1.48× slower, fastest fifth and all.
KERNEL_PROTOCOL = TimingProtocol(min_time_s=0.02, quiet_calls=0.2, min_attempts=1, patience_s=30.0)
# Whole models: 1.5 s per model in 12 interleaved blocks, the quietest third pooled (see time_side_by_side):
# on a shared machine a model's latency can flip between a quiet and a slower level every few seconds. The
# latency is the median of each kept block's fastest fifth of calls, as for kernels: measured here, a
# CPU-bound or memory-bound process on the other core moved a ResNet-20's median by 7-16 % and its fastest
# fifth by under 0.5 %, and a table and its calibration networks must see the same quiet host.
WHOLE_MODEL_PROTOCOL = TimingProtocol(warmup=50, min_repeats=240, min_time_s=1.5, attempts=3, noise_limit=0.05,
                                      min_attempts=1, patience_s=30.0, quiet_calls=0.2)
CALIBRATION_PROTOCOL = replace(WHOLE_MODEL_PROTOCOL, min_time_s=0.6)
# The host's state (see Sentinel): ~6 ms per reading, read every SENTINEL_EVERY kernels and every block.
SENTINEL_PROTOCOL = TimingProtocol(warmup=3, min_repeats=20, min_time_s=0.003)
SENTINEL_EVERY = 4
# A reading this far above the quietest marks a slow phase. Measured here: quiet readings lie within ~2 %
# of the quietest, slow phases 40-90 % above for a call's fixed cost and 8-20 % for compute.
CALL_SLOW_ABOVE = 0.10
SLOW_PHASE_ABOVE = 0.05
BLOCKS = 12
QUIET_FRACTION = 1 / 3


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p90_ms: float
    spread: float  # interquartile range / median
    n: int
    attempts: int
    slowdown: float = 1.0  # how much slower than its quietest the host ran while the kept samples were taken
    quiet_share: float = 1.0  # share of attempts (or blocks) taken in a quiet phase of the host
    host_call_ms: float = 0.0  # the sentinel's readings bracketing the kept samples (see Sentinel)
    host_compute_ms: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    def certainty(self) -> dict[str, float]:
        """How sure a measurement is, for reports: spread, samples, attempts, quiet share, host slowdown."""
        return {"spread": self.spread, "samples": self.n, "attempts": self.attempts, "quiet_share": self.quiet_share,
                "host_slowdown": self.slowdown}

def session(model: Model, settings: RuntimeSettings, save_optimized: str | None = None
            ) -> ort.InferenceSession:
    missing = [p for p in settings.providers if p not in ort.get_available_providers()]
    if missing:
        raise ProfileError(f"execution provider {missing[0]} is not available on this host",
                           hint=f"available: {', '.join(ort.get_available_providers())}")
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    options = session_options(settings)
    if save_optimized:
        options.optimized_model_filepath = save_optimized
    return ort.InferenceSession(payload, options, providers=list(settings.providers))


def session_options(settings: RuntimeSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPT[settings.graph_optimization]
    options.log_severity_level = 3
    return options

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


# Providers that compute on an NVIDIA GPU: their inputs and outputs are bound in GPU memory, so a timed call
# is the device's work, never host-to-device copies (TensorRT builds its engine in the first, warm-up, calls)
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def _bound(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> ort.IOBinding:
    place = "cuda" if sess.get_providers()[0] in _GPU_PROVIDERS else "cpu"
    binding = sess.io_binding()
    outputs = run(sess, feeds)  # learn output shapes and dtypes once
    values = [(name, ort.OrtValue.ortvalue_from_numpy(value, place, 0)) for name, value in feeds.items()]
    for name, value in values:
        binding.bind_ortvalue_input(name, value)
    for meta, value in zip(sess.get_outputs(), outputs):
        values.append((meta.name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(value), place, 0)))
        binding.bind_ortvalue_output(*values[-1])
    # a CPU OrtValue uses its numpy array's memory, and older ONNX Runtimes (1.16 on a device) keep no
    # reference to what is bound: the binding holds them for as long as it is used
    binding.hwprune_bound_values = values
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


def _stats(ms: np.ndarray, attempts: int, sentinel: Sentinel, host: HostReading, quiet_share: float,
           typical: np.ndarray | None = None) -> LatencyStats:
    """Median of `ms`; tail and spread of `typical` (all calls the median was drawn from) when given."""
    typical = ms if typical is None else typical
    q25, q75, q90 = np.percentile(typical, [25, 75, 90])
    q50 = float(np.median(ms))
    return LatencyStats(q50, float(q90), float((q75 - q25) / np.median(typical)), len(ms), attempts,
                        sentinel.slowdown(host), quiet_share, host.call_ms, host.compute_ms)

@dataclass(frozen=True)
class HostReading:
    """One sentinel reading: the null model's time (a call's fixed cost) and the MatMul's (compute)."""

    call_ms: float
    compute_ms: float

    def worse(self, other: HostReading) -> HostReading:
        return HostReading(max(self.call_ms, other.call_ms), max(self.compute_ms, other.compute_ms))


class HostLevel:
    """The host's quiet level as far as a run has seen it (see `Sentinel`): judges readings slow or quiet.
    A sentinel that reads the host itself is one; a device agent's level, sent back with its timings, is
    another (`hwprune.remote`)."""

    def __init__(self) -> None:
        self.quiet = HostReading(float("inf"), float("inf"))
        self.readings = 0
        self.slow_readings = 0

    def slowdown(self, reading: HostReading) -> float:
        """How much slower than its quietest the host ran (the larger of the two ratios)."""
        return max(reading.call_ms / self.quiet.call_ms, reading.compute_ms / self.quiet.compute_ms)

    def is_quiet(self, reading: HostReading) -> bool:
        return (reading.call_ms <= self.quiet.call_ms * (1 + CALL_SLOW_ABOVE)
                and reading.compute_ms <= self.quiet.compute_ms * (1 + SLOW_PHASE_ABOVE))

    @property
    def slow_share(self) -> float:
        return self.slow_readings / max(1, self.readings)


class Sentinel(HostLevel):
    """The host's state, read between measurements: two fixed models timed for a few milliseconds.

    A shared or virtual machine runs in slow phases (other tenants, clock and power states) that come and
    go within a second or last minutes. Measured here: in a slow phase a call's fixed cost grows 40-90 %
    and compute 8-20 %, so tiny table kernels suffer most, and taking the best of a few attempts is not
    enough when the host is slow most of the time. The sentinel remembers the quietest readings it has
    seen; a measurement bracketed by readings within `CALL_SLOW_ABOVE` / `SLOW_PHASE_ABOVE` of them was
    taken in a quiet phase, others are taken again. One sentinel per run (per predictor) carries that
    quiet level from call to call."""

    def __init__(self, settings: RuntimeSettings) -> None:
        super().__init__()
        built = replace(settings, graph_optimization="disable")  # fixed graphs: run as built
        self._parts = []
        for model in (null_model_bytes(), compute_model_bytes()):
            sess = session(model, built)
            binding = _bound(sess, random_inputs(sess))
            _one_attempt(sess, binding, TimingProtocol(warmup=50, min_repeats=0, min_time_s=0))
            self._parts.append((sess, binding))

    def read(self) -> HostReading:
        call, compute = (float(np.median(_one_attempt(s, b, SENTINEL_PROTOCOL))) for s, b in self._parts)
        self.quiet = HostReading(min(self.quiet.call_ms, call), min(self.quiet.compute_ms, compute))
        reading = HostReading(call, compute)
        self.readings += 1
        self.slow_readings += not self.is_quiet(reading)
        return reading

    def wait_quiet(self, reading: HostReading, patience: Patience) -> HostReading:
        """Read again while the host is in a slow phase and `patience` lasts; the last reading. Waiting on
        the sentinel's few milliseconds costs less than timing models in a slow phase and setting them aside
        (measured here: a kernel attempt the sentinel marks slow runs ~1.2× slower even in its fastest calls;
        the host was slow 60 % of the time for minutes)."""
        while not self.is_quiet(reading) and patience.seconds > 0:
            started = time.monotonic()
            reading = self.read()
            patience.seconds -= time.monotonic() - started
        return reading


def time_side_by_side(models: list[Model], settings: RuntimeSettings,
                      protocol: TimingProtocol = WHOLE_MODEL_PROTOCOL, blocks: int = BLOCKS,
                      sentinel: Sentinel | None = None) -> list[LatencyStats]:
    """Latencies of several models timed in interleaved rounds (one short block of each model per round), so
    drifting machine load hits all alike.

    A sentinel reading brackets every block; blocks taken in a slow phase are set aside. After
    `protocol.min_attempts` rounds of `blocks` blocks, rounds go on until every model has a third of `blocks`
    quiet blocks or `protocol.patience_s` has passed (then the least slow blocks count, and
    `LatencyStats.slowdown` says how much slower the host ran than its quietest). A model's latency is the
    median of the fastest `protocol.quiet_calls` of the calls of its quietest third of kept blocks: every
    model is treated the same way, and their ratios (e.g. a speedup) are what a shared machine measures best.
    """
    sentinel = sentinel or Sentinel(settings)
    sessions = [session(m, settings) for m in models]
    bindings = [_bound(s, random_inputs(s)) for s in sessions]
    block = replace(protocol, warmup=max(2, protocol.warmup // blocks), min_time_s=protocol.min_time_s / blocks,
                    min_repeats=max(10, protocol.min_repeats // blocks))
    for sess, binding in zip(sessions, bindings):
        _one_attempt(sess, binding, replace(block, warmup=protocol.warmup, min_repeats=0, min_time_s=0))
    found = [_Attempts() for _ in models]
    needed = math.ceil(blocks * QUIET_FRACTION)
    deadline = time.monotonic() + protocol.patience_s
    waiting = Patience(protocol.patience_s)
    before = sentinel.read()
    rounds = 0
    while True:
        rounds += 1
        for i, (sess, binding) in enumerate(zip(sessions, bindings)):
            before = sentinel.wait_quiet(before, waiting)
            ms = _one_attempt(sess, binding, block)
            after = sentinel.read()
            found[i].tries.append((before.worse(after), ms))
            before = after
        if rounds >= blocks * protocol.min_attempts and (
                min(len(f.quiet_tries(sentinel)) for f in found) >= needed or time.monotonic() > deadline):
            break
    attempt = math.ceil(rounds / blocks)
    stats = []
    for f in found:
        kept = f.quiet_tries(sentinel) or sorted(f.tries, key=lambda t: sentinel.slowdown(t[0]))[:blocks]
        host = max((host for host, _ in kept), key=sentinel.slowdown)
        share = len(f.quiet_tries(sentinel)) / len(f.tries)
        quietest = _quietest([ms for _, ms in kept])
        stats.append(_stats(np.concatenate([_fastest(ms, protocol.quiet_calls) for ms in quietest]), attempt,
                            sentinel, host, share, typical=np.concatenate(quietest)))
    return stats


def _fastest(ms: np.ndarray, share: float) -> np.ndarray:
    """The fastest `share` of one attempt's calls (at least 5)."""
    return ms if share >= 1 else np.sort(ms)[:max(5, round(len(ms) * share))]


def _quietest(blocks: list[np.ndarray]) -> list[np.ndarray]:
    """The least disturbed blocks (lowest medians), at least one."""
    keep = max(1, round(len(blocks) * QUIET_FRACTION))
    return sorted(blocks, key=lambda b: float(np.median(b)))[:keep]


def time_many(models: list[Model], settings: RuntimeSettings,
              protocol: TimingProtocol = KERNEL_PROTOCOL, chunk: int = 40,
              sentinel: Sentinel | None = None, patience: Patience | None = None) -> list[LatencyStats]:
    """Latencies of many small models (table kernels), each timed in separate passes over a chunk of them.

    A sentinel reading brackets every few models, and each group starts in a quiet phase of the host (see
    `Sentinel.wait_quiet`). An attempt counts when its brackets show a quiet host; models without a quiet
    attempt, or whose quiet attempts disagree by more than the noise limit, get more passes (up to
    `protocol.attempts`, and beyond it for those without a quiet one while `patience` lasts: one allowance
    for a run's many calls, by default `protocol.patience_s` for this call). The lowest quiet median counts.
    Models whose kept attempt looks slow against a quieter level found later (the whole chunk fell into a
    slow phase) are timed once more at the end.
    """
    sentinel = sentinel or Sentinel(settings)
    patience = patience or Patience(protocol.patience_s)
    results: list[_Attempts] = []
    for start in range(0, len(models), chunk):
        results += _time_chunk(models[start:start + chunk], settings, protocol, sentinel, patience)
    late = [i for i, r in enumerate(results) if not sentinel.is_quiet(r.best(sentinel)[0])]
    for start in range(0, len(late), chunk):
        again = _time_chunk([models[i] for i in late[start:start + chunk]], settings, protocol, sentinel, patience)
        for i, extra in zip(late[start:start + chunk], again):
            results[i].tries += extra.tries
    return [r.stats(sentinel) for r in results]


@dataclass
class _Attempts:
    """One model's attempts (or blocks): (slowest bracketing sentinel reading, samples) each."""

    tries: list[tuple[HostReading, np.ndarray]] = field(default_factory=list)

    def quiet_tries(self, sentinel: Sentinel) -> list[tuple[HostReading, np.ndarray]]:
        return [t for t in self.tries if sentinel.is_quiet(t[0])]

    def best(self, sentinel: Sentinel) -> tuple[HostReading, np.ndarray]:
        """The lowest median among quiet attempts, else among all."""
        return min(self.tries, key=lambda t: (not sentinel.is_quiet(t[0]), float(np.median(t[1]))))

    def stats(self, sentinel: Sentinel) -> LatencyStats:
        host, ms = self.best(sentinel)
        return _stats(ms, len(self.tries), sentinel, host, len(self.quiet_tries(sentinel)) / len(self.tries))


@dataclass
class Patience:
    """Seconds left for timing passes beyond `protocol.attempts` that wait out a slow phase of the host. One
    allowance for a whole table build (given per call, a host slow for minutes multiplied it by the number of
    calls: a ResNet-20 table took 179 s instead of 30)."""

    seconds: float


def _time_chunk(models: list[Model], settings: RuntimeSettings, protocol: TimingProtocol,
                sentinel: Sentinel, patience: Patience) -> list[_Attempts]:
    one = replace(protocol, attempts=1, min_attempts=1)
    sessions = [session(m, settings) for m in models]
    bindings = [_bound(s, random_inputs(s)) for s in sessions]
    found = [_Attempts() for _ in models]

    def needs_more(i: int, passes: int) -> bool:
        quiet = [float(np.median(ms)) for _, ms in found[i].quiet_tries(sentinel)]
        if passes < protocol.min_attempts or not quiet:
            return True
        return passes < protocol.attempts and max(quiet) > min(quiet) * (1 + protocol.noise_limit)

    passes = 0
    before = sentinel.read()
    while todo := [i for i in range(len(models)) if needs_more(i, passes)]:
        beyond = passes >= protocol.attempts
        if beyond and patience.seconds <= 0:
            break
        started = time.monotonic()
        for group in range(0, len(todo), SENTINEL_EVERY):
            before = sentinel.wait_quiet(before, patience)
            timed = [(i, _one_attempt(sessions[i], bindings[i], one)) for i in todo[group:group + SENTINEL_EVERY]]
            after = sentinel.read()
            for i, ms in timed:
                found[i].tries.append((before.worse(after), _fastest(ms, protocol.quiet_calls)))
            before = after
        if beyond:
            patience.seconds -= time.monotonic() - started
        passes += 1
    return found

def time_model(model: Model, settings: RuntimeSettings,
               protocol: TimingProtocol = TimingProtocol()) -> LatencyStats:
    """Latency of one inference call of `model` under `protocol` (quietest blocks, as side by side)."""
    return time_side_by_side([model], settings, protocol)[0]


def node_times_in_context(model: Model, settings: RuntimeSettings, runs: int = 300
                          ) -> dict[str, float]:
    """Median time (ms) of every node of the optimised graph inside the real network run, from ONNX Runtime's
    own profiler over `runs` calls (the first tenth discarded as warm-up). The profiler adds its own cost to
    every node, so these are shares of the whole rather than milliseconds."""
    options = session_options(settings)
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = f"{tmp}/profile"
        payload = model if isinstance(model, bytes) else model.SerializeToString()
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


# The sentinel's two graphs, written as ONNX protobuf bytes by hand (no onnx package on a device);
# tests/test_timing_core.py checks them against onnx's own reading.
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _float_tensor_info(name: str, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_field(1, _field(1, d)) for d in shape)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, dims)))  # elem_type 1: float


def _graph_model(name: str, op: str, inputs: list[tuple[str, tuple[int, ...]]], output: tuple[str, tuple[int, ...]],
                 weights: dict[str, np.ndarray]) -> bytes:
    node = b"".join(_field(1, n) for n, _ in inputs) + b"".join(_field(1, n) for n in weights)
    node += _field(2, output[0]) + _field(4, op)
    graph = _field(1, node) + _field(2, name)
    for wname, array in weights.items():
        graph += _field(5, b"".join(_field(1, d) for d in array.shape) + _field(2, 1) + _field(8, wname)
                        + _field(9, np.ascontiguousarray(array, dtype="<f4").tobytes()))
    graph += b"".join(_field(11, _float_tensor_info(n, shape)) for n, shape in inputs)
    graph += _field(12, _float_tensor_info(*output))
    return _field(1, 8) + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))  # IR 8, opset 17


def null_model_bytes() -> bytes:
    """The cheapest possible graph (y = -x, one float): its latency is one call's fixed cost (see Sentinel,
    and the call overhead subtracted from every table entry)."""
    return _graph_model("null", "Neg", [("x", (1,))], ("y", (1,)), {})


def compute_model_bytes() -> bytes:
    """A fixed MatMul (64×256 · 256×128, ~40 µs on one x86 core) that every optimisation level leaves as it
    is: the compute half of the sentinel."""
    weight = (np.random.default_rng(0).standard_normal((256, 128)) * 0.1).astype(np.float32)
    return _graph_model("compute", "MatMul", [("x", (64, 256))], ("y", (64, 128)), {"w": weight})
