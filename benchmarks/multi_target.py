"""Benchmark: three targets in one invocation against one target, the dense cache, and `hwprune compare`.

1. `hwprune --target x86-cpu` from nothing (fresh profiles and dense cache): the README's main command,
   also written as benchmarks/results/example_run.json.
2. `hwprune --target x86-cpu --target arm-cortex-a72 --target jetson-nano --optimize` from nothing.
3. The same three-target command again: the dense training must come from the cache.
4. `hwprune compare` on step 2's reports → benchmarks/results/comparison/ (Markdown, HTML, PNGs).

Wall times, their ratios and each target's result go to benchmarks/results/multi_target.json.

    .venv/bin/python benchmarks/multi_target.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from example_run import ROOT, hwprune, summary, write

TARGETS = ("x86-cpu", "arm-cortex-a72", "jetson-nano")
RESULTS = ROOT / "benchmarks" / "results"


def checked(run, what: str) -> None:
    if run.returncode not in (0, 10):
        sys.stderr.write(run.stderr)
        raise SystemExit(f"{what} failed with exit code {run.returncode}")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        one_cmd = ["--target", "x86-cpu", "--out", str(tmp / "one"), "--quiet"]
        one, one_wall = hwprune(one_cmd, tmp / "fresh-one")
        checked(one, "one target")
        one_report = json.loads((tmp / "one" / "report.json").read_text())
        write(summary(one_report, one_wall, one_cmd, one.returncode), RESULTS / "example_run.json")

        many = [a for t in TARGETS for a in ("--target", t)]
        three, three_wall = hwprune([*many, "--out", str(tmp / "three"), "--optimize", "--quiet", "--json"],
                                    tmp / "fresh-three")
        checked(three, "three targets")
        again, again_wall = hwprune([*many, "--out", str(tmp / "again"), "--optimize", "--quiet", "--json"],
                                    tmp / "fresh-three")
        checked(again, "three targets again")
        reports, reused = json.loads(three.stdout), json.loads(again.stdout)
        compare, _ = hwprune(["compare", *(str(tmp / "three" / t / "report.json") for t in TARGETS),
                              "--out", str(RESULTS / "comparison"), "--force"], tmp)
        checked(compare, "compare")
    result = {
        "benchmark": "multi_target",
        "one_target": {"command": "hwprune --target x86-cpu", "wall_s": round(one_wall, 1),
                       "dense_training_s": round(one_report["dense_training"]["training_seconds"], 1)},
        "three_targets": {"command": "hwprune " + " ".join(many) + " --optimize", "wall_s": round(three_wall, 1),
                          "dense_training_s": round(reports[0]["dense_training"]["training_seconds"], 1)},
        "three_targets_again": {"wall_s": round(again_wall, 1),
                                "dense_from_cache": all(r["dense_training"]["cached"] for r in reused)},
        "ratio_three_to_one": three_wall / one_wall,
        "ratio_again_to_three": again_wall / three_wall,
        "targets": {r["target"]: {"channel_multiple": r["target_settings"]["channel_multiple"],
                                  "profile": r["profile"]["provenance"],
                                  "latency_source": r["pruned"]["latency_source"],
                                  "dense_ms": r["dense"]["latency_ms"], "pruned_ms": r["pruned"]["latency_ms"],
                                  "speedup": r["speedup"], "budget_met": r["budget_met"],
                                  "dense_accuracy": r["dense"]["accuracy"], "accuracy": r["pruned"]["accuracy"],
                                  "widths": r["pruned"]["widths"], "optimized": r["optimized_onnx"],
                                  "seconds": r["seconds"]} for r in reports},
        "host": reports[0]["host"], "versions": reports[0]["versions"], "date": time.strftime("%Y-%m-%d"),
    }
    (RESULTS / "multi_target.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"one target {one_wall:.0f} s; three targets {three_wall:.0f} s ({result['ratio_three_to_one']:.2f}x); "
          f"again {again_wall:.0f} s (dense from cache: {result['three_targets_again']['dense_from_cache']})")
    for name, t in result["targets"].items():
        print(f"  {name}: step {t['channel_multiple']}, {t['latency_source']} {t['dense_ms']:.4f} -> "
              f"{t['pruned_ms']:.4f} ms ({t['speedup']:.2f}x), acc {t['accuracy']:.4f}, "
              f"widths {'-'.join(map(str, t['widths'].values()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
