"""Where a result comes from: this host's fingerprint, the versions of everything that computed it, and the
seeds each stage derives from the user's one seed. Light (no torch, onnx or onnxruntime imported: versions
are read from the installed distributions), so reports, benchmarks and the device side can all record it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from hwprune import __version__

_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
              "asimd", "sve")
# distribution names per library (the first one installed counts): ONNX Runtime ships as several wheels
_DISTRIBUTIONS = {"torch": ("torch",), "onnx": ("onnx",),
                  "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
                  "optuna": ("optuna",), "torch_pruning": ("torch-pruning",)}


@dataclass(frozen=True)
class HostFingerprint:
    """What makes a latency measured on one CPU differ from another's."""

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

    def differences(self, other: HostFingerprint, keys: tuple[str, ...] = ("cpu", "arch", "isa", "cores")
                    ) -> list[str]:
        return [f"{k}: {a!r} vs {b!r}" for k, a, b in
                ((k, getattr(self, k), getattr(other, k)) for k in keys) if a != b]


def host() -> dict[str, Any]:
    """This host, as reports and benchmark results record it."""
    fp = HostFingerprint.current()
    return {"hostname": socket.gethostname(), "cpu": fp.cpu, "arch": fp.arch, "isa": list(fp.isa),
            "cores": fp.cores, "python": platform.python_version()}


def library_version(library: str) -> str:
    """The installed version of one of hwprune's libraries (read from its distribution, never imported)."""
    for distribution in _DISTRIBUTIONS.get(library, (library,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def versions() -> dict[str, str]:
    return {"hwprune": __version__, **{name: library_version(name) for name in _DISTRIBUTIONS}}


def derive_seed(seed: int, stage: str) -> int:
    """One user seed → an independent, reproducible seed per stage ("init", "dense", "round2", ...); the one
    place seeds are hashed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stage}".encode()).digest()[:4], "little")
