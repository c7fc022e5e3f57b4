"""Where a target's latencies are measured: this host (`LocalDevice`), or the device itself through its agent
(`hwprune.remote.AgentDevice`, see `hwprune.agent`).

Everything that times, runs or optimises a model for a target goes through a Device: the latency table,
the alignment sweep, the calibration networks, the final side-by-side timing and the numerics check. Both
kinds time with `hwprune.timing`, so a figure means the same whichever measured it.
"""

from __future__ import annotations

import platform
import socket
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from hwprune import provenance, timing
from hwprune.provenance import HostFingerprint
from hwprune.timing import HostLevel, LatencyStats, Model, Patience, TimingProtocol


class Device(ABC):
    """One place a target's models are timed and run."""

    label: str  # in reports and messages: "this host" or "agent http://pi.local:8707"
    agents: tuple[str, ...] = ()  # the agents' URLs (none: this host)
    parallelism: int = 1  # kernels timed at once (one per agent on a shelf)

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []  # temperature and clocks read around each timing request

    def state_range(self) -> dict[str, list[float]]:
        """The device's temperature and CPU clock range while this run measured (where readable)."""
        return provenance.state_range(self.states)

    @abstractmethod
    def fingerprint(self) -> HostFingerprint: ...

    @abstractmethod
    def details(self) -> dict[str, Any]:
        """The device as reports and profile provenance record it (board, GPU and driver where present)."""

    @abstractmethod
    def ort_version(self) -> str: ...

    @abstractmethod
    def providers(self) -> list[str]: ...

    @abstractmethod
    def host_level(self, settings: Any) -> HostLevel:
        """The device's quiet level for a run's measurements under `settings` (see `timing.Sentinel`)."""

    @abstractmethod
    def time_many(self, models: list[Model], settings: Any, protocol: TimingProtocol, chunk: int,
                  level: HostLevel, patience: Patience) -> list[LatencyStats]:
        """`timing.time_many` on the device (table kernels, the alignment sweep)."""

    @abstractmethod
    def time_side_by_side(self, models: list[Model], settings: Any, protocol: TimingProtocol,
                          level: HostLevel | None = None) -> list[LatencyStats]:
        """`timing.time_side_by_side` on the device (whole networks, interleaved)."""

    @abstractmethod
    def optimized_model(self, model: Model, settings: Any) -> bytes:
        """The graph ONNX Runtime builds for `model` on the device, serialised."""

    @abstractmethod
    def outputs(self, model: Model, settings: Any, feeds: dict[str, np.ndarray] | None = None
                ) -> list[np.ndarray]:
        """The model's outputs on the device for `feeds` (None: `timing.random_inputs`)."""

    @abstractmethod
    def tensor_types(self, model: Model, settings: Any) -> dict[str, tuple[list[int], np.dtype]]:
        """Shape and dtype of every input and output of one run on random inputs."""


class LocalDevice(Device):
    """This host."""

    def __init__(self, record_states: bool = False) -> None:
        super().__init__()
        self.label = "this host"  # its name and fingerprint are in every report's `host`
        self.record_states = record_states  # a run's own device records temperature and clocks

    def fingerprint(self) -> HostFingerprint:
        return HostFingerprint.current()

    def details(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "python": platform.python_version()}

    def ort_version(self) -> str:
        return timing.version()

    def providers(self) -> list[str]:
        return timing.available_providers()

    def host_level(self, settings: Any) -> HostLevel:
        return timing.Sentinel(settings)

    def time_many(self, models, settings, protocol, chunk, level, patience):
        self._record()
        stats = timing.time_many(models, settings, protocol, chunk, level, patience)
        self._record()
        return stats

    def time_side_by_side(self, models, settings, protocol, level=None):
        self._record()
        stats = timing.time_side_by_side(models, settings, protocol, sentinel=level)
        self._record()
        return stats

    def _record(self) -> None:
        if self.record_states:
            self.states.append(provenance.device_state())

    def optimized_model(self, model, settings):
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "optimized.onnx"
            timing.session(model, settings, save_optimized=str(target))
            return target.read_bytes()

    def outputs(self, model, settings, feeds=None):
        sess = timing.session(model, settings)
        return timing.run(sess, timing.random_inputs(sess) if feeds is None else feeds)

    def tensor_types(self, model, settings):
        sess = timing.session(model, settings)
        feeds = timing.random_inputs(sess)
        values = dict(zip((o.name for o in sess.get_outputs()), timing.run(sess, feeds), strict=True)) | feeds
        return {name: (list(v.shape), v.dtype) for name, v in values.items()}


LOCAL = LocalDevice()  # this host where no run gave its own device (records nothing: no state kept here)
