"""Benchmark: starting from the user's trained model, a fully-connected network, and a batch-8 target.

1. Pretrained path: the example CNN is trained once with its factory (the default recipe), its state_dict
   saved, then `hwprune --target x86-cpu --weights cnn.pt` runs from it: no dense epochs, timed end to end
   (fresh latency table included).
2. `hwprune --target x86-cpu --model lenet300`: LeNet-300-100 from scratch, 2x budget, measured.
3. A batch-8 target with `[export] dynamic_batch = true`, from the same weights: measured at batch 8, the shipped
   dynamic-batch model validated at batches 1 and 8 (`hwprune validate`).

Writes benchmarks/results/user_start.json with the host and versions.

    .venv/bin/python benchmarks/user_start.py [--only pretrained,lenet300,batch8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwprune import provenance  # noqa: E402
from hwprune.config import ProjectConfig  # noqa: E402
from hwprune.dense import train_dense  # noqa: E402
from hwprune.progress import NullProgress  # noqa: E402


def cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "hwprune", *args], cwd=ROOT, capture_output=True, text=True)
    return run, time.perf_counter() - start


def summary(out: Path, wall: float, code: int) -> dict:
    report = json.loads((out / "report.json").read_text())
    d, p = report["dense"], report["pruned"]
    return {"exit_code": code, "wall_s": round(wall, 1), "stage_seconds": report["seconds"],
            "dense_iterations": report["imp"]["dense_iterations"], "dense_training": report["dense_training"],
            "budget_ms": report["budget_ms"], "budget_met": report["budget_met"],
            "batch": report["target_settings"]["batch"], "export": report.get("export"),
            "numerics": report["numerics"],
            "dense": {k: d[k] for k in ("accuracy", "latency_ms", "latency_source", "predicted_latency_ms", "widths")},
            "pruned": {k: p[k] for k in ("accuracy", "latency_ms", "latency_source", "predicted_latency_ms",
                                         "widths")},
            "speedup_measured": d["latency_ms"] / p["latency_ms"],
            "accuracy_drop_points": (d["accuracy"] - p["accuracy"]) * 100,
            "prediction_error_pct": (p["predicted_latency_ms"] - p["latency_ms"]) / p["latency_ms"] * 100,
            "rounds": len(report["imp"]["rounds"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="pretrained,lenet300,batch8")
    parser.add_argument("--result", type=Path, default=ROOT / "benchmarks" / "results" / "user_start.json")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    result: dict = {"benchmark": "user_start", "host": provenance.host(), "versions": provenance.versions(),
                    "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        common = ["--profiles-dir", str(tmp / "profiles"), "--cache-dir", str(tmp / "cache"), "--quiet"]
        weights = tmp / "cnn.pt"
        if parts & {"pretrained", "batch8"}:
            torch.set_num_threads(ProjectConfig().train.threads)
            start = time.perf_counter()
            dense = train_dense(ProjectConfig(), 1, NullProgress())
            torch.save(dense.model.state_dict(), weights)
            result["given_model"] = {"factory": "example-cnn", "test_accuracy": dense.accuracy,
                                     "training_s": round(time.perf_counter() - start, 1)}
            print(f"given model: test accuracy {dense.accuracy:.4f}, trained in {result['given_model']['training_s']} s")
        if "pretrained" in parts:
            out = tmp / "pretrained"
            run, wall = cli("--target", "x86-cpu", "--weights", str(weights), "--out", str(out), *common)
            if run.returncode not in (0, 10):
                print(run.stderr)
                return 1
            result["pretrained"] = summary(out, wall, run.returncode)
            result["pretrained"]["drop_vs_given_points"] = (
                (result["given_model"]["test_accuracy"] - result["pretrained"]["pruned"]["accuracy"]) * 100)
            print("pretrained:", json.dumps({k: result["pretrained"][k] for k in
                                             ("wall_s", "budget_met", "speedup_measured", "drop_vs_given_points")}))
        if "lenet300" in parts:
            out = tmp / "lenet300"
            run, wall = cli("--target", "x86-cpu", "--model", "lenet300", "--out", str(out), *common)
            if run.returncode not in (0, 10):
                print(run.stderr)
                return 1
            result["lenet300"] = summary(out, wall, run.returncode)
            print("lenet300:", json.dumps({k: result["lenet300"][k] for k in
                                           ("wall_s", "budget_met", "speedup_measured", "accuracy_drop_points")}))
        if "batch8" in parts:
            x86 = (ROOT / "hwprune" / "builtin" / "targets" / "x86-cpu.toml").read_text()
            (tmp / "targets").mkdir()
            (tmp / "targets" / "x86-cpu-b8.toml").write_text(
                x86.replace('name = "x86-cpu"', 'name = "x86-cpu-b8"').replace("batch = 1", "batch = 8")
                .replace("batch 1", "batch 8"))
            (tmp / "b8.toml").write_text("[export]\ndynamic_batch = true\n")
            out = tmp / "batch8"
            targets = ["--targets-dir", str(tmp / "targets")]
            run, wall = cli("--target", "x86-cpu-b8", "--config", str(tmp / "b8.toml"), "--weights", str(weights),
                            "--out", str(out), *targets, *common)
            if run.returncode not in (0, 10):
                print(run.stderr)
                return 1
            result["batch8"] = summary(out, wall, run.returncode)
            checks = {}
            for target, batch in (("x86-cpu-b8", 8), ("x86-cpu", 1)):
                check, _ = cli("validate", str(out / "model.onnx"), "--target", target, "--budget-ms", "1000",
                               "--json", *targets, "--profiles-dir", str(tmp / "profiles"))
                checks[str(batch)] = {"exit_code": check.returncode, **json.loads(check.stdout or "{}")}
            result["batch8"]["validate"] = checks
            print("batch8:", json.dumps({k: result["batch8"][k] for k in ("wall_s", "budget_met", "speedup_measured")}),
                  {b: (c["exit_code"], c.get("latency_ms")) for b, c in checks.items()})
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
