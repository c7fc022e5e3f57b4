"""Benchmark: accuracy at equal *measured* latency, hwprune against what users would do instead.

For each family (example CNN, ResNet-20) one dense network is trained, then pruned to 0.7x, 0.5x and
0.35x of its measured latency by:

  hwprune       latency-table search inside IMP with learning-rate rewinding, distillation from the dense
                network while retraining, extra rounds while the measured latency misses (the product's
                defaults: 2 rounds retrained 0.5 + 1.5 epochs)
  uniform       one prune rate for every group, the largest the table predicts to meet the budget, same
                IMP schedule (the search's seed trial alone)
  flops         the same search with a FLOPs-proportional latency model (a * MACs, a fitted on the same
                calibration networks) instead of the table
  one-shot      the same search in one round, retrained for the same total epochs
  random-reinit hwprune's final architecture, weights re-initialised, trained for the same total epochs

Every method retrains with the same recipe (distillation included), so the comparison isolates the
latency model, the search, the schedule and the weights.

Baselines get no measured extra rounds: they are what a FLOPs- or rate-based tool hands over; when hwprune
needed extra rounds, each baseline gets as many retraining epochs (rounds at its final target). Every model
ends as an exported ONNX file; the family's models and its dense model are timed side by side in one
interleaved measurement at the end. Results: benchmarks/results/pareto[_quick].json, .md and .png.

    .venv/bin/python benchmarks/pareto.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwprune import (
    Budget,
    Imp,
    LatencyPredictor,
    RunOptions,
    SearchError,
    export,
    factories,
    latency_predictor,
    load_target,
    provenance,
    runtime,
    target_dirs,
)
from hwprune.config import ImpConfig, ModelSpec, ProjectConfig, SearchConfig, TrainConfig
from hwprune.onnxgraph import GraphTemplate
from hwprune.progress import NullProgress
from hwprune.provenance import derive_seed
from hwprune.prune import graph
from hwprune.prune.masks import Masks
from hwprune.runtime import WHOLE_MODEL_PROTOCOL
from hwprune.train import accuracy, train

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (0.7, 0.5, 0.35)
METHODS = ("hwprune", "uniform", "flops", "one-shot", "random-reinit")


@dataclass(frozen=True)
class Mode:
    families: tuple[str, ...]
    train_limit: dict[str, int | None]  # training images per family (None: all 55k)
    dense_epochs: int
    rounds: int
    trials: int
    seeds_at_half: int  # pruning seeds at the 0.5x budget
    precision: str = "bf16"  # training arithmetic (autocast); every method trains with the same recipe


MODES = {
    "quick": Mode(("example-cnn", "resnet20"), {"example-cnn": 10000, "resnet20": 5000}, 3, 2, 8, 1),
    # full: 50k/40k of the 55k training images keep it under 90 minutes on 2 cores (all 55k took 94)
    "full": Mode(("example-cnn", "resnet20"), {"example-cnn": 50000, "resnet20": 40000}, 8, 2, 16, 2),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def family_config(family: str, mode: Mode) -> ProjectConfig:
    return ProjectConfig(
        model=ModelSpec(factory=family),
        train=TrainConfig(epochs=mode.dense_epochs, precision=mode.precision),  # retraining: product defaults
        imp=ImpConfig(rounds=mode.rounds),
        search=SearchConfig(trials=mode.trials),
    )


def flops_model(predictor: LatencyPredictor, template: GraphTemplate
                ) -> tuple[Callable[[dict[str, int]], float], float]:
    """latency = a · MACs, a fitted (least squares through 0) on the calibration networks measured whole."""
    def macs(widths: dict[str, int]) -> int:
        return sum(k.macs for k in template.kernels(widths))

    x = np.asarray([macs(w) for w, _ in predictor.calibration_networks], dtype=float)
    y = np.asarray([ms for _, ms in predictor.calibration_networks])
    a = float(x @ y / (x @ x))
    return (lambda widths: a * macs(widths)), a


def one_shot(config: ProjectConfig, epochs: float) -> ProjectConfig:
    """One round, retrained for `epochs` (the retraining epochs hwprune spent over all its rounds)."""
    return dataclasses.replace(config, imp=dataclasses.replace(config.imp, rounds=1), train=dataclasses.replace(
        config.train, retrain_epochs=epochs))


def retrained(imp: Imp) -> float:
    """Retraining epochs spent over all rounds so far."""
    return sum(r.retrain_epochs for r in imp.rounds)


def run_family(family: str, mode: Mode, tmp: Path) -> dict:
    config = family_config(family, mode)
    target = load_target("x86-cpu", target_dirs())
    settings = target.runtime_settings()
    options = RunOptions(out_dir=tmp / family, profiles_dir=tmp / "profiles", data_limit=mode.train_limit[family])
    torch.set_num_threads(config.train.threads)
    start = time.perf_counter()
    dense = options.train_dense(config, target, NullProgress())
    log(f"{family}: dense trained in {time.perf_counter() - start:.0f} s, test accuracy {dense.accuracy:.4f}")
    dense_proto = export.export(dense.model, dense.example)
    t0 = time.perf_counter()
    predictor, multiple = latency_predictor(dense, dense_proto, config, target, options.profiles_dir)
    log(f"{family}: latency table and calibration in {time.perf_counter() - t0:.0f} s")
    dense_ms = runtime.time_model(dense_proto, settings, WHOLE_MODEL_PROTOCOL).median_ms
    dense_predicted = predictor(dense.widths)
    flops_predict, flops_scale = flops_model(predictor, predictor.template)
    margin = 1.0 - config.imp.safety_margin
    test_set = dense.data[2]
    points: list[dict] = []
    infeasible: list[dict] = []
    protos = [dense_proto]

    def record(method: str, budget: float, seed: int, model: torch.nn.Module, masks: Masks, rounds: int,
               seconds: float, epochs: int) -> None:
        proto = export.export(model, dense.example)
        protos.append(proto)
        macs, params = graph.count_macs_params(model, dense.example)
        points.append({"method": method, "budget": budget, "seed": seed, "widths": masks.widths(),
                       "predicted_ms": predictor(masks.widths()), "accuracy": accuracy(model, test_set),
                       "macs": macs, "params": params, "rounds": rounds, "retrain_epochs": epochs,
                       "seconds": seconds})
        log(f"{family} {budget}x {method} seed {seed}: acc {points[-1]['accuracy']:.4f}, predicted "
            f"{points[-1]['predicted_ms']:.4f} ms, {seconds:.0f} s")

    for budget in BUDGETS:
        budget_ms = budget * dense_ms
        table_final = budget_ms * margin * dense_predicted / dense_ms
        seeds = range(mode.seeds_at_half if budget == 0.5 else 1)
        for seed in seeds:
            cfg = dataclasses.replace(config, seed=seed)
            # hwprune: the product's schedule, with measured extra rounds
            t0 = time.perf_counter()
            imp = Imp(dense, predictor, multiple, cfg)
            try:
                imp.schedule(dense_predicted, table_final)
                imp.meet_measured(dense_proto, settings, Budget(speedup=1 / budget))
            except SearchError as exc:  # the budget is below what channel pruning can reach (max_prune_rate)
                for method in ("hwprune", "random-reinit"):
                    infeasible.append({"method": method, "budget": budget, "seed": seed, "error": exc.message})
                log(f"{family} {budget}x hwprune: {exc.message}")
                hw_masks = None
                epochs = cfg.train.retrain_epochs * (1 + (cfg.imp.rounds - 1) * cfg.imp.intermediate_share)
            else:
                hw_masks, hw_rounds = imp.ticket.masks, len(imp.rounds)
                epochs = retrained(imp)
                record("hwprune", budget, seed, imp.ticket.model, hw_masks, hw_rounds, time.perf_counter() - t0,
                       epochs)

            variants = {
                "uniform": (dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, trials=1)), predictor,
                            dense_predicted, table_final),
                "flops": (cfg, flops_predict, flops_predict(dense.widths),
                          budget_ms * margin * flops_predict(dense.widths) / dense_ms),
                "one-shot": (one_shot(cfg, epochs), predictor, dense_predicted, table_final),
            }
            for method, (vcfg, predict, start_ms, final_ms) in variants.items():
                t0 = time.perf_counter()
                variant = Imp(dense, predict, multiple, vcfg)
                try:
                    variant.schedule(start_ms, final_ms)
                    while retrained(variant) < epochs - 1e-9:  # hwprune's extra rounds
                        variant.round(final_ms)
                except SearchError as exc:  # e.g. a FLOPs model that thinks the budget unreachable
                    infeasible.append({"method": method, "budget": budget, "seed": seed, "error": exc.message})
                    log(f"{family} {budget}x {method}: {exc.message}")
                    continue
                record(method, budget, seed, variant.ticket.model, variant.ticket.masks, len(variant.rounds),
                       time.perf_counter() - t0, retrained(variant))

            if hw_masks is None:
                continue
            # random re-init: the lottery-ticket control on hwprune's final architecture
            t0 = time.perf_counter()
            torch.manual_seed(derive_seed(seed, "reinit"))
            fresh = factories.build_model(family, str(ROOT))
            model = graph.slim(fresh, dense.example, Masks.full(dense.widths), hw_masks, ())
            train(model, dense.data[0], cfg.train, epochs, derive_seed(seed, "reinit-train"), teacher=dense.model)
            record("random-reinit", budget, seed, model, hw_masks, 0, time.perf_counter() - t0, epochs)

    log(f"{family}: timing {len(protos)} models side by side")
    t0 = time.perf_counter()
    stats = runtime.time_side_by_side(protos, settings)
    log(f"{family}: timed in {time.perf_counter() - t0:.0f} s")
    dense_stats, model_stats = stats[0], stats[1:]
    for point, s in zip(points, model_stats, strict=True):
        point.update(latency_ms=s.median_ms, latency_p90_ms=s.p90_ms,
                     budget_ms=point["budget"] * dense_stats.median_ms,
                     budget_met=s.median_ms <= point["budget"] * dense_stats.median_ms)
    dense_macs, dense_params = graph.count_macs_params(dense.model, dense.example)
    calibration = predictor.model.calibration
    return {"family": family, "channel_multiple": multiple, "flops_scale_ms_per_mac": flops_scale,
            "calibration": None if calibration is None else dataclasses.asdict(calibration),
            "dense": {"accuracy": dense.accuracy, "latency_ms": dense_stats.median_ms,
                      "latency_p90_ms": dense_stats.p90_ms, "predicted_ms": dense_predicted, "macs": dense_macs,
                      "params": dense_params, "widths": dense.widths},
            "points": points, "infeasible": infeasible, "seconds": time.perf_counter() - start}


def summarise(family: dict) -> dict:
    """Per budget and method: mean/spread of accuracy and latency over seeds; budget-met rates; margins."""
    out: dict = {"budget_met_rate": {}, "infeasible_runs": {}, "by_budget": {}}
    for method in METHODS:  # of the models a method produced; runs it refused as infeasible are counted apart
        pts = [p for p in family["points"] if p["method"] == method]
        out["budget_met_rate"][method] = sum(p["budget_met"] for p in pts) / max(1, len(pts))
        out["infeasible_runs"][method] = sum(p["method"] == method for p in family["infeasible"])
    for budget in BUDGETS:
        rows = {}
        for method in METHODS:
            pts = [p for p in family["points"] if p["method"] == method and p["budget"] == budget]
            if not pts:
                rows[method] = {"accuracy_mean": float("nan"), "latency_ms_mean": float("nan"),
                                "budget_met": False, "seeds": 0, "infeasible": True}
                continue
            accs = [p["accuracy"] for p in pts]
            rows[method] = {"accuracy_mean": statistics.fmean(accs),
                            "accuracy_spread": (max(accs) - min(accs)) if len(accs) > 1 else 0.0,
                            "latency_ms_mean": statistics.fmean(p["latency_ms"] for p in pts),
                            "budget_met": all(p["budget_met"] for p in pts), "seeds": len(pts)}
        hw = rows["hwprune"]
        rivals = {m: r for m, r in rows.items() if m != "hwprune" and r["latency_ms_mean"] <= hw["latency_ms_mean"]
                  and not r.get("infeasible")}
        best = max(rivals.items(), key=lambda kv: kv[1]["accuracy_mean"], default=None)
        rows["margin_over_best_baseline_at_equal_or_lower_latency_points"] = (
            None if best is None else {"baseline": best[0],
                                       "points": (hw["accuracy_mean"] - best[1]["accuracy_mean"]) * 100})
        rows["hwprune_below_dense_points"] = (family["dense"]["accuracy"] - hw["accuracy_mean"]) * 100
        out["by_budget"][str(budget)] = rows
    return out


def plot(families: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), squeeze=False)
    markers = dict(zip(METHODS, "o^sDv"))
    for ax, fam in zip(axes[0], families, strict=True):
        for method in METHODS:
            pts = [p for p in fam["points"] if p["method"] == method]
            ax.scatter([p["latency_ms"] for p in pts], [p["accuracy"] for p in pts], marker=markers[method],
                       label=method, alpha=0.8)
        d = fam["dense"]
        ax.scatter([d["latency_ms"]], [d["accuracy"]], marker="*", s=160, color="black", label="dense")
        for budget in BUDGETS:
            ax.axvline(budget * d["latency_ms"], color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{fam['family']} (Fashion-MNIST, x86 ONNX Runtime, 1 thread)")
        ax.set_xlabel("measured latency (ms, median)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown_table(result: dict) -> str:
    """Every point's table (pareto*.md): per family, budget and method, mean accuracy and measured latency
    over seeds, budget met, MACs and widths."""
    lines = ["| model | budget | method | test accuracy (mean ± spread) | measured ms (p50) | budget met | "
             "MACs | widths |", "|---|---|---|---|---|---|---|---|"]
    for fam in result["families"]:
        d = fam["dense"]
        lines.append(f"| {fam['family']} | — | dense | {d['accuracy']:.4f} | {d['latency_ms']:.4f} | — | "
                     f"{d['macs'] / 1e6:.1f}M | {'-'.join(map(str, d['widths'].values()))} |")
        for budget in result["budgets"]:
            for method in METHODS:
                pts = [p for p in fam["points"] if p["method"] == method and p["budget"] == budget]
                if not pts:
                    lines.append(f"| {fam['family']} | {budget}× | {method} | infeasible | — | no | — | — |")
                    continue
                accs = [p["accuracy"] for p in pts]
                spread = f" ± {(max(accs) - min(accs)) / 2:.4f} ({len(pts)} seeds)" if len(pts) > 1 else ""
                met = sum(p["budget_met"] for p in pts)
                widths = "; ".join("-".join(map(str, p["widths"].values())) for p in pts)
                name = f"**{method}**" if method == "hwprune" else method
                lines.append(f"| {fam['family']} | {budget}× | {name} | {statistics.fmean(accs):.4f}{spread} | "
                             f"{statistics.fmean(p['latency_ms'] for p in pts):.4f} | {met}/{len(pts)} | "
                             f"{statistics.fmean(p['macs'] for p in pts) / 1e6:.1f}M | {widths} |")
    return "\n".join(lines)


def compact_table(result: dict) -> str:
    """The README's table: a row per family and budget, a column per method, "accuracy @ measured ms",
    a ✗ where the measured budget was missed (means over seeds)."""
    lines = ["| model (dense) | budget | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for fam in result["families"]:
        d = fam["dense"]
        for budget in result["budgets"]:
            cells = []
            for method in METHODS:
                pts = [p for p in fam["points"] if p["method"] == method and p["budget"] == budget]
                if not pts:
                    cells.append("infeasible")
                    continue
                cell = (f"{statistics.fmean(p['accuracy'] for p in pts):.4f} @ "
                        f"{statistics.fmean(p['latency_ms'] for p in pts):.3f}")
                cell += "" if all(p["budget_met"] for p in pts) else " ✗"
                cells.append(f"**{cell}**" if method == "hwprune" else cell)
            label = f"{fam['family']} ({d['accuracy']:.4f} @ {d['latency_ms']:.3f} ms)" if budget == result[
                "budgets"][0] else fam["family"]
            lines.append(f"| {label} | {budget}× | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data and schedule (≤ 15 min)")
    parser.add_argument("--families", help="comma-separated subset of example-cnn,resnet20")
    parser.add_argument("--table", type=Path, metavar="RESULT_JSON",
                        help="print the README's table of an earlier result (and rewrite its .md) and exit")
    args = parser.parse_args()
    if args.table:
        result = json.loads(args.table.read_text())
        args.table.with_suffix(".md").write_text(markdown_table(result) + "\n")
        print(compact_table(result))
        return 0
    name = "quick" if args.quick else "full"
    mode = MODES[name]
    if args.families:
        mode = dataclasses.replace(mode, families=tuple(args.families.split(",")))
    stem = ROOT / "benchmarks" / "results" / ("pareto_quick" if args.quick else "pareto")
    start = time.perf_counter()
    families: list[dict] = []

    def save(complete: bool) -> dict:
        """Written after every family, so a failure later keeps what was measured (`complete` says which)."""
        result = {"benchmark": "pareto", "mode": name, "complete": complete, "settings": dataclasses.asdict(mode),
                  "budgets": BUDGETS, "families": families, "summary": {f["family"]: summarise(f) for f in families},
                  "wall_s": time.perf_counter() - start, "host": provenance.host(), "versions": provenance.versions(),
                  "date": time.strftime("%Y-%m-%d")}
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        stem.with_suffix(".md").write_text(markdown_table(result) + "\n")  # every point: widths, MACs, budget met
        plot(families, stem.with_suffix(".png"))
        return result

    with tempfile.TemporaryDirectory() as tmp:
        for f in mode.families:
            families.append(run_family(f, mode, Path(tmp)))
            result = save(complete=len(families) == len(mode.families))
    for fam in families:
        s = result["summary"][fam["family"]]
        print(f"{fam['family']}: dense acc {fam['dense']['accuracy']:.4f}, {fam['dense']['latency_ms']:.4f} ms; "
              f"budget met: " + ", ".join(f"{m} {r:.0%}" for m, r in s["budget_met_rate"].items()))
        for budget, rows in s["by_budget"].items():
            line = ", ".join(f"{m} {rows[m]['accuracy_mean']:.4f}@{rows[m]['latency_ms_mean']:.4f}"
                             for m in METHODS)
            print(f"  {budget}x: {line}; margin {rows['margin_over_best_baseline_at_equal_or_lower_latency_points']}")
    print(f"wall {result['wall_s']:.0f} s; wrote {stem}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
