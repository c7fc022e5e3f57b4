"""The per-round Optuna search over per-group prune rates: the only importer of optuna.

A trial proposes how the pruning is shared out between the coupled channel groups (a share per group);
one scale, found by bisection on the latency model, turns the shares into prune rates: the least pruning
along that direction whose predicted latency meets the round's target. Every trial is therefore a network
that uses the latency budget rather than one far below it or above it, and pays for the accuracy proxy.
Rates never fall below a group's current rate (masks only shrink) and kept channels are rounded to the
runtime's channel multiple. The first trial shares equally: the uniform baseline.
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
        """Kept channels per group; rates are clamped to [current rate, max_prune_rate]."""
        return {g: keep_count(w, min(max(rates[g], self.low_rate(g)), self.max_prune_rate), self.channel_multiple,
                              self.current_widths[g])
                for g, w in self.dense_widths.items()}


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
    uniform_rate: float  # the smallest uniform prune rate meeting the target (the first trial)


MIN_SHARE = 0.05  # a group's smallest share of the pruning (0 would exempt it entirely)


def on_target(space: SearchSpace, predict: Callable[[dict[str, int]], float], target_ms: float,
              shares: dict[str, float]) -> tuple[float, dict[str, int]]:
    """(scale, widths): the least pruning along `shares` whose predicted latency meets the target.

    Group g is pruned at rate min(max_rate, max(current rate, scale·share_g)); latency falls monotonically
    with scale, so bisection finds the smallest feasible scale. Equal shares give uniform pruning, the scale
    then being the uniform rate.
    """
    def widths_at(scale: float) -> dict[str, int]:
        return space.widths_for({g: scale * s for g, s in shares.items()})

    lo, hi = 0.0, space.max_prune_rate / min(shares.values())
    if predict(widths_at(lo)) <= target_ms:
        return lo, widths_at(lo)
    for _ in range(14):
        mid = (lo + hi) / 2
        if predict(widths_at(mid)) <= target_ms:
            hi = mid
        else:
            lo = mid
    return hi, widths_at(hi)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Seeded sampler over the per-group shares (every trial already meets the latency target)."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)


def search(space: SearchSpace, predict: Callable[[dict[str, int]], float],
           evaluate: Callable[[dict[str, int]], float], target_ms: float, trials: int, seed: int,
           sampler: str = "tpe", progress: Progress = NullProgress(), description: str = "search"
           ) -> SearchOutcome:
    """Find the per-group widths with the best proxy accuracy whose predicted latency ≤ `target_ms`."""
    floor_ms = predict(space.widths_for(dict.fromkeys(space.dense_widths, space.max_prune_rate)))
    if floor_ms > target_ms:
        raise SearchError(
            f"latency target {target_ms:.4f} ms is infeasible: the smallest network the search may build "
            f"(every group pruned by {space.max_prune_rate:.0%}) is predicted at {floor_ms:.4f} ms",
            hint="raise the budget, or raise [search] max_prune_rate (limit) / lower the target's channel_multiple")
    groups = list(space.dense_widths)
    uniform, _ = on_target(space, predict, target_ms, dict.fromkeys(groups, 1.0))
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, seed))
    study.enqueue_trial(dict.fromkeys(groups, 1.0))
    cache: dict[tuple[int, ...], float] = {}
    records: list[TrialRecord] = []

    def objective(trial: optuna.Trial) -> float:
        shares = {g: trial.suggest_float(g, MIN_SHARE, 1.0) for g in groups}
        _, widths = on_target(space, predict, target_ms, shares)
        predicted = predict(widths)
        trial.set_user_attr("widths", widths)
        trial.set_user_attr("predicted_ms", predicted)
        key = tuple(widths.values())
        if key not in cache:
            cache[key] = evaluate(widths)
        records.append(TrialRecord(trial.number, widths, predicted, predicted <= target_ms, cache[key]))
        return cache[key]

    with stage(progress, description, trials) as bar:
        def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            best = max((r.proxy_accuracy for r in records if r.feasible), default=None)
            bar.advance(1, f"best proxy acc {best:.3f}" if best is not None else "no feasible trial yet")

        study.optimize(objective, n_trials=trials, callbacks=[advance], catch=())
    feasible = [r for r in records if r.feasible]
    if not feasible:  # unreachable: every trial is placed on the target, whose floor was checked above
        raise SearchError(f"no trial met the latency target {target_ms:.4f} ms", hint="raise [search] trials")
    best = max(feasible, key=lambda r: (r.proxy_accuracy, r.predicted_ms))  # ties: the larger network
    return SearchOutcome(best.widths, best.predicted_ms, float(best.proxy_accuracy), tuple(records), uniform)
