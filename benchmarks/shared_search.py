"""Benchmark: one search shared by two `hwprune` workers through Optuna's storage, against one worker.

The example CNN on 10k Fashion-MNIST images, target jetson-nano (its analytic profile: no latency
measurement in the way, so the search and retraining are all the work), 2 rounds x TRIALS trials. The dense
network is trained once beforehand into a shared cache, so every run starts at the search. One worker runs
all trials with 2 torch threads; then two workers (1 thread each, the machine's 2 cores) share a journal
file. Reported: each round's search wall time (from the reports), trials per worker, and the ratio.

    .venv/bin/python benchmarks/shared_search.py      → benchmarks/results/shared_search.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from hwprune import provenance

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 24
CONFIG = """
seed = 0
[train]
epochs = 3
precision = "bf16"
threads = {threads}
[search]
trials = {trials}
"""


def hwprune(tmp: Path, out: str, threads: int, storage: Path | None) -> subprocess.Popen:
    config = tmp / f"threads{threads}.toml"
    config.write_text(CONFIG.format(threads=threads, trials=TRIALS))
    args = [sys.executable, "-m", "hwprune", "--target", "jetson-nano", "--config", str(config), "--limit", "10000",
            "--out", str(tmp / out), "--profiles-dir", str(tmp / "profiles"), "--cache-dir", str(tmp / "cache"),
            "--quiet"]
    if storage:
        args += ["--storage", f"journal:{storage}"]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(*workers: subprocess.Popen) -> None:
    for w in workers:
        _, err = w.communicate()
        if w.returncode not in (0, 10):
            raise SystemExit(f"hwprune failed ({w.returncode}): {err}")


def search_seconds(report: Path) -> list[float]:
    return [r["search_seconds"] for r in json.loads(report.read_text())["imp"]["rounds"]]


def main() -> int:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        start = time.perf_counter()  # dense training into the shared cache (its key ignores threads)
        finish(hwprune(tmp, "warmup", 2, None))
        print(f"warm-up: {time.perf_counter() - start:.0f} s", file=sys.stderr)

        start = time.perf_counter()
        finish(hwprune(tmp, "one", 2, tmp / "one.journal"))
        one_wall = time.perf_counter() - start
        one = search_seconds(tmp / "one" / "report.json")

        start = time.perf_counter()
        finish(*(hwprune(tmp, f"w{i}", 1, tmp / "two.journal") for i in (1, 2)))
        two_wall = time.perf_counter() - start
        two = [search_seconds(tmp / f"w{i}" / "report.json") for i in (1, 2)]

        storage = JournalStorage(JournalFileBackend(str(tmp / "two.journal")))
        per_worker: dict[str, int] = {}
        complete = []
        for study in optuna.get_all_study_names(storage):
            trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
            complete.append(sum(t.state == TrialState.COMPLETE for t in trials))
            for t in trials:
                if t.state == TrialState.COMPLETE:
                    per_worker[t.user_attrs["worker"]] = per_worker.get(t.user_attrs["worker"], 0) + 1
        reports = [json.loads((tmp / d / "report.json").read_text()) for d in ("one", "w1", "w2")]

    # both workers wait for the last trial, so the shared search ends when the later worker's does
    shared = [max(a, b) for a, b in zip(*two, strict=True)]
    result = {
        "benchmark": "shared_search", "trials_per_round": TRIALS, "rounds": len(one),
        "one_worker": {"threads": 2, "search_seconds_per_round": one, "wall_s": one_wall},
        "two_workers": {"threads_each": 1, "search_seconds_per_round": two, "wall_s": two_wall,
                        "complete_trials_per_round": complete, "trials_per_worker": list(per_worker.values())},
        "search_time_ratio_two_over_one": sum(shared) / sum(one),
        "same_network": reports[1]["pruned"]["kept_channels"] == reports[2]["pruned"]["kept_channels"],
        "accuracy": {"one_worker": reports[0]["pruned"]["accuracy"], "two_workers": reports[1]["pruned"]["accuracy"]},
    }
    result.update(host=provenance.host(), versions=provenance.versions(), date=time.strftime("%Y-%m-%d"))
    path = ROOT / "benchmarks" / "results" / "shared_search.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("host", "versions")}, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
