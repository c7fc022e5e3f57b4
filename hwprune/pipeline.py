"""The whole job, from a config and a target to a finished run folder.

`run` does one target: dense stage (trained or reused), latency predictor (the target's profile, opened or
created, calibrated), IMP rounds, export, validation, and then it finishes what it started: model.onnx,
report.json and report.md written, the run state marked finished and its lock let go. `run_targets` does
several targets with one dense training; `profile_target` is `hwprune profile`. Nothing here prints: the
CLI shows what a run returns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from hwprune import (
    __version__,
    atomic,
    compute,
    export,
    inputs,
    measure,
    objective,
    paths,
    profiles,
    provenance,
    remote,
    report,
    runtime,
    validate,
)
from hwprune.config import ProjectConfig
from hwprune.dense import Dense, build_model, channel_widths, train_dense
from hwprune.device import LOCAL, Device
from hwprune.errors import (
    ConfigError,
    DataError,
    HwpruneError,
    ModelError,
    OutputError,
    ProfileError,
    PruningError,
    ReportError,
)
from hwprune.imp import Imp
from hwprune.latency import LatencyPredictor, build_template
from hwprune.numerics import compare_outputs
from hwprune.progress import NullProgress, Progress
from hwprune.provenance import derive_seed
from hwprune.prune import graph
from hwprune.records import ModelSummary, RunResult
from hwprune.runtime import KERNEL_PROTOCOL, WHOLE_MODEL_PROTOCOL
from hwprune.search import StudyPlace, open_storage
from hwprune.state import RunState, settings_fingerprint
from hwprune.targets import ResolvedBudget, Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    profiles_dir: Path = paths.DEFAULT_PROFILES
    force: bool = False
    data_dir: str | None = None
    data_limit: int | None = None  # cap on every split (tests, quick looks)
    cache_dir: Path | None = None  # where trained dense networks are kept (None: no cache)
    optimize: bool = False  # also write ONNX Runtime's offline-optimised model (paths.OPTIMIZED_ONNX)
    storage: str | None = None  # Optuna storage URL for the searches (None: a journal file in the run state)
    agents: tuple[str, ...] = ()  # device agents to measure through, for every target (else each target's own)
    agent_token_file: Path | None = None  # the agents' token (None: $HWPRUNE_AGENT_TOKEN)
    agent_retry_s: float = remote.Retry.give_up_after_s  # how long a run keeps trying an agent that went away

    def device(self, target: Target) -> Device:
        """Where the target's latencies are measured: through its agents (these options', else the target
        file's), reached now, before anything is trained; else this host."""
        return remote.open_device(self.agents or target.agents, self.agent_token_file, self.agent_retry_s)

    def train_dense(self, config: ProjectConfig, target: Target, progress: Progress,
                    state: RunState | None = None) -> Dense:
        """The dense stage with these options (data folder and limit, cache) at the target's batch."""
        return train_dense(config, target.batch, progress, self.data_dir, self.data_limit, self.cache_dir, state)


def prepare_out_dir(out_dir: Path, force: bool, resuming: bool = False) -> None:
    """Refuse to overwrite earlier results without --force (files an unfinished run of the same settings
    wrote are its own, not earlier results); fail early if the folder is not writable."""
    existing = paths.RunFolder(out_dir).existing_artifacts()
    if existing and not force and not resuming:
        raise OutputError(f"{out_dir} already holds results ({', '.join(existing)})",
                          hint="pass --force to replace them, or choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()  # a fresh name, never a link someone planted
    except OSError as exc:
        raise OutputError(f"cannot write to {out_dir}: {exc.strerror}", hint="choose a writable --out") from None


def choose_channel_multiple(target: Target, profile: profiles.DeviceProfile, progress: Progress) -> int:
    """The step the search takes in channels: the target's, else the profile's (measured by an alignment
    sweep the first time a profile is used on its device, or stated by an analytic profile), else 8."""
    if profile.measured_here and profile.alignment_sweep is None:
        profile.alignment_sweep = measure.alignment_sweep(profile.settings, progress=progress,
                                                          device=profile.device).to_json()
        profile.save()
    return target.channel_multiple or profile.preferred_channel_multiple or 8


def latency_predictor(dense: Dense, dense_proto: onnx.ModelProto, config: ProjectConfig, target: Target,
                      profiles_dir: Path, progress: Progress = NullProgress(), device: Device = LOCAL
                      ) -> tuple[LatencyPredictor, int]:
    """The target's latency predictor for the trained architecture (its profile opened or created, and
    calibrated where `device`, this host or an agent's, is the target's device), and the channel multiple
    the search steps by."""
    template = build_template(dense.model, dense.example, dense_proto, dense.widths, config.model.ignore)
    profile = profiles.open_profile(target.profile, target.runtime_settings(), profiles_dir, target.arch,
                                    device=device)
    if profile.analytic is not None:
        log.warning("target '%s' rests on an analytic profile (a roofline from published specs, never measured): "
                    "every latency in this run is a prediction; run `hwprune profile --target %s` on the device "
                    "to measure it", target.name, target.name)
    elif not profile.measured_here:
        log.warning("%s is not measured on %s: latencies are predicted, not measured", profile.describe(),
                    device.label)
    channel_multiple = choose_channel_multiple(target, profile, progress)
    predictor = LatencyPredictor(template, profile, KERNEL_PROTOCOL, progress)
    predictor.calibrate(dense.widths, channel_multiple, derive_seed(config.seed, "calibration"))
    return predictor, channel_multiple


@dataclass(frozen=True)
class _Latencies:
    """The final ticket's export and the latencies a run reports: measured where this host is the device,
    else predicted (then p90 is unknown)."""

    proto: onnx.ModelProto
    source: str  # "measured" or "predicted"
    dense_ms: float
    dense_p90_ms: float | None
    pruned_ms: float
    pruned_p90_ms: float | None
    budget: ResolvedBudget
    dense_timing: dict[str, float] | None = None
    pruned_timing: dict[str, float] | None = None


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
        studies: Callable[[int], StudyPlace] | None = None, device: Device | None = None) -> RunResult:
    """The whole job for one target, ending with its run folder finished (model.onnx, report.json,
    report.md, the state marked finished). `dense` reuses a dense stage already trained (`dense_seconds`
    ago, counted in this target's timings); `state` is a run state `open_state` opened (else it is opened
    here, and let go when the run ends). Every finished stage is saved in it, so the same call after a kill
    continues where it stopped. `device` is where latencies are measured (`RunOptions.device`, reached
    before anything is trained when not given). Raises HwpruneError subclasses for anything the user can fix."""
    device = device or options.device(target)
    own_state = state is None
    state = state or open_state(config, target, options)
    try:
        result = _run(config, target, options, progress, dense, dense_seconds, state,
                      studies or study_places(options, state, target), device)
        report.write(result, paths.RunFolder(options.out_dir))
        state.finish()
        return result
    finally:
        if own_state:
            state.release()


def _run(config: ProjectConfig, target: Target, options: RunOptions, progress: Progress, dense: Dense | None,
         dense_seconds: float, state: RunState, studies: Callable[[int], StudyPlace], device: Device) -> RunResult:
    timings: dict[str, float] = {}
    clock = time.perf_counter() - dense_seconds
    torch.set_num_threads(config.train.threads)
    dense = options.train_dense(config, target, progress, state) if dense is None else dense.for_batch(target.batch)
    timings["dense_training_s"] = time.perf_counter() - clock

    t0 = time.perf_counter()
    dense_proto = export.export(dense.model, dense.example, dense.input_names)
    predictor, channel_multiple = latency_predictor(dense, dense_proto, config, target, options.profiles_dir, progress,
                                                    device)
    host_is_device = predictor.profile.measured_here
    dense_predicted = predictor(dense.widths)
    if host_is_device:
        planning = target.budget.resolve(
            device.time_side_by_side([dense_proto], target.runtime_settings(), WHOLE_MODEL_PROTOCOL,
                                     predictor.sentinel)[0].median_ms,
            f"measured on {device.label}")
    else:
        planning = target.budget.resolve(dense_predicted, f"predicted from profile '{predictor.profile.id}'")
    timings["latency_table_s"] = time.perf_counter() - t0

    # IMP rounds. The schedule runs in the predictor's units (scaled by its dense error), ending at the
    # budget less the safety margin.
    t0 = time.perf_counter()
    imp = Imp(dense, predictor, channel_multiple, config, progress, state, studies)
    dense_planning_ms = planning.dense_ms if planning.dense_ms is not None else dense_predicted
    imp.schedule(dense_predicted, planning.ms * (1.0 - config.imp.safety_margin) * dense_predicted / dense_planning_ms)
    latencies = _final_latencies(imp, dense_proto, target, host_is_device, planning, dense_planning_ms)
    timings["imp_s"] = time.perf_counter() - t0

    ticket = imp.ticket
    dense_summary = ModelSummary(dense.accuracy, latencies.dense_ms, latencies.source, dense_predicted,
                                 *graph.count_macs_params(dense.model, dense.example), latencies.dense_p90_ms,
                                 dense.widths, latencies.dense_timing)
    score = objective.load(config).score
    pruned = ModelSummary(score(ticket.model, dense.data[2]), latencies.pruned_ms, latencies.source,
                          predictor(ticket.masks.widths()), *graph.count_macs_params(ticket.model, dense.example),
                          latencies.pruned_p90_ms, ticket.masks.widths(), latencies.pruned_timing)
    if config.export.dynamic_batch:  # the same network, one file for every batch: checked at 1 and the target's
        ship = export.export(ticket.model, dense.example, dense.input_names, dynamic_batch=True)
        batches = sorted({1, target.batch})
    else:
        ship, batches = latencies.proto, [target.batch]
    numerics = _numerics(ship, ticket.model, dense, target, device, batches)
    folder = paths.RunFolder(options.out_dir)
    shipped = export.with_metadata(ship, _metadata(target, latencies.budget, dense_summary, pruned, predictor,
                                                   config.export.dynamic_batch))
    atomic.write_bytes(folder.model_onnx, shipped.SerializeToString())
    optimized = None
    if options.optimize:
        level = validate.write_optimized(shipped, target, host_is_device, folder.optimized_onnx, device)
        optimized = {"file": folder.optimized_onnx.name, "graph_optimization": level}
    timings["total_s"] = time.perf_counter() - clock
    return RunResult(
        target=target, budget=latencies.budget, dense=dense_summary, pruned=pruned, rounds=tuple(imp.rounds),
        dense_widths=dense.widths, kept=ticket.masks.to_json(), profile=_profile_summary(predictor),
        calibration=(None if predictor.model.calibration is None
                     else {**asdict(predictor.model.calibration), "architecture": predictor.template.key}),
        numerics=numerics, channel_multiple=channel_multiple,
        breakdown=_breakdown(predictor, dense.widths, ticket.masks.widths()), model_name=config.model.factory,
        optimized_onnx=optimized,
        dense_source=dense.source(), metric=objective.load(config).describe(),
        dynamic_batch=config.export.dynamic_batch, training=compute.resolve(config.train).describe(),
        rewind=config.imp.rewind, rewind_iteration=dense.rewind_at, dense_iterations=dense.iterations,
        seconds=timings, host=provenance.host(), versions=provenance.versions(), onnx_path=folder.model_onnx,
        seed=config.seed,
    )


def _final_latencies(imp: Imp, dense_proto: onnx.ModelProto, target: Target, host_is_device: bool,
                     planning: ResolvedBudget, dense_planning_ms: float) -> _Latencies:
    """Export and judge the final ticket: where this host is the device, measured side by side with the dense
    model, tightening with extra rounds while it misses the budget; elsewhere predicted."""
    if host_is_device:
        measured = imp.meet_measured(dense_proto, target.runtime_settings(), target.budget)
        return _Latencies(measured.proto, "measured", measured.dense.median_ms, measured.dense.p90_ms,
                          measured.pruned.median_ms, measured.pruned.p90_ms, measured.budget,
                          measured.dense.certainty(), measured.pruned.certainty())
    proto = export.export(imp.ticket.model, imp.dense.example, imp.dense.input_names)
    return _Latencies(proto, "predicted", dense_planning_ms, None, imp.predictor(imp.ticket.masks.widths()), None,
                      planning)


def _numerics(proto: onnx.ModelProto, model: torch.nn.Module, dense: Dense, target: Target, device: Device,
              batches: list[int]) -> dict[str, Any]:
    """ONNX Runtime against PyTorch on test inputs at each of `batches` (16 single samples at batch 1, one batch
    of test samples at a larger batch), on the target's providers the device (this host, or the agent's) has."""
    test_set = dense.data[2]
    samples = []
    for batch in batches:
        if batch == 1:
            samples += [inputs.sample_example(test_set[i][0]) for i in range(min(16, len(test_set)))]
        elif len(test_set) >= batch:
            samples.append(inputs.stack([test_set[i][0] for i in range(batch)]))
        else:
            samples.append(inputs.random_like(inputs.with_batch(dense.example, batch)))
    settings = runtime.runnable_here(target.runtime_settings(), device)
    check = compare_outputs(proto, model, samples, settings, device=device)
    return {"max_abs_diff": check.max_abs_diff, "samples": check.samples, "tolerance": check.tolerance,
            "providers": list(settings.providers), "run_on": device.label, "batches": batches}


def _profile_summary(predictor: LatencyPredictor) -> dict[str, Any]:
    profile = predictor.profile
    return {"id": profile.id, "provenance": profile.provenance.get("kind"), "host": profile.provenance.get("host"),
            "measured_here": profile.measured_here, "entries": len(profile.entries),
            "kernels_measured_this_run": predictor.measured_kernels, "overhead_ms": profile.overhead_ms,
            "path": str(profile.path),
            # how sure the timing-based choices are: the sweep's rounding cost per channel multiple (the choice
            # is the largest within the limit) and how often the host ran in a slow phase while measuring
            "alignment_rounding_cost": (profile.alignment_sweep or {}).get("rounding_cost"),
            "host_slow_share": predictor.sentinel.slow_share if profile.measured_here else None,
            # where this run measured: this host, or the device behind its agent(s)
            "measured_on": profile.device.label if profile.measured_here else None,
            "agents": list(profile.device.agents), "device": profile.device.details(),
            "device_state": profile.device.state_range()}  # temperature and clocks while measuring


def _breakdown(predictor: LatencyPredictor, dense_widths: dict[str, int], widths: dict[str, int]) -> dict[str, Any]:
    """Where the time goes: each runtime kernel's table entry (before calibration), dense and pruned."""
    def kernels(w: dict[str, int]) -> list[dict[str, Any]]:
        return [{"op": op, "ms": ms} for op, ms in predictor.predict(w).per_kernel_ms]

    return {"source": predictor.predict(widths).source, "dense": kernels(dense_widths), "pruned": kernels(widths)}


def _metadata(target: Target, budget: ResolvedBudget, dense: ModelSummary, pruned: ModelSummary,
              predictor: LatencyPredictor, dynamic_batch: bool) -> dict[str, str]:
    """What a shipped model carries about how it was made (ONNX metadata_props)."""
    return {
        "hwprune.version": __version__, "hwprune.target": target.name, "hwprune.budget_ms": f"{budget.ms:.6f}",
        "hwprune.latency_ms": f"{pruned.latency_ms:.6f}", "hwprune.latency_source": pruned.latency_source,
        "hwprune.predicted_latency_ms": f"{pruned.predicted_latency_ms:.6f}",
        "hwprune.budget_met": str(budget.met_by(pruned.latency_ms)).lower(),
        "hwprune.test_accuracy": f"{pruned.accuracy:.4f}",
        "hwprune.dense_test_accuracy": f"{dense.accuracy:.4f}",
        "hwprune.dense_latency_ms": f"{dense.latency_ms:.6f}",
        "hwprune.widths": ",".join(f"{g}={w}" for g, w in pruned.widths.items()),
        "hwprune.profile": predictor.profile.id,
        "hwprune.batch": str(target.batch),  # the batch every latency here was measured or predicted at
        "hwprune.dynamic_batch": str(dynamic_batch).lower(),
        "hwprune.created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class TargetOutcome:
    """One target of `run_targets`: its finished run, the error that stopped it, or a run an earlier
    invocation finished (`report` is then the report.json it wrote)."""

    target: Target
    out_dir: Path
    result: RunResult | None
    error: HwpruneError | None  # what stopped this target (the others still run)
    report: dict[str, Any] | None = None  # the report written (or found, when finished before)
    finished_before: bool = False  # an earlier run of this command finished this target (report.json there)

    @property
    def budget_met(self) -> bool | None:
        if self.result is not None:
            return self.result.budget_met
        return None if self.report is None else bool(self.report["budget_met"])


def run_targets(config: ProjectConfig, targets: list[Target], options: RunOptions, out_dirs: dict[str, Path],
                progress: Progress = NullProgress()) -> Iterator[TargetOutcome]:
    """One dense training (or cache hit), then IMP, export, validation and the run folder per target, in order.

    Every output folder is checked before anything runs. A target-specific failure (infeasible budget,
    profile, export) is reported for that target and the others go on; model, data and config errors
    concern all targets and stop the run. The output folders stay locked against other runs (RunState.open)
    until the generator is exhausted or closed.
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
    devices: dict[str, Device] = {}
    unusable = {t.name: problem for t in targets_to_run if (problem := profile_problem(t, options, devices))}
    dense: Dense | None = None
    for target in targets:
        target_options = dataclasses.replace(options, out_dir=out_dirs[target.name])
        if target not in targets_to_run:
            progress.note(f"{target.name}: finished by an earlier run of this command ({target_options.out_dir})")
            yield TargetOutcome(target, target_options.out_dir, None, None, _earlier_report(target_options.out_dir),
                                finished_before=True)
            continue
        if target.name in unusable:  # found before training anything
            yield TargetOutcome(target, target_options.out_dir, None, unusable[target.name])
            continue
        try:
            dense_seconds = 0.0  # counted in the timings of the target that trained (or loaded) it
            if dense is None:
                torch.set_num_threads(config.train.threads)
                start = time.perf_counter()
                dense = options.train_dense(config, target, progress, states[targets_to_run[0].name])
                dense_seconds = time.perf_counter() - start
            result = run(config, target, target_options, progress, dense, dense_seconds, states[target.name],
                         studies[target.name], devices[target.name])
            yield TargetOutcome(target, target_options.out_dir, result, None, report.to_json(result))
        except (ConfigError, DataError, ModelError, PruningError):
            raise
        except HwpruneError as exc:
            yield TargetOutcome(target, target_options.out_dir, None, exc)


def _earlier_report(out_dir: Path) -> dict[str, Any]:
    """The report a finished earlier run wrote (the user may have edited or damaged it since)."""
    try:
        return report.read(paths.RunFolder(out_dir).report_json)
    except ReportError as exc:
        raise OutputError(f"{exc.message}; it was written by an earlier, finished run of this command",
                          hint="pass --force to run the target again, or restore the file") from None


def profile_problem(target: Target, options: RunOptions, devices: dict[str, Device]) -> ProfileError | None:
    """A target's device or profile that cannot be used (an agent unreachable or refusing the token, bad
    schema, measured where ONNX Runtime builds other graphs or on another device than the agent's, other
    runtime settings, a device this host cannot measure), found before the dense training. The device
    reached goes into `devices[target.name]`."""
    logger = logging.getLogger(profiles.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)  # its warnings come when the run opens the profile for real
    try:
        devices[target.name] = options.device(target)
        profiles.open_profile(target.profile, target.runtime_settings(), options.profiles_dir, target.arch,
                              device=devices[target.name])
    except ProfileError as exc:
        return exc
    finally:
        logger.setLevel(level)
    return None


def finished_here(config: ProjectConfig, target: Target, options: RunOptions) -> bool:
    """Whether the output folder holds this exact run, finished (report written)."""
    _, stages = earlier_run(config, target, options)
    return stages is not None and "finished" in stages and paths.RunFolder(options.out_dir).report_json.exists()


def earlier_run(config: ProjectConfig, target: Target, options: RunOptions) -> tuple[str, list[str] | None]:
    """(this run's settings fingerprint, the stages an earlier run of the same settings finished in the output
    folder; None when there is none or it had other settings)."""
    fp = settings_fingerprint(config, target, options.data_dir, options.data_limit)
    state_dir = paths.RunFolder(options.out_dir).state_dir
    try:
        info = RunState(state_dir, fp).info() if state_dir.is_dir() else None
    except OutputError:
        if not options.force:
            raise
        info = None  # unreadable: --force discards it (RunState.open)
    return fp, (list(info.get("stages", [])) if info and info.get("fingerprint") == fp else None)


@dataclass(frozen=True)
class ProfileResult:
    path: Path
    build: measure.TableBuild
    channel_multiple: int
    replaced: Path | None  # where an analytic profile this measurement replaces was moved


def profile_target(config: ProjectConfig, target: Target, profiles_dir: Path, networks: int,
                   progress: Progress = NullProgress(), device: Device = LOCAL) -> ProfileResult:
    """`hwprune profile`: measure the target's table for the configured model's search space on `device`
    (this host, or the device behind an agent)."""
    cannot = profiles.device_mismatches(target.arch, target.providers, None, device)
    if cannot:
        raise ProfileError(f"{device.label} cannot measure the target '{target.name}' ({'; '.join(cannot)})",
                           hint=f"measure through the device's agent (--agent URL), or run `hwprune profile --target "
                                f"{target.name}` on the device and copy "
                                f"{paths.profile_file(profiles_dir, target.profile)} here")
    path = paths.profile_file(profiles_dir, target.profile)
    replaced = None
    if path.exists():
        existing = profiles.DeviceProfile.load(path)
        existing.device = device
        if existing.analytic is not None:
            replaced = paths.replaced_analytic(path)
            if replaced.exists():
                raise OutputError(f"{replaced} already exists", hint="move it away; it would be overwritten")
            path.replace(replaced)
        elif existing.host_mismatches():
            raise ProfileError(f"{path} was measured on another device than {device.label} "
                               f"({'; '.join(existing.host_mismatches())})",
                               hint="move it away to measure this device into a new profile")
    profiles_dir.mkdir(parents=True, exist_ok=True)
    model, example = build_model(config, target.batch)
    model.eval()
    widths = channel_widths(model, example, config)
    template = build_template(model, example, export.export(model, example), widths, config.model.ignore)
    profile = profiles.open_profile(target.profile, target.runtime_settings(), profiles_dir, target.arch,
                                    builtin_analytic=False, device=device)  # measured, never the built-in roofline
    channel_multiple = choose_channel_multiple(target, profile, progress)
    predictor = LatencyPredictor(template, profile, KERNEL_PROTOCOL, progress)
    build = measure.build_table(predictor, widths, channel_multiple, config.search.max_prune_rate, networks,
                                derive_seed(config.seed, "profile"), progress)
    return ProfileResult(path, build, channel_multiple, replaced)
