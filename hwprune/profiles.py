"""Device profiles: a per-kernel latency table with full provenance, loaded, validated, extended and saved.

A *measured* profile is timed on a named host (its fingerprint is recorded) under one runtime setting; its
kernels are the nodes of ONNX Runtime's optimised graph, so it predicts on hosts whose runtime builds the
same graph (same architecture, ISA and onnxruntime version). When this host is the profile's device,
missing kernels are measured on first need and cached in the file; otherwise a kernel it lacks is an error,
never 0 ms. An *analytic* profile holds cited device figures for a roofline instead of a table.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from hwprune import atomic, runtime
from hwprune.analytic import AnalyticSpec
from hwprune.errors import ProfileError
from hwprune.onnxgraph import Kernel
from hwprune.runtime import RuntimeSettings, TimingProtocol

log = logging.getLogger(__name__)
PROFILE_SCHEMA = 2
BUILTIN_PROFILES = Path(__file__).resolve().parent.parent / "profiles"  # analytic profiles shipped in the checkout
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
              "asimd", "sve")


@dataclass(frozen=True)
class HostFingerprint:
    cpu: str
    arch: str
    isa: tuple[str, ...]
    cores: int

    @classmethod
    def current(cls) -> HostFingerprint:
        cpu, flags = platform.processor() or "unknown", set()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and cpu in ("unknown", platform.machine(), ""):
                    cpu = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
        except OSError:
            pass
        return cls(cpu, platform.machine(), tuple(f for f in _ISA_FLAGS if f in flags), os.cpu_count() or 1)

    def differences(self, other: HostFingerprint) -> list[str]:
        return [f"{k}: {a!r} vs {b!r}" for k, a, b in
                ((k, getattr(self, k), getattr(other, k)) for k in ("cpu", "arch", "isa", "cores")) if a != b]


@dataclass(frozen=True)
class Entry:
    median_ms: float
    p90_ms: float
    spread: float
    n: int
    op: str


@dataclass(frozen=True)
class Calibration:
    """predicted_ms = scale · Σ kernels + offset_ms, fitted on whole networks measured on the device
    (offset_ms = scale · the per-call overhead, see `fit_calibration`)."""

    scale: float
    offset_ms: float
    networks: int
    max_error_pct: float


class DeviceProfile:
    """The latency table of one device under one runtime setting (mutable: it is a growing cache)."""

    def __init__(self, profile_id: str, fingerprint: HostFingerprint, settings: RuntimeSettings, ort_version: str,
                 provenance: dict[str, Any], protocol: dict[str, Any], overhead_ms: float = 0.0,
                 entries: dict[str, Entry] | None = None, calibrations: dict[str, Calibration] | None = None,
                 path: Path | None = None, analytic: AnalyticSpec | None = None,
                 alignment: dict[str, Any] | None = None) -> None:
        self.id = profile_id
        self.fingerprint = fingerprint
        self.settings = settings
        self.ort_version = ort_version
        self.provenance = provenance
        self.protocol = protocol
        self.overhead_ms = overhead_ms
        self.entries = entries or {}
        self.calibrations = calibrations or {}
        self.path = path
        self.analytic = analytic
        self.alignment = alignment  # the measured channel sweep (profiling.AlignmentSweep.to_json())

    @property
    def preferred_multiple(self) -> int | None:
        """The channel multiple the device's runtime prefers: measured by the alignment sweep, or analytic."""
        if self.alignment:
            return int(self.alignment["preferred_channel_multiple"])
        return self.analytic.channel_multiple if self.analytic else None

    # -- identity ------------------------------------------------------------------------------------------
    def host_mismatches(self) -> list[str]:
        """Why this host is not the profile's device (empty when it is)."""
        reasons = self.fingerprint.differences(HostFingerprint.current())
        if self.ort_version != runtime.version():
            reasons.append(f"onnxruntime: {self.ort_version!r} vs {runtime.version()!r}")
        return reasons

    def graph_mismatches(self) -> list[str]:
        """Why this host's ONNX Runtime would build other graphs than the profile's device (empty if none)."""
        current = HostFingerprint.current()
        reasons = [f"{k}: {a!r} vs {b!r}" for k, a, b in
                   ((k, getattr(self.fingerprint, k), getattr(current, k)) for k in ("arch", "isa")) if a != b]
        if self.ort_version != runtime.version():
            reasons.append(f"onnxruntime: {self.ort_version!r} vs {runtime.version()!r}")
        return reasons

    @property
    def kind(self) -> str:
        return str(self.provenance.get("kind"))

    @property
    def measured_here(self) -> bool:
        return self.kind == "measured" and not self.host_mismatches()

    def describe(self) -> str:
        return (f"profile '{self.id}' ({self.provenance.get('kind')} on {self.provenance.get('host')}, "
                f"{self.fingerprint.cpu}, onnxruntime {self.ort_version}, {self.settings.describe()})")

    # -- persistence ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": PROFILE_SCHEMA,
            "id": self.id,
            "device": asdict(self.fingerprint),
            "runtime": {"onnxruntime": self.ort_version, **asdict(self.settings)},
            "provenance": self.provenance,
            "protocol": self.protocol,
            "overhead_ms": self.overhead_ms,
            "calibration": {k: asdict(v) for k, v in self.calibrations.items()},
            **({"analytic": asdict(self.analytic)} if self.analytic else {}),
            **({"alignment": self.alignment} if self.alignment else {}),
            "entries": {k: asdict(v) for k, v in sorted(self.entries.items())},
        }

    def save(self, path: Path | None = None) -> None:
        path = path or self.path
        if path is None:
            raise ProfileError("profile has no file to save to")
        self.provenance["updated"] = _now()
        atomic.write_json(path, self.to_json())
        self.path = path

    @classmethod
    def load(cls, path: Path) -> DeviceProfile:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ProfileError(f"{path}: profile not found", hint="run `hwprune profile --target NAME`") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ProfileError(f"{path}: not a readable JSON profile ({exc})",
                               hint="delete it to re-measure, or restore it from version control") from None
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data: Any, path: Path) -> DeviceProfile:
        def need(obj: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
            if not isinstance(obj, dict) or key not in obj:
                raise ProfileError(f"{path}: missing field '{where}{key}'",
                                   hint="the profile is corrupt; re-measure it")
            if not isinstance(obj[key], kind):
                raise ProfileError(f"{path}: field '{where}{key}' has the wrong type", hint="re-measure the profile")
            return obj[key]

        schema = need(data, "schema", int)
        if schema != PROFILE_SCHEMA:
            raise ProfileError(f"{path}: profile schema {schema} is not supported (this hwprune reads schema "
                               f"{PROFILE_SCHEMA})", hint="delete the file and re-measure with `hwprune profile`")
        device = need(data, "device", dict)
        rt = need(data, "runtime", dict)
        try:
            fingerprint = HostFingerprint(str(device["cpu"]), str(device["arch"]), tuple(device["isa"]),
                                          int(device["cores"]))
            settings = RuntimeSettings(tuple(rt["providers"]), int(rt["intra_op_threads"]),
                                       str(rt["graph_optimization"]))
            entries = {k: Entry(**v) for k, v in need(data, "entries", dict).items()}
            calibrations = {k: Calibration(**v) for k, v in data.get("calibration", {}).items()}
            alignment = data.get("alignment")
            if alignment is not None:
                int(alignment["preferred_channel_multiple"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{path}: malformed profile ({type(exc).__name__}: {exc})",
                               hint="re-measure the profile") from None
        provenance = need(data, "provenance", dict)
        kind = provenance.get("kind")
        if kind not in ("measured", "analytic"):
            raise ProfileError(f"{path}: field 'provenance.kind' must be 'measured' or 'analytic', got {kind!r}")
        spec = None
        if kind == "analytic":
            try:
                spec = AnalyticSpec.from_json(need(data, "analytic", dict))
            except (KeyError, TypeError, ValueError) as exc:
                raise ProfileError(f"{path}: malformed field 'analytic' ({exc})",
                                   hint="every device figure needs a value and a citation in analytic.sources"
                                   ) from None
        return cls(str(need(data, "id", str)), fingerprint, settings, str(need(rt, "onnxruntime", str, "runtime.")),
                   provenance, data.get("protocol", {}), float(data.get("overhead_ms", 0.0)), entries,
                   calibrations, Path(path), spec, alignment)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_host_profile(profile_id: str, settings: RuntimeSettings, protocol: TimingProtocol, path: Path
                     ) -> DeviceProfile:
    """An empty measured profile for this host, its call overhead measured."""
    profile = DeviceProfile(
        profile_id, HostFingerprint.current(), settings, runtime.version(),
        provenance={"kind": "measured", "host": socket.gethostname(), "created": _now(),
                    "method": "each node of ONNX Runtime's optimised graph timed alone (optimisation off, "
                              "IOBinding), attempts seconds apart, least disturbed median kept, minus the call "
                              "overhead; calibrated on whole networks"},
        protocol=protocol.to_json(), path=path)
    profile.overhead_ms = runtime.time_model(_null_model(), runtime.as_built(settings), protocol).median_ms
    return profile


def _null_model() -> onnx.ModelProto:
    """The cheapest possible graph: its latency is the per-call overhead subtracted from every kernel."""
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "null",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def open_profile(profile_id: str, settings: RuntimeSettings, profiles_dir: Path, target_arch: str,
                 protocol: TimingProtocol = runtime.KERNEL_PROTOCOL) -> DeviceProfile:
    """Load `profiles_dir/<id>.json` (else the analytic profile shipped in the checkout's profiles/); create
    it for this host when absent and the host can be the device."""
    path = profiles_dir / f"{profile_id}.json"
    shipped = BUILTIN_PROFILES / f"{profile_id}.json"
    if not path.exists() and shipped.exists() and DeviceProfile.load(shipped).analytic is not None:
        path = shipped
    if path.exists():
        profile = DeviceProfile.load(path)
        if profile.settings != settings:
            raise ProfileError(f"{path}: measured with {profile.settings.describe()}, the target asks for "
                               f"{settings.describe()}", hint="use a profile id per runtime setting in the target")
        if profile.kind == "measured":
            graph_differs = profile.graph_mismatches()
            if graph_differs:
                raise ProfileError(
                    f"{path} was measured where ONNX Runtime builds other graphs ({'; '.join(graph_differs)}), "
                    "so its table cannot predict on this host",
                    hint="run hwprune on the device itself, or move the file away to use the target's analytic "
                         "profile")
            mismatches = profile.host_mismatches()
            if mismatches:
                log.warning("profile %s was measured on another host (%s); latencies are predicted, not measured "
                            "here", path, "; ".join(mismatches))
        return profile
    if target_arch and target_arch != platform.machine():
        raise ProfileError(f"no profile {path} for this {target_arch} target, and this {platform.machine()} host "
                           "cannot measure one", hint="run `hwprune profile` on the device and copy the file here")
    return new_host_profile(profile_id, settings, protocol, path)


def measure_missing(profile: DeviceProfile, kernels: Iterable[Kernel], protocol: TimingProtocol,
                    on_measured: Callable[[int, int], None] | None = None) -> int:
    """Measure every kernel the table lacks (on this host only) and save the profile. Returns how many.
    `on_measured(k, total)` is called after each chunk of k kernels."""
    todo = list({k.signature: k for k in kernels if k.signature not in profile.entries}.values())
    if not todo:
        return 0
    if not profile.measured_here:
        reasons = "; ".join(profile.host_mismatches()) or f"provenance is {profile.provenance.get('kind')}"
        raise ProfileError(f"profile '{profile.id}' has no entry for {todo[0].op} ({len(todo)} kernels missing) "
                           f"and this host cannot measure it ({reasons})",
                           hint="run `hwprune profile` on the target device to extend the table")
    chunk = 40
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        timed = runtime.time_many([k.build() for k in batch], runtime.as_built(profile.settings), protocol, chunk)
        for kernel, stats in zip(batch, timed, strict=True):
            profile.entries[kernel.signature] = Entry(stats.median_ms, stats.p90_ms, stats.spread, stats.n, kernel.op)
        if on_measured:
            on_measured(len(batch), len(todo))
    profile.save()
    return len(todo)


def fit_calibration(kernel_sums_ms: list[float], measured_ms: list[float], call_overhead_ms: float) -> Calibration:
    """One scale s with predicted = s · (Σ kernels + one call's overhead), s the median of the networks'
    measured/summed ratios: a noisy network (or kernel) cannot drag it, where a least-squares scale+offset
    on 9 networks was pulled 5% off by one disturbed measurement."""
    x, y = np.asarray(kernel_sums_ms) + call_overhead_ms, np.asarray(measured_ms)
    scale = float(np.median(y / x))
    errors = np.abs(scale * x - y) / y * 100
    return Calibration(scale, scale * call_overhead_ms, len(x), float(errors.max()))
