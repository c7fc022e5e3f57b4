"""The timing core a device agent will run (issue 16): `hwprune.timing` imports and times with only numpy and
onnxruntime, parses as Python 3.8, and its hand-written sentinel graphs are what onnx would write."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwprune import runtime, timing

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "onnx", "optuna", "torch_pruning", "jsonschema", "matplotlib", "rich")


def test_timing_imports_and_times_without_torch_onnx_or_optuna():
    probe = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # importing it now raises ImportError\n"
        "from dataclasses import dataclass\n"
        "from hwprune import timing\n"
        "@dataclass(frozen=True)\n"
        "class Settings:\n"
        "    providers: tuple = ('CPUExecutionProvider',)\n"
        "    intra_op_threads: int = 1\n"
        "    graph_optimization: str = 'all'\n"
        "stats = timing.time_many([timing.compute_model_bytes()], Settings())[0]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'onnx', 'optuna'} and sys.modules[m])\n"
        "print(stats.median_ms > 0, stats.attempts >= 1, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True True []", result.stdout + result.stderr


def test_timing_parses_as_python_3_8():
    """Jetson Nano's JetPack 5 ships Python 3.8: no newer syntax in what the agent imports."""
    for module in ("timing.py", "errors.py"):
        ast.parse((ROOT / "hwprune" / module).read_text(), feature_version=(3, 8))


def test_hand_written_sentinel_graphs_are_the_graphs_onnx_writes():
    weight = (np.random.default_rng(0).standard_normal((256, 128)) * 0.1).astype(np.float32)
    expected = {
        "null": helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "null",
                                  [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
        "compute": helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "compute",
                                     [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64, 256])],
                                     [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64, 128])],
                                     initializer=[numpy_helper.from_array(weight, "w")]),
    }
    for model in (runtime.null_model(), runtime.compute_model()):
        onnx.checker.check_model(model, full_check=True)
        assert model.ir_version == 8 and [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
        graph = model.graph
        want = expected[graph.name]
        assert [(n.op_type, list(n.input), list(n.output)) for n in graph.node] == \
            [(n.op_type, list(n.input), list(n.output)) for n in want.node]
        assert list(graph.input) == list(want.input) and list(graph.output) == list(want.output)
        for got, ref in zip(graph.initializer, want.initializer, strict=True):
            assert got.name == ref.name
            np.testing.assert_array_equal(numpy_helper.to_array(got), numpy_helper.to_array(ref))
    settings = runtime.RuntimeSettings(("CPUExecutionProvider",), 1, "all")
    sess = timing.session(timing.compute_model_bytes(), settings)
    x = np.ones((64, 256), np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ weight, rtol=1e-5, atol=1e-5)
