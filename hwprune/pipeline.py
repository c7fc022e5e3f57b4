"""run(config, target, out_dir) → RunResult: dense training, latency table, IMP rounds, export, validation."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import logging
import platform
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from hwprune import __version__, export, factories, profiles, runtime, validate
from hwprune.config import ProjectConfig
from hwprune.errors import OutputError
from hwprune.latency import LatencyModel
from hwprune.onnxgraph import GraphTemplate, probe_widths
from hwprune.progress import NullProgress, Progress, stage
from hwprune.prune import graph
from hwprune.prune.imp import RoundRecord, Ticket, imp_round
from hwprune.prune.masks import Masks, geometric_targets
from hwprune.runtime import WHOLE_MODEL_PROTOCOL, RuntimeSettings, TimingProtocol
from hwprune.targets import Target
from hwprune.train import accuracy, train

log = logging.getLogger(__name__)
ARTIFACTS = ("model.onnx", "report.json", "report.md")


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    profiles_dir: Path
    force: bool = False
    data_dir: str | None = None
    data_limit: int | None = None  # cap on every split (tests, quick looks)


@dataclass(frozen=True)
class ModelSummary:
    accuracy: float
    latency_ms: float
    latency_source: str  # "measured" or "predicted"
    predicted_latency_ms: float
    macs: int
    params: int
    latency_p90_ms: float | None = None
    widths: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    target: Target
    budget_ms: float
    budget_met: bool
    dense: ModelSummary
    pruned: ModelSummary
    rounds: tuple[RoundRecord, ...]
    dense_widths: dict[str, int]
    kept: dict[str, list[int]]
    profile: dict[str, Any]
    calibration: dict[str, Any] | None
    numerics: dict[str, Any]
    rewind_iteration: int
    dense_iterations: int
    seconds: dict[str, float]
    host: dict[str, Any]
    versions: dict[str, str]
    onnx_path: Path
    seed: int


def derive_seed(seed: int, stage_name: str) -> int:
    """One user seed → an independent, reproducible seed per stage."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stage_name}".encode()).digest()[:4], "little")


def prepare_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse to overwrite earlier results without --force; fail early if the folder is not writable."""
    existing = [name for name in ARTIFACTS if (out_dir / name).exists()]
    if existing and not force:
        raise OutputError(f"{out_dir} already holds results ({', '.join(existing)})",
                          hint="pass --force to replace them, or choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".hwprune-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to {out_dir}: {exc.strerror}", hint="choose a writable --out") from None


def _host() -> dict[str, Any]:
    fp = profiles.HostFingerprint.current()
    return {"hostname": socket.gethostname(), "cpu": fp.cpu, "arch": fp.arch, "isa": list(fp.isa),
            "cores": fp.cores, "python": platform.python_version()}


def _versions() -> dict[str, str]:
    import optuna
    import torch_pruning
    return {"hwprune": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": runtime.version(), "optuna": optuna.__version__, "torch_pruning": torch_pruning.__version__}


class LatencyOracle:
    """Predicts a width configuration's latency, measuring missing kernels on first need when it can."""

    def __init__(self, template: GraphTemplate, profile: profiles.DeviceProfile, protocol: TimingProtocol,
                 progress: Progress) -> None:
        self.template = template
        self.profile = profile
        self.model = LatencyModel(profile, template.key)
        self.protocol = protocol
        self.progress = progress
        self.measured_kernels = 0

    def ensure(self, widths_list: list[dict[str, int]]) -> None:
        kernels = [k for w in widths_list for k in self.template.kernels(w)]
        missing = {k.signature for k in kernels} - set(self.profile.entries)
        if missing and self.profile.measured_here:
            with stage(self.progress, "measuring latency table", len(missing), transient=True) as bar:
                self.measured_kernels += profiles.measure_missing(
                    self.profile, kernels, self.protocol, lambda i, n: bar.advance(1, f"kernel {i}/{n}"))

    def __call__(self, widths: dict[str, int]) -> float:
        self.ensure([widths])
        return self.model.predict(self.template.kernels(widths)).latency_ms

    def calibrate(self, dense_widths: dict[str, int], multiple: int, seed: int) -> profiles.Calibration | None:
        """Fit Σ-kernels → whole-model latency on networks measured here (dense, uniform and random widths)."""
        if self.model.calibration is not None or not self.profile.measured_here:
            return self.model.calibration
        rng = random.Random(seed)
        configs = [dense_widths]
        configs += [{g: max(multiple, multiple * round(w * f / multiple)) for g, w in dense_widths.items()}
                    for f in (0.75, 0.5, 0.35)]
        configs += [{g: max(multiple, multiple * rng.randint(1, max(1, w // multiple))) for g, w in
                     dense_widths.items()} for _ in range(3)]
        self.ensure(configs)
        sums, measured = [], []
        with stage(self.progress, "calibrating latency model", len(configs)) as bar:
            for i, widths in enumerate(configs):
                sums.append(self.model.kernel_sum_ms(self.template.kernels(widths))[0])
                measured.append(runtime.time_model(self.template.instantiate(widths, seed=i),
                                                   self.profile.settings, WHOLE_MODEL_PROTOCOL).median_ms)
                bar.advance(1)
        calibration = profiles.fit_calibration(sums, measured)
        self.profile.calibrations[self.template.key] = calibration
        self.profile.save()
        return calibration


def build_template(model: nn.Module, example: torch.Tensor, dense_proto: onnx.ModelProto,
                   dense_widths: dict[str, int], ignore: tuple[str, ...]) -> GraphTemplate:
    """The dense graph made re-sizable: parameter shape rules from the pruning engine, constants from a probe."""
    widths = probe_widths(dense_widths)
    probe = graph.slim(model, example, Masks.full(dense_widths),
                       Masks.from_kept(dense_widths, {g: list(range(w)) for g, w in widths.items()}), ignore)
    params, conv_groups = graph.shape_rules(model, example, ignore)
    return GraphTemplate.build(dense_proto, export.export(probe, example), dense_widths, widths, params, conv_groups)


def run(config: ProjectConfig, target: Target, options: RunOptions, progress: Progress = NullProgress()
        ) -> RunResult:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    prepare_out_dir(options.out_dir, options.force)
    torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.seed)
    settings = RuntimeSettings(target.providers, target.intra_op_threads, target.graph_optimization)

    # -- model, data --------------------------------------------------------------------------------------
    data = factories.build_data(config.data.factory, config.base_dir,
                                options.data_dir or config.data.data_dir or None, config.seed)
    if options.data_limit:
        data = tuple(torch.utils.data.Subset(d, range(min(options.data_limit, len(d)))) for d in data)
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = factories.build_model(config.model.factory, config.base_dir)
    example = torch.zeros(tuple(config.model.input_shape))
    if target.batch != example.shape[0]:
        example = torch.zeros((target.batch, *example.shape[1:]))
    groups = graph.channel_groups(model, example, config.model.ignore)
    dense_widths = {g.name: g.width for g in groups}

    # -- dense training, keeping θ_k ----------------------------------------------------------------------
    train_set, val_set, test_set = data
    iterations = config.train.epochs * -(-len(train_set) // config.train.batch_size)
    rewind_at = max(1, int(round(iterations * config.imp.rewind_fraction)))
    snapshots: list[nn.Module] = []
    train(model, train_set, config.train, config.train.epochs, derive_seed(config.seed, "dense"), progress,
          "dense training", snapshot_at=rewind_at, on_snapshot=lambda m: snapshots.append(copy.deepcopy(m)))
    theta_k = snapshots[0].eval()
    dense_accuracy = accuracy(model, test_set)
    timings["dense_training_s"] = time.perf_counter() - clock

    # -- latency: template, profile, calibration, dense latency -------------------------------------------
    t0 = time.perf_counter()
    dense_proto = export.export(model, example)
    full = Masks.full(dense_widths)
    template = build_template(model, example, dense_proto, dense_widths, config.model.ignore)
    profile = profiles.open_profile(target.profile, settings, options.profiles_dir, target.arch)
    if not profile.measured_here:
        log.warning("%s is not measured on this host: latencies are predicted, not measured", profile.describe())
    oracle = LatencyOracle(template, profile, TimingProtocol(), progress)
    calibration = oracle.calibrate(dense_widths, target.channel_multiple, derive_seed(config.seed, "calibration"))
    dense_predicted = oracle(dense_widths)
    if profile.measured_here:
        dense_stats = runtime.time_model(dense_proto, settings, WHOLE_MODEL_PROTOCOL)
        dense_latency, dense_p90, dense_source = dense_stats.median_ms, dense_stats.p90_ms, "measured"
    else:
        dense_latency, dense_p90, dense_source = dense_predicted, None, "predicted"
    budget_ms = target.budget.resolve_ms(dense_latency)
    timings["latency_table_s"] = time.perf_counter() - t0

    # -- IMP rounds ---------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    margin = 1.0 - config.imp.safety_margin
    ticket = Ticket(full, copy.deepcopy(model))
    rounds: list[RoundRecord] = []
    # the schedule starts from the dense latency as the latency model sees it, so the last target is the budget
    for r, target_ms in enumerate(geometric_targets(dense_predicted, budget_ms * margin * dense_predicted
                                                    / dense_latency, config.imp.rounds), 1):
        ticket, record, _ = imp_round(r, target_ms, ticket, theta_k, example, oracle, target.channel_multiple,
                                      data, config, derive_seed(config.seed, f"round{r}"), progress)
        rounds.append(record)

    # -- export, validate, and tighten while the measured latency misses the budget -----------------------
    # Dense and pruned are timed side by side (interleaved), so a relative budget is judged on a ratio
    # that machine-load drift cannot fake.
    while True:
        proto = export.export(ticket.model, example)
        predicted = oracle(ticket.masks.widths())
        if not profile.measured_here:
            latency, p90, source = predicted, None, "predicted"
            break
        dense_stats, stats = runtime.time_side_by_side([dense_proto, proto], settings)
        dense_latency, dense_p90 = dense_stats.median_ms, dense_stats.p90_ms
        budget_ms = target.budget.resolve_ms(dense_latency)
        latency, p90, source = stats.median_ms, stats.p90_ms, "measured"
        extra = len(rounds) - config.imp.rounds
        if latency <= budget_ms or extra >= config.imp.extra_rounds:
            break
        tighter = predicted * (budget_ms / latency) * margin
        log.warning("measured %.4f ms misses the %.4f ms budget; extra round at predicted ≤ %.4f ms",
                    latency, budget_ms, tighter)
        r = len(rounds) + 1
        ticket, record, _ = imp_round(r, tighter, ticket, theta_k, example, oracle, target.channel_multiple,
                                      data, config, derive_seed(config.seed, f"round{r}"), progress)
        rounds.append(record)
    timings["imp_s"] = time.perf_counter() - t0

    test_inputs = [test_set[i][0].unsqueeze(0) for i in range(min(16, len(test_set)))]
    if example.shape[0] == 1:
        numerics = validate.compare_outputs(proto, ticket.model, test_inputs, settings)
    else:
        numerics = validate.compare_outputs(proto, ticket.model, [torch.rand(example.shape)], settings)
    pruned_accuracy = accuracy(ticket.model, test_set)
    dense_macs, dense_params = graph.count_macs_params(model, example)
    macs, params = graph.count_macs_params(ticket.model, example)
    budget_met = latency <= budget_ms

    dense = ModelSummary(dense_accuracy, dense_latency, dense_source, dense_predicted, dense_macs, dense_params,
                         dense_p90, dense_widths)
    pruned = ModelSummary(pruned_accuracy, latency, source, predicted, macs, params, p90, ticket.masks.widths())
    onnx_path = options.out_dir / "model.onnx"
    metadata = {
        "hwprune.version": __version__, "hwprune.target": target.name, "hwprune.budget_ms": f"{budget_ms:.6f}",
        "hwprune.latency_ms": f"{latency:.6f}", "hwprune.latency_source": source,
        "hwprune.predicted_latency_ms": f"{predicted:.6f}", "hwprune.budget_met": str(budget_met).lower(),
        "hwprune.test_accuracy": f"{pruned_accuracy:.4f}", "hwprune.dense_test_accuracy": f"{dense_accuracy:.4f}",
        "hwprune.widths": ",".join(f"{g}={w}" for g, w in ticket.masks.widths().items()),
        "hwprune.profile": profile.id, "hwprune.created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    from hwprune import atomic
    atomic.write_bytes(onnx_path, export.with_metadata(proto, metadata).SerializeToString())
    timings["total_s"] = time.perf_counter() - clock
    return RunResult(
        target=target, budget_ms=budget_ms, budget_met=budget_met, dense=dense, pruned=pruned,
        rounds=tuple(rounds), dense_widths=dense_widths, kept=ticket.masks.to_json(),
        profile={"id": profile.id, "provenance": profile.provenance.get("kind"), "host": profile.provenance.get("host"),
                 "measured_here": profile.measured_here, "entries": len(profile.entries),
                 "kernels_measured_this_run": oracle.measured_kernels, "overhead_ms": profile.overhead_ms,
                 "path": str(profile.path)},
        calibration=None if calibration is None else {**calibration.__dict__, "architecture": template.key},
        numerics={"max_abs_diff": numerics.max_abs_diff, "samples": numerics.samples, "tolerance": numerics.tolerance},
        rewind_iteration=rewind_at, dense_iterations=iterations, seconds=timings, host=_host(), versions=_versions(),
        onnx_path=onnx_path, seed=config.seed,
    )
