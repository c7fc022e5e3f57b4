"""Benchmark: the README's main command on the built-in example, timed end to end.

Runs `hwprune --target x86-cpu` with a fresh profile folder and a fresh dense cache (so dense training and
the lazy latency-table measurement are counted) and records dense and pruned latency (measured on ONNX
Runtime), accuracy, speedup and wall time with the host and versions in benchmarks/results/example_run.json.

    .venv/bin/python benchmarks/example_run.py [--target x86-cpu] [--config F]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hwprune(args: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI with `tmp`'s profiles and dense cache unless `args` name others; (process, wall seconds)."""
    command = [sys.executable, "-m", "hwprune", *args]
    if "--profiles-dir" not in args and args[:1] != ["compare"]:
        command += ["--profiles-dir", str(tmp / "profiles")]
    if "--cache-dir" not in args and args[:1] != ["compare"]:
        command += ["--cache-dir", str(tmp / "cache")]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    return run, time.perf_counter() - start


def summary(report: dict, wall: float, command: list[str], exit_code: int) -> dict:
    d, p = report["dense"], report["pruned"]
    return {
        "benchmark": "example_run",
        "command": " ".join(["hwprune", *command]),
        "exit_code": exit_code,
        "wall_s": round(wall, 1),
        "stage_seconds": {k: round(v, 1) for k, v in report["seconds"].items()},
        "budget_ms": report["budget_ms"],
        "budget_met": report["budget_met"],
        "speedup_measured": d["latency_ms"] / p["latency_ms"],
        "dense": {k: d[k] for k in ("accuracy", "latency_ms", "latency_p90_ms", "latency_source",
                                     "predicted_latency_ms", "macs", "params", "widths")},
        "pruned": {k: p[k] for k in ("accuracy", "latency_ms", "latency_p90_ms", "latency_source",
                                      "predicted_latency_ms", "macs", "params", "widths")},
        "accuracy_drop_points": (d["accuracy"] - p["accuracy"]) * 100,
        "prediction_error_pct": (p["predicted_latency_ms"] - p["latency_ms"]) / p["latency_ms"] * 100,
        "rounds": report["imp"]["rounds"],
        "host": report["host"],
        "versions": report["versions"],
        "date": time.strftime("%Y-%m-%d"),
    }


def write(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    d, p = result["dense"], result["pruned"]
    print(json.dumps({k: result[k] for k in ("wall_s", "budget_met", "speedup_measured", "accuracy_drop_points")}))
    print(f"dense acc {d['accuracy']:.4f} {d['latency_ms']:.4f} ms; pruned acc {p['accuracy']:.4f} "
          f"{p['latency_ms']:.4f} ms; wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86-cpu")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--result", type=Path, default=ROOT / "benchmarks" / "results" / "example_run.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        command = ["--target", args.target, "--out", str(out), "--quiet"]
        if args.config:
            command += ["--config", str(args.config)]
        run, wall = hwprune(command, Path(tmp))
        if run.returncode not in (0, 10):
            sys.stderr.write(run.stderr)
            return run.returncode
        report = json.loads((out / "report.json").read_text())
    write(summary(report, wall, command, run.returncode), args.result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
