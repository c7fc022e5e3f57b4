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
    (tmp_path / "profiles" / "jetson-nano.json").write_bytes((ROOT / "profiles" / "jetson-nano.json").read_bytes())
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
    text = (ROOT / "targets" / "x86-cpu.toml").read_text()
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


def test_infeasible_budget_says_the_smallest_reachable_latency_and_the_limit(workspace, fashion_dir):
    text = (ROOT / "targets" / "jetson-nano.toml").read_text()
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


def test_layers_the_engine_cannot_prune_are_named_and_the_rest_is_pruned(workspace, fashion_dir):
    (workspace / "user_model.py").write_text(SCALED_MODEL)
    (workspace / "model.toml").write_text(TINY + '[model]\nfactory = "user_model:build"\n')
    text = (ROOT / "targets" / "jetson-nano.toml").read_text()  # the whole conv it keeps caps the speedup
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
