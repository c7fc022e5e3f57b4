"""Device profiles: analytic roofline, alignment, schema and provenance checks, and `hwprune profile`."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hwprune import analytic, export, measure, paths, profiles
from hwprune.errors import ProfileError
from hwprune.latency import LatencyPredictor, build_template
from hwprune.prune import graph
from hwprune.runtime import KERNEL_PROTOCOL, RuntimeSettings

ROOT = Path(__file__).resolve().parents[1]
CPU = RuntimeSettings(("CPUExecutionProvider",), 1, "all")


def hwprune(*args):
    return subprocess.run([sys.executable, "-m", "hwprune", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def template(cnn, example):
    dense = {g.name: g.width for g in graph.channel_groups(cnn, example)}
    return build_template(cnn, example, export.export(cnn, example), dense, ()), dense


@pytest.mark.parametrize("name", ["arm-cortex-a72", "jetson-nano"])
def test_shipped_analytic_profiles_predict_with_their_alignment(template, name):
    template, dense = template
    settings = RuntimeSettings(tuple(json.loads((paths.BUILTIN_PROFILES / f"{name}.json").read_text())["runtime"]
                                     ["providers"]), 1, "all")
    profile = profiles.DeviceProfile.load(paths.BUILTIN_PROFILES / f"{name}.json")
    assert profile.kind == "analytic" and not profile.measured_here
    assert all(profile.analytic.sources.get(f) for f in ("peak_gflops", "memory_gbps", "channel_multiple"))
    oracle = LatencyPredictor(template, profiles.open_profile(name, settings, paths.BUILTIN_PROFILES, "aarch64"),
                           KERNEL_PROTOCOL)
    m = profile.preferred_channel_multiple
    full = oracle(dense)
    half = oracle({g: max(m, w // 2) for g, w in dense.items()})
    assert 0 < half < full
    aligned = {g: m * max(2, (w // 2) // m) for g, w in dense.items()}
    inside = {g: w - m + 1 for g, w in aligned.items()}  # same padded block: flat (only the linear layer differs)
    below = {g: w - m for g, w in aligned.items()}  # one block less: a step down
    assert oracle(inside) == pytest.approx(oracle(aligned), rel=0.005)
    assert oracle(below) < oracle(inside) * 0.97


def test_analytic_profile_needs_citations(tmp_path):
    data = json.loads((paths.BUILTIN_PROFILES / "jetson-nano.json").read_text())
    del data["analytic"]["sources"]["memory_gbps"]
    with pytest.raises(ProfileError, match="analytic.*cite 'memory_gbps'"):
        profiles.DeviceProfile.from_json(data, tmp_path / "p.json")


def test_roofline_is_compute_or_memory_bound(template):
    template, dense = template
    spec = analytic.AnalyticSpec(10.0, 10.0, 1, 0.0, 0.0, sources={})
    for kernel in template.kernels(dense):
        flops, moved = analytic.kernel_cost(kernel, spec)
        assert analytic.kernel_ms(kernel, spec) == pytest.approx(max(flops, moved) / 1e10 * 1e3)


def test_preferred_channel_multiple_reads_the_step_structure():
    channels = list(range(8, 65))
    stepped = [float(-(-c // 16)) for c in channels]  # flat within blocks of 16
    linear = [float(c) for c in channels]
    assert measure.preferred_channel_multiple(channels, stepped) == 16
    assert measure.preferred_channel_multiple(channels, linear) == 1


def _measured_profile(tmp_path) -> dict:
    profile = profiles.open_profile("host", CPU, tmp_path, "")
    profile.save()
    return json.loads(profile.path.read_text())


@pytest.mark.parametrize("field,value,match", [("device", {"arch": "aarch64", "isa": ["asimd"]}, "arch"),
                                                ("runtime", {"onnxruntime": "1.17.0"}, "onnxruntime")])
def test_profile_whose_runtime_builds_other_graphs_is_refused(tmp_path, field, value, match):
    data = _measured_profile(tmp_path)
    data[field].update(value)
    (tmp_path / "host.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=f"builds other graphs.*{match}"):
        profiles.open_profile("host", CPU, tmp_path, "")


def test_profile_from_another_cpu_of_the_same_isa_warns_and_predicts(tmp_path, caplog):
    data = _measured_profile(tmp_path)
    data["device"]["cpu"] = "Some Other CPU"
    (tmp_path / "host.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        profile = profiles.open_profile("host", CPU, tmp_path, "")
    assert not profile.measured_here and "predicted, not measured" in caplog.text


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(schema=1), "schema 1 is not supported"),
    (lambda d: d["provenance"].update(kind="guessed"), "provenance.kind"),
    (lambda d: d.pop("runtime"), "missing field 'runtime'"),
])
def test_bad_profiles_are_refused_naming_file_and_field(tmp_path, mutate, match):
    data = _measured_profile(tmp_path)
    mutate(data)
    (tmp_path / "host.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=match) as info:
        profiles.open_profile("host", CPU, tmp_path, "")
    assert str(tmp_path / "host.json") in str(info.value)


def test_cli_refuses_a_profile_of_an_older_schema_and_keeps_it(tmp_path):
    data = _measured_profile(tmp_path)
    data["schema"] = 1
    path = tmp_path / "x86-cpu.json"
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    result = hwprune("profile", "--target", "x86-cpu", "--profiles-dir", str(tmp_path), "--quiet")
    assert result.returncode == 5, result.stderr
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith(f"error: {path}: profile schema 1 is not supported") and rest[0].startswith("hint: ")
    assert path.read_bytes() == before


def test_cli_refuses_to_measure_a_device_this_host_is_not():
    result = hwprune("profile", "--target", "arm-cortex-a72", "--quiet")
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("error: this host cannot measure the target 'arm-cortex-a72'")
    assert "'aarch64' vs this host's" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_profile_measures_the_search_space(tmp_path):
    result = hwprune("profile", "--target", "x86-cpu", "--model", "example-cnn", "--networks", "2",
                     "--profiles-dir", str(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "x86-cpu.json").read_text())
    assert data["schema"] == profiles.PROFILE_SCHEMA and data["provenance"]["kind"] == "measured"
    assert data["alignment"]["preferred_channel_multiple"] in (1, 4, 8, 16, 32)
    assert len(data["entries"]) > 10 and len(data["calibration"]) == 1
    assert "kernels" in result.stdout and "preferred channel multiple" in result.stdout


@pytest.mark.slow
def test_profiling_on_the_device_replaces_its_analytic_profile(tmp_path):
    """As on a Raspberry Pi: the target's device is this host, its profile still the shipped analytic one."""
    import platform
    target = tmp_path / "this-device.toml"
    target.write_text((paths.BUILTIN_TARGETS / "x86-cpu.toml").read_text()
                      .replace('arch = "x86_64"', f'arch = "{platform.machine()}"')
                      .replace('profile = "x86-cpu"', 'profile = "this-device"'))
    analytic_profile = json.loads((paths.BUILTIN_PROFILES / "arm-cortex-a72.json").read_text())
    analytic_profile.update(id="this-device")
    analytic_profile["runtime"]["providers"] = ["CPUExecutionProvider"]
    (tmp_path / "this-device.json").write_text(json.dumps(analytic_profile))
    result = hwprune("profile", "--target", str(target), "--networks", "0", "--profiles-dir", str(tmp_path),
                     "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "this-device.json").read_text())["provenance"]["kind"] == "measured"
    assert json.loads((tmp_path / "this-device.analytic.json").read_text()) == analytic_profile
    assert "replaces was moved" in result.stdout


@pytest.mark.slow
def test_profiling_on_the_device_measures_over_the_builtin_analytic_profile(tmp_path):
    """On the device, with only the built-in analytic profile (package data), `hwprune profile` measures a
    new profile into the profiles folder and leaves the package's file alone."""
    import platform
    builtin = paths.BUILTIN_PROFILES / "arm-cortex-a72.json"
    before = builtin.read_bytes()
    target = tmp_path / "pi.toml"
    target.write_text((paths.BUILTIN_TARGETS / "x86-cpu.toml").read_text()
                      .replace('arch = "x86_64"', f'arch = "{platform.machine()}"')
                      .replace('profile = "x86-cpu"', 'profile = "arm-cortex-a72"'))
    result = hwprune("profile", "--target", str(target), "--networks", "0", "--profiles-dir", str(tmp_path / "p"),
                     "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "p" / "arm-cortex-a72.json").read_text())["provenance"]["kind"] == "measured"
    assert builtin.read_bytes() == before and "replaces" not in result.stdout
