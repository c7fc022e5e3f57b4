"""Export, numerics against PyTorch, and the shape template against real exports."""

import random

import numpy as np
import onnx
import pytest
import torch

from hwprune import export, numerics, onnxgraph
from hwprune.latency import build_template
from hwprune.prune import graph
from hwprune.prune.masks import Masks
from hwprune.runtime import RuntimeSettings

CPU = RuntimeSettings(("CPUExecutionProvider",), 1, "all")


def test_onnx_outputs_match_pytorch(any_model, example):
    proto = export.export(any_model, example)
    inputs = [torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    check = numerics.compare_outputs(proto, any_model, inputs, CPU)
    assert check.ok and check.max_abs_diff <= 1e-4 and check.samples == 4


def test_numerics_check_catches_a_wrong_model(cnn, example):
    proto = export.export(cnn, example)
    with torch.no_grad():
        cnn.classifier.bias.add_(1.0)
    from hwprune.errors import ExportError
    with pytest.raises(ExportError, match="differs from PyTorch"):
        numerics.compare_outputs(proto, cnn, [torch.rand(1, 1, 28, 28)], CPU)


def test_metadata_is_embedded(cnn, example):
    proto = export.with_metadata(export.export(cnn, example), {"hwprune.target": "x86-cpu"})
    loaded = onnx.load_from_string(proto.SerializeToString())
    assert {p.key: p.value for p in loaded.metadata_props}["hwprune.target"] == "x86-cpu"


@pytest.mark.parametrize("seed", [0, 1])
def test_template_kernels_equal_the_real_export(any_model, example, seed):
    dense = {g.name: g.width for g in graph.channel_groups(any_model, example)}
    template = build_template(any_model, example, export.export(any_model, example), dense, ())
    rng = random.Random(seed)
    widths = {g: rng.randint(1, w) for g, w in dense.items()}
    slim = graph.slim(any_model, example, Masks.full(dense),
                      Masks.from_kept(dense, {g: list(range(widths[g])) for g in dense}))
    real = onnxgraph.kernels(export.export(slim, example))
    predicted = template.kernels(widths)
    assert [k.signature for k in predicted] == [k.signature for k in real]
    assert sum(k.macs for k in predicted) < sum(k.macs for k in template.kernels(dense))


def test_kernel_models_run(cnn, example):
    kernels = onnxgraph.kernels(export.export(cnn, example))
    assert [k.op for k in kernels][:3] == ["Conv+Relu", "Conv+Relu", "MaxPool"]
    from hwprune import runtime
    for kernel in kernels:
        sess = runtime.session(kernel.build(), CPU)
        out = runtime.run(sess, runtime.random_inputs(sess))[0]
        assert np.isfinite(out).all()
