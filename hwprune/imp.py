"""Iterative magnitude pruning with rewinding, one latency-targeted search per round.

Round r: search per-group widths under the round's latency target (proxy: masked trained net, BatchNorm
re-estimated), keep each group's highest-magnitude surviving channels, rewind, retrain. Rewinding is either
of the learning rate (survivors keep their trained values, the schedule restarts; the default) or of the
weights (survivors reset to θ_k, the dense weights at an early iteration: the lottery ticket). Training
runs on the physically slimmed network, which computes exactly what the masked dense one does (tests check
it) and costs less.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import onnx
import torch
from torch import nn
from torch.utils.data import Subset

from hwprune import export, inputs, objective, paths, runtime
from hwprune.config import ProjectConfig
from hwprune.dense import Dense
from hwprune.progress import NullProgress, Progress
from hwprune.provenance import derive_seed
from hwprune.prune import graph
from hwprune.prune.masks import Masks, geometric_targets
from hwprune.records import RoundRecord
from hwprune.runtime import WHOLE_MODEL_PROTOCOL
from hwprune.search import SearchSpace, StudyPlace, require_reachable, search
from hwprune.state import RunState
from hwprune.targets import Budget, ResolvedBudget, RuntimeSettings
from hwprune.train import recalibrate_bn, sample_batches, train

log = logging.getLogger(__name__)
LatencyFn = Callable[[dict[str, int]], float]  # a latency predictor: widths → predicted ms


@dataclass
class Ticket:
    """The state between rounds: masks (dense coordinates) and the trained slim network they define."""

    masks: Masks
    model: nn.Module


def masks_for_widths(ticket: Ticket, widths: dict[str, int], example: inputs.Example,
                     ignore: tuple[str, ...]) -> Masks:
    """Keep, per group, the `widths[g]` surviving channels of highest group magnitude."""
    importance = graph.group_importance(ticket.model, example, ignore)
    kept: dict[str, list[int]] = {}
    for group, current in ticket.masks.kept:
        order = torch.argsort(importance[group], descending=True, stable=True).tolist()
        kept[group] = [current[pos] for pos in order[: widths[group]]]
    return Masks.from_kept(dict(ticket.masks.dense_widths), kept)


def rewind(theta_k: nn.Module, masks: Masks, example: inputs.Example, ignore: tuple[str, ...]) -> nn.Module:
    """θ_k restricted to the surviving channels: the lottery ticket's starting point."""
    full = Masks.full(dict(masks.dense_widths))
    return graph.slim(theta_k, example, full, masks, ignore)


def starting_point(mode: str, ticket: Ticket, masks: Masks, theta_k: nn.Module, example: inputs.Example,
                   ignore: tuple[str, ...]) -> nn.Module:
    """The slim network a round retrains: survivors at θ_k ("weights") or at their trained values ("lr")."""
    if mode == "weights":
        return rewind(theta_k, masks, example, ignore)
    return graph.slim(ticket.model, example, ticket.masks, masks, ignore)


class Imp:
    """Iterative magnitude pruning of one dense network: rounds of search, keep, rewind, retrain.

    `predictor` is the latency model the search obeys (the target's table in the product; benchmarks swap
    in others, e.g. a FLOPs-proportional one). Masks only shrink from round to round. With a run `state`,
    every finished round is saved and a rerun loads it; `studies` says where each round's Optuna study lives.
    """

    def __init__(self, dense: Dense, predictor: LatencyFn, channel_multiple: int, config: ProjectConfig,
                 progress: Progress = NullProgress(), state: RunState | None = None,
                 studies: Callable[[int], StudyPlace] | None = None) -> None:
        self.dense, self.predictor, self.channel_multiple = dense, predictor, channel_multiple
        self.config, self.progress, self.state, self.studies = config, progress, state, studies
        self.ticket = Ticket(Masks.full(dense.widths), copy.deepcopy(dense.model))
        self.rounds: list[RoundRecord] = []

    def round(self, target_ms: float, final: bool = True) -> RoundRecord:
        """One more round (or its saved result, when an earlier, killed run finished it); `final` = False for
        a scheduled round that a later one prunes further."""
        number = len(self.rounds) + 1
        name = paths.round_file(number)
        saved = self.state.load(name) if self.state else None
        if saved is not None:
            masks = Masks.from_kept(dict(self.dense.widths), saved["kept"])
            model = graph.slim(self.dense.model, self.dense.example, Masks.full(self.dense.widths), masks,
                               self.config.model.ignore)
            model.load_state_dict(saved["model"])
            self.ticket, record = Ticket(masks, model.eval()), RoundRecord(**saved["record"])
            self.progress.note(f"round {number}: finished by an earlier run, loaded from {self.state.dir}")
        else:
            self.ticket, record = self._run_round(number, target_ms, final)
            if self.state:
                self.state.save(name, {"kept": self.ticket.masks.to_json(), "model": self.ticket.model.state_dict(),
                                       "record": asdict(record)})
                self.state.mark(f"round{number}")
        self.rounds.append(record)
        return record

    def schedule(self, start_ms: float, final_ms: float) -> None:
        """`config.imp.rounds` rounds whose targets step geometrically from `start_ms` down to `final_ms`
        (refused before the first round when no network the search may build meets `final_ms`)."""
        require_reachable(self._space(), self.predictor, final_ms)
        targets = geometric_targets(start_ms, final_ms, self.config.imp.rounds)
        for number, target_ms in enumerate(targets, 1):
            self.round(target_ms, final=number == len(targets))

    def meet_measured(self, dense_proto: onnx.ModelProto, settings: RuntimeSettings, budget: Budget
                      ) -> MeasuredTicket:
        """Export the ticket and time it side by side with the dense model; while it misses the budget (a
        speedup taken over the dense latency of the same measurement) and `config.imp.extra_rounds` allow,
        run one more round whose target is tightened by the measured miss. Side by side (interleaved), a
        relative budget is judged on a ratio that load drift cannot fake."""
        margin = 1.0 - self.config.imp.safety_margin
        while True:
            proto = export.export(self.ticket.model, self.dense.example, self.dense.input_names)
            device = self.predictor.profile.device
            dense_stats, stats = device.time_side_by_side([dense_proto, proto], settings, WHOLE_MODEL_PROTOCOL,
                                                          self.predictor.sentinel)
            resolved = budget.resolve(dense_stats.median_ms,
                                      f"measured on {device.label} side by side with the ticket")
            extra_rounds_done = len(self.rounds) - self.config.imp.rounds
            if resolved.met_by(stats.median_ms) or extra_rounds_done >= self.config.imp.extra_rounds:
                return MeasuredTicket(proto, dense_stats, stats, resolved)
            tighter = self.predictor(self.ticket.masks.widths()) * (resolved.ms / stats.median_ms) * margin
            log.warning("measured %.4f ms misses the %.4f ms budget; extra round at predicted ≤ %.4f ms",
                        stats.median_ms, resolved.ms, tighter)
            self.round(tighter)

    def _space(self) -> SearchSpace:
        return SearchSpace(dict(self.ticket.masks.dense_widths), self.ticket.masks.widths(),
                           self.config.search.max_prune_rate, self.channel_multiple)

    def _run_round(self, number: int, target_ms: float, final: bool) -> tuple[Ticket, RoundRecord]:
        """Search widths for `target_ms`, keep, rewind, retrain (shorter unless `final`)."""
        start = time.perf_counter()
        config, dense, ticket = self.config, self.dense, self.ticket
        seed = derive_seed(config.seed, f"round{number}")
        train_set, val_set, _ = dense.data
        ignore = config.model.ignore
        goal = objective.load(config)
        evaluate = _proxy_score(ticket, dense, config, seed, goal)
        outcome = search(self._space(), self.predictor, evaluate, target_ms, config.search.trials, seed,
                         config.search.sampler, self.progress, f"round {number}: search ≤ {target_ms:.3f} ms",
                         self.studies(number) if self.studies else None)
        search_seconds = time.perf_counter() - start
        masks = masks_for_widths(ticket, outcome.widths, dense.example, ignore)
        model = starting_point(config.imp.rewind, ticket, masks, dense.theta_k, dense.example, ignore)
        epochs = config.train.retrain_epochs * (1.0 if final else config.imp.intermediate_share)
        train(model, train_set, config.train, epochs, seed, self.progress,
              f"round {number}: retrain from {'θ_k' if config.imp.rewind == 'weights' else 'trained weights'}",
              teacher=dense.model, fault_label=f"retrain:round:{number}", loss=goal.loss)
        record = RoundRecord(
            number, target_ms, outcome.predicted_ms, outcome.proxy_accuracy, goal.score(model, val_set),
            masks.widths(), outcome.uniform_rate, epochs, search_seconds, len(outcome.trials),
            sum(t.feasible for t in outcome.trials), time.perf_counter() - start)
        return Ticket(masks, model), record


def _proxy_score(ticket: Ticket, dense: Dense, config: ProjectConfig, seed: int, goal: objective.Objective
                 ) -> Callable[[dict[str, int]], float]:
    """A trial's score: the ticket masked to the trial's widths, BatchNorm re-estimated (and, with
    `[search] proxy_steps`, briefly fine-tuned), scored by the run's metric on the validation split."""
    train_set, val_set, _ = dense.data
    ignore = config.model.ignore
    bn_batches = sample_batches(train_set, config.search.bn_batches, config.train.batch_size, seed)
    steps = config.search.proxy_steps
    tune_set = Subset(train_set, torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
                      [: steps * config.train.batch_size].tolist()) if steps else None

    def evaluate(widths: dict[str, int]) -> float:
        candidate = masks_for_widths(ticket, widths, dense.example, ignore)
        masked = graph.slim(ticket.model, dense.example, ticket.masks, candidate, ignore)
        recalibrate_bn(masked, bn_batches, goal.device)
        if tune_set is not None:
            train(masked, tune_set, config.train, 1, seed, teacher=dense.model, loss=goal.loss)
        return goal.score(masked, val_set, limit=config.search.val_samples)

    return evaluate


@dataclass(frozen=True)
class MeasuredTicket:
    """The final ticket's export, its side-by-side timing against the dense model, and the budget resolved
    from that timing."""

    proto: onnx.ModelProto
    dense: runtime.LatencyStats
    pruned: runtime.LatencyStats
    budget: ResolvedBudget
