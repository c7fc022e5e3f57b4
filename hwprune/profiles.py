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
import math
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwprune import atomic, paths, runtime
from hwprune.analytic import AnalyticSpec
from hwprune.device import LOCAL, Device
from hwprune.errors import ProfileError
from hwprune.onnxgraph import Kernel
from hwprune.provenance import HostFingerprint
from hwprune.runtime import TimingProtocol
from hwprune.targets import RuntimeSettings, Target

log = logging.getLogger(__name__)
PROFILE_SCHEMA = 2


@dataclass(frozen=True)
class Entry:
    median_ms: float
    p90_ms: float
    spread: float
    n: int
    op: str
    host_call_ms: float = 0.0  # the host's state when measured (runtime.Sentinel's readings; 0: not recorded)
    host_compute_ms: float = 0.0


@dataclass(frozen=True)
class Calibration:
    """predicted_ms = scale · Σ kernels + offset_ms, fitted on whole networks measured on the device
    (offset_ms = scale · the per-call overhead, see `fit_calibration`)."""

    scale: float
    offset_ms: float
    networks: int
    max_error_pct: float
    call_overhead_ms: float = -1.0  # the call overhead subtracted from each entry when fitted (-1: the profile's)


class DeviceProfile:
    """The latency table of one device under one runtime setting (mutable: it is a growing cache)."""

    def __init__(self, profile_id: str, fingerprint: HostFingerprint, settings: RuntimeSettings, ort_version: str,
                 provenance: dict[str, Any], protocol: dict[str, Any], overhead_ms: float = 0.0,
                 entries: dict[str, Entry] | None = None, calibrations: dict[str, Calibration] | None = None,
                 path: Path | None = None, analytic: AnalyticSpec | None = None,
                 alignment_sweep: dict[str, Any] | None = None) -> None:
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
        self.alignment_sweep = alignment_sweep  # the measured channel sweep (measure.AlignmentSweep.to_json())
        self.device: Device = LOCAL  # where this run measures (set by `open_profile`; not part of the file)

    @property
    def preferred_channel_multiple(self) -> int | None:
        """The channel multiple the device's runtime prefers: measured by the alignment sweep, or analytic."""
        if self.alignment_sweep:
            return int(self.alignment_sweep["preferred_channel_multiple"])
        return self.analytic.channel_multiple if self.analytic else None

    # -- identity ------------------------------------------------------------------------------------------
    def host_mismatches(self) -> list[str]:
        """Why the run's device (this host, or its agent's) is not the one the table was measured on (empty
        when it is)."""
        reasons = self.fingerprint.differences(self.device.fingerprint())
        if self.ort_version != self.device.ort_version():
            reasons.append(f"onnxruntime: {self.ort_version!r} vs {self.device.ort_version()!r}")
        return reasons

    def graph_mismatches(self) -> list[str]:
        """Why the run's device's ONNX Runtime would build other graphs than the profile's (empty if none)."""
        reasons = self.fingerprint.differences(self.device.fingerprint(), ("arch", "isa"))
        if self.ort_version != self.device.ort_version():
            reasons.append(f"onnxruntime: {self.ort_version!r} vs {self.device.ort_version()!r}")
        return reasons

    @property
    def kind(self) -> str:
        return str(self.provenance.get("kind"))

    @property
    def measured_here(self) -> bool:
        """The run's device (this host, or the device behind its agent) is the profile's: its latencies are
        measured in this run (see `device_mismatches`)."""
        return not device_mismatches(self.fingerprint.arch, self.settings.providers, self, self.device)

    def describe(self) -> str:
        return (f"profile '{self.id}' ({self.provenance.get('kind')} on {self.provenance.get('host')}, "
                f"{self.fingerprint.cpu}, onnxruntime {self.ort_version}, {self.settings.describe()})")

    # -- persistence ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": PROFILE_SCHEMA,
            "id": self.id,
            "device": {k: v for k, v in asdict(self.fingerprint).items() if k != "gpu" or v},  # no GPU: as before
            "runtime": {"onnxruntime": self.ort_version, **asdict(self.settings)},
            "provenance": self.provenance,
            "protocol": self.protocol,
            "overhead_ms": self.overhead_ms,
            "calibration": {k: _calibration_json(v) for k, v in self.calibrations.items()},
            **({"analytic": asdict(self.analytic)} if self.analytic else {}),
            **({"alignment": self.alignment_sweep} if self.alignment_sweep else {}),
            "entries": {k: asdict(v) for k, v in sorted(self.entries.items())},
        }

    def save(self, path: Path | None = None) -> None:
        """Write the table, merged with the file's: runs sharing a profile each measure kernels into it, and
        under `<file>.lock` the file is re-read, what it holds that this object lacks is added here, and the
        union is written, so no run's measurements are lost. For a key both hold, this object's value wins (it
        may be a deliberate re-measurement). A file that changed into another profile is not overwritten."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise ProfileError("profile has no file to save to")
        with atomic.FileLock(paths.lock_beside(path)):
            if path.exists():
                self._merge(DeviceProfile.load(path))
            self.provenance["updated"] = _now()
            atomic.write_json(path, self.to_json())
        self.path = path

    def _identity(self) -> tuple:
        return self.id, self.fingerprint, self.settings, self.ort_version, self.kind

    def _merge(self, disk: DeviceProfile) -> None:
        if disk._identity() != self._identity():
            raise ProfileError(f"{disk.path} now holds another profile ({disk.describe()}), not {self.describe()}",
                               hint="two runs made different profiles under one id: move one file away, or give "
                                    "the targets different profile ids")
        for key, entry in disk.entries.items():  # in place: the latency model holds this dict
            self.entries.setdefault(key, entry)
        for key, calibration in disk.calibrations.items():
            self.calibrations.setdefault(key, calibration)
        self.alignment_sweep = self.alignment_sweep or disk.alignment_sweep

    @classmethod
    def load(cls, path: Path) -> DeviceProfile:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ProfileError(f"{path}: profile not found", hint="run `hwprune profile --target NAME`") from None
        except RecursionError:  # json recurses per nesting level
            raise ProfileError(f"{path}: not a readable JSON profile (nested too deeply)",
                               hint="delete it to re-measure, or restore it from version control") from None
        except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
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
        field = _FieldCheck(path)  # every value's type and range, so a hand-edited file fails here, not later
        fingerprint = HostFingerprint(field.text(device, "cpu", "device."), field.text(device, "arch", "device."),
                                      tuple(field.texts(device, "isa", "device.")),
                                      field.integer(device, "cores", "device.", minimum=1),
                                      field.text(device, "gpu", "device.") if "gpu" in device else "")
        providers = field.texts(rt, "providers", "runtime.")
        if not providers:
            raise ProfileError(f"{path}: field 'runtime.providers' is empty", hint="re-measure the profile")
        optimization = field.text(rt, "graph_optimization", "runtime.")
        if optimization not in ("disable", "basic", "extended", "all"):
            raise ProfileError(f"{path}: field 'runtime.graph_optimization' must be disable, basic, extended or "
                               f"all, got {_show(optimization)}", hint="re-measure the profile")
        settings = RuntimeSettings(tuple(providers), field.integer(rt, "intra_op_threads", "runtime.", minimum=1),
                                   optimization)
        entries = {key: Entry(field.number(v, "median_ms", where), field.number(v, "p90_ms", where),
                              field.number(v, "spread", where), field.integer(v, "n", where),
                              field.text(v, "op", where), field.number(v, "host_call_ms", where, required=False),
                              field.number(v, "host_compute_ms", where, required=False))
                   for key, v, where in field.table(data, "entries", Entry)}
        calibrations = {key: Calibration(field.number(v, "scale", where, positive=True),
                                         field.number(v, "offset_ms", where, minimum=None),
                                         field.integer(v, "networks", where),
                                         field.number(v, "max_error_pct", where),
                                         field.number(v, "call_overhead_ms", where) if "call_overhead_ms" in v
                                         else -1.0)
                        for key, v, where in field.table(data, "calibration", Calibration, required=False)}
        alignment = data.get("alignment")
        if alignment is not None:
            if not isinstance(alignment, dict):
                raise ProfileError(f"{path}: field 'alignment' must be an object, got {_show(alignment)}",
                                   hint="re-measure the profile")
            field.integer(alignment, "preferred_channel_multiple", "alignment.", minimum=1)
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
        protocol = data.get("protocol", {})
        if not isinstance(protocol, dict):
            raise ProfileError(f"{path}: field 'protocol' must be an object, got {_show(protocol)}",
                               hint="re-measure the profile")
        overhead_ms = field.number(data, "overhead_ms", "", required=False)
        return cls(str(need(data, "id", str)), fingerprint, settings, str(need(rt, "onnxruntime", str, "runtime.")),
                   provenance, protocol, overhead_ms, entries, calibrations, Path(path), spec, alignment)


def _show(value: Any, limit: int = 40) -> str:
    """A value for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class _FieldCheck:
    """Typed access to a profile's fields; a missing or mistyped one is a ProfileError naming the file and field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _fail(self, field: str, what: str, value: Any) -> ProfileError:
        return ProfileError(f"{self.path}: field '{field}' must be {what}, got {_show(value)}",
                            hint="the profile is corrupt or hand-edited; restore it or re-measure it")

    def _get(self, obj: dict[str, Any], key: str, where: str, required: bool = True, default: Any = None) -> Any:
        if key not in obj:
            if required:
                raise ProfileError(f"{self.path}: missing field '{where}{key}'",
                                   hint="the profile is corrupt; re-measure it")
            return default
        return obj[key]

    def text(self, obj: dict[str, Any], key: str, where: str) -> str:
        value = self._get(obj, key, where)
        if not isinstance(value, str):
            raise self._fail(where + key, "a string", value)
        return value

    def texts(self, obj: dict[str, Any], key: str, where: str) -> list[str]:
        value = self._get(obj, key, where)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):  # tuple: to_json()
            raise self._fail(where + key, "a list of strings", value)
        return list(value)

    def integer(self, obj: dict[str, Any], key: str, where: str, minimum: int = 0) -> int:
        value = self._get(obj, key, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(where + key, f"an integer ≥ {minimum}", value)
        return value

    def number(self, obj: dict[str, Any], key: str, where: str, minimum: float | None = 0.0,
               positive: bool = False, required: bool = True) -> float:
        value = self._get(obj, key, where, required, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or (minimum is not None and value < minimum) or (positive and value <= 0):
            what = "a finite number" + (" > 0" if positive else f" ≥ {minimum:g}" if minimum is not None else "")
            raise self._fail(where + key, what, value)
        return float(value)

    def table(self, obj: dict[str, Any], key: str, kind: type, required: bool = True
              ) -> list[tuple[str, dict[str, Any], str]]:
        """(key, object, where) per item of the object `obj[key]`, whose items all have `kind`'s fields."""
        items = self._get(obj, key, "", required, {})
        if not isinstance(items, dict):
            raise self._fail(key, "an object", items)
        fields = set(kind.__dataclass_fields__)
        out = []
        for i, (name, value) in enumerate(items.items()):
            where = f"{key}[{i}]."
            if not isinstance(value, dict):
                raise self._fail(where[:-1], "an object", value)
            unknown = sorted(set(value) - fields)
            if unknown:
                raise ProfileError(f"{self.path}: unknown field '{where}{unknown[0]}'",
                                   hint="the profile is corrupt or hand-edited; restore it or re-measure it")
            out.append((name, value, where))
        return out


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_host_profile(profile_id: str, settings: RuntimeSettings, protocol: TimingProtocol, path: Path,
                     device: Device = LOCAL) -> DeviceProfile:
    """An empty measured profile for `device` (this host, or the device behind an agent), its call overhead
    measured there."""
    profile = DeviceProfile(
        profile_id, device.fingerprint(), settings, device.ort_version(),
        provenance={"kind": "measured", "host": socket.gethostname() if not device.agents else device.label,
                    "created": _now(), **({"through": device.label, "device": device.details()}
                                          if device.agents else {}),
                    "method": "each node of ONNX Runtime's optimised graph timed alone (optimisation off, "
                              "IOBinding), attempts seconds apart and bracketed by host-state readings (attempts "
                              "in a slow phase taken again), the median of an attempt's fastest fifth of calls, "
                              "the lowest quiet one kept, minus the call overhead; calibrated on whole networks "
                              "timed the same way"},
        protocol=protocol.to_json(), path=path)
    profile.device = device
    # no waiting for a quiet phase here: a run replaces it by its sentinel's quietest reading (LatencyPredictor)
    profile.overhead_ms = device.time_side_by_side([runtime.null_model_bytes()], runtime.as_built(settings),
                                                   replace(protocol, patience_s=0.0))[0].median_ms
    return profile


def device_mismatches(arch: str, providers: tuple[str, ...], profile: DeviceProfile | None,
                      device: Device = LOCAL) -> list[str]:
    """Why `device` (this host, or the device behind an agent) is not the device of a target with
    architecture `arch` (empty: any), execution `providers` and `profile` (None: none yet); empty when it
    is, and then its latencies are measured there.

    The one definition of "the run's device is the target's", used by runs, `hwprune validate`, `hwprune
    profile` and the table: the architecture and providers are the device's, and the profile, if any, was
    measured on it (CPU and GPU fingerprint and onnxruntime version). An analytic profile never is; a
    target without a profile yet is, when a first measurement there could create one.
    """
    reasons = []
    device_arch = device.fingerprint().arch
    if arch and arch != device_arch:
        reasons.append(f"arch: {arch!r} vs {device.label}'s {device_arch!r}")
    available = device.providers()
    reasons += [f"execution provider {p} is not available on {device.label}" for p in providers
                if p not in available]
    if profile is not None:
        if profile.kind != "measured":
            reasons.append(f"profile '{profile.id}' is {profile.kind}, not measured")
        else:
            reasons += profile.host_mismatches()
    return reasons


def host_is_device(target: Target, profile: DeviceProfile | None, device: Device = LOCAL) -> bool:
    """See `device_mismatches`."""
    return not device_mismatches(target.arch, target.providers, profile, device)


def open_profile(profile_id: str, settings: RuntimeSettings, profiles_dir: Path, target_arch: str,
                 protocol: TimingProtocol = runtime.KERNEL_PROTOCOL, builtin_analytic: bool = True,
                 device: Device = LOCAL) -> DeviceProfile:
    """Load `profiles_dir/<id>.json` (else, with `builtin_analytic`, the analytic profile shipped with
    hwprune); create it for `device` (this host, or an agent's device) when absent and it can be the device.
    Through an agent, a measured profile of another device is refused: one table never mixes two devices."""
    path = paths.profile_file(profiles_dir, profile_id)
    builtin = paths.builtin_profile(profile_id)
    if device.agents and not device_mismatches(target_arch, settings.providers, None, device):
        builtin_analytic = False  # the device itself answers: measure it rather than use the roofline
    if (builtin_analytic and not path.exists() and builtin.exists()
            and DeviceProfile.load(builtin).analytic is not None):
        path = builtin
    if path.exists():
        profile = DeviceProfile.load(path)
        profile.device = device
        if profile.settings != settings:
            raise ProfileError(f"{path}: measured with {profile.settings.describe()}, the target asks for "
                               f"{settings.describe()}", hint="use a profile id per runtime setting in the target")
        if profile.kind == "measured" and device.agents and profile.host_mismatches():
            raise ProfileError(f"{path} was measured on another device than {device.label} "
                               f"({'; '.join(profile.host_mismatches())}): refusing to mix two devices in one table",
                               hint="give the target another profile id for this device, or move the file away")
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
    cannot = device_mismatches(target_arch, settings.providers, None, device)
    if cannot:
        raise ProfileError(f"no profile {path} for this target, and {device.label} cannot measure one "
                           f"({'; '.join(cannot)})",
                           hint="measure through the device's agent (--agent URL), or run `hwprune profile` on the "
                                "device and copy the file here")
    return new_host_profile(profile_id, settings, protocol, path, device)


def measure_missing(profile: DeviceProfile, kernels: Iterable[Kernel], protocol: TimingProtocol,
                    on_measured: Callable[[int, int], None] | None = None,
                    sentinel: runtime.HostLevel | None = None, patience: runtime.Patience | None = None) -> int:
    """Measure every kernel the table lacks (on its device only: this host or an agent's) and save the
    profile after every chunk, so a run that fails midway keeps what it measured. Returns how many.
    `on_measured(k, total)` is called after each chunk of k kernels; `sentinel` carries the device's quiet
    level from earlier measurements of the run (see `runtime.Sentinel`), `patience` the run's allowance for
    waiting out slow phases (see `runtime.Patience`; default: the protocol's, once for this call)."""
    todo = list({k.signature: k for k in kernels if k.signature not in profile.entries}.values())
    if not todo:
        return 0
    if not profile.measured_here:
        reasons = "; ".join(profile.host_mismatches()) or f"provenance is {profile.provenance.get('kind')}"
        raise ProfileError(f"profile '{profile.id}' has no entry for {todo[0].op} ({len(todo)} kernels missing) "
                           f"and {profile.device.label} cannot measure it ({reasons})",
                           hint="run `hwprune profile` on the target device to extend the table")
    chunk = 40
    device, settings = profile.device, runtime.as_built(profile.settings)
    level = sentinel or device.host_level(settings)
    patience = patience or runtime.Patience(protocol.patience_s)
    step = chunk * device.parallelism  # a shelf of agents times one chunk on each device at once
    for start in range(0, len(todo), step):
        batch = todo[start:start + step]
        timed = device.time_many([k.build() for k in batch], settings, protocol, chunk, level, patience)
        for kernel, stats in zip(batch, timed, strict=True):
            profile.entries[kernel.signature] = Entry(stats.median_ms, stats.p90_ms, stats.spread, stats.n, kernel.op,
                                                      stats.host_call_ms, stats.host_compute_ms)
        profile.save()
        if on_measured:
            on_measured(len(batch), len(todo))
    return len(todo)


def _calibration_json(calibration: Calibration) -> dict:
    """A calibration as stored: the overhead it was fitted with only when it has its own (see Calibration)."""
    data = asdict(calibration)
    if calibration.call_overhead_ms < 0:
        del data["call_overhead_ms"]
    return data


def fit_calibration(kernel_sums_ms: list[float], measured_ms: list[float], call_overhead_ms: float) -> Calibration:
    """One scale s with predicted = s · (Σ kernels + one call's overhead), s the median of the networks'
    measured/summed ratios: a noisy network (or kernel) cannot drag it, where a least-squares scale+offset
    on 9 networks was pulled 5% off by one disturbed measurement."""
    x, y = np.asarray(kernel_sums_ms) + call_overhead_ms, np.asarray(measured_ms)
    scale = float(np.median(y / x))
    errors = np.abs(scale * x - y) / y * 100
    return Calibration(scale, scale * call_overhead_ms, len(x), float(errors.max()), call_overhead_ms)
