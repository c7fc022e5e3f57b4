"""A model's inputs: one tensor (an image, a table row, a sequence) or several (token ids and a mask, an
image and its metadata), of any rank and dtype. One way to build example inputs at a batch size and one way to
call a model on them, so that tracing, export, training and scoring all agree on what "the input" is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hwprune.config import InputSpec

Example = torch.Tensor | tuple[torch.Tensor, ...]  # one input as a tensor; several as a tuple in forward's order

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int64": torch.int64,
          "int32": torch.int32, "bool": torch.bool}


def example(specs: Sequence[InputSpec], batch: int) -> Example:
    """Zeros of every input's shape (batch dimension set to `batch`) and dtype: valid token ids and masks too."""
    tensors = tuple(torch.zeros((batch, *s.shape[1:]), dtype=DTYPES[s.dtype]) for s in specs)
    return tensors[0] if len(tensors) == 1 else tensors


def args(inputs: Any) -> tuple[torch.Tensor, ...]:
    """The positional arguments of one forward call: a batch's inputs as the data loader collates them (a
    tensor, or a list/tuple of tensors for a model with several inputs)."""
    return tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)


def call(model: nn.Module, inputs: Any) -> Any:
    return model(*args(inputs))


def with_batch(inputs: Example, batch: int) -> Example:
    """The same inputs (shapes, dtypes) at another batch size."""
    tensors = tuple(torch.zeros((batch, *t.shape[1:]), dtype=t.dtype) for t in args(inputs))
    return tensors[0] if len(tensors) == 1 else tensors


def random_like(inputs: Example, seed: int = 0) -> Example:
    """Inputs of the same shapes and dtypes with random values: floats uniform in [0, 1), integers and booleans
    0 (always a valid index or mask)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = tuple(torch.rand(t.shape, generator=gen) if t.is_floating_point() else torch.zeros_like(t)
                    for t in args(inputs))
    return tensors[0] if len(tensors) == 1 else tensors


def stack(samples: list[Any]) -> Example:
    """Dataset samples' inputs stacked into one batch (per input for several)."""
    columns = list(zip(*(args(s) for s in samples)))
    tensors = tuple(torch.stack(list(c)) for c in columns)
    return tensors[0] if len(tensors) == 1 else tensors


def batch_of(inputs: Example) -> int:
    return int(args(inputs)[0].shape[0])


def outputs(result: Any) -> tuple[torch.Tensor, ...]:
    """A forward's outputs as a flat tuple (a model may return one tensor, a tuple or a list of them)."""
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, tuple | list):
        return tuple(t for r in result for t in outputs(r))
    if isinstance(result, dict):
        return tuple(t for r in result.values() for t in outputs(r))
    return ()


def sample_example(sample_inputs: Any) -> Example:
    """One dataset sample's inputs with a batch dimension of 1 added."""
    tensors = tuple(t.unsqueeze(0) for t in args(sample_inputs))
    return tensors[0] if len(tensors) == 1 else tensors
