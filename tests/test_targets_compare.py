"""Several targets in one run with one dense training (cached across runs), validated reports, `compare`
(Markdown, HTML rendered in a real headless browser, PNGs) and `hwprune validate` on shipped models."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from test_cli import ROOT, TINY, assert_clean_error, hwprune

from hwprune import paths, report

TARGETS = ("x86-cpu", "arm-cortex-a72", "jetson-nano")



@pytest.fixture(scope="module")
def three_targets(tmp_path_factory, fashion_dir):
    """One invocation for three targets, then a second one that must reuse the cached dense training."""
    tmp = tmp_path_factory.mktemp("three")
    (tmp / "hwprune.toml").write_text(TINY)
    common = ["--config", str(tmp / "hwprune.toml"), "--limit", "512", "--profiles-dir", str(tmp / "profiles"),
              "--cache-dir", str(tmp / "cache"), "--quiet", "--json"]
    first = hwprune(*[a for t in TARGETS for a in ("--target", t)], "--out", str(tmp / "out"), "--optimize", *common)
    second = hwprune("--target", "jetson-nano", "--out", str(tmp / "again"), *common)
    return tmp, first, second


@pytest.mark.slow
@pytest.mark.e2e
def test_one_dense_training_serves_every_target_and_later_runs(three_targets):
    tmp, first, second = three_targets
    assert first.returncode in (0, 10), first.stderr
    reports = json.loads(first.stdout)
    assert [r["target"] for r in reports] == list(TARGETS)
    assert len({r["dense_training"]["cache_key"] for r in reports}) == 1
    assert not any(r["dense_training"]["cached"] for r in reports)
    assert len(list((tmp / "cache").glob("dense-*.pt"))) == 1
    # the dense training is counted once, in the timings of the target that trained it
    trained_in = [r["seconds"]["dense_training_s"] for r in reports]
    assert trained_in[0] >= reports[0]["dense_training"]["training_seconds"] > max(trained_in[1:])
    assert second.returncode in (0, 10), second.stderr
    again = json.loads(second.stdout)
    assert again["dense_training"]["cached"]
    assert again["dense_training"]["cache_key"] == reports[0]["dense_training"]["cache_key"]
    assert again["dense"]["accuracy"] == reports[2]["dense"]["accuracy"]
    assert again["dense_training"]["training_seconds"] == reports[0]["dense_training"]["training_seconds"] > 0


@pytest.mark.slow
@pytest.mark.e2e
def test_reports_validate_and_respect_each_devices_channel_step(three_targets):
    tmp, first, _ = three_targets
    steps = {}
    for target in TARGETS:
        data = json.loads((tmp / "out" / target / "report.json").read_text())
        assert report.problems(data) == []
        assert report.read(tmp / "out" / target / "report.json") == data
        step = steps[target] = data["target_settings"]["channel_multiple"]
        dense = data["dense"]["widths"]
        assert all(w == dense[g] or w % step == 0 or w == step // 2 for g, w in data["pruned"]["widths"].items())
        assert data["optimized_onnx"]["graph_optimization"] == ("all" if target == "x86-cpu" else "basic")
        onnx.checker.check_model(onnx.load(tmp / "out" / target / "model.optimized.onnx"))
    assert steps == {"x86-cpu": 16, "arm-cortex-a72": 4, "jetson-nano": 8}


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_writes_markdown_html_and_pngs(three_targets, tmp_path):
    tmp, _, _ = three_targets
    reports = [str(tmp / "out" / t / "report.json") for t in TARGETS]
    result = hwprune("compare", *reports, "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    for target in TARGETS:
        assert f"| {target} |" in md
    assert "analytic" in md and "measured on" in md
    pngs = sorted(p.name for p in (tmp_path / "cmp").glob("*.png"))
    assert pngs == ["comparison-accuracy_latency.png", "comparison-channels.png", "comparison-latency_breakdown.png"]
    assert all((tmp_path / "cmp" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "src=\"http" not in page
    # nothing is replaced without --force
    again = hwprune("compare", *reports, "--out", str(tmp_path / "cmp"))
    assert_clean_error(again, 9, "already exists")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.browser
def test_comparison_page_renders_in_a_headless_browser(three_targets, tmp_path):
    browser = _chromium()
    assert browser, "chromium is missing: apt-get install -y chromium (scripts/setup.sh installs it)"
    tmp, _, _ = three_targets
    assert hwprune("compare", *[str(tmp / "out" / t / "report.json") for t in TARGETS],
                   "--out", str(tmp_path)).returncode == 0
    page = (tmp_path / "comparison.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", page], capture_output=True,
                         text=True, timeout=120)
    assert 'data-images-loaded="3"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "screenshot.png"
    subprocess.run([browser, *flags, "--window-size=1280,2400", f"--screenshot={shot}", page], capture_output=True,
                   timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    keep = os.environ.get("HWPRUNE_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "comparison-screenshot.png")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable JSON file"),
    ('{"some": "other tool"}', "not an hwprune report"),
    ('{"tool": "hwprune", "schema": 1}', "report schema 1"),
])
@pytest.mark.slow
@pytest.mark.e2e
def test_compare_refuses_corrupt_foreign_and_old_reports(three_targets, tmp_path, content, message):
    tmp, _, _ = three_targets
    bad = tmp_path / "report.json"
    bad.write_text(content)
    result = hwprune("compare", str(tmp / "out" / "x86-cpu" / "report.json"), str(bad), "--out", str(tmp_path / "c"))
    assert_clean_error(result, 11, message)
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_refuses_a_report_that_breaks_the_schema(three_targets, tmp_path):
    tmp, _, _ = three_targets
    data = json.loads((tmp / "out" / "x86-cpu" / "report.json").read_text())
    data["pruned"]["latency_source"] = "guessed"
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps(data))
    result = hwprune("compare", str(bad), "--out", str(tmp_path / "c"))
    assert_clean_error(result, 11, "pruned/latency_source")


@pytest.mark.slow
@pytest.mark.e2e
def test_validate_rechecks_shipped_models(three_targets, tmp_path):
    tmp, _, _ = three_targets
    x86 = hwprune("validate", str(tmp / "out" / "x86-cpu" / "model.onnx"), "--target", "x86-cpu", "--json",
                  "--profiles-dir", str(tmp / "profiles"))
    assert x86.returncode in (0, 10), x86.stderr
    result = json.loads(x86.stdout)
    assert result["latency_source"] == "measured" and result["built_for"] == "x86-cpu"
    assert result["budget_met"] == (x86.returncode == 0) and "dense latency recorded" in result["budget"]
    nano = hwprune("validate", str(tmp / "out" / "jetson-nano" / "model.onnx"), "--target", "jetson-nano",
                   "--profiles-dir", str(tmp / "profiles"))
    assert nano.returncode in (0, 10), nano.stderr
    assert "predicted from profile 'jetson-nano' (analytic)" in nano.stdout
    # an absolute budget no model can meet: exit 10, one line
    tight = tmp_path / "tight.toml"
    tight.write_text((paths.BUILTIN_TARGETS / "x86-cpu.toml").read_text().replace("budget = { speedup = 2.0 }",
                                                                              "budget = { ms = 0.0001 }"))
    missed = hwprune("validate", str(tmp / "out" / "x86-cpu" / "model.onnx"), "--target", str(tight),
                     "--profiles-dir", str(tmp / "profiles"))
    assert missed.returncode == 10 and "exceeds the budget" in missed.stderr and "Traceback" not in missed.stderr
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"not onnx at all")
    assert_clean_error(hwprune("validate", str(corrupt), "--target", "x86-cpu"), 8, "not a readable ONNX model")


def test_ci_example_names_real_targets_and_options():
    import re

    from hwprune.cli import build_parser
    workflow = (ROOT / "examples" / "ci" / "hwprune.yml").read_text()
    matrix = re.search(r"target: \[([^\]]+)\]", workflow).group(1)
    assert [t.strip() for t in matrix.split(",")] == list(TARGETS)
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    run_options = {o for a in commands["run"]._actions for o in a.option_strings}
    used = set(re.findall(r"(--[a-z-]+)", workflow.split("Prune for")[1].split("- name")[0]))
    assert used <= run_options
    assert {"--out"} <= {o for a in commands["compare"]._actions for o in a.option_strings}
    assert (ROOT / "examples" / "mobile" / "hwprune.toml").exists()
