"""Benchmark: the noise floor of whole-network timing on this host, the truth a latency model is judged by.

A few networks of each family (dense, thinned, unaligned) and one fixed reference layer are timed side by
side, again and again, for `--seconds`; each repetition is one short side-by-side measurement (the
quietest blocks of it pooled, as hwprune times whole models). Per network it reports the quantiles of the
repetitions relative to their median, and the same for its ratio to the reference layer and to its dense
network timed alongside: whether load on a shared machine slows every model alike (then ratios would be
stable) or not. Results: benchmarks/results/latency_noise.json.

    .venv/bin/python benchmarks/latency_noise.py [--seconds 150]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hwprune import RuntimeSettings, build_template, export, factories, measure, provenance, runtime
from hwprune.latency import calibration_configs
from hwprune.prune import graph
from hwprune.runtime import CALIBRATION_PROTOCOL

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = RuntimeSettings(("CPUExecutionProvider",), 1, "all")
NETWORKS = {"mobilenetv2": (1, 3), "resnet20": (2, 7), "example-cnn": (2, 7)}  # calibration configs: thinned, unaligned
QUANTILES = (0, 10, 25, 50, 75, 90, 100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--result", type=Path, default=ROOT / "benchmarks" / "results" / "latency_noise.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names, models, dense_of = [], [], {}
    for family, picks in NETWORKS.items():
        torch.manual_seed(0)
        model = factories.build_model(family, str(ROOT)).eval()
        example = torch.zeros(1, 1, 28, 28)
        dense = {g.name: g.width for g in graph.channel_groups(model, example)}
        template = build_template(model, example, export.export(model, example), dense, ())
        configs = calibration_configs(dense, 16, 0)
        for label, widths in [*((f"{family}[{i}]", configs[i]) for i in picks), (f"{family}[dense]", dense)]:
            names.append(label)
            models.append(template.instantiate(widths, seed=0))
            dense_of[label] = f"{family}[dense]"
    names.append("reference conv 32x32 14x14")
    models.append(measure.sweep_layer(32))
    protocol = dataclasses.replace(CALIBRATION_PROTOCOL, min_time_s=0.6, attempts=1, min_attempts=1)
    reps, start = [], time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        reps.append([s.median_ms for s in runtime.time_side_by_side(models, SETTINGS, protocol)])
    r = np.asarray(reps)

    def quantiles(x: np.ndarray) -> dict[str, float]:
        q = np.percentile(x, QUANTILES)
        return {f"p{p}": float(v / q[3] - 1) for p, v in zip(QUANTILES, q, strict=True)}

    rows = {}
    for j, name in enumerate(names):
        raw = r[:, j]
        rows[name] = {"median_ms": float(np.median(raw)), "raw": quantiles(raw),
                      "over_reference": quantiles(raw / r[:, -1])}
        if name in dense_of and dense_of[name] != name:
            rows[name]["over_dense"] = quantiles(raw / r[:, names.index(dense_of[name])])
    result = {"benchmark": "latency_noise", "command": "python benchmarks/latency_noise.py " + " ".join(sys.argv[1:]),
              "repetitions": len(r), "seconds": time.perf_counter() - start, "networks": rows, "raw_ms": r.tolist(),
              "names": names, "host": provenance.host(), "versions": provenance.versions(),
              "date": time.strftime("%Y-%m-%d")}
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(r)} repetitions in {result['seconds']:.0f} s; quantiles relative to the median "
          f"({', '.join(f'p{p}' for p in QUANTILES)}):")
    for name, row in rows.items():
        line = " ".join(f"{v:+6.1%}" for v in row["raw"].values())
        ratio = " ".join(f"{v:+6.1%}" for v in row.get("over_dense", row["over_reference"]).values())
        print(f"  {name:<28} {row['median_ms']:.4f} ms  raw {line}   ratio {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
