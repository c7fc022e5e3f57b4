"""Facts decided in one place: whether this host is the target's device, the budget, the runtime settings, and
a run that finishes its own folder when a library calls it."""

import dataclasses
import json
import platform

import onnx
import pytest
import torch

import hwprune
from hwprune import atomic, export, onnxgraph, paths, profiles, runtime, validate
from hwprune.config import ImpConfig, ProjectConfig, SearchConfig, TrainConfig
from hwprune.targets import Budget, load_target, target_dirs


def _x86(**changes):
    return dataclasses.replace(load_target("x86-cpu", target_dirs()), **changes)


def test_device_is_decided_by_arch_providers_and_the_profiles_host():
    assert profiles.device_mismatches("", ("CPUExecutionProvider",), None) == []
    assert profiles.device_mismatches(platform.machine(), ("CPUExecutionProvider",), None) == []
    other_arch = "riscv64" if platform.machine() != "riscv64" else "aarch64"
    assert "arch" in profiles.device_mismatches(other_arch, ("CPUExecutionProvider",), None)[0]
    assert "not available" in profiles.device_mismatches("", ("NoSuchExecutionProvider",), None)[0]
    analytic = profiles.DeviceProfile.load(paths.builtin_profile("arm-cortex-a72"))
    assert "analytic" in " ".join(profiles.device_mismatches("", ("CPUExecutionProvider",), analytic))
    assert not analytic.measured_here


def _measured_profile(tmp_path, proto: onnx.ModelProto) -> profiles.DeviceProfile:
    """A profile measured on this host holding every kernel of `proto`."""
    settings = _x86().runtime_settings()
    profile = profiles.open_profile("x86-cpu", settings, tmp_path, _x86().arch)
    kernels = onnxgraph.runtime_kernels(*runtime.optimized_graph(proto, settings))
    profiles.measure_missing(profile, kernels, runtime.KERNEL_PROTOCOL)
    return profile


@pytest.mark.timing
def test_validate_and_run_agree_when_the_profile_is_from_another_cpu(tmp_path, cnn, example):
    """A profile measured on another x86 CPU: the run predicts (profile.measured_here is False), and so does
    `hwprune validate` now (it used to measure because the architecture matched)."""
    proto = export.export(cnn, example)
    model_file = tmp_path / "model.onnx"
    atomic.write_bytes(model_file, proto.SerializeToString())
    profile = _measured_profile(tmp_path, proto)
    assert profile.measured_here
    here = validate.check(model_file, _x86(budget=Budget(ms=100.0)), tmp_path)
    assert here.latency_source == "measured"

    data = json.loads(profile.path.read_text())
    data["device"]["cpu"] = "Another x86-64 CPU with the same ISA"
    profile.path.write_text(json.dumps(data))
    moved = profiles.DeviceProfile.load(profile.path)
    assert not moved.measured_here and not profiles.host_is_device(_x86(), moved)
    elsewhere = validate.check(model_file, _x86(budget=Budget(ms=100.0)), tmp_path)
    assert elsewhere.latency_source == "predicted" and "x86-cpu" in elsewhere.how


def test_a_budget_is_resolved_once_with_what_it_rests_on():
    absolute = Budget(ms=0.5).resolve(None)
    assert absolute.ms == 0.5 and absolute.dense_ms is None and absolute.met_by(0.5) and not absolute.met_by(0.51)
    relative = Budget(speedup=2.0).resolve(0.8, "measured on this host")
    assert relative.ms == 0.4 and relative.dense_ms == 0.8 and "measured on this host" in relative.describe()
    with pytest.raises(ValueError):
        Budget(speedup=2.0).resolve(None)


def test_the_target_hands_out_its_runtime_settings():
    t = _x86()
    assert t.runtime_settings() == hwprune.RuntimeSettings(t.providers, t.intra_op_threads, t.graph_optimization)


@pytest.mark.slow
def test_a_library_run_finishes_its_folder_and_lets_it_go(tmp_path, fashion_dir):
    """`hwprune.run()` without the CLI: model.onnx, report.json, report.md written, the state finished, and the
    folder's lock released, so the same process (or another) can use the folder again at once."""
    config = ProjectConfig(train=TrainConfig(epochs=1, retrain_epochs=0.2), imp=ImpConfig(rounds=1),
                           search=SearchConfig(trials=3, val_samples=128))
    target = hwprune.load_target("arm-cortex-a72", hwprune.target_dirs())
    out = tmp_path / "out"
    options = hwprune.RunOptions(out_dir=out, profiles_dir=tmp_path / "profiles", data_limit=384)
    torch.manual_seed(0)
    result = hwprune.run(config, target, options)
    folder = paths.RunFolder(out)
    report = hwprune.read_report(folder.report_json)
    assert folder.model_onnx.exists() and folder.report_md.exists()
    assert report["budget_ms"] == result.budget.ms and report["budget_met"] == result.budget_met
    assert report["pruned"]["widths"] == result.pruned.widths
    meta = {p.key: p.value for p in onnx.load(str(folder.model_onnx)).metadata_props}
    assert float(meta["hwprune.budget_ms"]) == pytest.approx(result.budget.ms, rel=1e-5)
    assert "finished" in json.loads((folder.state_dir / paths.RUN_RECORD).read_text())["stages"]
    lock = atomic.FileLock(folder.state_dir / paths.STATE_LOCK)
    assert lock.acquire(wait=False)
    lock.release()
