"""Property-based fuzzing of everything a user hands in as a file: any content either loads, and is then usable
by what consumes it, or raises hwprune's error for that kind of file (ConfigError, ProfileError, ReportError,
DataError) -- never another exception, which the CLI would show as a traceback (exit 1).

In-process and small (a few hundred examples each); run with the rest of the fast loop.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import math
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwprune import config as cfg
from hwprune import paths, profiles, report, runtime, targets, train
from hwprune.data import fashion_mnist
from hwprune.errors import ConfigError, DataError, ProfileError, ReportError

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])

# -- values TOML can hold ---------------------------------------------------------------------------------------

_edge_numbers = st.sampled_from([0, 1, -1, 2, 0.0, 0.5, 1.0, -0.5, 1.5, 0.99, 1e-12, 1e12, 2 ** 31, 2 ** 63 - 1,
                                 -(2 ** 63), 10 ** 30, math.nan, math.inf, -math.inf])
scalars = st.one_of(
    _edge_numbers,
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["fp32", "bf16", "lr", "weights", "tpe", "nsga2", "example-cnn", "m:f", "auto", "all"]),
)
toml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
# mostly numbers of about the right size, so that many mappings load and what uses them is exercised too
setting_values = st.one_of(_edge_numbers, st.floats(min_value=-2.0, max_value=2.0), st.floats(),
                           st.integers(min_value=-3, max_value=70), scalars, toml_values)


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(data: dict) -> str:
    """A minimal TOML writer (top-level scalars, then one [table] per dict value)."""
    lines = [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in ((k, v) for k, v in data.items() if isinstance(v, dict)):
        lines.append(f"[{_toml_string(key)}]")
        lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# -- the project config ----------------------------------------------------------------------------------------

SECTION_CLASSES = {"model": cfg.ModelSpec, "data": cfg.DataSpec, "train": cfg.TrainConfig, "imp": cfg.ImpConfig,
                   "search": cfg.SearchConfig}


def _section(cls: type) -> st.SearchStrategy[dict]:
    keys = [f.name for f in dataclasses.fields(cls)]
    return st.dictionaries(st.sampled_from(keys + ["bogus"]), setting_values, max_size=3)


wild_configs = st.fixed_dictionaries({}, optional={
    **{name: _section(cls) | toml_values for name, cls in SECTION_CLASSES.items()},
    "seed": toml_values, "base_dir": toml_values, "unknown": toml_values})
_defaults = json.loads(json.dumps(dataclasses.asdict(cfg.ProjectConfig())))  # tuples as lists, as TOML has them
del _defaults["base_dir"]
_setting_keys = [(section, key) for section, table in _defaults.items() if isinstance(table, dict) for key in table]
near_valid_configs = st.lists(st.tuples(st.sampled_from(_setting_keys + [("seed", None)]),
                                        st.floats(0, 1) | st.integers(1, 10) | setting_values),
                              min_size=1, max_size=2).map(
    lambda changes: _changed(_defaults, changes))


def _changed(defaults: dict, changes: list) -> dict:
    data = copy.deepcopy(defaults)
    for (section, key), value in changes:
        if key is None:
            data[section] = value
        else:
            data[section][key] = value
    return data


config_mappings = st.one_of(wild_configs, near_valid_configs, near_valid_configs)


def _use(config: cfg.ProjectConfig) -> None:
    """What training does with the settings first: a loaded config must not make these raise."""
    t = config.train
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=True,
                                weight_decay=t.weight_decay)
    loss = torch.nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)(model(torch.ones(3, 2)),
                                                                        torch.tensor([0, 1, 0]))
    loss.backward()
    optimizer.step()
    total = max(1, round(t.retrain_epochs * 10))
    assert all(math.isfinite(train._lr_at(step, total, t)) for step in (0, total - 1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(t.threads)
    finally:
        torch.set_num_threads(threads)
    assert math.prod(config.model.input_shape) >= 1


@FUZZ
@given(config_mappings)
def test_any_config_file_loads_or_is_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "hwprune.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    try:
        config = cfg.load_config(path)
    except ConfigError as exc:
        assert str(path) in exc.message or "invalid TOML" in exc.message
        return
    _use(config)


@FUZZ
@given(config_mappings)
def test_any_mapping_builds_a_config_or_raises_config_error(data):
    try:
        config = cfg.from_mapping(cfg.ProjectConfig, copy.deepcopy(data), "fuzz.toml")
        cfg.validate(config, "fuzz.toml")
    except ConfigError as exc:
        assert exc.message.startswith("fuzz.toml")
        return
    _use(config)


# -- target files -------------------------------------------------------------------------------------------

_target_base = {"schema": 1, "name": "t", "profile": "p", "providers": ["CPUExecutionProvider"],
                "budget": {"speedup": 2.0}}
target_mappings = st.builds(
    lambda base, changes, drop: {**{k: v for k, v in base.items() if k not in drop}, **changes},
    st.just(_target_base),
    st.dictionaries(st.sampled_from(list(targets._KEYS) + ["speed"]),
                    setting_values | st.dictionaries(st.sampled_from(["ms", "speedup", "x"]), setting_values,
                                                     min_size=1, max_size=2), max_size=3),
    st.sets(st.sampled_from(list(_target_base)), max_size=2))
_numbers = st.one_of(_edge_numbers, st.floats(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70))
_one_change = st.one_of(  # one setting changed: many load, so what uses them is exercised too
    st.tuples(st.just("budget"), st.dictionaries(st.sampled_from(["ms", "speedup"]), _numbers, min_size=1,
                                                 max_size=1)),
    st.tuples(st.sampled_from(["intra_op_threads", "batch", "channel_multiple", "schema"]), _numbers),
    st.tuples(st.sampled_from(list(targets._KEYS)), setting_values))
target_mappings = st.one_of(target_mappings, _one_change.map(lambda change: {**_target_base, change[0]: change[1]}))


@FUZZ
@given(target_mappings)
def test_any_target_parses_or_raises_config_error(data):
    try:
        target = targets.parse_target(copy.deepcopy(data), Path("fuzz.toml"))
    except ConfigError as exc:
        assert "fuzz.toml" in exc.message
        return
    budget = target.budget.resolve(1.0).ms
    assert math.isfinite(budget) and budget > 0
    runtime.session_options(runtime.RuntimeSettings(target.providers, target.intra_op_threads,
                                                    target.graph_optimization))
    assert target.budget.describe()


# -- device profiles ----------------------------------------------------------------------------------------

_measured = {"schema": 2, "id": "p", "device": {"cpu": "c", "arch": "x86_64", "isa": ["avx"], "cores": 2},
             "runtime": {"onnxruntime": "1.0", "providers": ["CPUExecutionProvider"], "intra_op_threads": 1,
                         "graph_optimization": "all"},
             "provenance": {"kind": "measured", "host": "h"}, "protocol": {}, "overhead_ms": 0.01,
             "calibration": {"a": {"scale": 1.0, "offset_ms": 0.0, "networks": 3, "max_error_pct": 1.0}},
             "alignment": {"preferred_channel_multiple": 8},
             "entries": {"k": {"median_ms": 0.1, "p90_ms": 0.2, "spread": 0.05, "n": 30, "op": "Conv"}}}
_analytic = json.loads((paths.BUILTIN_PROFILES / "jetson-nano.json").read_text())


def _paths(obj, prefix=()):
    """Every (path to a value) in a JSON document."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _replace(doc, path, value):
    if not path:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | _edge_numbers,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5)


def _mutations(base: dict) -> st.SearchStrategy:
    paths = list(_paths(base))
    values = st.one_of(_edge_numbers, st.floats(), st.integers(min_value=-3, max_value=70), json_values)
    return st.lists(st.tuples(st.sampled_from(paths), values), min_size=1, max_size=2).map(
        lambda changes: _apply(base, changes))


def _apply(base, changes):
    doc = base
    for path, value in changes:
        try:
            doc = _replace(doc, path, value)
        except (KeyError, IndexError, TypeError):  # an earlier change removed the place
            pass
    return doc


@FUZZ
@given(st.one_of(_mutations(_measured), _mutations(_analytic)))
def test_any_profile_loads_or_raises_profile_error(data):
    try:
        profile = profiles.DeviceProfile.from_json(data, Path("fuzz.json"))
    except ProfileError as exc:
        assert "fuzz.json" in exc.message
        return
    json.dumps(profile.to_json())  # what save writes
    assert profile.describe() and profile.kind in ("measured", "analytic")
    assert profile.preferred_channel_multiple is None or profile.preferred_channel_multiple >= 1
    for entry in profile.entries.values():
        assert math.isfinite(entry.median_ms - profile.overhead_ms)
    if profile.analytic is not None:
        from hwprune import analytic, onnxgraph
        from hwprune.runtime import null_model
        for kernel in onnxgraph.kernels(null_model()):
            assert math.isfinite(analytic.kernel_ms(kernel, profile.analytic))


# -- reports given to `compare` -------------------------------------------------------------------------------

def _valid_report() -> dict:
    from test_bad_input import _report
    return _report()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_mutations(_valid_report()))
def test_any_report_reads_or_raises_report_error(tmp_path_factory, data):
    from hwprune import compare
    path = tmp_path_factory.mktemp("report") / "report.json"
    path.write_text(json.dumps(data))  # NaN and Infinity as Python's json writes them
    try:
        read = report.read(path)
    except ReportError as exc:
        assert str(path) in exc.message
        return
    c = compare.Comparison([read], [path], [read["target"]])
    compare.to_markdown(c, {name: f"{name}.png" for name in compare.PLOTS})
    compare.rows(c)


# -- dataset files --------------------------------------------------------------------------------------------

idx_files = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda ndim, dims, payload: bytes([0, 0, 8, ndim]) + struct.pack(f">{len(dims)}I", *dims) + payload,
              st.integers(0, 4), st.lists(st.integers(0, 2 ** 32 - 1) | st.integers(0, 6), max_size=4),
              st.binary(max_size=64)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx_files, st.booleans())
def test_any_idx_file_parses_or_raises_data_error(tmp_path_factory, raw, compressed):
    path = tmp_path_factory.mktemp("idx") / ("f.gz" if compressed else "f")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    try:
        array = fashion_mnist.read_idx(path)
    except DataError as exc:
        assert str(path) in exc.message
        return
    assert array.ndim == raw[3] and array.size == len(raw) - 4 - 4 * raw[3]


@pytest.mark.parametrize("corrupt", [lambda raw: raw[:-8], lambda raw: raw[:20] + bytes(len(raw) - 20),
                                     lambda raw: raw[:12] + b"\xff" * 40 + raw[52:]])
def test_damaged_gzip_streams_are_data_errors(tmp_path, corrupt):
    raw = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 4000) + bytes(range(10)) * 400)
    path = tmp_path / "f.gz"
    path.write_bytes(corrupt(raw))
    with pytest.raises(DataError, match="f.gz"):
        fashion_mnist.read_idx(path)
