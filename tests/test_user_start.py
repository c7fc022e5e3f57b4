"""Starting from the user's trained model, scored by the user's metric and trained with the user's loss, on
inputs that are not images: pretrained weights (file or factory), every way a weights file can be wrong,
a regression task with its own loss and metric end to end, and the fully-connected built-in."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import hwprune
from hwprune import objective, paths, weights
from hwprune.config import ImpConfig, ModelSpec, ProjectConfig, SearchConfig, TrainConfig, load_config
from hwprune.errors import ConfigError, ModelError
from hwprune.models.lenet import LeNet300

ROOT = Path(__file__).resolve().parents[1]


def hwprune_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "hwprune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


# --- the weights file ---------------------------------------------------------------------------------------

def test_a_state_dict_loads_exactly(tmp_path):
    torch.manual_seed(1)
    trained = LeNet300()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    fresh = LeNet300()
    weights.load_into(fresh, tmp_path / "w.pt")
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), fresh.state_dict().values()))


def test_checkpoint_wrappers_and_data_parallel_prefixes_are_unwrapped(tmp_path):
    torch.manual_seed(2)
    trained = LeNet300()
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pt")
    fresh = LeNet300()
    weights.load_into(fresh, tmp_path / "ckpt.pt")
    assert torch.equal(fresh.fc2.weight, trained.fc2.weight)


def test_missing_unexpected_and_mis_shaped_keys_are_named(tmp_path):
    state = LeNet300().state_dict()
    state.pop("fc3.bias")
    state["extra.weight"] = torch.zeros(2)
    state["fc1.weight"] = torch.zeros(10, 784)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelError) as caught:
        weights.load_into(LeNet300(), tmp_path / "bad.pt")
    message = caught.value.message
    assert "missing: fc3.bias" in message and "unexpected: extra.weight" in message
    assert "fc1.weight [10, 784] ≠ [300, 784]" in message


def test_a_pickled_module_is_refused_without_running_it(tmp_path):
    torch.save(LeNet300(), tmp_path / "whole.pt")  # the whole module pickled: loading it would run code
    with pytest.raises(ModelError, match="pickled objects") as caught:
        weights.read(tmp_path / "whole.pt")
    assert "state_dict()" in caught.value.hint


@pytest.mark.parametrize("content, message", [
    (b"not a torch file", "cannot load weights"),
    (None, "does not exist"),
])
def test_unreadable_weights_files(tmp_path, content, message):
    path = tmp_path / "w.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ModelError, ConfigError), match=message):
        weights.read(path)


def test_a_file_of_something_else_is_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="holds a list, not a state_dict"):
        weights.read(tmp_path / "list.pt")


# --- config ------------------------------------------------------------------------------------------------

def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hwprune.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_weight_rewinding_without_a_trajectory_is_a_config_error(tmp_path):
    path = _config_file(tmp_path, """
        [model]
        weights = "w.pt"
        [imp]
        rewind = "weights"
    """)
    with pytest.raises(ConfigError, match="without its training trajectory") as caught:
        load_config(path)
    assert "rewind = 'lr'" in caught.value.hint


def test_weights_and_pretrained_together_are_refused(tmp_path):
    path = _config_file(tmp_path, """
        [model]
        weights = "w.pt"
        pretrained = true
    """)
    with pytest.raises(ConfigError, match="set one"):
        load_config(path)


def test_cli_weights_error_is_one_line(tmp_path):
    torch.save([1, 2], tmp_path / "w.pt")
    result = hwprune_cli("--target", "arm-cortex-a72", "--model", "lenet300", "--weights", str(tmp_path / "w.pt"),
                         "--out", str(tmp_path / "out"), "--profiles-dir", str(tmp_path / "p"), "--quiet")
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "not a state_dict" in lines[0] and lines[1].startswith("hint: ")
    assert not (tmp_path / "out" / "report.json").exists()


# --- the user's objective ----------------------------------------------------------------------------------

REGRESSION = '''
"""A regression task on tabular data (2-D inputs): y = a·x + noise, scored by −MSE."""
import torch
from torch import nn
from torch.utils.data import TensorDataset


def data(seed=0):
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(16, 1, generator=gen)
    def split(n):
        x = torch.randn(n, 16, generator=gen)
        return TensorDataset(x, (x @ w).squeeze(1) + 0.05 * torch.randn(n, generator=gen))
    return split(1024), split(256), split(256)


def model():
    return nn.Sequential(nn.Linear(16, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 1),
                         nn.Flatten(0))


def loss(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def neg_mse(model, dataset):
    x, y = map(torch.stack, zip(*[dataset[i] for i in range(len(dataset))]))
    return -float(nn.functional.mse_loss(model(x), y))
'''


def _regression_config(tmp_path: Path) -> ProjectConfig:
    (tmp_path / "regression.py").write_text(REGRESSION)
    path = _config_file(tmp_path, """
        seed = 0
        [model]
        factory = "regression:model"
        input_shape = [1, 16]
        [data]
        factory = "regression:data"
        [train]
        epochs = 3
        retrain_epochs = 1
        batch_size = 32
        lr = 0.02
        loss = "regression:loss"
        [eval]
        metric = "regression:neg_mse"
        [imp]
        rounds = 1
        [search]
        trials = 4
        val_samples = 256
        bn_batches = 2
    """)
    return load_config(path)


def test_a_custom_metric_scores_and_a_custom_loss_trains(tmp_path):
    config = _regression_config(tmp_path)
    goal = objective.load(config)
    assert goal.metric_name == "neg_mse" and goal.loss is not None
    dense = hwprune.train_dense(config, 1, hwprune_null_progress())
    assert dense.data[0][0][0].shape == (16,)  # 2-D inputs: no channels-last anywhere
    untrained_model = hwprune_dense_model(config)
    assert dense.accuracy > goal.score(untrained_model, dense.data[2]) + 0.5  # trained: −MSE rose a lot
    assert dense.accuracy <= 0


def test_a_regression_model_prunes_end_to_end_on_its_own_objective(tmp_path):
    """The user's loss and metric used end to end: dense training, the search's proxy, retraining, every
    accuracy in the report; tabular inputs of rank 2, exported and validated on ONNX Runtime."""
    config = _regression_config(tmp_path)
    arm = (hwprune.paths.BUILTIN_TARGETS / "arm-cortex-a72.toml").read_text()
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "pi-tabular.toml").write_text(  # a tiny MLP is call-overhead bound: 2x is out of reach
        arm.replace('name = "arm-cortex-a72"', 'name = "pi-tabular"').replace("speedup = 2.0", "speedup = 1.2"))
    target = hwprune.load_target("pi-tabular", hwprune.target_dirs(tmp_path / "targets"))
    out = tmp_path / "out"
    result = hwprune.run(config, target, hwprune.RunOptions(out_dir=out, profiles_dir=tmp_path / "profiles"))
    report = hwprune.read_report(paths.RunFolder(out).report_json)
    assert report["metric"] == {"name": "neg_mse", "function": "regression:neg_mse", "loss": "custom"}
    assert report["dense"]["accuracy"] < 0 and report["pruned"]["accuracy"] < 0  # −MSE, not an accuracy in [0, 1]
    assert report["pruned"]["params"] < report["dense"]["params"]
    assert report["numerics"]["max_abs_diff"] <= 1e-4
    assert result.rounds[0].val_accuracy <= 0 and result.rounds[0].proxy_accuracy <= 0
    assert "test neg\\_mse" in (out / "report.md").read_text()  # Markdown-escaped


def test_a_metric_that_returns_nonsense_is_the_users_error(tmp_path):
    (tmp_path / "bad_metric.py").write_text("def metric(model, dataset):\n    return 'high'\n")
    config = ProjectConfig(base_dir=str(tmp_path))
    from hwprune.config import EvalConfig
    config = ProjectConfig(base_dir=str(tmp_path), eval=EvalConfig(metric="bad_metric:metric"))
    goal = objective.load(config)
    with pytest.raises(ModelError, match="returned 'high', not a finite number"):
        goal.score(LeNet300(), torch.utils.data.TensorDataset(torch.zeros(2, 784), torch.zeros(2)))


def test_a_loss_that_is_not_a_scalar_is_the_users_error(tmp_path):
    (tmp_path / "bad_loss.py").write_text("def loss(model, batch):\n    return model(batch[0])\n")
    config = ProjectConfig(base_dir=str(tmp_path), train=TrainConfig(loss="bad_loss:loss"))
    goal = objective.load(config)
    with pytest.raises(ModelError, match="not a scalar tensor"):
        goal.loss(LeNet300(), (torch.zeros(2, 784), torch.zeros(2)))


def test_an_unimportable_metric_names_itself(tmp_path):
    from hwprune.config import EvalConfig
    config = ProjectConfig(base_dir=str(tmp_path), eval=EvalConfig(metric="nowhere:metric"))
    with pytest.raises(ModelError, match=r"\[eval\] metric 'nowhere:metric': cannot import module 'nowhere'"):
        objective.load(config)


# --- pretrained start end to end ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_pretrained_start_skips_dense_training_and_reports_the_file(tmp_path, fashion_dir):
    """Train once, save the state_dict, start a run from it: no dense epochs, the given model's accuracy is
    the baseline, the report names the file and its hash."""
    base = dict(model=ModelSpec(factory="lenet300"), train=TrainConfig(epochs=1, retrain_epochs=0.3),
                imp=ImpConfig(rounds=1), search=SearchConfig(trials=3, val_samples=256, bn_batches=2))
    trained = hwprune.train_dense(ProjectConfig(**base), 1, hwprune_null_progress(), data_limit=2048)
    torch.save(trained.model.state_dict(), tmp_path / "lenet.pt")
    config = ProjectConfig(**{**base, "model": ModelSpec(factory="lenet300", weights="lenet.pt")},
                           base_dir=str(tmp_path))
    target = hwprune.load_target("arm-cortex-a72", hwprune.target_dirs())
    out = tmp_path / "out"
    result = hwprune.run(config, target, hwprune.RunOptions(out_dir=out, profiles_dir=tmp_path / "profiles",
                                                            data_limit=2048))
    report = json.loads(paths.RunFolder(out).report_json.read_text())
    source = report["dense_training"]
    assert source["origin"] == "weights" and source["weights_sha256"] == weights.sha256(tmp_path / "lenet.pt")
    assert source["training_seconds"] == 0 and report["imp"]["dense_iterations"] == 0
    assert report["dense"]["accuracy"] == pytest.approx(trained.accuracy)
    assert result.seconds["dense_training_s"] < 30
    assert "user's trained weights" in (out / "report.md").read_text()


def hwprune_null_progress():
    from hwprune.progress import NullProgress
    return NullProgress()


def hwprune_dense_model(config: ProjectConfig) -> nn.Module:
    from hwprune.dense import build_model
    return build_model(config, 1)[0].eval()


# --- inputs of other ranks, several inputs ------------------------------------------------------------------

TWO_INPUTS = """
seed = 0
[model]
factory = "two_inputs_model:model"
[model.inputs]
ids = { shape = [1, 12], dtype = "int64" }
meta = { shape = [1, 8] }
[data]
factory = "two_inputs_model:data"
[train]
epochs = 3
retrain_epochs = 1
batch_size = 64
[imp]
rounds = 1
[search]
trials = 5
val_samples = 256
bn_batches = 2
"""


def _two_inputs(tmp_path: Path, text: str = TWO_INPUTS) -> Path:
    (tmp_path / "two_inputs_model.py").write_text((Path(__file__).parent / "two_inputs_model.py").read_text())
    return _config_file(tmp_path, text)


@pytest.mark.slow
def test_a_model_with_token_ids_and_features_prunes_exports_and_validates(tmp_path):
    """Two inputs, int64 ids and float features: traced, pruned, exported with both named inputs, measured on
    ONNX Runtime and checked against PyTorch, then re-validated by `hwprune validate`."""
    config = _two_inputs(tmp_path)
    out = tmp_path / "out"
    result = hwprune_cli("--target", "x86-cpu", "--config", str(config), "--out", str(out), "--profiles-dir",
                         str(tmp_path / "profiles"), "--quiet")
    assert result.returncode in (0, 10), result.stderr
    import onnx
    model = onnx.load(str(out / "model.onnx"))
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [
        ("ids", onnx.TensorProto.INT64), ("meta", onnx.TensorProto.FLOAT)]
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"]["latency_source"] == "measured" and report["numerics"]["max_abs_diff"] <= 1e-4
    assert report["pruned"]["macs"] < report["dense"]["macs"]
    again = hwprune_cli("validate", str(out / "model.onnx"), "--target", "x86-cpu", "--profiles-dir",
                        str(tmp_path / "profiles"))
    assert again.returncode in (0, 10) and "runs on CPUExecutionProvider" in again.stdout, again.stderr


@pytest.mark.parametrize("change, message", [
    ('input_shape = [1, 12]\n[model.inputs]', "both describe the inputs"),
    ('[model.inputs]\nids = { shape = [1, 12], dtype = "int7" }\nmeta = { shape = [1, 8] }\n[x]', "dtype 'int7'"),
    ('[model.inputs]\n"bad name" = { shape = [1, 12] }\n[x]', "not a plain name"),
    ('[model.inputs]\nids = { shape = [2, 12], dtype = "int64" }\nmeta = { shape = [1, 8] }\n[x]',
     "different batch sizes"),
    ('[model.inputs]\nids = [1, 12]\n[x]', "must be a table"),
])
def test_bad_input_declarations_are_config_errors(tmp_path, change, message):
    text = TWO_INPUTS.replace("[model.inputs]", change, 1)
    if "[x]" in change:  # the declaration replaces the original one, which is cut out
        head, _, tail = text.partition("[x]")
        text = head + tail[tail.index("[data]"):]
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(_two_inputs(tmp_path, text))


@pytest.mark.parametrize("declared, message", [
    ('input_shape = [1, 12]', "configured with 1 input(s) but the data's samples hold 2"),
    ('[model.inputs]\nids = { shape = [1, 12] }\nmeta = { shape = [1, 8] }',
     "is float32 but the data's samples hold int64"),
    ('[model.inputs]\nids = { shape = [1, 10], dtype = "int64" }\nmeta = { shape = [1, 8] }',
     "input 'ids' [1, 10] does not match the data"),
])
def test_inputs_that_do_not_match_the_data_are_named(tmp_path, declared, message):
    from hwprune import factories
    text = TWO_INPUTS.replace('[model.inputs]\nids = { shape = [1, 12], dtype = "int64" }\nmeta = { shape = [1, 8] }',
                              declared)
    config = load_config(_two_inputs(tmp_path, text))
    data = factories.build_data(config.data, config.base_dir, None, 0)
    with pytest.raises(ConfigError) as caught:
        factories.check_samples(data, config.model.input_specs, factories.describe_data(config.data))
    assert message in caught.value.message


@pytest.mark.slow
def test_the_sequence_example_runs_on_3d_inputs(tmp_path, fashion_dir):
    """examples/sequence: Conv1d over [N, features, steps], prunable and exported like an image network."""
    out = tmp_path / "out"
    result = hwprune_cli("--target", "arm-cortex-a72", "--config", str(ROOT / "examples" / "sequence" / "hwprune.toml"),
                         "--limit", "512", "--out", str(out), "--profiles-dir", str(tmp_path / "profiles"), "--quiet")
    assert result.returncode in (0, 10), result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["numerics"]["max_abs_diff"] <= 1e-4 and report["pruned"]["macs"] < report["dense"]["macs"]
    assert set(report["dense"]["widths"]) >= {"encoder.0", "encoder.3", "encoder.6", "head.0"}


# --- batch and dynamic shapes ------------------------------------------------------------------------------

def test_a_dynamic_batch_export_runs_at_any_batch():
    from hwprune import export
    proto = export.export(LeNet300().eval(), torch.zeros(1, 1, 28, 28), dynamic_batch=True)
    assert export.has_dynamic_batch(proto)
    fixed = export.fixed_batch(proto, 8)
    assert not export.has_dynamic_batch(fixed)
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [8, 1, 28, 28]


@pytest.mark.slow
def test_a_batch_8_target_measures_at_8_and_ships_a_dynamic_batch_model(tmp_path, fashion_dir):
    """The table, the side-by-side timing and the budget at the target's batch (8); model.onnx with a dynamic
    batch axis, checked against PyTorch at batches 1 and 8 and re-validated at 8 and at 1."""
    x86 = (hwprune.paths.BUILTIN_TARGETS / "x86-cpu.toml").read_text()
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "x86-b8.toml").write_text(x86.replace('name = "x86-cpu"', 'name = "x86-b8"')
                                                      .replace("batch = 1", "batch = 8"))
    config = _config_file(tmp_path, """
        seed = 0
        [model]
        factory = "lenet300"
        [train]
        epochs = 1
        retrain_epochs = 0.5
        [imp]
        rounds = 1
        [search]
        trials = 4
        val_samples = 256
        [export]
        dynamic_batch = true
    """)
    out, profiles = tmp_path / "out", tmp_path / "profiles"
    common = ("--targets-dir", str(tmp_path / "targets"), "--profiles-dir", str(profiles))
    result = hwprune_cli("--target", "x86-b8", "--config", str(config), "--limit", "1024", "--out", str(out),
                         "--quiet", *common)
    assert result.returncode in (0, 10), result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["target_settings"]["batch"] == 8 and report["export"] == {"dynamic_batch": True,
                                                                            "latency_batch": 8}
    assert report["numerics"]["batches"] == [1, 8] and report["numerics"]["max_abs_diff"] <= 1e-4
    assert report["pruned"]["latency_source"] == "measured"
    table = json.loads((profiles / "x86-cpu.json").read_text())["entries"]
    assert table and all(json.loads(k)["inputs"][0][1][0] == 8 for k in table), "every kernel is measured at batch 8"
    import onnx
    dims = onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert "latency (batch 8)" in (out / "report.md").read_text()
    for target, batch in (("x86-b8", 8), ("x86-cpu", 1)):
        checked = hwprune_cli("validate", str(out / "model.onnx"), "--target", target, "--budget-ms", "1000",
                              "--json", *common)
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout)["batch"] == batch


# --- where torch trains ------------------------------------------------------------------------------------

def test_training_device_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_then():
    from hwprune import compute
    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA GPU: the refusal is for hosts without one")
    found = compute.resolve(TrainConfig())
    assert found.device.type == "cpu" and found.autocast is None  # auto precision: fp32 on the CPU
    assert compute.resolve(TrainConfig(precision="bf16")).autocast == torch.bfloat16
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        compute.resolve(TrainConfig(device="cuda:1"))
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        compute.resolve(TrainConfig(device="cpu", precision="fp16"))


def test_a_bad_device_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        load_config(_config_file(tmp_path, '[train]\ndevice = "gpu0"\n'))


def test_a_factory_that_returns_trained_weights_is_not_trained_again(tmp_path, fashion_dir):
    """`[model] pretrained = true`: the factory's weights are the dense network, scored, not trained."""
    torch.manual_seed(5)
    given = LeNet300()
    torch.save(given.state_dict(), tmp_path / "given.pt")
    (tmp_path / "trained_factory.py").write_text(
        "import torch\nfrom hwprune.models.lenet import LeNet300\n\n\ndef build():\n    model = LeNet300()\n"
        "    model.load_state_dict(torch.load('given.pt', weights_only=True))\n    return model\n")
    config = ProjectConfig(model=ModelSpec(factory="trained_factory:build", pretrained=True),
                           base_dir=str(tmp_path))
    import os
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        dense = hwprune.train_dense(config, 1, hwprune_null_progress(), data_limit=256)
    finally:
        os.chdir(cwd)
    assert dense.origin == "factory" and dense.iterations == 0 and dense.training_seconds == 0
    assert all(torch.equal(a, b) for a, b in zip(given.state_dict().values(), dense.model.state_dict().values()))
    assert dense.source()["origin"] == "factory"
