"""Deployment targets: a device profile id plus ONNX Runtime settings and a latency budget.

Light on purpose (no torch, onnx or onnxruntime): `hwprune targets`, reports and comparisons read targets.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwprune import paths
from hwprune.config import read_toml
from hwprune.errors import ConfigError

TARGET_SCHEMA = 1
_KEYS = ("schema", "name", "description", "profile", "arch", "providers", "intra_op_threads",
         "batch", "precision", "graph_optimization", "budget", "channel_multiple", "agent")
_OPT_LEVELS = ("disable", "basic", "extended", "all")
# Beyond these a value is a typo: ONNX Runtime's thread count is a C int, a batch is allocated as one tensor.
_INT_MAX = {"intra_op_threads": 4096, "batch": 65536, "channel_multiple": 4096}


@dataclass(frozen=True)
class RuntimeSettings:
    """What a latency depends on besides the graph: the ONNX Runtime session a target runs under."""

    providers: tuple[str, ...]
    intra_op_threads: int
    graph_optimization: str

    def describe(self) -> str:
        return (f"{'/'.join(self.providers)}, {self.intra_op_threads} thread(s), "
                f"optimisation '{self.graph_optimization}'")


@dataclass(frozen=True)
class Budget:
    """What the target asks for: either an absolute `ms` or a `speedup` over the dense model's latency."""

    ms: float | None = None
    speedup: float | None = None

    def resolve(self, dense_ms: float | None, dense_basis: str = "") -> ResolvedBudget:
        """The budget in milliseconds. A speedup needs the dense latency (`dense_ms`, obtained as
        `dense_basis` says); an absolute budget does not."""
        if self.ms is not None:
            return ResolvedBudget(self.ms, self, None, "")
        if dense_ms is None:
            raise ValueError("a speedup budget needs the dense latency")
        return ResolvedBudget(dense_ms / float(self.speedup), self, dense_ms, dense_basis)

    def describe(self) -> str:
        return f"{self.ms:g} ms" if self.ms is not None else f"{self.speedup:g}x speedup over dense"


@dataclass(frozen=True)
class ResolvedBudget:
    """A target's budget in milliseconds, with what it was resolved from: resolved once, then handed on to
    the report, the model's metadata and the command line (none of them derives it again)."""

    ms: float
    spec: Budget
    dense_ms: float | None  # the dense latency a speedup budget was taken over (None: absolute)
    dense_basis: str  # how that dense latency was obtained, in words

    def met_by(self, latency_ms: float) -> bool:
        return latency_ms <= self.ms

    def describe(self) -> str:
        if self.dense_ms is None:
            return f"{self.ms:g} ms (absolute)"
        return f"{self.spec.describe()} of the dense latency {self.dense_ms:.4f} ms ({self.dense_basis})"


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    profile: str  # id of profiles/<profile>.json
    arch: str  # machine architecture the device has (platform.machine()), e.g. "x86_64"
    providers: tuple[str, ...]
    intra_op_threads: int
    batch: int
    precision: str
    graph_optimization: str
    budget: Budget
    channel_multiple: int | None  # search keeps channel counts at multiples of this; None: the profile's
    source: str = ""  # file it was read from
    agents: tuple[str, ...] = ()  # device agents that measure it (`agent = "http://pi.local:8707"`, or a list)

    def runtime_settings(self) -> RuntimeSettings:
        return RuntimeSettings(self.providers, self.intra_op_threads, self.graph_optimization)


def target_dirs(extra: Path | None = None, config_dir: Path | None = None) -> list[Path]:
    """Where target files are looked up, first match wins."""
    dirs = [d for d in (extra, config_dir / paths.TARGETS_FOLDER if config_dir else None,
                        Path.cwd() / paths.TARGETS_FOLDER) if d]
    dirs.append(paths.BUILTIN_TARGETS)
    seen: list[Path] = []
    for d in dirs:
        if d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def available_targets(dirs: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in dirs:
        for f in sorted(d.glob("*.toml")) if d.is_dir() else []:
            found.setdefault(f.stem, f)
    return found


def load_target(name: str, dirs: list[Path]) -> Target:
    """Find and validate target `name`; an unknown name lists the valid ones."""
    path = Path(name)
    if not path.suffix == ".toml":
        targets = available_targets(dirs)
        if name not in targets:
            raise ConfigError(
                f"unknown target '{name}'",
                hint=f"valid targets: {', '.join(sorted(targets)) or '(none found)'}; "
                     "see `hwprune targets`",
            )
        path = targets[name]
    return parse_target(read_toml(path), path)


def _finite(number: int | float) -> bool:
    """TOML reads nan, inf and integers of any size (whose float() overflows)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _budget(value: Any, where: str) -> Budget:
    if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"ms", "speedup"}:
        raise ConfigError(f"{where}: budget must be {{ ms = N }} or {{ speedup = N }}",
                          hint="e.g. budget = { speedup = 2.0 }")
    (key, number), = value.items()
    if isinstance(number, bool) or not isinstance(number, int | float) or not _finite(number) or number <= 0:
        raise ConfigError(f"{where}: budget {key} must be a positive finite number, got {number!r}",
                          hint="e.g. budget = { ms = 0.5 }")
    if key == "speedup" and number < 1:
        raise ConfigError(f"{where}: budget speedup must be ≥ 1, got {number}")
    return Budget(ms=float(number)) if key == "ms" else Budget(speedup=float(number))


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _plain_name(data: dict[str, Any], key: str, where: str) -> str:
    """`name` and `profile` become path parts (out/NAME, profiles/PROFILE.json, the folder --force cleans):
    a plain name only, so a target file cannot point hwprune at any other folder."""
    value = data[key]
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"{where}: {key} must be a plain name matching [A-Za-z0-9][A-Za-z0-9._-]* without "
                          f"'..', got {value!r}",
                          hint=f"e.g. {key} = \"my-device\"; it names a file or folder (out/NAME, "
                               "profiles/PROFILE.json), never a path")
    return value


def parse_target(data: dict[str, Any], path: Path) -> Target:
    where = str(path)
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'", hint=f"allowed keys: {', '.join(_KEYS)}")
    if data.get("schema") != TARGET_SCHEMA or type(data.get("schema")) is not int:  # not true, not 1.0
        raise ConfigError(f"{where}: schema must be {TARGET_SCHEMA}, got {data.get('schema')!r}")
    for key in ("name", "profile", "providers", "budget"):
        if key not in data:
            raise ConfigError(f"{where}: missing key '{key}'")

    def integer(key: str, default: int) -> int:
        v = data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _INT_MAX[key]:
            raise ConfigError(f"{where}: {key} must be an integer in [1, {_INT_MAX[key]}], got {v!r}")
        return v

    providers = data["providers"]
    if not isinstance(providers, list) or not providers or not all(isinstance(p, str) for p in providers):
        raise ConfigError(f"{where}: providers must be a non-empty list of ONNX Runtime provider names")
    opt = data.get("graph_optimization", "all")
    if opt not in _OPT_LEVELS:
        raise ConfigError(f"{where}: graph_optimization must be one of {', '.join(_OPT_LEVELS)}")
    precision = data.get("precision", "fp32")
    if precision != "fp32":
        raise ConfigError(f"{where}: precision '{precision}' is not supported yet", hint="use precision = \"fp32\"")
    return Target(
        name=_plain_name(data, "name", where), description=str(data.get("description", "")),
        profile=_plain_name(data, "profile", where),
        arch=str(data.get("arch", "")), providers=tuple(providers),
        intra_op_threads=integer("intra_op_threads", 1), batch=integer("batch", 1), precision=precision,
        graph_optimization=opt, budget=_budget(data["budget"], where),
        channel_multiple=None if data.get("channel_multiple", "auto") == "auto" else integer("channel_multiple", 8),
        source=where, agents=agent_urls(data.get("agent", []), where),
    )


def agent_urls(value: Any, where: str) -> tuple[str, ...]:
    """`agent` in a target file (or --agent): one http(s) URL, or a list of them for a shelf of identical
    devices. Tokens never go in a target file (they come from $HWPRUNE_AGENT_TOKEN or --agent-token-file)."""
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ConfigError(f"{where}: agent must be a URL or a list of URLs", hint='e.g. agent = "http://pi.local:8707"')
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.username or parsed.password:
            raise ConfigError(f"{where}: agent {url!r} is not an http(s) URL without credentials",
                              hint='e.g. agent = "http://pi.local:8707"; the token comes from $HWPRUNE_AGENT_TOKEN')
    return tuple(u.rstrip("/") for u in urls)
