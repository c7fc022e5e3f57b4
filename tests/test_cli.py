"""The command line as a user meets it: help, targets, end-to-end runs (bad input: test_bad_input.py)."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = """
seed = 0
[train]
epochs = 1
retrain_epochs = 1
batch_size = 64
[imp]
rounds = 1
extra_rounds = 1
[search]
trials = 5
val_samples = 256
bn_batches = 2
"""


def hwprune(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "hwprune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def assert_clean_error(result, code, message):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: "))


def test_help_is_fast_and_lists_exit_codes():
    result = hwprune("--help")
    assert result.returncode == 0 and "exit codes" in result.stdout and "BudgetNotMetError" in result.stdout


def test_targets_lists_x86():
    result = hwprune("targets")
    assert result.returncode == 0 and "x86-cpu" in result.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_end_to_end_on_a_tiny_subset_with_the_live_display(tmp_path, fashion_dir):
    """The path the README's command takes: Rich's live display in a terminal (80 columns), transient stages
    (alignment sweep, table measurement) before lasting ones (calibration, training, search), two targets,
    and the analytic target's warning logged while bars are live."""
    from test_live_display import in_terminal
    config = tmp_path / "hwprune.toml"
    config.write_text(TINY)
    code, text = in_terminal(["--target", "x86-cpu", "--target", "arm-cortex-a72", "--config", str(config),
                              "--limit", "768", "--out", str(tmp_path), "--profiles-dir", str(tmp_path / "profiles")],
                             columns=80)
    assert code in (0, 10), text
    assert "Traceback" not in text and "error:" not in text, text
    for phrase in ("dense training", "calibrating latency model", "round 1", "analytic profile",
                   "2 of 2 targets done", "speedup"):
        assert phrase in text, (phrase, text)
    out = tmp_path / "x86-cpu"
    arm = json.loads((tmp_path / "arm-cortex-a72" / "report.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert arm["pruned"]["latency_source"] == "predicted"
    assert code == (0 if report["budget_met"] and arm["budget_met"] else 10)
    for key in ("schema", "target", "budget_ms", "budget_met", "onnx", "host", "versions"):
        assert key in report
    for model in ("dense", "pruned"):
        for key in ("accuracy", "latency_ms", "latency_source", "macs", "params"):
            assert key in report[model]
    assert report["pruned"]["latency_source"] == "measured"
    assert report["budget_met"] == (report["pruned"]["latency_ms"] <= report["budget_ms"])
    assert report["pruned"]["macs"] < report["dense"]["macs"]
    assert all(report["pruned"]["widths"][g] <= w for g, w in report["dense"]["widths"].items())
    assert report["numerics"]["max_abs_diff"] <= 1e-4
    model = onnx.load(out / report["onnx"])
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["hwprune.target"] == "x86-cpu" and float(meta["hwprune.budget_ms"]) == pytest.approx(
        report["budget_ms"], rel=1e-5)
    assert (out / "report.md").read_text().startswith("# hwprune report: x86-cpu")
    assert (tmp_path / "profiles" / "x86-cpu.json").exists()
    # a second run into the same folder without --force is refused and changes nothing
    before = (out / "report.json").read_bytes()
    again = hwprune("--target", "x86-cpu", "--config", str(config), "--out", str(out))
    assert again.returncode == 9 and (out / "report.json").read_bytes() == before


@pytest.mark.slow
def test_analytic_target_warns_and_reports_predictions_only(tmp_path, fashion_dir):
    config = tmp_path / "hwprune.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    result = hwprune("--target", "jetson-nano", "--config", str(config), "--limit", "512", "--out", str(out),
                     "--profiles-dir", str(tmp_path / "profiles"), "--quiet")
    assert result.returncode in (0, 10), result.stderr
    assert "analytic profile" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["profile"]["provenance"] == "analytic"
    assert report["dense"]["latency_source"] == report["pruned"]["latency_source"] == "predicted"
    assert report["target_settings"]["channel_multiple"] == 8
    dense = report["dense"]["widths"]
    assert all(w == dense[g] or w % (8 if w >= 8 else 4) == 0 for g, w in report["pruned"]["widths"].items())
    assert "Analytic profile" in (out / "report.md").read_text()
    assert report["numerics"]["providers"] == ["CPUExecutionProvider"]
