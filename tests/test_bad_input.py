"""Bad input, as a user meets it: one line saying what is wrong (and a hint), the documented exit code, no
traceback, and nothing that was there before changed (earlier results, profiles, configs, data).

Every test runs `hwprune` in a folder that already holds an earlier run's results and a device profile,
and checks afterwards that all of it is byte-for-byte unchanged and that no new result was written.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import TINY

from hwprune import paths

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ("model.onnx", "model.optimized.onnx", "report.json", "report.md")
FAST = ["--limit", "256", "--no-cache", "--quiet"]


@pytest.fixture
def workspace(tmp_path) -> Path:
    """An earlier run's results, a profile of this host and a valid config, as a user's folder would hold."""
    earlier = tmp_path / "out" / "earlier"
    earlier.mkdir(parents=True)
    for name in ("model.onnx", "report.json", "report.md"):
        (earlier / name).write_bytes(f"earlier {name}".encode())
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "jetson-nano.json").write_bytes((paths.BUILTIN_PROFILES / "jetson-nano.json").read_bytes())
    (tmp_path / "hwprune.toml").write_text(TINY)
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hwprune(workspace: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, bytes]]:
    before = snapshot(workspace)
    result = subprocess.run([sys.executable, "-m", "hwprune", *args], cwd=workspace, capture_output=True, text=True,
                            timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    return result, before


def assert_refused(workspace: Path, result: subprocess.CompletedProcess, before: dict[str, bytes], code: int,
                   *phrases: str) -> str:
    """Exit code, 'error: …' naming every phrase on one line, an optional 'hint: …' line, nothing lost."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith(("error: ", "hint: "))]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert all(p in lines[0] for p in phrases), lines[0]
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: ")), result.stderr
    after = snapshot(workspace)
    assert {k: after.get(k) for k in before} == before  # nothing that was there changed or went away
    assert not [k for k in after if k not in before and Path(k).name in ARTIFACTS]  # and no result was written
    return lines[-1]


def test_unknown_target_lists_the_valid_ones(workspace):
    result, before = hwprune(workspace, "--target", "nope", "--out", "out/new")
    hint = assert_refused(workspace, result, before, 2, "unknown target 'nope'")
    assert "x86-cpu" in hint and "jetson-nano" in hint


@pytest.mark.parametrize("text,phrases", [
    ("[train]\nepochs = \n", ("hwprune-bad.toml", "invalid TOML")),
    ("[train]\nepochz = 3\n", ("hwprune-bad.toml", "unknown key 'epochz'")),
    ("[trian]\nepochs = 3\n", ("hwprune-bad.toml", "unknown key 'trian'")),
    ("[train]\nepochs = \"many\"\n", ("hwprune-bad.toml", "epochs", "expected an integer")),
])
def test_malformed_or_unknown_config_keys_name_file_and_key(workspace, text, phrases):
    (workspace / "hwprune-bad.toml").write_text(text)
    result, before = hwprune(workspace, "--target", "jetson-nano", "--config", "hwprune-bad.toml", "--out", "out/new")
    hint = assert_refused(workspace, result, before, 2, *phrases)
    if "unknown key" in phrases[-1]:
        assert "allowed keys" in hint


@pytest.mark.parametrize("edit,phrases", [
    (lambda t: t + "\nspeed = 3\n", ("bad-target.toml", "unknown key 'speed'")),
    (lambda t: t + "\nname = \n", ("bad-target.toml", "invalid TOML")),
    (lambda t: t.replace("budget = { speedup = 2.0 }", "budget = { ms = 0 }"), ("budget ms must be a positive",)),
    (lambda t: t.replace("budget = { speedup = 2.0 }", "budget = { ms = -0.5 }"), ("budget ms must be a positive",)),
    (lambda t: t.replace("budget = { speedup = 2.0 }", 'budget = { ms = "fast" }'), ("budget ms must be a positive",)),
    (lambda t: t.replace("budget = { speedup = 2.0 }", "budget = { speedup = 0.5 }"), ("speedup must be ≥ 1",)),
])
def test_bad_target_files_and_budgets(workspace, edit, phrases):
    text = (paths.BUILTIN_TARGETS / "x86-cpu.toml").read_text()
    assert "budget = { speedup = 2.0 }" in text
    (workspace / "bad-target.toml").write_text(edit(text))
    result, before = hwprune(workspace, "--target", "bad-target.toml", "--out", "out/new")
    assert_refused(workspace, result, before, 2, *phrases)


def _profile_of_this_host(workspace: Path) -> dict:
    """A (still empty) measured profile of this host for the x86-cpu target's runtime settings."""
    from hwprune import profiles
    from hwprune.runtime import RuntimeSettings
    from hwprune.targets import load_target, target_dirs
    target = load_target("x86-cpu", target_dirs())
    settings = RuntimeSettings(target.providers, target.intra_op_threads, target.graph_optimization)
    profile = profiles.open_profile("x86-cpu", settings, workspace / "profiles", target.arch)
    profile.save()
    return json.loads(profile.path.read_text())


@pytest.mark.parametrize("mutate,phrases", [
    (lambda d: d.update(schema=1), ("x86-cpu.json", "profile schema 1 is not supported")),
    (lambda d: d.pop("entries"), ("x86-cpu.json", "entries")),
    (lambda d: d["device"].update(arch="aarch64", isa=["asimd"]), ("x86-cpu.json", "builds other graphs", "arch")),
    (lambda d: d["runtime"].update(onnxruntime="1.17.0"), ("x86-cpu.json", "builds other graphs", "onnxruntime")),
])
def test_unusable_profiles_stop_the_run_before_training(workspace, mutate, phrases):
    data = _profile_of_this_host(workspace)
    mutate(data)
    (workspace / "profiles" / "x86-cpu.json").write_text(json.dumps(data))
    result, before = hwprune(workspace, "--target", "x86-cpu", "--config", "hwprune.toml", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 5, *phrases)
    assert "dense" not in json.loads((workspace / "out" / "new" / ".hwprune" / "run.json").read_text())["stages"]


@pytest.mark.slow
def test_infeasible_budget_says_the_smallest_reachable_latency_and_the_limit(workspace, fashion_dir):
    text = (paths.BUILTIN_TARGETS / "jetson-nano.toml").read_text()
    (workspace / "tight.toml").write_text(text.replace(
        text[text.index("budget = "):].splitlines()[0], "budget = { ms = 0.11 }"))  # round 1's target is reachable
    (workspace / "two-rounds.toml").write_text(TINY.replace("\nrounds = 1", "\nrounds = 2"))
    result, before = hwprune(workspace, "--target", "tight.toml", "--config", "two-rounds.toml", "--out", "out/new",
                             "--profiles-dir", "profiles", *FAST)
    hint = assert_refused(workspace, result, before, 7, "infeasible", "smallest network", "predicted at")
    assert "max_prune_rate" in hint
    stages = json.loads((workspace / "out" / "new" / ".hwprune" / "run.json").read_text())["stages"]
    assert "dense" in stages and "round1" not in stages  # refused before a round was spent on it


@pytest.mark.parametrize("module,config,code,phrases", [
    (None, '[model]\nfactory = "not_a_module:build"\n', 4, ("cannot import module 'not_a_module'",)),
    ("def build():\n    return 42\n", '[model]\nfactory = "user_model:build"\n', 4,
     ("returned int, not a torch.nn.Module",)),
    ("raise ImportError('no module named tensorflow')\n", '[model]\nfactory = "user_model:build"\n', 4,
     ("user_model",)),
])
def test_model_factories_that_fail(workspace, module, config, code, phrases):
    if module:
        (workspace / "user_model.py").write_text(module)
    (workspace / "model.toml").write_text(config)
    result, before = hwprune(workspace, "--target", "jetson-nano", "--config", "model.toml", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, code, *phrases)


SCALED_MODEL = '''
import torch
from torch import nn


class ChannelScale(nn.Module):
    """A learnt per-channel scale, applied with a raw parameter: a layer the pruning engine does not know."""

    def __init__(self, channels):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


def build():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), ChannelScale(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
'''


@pytest.mark.slow
def test_layers_the_engine_cannot_prune_are_named_and_the_rest_is_pruned(workspace, fashion_dir):
    (workspace / "user_model.py").write_text(SCALED_MODEL)
    (workspace / "model.toml").write_text(TINY + '[model]\nfactory = "user_model:build"\n')
    text = (paths.BUILTIN_TARGETS / "jetson-nano.toml").read_text()  # the whole conv it keeps caps the speedup
    (workspace / "modest.toml").write_text(text.replace("budget = { speedup = 2.0 }", "budget = { speedup = 1.1 }"))
    result, before = hwprune(workspace, "--target", "modest.toml", "--config", "model.toml", "--out", "out/new",
                             "--profiles-dir", "profiles", *FAST)
    assert result.returncode in (0, 10), result.stderr
    assert "cannot prune '4.scale'" in " ".join(result.stderr.split()) and "'3'" in result.stderr
    report = json.loads((workspace / "out" / "new" / "report.json").read_text())
    assert "3" not in report["pruned"]["widths"]  # left whole: its channels are not a search variable
    assert report["pruned"]["widths"]["0"] < 16 or report["pruned"]["widths"]["7"] < 32  # the rest was pruned
    assert {k: v for k, v in snapshot(workspace).items() if k in before} == before


def test_missing_dataset_says_how_to_install(workspace):
    result, before = hwprune(workspace, "--target", "jetson-nano", "--data-dir", "no-data", "--out", "out/new", *FAST)
    hint = assert_refused(workspace, result, before, 3, "no-data", "does not exist")
    assert "apt-get install -y dataset-fashion-mnist" in hint


@pytest.mark.parametrize("damage,phrase", [
    (lambda p: p.write_bytes(b"not gzip at all"), "cannot read"),
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100])), "truncated"),
])
def test_corrupt_dataset_files_are_named(workspace, fashion_dir, damage, phrase):
    data = workspace / "data"
    shutil.copytree(fashion_dir, data)
    damage(data / "train-labels-idx1-ubyte.gz")
    result, before = hwprune(workspace, "--target", "jetson-nano", "--data-dir", "data", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 3, "train-labels-idx1-ubyte.gz", phrase)


UNEXPORTABLE_MODEL = '''
import torch
from hwprune.models.example_cnn import build as build_cnn


class Unexportable(torch.nn.Module):
    """Trains like the example CNN; its forward raises under the ONNX exporter (as an op ONNX lacks would)."""

    def __init__(self):
        super().__init__()
        self.net = build_cnn()

    def forward(self, x):
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            raise RuntimeError("aten::fancy_op has no ONNX symbolic")
        return self.net(x)


def build():
    return Unexportable()
'''


@pytest.mark.slow
def test_onnx_export_failure(workspace, fashion_dir):
    (workspace / "user_model.py").write_text(UNEXPORTABLE_MODEL)
    (workspace / "model.toml").write_text(TINY + '[model]\nfactory = "user_model:build"\n')
    result, before = hwprune(workspace, "--target", "jetson-nano", "--config", "model.toml", "--out", "out/new",
                             "--profiles-dir", "profiles", *FAST)
    assert_refused(workspace, result, before, 8, "ONNX export failed", "no ONNX symbolic")


def test_unwritable_output_folder(workspace):
    (workspace / "a-file").write_text("in the way")
    result, before = hwprune(workspace, "--target", "jetson-nano", "--out", "a-file/out", *FAST)
    assert_refused(workspace, result, before, 9, "cannot write to a-file/out")


def test_earlier_results_are_not_overwritten(workspace):
    result, before = hwprune(workspace, "--target", "jetson-nano", "--out", "out/earlier", *FAST)
    hint = assert_refused(workspace, result, before, 9, "out/earlier already holds results")
    assert "--force" in hint


# -- issue 13: every mistake a user can make is one `error:` line, its documented code, never a traceback -------

def _config_case(workspace: Path, text: str) -> tuple[subprocess.CompletedProcess, dict[str, bytes]]:
    (workspace / "bad.toml").write_text(text)
    return hwprune(workspace, "--target", "jetson-nano", "--config", "bad.toml", "--out", "out/new", *FAST)


@pytest.mark.parametrize("text,phrases", [
    ("[train]\nthreads = 0\n", ("threads",)),  # torch.set_num_threads(0) raised
    ("[train]\nthreads = 99999999999\n", ("threads",)),
    ("[train]\nmomentum = 0.0\n", ("momentum",)),  # SGD: "Nesterov momentum requires a momentum"
    ("[train]\nweight_decay = -0.1\n", ("weight_decay",)),
    ("[train]\nlabel_smoothing = 2.0\n", ("label_smoothing",)),
    ("[train]\nlr = inf\n", ("'lr'", "finite")),  # trained to the end with an infinite learning rate
    ("[train]\nretrain_epochs = nan\n", ("'retrain_epochs'", "finite")),
    ("[train]\nwarmup_fraction = nan\n", ("'warmup_fraction'", "finite")),
    ("[train]\ndistill_temperature = inf\n", ("'distill_temperature'", "finite")),
    ("[imp]\nsafety_margin = -inf\n", ("'safety_margin'", "finite")),
    ("[search]\nmax_prune_rate = nan\n", ("'max_prune_rate'", "finite")),
    ("[train]\nepochs = 99999999999999999999\n", ("'epochs'", "out of range")),
    ("[imp]\nextra_rounds = -1\n", ("extra_rounds",)),
    ("seed = -1\n", ("seed",)),  # numpy's default_rng(-1) raised inside the data factory
    ("[model]\ninput_shape = [1, 3, 100000, 100000]\n", ("input_shape", "too large")),
])
def test_out_of_range_and_non_finite_settings_name_file_and_key(workspace, text, phrases):
    result, before = _config_case(workspace, text)
    assert_refused(workspace, result, before, 2, "bad.toml", *phrases)


@pytest.mark.parametrize("make,phrases", [
    (lambda p: p.mkdir(), ("bad.toml", "is a folder")),
    (lambda p: p.write_bytes(b'[train]\nprecision = "\xff"\n'), ("bad.toml", "not UTF-8")),
    (lambda p: p.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n"), ("bad.toml", "nested too deeply")),
])
def test_unreadable_config_files(workspace, make, phrases):
    make(workspace / "bad.toml")
    result, before = hwprune(workspace, "--target", "jetson-nano", "--config", "bad.toml", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 2, *phrases)


@pytest.mark.parametrize("budget,phrase", [
    ("{ ms = nan }", "budget ms must be a positive finite number"),
    ("{ ms = inf }", "budget ms must be a positive finite number"),
    ("{ speedup = inf }", "budget speedup must be a positive finite number"),
    ("{ speedup = nan }", "budget speedup must be a positive finite number"),
    ("{ ms = 1" + "0" * 400 + " }", "budget ms must be a positive finite number"),  # float() overflowed
])
def test_non_finite_budgets(workspace, budget, phrase):
    text = (paths.BUILTIN_TARGETS / "x86-cpu.toml").read_text().replace("budget = { speedup = 2.0 }",
                                                                       f"budget = {budget}")
    (workspace / "bad-target.toml").write_text(text)
    result, before = hwprune(workspace, "--target", "bad-target.toml", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 2, "bad-target.toml", phrase)


def test_thread_count_beyond_onnx_runtime(workspace):
    text = (paths.BUILTIN_TARGETS / "x86-cpu.toml").read_text().replace("intra_op_threads = 1", "intra_op_threads = "
                                                                                            "1099511627776")
    (workspace / "bad-target.toml").write_text(text)
    result, before = hwprune(workspace, "--target", "bad-target.toml", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 2, "bad-target.toml", "intra_op_threads")


def _onnx_model(path: Path, input_type: int = 1, shape: tuple = (1, 4), metadata: dict[str, str] | None = None,
                op: str = "Relu", domain: str = "", output_type: int | None = None) -> Path:
    """A one-node ONNX model (an input of `input_type` is cast to float first), cheaply, without a pruning run."""
    import onnx
    from onnx import TensorProto, helper
    nodes, x = [], "x"
    if input_type not in (TensorProto.FLOAT, output_type):
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        x = "xf"
    nodes.append(helper.make_node(op, [x], ["y"], domain=domain, **({"to": output_type} if op == "Cast" else {})))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", input_type, list(shape))],
                              [helper.make_tensor_value_info("y", output_type or TensorProto.FLOAT, list(shape))])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_validate_refuses_a_speedup_budget_it_cannot_check(workspace):
    """CI gate: a model without hwprune's metadata (or built for another target) has no dense latency to take a
    speedup over; that is not a pass (it exited 0 with "not checked")."""
    _onnx_model(workspace / "plain.onnx")
    _onnx_model(workspace / "other.onnx", metadata={"hwprune.target": "arm-cortex-a72",
                                                    "hwprune.dense_latency_ms": "1.0"})
    for model, phrase in (("plain.onnx", "no hwprune metadata"), ("other.onnx", "built for target 'arm-cortex-a72'")):
        result, before = hwprune(workspace, "validate", model, "--target", "x86-cpu")
        hint = assert_refused(workspace, result, before, 2, model, "not checkable", phrase)
        assert "--budget-ms" in hint


def test_validate_garbled_metadata_is_not_checkable():
    from hwprune import validate
    from hwprune.targets import load_target, target_dirs
    target = load_target("x86-cpu", target_dirs())
    for dense in ("fast", "nan", "-1", "0"):  # float("fast") raised; nan, negative and 0 are no latency
        budget, basis = validate._budget(target, {"hwprune.target": "x86-cpu", "hwprune.dense_latency_ms": dense})
        assert budget is None and "not checkable" in basis and "no valid dense latency" in basis
    budget, basis = validate._budget(target, {"hwprune.target": "x86-cpu", "hwprune.dense_latency_ms": "2.0"})
    assert budget.ms == 1.0 and "dense latency recorded" in basis


@pytest.mark.slow
def test_validate_budget_ms_replaces_the_targets_budget(workspace):
    _onnx_model(workspace / "plain.onnx")
    met, _ = hwprune(workspace, "validate", "plain.onnx", "--target", "x86-cpu", "--budget-ms", "1000", "--json")
    assert met.returncode == 0, met.stderr
    summary = json.loads(met.stdout)
    assert summary["budget_ms"] == 1000 and summary["budget_met"] is True
    assert summary["budget_source"] == "--budget-ms" and "--budget-ms" in summary["budget"]
    missed, before = hwprune(workspace, "validate", "plain.onnx", "--target", "x86-cpu", "--budget-ms", "1e-9")
    assert_refused(workspace, missed, before, 10, "exceeds the budget", "--budget-ms")
    for bad in ("0", "-1", "nan", "inf"):
        result, before = hwprune(workspace, "validate", "plain.onnx", "--target", "x86-cpu", "--budget-ms", bad)
        assert_refused(workspace, result, before, 2, "--budget-ms must be a positive finite number")


@pytest.mark.parametrize("input_type,target", [(9, "x86-cpu"), (11, "jetson-nano"), (7, "x86-cpu")])
def test_validate_runs_models_whose_input_is_not_float(workspace, input_type, target):
    """bool, double (were fed int64: an ONNX Runtime error) and int64 inputs, measured here or predicted."""
    _onnx_model(workspace / "typed.onnx", input_type=input_type)
    result, _ = hwprune(workspace, "validate", "typed.onnx", "--target", target, "--budget-ms", "1000",
                        "--profiles-dir", "profiles")
    assert result.returncode == 0, result.stderr
    assert "valid ONNX" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind,phrases", [
    (dict(shape=(1, "M")), ("input 'x' has a dynamic shape",)),  # only a dynamic batch axis is fixed for a run
    (dict(op="Relu", domain="com.example"), ("ONNX Runtime cannot run the model", "com.example")),
    (dict(op="Cast", output_type=8), ("output 'y' is of type tensor(string)",)),
    (dict(input_type=8, op="Identity", output_type=8), ("input 'x' is of type tensor(string)",)),
])
def test_validate_models_it_cannot_run_or_time(workspace, kind, phrases):
    _onnx_model(workspace / "odd.onnx", **kind)
    result, before = hwprune(workspace, "validate", "odd.onnx", "--target", "x86-cpu", "--budget-ms", "1000")
    assert_refused(workspace, result, before, 8, "odd.onnx", *phrases)


def _analytic_profile(workspace: Path) -> Path:
    return workspace / "profiles" / "jetson-nano.json"


PROFILE_MISTAKES = [
    (lambda d: d.update(overhead_ms="fast"), ("overhead_ms",)),  # float("fast") raised
    (lambda d: d.update(overhead_ms=[1]), ("overhead_ms",)),
    (lambda d: d.update(calibration=[1]), ("calibration",)),  # [].items() raised
    (lambda d: d.update(calibration={"a": {"scale": "1", "offset_ms": 0, "networks": 1, "max_error_pct": 0}}),
     ("calibration[0].scale",)),
    (lambda d: d.update(entries={"k": {"median_ms": "fast", "p90_ms": 1, "spread": 0, "n": 1, "op": "Conv"}}),
     ("entries[0].median_ms",)),
    (lambda d: d.update(entries={"k": 5}), ("entries[0]",)),
    (lambda d: d["device"].update(isa=5), ("device.isa",)),
    (lambda d: d["device"].update(isa="avx2"), ("device.isa",)),  # read as ('a', 'v', 'x', '2')
    (lambda d: d["device"].update(cores="8"), ("device.cores",)),
    (lambda d: d["runtime"].update(providers="CPUExecutionProvider"), ("runtime.providers",)),
    (lambda d: d.update(provenance=["measured"]), ("provenance",)),
    (lambda d: d.update(alignment={"preferred_channel_multiple": 0}), ("alignment.preferred_channel_multiple",)),
    (lambda d: d["analytic"].update(channel_multiple=0), ("analytic", "channel_multiple")),  # ZeroDivisionError
    (lambda d: d["analytic"].update(peak_gflops="12"), ("analytic", "peak_gflops")),  # str / float raised
    (lambda d: d["analytic"].update(kernel_overhead_us=float("nan")), ("analytic", "kernel_overhead_us")),
    (lambda d: d["analytic"].update(sources="cited"), ("analytic", "sources")),
]


@pytest.mark.parametrize("case", [0, 2, 12])  # through the CLI: float("fast"), [].items(), ZeroDivisionError
def test_mistyped_profile_fields_stop_the_cli(workspace, case):
    mutate, phrases = PROFILE_MISTAKES[case]
    path = _analytic_profile(workspace)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    _onnx_model(workspace / "plain.onnx")
    result, before = hwprune(workspace, "validate", "plain.onnx", "--target", "jetson-nano", "--budget-ms", "1000",
                             "--profiles-dir", "profiles")
    assert_refused(workspace, result, before, 5, "jetson-nano.json", *phrases)


@pytest.mark.parametrize("mutate,phrases", PROFILE_MISTAKES)
def test_mistyped_profile_fields_name_the_file_and_field(workspace, mutate, phrases):
    """Every field's type and range is checked on load (a wrong one failed later, deep in a prediction)."""
    from hwprune import latency, onnxgraph, profiles
    from hwprune.errors import ProfileError
    path = _analytic_profile(workspace)
    data = json.loads(path.read_text())
    profiles.DeviceProfile.from_json(json.loads(path.read_text()), path)  # the shipped file itself is fine
    mutate(data)
    try:
        profile = profiles.DeviceProfile.from_json(data, path)
    except ProfileError as exc:
        assert str(path) in exc.message and all(p in exc.message for p in phrases), exc.message
        return
    # what a mistake that loads would have done: predict (it raised TypeError, ZeroDivisionError, ...)
    import onnx
    kernels = onnxgraph.kernels(onnx.load(str(_onnx_model(workspace / "plain.onnx"))))
    latency.LatencyModel(profile, "").predict(kernels)
    pytest.fail(f"accepted a profile with {phrases}")


@pytest.mark.parametrize("content,phrase", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError from json
    (b"\xff\xfe{}", "not a readable JSON profile"),  # UnicodeDecodeError
])
def test_unparsable_profiles(workspace, content, phrase):
    path = _analytic_profile(workspace)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    _onnx_model(workspace / "plain.onnx")
    result, before = hwprune(workspace, "validate", "plain.onnx", "--target", "jetson-nano", "--budget-ms", "1000",
                             "--profiles-dir", "profiles")
    assert_refused(workspace, result, before, 5, "jetson-nano.json", phrase)


def test_profiles_dir_under_a_file(workspace):
    """Refused before anything runs (it was a traceback from mkdir in `hwprune profile`, and a run trained the
    dense model before failing to save the profile)."""
    (workspace / "a-file").write_text("in the way")
    result, before = hwprune(workspace, "profile", "--target", "x86-cpu", "--profiles-dir", "a-file/profiles")
    assert_refused(workspace, result, before, 9, "a-file/profiles", "a-file", "not a folder")
    result, before = hwprune(workspace, "--target", "x86-cpu", "--profiles-dir", "a-file", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 9, "a-file", "is a file")
    assert not (workspace / "out" / "new" / ".hwprune").exists()


def test_control_characters_in_a_user_value_stay_on_one_line(workspace):
    """A TOML key with a newline and an escape sequence: one `error:` line, the characters shown escaped."""
    (workspace / "bad.toml").write_text('[train]\n"epochs\\nwarning: fake\\u001b[31m" = 1\n')
    result, before = hwprune(workspace, "--target", "jetson-nano", "--config", "bad.toml", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 2, "bad.toml", "unknown key", "\\n", "\\x1b[31m")
    assert "\x1b" not in result.stderr and not any(line.startswith("warning") for line in result.stderr.splitlines())


@pytest.mark.parametrize("args,phrase", [
    (("--bogus",), "unrecognized arguments: --bogus"),
    (("validate", "m.onnx"), "required: --target"),
    (("--target", "x86-cpu", "--seed", "many"), "--seed: invalid int value"),
    (("validate", "m.onnx", "--target", "x86-cpu", "--budget-ms", "fast"), "--budget-ms: invalid float value"),
])
def test_usage_mistakes_are_one_error_line(workspace, args, phrase):
    """argparse's own errors printed `usage: …` and `hwprune: error: …`."""
    result, before = hwprune(workspace, *args)
    hint = assert_refused(workspace, result, before, 2, phrase)
    assert "usage:" not in result.stderr and "--help" in hint


def test_negative_seed_on_the_command_line(workspace):
    result, before = hwprune(workspace, "--target", "jetson-nano", "--seed", "-1", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 2, "--seed must be an integer in [0, 2^63)")


def test_input_shape_that_does_not_match_the_data(workspace, fashion_dir):
    (workspace / "shape.toml").write_text(TINY + "[model]\ninput_shape = [1, 3, 28, 28]\n")
    result, before = hwprune(workspace, "--target", "jetson-nano", "--config", "shape.toml", "--out", "out/new",
                             "--profiles-dir", "profiles", *FAST)
    hint = assert_refused(workspace, result, before, 2, "input_shape [1, 3, 28, 28]", "[1, 28, 28]")
    assert "[1, 1, 28, 28]" in hint


def test_input_shape_the_model_cannot_take(workspace):
    (workspace / "shape.toml").write_text(TINY + "[model]\ninput_shape = [1, 3, 28, 28]\n")
    result, before = hwprune(workspace, "profile", "--target", "x86-cpu", "--config", "shape.toml",
                             "--profiles-dir", "profiles")
    assert_refused(workspace, result, before, 4, "fails on an input of shape [1, 3, 28, 28]", "RuntimeError")


def _idx(dims: tuple[int, ...], payload: bytes) -> bytes:
    import struct
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


@pytest.mark.parametrize("damage,phrase", [
    (lambda raw: gzip.compress(_idx((60000,), b"")[:6]), "truncated: its header needs 8 bytes"),  # struct.error
    (lambda raw: gzip.compress(bytes([0, 0, 8, 0, 7])), "0 dimensions"),  # len() of a 0-d array
    (lambda raw: gzip.compress(_idx((60000,), bytes([200]) * 60000)), "label 200 is out of range"),
    (lambda raw: gzip.compress(_idx((60000, 1), bytes(60000))), "expected labels (N,)"),
    (lambda raw: raw[:10] + bytes(b ^ 0x55 for b in raw[10:200]) + raw[200:], "cannot read"),  # zlib.error
])
def test_damaged_idx_files_are_data_errors(workspace, fashion_dir, damage, phrase):
    data = workspace / "data"
    shutil.copytree(fashion_dir, data)
    labels = data / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(damage(labels.read_bytes()))
    result, before = hwprune(workspace, "--target", "jetson-nano", "--data-dir", "data", "--out", "out/new", *FAST)
    assert_refused(workspace, result, before, 3, "train-labels-idx1-ubyte.gz", phrase)


def _report(target: str = "x86-cpu", group: str = "conv1", description: str = "a device", op: str = "Conv",
            model: str = "example-cnn") -> dict:
    """A report.json that satisfies the schema, made by hand (no pruning run)."""
    def summary(acc: float, ms: float, widths: dict[str, int]) -> dict:
        return {"accuracy": acc, "latency_ms": ms, "latency_p90_ms": None, "latency_source": "predicted",
                "predicted_latency_ms": ms, "macs": 1000, "params": 100, "widths": widths}
    return {
        "tool": "hwprune", "schema": 2, "target": target, "model": model,
        "target_settings": {"description": description, "providers": ["CPUExecutionProvider"], "intra_op_threads": 1,
                            "batch": 1, "precision": "fp32", "graph_optimization": "all", "channel_multiple": 8,
                            "budget": "2x speedup over dense", "file": "t.toml"},
        "budget_ms": 0.5, "budget_met": True, "speedup": 2.0,
        "dense": summary(0.9, 1.0, {group: 16, "g2": 32}),
        "pruned": {**summary(0.88, 0.5, {group: 8, "g2": 16}), "kept_channels": {group: list(range(8))}},
        "onnx": "model.onnx", "optimized_onnx": None,
        "numerics": {"max_abs_diff": 0.0, "samples": 1, "tolerance": 1e-4, "providers": ["CPUExecutionProvider"]},
        "dense_training": {"cached": False, "cache_key": None, "training_seconds": 1.0},
        "latency_breakdown": {"source": "analytic", "dense": [{"op": op, "ms": 0.5}],
                              "pruned": [{"op": op, "ms": 0.25}]},
        "imp": {"rewind": "lr", "rewind_iteration": 1, "dense_iterations": 10,
                "rounds": [{"round": 1, "target_ms": 0.5, "predicted_ms": 0.5, "proxy_accuracy": 0.8,
                            "val_accuracy": 0.85, "widths": {group: 8}, "retrain_epochs": 1.0, "trials": 5,
                            "feasible_trials": 5, "seconds": 1.0}]},
        "profile": {"id": "jetson-nano", "provenance": "analytic", "measured_here": False, "host": "h", "entries": 0,
                    "kernels_measured_this_run": 0, "path": "profiles/jetson-nano.json"},
        "calibration": None, "seconds": {"total_s": 1.0}, "seed": 0,
        "host": {"hostname": "h", "cpu": "c", "arch": "x86_64"},
        "versions": {"hwprune": "0", "torch": "2", "onnxruntime": "1"},
    }


@pytest.mark.parametrize("content,phrase", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError from json
    (json.dumps({**_report(), "budget_ms": float("nan")}), "NaN is not a JSON number"),  # passed the schema
    (json.dumps({**_report(), "speedup": float("inf")}), "Infinity is not a JSON number"),
    (json.dumps(_report()).replace('"budget_ms": 0.5', '"budget_ms": 1e999'), "out of range"),
])
def test_compare_refuses_reports_json_cannot_hold(workspace, content, phrase):
    (workspace / "good.json").write_text(json.dumps(_report("jetson-nano")))
    (workspace / "bad.json").write_text(content)
    result, before = hwprune(workspace, "compare", "good.json", "bad.json", "--out", "cmp")
    assert_refused(workspace, result, before, 11, "bad.json", phrase)
    assert not (workspace / "cmp").exists()


def _unescaped_pipes(line: str) -> int:
    import re
    return len(re.findall(r"(?<!\\)\|", line))


@pytest.mark.slow
def test_compare_shows_names_as_written(workspace):
    """Target, group, kernel names and descriptions with Markdown, HTML and matplotlib math in them: the table
    keeps its columns, the HTML escapes them, the plots do not parse `$…$` (an unknown symbol raised)."""
    nasty = [_report("a_$\\notasymbol$", group="g|1\n<b>x</b>", description="line 1\nline 2 | <script>x</script>",
                     op="Op$\\frac{"),
             _report("_leading-underscore", group="$", description="[/b] *not bold*")]
    for i, r in enumerate(nasty):
        (workspace / f"r{i}.json").write_text(json.dumps(r))
    result, _ = hwprune(workspace, "compare", "r0.json", "r1.json", "--out", "cmp")
    assert result.returncode == 0, result.stderr
    md = (workspace / "cmp" / "comparison.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 4 and len({_unescaped_pipes(line) for line in table}) == 1
    assert "<script>" not in md and "\\<script\\>" in md
    page = (workspace / "cmp" / "comparison.html").read_text()
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_plots_keep_math_characters_and_leading_underscores(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    from hwprune import compare
    reports = [_report("a_$x^2$", group="$y$"), _report("_hidden")]
    for i, r in enumerate(reports):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    comparison = compare.Comparison.load([tmp_path / "r0.json", tmp_path / "r1.json"])
    figures = []
    monkeypatch.setattr(compare, "_save", lambda fig, path: figures.append(fig))
    compare.plot_channels(comparison, tmp_path / "c.png")
    (fig,) = figures
    fig.canvas.draw()
    shown = [t._preprocess_math(t.get_text()) for t in fig.axes[0].get_legend().get_texts()]
    assert shown == [("dense", False), ("a_$x^2$ (step 8)", False), ("_hidden (step 8)", False)]
    ticks = [t._preprocess_math(t.get_text()) for t in fig.axes[0].get_xticklabels()]
    assert ("$y$", False) in ticks
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_report_markdown_escapes_what_it_quotes():
    from hwprune import report
    md = report.to_markdown(_report("x86-cpu", group="a|b\n`c`<i>"))
    kept = [line for line in md.splitlines() if line.startswith("| ") and "%" in line]
    assert len(kept) == 2 and all(_unescaped_pipes(line) == 5 for line in kept)
    assert "| ``a\\|b `c`<i>`` | 16 | 8 | 50% |" in kept  # a code span: `<i>` shown, not a tag


def test_summary_table_shows_markup_literally():
    """Rich reads `[/b]` in a string as markup (and raises on a closing tag nothing opened)."""
    import io

    from rich.console import Console

    from hwprune.cli import _print_summary
    data = _report("[/b]x")
    out = io.StringIO()
    _print_summary(data, Path("out/[/b]"), Console(file=out, width=200))
    assert "[/b]x" in out.getvalue() and "out/[/b]" in out.getvalue()


@pytest.mark.slow
def test_damaged_report_of_an_earlier_finished_target(workspace, fashion_dir):
    """A multi-target run reuses a target an earlier run finished, reading its report.json: edited or damaged
    since, that was a JSONDecodeError traceback."""
    common = ("--config", "hwprune.toml", "--profiles-dir", "profiles", *FAST)
    first, _ = hwprune(workspace, "--target", "jetson-nano", "--out", "out/multi/jetson-nano", *common)
    assert first.returncode in (0, 10), first.stderr
    (workspace / "out" / "multi" / "jetson-nano" / "report.json").write_text("{damaged")
    result, before = hwprune(workspace, "--target", "jetson-nano", "--target", "arm-cortex-a72", "--out", "out/multi",
                             *common)
    hint = assert_refused(workspace, result, before, 9, "jetson-nano/report.json", "earlier, finished run")
    assert "--force" in hint


def test_validate_runs_a_dynamic_batch_model_at_the_targets_batch(workspace):
    """A symbolic first dimension is the batch axis: set to the target's batch (1 for x86-cpu), then run and timed."""
    _onnx_model(workspace / "dynamic.onnx", shape=("N", 4))
    result, _ = hwprune(workspace, "validate", "dynamic.onnx", "--target", "x86-cpu", "--budget-ms", "1000",
                        "--profiles-dir", "profiles", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["batch"] == 1 and found["dynamic_batch"] is True and found["latency_source"] == "measured"
