"""run(config, target, out_dir) → RunResult: dense training, latency table, IMP rounds, export, validation."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from hwprune import __version__, atomic, cache, export, factories, profiles, profiling, runtime, shipped, validate
from hwprune.config import ProjectConfig
from hwprune.errors import ConfigError, DataError, HwpruneError, ModelError, OutputError, ProfileError, PruningError
from hwprune.latency import LatencyOracle
from hwprune.onnxgraph import GraphTemplate, probe_widths
from hwprune.progress import NullProgress, Progress
from hwprune.prune import graph
from hwprune.prune.imp import RoundRecord, Ticket, imp_round
from hwprune.prune.masks import Masks, geometric_targets
from hwprune.runtime import KERNEL_PROTOCOL, WHOLE_MODEL_PROTOCOL, RuntimeSettings
from hwprune.search import SearchSpace, StudyPlace, open_storage, require_reachable
from hwprune.state import STATE_DIR, RunState, settings_fingerprint
from hwprune.targets import Target
from hwprune.train import accuracy, train

log = logging.getLogger(__name__)
ARTIFACTS = ("model.onnx", "model.optimized.onnx", "report.json", "report.md")


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    profiles_dir: Path
    force: bool = False
    data_dir: str | None = None
    data_limit: int | None = None  # cap on every split (tests, quick looks)
    cache_dir: Path | None = None  # where trained dense networks are kept (None: no cache)
    optimize: bool = False  # also write ONNX Runtime's offline-optimised model (model.optimized.onnx)
    storage: str | None = None  # Optuna storage URL for the searches (None: a journal file in the run state)


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
    dense_source: dict[str, Any]  # cached or trained here, cache key, seconds the training took
    breakdown: dict[str, Any]  # predicted ms per runtime kernel, dense and pruned, in graph order
    model_name: str  # built-in name or factory
    optimized_onnx: dict[str, str] | None  # ONNX Runtime's offline-optimised copy, when asked for
    rewind: str  # "lr" or "weights"
    rewind_iteration: int
    dense_iterations: int
    seconds: dict[str, float]
    host: dict[str, Any]
    versions: dict[str, str]
    onnx_path: Path
    seed: int
    channel_multiple: int


def derive_seed(seed: int, stage_name: str) -> int:
    """One user seed → an independent, reproducible seed per stage."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stage_name}".encode()).digest()[:4], "little")


def prepare_out_dir(out_dir: Path, force: bool, resuming: bool = False) -> None:
    """Refuse to overwrite earlier results without --force (files an unfinished run of the same settings
    wrote are its own, not earlier results); fail early if the folder is not writable."""
    existing = [name for name in ARTIFACTS if (out_dir / name).exists()]
    if existing and not force and not resuming:
        raise OutputError(f"{out_dir} already holds results ({', '.join(existing)})",
                          hint="pass --force to replace them, or choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()  # a fresh name, never a link someone planted
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


def build_template(model: nn.Module, example: torch.Tensor, dense_proto: onnx.ModelProto,
                   dense_widths: dict[str, int], ignore: tuple[str, ...]) -> GraphTemplate:
    """The dense graph made re-sizable: parameter shape rules from the pruning engine, constants from a probe."""
    widths = probe_widths(dense_widths)
    probe = graph.slim(model, example, Masks.full(dense_widths),
                       Masks.from_kept(dense_widths, {g: list(range(w)) for g, w in widths.items()}), ignore)
    params, conv_groups = graph.shape_rules(model, example, ignore)
    return GraphTemplate.build(dense_proto, export.export(probe, example), dense_widths, widths, params, conv_groups)


@dataclass
class Dense:
    """What the dense stage hands on: the trained network, θ_k and the data."""

    model: nn.Module
    theta_k: nn.Module
    example: torch.Tensor
    data: tuple
    widths: dict[str, int]
    accuracy: float
    rewind_at: int
    iterations: int
    training_seconds: float = 0.0  # of the training that produced it (an earlier run's, when cached)
    cached: bool = False  # loaded from the dense cache rather than trained in this run
    cache_key: str | None = None

    def for_batch(self, batch: int) -> Dense:
        """The same network with an example input of another target's batch size."""
        return dataclasses.replace(self, example=torch.zeros((batch, *self.example.shape[1:])))


def train_dense(config: ProjectConfig, target: Target, options: RunOptions, progress: Progress,
                state: RunState | None = None) -> Dense:
    """Build model and data from their factories and train densely, keeping the weights at the rewind point;
    or load that result from the dense cache (or the run's state) when model, data, recipe and seed are
    unchanged. With a run state, training checkpoints every epoch there and resumes from it."""
    data = factories.build_data(config.data.factory, config.base_dir,
                                options.data_dir or config.data.data_dir or None, config.seed)
    if options.data_limit:
        data = tuple(torch.utils.data.Subset(d, range(min(options.data_limit, len(d)))) for d in data)
    factories.check_samples(data, config.model.input_shape, config.data.factory)
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = factories.build_model(config.model.factory, config.base_dir)
    example = torch.zeros((target.batch, *config.model.input_shape[1:]))
    factories.check_input(model, example, config.model.factory)
    widths = {g.name: g.width for g in graph.channel_groups(model, example, config.model.ignore)}
    train_set, _, test_set = data
    key = cache.dense_key(config, model, data)
    stores = [d for d in (options.cache_dir, state.dir if state else None) if d is not None]
    entry, where = next(((e, d) for d in stores if (e := cache.load(d, key)) is not None), (None, None))
    if entry is not None:
        theta_k = copy.deepcopy(model)
        model.load_state_dict(entry.model_state)
        theta_k.load_state_dict(entry.theta_k_state)
        progress.note(f"dense model from {where / f'dense-{key}.pt'} (trained in {entry.training_seconds:.0f} s, "
                      f"test accuracy {entry.accuracy:.4f})")
        return Dense(model.eval(), theta_k.eval(), example, data, widths, entry.accuracy, entry.rewind_at,
                     entry.iterations, entry.training_seconds, True, key)
    start = time.perf_counter()
    iterations = config.train.epochs * -(-len(train_set) // config.train.batch_size)
    rewind_at = max(1, int(round(iterations * config.imp.rewind_fraction)))
    snapshots: list[nn.Module] = []
    checkpoint = state.path(f"dense-{key}.training.pt") if state else None
    train(model, train_set, config.train, config.train.epochs, derive_seed(config.seed, "dense"), progress,
          "dense training", snapshot_at=rewind_at, on_snapshot=snapshots.append, resume_file=checkpoint,
          fault_label="dense")
    dense = Dense(model, snapshots[0].eval(), example, data, widths, accuracy(model, test_set), rewind_at,
                  iterations, time.perf_counter() - start, False, key if options.cache_dir else None)
    entry = cache.DenseEntry(model.state_dict(), dense.theta_k.state_dict(), dense.accuracy, rewind_at, iterations,
                             dense.training_seconds)
    if state and stores[0] == state.dir:
        state.path(f"dense-{key}.pt")  # listed before cache.store writes it there, so --force knows it
    for store in stores[:1]:  # the cache when there is one (a resumed run finds it there), else the run state
        cache.store(store, key, entry)
    if state:
        state.mark("dense")
        checkpoint.unlink(missing_ok=True)
    return dense


def channel_multiple(target: Target, profile: profiles.DeviceProfile, progress: Progress) -> int:
    """The step the search takes in channels: the target's, else the profile's (measured by an alignment
    sweep the first time a profile is used on its device, or stated by an analytic profile), else 8."""
    if profile.measured_here and profile.alignment is None:
        profile.alignment = profiling.alignment_sweep(profile.settings, progress=progress).to_json()
        profile.save()
    return target.channel_multiple or profile.preferred_multiple or 8


def latency_oracle(dense: Dense, dense_proto: onnx.ModelProto, config: ProjectConfig, target: Target,
                    settings: RuntimeSettings, options: RunOptions, progress: Progress) -> tuple[LatencyOracle, int]:
    """Template of the trained architecture, the target's profile (opened or created), calibration, and the
    channel multiple the search steps by (the target's, else the one the profile measured or states)."""
    template = build_template(dense.model, dense.example, dense_proto, dense.widths, config.model.ignore)
    profile = profiles.open_profile(target.profile, settings, options.profiles_dir, target.arch)
    if profile.analytic is not None:
        log.warning("target '%s' rests on an analytic profile (a roofline from published specs, never measured): "
                    "every latency in this run is a prediction; run `hwprune profile --target %s` on the device "
                    "to measure it", target.name, target.name)
    elif not profile.measured_here:
        log.warning("%s is not measured on this host: latencies are predicted, not measured", profile.describe())
    multiple = channel_multiple(target, profile, progress)
    oracle = LatencyOracle(template, profile, KERNEL_PROTOCOL, progress)
    oracle.calibrate(dense.widths, multiple, derive_seed(config.seed, "calibration"))
    return oracle, multiple


class Imp:
    """Iterative magnitude pruning of one dense network: rounds of search, keep, rewind, retrain.

    `predict` is the latency model the search obeys (the target's table in the product; benchmarks swap
    in others, e.g. a FLOPs-proportional one). Masks only shrink from round to round.
    """

    def __init__(self, dense: Dense, predict: Callable[[dict[str, int]], float], multiple: int,
                 config: ProjectConfig, progress: Progress = NullProgress(), state: RunState | None = None,
                 studies: Callable[[int], StudyPlace] | None = None) -> None:
        self.dense, self.predict, self.multiple, self.config, self.progress = dense, predict, multiple, config, progress
        self.state, self.studies = state, studies
        self.ticket = Ticket(Masks.full(dense.widths), copy.deepcopy(dense.model))
        self.rounds: list[RoundRecord] = []

    def round(self, target_ms: float, final: bool = True) -> RoundRecord:
        """One more round (or its saved result, when an earlier, killed run finished it); `final` = False for
        a scheduled round that a later one prunes further."""
        number = len(self.rounds) + 1
        saved = self.state.load(f"round-{number}.pt") if self.state else None
        if saved is not None:
            masks = Masks.from_kept(dict(self.dense.widths), saved["kept"])
            model = graph.slim(self.dense.model, self.dense.example, Masks.full(self.dense.widths), masks,
                               self.config.model.ignore)
            model.load_state_dict(saved["model"])
            self.ticket, record = Ticket(masks, model.eval()), RoundRecord(**saved["record"])
            self.progress.note(f"round {number}: finished by an earlier run, loaded from {self.state.dir}")
        else:
            place = self.studies(number) if self.studies else None
            self.ticket, record, _ = imp_round(number, target_ms, self.ticket, self.dense.theta_k,
                                               self.dense.example, self.predict, self.multiple, self.dense.data,
                                               self.config, derive_seed(self.config.seed, f"round{number}"),
                                               self.progress, teacher=self.dense.model, final=final, place=place)
            if self.state:
                self.state.save(f"round-{number}.pt", {"kept": self.ticket.masks.to_json(),
                                                        "model": self.ticket.model.state_dict(),
                                                        "record": asdict(record)})
                self.state.mark(f"round{number}")
        self.rounds.append(record)
        return record

    def schedule(self, start_ms: float, final_ms: float) -> None:
        """`config.imp.rounds` rounds whose targets step geometrically from `start_ms` down to `final_ms`
        (refused before the first round when no network the search may build meets `final_ms`)."""
        widths = self.ticket.masks.widths()
        require_reachable(SearchSpace(self.dense.widths, widths, self.config.search.max_prune_rate, self.multiple),
                          self.predict, final_ms)
        targets = geometric_targets(start_ms, final_ms, self.config.imp.rounds)
        for number, target_ms in enumerate(targets, 1):
            self.round(target_ms, final=number == len(targets))

    def meet_measured(self, dense_proto: onnx.ModelProto, settings: RuntimeSettings,
                      budget_for: Callable[[float], float]) -> MeasuredTicket:
        """Export the ticket and time it side by side with the dense model; while it misses
        `budget_for(dense median ms)` and `config.imp.extra_rounds` allow, run one more round whose target is
        tightened by the measured miss. Side by side (interleaved), a relative budget is judged on a ratio
        that load drift cannot fake."""
        margin = 1.0 - self.config.imp.safety_margin
        while True:
            proto = export.export(self.ticket.model, self.dense.example)
            dense_stats, stats = runtime.time_side_by_side([dense_proto, proto], settings)
            budget_ms = budget_for(dense_stats.median_ms)
            extra_rounds_done = len(self.rounds) - self.config.imp.rounds
            if stats.median_ms <= budget_ms or extra_rounds_done >= self.config.imp.extra_rounds:
                return MeasuredTicket(proto, dense_stats, stats, budget_ms)
            tighter = self.predict(self.ticket.masks.widths()) * (budget_ms / stats.median_ms) * margin
            log.warning("measured %.4f ms misses the %.4f ms budget; extra round at predicted ≤ %.4f ms",
                        stats.median_ms, budget_ms, tighter)
            self.round(tighter)


@dataclass(frozen=True)
class MeasuredTicket:
    """The final ticket's export and its side-by-side timing against the dense model."""

    proto: onnx.ModelProto
    dense: runtime.LatencyStats
    pruned: runtime.LatencyStats
    budget_ms: float


def open_state(config: ProjectConfig, target: Target, options: RunOptions) -> RunState:
    """The output folder checked and its run state opened (resumed when an unfinished run of the same
    settings left one; refused when other settings did, or when finished results are there, unless --force)."""
    fp, stages = earlier_run(config, target, options)
    unfinished = stages is not None and "finished" not in stages
    prepare_out_dir(options.out_dir, options.force, resuming=unfinished)
    state, resuming = RunState.open(options.out_dir, fp, options.force)
    if resuming:
        log.warning("resuming the unfinished run in %s (finished: %s)", options.out_dir,
                    ", ".join(state.stages()) or "nothing yet")
    return state


def study_places(options: RunOptions, state: RunState, target: Target) -> Callable[[int], StudyPlace]:
    """Round number → where its Optuna study lives (named by the run's settings, so workers given the same
    settings and storage share it and other runs never mix in)."""
    storage, shared = open_storage(options.storage, state.journal())
    worker = f"{socket.gethostname()}-{os.getpid()}"
    return lambda number: StudyPlace(storage, f"hwprune-{state.fingerprint}-{target.name}-round{number}",
                                     f"round{number}", shared, worker)


def run(config: ProjectConfig, target: Target, options: RunOptions, progress: Progress = NullProgress(),
        dense: Dense | None = None, dense_seconds: float = 0.0, state: RunState | None = None,
        studies: Callable[[int], StudyPlace] | None = None) -> RunResult:
    """The whole job for one target; `dense` reuses a dense stage already trained (`dense_seconds` ago, counted
    in this target's timings); `state` is the run state `open_state` opened (opened here when None). Every
    finished stage is saved in it, so the same call after a kill continues where it stopped. Raises
    HwpruneError subclasses for anything the user can fix."""
    timings: dict[str, float] = {}
    clock = time.perf_counter() - dense_seconds
    state = state or open_state(config, target, options)
    torch.set_num_threads(config.train.threads)
    settings = RuntimeSettings(target.providers, target.intra_op_threads, target.graph_optimization)
    studies = studies or study_places(options, state, target)

    dense = (train_dense(config, target, options, progress, state) if dense is None
             else dense.for_batch(target.batch))
    example = dense.example
    timings["dense_training_s"] = time.perf_counter() - clock

    t0 = time.perf_counter()
    dense_proto = export.export(dense.model, example)
    oracle, multiple = latency_oracle(dense, dense_proto, config, target, settings, options, progress)
    measured_here = oracle.profile.measured_here
    dense_predicted = oracle(dense.widths)
    dense_planning_ms = (runtime.time_model(dense_proto, settings, WHOLE_MODEL_PROTOCOL).median_ms
                         if measured_here else dense_predicted)
    budget_ms = target.budget.resolve_ms(dense_planning_ms)
    timings["latency_table_s"] = time.perf_counter() - t0

    # IMP rounds. The schedule runs in the latency model's units (scaled by its dense error), ending at
    # the budget less the safety margin.
    t0 = time.perf_counter()
    margin = 1.0 - config.imp.safety_margin
    imp = Imp(dense, oracle, multiple, config, progress, state, studies)
    imp.schedule(dense_predicted, budget_ms * margin * dense_predicted / dense_planning_ms)

    # Export and validate; where the target runs here, tighten while the measured latency misses the budget.
    if measured_here:
        measured = imp.meet_measured(dense_proto, settings, target.budget.resolve_ms)
        proto, budget_ms = measured.proto, measured.budget_ms
        dense_latency, dense_p90 = measured.dense.median_ms, measured.dense.p90_ms
        latency, p90 = measured.pruned.median_ms, measured.pruned.p90_ms
    else:
        proto = export.export(imp.ticket.model, example)
        dense_latency, dense_p90 = dense_planning_ms, None
        latency, p90 = oracle(imp.ticket.masks.widths()), None
    ticket, rounds = imp.ticket, imp.rounds
    predicted = oracle(ticket.masks.widths())
    timings["imp_s"] = time.perf_counter() - t0

    test_set = dense.data[2]
    samples = ([test_set[i][0].unsqueeze(0) for i in range(min(16, len(test_set)))] if example.shape[0] == 1
               else [torch.rand(example.shape)])
    numerics_settings = runtime.runnable_here(settings)
    numerics = validate.compare_outputs(proto, ticket.model, samples, numerics_settings)
    source = "measured" if measured_here else "predicted"
    dense_summary = ModelSummary(dense.accuracy, dense_latency, source, dense_predicted,
                                 *graph.count_macs_params(dense.model, example), dense_p90, dense.widths)
    pruned = ModelSummary(accuracy(ticket.model, test_set), latency, source, predicted,
                          *graph.count_macs_params(ticket.model, example), p90, ticket.masks.widths())
    budget_met = latency <= budget_ms
    onnx_path = options.out_dir / "model.onnx"
    proto_with_metadata = export.with_metadata(proto, _metadata(target, budget_ms, budget_met, dense_summary, pruned,
                                                                 oracle))
    atomic.write_bytes(onnx_path, proto_with_metadata.SerializeToString())
    optimized = None
    if options.optimize:
        level = shipped.write_optimized(proto_with_metadata, target, measured_here,
                                        options.out_dir / "model.optimized.onnx")
        optimized = {"file": "model.optimized.onnx", "graph_optimization": level}
    timings["total_s"] = time.perf_counter() - clock
    profile, calibration = oracle.profile, oracle.model.calibration
    return RunResult(
        target=target, budget_ms=budget_ms, budget_met=budget_met, dense=dense_summary, pruned=pruned,
        rounds=tuple(rounds), dense_widths=dense.widths, kept=ticket.masks.to_json(),
        profile={"id": profile.id, "provenance": profile.provenance.get("kind"), "host": profile.provenance.get("host"),
                 "measured_here": measured_here, "entries": len(profile.entries),
                 "kernels_measured_this_run": oracle.measured_kernels, "overhead_ms": profile.overhead_ms,
                 "path": str(profile.path)},
        calibration=None if calibration is None else {**asdict(calibration), "architecture": oracle.template.key},
        numerics={"max_abs_diff": numerics.max_abs_diff, "samples": numerics.samples, "tolerance": numerics.tolerance,
                  "providers": list(numerics_settings.providers)},
        channel_multiple=multiple,
        breakdown=_breakdown(oracle, dense.widths, ticket.masks.widths()), model_name=config.model.factory,
        optimized_onnx=optimized,
        dense_source={"cached": dense.cached, "cache_key": dense.cache_key,
                      "training_seconds": dense.training_seconds},
        rewind=config.imp.rewind, rewind_iteration=dense.rewind_at, dense_iterations=dense.iterations,
        seconds=timings, host=_host(),
        versions=_versions(), onnx_path=onnx_path, seed=config.seed,
    )


def _breakdown(oracle: LatencyOracle, dense_widths: dict[str, int], widths: dict[str, int]) -> dict[str, Any]:
    """Where the time goes: each runtime kernel's table entry (before calibration), dense and pruned."""
    def kernels(w: dict[str, int]) -> list[dict[str, Any]]:
        return [{"op": op, "ms": ms} for op, ms in oracle.predict(w).per_kernel_ms]

    return {"source": oracle.predict(widths).source, "dense": kernels(dense_widths), "pruned": kernels(widths)}


def _metadata(target: Target, budget_ms: float, budget_met: bool, dense: ModelSummary, pruned: ModelSummary,
              oracle: LatencyOracle) -> dict[str, str]:
    """What a shipped model carries about how it was made (ONNX metadata_props)."""
    return {
        "hwprune.version": __version__, "hwprune.target": target.name, "hwprune.budget_ms": f"{budget_ms:.6f}",
        "hwprune.latency_ms": f"{pruned.latency_ms:.6f}", "hwprune.latency_source": pruned.latency_source,
        "hwprune.predicted_latency_ms": f"{pruned.predicted_latency_ms:.6f}",
        "hwprune.budget_met": str(budget_met).lower(), "hwprune.test_accuracy": f"{pruned.accuracy:.4f}",
        "hwprune.dense_test_accuracy": f"{dense.accuracy:.4f}",
        "hwprune.dense_latency_ms": f"{dense.latency_ms:.6f}",
        "hwprune.widths": ",".join(f"{g}={w}" for g, w in pruned.widths.items()),
        "hwprune.profile": oracle.profile.id,
        "hwprune.created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class TargetOutcome:
    target: Target
    out_dir: Path
    result: RunResult | None
    error: HwpruneError | None  # what stopped this target (the others still run)
    state: RunState | None = None  # `finish()` it once the report is written
    finished_before: bool = False  # an earlier run of this command finished this target (report.json there)


def run_targets(config: ProjectConfig, targets: list[Target], options: RunOptions, out_dirs: dict[str, Path],
                progress: Progress = NullProgress()) -> Iterator[TargetOutcome]:
    """One dense training (or cache hit), then IMP, export and validation per target, in order.

    Every output folder is checked before anything runs. A target-specific failure (infeasible budget,
    profile, export) is reported for that target and the others go on; model, data and config errors
    concern all targets and stop the run. The output folders stay locked against other runs (RunState.open)
    until the generator is exhausted or closed, so the caller writes each report while they still are.
    """
    states: dict[str, RunState] = {}
    try:
        yield from _run_targets(config, targets, options, out_dirs, progress, states)
    finally:
        for state in states.values():
            state.release()


def _run_targets(config: ProjectConfig, targets: list[Target], options: RunOptions, out_dirs: dict[str, Path],
                 progress: Progress, states: dict[str, RunState]) -> Iterator[TargetOutcome]:
    """run_targets' work; every state it opens goes into `states` at once, for run_targets to release."""
    done = {t.name for t in targets if finished_here(config, t, dataclasses.replace(options, out_dir=out_dirs[t.name]))}
    if done and len(done) < len(targets) and not options.force:  # resuming a run that finished some targets
        targets_to_run = [t for t in targets if t.name not in done]
    else:
        targets_to_run = targets
    for t in targets_to_run:
        states[t.name] = open_state(config, t, dataclasses.replace(options, out_dir=out_dirs[t.name]))
    studies = {t.name: study_places(options, states[t.name], t) for t in targets_to_run}  # bad --storage: now
    unusable = {t.name: problem for t in targets_to_run if (problem := profile_problem(t, options))}
    dense: Dense | None = None
    for target in targets:
        target_options = dataclasses.replace(options, out_dir=out_dirs[target.name])
        if target not in targets_to_run:
            progress.note(f"{target.name}: finished by an earlier run of this command ({target_options.out_dir})")
            yield TargetOutcome(target, target_options.out_dir, None, None, finished_before=True)
            continue
        if target.name in unusable:  # found before training anything
            yield TargetOutcome(target, target_options.out_dir, None, unusable[target.name], states[target.name])
            continue
        try:
            dense_seconds = 0.0  # counted in the timings of the target that trained (or loaded) it
            if dense is None:
                torch.set_num_threads(config.train.threads)
                start = time.perf_counter()
                dense = train_dense(config, target, target_options, progress, states[targets_to_run[0].name])
                dense_seconds = time.perf_counter() - start
            result = run(config, target, target_options, progress, dense, dense_seconds, states[target.name],
                         studies[target.name])
            yield TargetOutcome(target, target_options.out_dir, result, None, states[target.name])
        except (ConfigError, DataError, ModelError, PruningError):
            raise
        except HwpruneError as exc:
            yield TargetOutcome(target, target_options.out_dir, None, exc)


def profile_problem(target: Target, options: RunOptions) -> ProfileError | None:
    """A target's profile that cannot be used (bad schema, measured where ONNX Runtime builds other graphs,
    other runtime settings, a device this host cannot measure), found before the dense training."""
    settings = RuntimeSettings(target.providers, target.intra_op_threads, target.graph_optimization)
    logger = logging.getLogger(profiles.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)  # its warnings come when the run opens the profile for real
    try:
        profiles.open_profile(target.profile, settings, options.profiles_dir, target.arch)
    except ProfileError as exc:
        return exc
    finally:
        logger.setLevel(level)
    return None


def finished_here(config: ProjectConfig, target: Target, options: RunOptions) -> bool:
    """Whether the output folder holds this exact run, finished (report written)."""
    _, stages = earlier_run(config, target, options)
    return stages is not None and "finished" in stages and (options.out_dir / "report.json").exists()


def earlier_run(config: ProjectConfig, target: Target, options: RunOptions) -> tuple[str, list[str] | None]:
    """(this run's settings fingerprint, the stages an earlier run of the same settings finished in the output
    folder; None when there is none or it had other settings)."""
    fp = settings_fingerprint(config, target, options.data_dir, options.data_limit)
    try:
        info = RunState(options.out_dir / STATE_DIR, fp).info() if (options.out_dir / STATE_DIR).is_dir() else None
    except OutputError:
        if not options.force:
            raise
        info = None  # unreadable: --force discards it (RunState.open)
    return fp, (list(info.get("stages", [])) if info and info.get("fingerprint") == fp else None)


@dataclass(frozen=True)
class ProfileResult:
    path: Path
    build: profiling.TableBuild
    preferred_multiple: int
    replaced: Path | None  # where an analytic profile this measurement replaces was moved


def profile_target(config: ProjectConfig, target: Target, profiles_dir: Path, networks: int,
                   progress: Progress = NullProgress()) -> ProfileResult:
    """`hwprune profile`: measure the target's table for the configured model's search space on this host."""
    if target.arch and target.arch != platform.machine():
        raise ProfileError(f"this {platform.machine()} host cannot measure the {target.arch} target '{target.name}'",
                           hint=f"run `hwprune profile --target {target.name}` on the device and copy "
                                f"{profiles_dir / (target.profile + '.json')} here")
    settings = RuntimeSettings(target.providers, target.intra_op_threads, target.graph_optimization)
    path = profiles_dir / f"{target.profile}.json"
    replaced = None
    if path.exists():
        existing = profiles.DeviceProfile.load(path)
        if existing.analytic is not None:
            replaced = path.with_suffix(".analytic.json")
            if replaced.exists():
                raise OutputError(f"{replaced} already exists", hint="move it away; it would be overwritten")
            path.replace(replaced)
        elif existing.host_mismatches():
            raise ProfileError(f"{path} was measured on another host ({'; '.join(existing.host_mismatches())})",
                               hint="move it away to measure this host into a new profile")
    profiles_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = factories.build_model(config.model.factory, config.base_dir).eval()
    example = torch.zeros((target.batch, *config.model.input_shape[1:]))
    factories.check_input(model, example, config.model.factory)
    widths = {g.name: g.width for g in graph.channel_groups(model, example, config.model.ignore)}
    template = build_template(model, example, export.export(model, example), widths, config.model.ignore)
    profile = profiles.open_profile(target.profile, settings, profiles_dir, target.arch)
    multiple = channel_multiple(target, profile, progress)
    oracle = LatencyOracle(template, profile, KERNEL_PROTOCOL, progress)
    build = profiling.build_table(oracle, widths, multiple, config.search.max_prune_rate, networks,
                                  derive_seed(config.seed, "profile"), progress)
    return ProfileResult(path, build, multiple, replaced)
