"""Coupled channel groups and physical channel removal: the only importer of torch_pruning.

A group is named by its root layer (the first Conv/Linear, in module order, whose output channels define
it). Names survive physical pruning, so masks in dense coordinates can be applied to any slimmed copy.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from hwprune import inputs
from hwprune.errors import PruningError
from hwprune.onnxgraph import ShapeRule
from hwprune.prune.masks import Masks

log = logging.getLogger(__name__)
_ROOT_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)


@dataclass(frozen=True)
class GroupInfo:
    name: str  # root layer name
    width: int  # current channel count
    members: tuple[str, ...]  # parametric layers whose channels the group couples


def output_layers(model: nn.Module, example: inputs.Example) -> list[str]:
    """Layers whose outputs are the network's output: pruning their channels would change the output."""
    calls: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: calls.append((n, out)))
             for n, m in model.named_modules() if isinstance(m, _ROOT_TYPES)]
    try:
        with torch.no_grad():
            out = inputs.call(model.eval(), example)
    finally:
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, tuple | list) else (out,)
    direct = [n for n, o in calls if any(o is t for t in outs)]
    return direct or ([calls[-1][0]] if calls else [])


def _dependency_graph(model: nn.Module, example: inputs.Example) -> tp.DependencyGraph:
    try:
        with warnings.catch_warnings():  # "unwrapped parameters": such groups are left alone, see _unprunable
            warnings.simplefilter("ignore", UserWarning)
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=inputs.call)
    except Exception as exc:  # tracing failures come in many types
        raise PruningError(f"cannot trace the model's channel dependencies: {exc}",
                           hint="the model must run on a tensor of [model] input_shape") from None


# Layers with parameters whose channel layout the engine knows; any other member of a group (a raw
# nn.Parameter used in forward, a custom layer with parameters) would be pruned along a guessed dimension.
_KNOWN_PARAMETRIC = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                     nn.PReLU)


def _unprunable(group: tp.dependency.Group, module_names: dict, param_names: dict) -> list[str]:
    """The members of `group` the engine cannot slim safely, named for the user."""
    found = []
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, nn.Parameter):
            found.append(f"'{param_names.get(m, '?')}' (a parameter used outside a known layer)")
        elif (isinstance(m, nn.Module) and not isinstance(m, _KNOWN_PARAMETRIC)
              and any(True for _ in m.parameters(recurse=False))):
            found.append(f"'{module_names.get(m, '?')}' ({type(m).__name__})")
    return list(dict.fromkeys(found))


def _groups(model: nn.Module, example: inputs.Example, ignore: tuple[str, ...]
            ) -> tuple[tp.DependencyGraph, dict[str, tp.dependency.Group]]:
    dg, found, _ = _all_groups(model, example, ignore)
    return dg, found


def _all_groups(model: nn.Module, example: inputs.Example, ignore: tuple[str, ...]
                ) -> tuple[tp.DependencyGraph, dict[str, tp.dependency.Group], dict[str, list[str]]]:
    """(graph, prunable groups by root layer name, groups left at full width → the members that forbid it)."""
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    missing = [n for n in ignore if n not in modules]
    if missing:
        raise PruningError(f"[model] ignore names unknown layer '{missing[0]}'",
                           hint="use names from model.named_modules()")
    ignored = [modules[n] for n in (*output_layers(model, example), *ignore)]
    dg = _dependency_graph(model, example)
    param_names = {p: n for n, p in model.named_parameters()}
    found: dict[str, tp.dependency.Group] = {}
    skipped: dict[str, list[str]] = {}
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=_ROOT_TYPES):
        root = group[0].dep.target.module
        if root in names:
            blockers = _unprunable(group, names, param_names)
            if blockers:
                skipped[names[root]] = blockers
            else:
                found[names[root]] = group
    order = {n: i for i, n in enumerate(names.values())}
    return dg, dict(sorted(found.items(), key=lambda kv: order[kv[0]])), skipped


def _width(group: tp.dependency.Group) -> int:
    return len(group[0].idxs)


def channel_groups(model: nn.Module, example: inputs.Example, ignore: tuple[str, ...] = (), warn: bool = True
                   ) -> list[GroupInfo]:
    """The prunable coupled channel groups of `model`, in module order (`warn`: name the groups the engine
    must leave at full width)."""
    names = {m: n for n, m in model.named_modules()}
    _, groups, skipped = _all_groups(model, example, ignore)
    for root, blockers in skipped.items() if warn else ():
        log.warning("the pruning engine cannot prune %s: the channels of '%s' and the layers coupled to it stay at "
                    "full width; the other groups are pruned", ", ".join(blockers), root)
    if not groups:
        raise PruningError("the model has no prunable channel groups" + (
            f" (left at full width because of {', '.join(b for bs in skipped.values() for b in bs)})"
            if skipped else ""), hint="hwprune prunes Conv/Linear output channels; the output layer is never "
                                      "pruned; wrap custom per-channel parameters in a known layer")
    infos = []
    for name, group in groups.items():
        members = tuple(dict.fromkeys(names[d.target.module] for d, _ in group
                                      if d.target.module in names and any(True for _ in
                                                                           d.target.module.parameters(False))))
        infos.append(GroupInfo(name, _width(group), members))
    return infos


def group_importance(model: nn.Module, example: inputs.Example, ignore: tuple[str, ...] = ()
                     ) -> dict[str, torch.Tensor]:
    """L2 magnitude of every channel over all coupled parameters of its group (current coordinates)."""
    _, groups = _groups(model, example, ignore)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    with torch.no_grad():
        return {name: importance(group).detach().clone() for name, group in groups.items()}


def _positions(current: tuple[int, ...], new: tuple[int, ...]) -> list[int]:
    """Positions (in the current slim tensor) of dense channels dropped when going to `new`."""
    keep = set(new)
    if not keep <= set(current):
        raise PruningError("masks may only shrink: a channel removed earlier cannot come back")
    return [pos for pos, idx in enumerate(current) if idx not in keep]


def slim(model: nn.Module, example: inputs.Example, current: Masks, new: Masks,
         ignore: tuple[str, ...] = ()) -> nn.Module:
    """A physically smaller copy of `model` (currently at `current` masks) with only `new`'s channels."""
    result = copy.deepcopy(model).eval()
    dg, groups = _groups(result, example, ignore)
    for name, group in groups.items():
        drop = _positions(current.kept_of(name), new.kept_of(name))
        if not drop:
            continue
        root = group[0].dep.target.module
        pruning_group = dg.get_pruning_group(root, group[0].dep.handler, idxs=drop)
        pruning_group.prune()
    return result


def zero_pruned(model: nn.Module, example: inputs.Example, masks: Masks, ignore: tuple[str, ...] = ()) -> nn.Module:
    """The *masked* realisation: a same-size copy whose pruned channels are zero in every coupled layer.

    Used to check that physical removal computes what masking does.
    """
    result = copy.deepcopy(model).eval()
    dg, groups = _groups(result, example, ignore)
    with torch.no_grad():
        for name, group in groups.items():
            drop = _positions(tuple(range(_width(group))), masks.kept_of(name))
            if not drop:
                continue
            pruning_group = dg.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, idxs=drop)
            for dep, idxs in pruning_group:
                module, kind = dep.target.module, dep.handler.__name__
                if not any(True for _ in module.parameters(False)):
                    continue
                index = torch.as_tensor(list(idxs), dtype=torch.long)
                dim = 1 if kind.endswith("in_channels") and not _is_depthwise(module) else 0
                if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.Conv2d | nn.Conv1d | nn.Linear):
                    for param in (module.weight, getattr(module, "bias", None)):
                        if param is not None and (dim == 0 or param.dim() > 1):
                            param.index_fill_(dim, index, 0.0)
                else:
                    raise PruningError(f"masked realisation does not support {type(module).__name__}")
    return result


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d | nn.Conv1d) and module.groups > 1 and module.groups == module.in_channels


def count_macs_params(model: nn.Module, example: inputs.Example) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass and the parameter count (Torch-Pruning's counter)."""
    macs, params = tp.utils.count_ops_and_params(model.eval(), example)
    return int(macs), int(params)


def shape_rules(model: nn.Module, example: inputs.Example, ignore: tuple[str, ...] = ()
                ) -> tuple[dict[str, tuple[ShapeRule, ...]], dict[str, ShapeRule]]:
    """How every parameter dimension and every Conv's `groups` depend on the group widths.

    Found by removing one channel from each group in turn and watching what shrinks: exact for whatever
    Torch-Pruning couples (residual adds, concatenations, depthwise convolutions, flatten → linear).
    """
    dense_shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Conv1d)}
    dense_groups = {n: m.groups for n, m in convs.items()}
    widths = {g.name: g.width for g in channel_groups(model, example, ignore, warn=False)}
    full = Masks.full(widths)
    terms: dict[tuple[str, int], list[tuple[str, int]]] = {}
    group_terms: dict[str, list[tuple[str, int]]] = {}
    for group, width in widths.items():
        minus_one = Masks.from_kept(widths, {g: list(range(w - (g == group))) for g, w in widths.items()})
        probe = slim(model, example, full, minus_one, ignore)
        for name, tensor in probe.state_dict().items():
            for dim, (before, after) in enumerate(zip(dense_shapes[name], tensor.shape)):
                if before != after:
                    terms.setdefault((name, dim), []).append((group, before - after))
        for name, module in probe.named_modules():
            if name in dense_groups and module.groups != dense_groups[name]:
                group_terms.setdefault(name, []).append((group, dense_groups[name] - module.groups))
    params = {name: tuple(ShapeRule(d, tuple(terms.get((name, i), ()))) for i, d in enumerate(shape))
              for name, shape in dense_shapes.items()}
    conv_groups = {f"{name}.weight": ShapeRule(dense_groups[name], tuple(t)) for name, t in group_terms.items()}
    return params, conv_groups
