"""LatencyModel: a network's latency predicted from a device profile's kernel table; LatencyOracle: the
same for any channel widths of one architecture, measuring missing kernels on this host when it can.

Predicted latency = scale · Σ (kernel entry − call overhead) + offset, with the calibration fitted on whole
networks of the same architecture. A kernel missing from the table is an error, never 0 ms.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hwprune import profiles, runtime
from hwprune.errors import ProfileError
from hwprune.onnxgraph import GraphTemplate, Kernel
from hwprune.profiles import Calibration, DeviceProfile
from hwprune.progress import NullProgress, Progress, stage
from hwprune.runtime import WHOLE_MODEL_PROTOCOL, TimingProtocol


@dataclass(frozen=True)
class Prediction:
    latency_ms: float
    kernel_sum_ms: float
    per_kernel_ms: tuple[tuple[str, float], ...]  # (op label, ms) in graph order


class LatencyModel:
    def __init__(self, profile: DeviceProfile, architecture_key: str) -> None:
        self.profile = profile
        self.architecture_key = architecture_key

    @property
    def calibration(self) -> Calibration | None:
        return self.profile.calibrations.get(self.architecture_key)

    def kernel_sum_ms(self, kernels: list[Kernel]) -> tuple[float, list[tuple[str, float]]]:
        parts = []
        for k in kernels:
            entry = self.profile.entries.get(k.signature)
            if entry is None:
                raise ProfileError(f"profile '{self.profile.id}' has no entry for a {k.op} kernel",
                                   hint="measure it on the device (`hwprune profile`)")
            parts.append((k.op, max(entry.median_ms - self.profile.overhead_ms, 0.0)))
        return sum(ms for _, ms in parts), parts

    def predict(self, kernels: list[Kernel]) -> Prediction:
        total, parts = self.kernel_sum_ms(kernels)
        cal = self.calibration
        latency = cal.scale * total + cal.offset_ms if cal else total + self.profile.overhead_ms
        return Prediction(latency, total, tuple(parts))


class LatencyOracle:
    """Predicts a width configuration's latency, measuring missing kernels on first need when it can."""

    def __init__(self, template: GraphTemplate, profile: profiles.DeviceProfile, protocol: TimingProtocol,
                 progress: Progress = NullProgress()) -> None:
        self.template = template
        self.profile = profile
        self.model = LatencyModel(profile, template.key)
        self.protocol = protocol
        self.progress = progress
        self.measured_kernels = 0

    def ensure(self, widths_list: list[dict[str, int]]) -> None:
        kernels = [k for w in widths_list for k in self.template.kernels(w)]
        missing = {k.signature for k in kernels} - set(self.profile.entries)
        if missing and self.profile.measured_here:
            with stage(self.progress, "measuring latency table", len(missing), transient=True) as bar:
                self.measured_kernels += profiles.measure_missing(
                    self.profile, kernels, self.protocol, lambda i, n: bar.advance(1, f"kernel {i}/{n}"))

    def __call__(self, widths: dict[str, int]) -> float:
        self.ensure([widths])
        return self.model.predict(self.template.kernels(widths)).latency_ms

    def calibrate(self, dense_widths: dict[str, int], multiple: int, seed: int) -> profiles.Calibration | None:
        """Fit Σ-kernels → whole-model latency on networks measured here (dense, uniform and random widths)."""
        if self.model.calibration is not None or not self.profile.measured_here:
            return self.model.calibration
        rng = random.Random(seed)
        configs = [dense_widths]
        configs += [{g: max(multiple, multiple * round(w * f / multiple)) for g, w in dense_widths.items()}
                    for f in (0.75, 0.5, 0.35)]
        configs += [{g: max(multiple, multiple * rng.randint(1, max(1, w // multiple))) for g, w in
                     dense_widths.items()} for _ in range(3)]
        self.ensure(configs)
        sums, measured = [], []
        with stage(self.progress, "calibrating latency model", len(configs)) as bar:
            for i, widths in enumerate(configs):
                sums.append(self.model.kernel_sum_ms(self.template.kernels(widths))[0])
                measured.append(runtime.time_model(self.template.instantiate(widths, seed=i),
                                                   self.profile.settings, WHOLE_MODEL_PROTOCOL).median_ms)
                bar.advance(1)
        calibration = profiles.fit_calibration(sums, measured)
        self.profile.calibrations[self.template.key] = calibration
        self.profile.save()
        return calibration
