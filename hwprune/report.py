"""RunResult → report.json (versioned JSON Schema in hwprune/schemas/) and report.md.

Every latency says whether it is measured. Reports are validated against the schema when written (a
failure there is a bug) and when read back (`compare`), where a corrupt, foreign or other-version report
is refused with a ReportError naming the file and the first problem.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from hwprune import atomic, paths
from hwprune.errors import ReportError
from hwprune.records import ModelSummary, RunResult

REPORT_SCHEMA = 2
SCHEMA_FILE = paths.report_schema(REPORT_SCHEMA)


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def problems(report: Any) -> list[str]:
    """Schema violations, each as 'where: what' (empty when the report is valid)."""
    validator = jsonschema.Draft202012Validator(schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
            for e in sorted(validator.iter_errors(report), key=lambda e: list(map(str, e.absolute_path)))]


def _finite_only(constant: str) -> float:
    """json.loads hook: Python's json reads NaN and Infinity, which JSON (and hwprune's reports) never hold."""
    raise ValueError(f"{constant} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e999
        raise ValueError(f"{text} is out of range for a number")
    return value


def md_text(value: Any) -> str:
    """`value` as literal Markdown text on one line: a table cell or a heading cannot be broken or re-styled by
    a `|`, a newline, `<tag>` or `*emphasis*` inside a name or description."""
    text = " ".join(str(value).split())  # newlines, tabs and other line breaks become one space
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)


def md_code(value: Any) -> str:
    """`value` as an inline code span on one line (safe inside a table cell)."""
    text = " ".join(str(value).split())
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_MD_SPECIAL = set("\\`*_[]<>|~&$")  # inline specials; a value never starts a line (no #, -, +)


def read(path: Path) -> dict[str, Any]:
    """A report.json, validated; ReportError (one line, with the file) for anything else."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_finite_only,
                          parse_float=_finite_float)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such report", hint="give the report.json files hwprune wrote") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a readable JSON file ({exc})", hint="the file is corrupt; re-run hwprune "
                          "for that target") from None
    except RecursionError:  # json (and the schema check) recurse per nesting level
        raise ReportError(f"{path}: not a readable JSON file (nested too deeply)",
                          hint="the file is corrupt; re-run hwprune for that target") from None
    except ValueError as exc:  # _finite_only: NaN, Infinity or a number too large for a float
        raise ReportError(f"{path}: invalid report ({exc})",
                          hint="the file was edited or truncated; re-run hwprune for that target") from None
    if not isinstance(data, dict) or data.get("tool") != "hwprune":
        raise ReportError(f"{path}: not an hwprune report", hint="give the report.json files hwprune wrote")
    if data.get("schema") != REPORT_SCHEMA:
        raise ReportError(f"{path}: report schema {data.get('schema')!r}, this hwprune reads schema {REPORT_SCHEMA}",
                          hint="re-run the target with this hwprune version")
    try:
        found = problems(data)
    except RecursionError:
        raise ReportError(f"{path}: invalid report (nested too deeply)",
                          hint="the file was edited or truncated; re-run hwprune for that target") from None
    if found:
        raise ReportError(f"{path}: invalid report ({found[0]}" + (f"; {len(found) - 1} more" if len(found) > 1
                                                                    else "") + ")",
                          hint="the file was edited or truncated; re-run hwprune for that target")
    return data


def _model(summary: ModelSummary) -> dict[str, Any]:
    return {
        "accuracy": summary.accuracy,
        "latency_ms": summary.latency_ms,
        "latency_p90_ms": summary.latency_p90_ms,
        "latency_source": summary.latency_source,
        "predicted_latency_ms": summary.predicted_latency_ms,
        "macs": summary.macs,
        "params": summary.params,
        "widths": summary.widths,
        "timing": summary.timing,
    }


def to_json(result: RunResult) -> dict[str, Any]:
    t = result.target
    return {
        "tool": "hwprune",
        "schema": REPORT_SCHEMA,
        "target": t.name,
        "model": result.model_name,
        "target_settings": {"description": t.description, "providers": list(t.providers),
                            "intra_op_threads": t.intra_op_threads, "batch": t.batch,
                            "precision": t.precision, "graph_optimization": t.graph_optimization,
                            "channel_multiple": result.channel_multiple, "budget": t.budget.describe(),
                            "file": t.source},
        "budget_ms": result.budget.ms,
        "budget_met": result.budget_met,
        "speedup": result.speedup,
        "dense": _model(result.dense),
        "pruned": {**_model(result.pruned), "kept_channels": result.kept},
        "onnx": result.onnx_path.name,
        "optimized_onnx": result.optimized_onnx,
        "numerics": result.numerics,
        "dense_training": result.dense_source,
        "metric": result.metric,
        "export": {"dynamic_batch": result.dynamic_batch, "latency_batch": t.batch},
        **({"training": result.training} if result.training else {}),
        "latency_breakdown": result.breakdown,
        "imp": {"rewind": result.rewind, "rewind_iteration": result.rewind_iteration,
                "dense_iterations": result.dense_iterations,
                "rounds": [asdict(r) for r in result.rounds]},
        "profile": result.profile,
        "calibration": result.calibration,
        "seconds": result.seconds,
        "seed": result.seed,
        "host": result.host,
        "versions": result.versions,
    }



def _state_words(state: dict[str, list[float]]) -> str:
    """Temperature and clock ranges in words (a Pi throttles when hot, a Jetson's governor moves clocks)."""
    parts = []
    if "temperature_c" in state:
        parts.append("temperature {:.0f}-{:.0f} °C".format(*state["temperature_c"]))
    if "cpu_mhz" in state:
        parts.append("CPU clock {:.0f}-{:.0f} MHz".format(*state["cpu_mhz"]))
    return ", ".join(parts)


def _measured_where(report: dict[str, Any]) -> str:
    """Where `measured` latencies were timed, in words: the device behind the run's agent(s), or the host."""
    prof, host = report["profile"], report["host"]
    if prof.get("agents"):
        device = prof.get("device") or {}
        what = ", ".join(md_text(str(device[k])) for k in ("board", "gpu", "onnxruntime") if device.get(k))
        return (f"on the device through agent {md_code(', '.join(prof['agents']))} ({what}; ONNX Runtime there), "
                f"trained and searched on host {md_code(host['hostname'])}")
    return (f"ONNX Runtime {md_text(report['versions']['onnxruntime'])} on host {md_code(host['hostname'])} "
            f"({md_text(host['cpu'])})")


def to_markdown(report: dict[str, Any]) -> str:
    d, p = report["dense"], report["pruned"]

    def lat(m: dict[str, Any]) -> str:
        p90 = f" (p90 {m['latency_p90_ms']:.4f})" if m.get("latency_p90_ms") else ""
        return f"{m['latency_ms']:.4f} ms{p90}, {m['latency_source']}"

    def close_call(m: dict[str, Any]) -> str:
        t = m.get("timing")
        if t and abs(m["latency_ms"] - report["budget_ms"]) <= t["spread"] * m["latency_ms"]:
            return f" (within the measurement's spread of {t['spread']:.1%} from the budget: a close call)"
        return ""

    def certainty(m: dict[str, Any]) -> str:
        t = m.get("timing")
        if not t:
            return "—"
        return (f"spread {t['spread']:.1%}, {t['samples']} calls, {t['attempts']} attempt(s), "
                f"{t['quiet_share']:.0%} taken in quiet phases, host {t['host_slowdown']:.2f}× its quietest")

    lines = [
        f"# hwprune report: {md_text(report['target'])}",
        "",
        f"Budget **{report['budget_ms']:.4f} ms** ({md_text(report['target_settings']['budget'])}): "
        f"**{'met' if report['budget_met'] else 'NOT met'}** — pruned latency {lat(p)}, "
        f"speedup {report['speedup']:.2f}×{close_call(p)}.",
        "",
        "| | dense | pruned |",
        "|---|---|---|",
        f"| test {md_text(_metric(report))} | {d['accuracy']:.4f} | {p['accuracy']:.4f} |",
        f"| latency (batch {report['target_settings']['batch']}) | {lat(d)} | {lat(p)} |",
        f"| predicted latency | {d['predicted_latency_ms']:.4f} ms | {p['predicted_latency_ms']:.4f} ms |",
        f"| measurement | {certainty(d)} | {certainty(p)} |",
        f"| MACs | {d['macs']:,} | {p['macs']:,} |",
        f"| parameters | {d['params']:,} | {p['params']:,} |",
        "",
        "## Kept channels per group",
        "",
        "| group | dense | kept | prune rate |",
        "|---|---|---|---|",
    ]
    for group, width in d["widths"].items():
        kept = p["widths"][group]
        lines.append(f"| {md_code(group)} | {width} | {kept} | {1 - kept / width if width else 0:.0%} |")
    lines += ["", "## IMP rounds", "", f"| round | target (predicted) | predicted | proxy {md_text(_metric(report))} "
              f"| val {md_text(_metric(report))} after retrain | "
              "trials (feasible) | seconds |", "|---|---|---|---|---|---|---|"]
    for r in report["imp"]["rounds"]:
        lines.append(f"| {r['round']} | {r['target_ms']:.4f} ms | {r['predicted_ms']:.4f} ms "
                     f"| {r['proxy_accuracy']:.4f} "
                     f"| {r['val_accuracy']:.4f} | {r['trials']} ({r['feasible_trials']}) | {r['seconds']:.0f} |")
    prof = report["profile"]
    lines += [
        "",
        "## Provenance",
        "",
        f"- Latency `measured` = {_measured_where(report)}, "
        f"{md_text('/'.join(report['target_settings']['providers']))}, "
        f"{report['target_settings']['intra_op_threads']} thread(s), "
        "single calls timed after warm-up in interleaved blocks; the latency is the median of the fastest fifth "
        "of the calls of the quietest blocks (the host's quiet state: bursts of other load only ever slow a call "
        "down), p90 of all their calls.",
        f"- Latency `predicted` = profile {md_code(prof['id'])} ({prof['provenance']} on {md_code(prof['host'])}, "
        f"{prof['entries']} kernels; {prof['kernels_measured_this_run']} measured in this run)"
        + (f", calibrated on {report['calibration']['networks']} networks" if report.get("calibration") else "") + ".",
        *([f"- Host state while measuring: {prof['host_slow_share']:.0%} of the sentinel's readings found a slow "
           "phase (measurements taken then were taken again)."] if prof.get("host_slow_share") is not None else []),
        *([f"- Device state while measuring: {_state_words(prof['device_state'])}."] if prof.get("device_state")
          else []),
        *([f"- Channel multiple {report['target_settings']['channel_multiple']}: rounding widths up to each multiple "
           "costs " + ", ".join(f"{m}: {c:+.1%}" for m, c in prof["alignment_rounding_cost"].items())
           + " (alignment sweep; the largest within +5% is preferred)."] if prof.get("alignment_rounding_cost")
          else []),
        *([f"- **Analytic profile**: no latency in this report was measured on the device; every figure is a "
            f"roofline prediction from published specs (cited in {md_code(prof['path'])}). Run `hwprune profile` on "
            "the device to measure it."] if prof["provenance"] == "analytic" else []),
        ("- Rewinding: learning rate (survivors keep their trained weights; the schedule restarts each round)."
         if report["imp"]["rewind"] == "lr" else
         ("- Rewinding: weights, to the original initialisation θ_0." if report["imp"]["rewind_iteration"] == 0 else
          f"- Rewinding: weights, to θ_k at iteration {report['imp']['rewind_iteration']} of "
          f"{report['imp']['dense_iterations']}.")),
        f"- ONNX vs PyTorch: max |diff| {report['numerics']['max_abs_diff']:.2e} over {report['numerics']['samples']} "
        "test inputs" + (f" at batch {', '.join(map(str, report['numerics']['batches']))}"
                         if report["numerics"].get("batches") else "") + ".",
        *([f"- {md_code(report['onnx'])} has a dynamic batch axis; every latency here is at batch "
           f"{report['export']['latency_batch']}."] if (report.get("export") or {}).get("dynamic_batch") else []),
        f"- Dense network: {_dense_source(report['dense_training'])}.",
        *([f"- Trained and scored on {md_text(report['training']['device'])} ({md_text(report['training']['name'])}, "
           f"{md_text(report['training']['precision'])})."] if report.get("training") else []),
        *([_objective_words(report["metric"])] if report.get("metric") else []),
        *([f"- ONNX Runtime's offline-optimised model: {md_code(report['optimized_onnx']['file'])} (level "
           f"`{report['optimized_onnx']['graph_optimization']}`)."] if report.get("optimized_onnx") else []),
        f"- Wall time: {report['seconds']['total_s']:.0f} s; versions: "
        + ", ".join(f"{md_text(k)} {md_text(v)}" for k, v in report["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def _objective_words(metric: dict[str, str]) -> str:
    loss = "the user's loss" if metric["loss"] == "custom" else "cross-entropy (distilled from the dense network)"
    return (f"- Scored by {md_text(metric['name'])} ({md_text(metric['function'])}, higher is better: the search's "
            f"proxy, every round and the test results); trained with {loss}.")


def _metric(report: dict[str, Any]) -> str:
    return (report.get("metric") or {}).get("name", "accuracy")


def _dense_source(dense: dict[str, Any]) -> str:
    origin = dense.get("origin", "trained")
    if origin == "weights":
        return (f"the user's trained weights {md_code(dense['weights_file'])} "
                f"(sha256 {md_code(dense['weights_sha256'])}), not trained here")
    if origin == "factory":
        return "trained weights returned by the model factory, not trained here"
    took = f"trained in {dense['training_seconds']:.0f} s"
    return f"loaded from the cache (key {dense['cache_key']}; {took} originally)" if dense["cached"] else took


def write(result: RunResult, folder: paths.RunFolder) -> dict[str, Any]:
    """report.json and report.md in the run folder; returns the report."""
    report = to_json(result)
    found = problems(report)
    if found:  # hwprune's own output must match its schema: a bug, not a user error
        raise AssertionError(f"report does not match {SCHEMA_FILE.name}: {found}")
    atomic.write_json(folder.report_json, report)
    atomic.write_text(folder.report_md, to_markdown(report))
    return report
