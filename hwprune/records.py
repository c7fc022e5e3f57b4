"""What a run produces, as plain records: no torch, onnx, onnxruntime or optuna here, so that reading and
comparing reports (`hwprune compare`) never loads the machinery that made them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwprune.targets import ResolvedBudget, Target


@dataclass(frozen=True)
class RoundRecord:
    """One IMP round: what its search chose and what retraining made of it."""

    round: int
    target_ms: float
    predicted_ms: float
    proxy_accuracy: float
    val_accuracy: float
    widths: dict[str, int]
    uniform_rate: float
    retrain_epochs: float
    search_seconds: float
    trials: int
    feasible_trials: int
    seconds: float


@dataclass(frozen=True)
class ModelSummary:
    """The dense or the pruned network: accuracy, latency (and whether measured), size."""

    accuracy: float
    latency_ms: float
    latency_source: str  # "measured" or "predicted"
    predicted_latency_ms: float
    macs: int
    params: int
    latency_p90_ms: float | None = None
    widths: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] | None = None  # a measured latency's certainty (runtime.LatencyStats.certainty)


@dataclass(frozen=True)
class RunResult:
    """One target's finished run (its report.json says the same for people and other tools)."""

    target: Target
    budget: ResolvedBudget
    dense: ModelSummary
    pruned: ModelSummary
    rounds: tuple[RoundRecord, ...]
    dense_widths: dict[str, int]
    kept: dict[str, list[int]]
    profile: dict[str, Any]
    calibration: dict[str, Any] | None
    numerics: dict[str, Any]
    dense_source: dict[str, Any]  # trained (here or cached) or brought (a weights file and its hash, a factory)
    breakdown: dict[str, Any]  # predicted ms per runtime kernel, dense and pruned, in graph order
    model_name: str  # built-in name or factory
    optimized_onnx: dict[str, str] | None  # ONNX Runtime's offline-optimised copy, when asked for
    rewind: str  # "lr" or "weights"
    rewind_iteration: int
    dense_iterations: int
    seconds: dict[str, float]
    host: dict[str, Any]
    versions: dict[str, str]
    onnx_path: Path
    seed: int
    channel_multiple: int
    training: dict[str, str] = field(default_factory=dict)  # where torch trained and scored: device, name, precision
    dynamic_batch: bool = False  # model.onnx has a symbolic batch axis (latencies are still at the target's batch)
    # how accuracies were scored: the metric's name and function, and the training loss
    metric: dict[str, str] = field(default_factory=lambda: {"name": "accuracy", "function": "built-in top-1 accuracy",
                                                            "loss": "cross-entropy"})

    @property
    def budget_met(self) -> bool:
        return self.budget.met_by(self.pruned.latency_ms)

    @property
    def speedup(self) -> float | None:
        return self.dense.latency_ms / self.pruned.latency_ms if self.pruned.latency_ms else None
