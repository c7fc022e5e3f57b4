"""ONNX graphs as latency *kernels*, and a shape template that re-sizes a graph to any channel widths.

A kernel is what a runtime executes as one fused unit: Conv (+BatchNormalization) (+activation), or any
other single node. Its signature (op types, attributes, input/initializer shapes) keys the latency table.
The template maps every channel-dependent integer of the dense graph (tensor dims, `group` attributes,
reshape constants) to `k · width[group]`, found by comparing the dense export with one probe export whose
groups have distinctive widths. Only `onnx` is needed here: no torch, no runtime.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from hwprune.errors import ProfileError

ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh"}
_SMALL_INT = 64  # int64 initializers up to this many values are shape-like constants


@dataclass(frozen=True)
class Kernel:
    """One runtime unit of work, self-contained: it can build a tiny ONNX model of itself."""

    signature: str  # canonical JSON; the latency table key
    op: str  # short label, e.g. "Conv+Relu"
    macs: int

    def build(self, seed: int = 0) -> onnx.ModelProto:
        return _build_kernel_model(json.loads(self.signature), seed)


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    return shape_inference.infer_shapes(model, strict_mode=False)


def _shape_map(model: onnx.ModelProto) -> dict[str, tuple[list[int], int]]:
    shapes: dict[str, tuple[list[int], int]] = {}
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        shapes[vi.name] = ([d.dim_value for d in t.shape.dim], t.elem_type)
    for init in g.initializer:
        shapes[init.name] = (list(init.dims), init.data_type)
    return shapes


def _attr_value(a: onnx.AttributeProto):
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    if isinstance(value, onnx.TensorProto | onnx.GraphProto):
        raise ProfileError(f"attribute '{a.name}' holds a tensor or graph; kernels with it are not supported")
    return value


def _partition(model: onnx.ModelProto) -> list[list[onnx.NodeProto]]:
    """Group nodes into kernels: Conv [+BatchNormalization] [+activation], else one node each."""
    nodes = list(model.graph.node)
    consumers: dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    graph_outputs = {o.name for o in model.graph.output}
    used: set[int] = set()
    kernels: list[list[onnx.NodeProto]] = []

    def sole_next(node: onnx.NodeProto, ops: set[str]) -> onnx.NodeProto | None:
        out = node.output[0]
        if consumers.get(out, 0) != 1 or out in graph_outputs:
            return None
        for cand in nodes:
            if out in cand.input and cand.op_type in ops and id(cand) not in used:
                return cand
        return None

    for node in nodes:
        if id(node) in used or node.op_type == "Constant":
            continue
        chain = [node]
        if node.op_type == "Conv":
            for ops in ({"BatchNormalization"}, ACTIVATIONS):
                nxt = sole_next(chain[-1], ops)
                if nxt is not None:
                    chain.append(nxt)
        used.update(id(n) for n in chain)
        kernels.append(chain)
    return kernels


def _conv_macs(node: onnx.NodeProto, shapes: dict) -> int:
    if node.op_type not in ("Conv", "Gemm", "MatMul"):
        return 0
    out_shape = shapes.get(node.output[0], ([], 0))[0]
    w_shape = shapes.get(node.input[1], ([], 0))[0]
    if node.op_type == "Conv" and out_shape and w_shape:
        return int(np.prod(out_shape)) * int(np.prod(w_shape[1:]))
    if w_shape and out_shape:
        return int(np.prod(out_shape)) * int(w_shape[0] if node.op_type == "MatMul" else w_shape[-1])
    return 0


def kernels(model: onnx.ModelProto, shaped: bool = False) -> list[Kernel]:
    """The kernels of an exported (static-shape) model in graph order, fused as a runtime would fuse them."""
    if not shaped:
        model = with_shapes(model)
    return _to_kernels(model, _partition(model), _shape_map(model))


def runtime_kernels(optimized: onnx.ModelProto, shapes: dict[str, tuple[list[int], int]]) -> list[Kernel]:
    """The kernels of a graph as ONNX Runtime optimised it (see `runtime.optimized_graph`): one per node,
    since the runtime has already fused, re-laid out and padded; each is timed with optimisation off."""
    return _to_kernels(optimized, [[n] for n in optimized.graph.node if n.op_type != "Constant"], shapes)


def _label(chain: list[onnx.NodeProto]) -> str:
    parts = []
    for n in chain:
        domain = {"com.microsoft.nchwc": "nchwc.", "com.microsoft": "ms."}.get(n.domain, "")
        activation = [a.s.decode() for a in n.attribute if a.name == "activation" and a.type == a.STRING]
        parts.append(domain + n.op_type + "".join("+" + a for a in activation))
    return "+".join(parts)


def _to_kernels(model: onnx.ModelProto, chains: list[list[onnx.NodeProto]],
                shapes: dict[str, tuple[list[int], int]]) -> list[Kernel]:
    inits = {i.name: i for i in model.graph.initializer}
    constants = {n.output[0]: n.attribute[0].t for n in model.graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR}
    inits.update(constants)
    opsets = {o.domain: o.version for o in model.opset_import}
    result = []
    for chain in chains:
        produced = {o for n in chain for o in n.output}
        names: dict[str, str] = {}
        spec_inputs, spec_inits = [], []

        def canon(name: str) -> str:
            if name == "" or name in names:
                return names.get(name, "")
            if name in produced:
                names[name] = f"t{len(names)}"
            elif name in inits:
                t = inits[name]
                names[name] = f"w{len(spec_inits)}"
                values = None
                arr_size = int(np.prod(t.dims)) if t.dims else 1
                if t.data_type != TensorProto.FLOAT and arr_size <= _SMALL_INT:
                    values = numpy_helper.to_array(t).reshape(-1).tolist()
                spec_inits.append([names[name], list(t.dims), t.data_type, values])
            else:
                shape, dtype = shapes.get(name, (None, None))
                if not shape or any(d <= 0 for d in shape):
                    raise ProfileError(f"tensor '{name}' has no static shape; export with a fixed input shape")
                names[name] = f"in{len(spec_inputs)}"
                spec_inputs.append([names[name], shape, dtype])
            return names[name]

        spec_nodes = []
        for n in chain:
            ins = [canon(i) for i in n.input]
            outs = [canon(o) for o in n.output]
            attrs = sorted((a.name, _attr_value(a)) for a in n.attribute)
            spec_nodes.append([n.op_type, n.domain, ins, outs, attrs])
        last = chain[-1]
        out_shape, out_type = shapes.get(last.output[0], (None, None))
        if not out_shape:
            raise ProfileError(f"node '{last.name}' ({last.op_type}) has no inferred output shape")
        domains = sorted({"", *(n.domain for n in chain)})
        spec = {"nodes": spec_nodes, "inputs": spec_inputs, "inits": spec_inits,
                "outputs": [[names[last.output[0]], out_shape, out_type]],
                "opset": [[d, opsets.get(d, 1)] for d in domains]}
        signature = json.dumps(spec, separators=(",", ":"), sort_keys=True)
        result.append(Kernel(signature, _label(chain), sum(_conv_macs(n, shapes) for n in chain)))
    return result


def _build_kernel_model(spec: dict, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = []
    for name, dims, dtype, values in spec["inits"]:
        np_type = helper.tensor_dtype_to_np_dtype(dtype)
        if values is not None:
            arr = np.array(values, dtype=np_type).reshape(dims)
        else:
            arr = (rng.standard_normal(dims) * 0.1).astype(np_type)
        inits.append(numpy_helper.from_array(arr, name))
    nodes = [helper.make_node(op, ins, outs, domain=domain or None, **dict(attrs))
             for op, domain, ins, outs, attrs in spec["nodes"]]
    graph = helper.make_graph(
        nodes, "kernel",
        [helper.make_tensor_value_info(n, t, s) for n, s, t in spec["inputs"]],
        [helper.make_tensor_value_info(n, t, s) for n, s, t in spec["outputs"]],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in spec["opset"]])
    model.ir_version = min(model.ir_version, 10)
    return model


# ----------------------------------------------------------------------------------------------------------
# Shape template


@dataclass(frozen=True)
class ShapeRule:
    """How one integer of the network depends on group widths: dense − Σ mult · (dense_width − width)."""

    dense: int
    terms: tuple[tuple[str, int], ...]  # (group, channels removed per channel pruned from the group)

    def at(self, removed: dict[str, int]) -> int:
        return self.dense - sum(mult * removed[g] for g, mult in self.terms)


@dataclass(frozen=True)
class GraphTemplate:
    """The dense graph, re-sizable to any group widths.

    Parameter shapes come from `param_rules` (named like the torch parameters the exporter keeps);
    a Conv's unnamed bias follows its weight, a Conv's `group` attribute follows `conv_group_rules`,
    shape constants (e.g. a flatten's reshape target) follow `constant_rules`, found by comparing the
    dense export with one probe export at distinctive widths, and ONNX shape inference propagates the rest
    (concatenations included).
    """

    skeleton: bytes  # dense model: float initializers emptied, intermediate shapes removed
    param_rules: tuple[tuple[str, tuple[ShapeRule, ...]], ...]
    constant_rules: tuple[tuple[int, int, ShapeRule], ...]  # (initializer index, flat position, rule)
    conv_group_rules: tuple[tuple[str, ShapeRule], ...]  # keyed by the Conv's weight name
    dense_widths: tuple[tuple[str, int], ...]

    @property
    def key(self) -> str:
        """Stable id of the architecture (for calibration records)."""
        return hashlib.sha256(self.skeleton).hexdigest()[:16]

    @classmethod
    def build(cls, dense: onnx.ModelProto, probe: onnx.ModelProto, dense_widths: dict[str, int],
              probe_widths: dict[str, int], param_rules: dict[str, tuple[ShapeRule, ...]],
              conv_group_rules: dict[str, ShapeRule]) -> GraphTemplate:
        """`probe` is the export of the model slimmed to `probe_widths` (see `probe_widths()`)."""
        constants = _constant_rules(dense, probe, dense_widths, probe_widths)
        skeleton = copy.deepcopy(dense)
        for init in skeleton.graph.initializer:
            if init.data_type == TensorProto.FLOAT:
                init.ClearField("raw_data")
                init.ClearField("float_data")
        del skeleton.graph.value_info[:]
        named = {i.name for i in skeleton.graph.initializer}
        if not named & set(param_rules):
            raise ProfileError("the ONNX export does not keep the model's parameter names",
                               hint="hwprune needs torch.onnx's dynamo exporter (torch ≥ 2.4)")
        template = cls(skeleton.SerializeToString(), tuple(sorted(param_rules.items())), constants,
                       tuple(sorted(conv_group_rules.items())), tuple(sorted(dense_widths.items())))
        template.kernels(dense_widths)  # fail now, not mid-search, if shapes cannot be propagated
        return template

    def instantiate(self, widths: dict[str, int], seed: int | None = 0) -> onnx.ModelProto:
        """The graph at `widths`; float weights random (seeded) when `seed` is not None, else left empty."""
        removed = {g: w - widths[g] for g, w in self.dense_widths}
        model = onnx.ModelProto.FromString(self.skeleton)
        g = model.graph
        rules = dict(self.param_rules)
        dims: dict[str, list[int]] = {}
        for init in g.initializer:
            if init.name in rules:
                init.dims[:] = [rule.at(removed) for rule in rules[init.name]]
            dims[init.name] = list(init.dims)
        changed: dict[int, np.ndarray] = {}
        for index, position, rule in self.constant_rules:
            if index not in changed:
                changed[index] = numpy_helper.to_array(g.initializer[index]).copy()
            changed[index].reshape(-1)[position] = rule.at(removed)
        for index, values in changed.items():
            g.initializer[index].CopyFrom(numpy_helper.from_array(values, g.initializer[index].name))
        group_rules = dict(self.conv_group_rules)
        by_name = {i.name: i for i in g.initializer}
        for node in g.node:
            if node.op_type != "Conv" or len(node.input) < 2:
                continue
            weight = node.input[1]
            if len(node.input) > 2 and node.input[2] in by_name and weight in dims:
                by_name[node.input[2]].dims[:] = [dims[weight][0]]
            if weight in group_rules:
                for a in node.attribute:
                    if a.name == "group":
                        a.i = group_rules[weight].at(removed)
        if seed is not None:
            rng = np.random.default_rng(seed)
            for init in g.initializer:
                if init.data_type == TensorProto.FLOAT:
                    init.raw_data = (rng.standard_normal(list(init.dims)) * 0.1).astype(np.float32).tobytes()
        try:
            return shape_inference.infer_shapes(model, strict_mode=True)
        except Exception as exc:
            raise ProfileError(f"cannot propagate shapes through the pruned graph: {str(exc).splitlines()[0]}",
                               hint="a layer's channel count is fixed in the graph (e.g. a hard-coded reshape)"
                               ) from None

    def kernels(self, widths: dict[str, int]) -> list[Kernel]:
        return kernels(self.instantiate(widths, seed=None), shaped=True)


def probe_widths(dense_widths: dict[str, int]) -> dict[str, int]:
    """Widths with a distinct keep ratio per group, so a probe export tells the groups apart."""
    used: set[Fraction] = set()
    probe = {}
    for group, width in dense_widths.items():
        for candidate in range(width - 1, 0, -1):
            if Fraction(candidate, width) not in used:
                used.add(Fraction(candidate, width))
                probe[group] = candidate
                break
        else:
            raise ProfileError(f"group '{group}' has a single channel and cannot be pruned",
                               hint=f"add '{group}' to [model] ignore")
    return probe


def _constant_rules(dense: onnx.ModelProto, probe: onnx.ModelProto, dense_widths: dict[str, int],
                    probe_widths: dict[str, int]) -> tuple[tuple[int, int, ShapeRule], ...]:
    """Rules for small integer constants (reshape targets) that scale with one group's width."""
    a, b = dense.graph.initializer, probe.graph.initializer
    def int_names(inits) -> list[str]:
        return [i.name for i in inits if i.data_type == TensorProto.INT64]

    if int_names(a) != int_names(b):
        raise ProfileError("the model's ONNX graph changes structure when channels are pruned",
                           hint="the model must export to the same graph at any channel widths")
    probe_by_name = {i.name: i for i in b}
    rules = []
    for index, init in enumerate(a):
        if init.data_type != TensorProto.INT64 or not 0 < int(np.prod(init.dims or [1])) <= _SMALL_INT:
            continue
        before = numpy_helper.to_array(init).reshape(-1)
        after = numpy_helper.to_array(probe_by_name[init.name]).reshape(-1)
        for position, (d, p) in enumerate(zip(before.tolist(), after.tolist())):
            if d == p:
                continue
            matches = [g for g, w in dense_widths.items()
                       if d > 0 and d % w == 0 and Fraction(p, d) == Fraction(probe_widths[g], w)]
            if len(matches) != 1:
                raise ProfileError(f"cannot tell which channel group sets constant '{init.name}' ({d} → {p})",
                                   hint="a reshape mixes several channel groups; flatten with -1 instead")
            g = matches[0]
            rules.append((index, position, ShapeRule(d, ((g, d // dense_widths[g]),))))
    return tuple(rules)
