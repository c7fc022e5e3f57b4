"""The dense stage: build the user's model and data (from their factories, an .npz file or an image folder)
and train densely (keeping θ_k, the weights at the rewind point), or load that result from the dense cache or
the run's saved state; or, when the user brings trained weights (`[model] weights` / `pretrained`), load and
score them without training."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from hwprune import cache, factories, inputs, objective, paths, weights
from hwprune.config import ProjectConfig
from hwprune.progress import Progress
from hwprune.provenance import derive_seed
from hwprune.prune import graph
from hwprune.state import RunState
from hwprune.train import Snapshot, train


@dataclass
class Dense:
    """What the dense stage hands on: the trained network, θ_k and the data."""

    model: nn.Module
    theta_k: nn.Module
    example: inputs.Example  # one input tensor, or a tuple of them, at the target's batch
    data: tuple
    widths: dict[str, int]
    accuracy: float  # on the test split, by the run's metric (top-1 accuracy unless [eval] metric says)
    rewind_at: int
    iterations: int
    training_seconds: float = 0.0  # of the training that produced it (an earlier run's, when cached)
    cached: bool = False  # loaded from the dense cache rather than trained in this run
    cache_key: str | None = None
    # Where the dense weights came from: "trained" (here or, when cached, by an earlier run), "weights"
    # (the user's state_dict file, with its sha256) or "factory" (the model factory returned them trained).
    origin: str = "trained"
    input_names: tuple[str, ...] = ("input",)  # the exported graph's inputs, in forward's order
    weights_file: str | None = None
    weights_sha256: str | None = None

    def source(self) -> dict[str, object]:
        """Where the dense weights came from, for the report."""
        found = {"origin": self.origin, "cached": self.cached, "cache_key": self.cache_key,
                 "training_seconds": self.training_seconds}
        if self.origin == "weights":
            found.update(weights_file=self.weights_file, weights_sha256=self.weights_sha256)
        return found

    def for_batch(self, batch: int) -> Dense:
        """The same network with an example input of another target's batch size."""
        return dataclasses.replace(self, example=inputs.with_batch(self.example, batch))


def build_model(config: ProjectConfig, batch: int) -> tuple[nn.Module, inputs.Example]:
    """The configured model at its seeded initial weights and an example input of `batch`, checked to run."""
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = factories.build_model(config.model.factory, config.base_dir)
    example = inputs.example(config.model.input_specs, batch)
    factories.check_input(model, example, config.model.factory)
    return model, example


def channel_widths(model: nn.Module, example: inputs.Example, config: ProjectConfig) -> dict[str, int]:
    """Dense width of every prunable coupled channel group."""
    return {g.name: g.width for g in graph.channel_groups(model, example, config.model.ignore)}


def train_dense(config: ProjectConfig, batch: int, progress: Progress, data_dir: str | None = None,
                data_limit: int | None = None, cache_dir: Path | None = None, state: RunState | None = None
                ) -> Dense:
    """Build model and data and train densely, keeping the weights at the rewind point; or load that result
    from the dense cache (or the run's state) when model, data, recipe and seed are unchanged. With a run
    state, training checkpoints every epoch there and resumes from it. `data_limit` caps every split."""
    data = factories.build_data(config.data, config.base_dir, data_dir or config.data.data_dir or None, config.seed)
    if data_limit:
        data = tuple(torch.utils.data.Subset(d, range(min(data_limit, len(d)))) for d in data)
    factories.check_samples(data, config.model.input_specs, factories.describe_data(config.data))
    score = objective.load(config).score
    if config.model.trained:
        return _pretrained(config, batch, data, score, progress)
    model, example = build_model(config, batch)
    widths = channel_widths(model, example, config)
    train_set, _, test_set = data
    key = cache.dense_key(config, model, data)
    stores = [d for d in (cache_dir, state.dir if state else None) if d is not None]
    entry, where = next(((e, d) for d in stores if (e := cache.load(d, key)) is not None), (None, None))
    if entry is not None:
        theta_k = copy.deepcopy(model)
        model.load_state_dict(entry.model_state)
        theta_k.load_state_dict(entry.theta_k_state)
        progress.note(f"dense model from {paths.cache_entry(where, key)} (trained in {entry.training_seconds:.0f} s, "
                      f"test accuracy {entry.accuracy:.4f})")
        return Dense(model.eval(), theta_k.eval(), example, data, widths, entry.accuracy, entry.rewind_at,
                     entry.iterations, entry.training_seconds, True, key, input_names=_names(config))
    start = time.perf_counter()
    iterations = config.train.epochs * -(-len(train_set) // config.train.batch_size)
    # θ_k: the weights after this iteration; 0 is the original initialisation θ_0 (Frankle & Carbin 2019), any
    # other fraction keeps at least one step (late rewinding, Frankle et al. 2019)
    rewind_at = 0 if config.imp.rewind_fraction == 0 else max(1, int(round(iterations * config.imp.rewind_fraction)))
    snapshots: list[nn.Module] = []
    checkpoint = state.path(paths.dense_checkpoint(key)) if state else None
    train(model, train_set, config.train, config.train.epochs, derive_seed(config.seed, "dense"), progress,
          "dense training", snapshot=Snapshot(rewind_at, snapshots.append), resume_file=checkpoint,
          fault_label="dense", loss=objective.load(config).loss)
    dense = Dense(model, snapshots[0].eval(), example, data, widths, score(model, test_set), rewind_at,
                  iterations, time.perf_counter() - start, False, key if cache_dir else None,
                  input_names=_names(config))
    entry = cache.DenseEntry(model.state_dict(), dense.theta_k.state_dict(), dense.accuracy, rewind_at, iterations,
                             dense.training_seconds)
    if state and stores[0] == state.dir:
        state.path(paths.dense_file(key))  # listed before cache.store writes it there, so --force knows it
    for store in stores[:1]:  # the cache when there is one (a resumed run finds it there), else the run state
        cache.store(store, key, entry)
    if state:
        state.mark("dense")
        checkpoint.unlink(missing_ok=True)
    return dense


def _pretrained(config: ProjectConfig, batch: int, data: tuple, score: Callable[[nn.Module, Dataset], float],
                progress: Progress) -> Dense:
    """The user's trained network (their state_dict file loaded into the factory's model, or the factory's own
    trained weights), scored on the test split as the baseline. There is no training trajectory, so θ_k is the
    trained network itself (only learning-rate rewinding uses it: config refuses weight rewinding)."""
    model, example = build_model(config, batch)
    path = sha = None
    if config.model.weights:
        path = weights.resolve(config.model.weights, config.base_dir)
        weights.load_into(model, path)
        sha = weights.sha256(path)
        progress.note(f"dense model from {path} (sha256 {sha[:12]}…), no dense training")
    else:
        progress.note(f"dense model trained by its factory '{config.model.factory}', no dense training")
    model.eval()
    widths = channel_widths(model, example, config)
    return Dense(model, copy.deepcopy(model), example, data, widths, score(model, data[2]), 0, 0,
                 origin="weights" if path else "factory", weights_file=str(path) if path else None,
                 weights_sha256=sha, input_names=_names(config))


def _names(config: ProjectConfig) -> tuple[str, ...]:
    return tuple(s.name for s in config.model.input_specs)
