"""PyTorch → ONNX: the only importer of torch.onnx. Static shapes, checked graph, metadata embedded."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Sequence

import onnx
import torch
from torch import nn

from hwprune import inputs
from hwprune.errors import ExportError

OPSET = 20
MAX_BATCH = 65536  # the largest batch a target may ask for (targets.py)


def export(model: nn.Module, example: inputs.Example, names: Sequence[str] | None = None,
           dynamic_batch: bool = False) -> onnx.ModelProto:
    """Export `model` (eval mode, BatchNorm folded by the exporter's optimiser) and run onnx.checker. The graph's
    inputs are `names` (default: `input`, or `input0`, `input1`, ... for several). With `dynamic_batch` the
    first dimension of every input (and so of the outputs) is the symbolic `batch`; else the example's shapes
    are fixed in the graph."""
    if dynamic_batch and inputs.batch_of(example) < 2:  # torch.export specialises a dimension traced at size 1
        example = inputs.with_batch(example, 2)
    args = inputs.args(example)
    dynamic = tuple({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)} for _ in args) if dynamic_batch else None
    names = list(names or (["input"] if len(args) == 1 else [f"input{i}" for i in range(len(args))]))
    model = model.eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, args, dynamo=True, opset_version=OPSET, verbose=False,
                                        input_names=names, output_names=["logits"], dynamic_shapes=dynamic)
        proto = program.model_proto
    except Exception as exc:  # the exporter raises many types, wrapping the cause
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip()
        raise ExportError(f"ONNX export failed: {type(root).__name__}: {text.splitlines()[0] if text else ''}",
                          hint="the model must be traceable by torch.export with a fixed input shape") from None
    check(proto)
    return proto


def check(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"exported ONNX model fails onnx.checker: {exc}") from None


def fixed_batch(proto: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of a dynamic-batch model whose inputs' symbolic first dimension is `batch`: what runs and is timed
    at one batch size (ONNX Runtime infers the rest). Fixed dimensions are left as they are."""
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    for graph_input in result.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    return result


def has_dynamic_batch(proto: onnx.ModelProto) -> bool:
    """Whether every input's first dimension is symbolic (and no other dimension is)."""
    shapes = [i.type.tensor_type.shape.dim for i in proto.graph.input]
    return bool(shapes) and all(
        dims and not dims[0].HasField("dim_value") and all(d.HasField("dim_value") for d in dims[1:])
        for dims in shapes)


def with_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> onnx.ModelProto:
    """A copy of `proto` whose metadata_props hold `metadata` (replacing keys of the same name)."""
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    existing = {p.key: p for p in result.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            result.metadata_props.add(key=key, value=str(value))
    return result
