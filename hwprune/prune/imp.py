"""Iterative magnitude pruning with rewinding, one latency-targeted search per round.

Round r: search per-group widths under the round's latency target (proxy: masked trained net, BatchNorm
re-estimated), keep each group's highest-magnitude surviving channels, rewind, retrain. Rewinding is either
of the learning rate (survivors keep their trained values, the schedule restarts; the default) or of the
weights (survivors reset to θ_k, the dense weights at an early iteration: the lottery ticket). Training
runs on the physically slimmed network, which computes exactly what the masked dense one does (tests check
it) and costs less.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from hwprune.config import ProjectConfig
from hwprune.progress import NullProgress, Progress
from hwprune.prune import graph
from hwprune.prune.masks import Masks
from hwprune.search import SearchSpace, StudyPlace, TrialRecord, search
from hwprune.train import accuracy, recalibrate_bn, sample_batches, train


@dataclass(frozen=True)
class RoundRecord:
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


@dataclass
class Ticket:
    """The state between rounds: masks (dense coordinates) and the trained slim network they define."""

    masks: Masks
    model: nn.Module


def masks_for_widths(ticket: Ticket, widths: dict[str, int], example: torch.Tensor,
                     ignore: tuple[str, ...]) -> Masks:
    """Keep, per group, the `widths[g]` surviving channels of highest group magnitude."""
    importance = graph.group_importance(ticket.model, example, ignore)
    kept: dict[str, list[int]] = {}
    for group, current in ticket.masks.kept:
        order = torch.argsort(importance[group], descending=True, stable=True).tolist()
        kept[group] = [current[pos] for pos in order[: widths[group]]]
    return Masks.from_kept(dict(ticket.masks.dense_widths), kept)


def rewind(theta_k: nn.Module, masks: Masks, example: torch.Tensor, ignore: tuple[str, ...]) -> nn.Module:
    """θ_k restricted to the surviving channels: the lottery ticket's starting point."""
    full = Masks.full(dict(masks.dense_widths))
    return graph.slim(theta_k, example, full, masks, ignore)


def starting_point(mode: str, ticket: Ticket, masks: Masks, theta_k: nn.Module, example: torch.Tensor,
                   ignore: tuple[str, ...]) -> nn.Module:
    """The slim network a round retrains: survivors at θ_k ("weights") or at their trained values ("lr")."""
    if mode == "weights":
        return rewind(theta_k, masks, example, ignore)
    return graph.slim(ticket.model, example, ticket.masks, masks, ignore)


def imp_round(number: int, target_ms: float, ticket: Ticket, theta_k: nn.Module, example: torch.Tensor,
              predict: Callable[[dict[str, int]], float], channel_multiple: int,
              data: tuple[Dataset, Dataset, Dataset], config: ProjectConfig, seed: int,
              progress: Progress = NullProgress(), teacher: nn.Module | None = None, final: bool = True,
              place: StudyPlace | None = None) -> tuple[Ticket, RoundRecord, tuple[TrialRecord, ...]]:
    """One round: search widths for `target_ms` (trials kept in the study at `place`), keep, rewind, retrain
    (shorter unless `final`)."""
    start = time.perf_counter()
    train_set, val_set, _ = data
    ignore = config.model.ignore
    bn_batches = sample_batches(train_set, config.search.bn_batches, config.train.batch_size, seed)
    space = SearchSpace(dict(ticket.masks.dense_widths), ticket.masks.widths(), config.search.max_prune_rate,
                        channel_multiple)

    steps = config.search.proxy_steps
    tune_set = Subset(train_set, torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
                      [: steps * config.train.batch_size].tolist()) if steps else None

    def evaluate(widths: dict[str, int]) -> float:
        candidate = masks_for_widths(ticket, widths, example, ignore)
        masked = graph.slim(ticket.model, example, ticket.masks, candidate, ignore)
        recalibrate_bn(masked, bn_batches)
        if tune_set is not None:
            train(masked, tune_set, config.train, 1, seed, teacher=teacher)
        return accuracy(masked, val_set, limit=config.search.val_samples)

    outcome = search(space, predict, evaluate, target_ms, config.search.trials, seed, config.search.sampler,
                     progress, f"round {number}: search ≤ {target_ms:.3f} ms", place)
    search_seconds = time.perf_counter() - start
    masks = masks_for_widths(ticket, outcome.widths, example, ignore)
    model = starting_point(config.imp.rewind, ticket, masks, theta_k, example, ignore)
    epochs = config.train.retrain_epochs * (1.0 if final else config.imp.intermediate_share)
    train(model, train_set, config.train, epochs, seed, progress,
          f"round {number}: retrain from {'θ_k' if config.imp.rewind == 'weights' else 'trained weights'}",
          teacher=teacher, fault_label=f"retrain:round:{number}")
    record = RoundRecord(
        number, target_ms, outcome.predicted_ms, outcome.proxy_accuracy,
        accuracy(model, val_set), masks.widths(), outcome.uniform_rate, epochs, search_seconds, len(outcome.trials),
        sum(t.feasible for t in outcome.trials), time.perf_counter() - start)
    return Ticket(masks, model), record, outcome.trials
