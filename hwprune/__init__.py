"""hwprune: hardware-aware structured pruning with measured ONNX Runtime latency as the search currency.

The public API is `__all__`: run a target (`load_config`, `load_target`, `RunOptions`, `run`, `run_targets`),
predict a latency (`latency_predictor`, `LatencyPredictor`), read a report (`read_report`), the records a run
returns, the errors it raises, and `provenance` (host, versions, per-stage seeds). Names are imported on first
use, so `import hwprune` stays light (no torch until a run needs it). Everything else is internal: modules
are documented in docs/architecture.md, and a name starting with `_` is never imported from outside its module.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    # configure and run
    "ProjectConfig": "hwprune.config", "load_config": "hwprune.config",
    "Target": "hwprune.targets", "Budget": "hwprune.targets", "ResolvedBudget": "hwprune.targets",
    "RuntimeSettings": "hwprune.targets", "load_target": "hwprune.targets", "target_dirs": "hwprune.targets",
    "RunOptions": "hwprune.pipeline", "run": "hwprune.pipeline", "run_targets": "hwprune.pipeline",
    "profile_target": "hwprune.pipeline", "TargetOutcome": "hwprune.pipeline",
    # the stages a run is made of, for experiments that vary one of them (benchmarks/pareto.py)
    "Dense": "hwprune.dense", "train_dense": "hwprune.dense", "Imp": "hwprune.imp",
    # predict a latency
    "latency_predictor": "hwprune.pipeline", "LatencyPredictor": "hwprune.latency",
    "build_template": "hwprune.latency",
    # read what a run wrote
    "read_report": "hwprune.report", "RunResult": "hwprune.records", "ModelSummary": "hwprune.records",
    "RoundRecord": "hwprune.records",
    # errors (each carries its exit code)
    "HwpruneError": "hwprune.errors", "ConfigError": "hwprune.errors", "SearchError": "hwprune.errors",
}
_RENAMED = {"read_report": "read"}
_MODULES = ("provenance", "paths")

__all__ = ["__version__", *_WHERE, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"hwprune.{name}")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), _RENAMED.get(name, name))
    raise AttributeError(f"module 'hwprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
