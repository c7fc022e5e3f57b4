"""Where a result comes from: this host's fingerprint, the versions of everything that computed it, and the
seeds each stage derives from the user's one seed. Light (no torch, onnx or onnxruntime imported: versions
are read from the installed distributions), so reports, benchmarks and the device side can all record it.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import platform
import shutil
import socket
import subprocess
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
    gpu: str = ""  # the GPU a CUDA or TensorRT target runs on ("" : none found)

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
        return cls(cpu, platform.machine(), tuple(f for f in _ISA_FLAGS if f in flags), os.cpu_count() or 1,
                   gpu()[0])

    def differences(self, other: HostFingerprint, keys: tuple[str, ...] = ("cpu", "arch", "isa", "cores", "gpu")
                    ) -> list[str]:
        return [f"{k}: {a!r} vs {b!r}" for k, a, b in
                ((k, getattr(self, k), getattr(other, k)) for k in keys) if a != b]


def read_text(path: str) -> str:
    """A small system file's text ("" when unreadable), e.g. /proc/device-tree/model."""
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00")
    except OSError:
        return ""


def nvidia_smi(query: str) -> list[str]:
    """One line per GPU from `nvidia-smi --query-gpu=QUERY` (fixed arguments, no shell); none without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def gpu() -> tuple[str, str]:
    """(name, driver) of this machine's first NVIDIA GPU, a Jetson's board and L4T release, or ("", "").
    Read once per process: fingerprints are compared often and nvidia-smi takes a while."""
    found = nvidia_smi("name,driver_version")
    if found:
        name, _, driver = found[0].partition(",")
        return name.strip(), driver.strip()
    board = read_text("/proc/device-tree/model")
    if "jetson" in board.lower():
        return board, (read_text("/etc/nv_tegra_release").splitlines() or [""])[0]
    return "", ""


def device_state() -> dict[str, Any]:
    """Temperature and clocks where readable (a Pi throttles when hot, a Jetson's governor moves clocks)."""
    temps = [int(t) / 1000 for t in (read_text(p) for p in glob.glob("/sys/class/thermal/thermal_zone*/temp"))
             if t.lstrip("-").isdigit()]
    cpu_khz = [int(f) for f in (read_text(p) for p in
                                glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")) if f.isdigit()]
    devfreq = {Path(p).parent.name: int(f) for p in glob.glob("/sys/class/devfreq/*/cur_freq")
               for f in [read_text(p)] if f.isdigit()}  # a Jetson's GPU clock
    state: dict[str, Any] = {}
    if temps:
        state["temperature_c"] = max(temps)
    if cpu_khz:
        state["cpu_mhz"] = [min(cpu_khz) / 1000, max(cpu_khz) / 1000]
    if devfreq:
        state["devfreq_mhz"] = {k: v / 1e6 for k, v in devfreq.items()}
    gpus = nvidia_smi("temperature.gpu,clocks.sm,clocks.mem")
    if gpus:
        state["gpu_temperature_c,sm_mhz,mem_mhz"] = gpus[0]
    return state


def state_range(states: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The lowest and highest temperature and CPU clock over the states read while measuring."""
    temps = [s["temperature_c"] for s in states if "temperature_c" in s]
    clocks = [c for s in states for c in s.get("cpu_mhz", [])]
    out = {}
    if temps:
        out["temperature_c"] = [min(temps), max(temps)]
    if clocks:
        out["cpu_mhz"] = [min(clocks), max(clocks)]
    return out


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
