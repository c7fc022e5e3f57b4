"""Latency predicted from a device profile, for any channel widths of one architecture.

Measured profiles: the network at the asked widths is handed to ONNX Runtime's optimiser on this host, and
its optimised graph (fusions, NCHWc layouts, channel padding, layout reorders: the runtime's own step
structure) is cut into one kernel per node. Predicted latency = scale · Σ (kernel entry − call overhead)
+ offset, the calibration fitted on whole networks of the same architecture. Kernels the table lacks are
measured on first need where this host is the device; elsewhere a missing kernel is an error, never 0 ms.

Analytic profiles: a roofline over the exported graph's kernels (see `analytic`), never measured.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import onnx
from torch import nn

from hwprune import analytic, export, inputs, profiles, runtime
from hwprune.errors import ProfileError
from hwprune.onnxgraph import GraphTemplate, Kernel, probe_widths, runtime_kernels
from hwprune.profiles import Calibration, DeviceProfile
from hwprune.progress import NullProgress, Progress, stage
from hwprune.prune import graph
from hwprune.prune.masks import Masks
from hwprune.runtime import CALIBRATION_PROTOCOL, TimingProtocol

log = logging.getLogger(__name__)

# A calibration network predicted this far off its measured time means a disturbed measurement (README,
# latency prediction: a quiet host fits far closer); the margin leaves room for honest noise.
REMEASURE_ABOVE_PCT = 10.0


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    kernel_sum_ms: float
    per_kernel_ms: tuple[tuple[str, float], ...]  # (op label, ms) in graph order
    source: str  # "table" or "analytic"


class LatencyModel:
    """Σ of a profile's kernel entries (less the per-call overhead each entry includes), calibrated."""

    def __init__(self, profile: DeviceProfile, architecture_key: str) -> None:
        self.profile = profile
        self.architecture_key = architecture_key

    @property
    def calibration(self) -> Calibration | None:
        return self.profile.calibrations.get(self.architecture_key)

    def kernel_sum_ms(self, kernels: list[Kernel]) -> tuple[float, list[tuple[str, float]]]:
        if self.profile.analytic is not None:
            parts = [(k.op, analytic.kernel_ms(k, self.profile.analytic)) for k in kernels]
            return sum(ms for _, ms in parts), parts
        parts = []
        cal = self.calibration
        overhead = cal.call_overhead_ms if cal is not None and cal.call_overhead_ms >= 0 else self.profile.overhead_ms
        for k in kernels:
            entry = self.profile.entries.get(k.signature)
            if entry is None:
                raise ProfileError(f"profile '{self.profile.id}' has no entry for a {k.op} kernel",
                                   hint="measure it on the device (`hwprune profile`)")
            parts.append((k.op, max(entry.median_ms - overhead, 0.0)))
        return sum(ms for _, ms in parts), parts

    def predict(self, kernels: list[Kernel]) -> Prediction:
        total, parts = self.kernel_sum_ms(kernels)
        cal = self.calibration
        if cal is not None:
            latency = cal.scale * total + cal.offset_ms
        elif self.profile.analytic is not None:
            latency = total + self.profile.analytic.call_overhead_us / 1000
        else:
            latency = total + self.profile.overhead_ms
        return Prediction(latency, total, tuple(parts), "analytic" if self.profile.analytic else "table")


class LatencyPredictor:
    """Predicts a width configuration's latency, measuring missing kernels on first need when it can."""

    def __init__(self, template: GraphTemplate, profile: profiles.DeviceProfile, protocol: TimingProtocol,
                 progress: Progress = NullProgress()) -> None:
        self.template = template
        self.profile = profile
        self.model = LatencyModel(profile, template.key)
        self.protocol = protocol
        self.progress = progress
        self.measured_kernels = 0
        self._kernels: dict[tuple[tuple[str, int], ...], list[Kernel]] = {}
        self.calibration_networks: list[tuple[dict[str, int], float]] = []  # (widths, measured ms), this run
        self._sentinel: runtime.HostLevel | None = None
        self.patience = runtime.Patience(protocol.patience_s)  # one allowance for waiting out slow phases

    @property
    def sentinel(self) -> runtime.HostLevel:
        """The device's state for every measurement of this run (its quiet level carries from call to call):
        a `runtime.Sentinel` on this host, the agent's level through an agent."""
        if self._sentinel is None:
            self._sentinel = self.profile.device.host_level(self.profile.settings)
        return self._sentinel

    def kernels(self, widths: dict[str, int]) -> list[Kernel]:
        """The kernels the device runs for `widths`: the runtime's optimised graph, or (analytic) the export's."""
        key = tuple(sorted(widths.items()))
        if key not in self._kernels:
            if self.profile.analytic is not None:
                self._kernels[key] = self.template.kernels(widths)
            else:
                optimized, shapes = runtime.optimized_graph(self.template.instantiate(widths, seed=0),
                                                            self.profile.settings, self.profile.device)
                self._kernels[key] = runtime_kernels(optimized, shapes)
        return self._kernels[key]

    def ensure(self, widths_list: list[dict[str, int]]) -> None:
        if self.profile.analytic is not None:
            return
        self._measure([k for w in widths_list for k in self.kernels(w)])

    def _measure(self, kernels: list[Kernel]) -> None:
        missing = {k.signature for k in kernels} - set(self.profile.entries)
        if missing and self.profile.measured_here:
            with stage(self.progress, "measuring latency table", len(missing), transient=True) as bar:
                self.measured_kernels += profiles.measure_missing(
                    self.profile, kernels, self.protocol, lambda k, n: bar.advance(k, f"{n} kernels"), self.sentinel,
                    self.patience)

    def predict(self, widths: dict[str, int]) -> Prediction:
        self.ensure([widths])
        return self.model.predict(self.kernels(widths))

    def __call__(self, widths: dict[str, int]) -> float:
        return self.predict(widths).latency_ms

    def calibrate(self, dense_widths: dict[str, int], channel_multiple: int, seed: int
                  ) -> profiles.Calibration | None:
        """Fit Σ-kernels → whole-model latency on networks measured here: dense, uniformly thinned, random
        aligned and random unaligned widths (the search and users' models produce both).

        A table measured while other load came and went predicts some networks far off (seen here: pruned
        networks 20-30 % low while the dense one fitted), and the fit's own error shows it; then the
        calibration networks' kernels and the networks are measured once more, and the better fit is kept.
        """
        if self.model.calibration is not None or not self.profile.measured_here:
            return self.model.calibration
        configs = calibration_configs(dense_widths, channel_multiple, seed)
        self.ensure(configs)
        self.retake_slow_entries()
        # the sentinel's quietest null-model reading is the call overhead in a quiet phase (the profile's own
        # figure may come from a slow one); each calibration keeps the overhead it was fitted with
        self.profile.overhead_ms = min(self.profile.overhead_ms, self.sentinel.quiet.call_ms)
        calibration = self._fit(configs)
        if calibration.max_error_pct > REMEASURE_ABOVE_PCT:
            log.warning("the latency table disagrees with whole-network timings by up to %.0f%% (load on this "
                        "host while measuring?): measuring the table and the networks again",
                        calibration.max_error_pct)
            first, networks = calibration, self.calibration_networks
            signatures = {k.signature for widths in configs for k in self.kernels(widths)}
            first_entries = {sig: self.profile.entries.pop(sig) for sig in signatures if sig in self.profile.entries}
            calibration = self._fit(configs)
            if first.max_error_pct < calibration.max_error_pct:  # the first table was the better one after all
                log.warning("measured again, the fit is no better (%.0f%%): keeping the first",
                            calibration.max_error_pct)
                self.profile.entries.update(first_entries)
                calibration, self.calibration_networks = first, networks
            elif calibration.max_error_pct > REMEASURE_ABOVE_PCT:
                log.warning("measured again, predictions still miss whole-network timings by up to %.0f%%: expect "
                            "extra rounds where the measured latency misses the budget", calibration.max_error_pct)
        self.profile.calibrations[self.template.key] = calibration
        self.profile.save()
        return calibration

    def retake_slow_entries(self) -> int:
        """Time again the kernels of this run whose entries were measured in a slow phase of the host: their
        sentinel level lies above the quiet level the run has found since (a phase that covered a whole
        chunk of kernels looks quiet from inside). Returns how many."""
        if self._sentinel is None or not self.profile.measured_here:
            return 0
        used = {k.signature: k for ks in self._kernels.values() for k in ks}
        entries = self.profile.entries
        slow = [k for sig, k in used.items() if sig in entries and entries[sig].host_call_ms > 0
                and not self.sentinel.is_quiet(runtime.HostReading(entries[sig].host_call_ms,
                                                                   entries[sig].host_compute_ms))]
        if slow:
            log.warning("%d of %d kernels were measured while this host ran slower than its quietest (a slow "
                        "phase: other load, clocks, heat): timing them again", len(slow), len(used))
            for kernel in slow:
                del self.profile.entries[kernel.signature]
            self._measure(slow)
        return len(slow)

    def _fit(self, configs: list[dict[str, int]]) -> profiles.Calibration:
        self.ensure(configs)
        sums = [self.model.kernel_sum_ms(self.kernels(widths))[0] for widths in configs]
        with stage(self.progress, f"calibrating latency model on {len(configs)} networks", None):
            stats = self.profile.device.time_side_by_side(
                [self.template.instantiate(w, seed=i) for i, w in enumerate(configs)], self.profile.settings,
                CALIBRATION_PROTOCOL, self.sentinel)
        measured = [s.median_ms for s in stats]
        self.calibration_networks = list(zip(configs, measured, strict=True))
        return profiles.fit_calibration(sums, measured, self.profile.overhead_ms)


def build_template(model: nn.Module, example: inputs.Example, dense_proto: onnx.ModelProto,
                   dense_widths: dict[str, int], ignore: tuple[str, ...]) -> GraphTemplate:
    """The dense graph made re-sizable: parameter shape rules from the pruning engine, constants from a probe."""
    widths = probe_widths(dense_widths)
    probe = graph.slim(model, example, Masks.full(dense_widths),
                       Masks.from_kept(dense_widths, {g: list(range(w)) for g, w in widths.items()}), ignore)
    params, conv_groups = graph.shape_rules(model, example, ignore)
    return GraphTemplate.build(dense_proto, export.export(probe, example), dense_widths, widths, params, conv_groups)


def calibration_configs(dense_widths: dict[str, int], channel_multiple: int, seed: int) -> list[dict[str, int]]:
    rng = random.Random(seed)
    configs = [dense_widths]
    m = channel_multiple
    configs += [{g: max(m, m * round(w * f / m)) for g, w in dense_widths.items()} for f in (0.75, 0.5, 0.35)]
    configs += [{g: max(m, m * rng.randint(1, max(1, w // m))) for g, w in dense_widths.items()} for _ in range(3)]
    configs += [{g: rng.randint(max(1, w // 6), w) for g, w in dense_widths.items()} for _ in range(2)]
    return configs
