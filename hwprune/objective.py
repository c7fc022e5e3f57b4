"""What training minimises and what scoring maximises: cross-entropy and top-1 accuracy by default, or the
user's own loss (`[train] loss`) and metric (`[eval] metric`), so that regression, detection or
segmentation users keep their objective. The search's proxy, every round's validation score and the test
results all use the metric."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from hwprune.compute import on_device, resolve
from hwprune.config import ProjectConfig
from hwprune.errors import HwpruneError, ModelError
from hwprune.factories import load_callable
from hwprune.train import accuracy

LossFn = Callable[[nn.Module, Any], torch.Tensor]  # (model, batch as the loader yields it) → scalar loss
MetricFn = Callable[[nn.Module, Dataset], float]  # (model, dataset) → score, higher is better


@dataclass(frozen=True)
class Objective:
    """The run's loss (None: cross-entropy on class indices, distilled from the dense network when
    retraining) and its metric, named for reports."""

    loss: LossFn | None
    metric_fn: MetricFn | None
    metric_name: str
    metric_spec: str  # "module:function", or "" for the built-in accuracy
    device: torch.device = torch.device("cpu")  # where scoring runs ([train] device)

    def score(self, model: nn.Module, dataset: Dataset, limit: int | None = None) -> float:
        """The metric of `model` (in eval mode) on `dataset`, or on its first `limit` samples."""
        if self.metric_fn is None:
            return accuracy(model, dataset, limit=limit, device=self.device)
        if limit is not None and limit < len(dataset):
            dataset = Subset(dataset, range(limit))
        model.eval()
        try:
            with torch.no_grad(), on_device(model, self.device):
                value = self.metric_fn(model, dataset)
        except HwpruneError:
            raise
        except Exception as exc:
            raise ModelError(f"[eval] metric '{self.metric_spec}' failed: {type(exc).__name__}: {exc}",
                             hint="it is called as fn(model, dataset) and must return a number") from None
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ModelError(f"[eval] metric '{self.metric_spec}' returned {value!r}, not a finite number",
                             hint="return a float, higher is better (e.g. -MSE for a regression)")
        return float(value)

    def describe(self) -> dict[str, str]:
        return {"name": self.metric_name, "function": self.metric_spec or "built-in top-1 accuracy",
                "loss": "custom" if self.loss is not None else "cross-entropy"}


def load(config: ProjectConfig) -> Objective:
    """The configured loss and metric, imported from the config's folder (errors are exit 4, naming them)."""
    loss = (_checked_loss(load_callable(config.train.loss, config.base_dir, "[train] loss", ModelError),
                          config.train.loss) if config.train.loss else None)
    spec = config.eval.metric
    metric = load_callable(spec, config.base_dir, "[eval] metric", ModelError) if spec else None
    name = config.eval.metric_name or (spec.partition(":")[2] if spec else "accuracy")
    return Objective(loss, metric, name, spec, resolve(config.train).device)


def _checked_loss(fn: LossFn, spec: str) -> LossFn:
    """The user's loss, its failures and non-scalar results turned into one-line errors naming it."""
    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        try:
            value = fn(model, batch)
        except HwpruneError:
            raise
        except Exception as exc:
            raise ModelError(f"[train] loss '{spec}' failed: {type(exc).__name__}: {exc}",
                             hint="it is called as fn(model, batch), batch as the data loader yields it") from None
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ModelError(f"[train] loss '{spec}' returned {type(value).__name__}"
                             + (f" of shape {list(value.shape)}" if isinstance(value, torch.Tensor) else "")
                             + ", not a scalar tensor", hint="return a scalar loss tensor, e.g. ….mean()")
        return value.reshape(())

    return loss
