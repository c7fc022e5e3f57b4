"""The dense stage: build the user's model and data (from their factories, an .npz file or an image folder) and
train densely (keeping θ_k, the weights at the rewind point), or load that result from the dense cache or the
run's saved state."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hwprune import cache, factories, paths
from hwprune.config import ProjectConfig
from hwprune.progress import Progress
from hwprune.provenance import derive_seed
from hwprune.prune import graph
from hwprune.state import RunState
from hwprune.train import Snapshot, accuracy, train


@dataclass
class Dense:
    """What the dense stage hands on: the trained network, θ_k and the data."""

    model: nn.Module
    theta_k: nn.Module
    example: torch.Tensor
    data: tuple
    widths: dict[str, int]
    accuracy: float
    rewind_at: int
    iterations: int
    training_seconds: float = 0.0  # of the training that produced it (an earlier run's, when cached)
    cached: bool = False  # loaded from the dense cache rather than trained in this run
    cache_key: str | None = None

    def for_batch(self, batch: int) -> Dense:
        """The same network with an example input of another target's batch size."""
        return dataclasses.replace(self, example=torch.zeros((batch, *self.example.shape[1:])))


def build_model(config: ProjectConfig, batch: int) -> tuple[nn.Module, torch.Tensor]:
    """The configured model at its seeded initial weights and an example input of `batch`, checked to run."""
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = factories.build_model(config.model.factory, config.base_dir)
    example = torch.zeros((batch, *config.model.input_shape[1:]))
    factories.check_input(model, example, config.model.factory)
    return model, example


def channel_widths(model: nn.Module, example: torch.Tensor, config: ProjectConfig) -> dict[str, int]:
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
    factories.check_samples(data, config.model.input_shape, factories.describe_data(config.data))
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
                     entry.iterations, entry.training_seconds, True, key)
    start = time.perf_counter()
    iterations = config.train.epochs * -(-len(train_set) // config.train.batch_size)
    rewind_at = max(1, int(round(iterations * config.imp.rewind_fraction)))
    snapshots: list[nn.Module] = []
    checkpoint = state.path(paths.dense_checkpoint(key)) if state else None
    train(model, train_set, config.train, config.train.epochs, derive_seed(config.seed, "dense"), progress,
          "dense training", snapshot=Snapshot(rewind_at, snapshots.append), resume_file=checkpoint,
          fault_label="dense")
    dense = Dense(model, snapshots[0].eval(), example, data, widths, accuracy(model, test_set), rewind_at,
                  iterations, time.perf_counter() - start, False, key if cache_dir else None)
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
