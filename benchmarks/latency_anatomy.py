"""Benchmark: where the table's sum of isolated kernels departs from the network it predicts.

For each family, a handful of networks of its search space (dense, uniformly thinned, random aligned and
unaligned widths) are
  - cut into the kernels of ONNX Runtime's optimised graph, each timed alone (the table's method);
  - timed whole, side by side (the truth);
  - run under ONNX Runtime's own profiler (`SessionOptions.enable_profiling`), which times every node
    inside the real network run; its per-node overhead inflates small nodes, so its times are used as
    shares of the whole, not as milliseconds.
Per kernel type it reports the isolated time against the in-context share of the measured whole, and per
network the uncalibrated sum against the truth, with the per-call overhead the table subtracts. Results:
benchmarks/results/latency_anatomy.json.

    .venv/bin/python benchmarks/latency_anatomy.py [--families example-cnn,resnet20,mobilenetv2] [--networks 8]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from hwprune import LatencyPredictor, RuntimeSettings, build_template, export, factories, profiles, provenance, runtime
from hwprune.latency import calibration_configs
from hwprune.prune import graph
from hwprune.runtime import CALIBRATION_PROTOCOL, KERNEL_PROTOCOL

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = RuntimeSettings(("CPUExecutionProvider",), 1, "all")
PROFILED_RUNS = 300


def run_family(name: str, networks: int, seed: int, log) -> dict:
    torch.manual_seed(seed)
    model = factories.build_model(name, str(ROOT)).eval()
    example = torch.zeros(1, 1, 28, 28)
    dense = {g.name: g.width for g in graph.channel_groups(model, example)}
    template = build_template(model, example, export.export(model, example), dense, ())
    configs = calibration_configs(dense, 16, seed)[:networks]
    rng = random.Random(seed)
    while len(configs) < networks:
        configs.append({g: rng.randint(max(1, w // 6), w) for g, w in dense.items()})
    with tempfile.TemporaryDirectory() as tmp:
        profile = profiles.open_profile("anatomy", SETTINGS, Path(tmp), "", KERNEL_PROTOCOL)
        predictor = LatencyPredictor(template, profile, KERNEL_PROTOCOL)
        start = time.perf_counter()
        predictor.ensure(configs)
        table_s = time.perf_counter() - start
        protos = [template.instantiate(w, seed=i) for i, w in enumerate(configs)]
        whole = [s.median_ms for s in runtime.time_side_by_side(protos, SETTINGS, CALIBRATION_PROTOCOL)]
        overhead = profile.overhead_ms
        rows, per_op = [], defaultdict(lambda: {"isolated_ms": 0.0, "in_context_ms": 0.0, "count": 0})
        for widths, proto, truth in zip(configs, protos, whole, strict=True):
            optimized, _ = runtime.optimized_graph(proto, SETTINGS)
            nodes = [n.name for n in optimized.graph.node if n.op_type != "Constant"]
            kernels = predictor.kernels(widths)
            isolated = [max(profile.entries[k.signature].median_ms - overhead, 0.0) for k in kernels]
            context = runtime.node_times_in_context(proto, SETTINGS, PROFILED_RUNS)
            shares = np.asarray([context.get(n, 0.0) for n in nodes])
            scaled = shares / shares.sum() * (truth - overhead) if shares.sum() else shares
            for k, iso, ctx in zip(kernels, isolated, scaled, strict=True):
                per_op[k.op]["isolated_ms"] += iso
                per_op[k.op]["in_context_ms"] += float(ctx)
                per_op[k.op]["count"] += 1
            rows.append({"widths": widths, "measured_ms": truth, "kernels": len(kernels),
                         "sum_isolated_ms": float(sum(isolated)), "sum_isolated_plus_call_ms":
                             float(sum(isolated) + overhead),
                         "profiler_sum_ms": float(shares.sum()), "nodes_matched": int((shares > 0).sum())})
            log(f"  {name}: measured {truth:.4f} ms, Σ isolated + call {sum(isolated) + overhead:.4f} ms "
                f"({(sum(isolated) + overhead) / truth - 1:+.1%}), profiler Σ {shares.sum():.4f} ms, "
                f"{len(kernels)} kernels")
    ops = {op: {**v, "ratio": v["isolated_ms"] / v["in_context_ms"] if v["in_context_ms"] else None}
           for op, v in sorted(per_op.items(), key=lambda kv: -kv[1]["in_context_ms"])}
    return {"family": name, "table_seconds": table_s, "call_overhead_ms": overhead, "networks": rows,
            "per_op": ops}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="example-cnn,resnet20,mobilenetv2")
    parser.add_argument("--networks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result", type=Path, default=ROOT / "benchmarks" / "results" / "latency_anatomy.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    start = time.perf_counter()
    families = [run_family(f, args.networks, args.seed, log) for f in args.families.split(",")]
    result = {"benchmark": "latency_anatomy",
              "command": "python benchmarks/latency_anatomy.py " + " ".join(sys.argv[1:]),
              "families": families, "wall_s": time.perf_counter() - start, "host": provenance.host(),
              "versions": provenance.versions(), "date": time.strftime("%Y-%m-%d")}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=1) + "\n")
    for f in families:
        errors = [r["sum_isolated_plus_call_ms"] / r["measured_ms"] - 1 for r in f["networks"]]
        print(f"{f['family']}: call overhead {f['call_overhead_ms'] * 1000:.1f} us; Σ isolated + call vs measured: "
              f"{min(errors):+.1%} .. {max(errors):+.1%}")
        for op, v in list(f["per_op"].items())[:8]:
            print(f"  {op:<40} n={v['count']:<4} isolated {v['isolated_ms']:.4f} ms, in context "
                  f"{v['in_context_ms']:.4f} ms, ratio {v['ratio'] or float('nan'):.2f}")
    print(f"wall {result['wall_s']:.0f} s; wrote {args.result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
