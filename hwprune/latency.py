"""LatencyModel: a network's latency predicted from a device profile's kernel table.

Predicted latency = scale · Σ (kernel entry − call overhead) + offset, with the calibration fitted on whole
networks of the same architecture. A kernel missing from the table is an error, never 0 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwprune.errors import ProfileError
from hwprune.onnxgraph import Kernel
from hwprune.profiles import Calibration, DeviceProfile


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
