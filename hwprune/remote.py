"""Devices reached through their agents (`hwprune.agent`) over HTTP, from the workstation that trains.

An `AgentDevice` sends models and settings, the agent times them with `hwprune.timing` on the device and
sends the figures back, with the device's quiet level (its sentinel) and state (temperature, clocks). An
`AgentShelf` spreads a table's kernels over several identical devices. Faults: an agent that cannot be
reached, or refuses the token, fails before any training (exit 5); one lost mid-run is retried with
backoff for `Retry.give_up_after_s`, then the run fails keeping every kernel measured so far (the table
is saved chunk by chunk; the rerun resumes it).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import math
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hwprune import agent, provenance
from hwprune.agent_args import RETRY_S
from hwprune.device import Device, LocalDevice
from hwprune.errors import ConfigError, ProfileError
from hwprune.provenance import HostFingerprint
from hwprune.timing import HostLevel, HostReading, LatencyStats, Model, Patience, TimingProtocol

log = logging.getLogger(__name__)

TOKEN_ENV = agent.TOKEN_ENV
# A quiet x86 core runs the sentinel's MatMul in ~0.04 ms; a device slower than that gets longer timeouts
REFERENCE_COMPUTE_MS = 0.04


@dataclass(frozen=True)
class Retry:
    """How long a run keeps trying an agent that stopped answering (restarting, rebooting, on a flaky link)."""

    give_up_after_s: float = RETRY_S
    first_wait_s: float = 1.0
    longest_wait_s: float = 15.0


def read_token(token_file: Path | None) -> str:
    """The agents' token: the first line of `token_file`, else $HWPRUNE_AGENT_TOKEN. Never printed."""
    if token_file is not None:
        try:
            lines = Path(token_file).read_text().strip().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the agent token file {token_file} ({exc.strerror})",
                              hint="give the file that holds the token the agent printed") from None
        token = lines[0].strip() if lines else ""
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ProfileError("the agent needs a token and none was given",
                           hint=f"set ${TOKEN_ENV} or pass --agent-token-file FILE with the token the agent printed")
    return token


def open_device(urls: tuple[str, ...], token_file: Path | None = None,
                retry_s: float = Retry.give_up_after_s) -> Device:
    """Where a target is measured: through the agents at `urls` (token from `token_file`, else
    $HWPRUNE_AGENT_TOKEN), reached now; without URLs, this host."""
    if not urls:
        return LocalDevice(record_states=True)
    if not (math.isfinite(retry_s) and retry_s >= 0):
        raise ConfigError(f"--agent-retry-s must be a finite number of seconds ≥ 0, got {retry_s}")
    return connect(urls, read_token(token_file), Retry(retry_s))


def connect(urls: tuple[str, ...], token: str, retry: Retry = Retry(), connect_s: float = 10.0) -> Device:
    """The device behind `urls` (one agent, or a shelf of identical ones), each reached and its token
    accepted now, before any training: an unreachable agent or a wrong token is exit 5 here."""
    devices = [AgentDevice(url, token, retry, connect_s) for url in urls]
    if len(devices) == 1:
        return devices[0]
    same_device(devices)
    return AgentShelf(devices)


def same_device(devices: list[AgentDevice]) -> None:
    """Refuse a shelf whose devices differ (CPU, GPU, cores, ONNX Runtime): one table, one kind of device."""
    first = devices[0]
    for other in devices[1:]:
        differs = first.fingerprint().differences(other.fingerprint())
        if other.ort_version() != first.ort_version():
            differs.append(f"onnxruntime: {first.ort_version()!r} vs {other.ort_version()!r}")
        if differs:
            raise ProfileError(f"agents {first.url} and {other.url} are different devices ({'; '.join(differs)}): "
                               "a shelf times one table on identical devices only",
                               hint="give one target the agents of identical devices")


def _settings_json(settings: Any) -> dict[str, Any]:
    return {"providers": list(settings.providers), "intra_op_threads": settings.intra_op_threads,
            "graph_optimization": settings.graph_optimization}


def _model_text(model: Model) -> str:
    return base64.b64encode(model if isinstance(model, bytes) else model.SerializeToString()).decode()


class AgentDevice(Device):
    """One device, through its agent."""

    def __init__(self, url: str, token: str, retry: Retry = Retry(), connect_s: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"agent URL {url!r} is not an http(s) address",
                              hint="give e.g. http://pi.local:8707 (the address the agent printed)")
        super().__init__()
        self.url = url.rstrip("/")
        self.label = f"agent {self.url}"
        self.agents = (self.url,)
        self._token = token
        self._retry = retry
        self._levels: dict[tuple, HostLevel] = {}
        self.info = self._call("/v1/fingerprint", None, connect_s, Retry(connect_s, 0.5, 2.0))
        if self.info.get("agent_api") != agent.AGENT_API:
            raise ProfileError(f"{self.label} speaks agent API {self.info.get('agent_api')!r}, this hwprune "
                               f"{agent.AGENT_API}", hint="run the agent of this hwprune version on the device")

    # -- what the device is ------------------------------------------------------------------------------
    def fingerprint(self) -> HostFingerprint:
        i = self.info
        return HostFingerprint(str(i["cpu"]), str(i["arch"]), tuple(i["isa"]), int(i["cores"]), str(i.get("gpu", "")))

    def details(self) -> dict[str, Any]:
        keep = ("board", "gpu", "gpu_driver", "onnxruntime", "providers", "python")
        return {"agent": self.url, **{k: self.info[k] for k in keep if self.info.get(k)}}

    def ort_version(self) -> str:
        return str(self.info["onnxruntime"])

    def providers(self) -> list[str]:
        return list(self.info["providers"])

    def host_level(self, settings: Any) -> HostLevel:
        """The agent's quiet level for these settings, as its last reply stated it (shared by the run)."""
        return self._levels.setdefault((tuple(settings.providers), settings.intra_op_threads), HostLevel())

    # -- measuring ---------------------------------------------------------------------------------------
    def time_many(self, models, settings, protocol, chunk, level, patience):
        seconds = len(models) * (protocol.min_time_s * max(protocol.attempts, 1) + 0.3) + patience.seconds
        reply = self._time({"mode": "many", "chunk": chunk, "patience_s": patience.seconds}, models, settings,
                           protocol, level, seconds)
        patience.seconds = float(reply["patience_left_s"])
        return self._stats(reply, len(models))

    def time_side_by_side(self, models, settings, protocol, level=None):
        seconds = len(models) * (protocol.min_time_s * max(protocol.attempts, 1) + 1.0) + 2 * protocol.patience_s
        reply = self._time({"mode": "side_by_side"}, models, settings, protocol,
                           level or self.host_level(settings), seconds)
        return self._stats(reply, len(models))

    def optimized_model(self, model, settings):
        reply = self._call("/v1/optimized", {"settings": _settings_json(settings), "model": _model_text(model)},
                           self._timeout(30.0, model))
        return base64.b64decode(reply["model"])

    def outputs(self, model, settings, feeds=None):
        body: dict[str, Any] = {"settings": _settings_json(settings), "model": _model_text(model)}
        if feeds is not None:
            body["inputs"] = {name: agent.encode_array(value) for name, value in feeds.items()}
        reply = self._call("/v1/outputs", body, self._timeout(30.0, model))
        return [np.load(io.BytesIO(base64.b64decode(o["data"])), allow_pickle=False) for o in reply["outputs"]]

    def tensor_types(self, model, settings):
        body = {"settings": _settings_json(settings), "model": _model_text(model), "values": False}
        reply = self._call("/v1/outputs", body, self._timeout(30.0, model))
        return {t["name"]: (list(t["shape"]), np.dtype(t["dtype"])) for t in reply["outputs"] + reply["inputs"]}

    # -- the wire ----------------------------------------------------------------------------------------
    def _time(self, extra: dict[str, Any], models: list[Model], settings: Any, protocol: TimingProtocol,
              level: HostLevel, seconds: float) -> dict[str, Any]:
        body = {**extra, "settings": _settings_json(settings), "protocol": protocol.to_json(),
                "models": [_model_text(m) for m in models]}
        reply = self._call("/v1/time", body, self._timeout(seconds * 3, *models))
        try:
            sentinel = reply["sentinel"]
            level.quiet = HostReading(float(sentinel["quiet_call_ms"]), float(sentinel["quiet_compute_ms"]))
            level.readings, level.slow_readings = int(sentinel["readings"]), int(sentinel["slow_readings"])
        except (KeyError, TypeError, ValueError):
            raise ProfileError(f"{self.label} sent a malformed timing reply",
                               hint="run the agent of this hwprune version on the device") from None
        state = reply.get("state", {})
        self.states += [s for s in (state.get("before"), state.get("after")) if isinstance(s, dict)]
        return reply

    def _stats(self, reply: dict[str, Any], count: int) -> list[LatencyStats]:
        names = {f.name for f in fields(LatencyStats)}
        try:
            stats = [LatencyStats(**{k: v for k, v in s.items() if k in names}) for s in reply["stats"]]
        except (KeyError, TypeError):
            stats = []
        if len(stats) != count or not all(math.isfinite(s.median_ms) and s.median_ms > 0 for s in stats):
            raise ProfileError(f"{self.label} sent a malformed timing reply",
                               hint="run the agent of this hwprune version on the device")
        return stats

    def _timeout(self, seconds: float, *models: Model) -> float:
        """Seconds to wait for a reply: what is asked, scaled by how much slower than a quiet x86 core the
        device computes (its sentinel says), plus the transfer of the models at a slow 1 MB/s."""
        slower = max([1.0] + [lv.quiet.compute_ms / REFERENCE_COMPUTE_MS for lv in self._levels.values()
                              if math.isfinite(lv.quiet.compute_ms)])
        size_mb = sum(len(m) if isinstance(m, bytes) else m.ByteSize() for m in models) / 1e6
        return 30.0 + seconds * slower + size_mb

    def _call(self, path: str, body: dict[str, Any] | None, timeout: float, retry: Retry | None = None
              ) -> dict[str, Any]:
        """One request, retried with backoff while the agent cannot be reached (it answers nothing, resets
        the connection, or times out); an answer that refuses is an error at once."""
        retry = retry or self._retry
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST",
                                         headers={"Authorization": f"Bearer {self._token}",
                                                  "Content-Type": "application/json"})
        deadline = time.monotonic() + retry.give_up_after_s
        wait = retry.first_wait_s
        while True:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                raise self._refusal(exc) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                if time.monotonic() + wait > deadline:
                    raise ProfileError(
                        f"{self.label} cannot be reached ({_short(reason)}; tried for {retry.give_up_after_s:.0f} s)",
                        hint="start it on the device (`python3 -m hwprune.agent --host 0.0.0.0`) and check the "
                             "URL and network; every kernel measured so far is kept: run again to resume") from None
                log.warning("%s: %s; trying again in %.0f s", self.label, _short(reason), wait)
                time.sleep(wait)
                wait = min(wait * 2, retry.longest_wait_s)

    def _refusal(self, exc: urllib.error.HTTPError) -> ProfileError:
        try:
            payload = json.loads(exc.read())
            message, hint = str(payload.get("error", "")), str(payload.get("hint", ""))
        except (ValueError, OSError, AttributeError):
            message, hint = exc.reason, ""
        if exc.code == 401:
            return ProfileError(f"{self.label} refused the token",
                                hint=f"set ${TOKEN_ENV} (or --agent-token-file) to the token the agent printed")
        return ProfileError(f"{self.label} refused: {message}", hint=hint or "see the agent's reason above")


class AgentShelf(Device):
    """Identical devices (one fingerprint) serving one target: a table's kernels are spread over them, timed
    at once; whole networks, side by side, run on the first (their ratios must come from one device)."""

    def __init__(self, devices: list[AgentDevice]) -> None:
        super().__init__()
        self.devices = devices
        self.label = f"{len(devices)} agents ({', '.join(d.url for d in devices)})"
        self.agents = tuple(d.url for d in devices)
        self.parallelism = len(devices)

    def fingerprint(self) -> HostFingerprint:
        return self.devices[0].fingerprint()

    def state_range(self) -> dict[str, list[float]]:
        return provenance.state_range([s for d in self.devices for s in d.states])

    def details(self) -> dict[str, Any]:
        return {**self.devices[0].details(), "agent": list(self.agents)}

    def ort_version(self) -> str:
        return self.devices[0].ort_version()

    def providers(self) -> list[str]:
        return self.devices[0].providers()

    def host_level(self, settings: Any) -> HostLevel:
        return _ShelfLevel([d.host_level(settings) for d in self.devices])

    def time_many(self, models, settings, protocol, chunk, level, patience):
        share = math.ceil(len(models) / len(self.devices))
        parts = [(d, models[i * share:(i + 1) * share]) for i, d in enumerate(self.devices) if models[i * share:]]
        allowances = [Patience(patience.seconds) for _ in parts]

        def timed(i: int) -> list[LatencyStats]:
            device, part = parts[i]
            return device.time_many(part, settings, protocol, chunk, device.host_level(settings), allowances[i])

        with ThreadPoolExecutor(len(parts)) as pool:
            results = list(pool.map(timed, range(len(parts))))
        patience.seconds = min(a.seconds for a in allowances)
        return [s for part in results for s in part]

    def time_side_by_side(self, models, settings, protocol, level=None):
        return self.devices[0].time_side_by_side(models, settings, protocol)

    def optimized_model(self, model, settings):
        return self.devices[0].optimized_model(model, settings)

    def outputs(self, model, settings, feeds=None):
        return self.devices[0].outputs(model, settings, feeds)

    def tensor_types(self, model, settings):
        return self.devices[0].tensor_types(model, settings)


class _ShelfLevel(HostLevel):
    """The shelf's quiet level: a reading is quiet when it is so for the least quiet device's level (the
    devices are identical; each entry was judged against its own device when timed)."""

    def __init__(self, levels: list[HostLevel]) -> None:
        self.levels = levels

    @property
    def quiet(self) -> HostReading:  # type: ignore[override]
        return HostReading(max(lv.quiet.call_ms for lv in self.levels), max(lv.quiet.compute_ms for lv in self.levels))

    @property
    def readings(self) -> int:  # type: ignore[override]
        return sum(lv.readings for lv in self.levels)

    @property
    def slow_readings(self) -> int:  # type: ignore[override]
        return sum(lv.slow_readings for lv in self.levels)


def _short(reason: object) -> str:
    if isinstance(reason, socket.timeout | TimeoutError):
        return "no answer in time"
    return str(reason).splitlines()[0][:160] if str(reason) else type(reason).__name__
