"""`hwprune profile`: measure a device's latency table for one model's search space, on the device.

The table is filled for networks drawn from the search space (every group at multiples of the target's
channel multiple between the smallest width the search may keep and the dense width), then calibrated on
whole networks; what a later search still lacks is measured lazily. An alignment sweep times one
representative convolution at every channel count, so the profile states the runtime's step structure and
the channel multiple it prefers, measured rather than assumed.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwprune import runtime
from hwprune.device import LOCAL, Device
from hwprune.latency import LatencyPredictor, calibration_configs
from hwprune.profiles import Calibration
from hwprune.progress import NullProgress, Progress, stage
from hwprune.prune.masks import keep_count
from hwprune.runtime import TimingProtocol

SWEEP_PROTOCOL = TimingProtocol(warmup=5, min_repeats=20, min_time_s=0.02, attempts=3, min_attempts=2, quiet_calls=0.2)


@dataclass(frozen=True)
class TableBuild:
    entries: int
    measured: int
    seconds: float
    calibration: Calibration | None
    networks: int  # search-space networks whose kernels were measured
    coverage: float  # share of held-out search-space networks' kernels already in the table
    slow_share: float  # share of the sentinel's readings in a slow phase of the host while measuring


def search_space_configs(dense_widths: dict[str, int], channel_multiple: int, max_prune_rate: float, count: int,
                         seed: int) -> list[dict[str, int]]:
    """Random networks of the search space: per group, a multiple of `channel_multiple` the search can reach."""
    rng = random.Random(seed)
    choices = {}
    for g, w in dense_widths.items():
        low = keep_count(w, max_prune_rate, channel_multiple, w)
        choices[g] = sorted({low, w} | {c for c in range(channel_multiple, w + 1, channel_multiple) if c >= low})
    return [{g: rng.choice(c) for g, c in choices.items()} for _ in range(count)]


def build_table(predictor: LatencyPredictor, dense_widths: dict[str, int], channel_multiple: int,
                max_prune_rate: float, networks: int, seed: int, progress: Progress = NullProgress()) -> TableBuild:
    """Measure the kernels of `networks` search-space networks plus the calibration set, and calibrate."""
    start = time.perf_counter()
    before = predictor.measured_kernels
    configs = search_space_configs(dense_widths, channel_multiple, max_prune_rate, networks, seed)
    with stage(progress, "measuring the search space", len(configs)) as bar:
        for widths in configs:
            predictor.ensure([widths])
            bar.advance(1)
    calibration = predictor.calibrate(dense_widths, channel_multiple, seed)
    seconds = time.perf_counter() - start
    held_out = search_space_configs(dense_widths, channel_multiple, max_prune_rate, 10, seed + 1)
    kernels = [k for w in held_out for k in predictor.kernels(w)]
    coverage = sum(k.signature in predictor.profile.entries for k in kernels) / max(1, len(kernels))
    return TableBuild(len(predictor.profile.entries), predictor.measured_kernels - before, seconds, calibration,
                      len(configs) + len(calibration_configs(dense_widths, channel_multiple, seed)), coverage,
                      predictor.sentinel.slow_share if predictor.profile.measured_here else 0.0)


@dataclass(frozen=True)
class AlignmentSweep:
    """Latency of a 3×3 convolution (C → C channels, 14×14) for every C in `channels`."""

    channels: tuple[int, ...]
    ms: tuple[float, ...]
    preferred_channel_multiple: int

    def to_json(self) -> dict:
        costs = rounding_costs(list(self.channels), list(self.ms))
        return {"layer": "Conv 3x3, C->C, 14x14, batch 1, fp32", "channels": list(self.channels),
                "ms": [round(v, 6) for v in self.ms], "preferred_channel_multiple": self.preferred_channel_multiple,
                "rounding_cost": {str(m): round(c, 4) for m, c in costs.items()},
                "rounding_cost_limit": ROUNDING_COST_LIMIT}


def sweep_layer(channels: int, size: int = 14) -> onnx.ModelProto:
    """The alignment sweep's layer: a 3x3 convolution C -> C at size x size with ReLU (also a fixed reference)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "sweep", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, channels, size, size])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


MULTIPLES = (4, 8, 16, 32)
ROUNDING_COST_LIMIT = 0.05


def rounding_costs(channels: list[int], ms: list[float], candidates: tuple[int, ...] = MULTIPLES
                   ) -> dict[int, float]:
    """Per multiple m: what rounding every swept width up to the next multiple of m costs on average (0.03 =
    3 % slower). Near 0 where latency steps at multiples of m; the margin to the limit shows how clear the
    choice of multiple was."""
    at = dict(zip(channels, ms, strict=True))
    costs = {}
    for m in candidates:
        ratios = [at[-(-c // m) * m] / at[c] for c in channels if -(-c // m) * m in at]
        if len(ratios) >= m:
            costs[m] = float(np.mean(ratios)) - 1
    return costs


def preferred_channel_multiple(channels: list[int], ms: list[float], candidates: tuple[int, ...] = MULTIPLES
                               ) -> int:
    """The largest multiple m at which widths in between buy (almost) nothing: rounding any width up to the
    next multiple of m costs ≤ 5% on average, i.e. latency steps at multiples of m. 1 when none does."""
    costs = rounding_costs(channels, ms, candidates)
    return max([m for m, cost in costs.items() if cost <= ROUNDING_COST_LIMIT], default=1)


def alignment_sweep(settings: runtime.RuntimeSettings, channels: range = range(8, 65),
                    progress: Progress = NullProgress(), device: Device = LOCAL) -> AlignmentSweep:
    """Time the sweep layer at every channel count on `device`, with the target's full graph optimisation
    (attempts seconds apart, like the table's kernels)."""
    widths = list(channels)
    with stage(progress, "alignment sweep", 1, transient=True) as bar:
        ms = [s.median_ms for s in device.time_many([sweep_layer(c) for c in widths], settings, SWEEP_PROTOCOL, 40,
                                                    device.host_level(settings),
                                                    runtime.Patience(SWEEP_PROTOCOL.patience_s))]
        bar.advance(1)
    return AlignmentSweep(tuple(widths), tuple(ms), preferred_channel_multiple(widths, ms))
