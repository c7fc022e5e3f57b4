"""The device agent: a small HTTP server on the device a model ships to (a Raspberry Pi, a Jetson, a server)
that times ONNX models with hwprune's own timing protocol and sends the figures back to the workstation,
which trains and searches. The reference design is TVM's RPC server: only the runtime on the device.

Runs with Python >= 3.8, the standard library, numpy and onnxruntime (no torch, onnx or optuna):
`python3 -m hwprune.agent`, `hwprune agent`, or the single file `hwprune agent --write-file` writes.

Safe by default: it binds to 127.0.0.1 unless told otherwise; every request carries a token, compared in
constant time; requests are size-limited; a model with external data, operators outside ONNX's and ONNX
Runtime's own domains, or model-local functions is refused before ONNX Runtime sees it; no custom operator
library is ever loaded, nothing from a request is executed or unpickled (arrays travel as .npy, pickles off),
and nothing is written outside the agent's cache folder. One measurement runs at a time: concurrent requests
queue, so timings never overlap.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import io
import json
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from hwprune.agent_args import TOKEN_ENV, add_arguments
from hwprune.errors import HwpruneError
from hwprune.provenance import HostFingerprint, device_state, gpu, read_text
from hwprune.timing import (
    ORT_ERRORS,
    Patience,
    Sentinel,
    TimingProtocol,
    available_providers,
    random_inputs,
    session,
    time_many,
    time_side_by_side,
    version,
)

AGENT_API = 1
# ONNX's own operator domains and ONNX Runtime's built-in ones (its optimised graphs use com.microsoft and
# com.microsoft.nchwc kernels): a node of any other domain would need a custom operator library, which the
# agent never loads. (Opset imports are declarations only: ONNX Runtime lists every domain it knows there.)
STANDARD_DOMAINS = frozenset(("", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview",
                              "ai.onnx.preview.training", "com.microsoft", "com.microsoft.nchwc",
                              "com.microsoft.experimental"))
_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
_PROTOCOL_LIMITS = {"warmup": 10_000, "min_repeats": 100_000, "min_time_s": 30.0, "max_repeats": 1_000_000,
                    "attempts": 50, "noise_limit": 10.0, "min_attempts": 50, "patience_s": 3600.0,
                    "quiet_calls": 1.0}


class Refused(Exception):
    """A request the agent will not serve: HTTP `status`, a one-line `message` and a `hint`."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class AgentSettings:
    """A target's runtime settings as a request states them (the fields `timing` reads)."""

    providers: Tuple[str, ...]
    intra_op_threads: int
    graph_optimization: str


# -- what the device is --------------------------------------------------------------------------------------
def fingerprint() -> Dict[str, Any]:
    """What makes this device's latencies its own: the CPU (as `HostFingerprint`), the board, the GPU and its
    driver, ONNX Runtime and its execution providers."""
    cpu = HostFingerprint.current()
    return {"cpu": cpu.cpu, "arch": cpu.arch, "isa": list(cpu.isa), "cores": cpu.cores, "gpu": cpu.gpu,
            "gpu_driver": gpu()[1], "board": read_text("/proc/device-tree/model"), "onnxruntime": version(),
            "providers": available_providers(), "python": platform.python_version(), "agent_api": AGENT_API}


# -- what a request may hold -----------------------------------------------------------------------------------
def check_model(data: bytes) -> None:
    """Refuse (422) what the agent will not hand to ONNX Runtime: external data (it would read files named
    by the model), operators outside the standard domains (they need a custom library), model-local functions;
    and bytes that are not an ONNX model. A protobuf walk of the model's structure, no onnx package."""
    if not data:
        raise Refused(422, "the model is empty")
    try:
        _check_message(memoryview(data), _MODEL, 0)
    except _Malformed as exc:
        raise Refused(422, f"not an ONNX model ({exc})", hint="send the model's serialised bytes") from None


class _Malformed(Exception):
    """Bytes that do not parse as protobuf (the walk's own signal, turned into a 422 by `check_model`)."""


# field numbers of onnx.proto: what each message holds that the walk must look into
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION = range(7)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 25: _FUNCTION},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
}


def _read_varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _check_message(buf: memoryview, kind: int, depth: int) -> None:
    if depth > 64:
        raise Refused(422, "the model nests subgraphs more than 64 deep")
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            if kind == _TENSOR and number == 14 and value == 1:
                raise Refused(422, "the model keeps tensor data in external files",
                              hint="send a self-contained model (onnx.save with save_as_external_data=False)")
            continue
        if wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise _Malformed("truncated field")
            continue
        if wire != 2:
            raise _Malformed(f"wire type {wire}")
        size, pos = _read_varint(buf, pos)
        if pos + size > len(buf):
            raise _Malformed("truncated field")
        part, pos = buf[pos:pos + size], pos + size
        if kind == _TENSOR and number == 13:
            raise Refused(422, "the model keeps tensor data in external files",
                          hint="send a self-contained model (onnx.save with save_as_external_data=False)")
        if kind == _NODE and number == 7:
            domain = bytes(part).decode("utf-8", "replace")
            if domain not in STANDARD_DOMAINS:
                raise Refused(422, f"the model uses the operator domain {domain[:60]!r}, which needs a custom "
                                   "operator library; the agent never loads one",
                              hint=f"standard domains: {', '.join(repr(d) for d in sorted(STANDARD_DOMAINS))}")
        child = _CHILDREN.get(kind, {}).get(number)
        if child == _FUNCTION:
            raise Refused(422, "the model defines model-local functions", hint="inline them before sending")
        if child is not None:
            _check_message(part, child, depth + 1)


def _settings(value: Any, providers_here: List[str]) -> AgentSettings:
    if not isinstance(value, dict) or set(value) != {f.name for f in fields(AgentSettings)}:
        raise Refused(400, "'settings' must hold exactly providers, intra_op_threads and graph_optimization")
    providers, threads, level = value["providers"], value["intra_op_threads"], value["graph_optimization"]
    if not (isinstance(providers, list) and providers and all(isinstance(p, str) for p in providers)):
        raise Refused(400, "'settings.providers' must be a non-empty list of names")
    missing = [p for p in providers if p not in providers_here]
    if missing:
        raise Refused(422, f"execution provider {missing[0]} is not available on this device",
                      hint=f"available: {', '.join(providers_here)}")
    if not (isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= 1024):
        raise Refused(400, "'settings.intra_op_threads' must be an integer from 1 to 1024")
    if level not in _OPTIMIZATION_LEVELS:
        raise Refused(400, f"'settings.graph_optimization' must be one of {', '.join(_OPTIMIZATION_LEVELS)}")
    return AgentSettings(tuple(providers), threads, level)


def _protocol(value: Any) -> TimingProtocol:
    if not isinstance(value, dict):
        raise Refused(400, "'protocol' must be an object")
    unknown = sorted(set(value) - set(_PROTOCOL_LIMITS))
    if unknown:
        raise Refused(400, f"unknown protocol field '{unknown[0]}'")
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number <= _PROTOCOL_LIMITS[key]:
            raise Refused(400, f"protocol field '{key}' must be a number from 0 to {_PROTOCOL_LIMITS[key]:g}")
    return TimingProtocol(**value)


def _number(body: Dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise Refused(400, f"'{key}' must be a number from {low:g} to {high:g}")
    return value


def _decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise Refused(400, f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, f"{what} is not valid base64") from None


def _models(body: Dict[str, Any]) -> List[bytes]:
    models = body.get("models")
    if not isinstance(models, list) or not models or len(models) > 10_000:
        raise Refused(400, "'models' must be a list of 1 to 10000 base64 ONNX models")
    decoded = [_decode(m, f"models[{i}]") for i, m in enumerate(models)]
    for model in decoded:
        check_model(model)
    return decoded


def _array(value: Any, what: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(_decode(value, what)), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise Refused(400, f"{what} is not a .npy array without objects") from None


def encode_array(array: np.ndarray) -> str:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(out.getvalue()).decode()


# -- serving -------------------------------------------------------------------------------------------------
class Agent:
    """What the HTTP handler serves: one measurement at a time, host-state sentinels kept per runtime setting
    (their quiet level carries from request to request), temporary files in `cache` only."""

    def __init__(self, token: str, cache: Path, max_request_bytes: int) -> None:
        self.token = token.encode()
        self.cache = cache
        self.max_request_bytes = max_request_bytes
        self.providers = available_providers()
        self.fingerprint = fingerprint()
        self._lock = threading.Lock()
        self._sentinels: Dict[Tuple[Tuple[str, ...], int], Sentinel] = {}

    def authorised(self, header: Optional[str]) -> bool:
        given = (header or "")[len("Bearer "):].encode() if (header or "").startswith("Bearer ") else b""
        return hmac.compare_digest(given, self.token)

    def handle(self, path: str, body: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        if path == "/v1/fingerprint":
            return {**self.fingerprint, "state": device_state()}
        if body is None:
            raise Refused(405, f"{path} takes a POST with a JSON body")
        routes = {"/v1/time": self._time, "/v1/optimized": self._optimized, "/v1/outputs": self._outputs}
        if path not in routes:
            raise Refused(404, f"no such endpoint {path}", hint=f"endpoints: /v1/fingerprint, {', '.join(routes)}")
        settings = _settings(body.get("settings"), self.providers)
        with self._lock:  # one measurement at a time: timings never overlap
            try:
                return routes[path](body, settings)
            except HwpruneError as exc:  # e.g. an input of dynamic shape, which no timing can feed
                raise Refused(422, exc.message, exc.hint) from None
            except ORT_ERRORS as exc:
                lines = str(exc).strip().splitlines()
                raise Refused(422, f"ONNX Runtime cannot run the model ({type(exc).__name__}: "
                                   f"{lines[0][:200] if lines else ''})") from None

    def _sentinel(self, settings: AgentSettings) -> Sentinel:
        key = (settings.providers, settings.intra_op_threads)
        if key not in self._sentinels:
            self._sentinels[key] = Sentinel(settings)
        return self._sentinels[key]

    def _time(self, body: Dict[str, Any], settings: AgentSettings) -> Dict[str, Any]:
        models = _models(body)
        protocol = _protocol(body.get("protocol", {}))
        mode = body.get("mode")
        sentinel = self._sentinel(settings)
        patience = Patience(_number(body, "patience_s", protocol.patience_s, 0, 3600))
        before = device_state()
        started = time.monotonic()
        if mode == "many":
            chunk = int(_number(body, "chunk", 40, 1, 1000))
            stats = time_many(models, settings, protocol, chunk, sentinel, patience)
        elif mode == "side_by_side":
            blocks = int(_number(body, "blocks", 12, 1, 100))
            stats = time_side_by_side(models, settings, protocol, blocks, sentinel)
        else:
            raise Refused(400, "'mode' must be 'many' or 'side_by_side'")
        return {"stats": [s.to_json() for s in stats], "patience_left_s": patience.seconds,
                "sentinel": {"quiet_call_ms": sentinel.quiet.call_ms, "quiet_compute_ms": sentinel.quiet.compute_ms,
                             "readings": sentinel.readings, "slow_readings": sentinel.slow_readings},
                "state": {"before": before, "after": device_state()},
                "window_s": [started, time.monotonic()]}  # the agent's clock: timings never overlap

    def _optimized(self, body: Dict[str, Any], settings: AgentSettings) -> Dict[str, Any]:
        model = _decode(body.get("model"), "'model'")
        check_model(model)
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            target = os.path.join(tmp, "optimized.onnx")
            session(model, settings, save_optimized=target)
            with open(target, "rb") as optimized:
                return {"model": base64.b64encode(optimized.read()).decode()}

    def _outputs(self, body: Dict[str, Any], settings: AgentSettings) -> Dict[str, Any]:
        model = _decode(body.get("model"), "'model'")
        check_model(model)
        sess = session(model, settings)
        given = body.get("inputs")
        if given is None:
            feeds = random_inputs(sess, int(_number(body, "seed", 0, 0, 2**31)))
        elif isinstance(given, dict):
            feeds = {str(name): _array(value, f"inputs[{name!r}]") for name, value in given.items()}
        else:
            raise Refused(400, "'inputs' must map input names to base64 .npy arrays")
        values = bool(body.get("values", True))
        outputs = sess.run(None, feeds)

        def described(name: str, array: Any) -> Dict[str, Any]:
            array = np.asarray(array)
            return {"name": name, "shape": list(array.shape), "dtype": str(array.dtype),
                    **({"data": encode_array(array)} if values else {})}
        return {"outputs": [described(meta.name, out) for meta, out in zip(sess.get_outputs(), outputs)],
                "inputs": [{"name": n, "shape": list(v.shape), "dtype": str(v.dtype)} for n, v in feeds.items()]}


class _Handler(BaseHTTPRequestHandler):
    server_version = "hwprune-agent"
    agent: Agent  # set per server (see serve)

    def do_GET(self) -> None:
        self._serve(with_body=False)

    def do_POST(self) -> None:
        self._serve(with_body=True)

    def _serve(self, with_body: bool) -> None:
        try:
            if not self.agent.authorised(self.headers.get("Authorization")):
                raise Refused(401, "wrong or missing token", hint=f"send 'Authorization: Bearer <token>' ({TOKEN_ENV})")
            body = None
            if with_body:
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    raise Refused(411, "a request needs a Content-Length") from None
                if length > self.agent.max_request_bytes:
                    raise Refused(413, f"the request is {length / 2**20:.1f} MiB, over the agent's limit of "
                                       f"{self.agent.max_request_bytes / 2**20:.0f} MiB",
                                  hint="start the agent with a larger --max-request-mb")
                try:
                    body = json.loads(self.rfile.read(length))
                except (ValueError, RecursionError):
                    raise Refused(400, "the body is not JSON") from None
                if not isinstance(body, dict):
                    raise Refused(400, "the body must be a JSON object")
            self._reply(200, self.agent.handle(self.path, body))
        except Refused as exc:
            self.close_connection = True  # an unread body must not be taken for the next request
            self._reply(exc.status, {"error": exc.message, "hint": exc.hint})
        except Exception as exc:  # the agent stays up for the next request; the client gets a one-line reason
            self._reply(500, {"error": f"agent error: {type(exc).__name__}: {str(exc)[:200]}", "hint": ""})

    def _reply(self, status: int, payload: Dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # requests are not logged: they carry tokens in headers and nothing a user needs


def serve(host: str, port: int, token: str, cache: Path, max_request_bytes: int) -> ThreadingHTTPServer:
    """A server bound to (host, port) serving one Agent; call `serve_forever()` on it."""
    cache.mkdir(parents=True, exist_ok=True)
    handler = type("Handler", (_Handler,), {"agent": Agent(token, cache, max_request_bytes)})
    return ThreadingHTTPServer((host, port), handler)


def _token(args: argparse.Namespace) -> Tuple[str, bool]:
    """The token and whether it was generated here (then it is printed once, for the workstation)."""
    if args.token_file:
        lines = Path(args.token_file).read_text().strip().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise OSError(f"{args.token_file} holds no token")
        return token, False
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip(), False
    return secrets.token_urlsafe(24), True


def serve_forever(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (exit 0); exit 5 when the address cannot be bound or the token file is unusable."""
    try:
        token, generated = _token(args)
        server = serve(args.host, args.port, token, Path(args.cache), int(args.max_request_mb * 2**20))
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        print("hint: choose another --port, check --token-file and --cache, or stop what holds the port",
              file=sys.stderr)
        return 5
    host, port = server.server_address[:2]
    fp = server.RequestHandlerClass.agent.fingerprint
    print(f"hwprune agent listening on http://{host}:{port} ({fp['cpu']}, {fp['arch']}, onnxruntime "
          f"{fp['onnxruntime']}, {', '.join(fp['providers'])})", flush=True)
    if generated:
        print(f"token: {token}  (give it to hwprune as ${TOKEN_ENV} or --agent-token-file)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: Optional[List[str]] = None, prog: str = "python3 -m hwprune.agent") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Time ONNX models on this device for hwprune on a "
                                                       "workstation (README: 'Measuring on your device').")
    add_arguments(p)
    return serve_forever(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
