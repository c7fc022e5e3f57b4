"""Benchmark: measuring through the device agent (issue 16), on loopback, against measuring locally.

One family (default: the example CNN) has its latency table built three ways in one run: on this host,
through one loopback agent, and through a shelf of two. Random pruned configurations of its search space
are then predicted by each table and measured whole on this host (the truth, timed as
benchmarks/latency_prediction.py times it), so the three tables are scored against the same truth. Also
measured: the agent's overhead per kernel (the same chunk of table kernels timed locally and through the
agent, HTTP included, alternated) and one HTTP round trip. With --end-to-end, the README's example run
(`hwprune --target x86-cpu`, fresh profiles, no dense cache) locally and through a loopback agent: wall
times, budget, where the latencies were measured. Results: benchmarks/results/agent.json.

On loopback the agent's device is this host, so a table through it should equal a local one within noise;
the two agents of the shelf share this host's two cores, so their concurrent timings disturb each other in
a way two real devices would not (stated beside the figures).

    .venv/bin/python benchmarks/agent.py [--configs 30] [--family example-cnn] [--end-to-end]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hwprune import (
    LatencyPredictor,
    RuntimeSettings,
    build_template,
    export,
    factories,
    measure,
    profiles,
    provenance,
    remote,
    runtime,
    timing,
)
from hwprune.device import LOCAL
from hwprune.prune import graph
from hwprune.runtime import KERNEL_PROTOCOL, WHOLE_MODEL_PROTOCOL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_prediction import random_widths, scores  # noqa: E402  (the same scoring as the main benchmark)

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = RuntimeSettings(("CPUExecutionProvider",), 1, "all")


class LoopbackAgent:
    def __init__(self, folder: Path, token: str) -> None:
        (folder / "token").write_text(token)
        self.proc = subprocess.Popen([sys.executable, "-m", "hwprune.agent", "--port", "0", "--token-file", "token",
                                      "--cache", str(folder / "cache")], cwd=folder, stdout=subprocess.PIPE,
                                     text=True)
        self.url = re.search(r"http://[0-9.]+:\d+", self.proc.stdout.readline()).group(0)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def build(name: str, template, dense, multiple: int, seed: int, folder: Path, device) -> tuple[LatencyPredictor, dict]:
    profile = profiles.open_profile(name, SETTINGS, folder, "", KERNEL_PROTOCOL, device=device)
    predictor = LatencyPredictor(template, profile, KERNEL_PROTOCOL)
    table = measure.build_table(predictor, dense, multiple, 0.85, 30, seed)
    return predictor, {"seconds": table.seconds, "kernels": table.entries, "networks": table.networks,
                       "calibration_max_error_pct": table.calibration.max_error_pct,
                       "slow_share": predictor.sentinel.slow_share, "measured_on": device.label}


def kernel_overhead(predictor: LatencyPredictor, dense, device, repeats: int = 5) -> dict:
    """The same chunk of table kernels timed locally and through the agent, alternated. A pass retakes the
    kernels it timed in a slow phase of the host, so the wall time per kernel attempt is compared (HTTP,
    base64 and JSON included on the agent's side)."""
    kernels = list({k.signature: k for k in predictor.kernels(dense)}.values())
    widths = {g: max(8, w // 2) for g, w in dense.items()}
    kernels += [k for k in predictor.kernels(widths) if k.signature not in {x.signature for x in kernels}]
    models = [k.build().SerializeToString() for k in kernels[:40]]
    built = runtime.as_built(SETTINGS)
    # one pass each, no waiting for a quiet host: what differs is the trip, not the host's mood
    once = replace(KERNEL_PROTOCOL, attempts=1, patience_s=0.0)
    local_level = timing.Sentinel(built)
    per_attempt: dict[str, list[float]] = {"local": [], "agent": []}
    for _ in range(repeats):
        for way in ("local", "agent"):
            start = time.perf_counter()
            if way == "local":
                stats = timing.time_many(models, built, once, 40, local_level, runtime.Patience(0))
            else:
                stats = device.time_many(models, built, once, 40, device.host_level(built), runtime.Patience(0))
            per_attempt[way].append((time.perf_counter() - start) / sum(s.attempts for s in stats))
    local_ms, agent_ms = (float(np.median(per_attempt[w])) * 1000 for w in ("local", "agent"))
    trips = []
    for _ in range(20):
        start = time.perf_counter()
        device.outputs(timing.null_model_bytes(), built)
        trips.append(time.perf_counter() - start)
    return {"kernels": len(models), "local_ms_per_attempt": local_ms, "agent_ms_per_attempt": agent_ms,
            "overhead_ms_per_kernel": agent_ms - local_ms, "overhead_pct": (agent_ms / local_ms - 1) * 100,
            "request_round_trip_ms": float(np.median(trips)) * 1000, "per_attempt_s": per_attempt}


def end_to_end(url: str, token: str, log) -> dict:
    """The README's example run, locally and through the agent, each with fresh profiles and no dense cache."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for way in ("local", "agent"):
            folder = Path(tmp) / way
            command = [sys.executable, "-m", "hwprune", "--target", "x86-cpu", "--out", str(folder / "out"),
                       "--profiles-dir", str(folder / "profiles"), "--no-cache", "--quiet"]
            command += ["--agent", url] if way == "agent" else []
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, remote.TOKEN_ENV: token})
            wall = time.perf_counter() - start
            report = json.loads((folder / "out" / "report.json").read_text()) if done.returncode in (0, 10) else {}
            out[way] = {"exit_code": done.returncode, "wall_s": wall, "budget_met": report.get("budget_met"),
                        "speedup": report.get("speedup"), "measured_on": report.get("profile", {}).get("measured_on"),
                        "latency_source": report.get("pruned", {}).get("latency_source"),
                        "pruned_ms": report.get("pruned", {}).get("latency_ms"),
                        "stderr_tail": done.stderr[-600:] if done.returncode not in (0, 10) else ""}
            log(f"end to end, {way}: exit {done.returncode} in {wall:.0f} s, budget met {out[way]['budget_met']}")
    out["agent_over_local_wall"] = out["agent"]["wall_s"] / out["local"]["wall_s"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=30, help="random configurations scored")
    parser.add_argument("--family", default="example-cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--builds", type=int, default=3, help="table builds per way, alternated")
    parser.add_argument("--end-to-end", action="store_true", help="also the example run, locally and via an agent")
    parser.add_argument("--result", type=Path, default=ROOT / "benchmarks" / "results" / "agent.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    start = time.perf_counter()
    token = secrets.token_urlsafe(24)
    torch.manual_seed(args.seed)
    model = factories.build_model(args.family, str(ROOT)).eval()
    example = torch.zeros(1, 1, 28, 28)
    dense = {g.name: g.width for g in graph.channel_groups(model, example)}
    template = build_template(model, example, export.export(model, example), dense, ())
    with tempfile.TemporaryDirectory() as tmp:
        agents = [LoopbackAgent(Path(tempfile.mkdtemp(dir=tmp)), token) for _ in range(2)]
        try:
            one, shelf = remote.connect((agents[0].url,), token), remote.connect(tuple(a.url for a in agents), token)
            multiple = measure.alignment_sweep(SETTINGS).preferred_channel_multiple
            # each way builds its table from scratch `--builds` times, alternated (the host's slow phases come
            # and go over minutes and a build waits them out); the first build of each way is scored
            tables, builds = {}, {}
            for repeat in range(args.builds):
                for name, device in (("local", LOCAL), ("agent", one), ("two_agents", shelf)):
                    predictor, info = build(name, template, dense, multiple, args.seed,
                                            Path(tmp) / f"{name}-{repeat}", device)
                    tables.setdefault(name, predictor)
                    builds.setdefault(name, []).append(info)
                    log(f"{name}: table in {info['seconds']:.1f} s ({info['kernels']} kernels)")
            overhead = kernel_overhead(tables["local"], dense, one)
            log(f"overhead per kernel through the agent: {overhead['overhead_ms_per_kernel']:.2f} ms")
            truth = timing.Sentinel(SETTINGS)
            rng = random.Random(args.seed + 7)
            rows = []
            for i in range(args.configs):
                widths = random_widths(dense, ("x16", "x8", "any")[i % 3], rng)
                measured = runtime.time_side_by_side([template.instantiate(widths, seed=1000 + i)], SETTINGS,
                                                     WHOLE_MODEL_PROTOCOL, sentinel=truth)[0].median_ms
                rows.append({"widths": widths, "measured_ms": measured,
                             **{f"{name}_ms": t(widths) for name, t in tables.items()}})
            log(f"{args.configs} configurations predicted three ways and measured")
            e2e = end_to_end(agents[0].url, token, log) if args.end_to_end else None
        finally:
            for a in agents:
                a.stop()
    measured = np.asarray([r["measured_ms"] for r in rows])
    summary = {name: scores(np.asarray([r[f"{name}_ms"] for r in rows]), measured) for name in tables}
    ratios = np.asarray([r["agent_ms"] / r["local_ms"] for r in rows])
    result = {
        "benchmark": "agent", "command": "python benchmarks/agent.py " + " ".join(sys.argv[1:]),
        "family": args.family, "settings": vars(SETTINGS), "channel_multiple": multiple,
        "summary": summary,
        "agent_over_local_prediction": {"median": float(np.median(ratios)), "min": float(ratios.min()),
                                        "max": float(ratios.max())},
        "table_builds": builds,
        "table_build_median_s": {n: float(np.median([b["seconds"] for b in bs])) for n, bs in builds.items()},
        "kernel_overhead": overhead, "end_to_end": e2e, "rows": rows,
        "note": "loopback: the agents run on this 2-core host, so the two agents of the shelf time at once on "
                "the two cores the host process also uses",
        "wall_s": time.perf_counter() - start,
        "host": provenance.host(), "versions": provenance.versions(), "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'table':<12}{'±5%':>7}{'±10%':>7}{'RMSPE':>8}{'max':>8}")
    for name, s in summary.items():
        print(f"{name:<12}{s['within_5pct']:>7.1%}{s['within_10pct']:>7.1%}{s['rmspe_pct']:>7.1f}%"
              f"{s['max_abs_error_pct']:>7.1f}%")
    print("table builds (median): " + ", ".join(f"{n} {s:.1f} s" for n, s in result["table_build_median_s"].items()))
    print(f"agent overhead {overhead['overhead_ms_per_kernel']:.2f} ms per kernel, round trip "
          f"{overhead['request_round_trip_ms']:.1f} ms")
    if e2e:
        print(f"end to end: local {e2e['local']['wall_s']:.0f} s, agent {e2e['agent']['wall_s']:.0f} s "
              f"({e2e['agent_over_local_wall']:.2f}x), budget met {e2e['local']['budget_met']} / "
              f"{e2e['agent']['budget_met']}")
    print(f"wall {result['wall_s']:.0f} s; wrote {args.result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
