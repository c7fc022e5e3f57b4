"""The per-round Optuna search over per-group prune rates: the only importer of optuna.

Each trial proposes a prune rate per coupled channel group (never below the group's current rate, so
masks only shrink), rounds kept channels to the runtime's channel multiple, and checks the predicted
latency against the round target (an Optuna constraint). Only feasible trials pay for the accuracy proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from hwprune.errors import SearchError
from hwprune.progress import NullProgress, Progress, stage
from hwprune.prune.masks import keep_count

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class SearchSpace:
    dense_widths: dict[str, int]
    current_widths: dict[str, int]  # upper bound per group (previous round)
    max_prune_rate: float
    channel_multiple: int

    def low_rate(self, group: str) -> float:
        return 1.0 - self.current_widths[group] / self.dense_widths[group]

    def widths_for(self, rates: dict[str, float]) -> dict[str, int]:
        return {g: keep_count(w, rates[g], self.channel_multiple, self.current_widths[g])
                for g, w in self.dense_widths.items()}

    def uniform_rates(self, rate: float) -> dict[str, float]:
        return {g: min(max(rate, self.low_rate(g)), self.max_prune_rate) for g in self.dense_widths}


@dataclass(frozen=True)
class TrialRecord:
    number: int
    widths: dict[str, int]
    predicted_ms: float
    feasible: bool
    proxy_accuracy: float | None


@dataclass(frozen=True)
class SearchOutcome:
    widths: dict[str, int]
    predicted_ms: float
    proxy_accuracy: float
    trials: tuple[TrialRecord, ...]
    uniform_rate: float  # the smallest uniform prune rate meeting the target (the seed trial)


def _uniform_feasible(space: SearchSpace, predict: Callable[[dict[str, int]], float], target_ms: float
                      ) -> float:
    """Smallest uniform rate whose predicted latency meets the target (bisection on rate)."""
    lo, hi = min(space.low_rate(g) for g in space.dense_widths), space.max_prune_rate
    if predict(space.widths_for(space.uniform_rates(hi))) > target_ms:
        return hi
    for _ in range(12):
        mid = (lo + hi) / 2
        if predict(space.widths_for(space.uniform_rates(mid))) <= target_ms:
            hi = mid
        else:
            lo = mid
    return hi


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Seeded sampler; both honour the latency constraint set on each trial."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)


def search(space: SearchSpace, predict: Callable[[dict[str, int]], float],
           evaluate: Callable[[dict[str, int]], float], target_ms: float, trials: int, seed: int,
           sampler: str = "tpe", progress: Progress = NullProgress(), description: str = "search"
           ) -> SearchOutcome:
    """Find the per-group widths with the best proxy accuracy whose predicted latency ≤ `target_ms`."""
    floor_ms = predict(space.widths_for(space.uniform_rates(space.max_prune_rate)))
    if floor_ms > target_ms:
        raise SearchError(
            f"latency target {target_ms:.4f} ms is infeasible: the smallest network the search may build "
            f"(every group pruned by {space.max_prune_rate:.0%}) is predicted at {floor_ms:.4f} ms",
            hint="raise the budget, or raise [search] max_prune_rate (limit) / lower the target's channel_multiple")
    uniform = _uniform_feasible(space, predict, target_ms)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, seed))
    study.enqueue_trial({g: r for g, r in space.uniform_rates(uniform).items()})
    cache: dict[tuple[int, ...], float] = {}
    records: list[TrialRecord] = []

    def objective(trial: optuna.Trial) -> float:
        rates = {g: trial.suggest_float(g, space.low_rate(g), space.max_prune_rate) for g in space.dense_widths}
        widths = space.widths_for(rates)
        predicted = predict(widths)
        trial.set_user_attr("widths", widths)
        trial.set_user_attr("predicted_ms", predicted)
        trial.set_constraint("latency_ms", predicted - target_ms)
        feasible = predicted <= target_ms
        score = None
        if feasible:
            key = tuple(widths.values())
            if key not in cache:
                cache[key] = evaluate(widths)
            score = cache[key]
        records.append(TrialRecord(trial.number, widths, predicted, feasible, score))
        return score if score is not None else 0.0

    with stage(progress, description, trials) as bar:
        def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            best = max((r.proxy_accuracy for r in records if r.feasible), default=None)
            bar.advance(1, f"best proxy acc {best:.3f}" if best is not None else "no feasible trial yet")

        study.optimize(objective, n_trials=trials, callbacks=[advance], catch=())
    feasible = [r for r in records if r.feasible]
    if not feasible:  # unreachable in practice: the enqueued uniform trial is feasible
        raise SearchError(f"no trial met the latency target {target_ms:.4f} ms", hint="raise [search] trials")
    best = max(feasible, key=lambda r: (r.proxy_accuracy, -r.predicted_ms))
    return SearchOutcome(best.widths, best.predicted_ms, float(best.proxy_accuracy), tuple(records), uniform)
