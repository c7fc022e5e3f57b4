"""Command line: the only place that prints, parses arguments and maps errors to exit codes.

Heavy modules (torch, onnxruntime, optuna) are imported inside commands so `hwprune --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hwprune import __version__, paths
from hwprune.agent_args import RETRY_S, add_arguments  # the agent's own flags, stdlib only
from hwprune.errors import EXIT_CODES, BudgetNotMetError, HwpruneError, Interrupted
from hwprune.models import MODELS

EPILOG = "exit codes: " + ", ".join(f"{code} {name}" for name, code in sorted(EXIT_CODES.items(), key=lambda kv: kv[1]))


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported like every other error: `error: …` and `hint: …`, exit 2."""

    def error(self, message: str):
        print(f"error: {_one_line(message)}", file=sys.stderr)
        print(f"hint: see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(EXIT_CODES["ConfigError"])


COMMANDS = ("run", "targets", "profile", "compare", "validate", "agent")


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Flags several commands share, each defined once (argparse parent parsers)."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="show tracebacks")
    lookup = argparse.ArgumentParser(add_help=False)
    lookup.add_argument("--profiles-dir", type=Path, default=paths.DEFAULT_PROFILES,
                        help=f"folder of device profiles (default: ./{paths.DEFAULT_PROFILES})")
    lookup.add_argument("--targets-dir", type=Path, help="extra folder searched first for target files")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--config", type=Path,
                       help="project config (hwprune.toml); default: built-in Fashion-MNIST example")
    model.add_argument("--model", help=f"built-in model instead of the config's ({', '.join(MODELS)})")
    model.add_argument("--seed", type=int, help="override the config's seed")
    model.add_argument("--weights", type=Path, metavar="FILE",
                       help="start from these trained weights (a state_dict saved with torch.save) instead of "
                            "training the dense network; like [model] weights")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")
    agent = argparse.ArgumentParser(add_help=False)
    agent.add_argument("--agent", action="append", default=[], metavar="URL",
                       help="measure on the device through its agent (`hwprune agent` there), e.g. "
                            "http://pi.local:8707; repeat for a shelf of identical devices (default: the target "
                            "file's `agent`, else this host)")
    agent.add_argument("--agent-token-file", type=Path, metavar="FILE",
                       help="file holding the agents' token (default: $HWPRUNE_AGENT_TOKEN)")
    agent.add_argument("--agent-retry-s", type=float, default=RETRY_S, metavar="S",
                       help=f"how long to keep trying an agent that stops answering mid-run (default {RETRY_S:g})")
    return {"debug": debug, "lookup": lookup, "model": model, "quiet": quiet, "agent": agent}


def build_parser() -> argparse.ArgumentParser:
    """`hwprune [run] ...` and its subcommands; a command line without one is `run` (the main job)."""
    top = _Parser(prog="hwprune", epilog=EPILOG)
    sub = top.add_subparsers(dest="command", parser_class=_Parser)
    parent = _parents()
    target_help = "target name (see `hwprune targets`) or a target .toml file"

    p = sub.add_parser(
        "run", prog="hwprune",
        parents=[parent["model"], parent["lookup"], parent["quiet"], parent["agent"], parent["debug"]],
        epilog=EPILOG + ". Other commands: `hwprune targets` lists the targets; `hwprune profile --target NAME` "
                        "measures a target's latency table on this host; `hwprune compare REPORT.json...` compares "
                        "targets; `hwprune validate MODEL.onnx --target NAME` re-checks a shipped model; "
                        "`hwprune agent` serves a device to a workstation that measures through it (--agent URL).",
        description="Prune a PyTorch model until its measured ONNX Runtime latency fits the target's budget.")
    p.set_defaults(handler=cmd_run)
    p.add_argument("--target", action="append", default=[], metavar="NAME",
                   help=f"{target_help}; repeat for several targets (one dense training serves them all)")
    p.add_argument("--all-targets", action="store_true", help="every target `hwprune targets` lists")
    p.add_argument("--out", type=Path, help=f"output folder (default: {paths.DEFAULT_OUT}/TARGET; with several "
                                            "targets, OUT/TARGET)")
    p.add_argument("--json", action="store_true", help="print the report JSON on stdout (a list for several "
                                                      "targets); the summary goes to stderr")
    p.add_argument("--cache-dir", type=Path, help="dense-training cache (default: $HWPRUNE_CACHE_DIR, else "
                                                  "~/.cache/hwprune)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the dense-training cache")
    p.add_argument("--optimize", action="store_true",
                   help=f"also write {paths.OPTIMIZED_ONNX}, ONNX Runtime's offline-optimised model (the target's "
                        "optimisation level where this host is the device, else the portable 'basic' level)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage for the searches, shared by every worker given the same URL and settings: "
                        "journal:PATH (a file on a shared file system), sqlite:///PATH, postgresql://USER@HOST/DB "
                        f"(default: a journal file in OUT/{paths.STATE_DIR})")
    p.add_argument("--force", action="store_true", help="replace results already in the output folder (and discard "
                                                        "an unfinished run's saved state)")
    p.add_argument("--data-dir", help="dataset folder for the data factory (built-in: Fashion-MNIST IDX files)")
    p.add_argument("--limit", type=int, help="use at most N samples per split (smoke tests; not for real results)")
    p.add_argument("--version", action="version", version=f"hwprune {__version__}")

    p = sub.add_parser("targets", prog="hwprune targets", parents=[parent["lookup"], parent["debug"]],
                       description="List the available targets.")
    p.set_defaults(handler=cmd_targets)
    p.add_argument("--config", type=Path, help="project config whose folder's targets/ is searched too")

    p = sub.add_parser(
        "profile", prog="hwprune profile", epilog=EPILOG,
        parents=[parent["model"], parent["lookup"], parent["quiet"], parent["agent"], parent["debug"]],
        description="Measure the target's latency table for the model's search space on this host (the device) "
                    "or through the device's agent (--agent URL), with an alignment sweep and a whole-network "
                    "calibration. Replaces an analytic profile.")
    p.set_defaults(handler=cmd_profile)
    p.add_argument("--target", required=True, help=target_help)
    p.add_argument("--networks", type=int, default=30, help="search-space networks measured up front (default 30); "
                   "kernels a search needs beyond them are measured when first needed")

    p = sub.add_parser(
        "compare", prog="hwprune compare", epilog=EPILOG, parents=[parent["debug"]],
        description="Compare reports of several targets: a table and plots (kept channels per group, latency per "
                    "runtime kernel, accuracy vs latency) as Markdown with PNGs and as one self-contained HTML page.")
    p.set_defaults(handler=cmd_compare)
    p.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json")
    p.add_argument("--out", type=Path, default=paths.DEFAULT_COMPARISON,
                   help=f"folder for {paths.COMPARISON_MD}, {paths.COMPARISON_HTML} and the PNGs (default: "
                        f"{paths.DEFAULT_COMPARISON}/)")
    p.add_argument("--md", type=Path, help="Markdown file (PNGs are written beside it)")
    p.add_argument("--html", type=Path, help="self-contained HTML file")
    p.add_argument("--force", action="store_true", help="replace earlier comparison files")

    p = sub.add_parser(
        "validate", prog="hwprune validate", epilog=EPILOG,
        parents=[parent["lookup"], parent["agent"], parent["debug"]],
        description="Re-check a shipped model against a target: a valid ONNX graph that runs on ONNX Runtime with "
                    "finite outputs, and its latency (measured where this host is the device or through its agent, "
                    "else predicted from "
                    "the target's profile) against the target's budget. Exit 10 when the budget is missed; exit 2 "
                    "when it cannot be checked (a speedup budget needs the dense latency hwprune records in the "
                    "model it built for that target): pass --budget-ms then.")
    p.set_defaults(handler=cmd_validate)
    p.add_argument("model", type=Path, metavar="MODEL.onnx")
    p.add_argument("--target", required=True, help=target_help)
    p.add_argument("--budget-ms", type=float, metavar="MS",
                   help="absolute latency budget in ms, replacing the target's (e.g. for a model without hwprune's "
                        "metadata, whose speedup budget cannot be checked)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout (`budget_source`: "
                                                      "target, model metadata or --budget-ms)")

    p = sub.add_parser(
        "agent", prog="hwprune agent", epilog=EPILOG, parents=[parent["debug"]],
        description="Serve this device to hwprune on a workstation: time ONNX models with hwprune's protocol over "
                    "HTTP (token required, 127.0.0.1 unless --host). On a device without hwprune, copy the one file "
                    "--write-file writes and run `python3 FILE` (Python >= 3.8, numpy, onnxruntime).")
    p.set_defaults(handler=cmd_agent)
    add_arguments(p)
    p.add_argument("--write-file", type=Path, metavar="PATH",
                   help="write the agent as one standalone Python file to PATH and exit")
    return top


def cmd_agent(args: argparse.Namespace) -> int:
    if args.write_file is not None:
        from hwprune import atomic
        from hwprune.agent_file import standalone_source
        from hwprune.errors import OutputError
        if args.write_file.exists():
            raise OutputError(f"{args.write_file} already exists", hint="choose another path or move the file away")
        atomic.write_text(args.write_file, standalone_source())
        print(f"wrote {args.write_file}: copy it to the device and run `python3 {args.write_file.name} --help` there")
        return 0
    from hwprune import agent
    return agent.serve_forever(args)


def cmd_validate(args: argparse.Namespace) -> int:
    if args.budget_ms is not None and not (math.isfinite(args.budget_ms) and args.budget_ms > 0):
        raise _config_error(f"--budget-ms must be a positive finite number of milliseconds, got {args.budget_ms}")
    from rich.console import Console

    from hwprune import validate
    from hwprune.targets import load_target, target_dirs
    _setup_logging(Console(stderr=True), args.debug)
    target = load_target(args.target, target_dirs(args.targets_dir))
    result = validate.check(args.model, target, args.profiles_dir, args.budget_ms, _device(args, target))
    summary = {"model": str(result.path), "target": result.target, "built_for": result.built_for,
               "ran_on": list(result.providers), "latency_ms": result.latency_ms,
               "latency_source": result.latency_source, "how": result.how, "budget_ms": result.budget_ms,
               "budget": result.budget_basis, "budget_source": result.budget_source, "budget_met": result.budget_met,
               "batch": result.batch, "dynamic_batch": result.dynamic_batch}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{result.path}: valid ONNX, runs on {', '.join(result.providers)} with finite outputs")
        if result.built_for and result.built_for != result.target:
            print(f"note: the model was built for target '{result.built_for}', checked here against '{result.target}'")
        batch = f"batch {result.batch}" + (" of its dynamic batch axis" if result.dynamic_batch else "")
        print(f"latency {result.latency_ms:.4f} ms at {batch} ({result.latency_source}: {result.how})")
        verdict = {None: "not checked", True: "met", False: "NOT met"}[result.budget_met]
        print(f"budget: {result.budget_basis} -> {verdict}")
    if result.budget_met is None:  # not a pass: a CI gate must not go green on a budget nobody checked
        raise _config_error(f"{result.path}: budget {result.budget_basis}",
                            hint="pass --budget-ms MS to check an absolute budget, or validate the model.onnx "
                                 "hwprune built for this target")
    if result.budget_met is False:
        raise BudgetNotMetError(f"{result.path}: latency {result.latency_ms:.4f} ms ({result.latency_source}) "
                                f"exceeds the budget {result.budget_ms:.4f} ms "
                                + ("(--budget-ms)" if result.budget_source == "--budget-ms"
                                   else f"of target '{result.target}'"),
                                hint="prune again for this target (`hwprune --target ...`)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from hwprune import compare
    comparison = compare.Comparison.load(args.reports)
    outputs = compare.write(comparison, args.md or args.out / paths.COMPARISON_MD,
                           args.html or args.out / paths.COMPARISON_HTML, args.force)
    print(f"wrote {outputs.markdown}, {outputs.html} and {len(outputs.pngs)} PNGs "
          f"({', '.join(p.name for p in outputs.pngs.values())}) for {len(comparison.reports)} targets")
    return 0


class RichProgress:
    """Progress bars on stderr; one bar per stage, removed when the stage ends."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console, transient=False)
        self.console = console

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars.tasks:
            self.bars.stop()
        else:  # nothing to show (an error before the first stage, say): no empty table, no blank line
            self.bars.live.transient = True
            self.bars.live.stop()

    def stage(self, description: str, total: int | None, transient: bool = False):
        from rich.markup import escape  # descriptions and statuses name user things (targets, paths)

        # Rich's `Progress.tasks` is a list in display order, not indexed by task id: once a transient stage
        # is removed the ids no longer match positions, so the handle keeps what it needs itself.
        task = self.bars.add_task(escape(description), total=total, status="")
        bars = self.bars

        class Handle:
            def advance(self, steps: int = 1, status: str = "") -> None:
                bars.update(task, advance=steps, status=escape(status))

            def close(self) -> None:
                if transient:
                    bars.remove_task(task)
                elif total is None:  # an open-ended stage shows as done, not as a spinner forever
                    bars.update(task, total=1, completed=1)
                else:
                    bars.update(task, completed=total)

        return Handle()

    def note(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)


def _setup_logging(console, debug: bool) -> None:
    from rich.logging import RichHandler
    handler = RichHandler(console=console, show_path=debug, show_time=False, markup=False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler], format="%(message)s",
                        force=True)
    for noisy in ("torch", "torch.onnx", "onnxscript", "optuna"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def cmd_targets(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hwprune.targets import available_targets, load_target, target_dirs
    dirs = target_dirs(args.targets_dir, args.config.resolve().parent if args.config else None)
    header = ("target", "profile", "providers", "threads", "budget", "description")
    rows = []
    for name in sorted(available_targets(dirs)):
        t = load_target(name, dirs)
        kind = _profile_kind(t.profile, args.profiles_dir)
        rows.append((t.name, f"{t.profile} ({kind})", ", ".join(t.providers), str(t.intra_op_threads),
                     t.budget.describe(), " ".join(t.description.split())))
    console = Console()
    if not console.is_terminal:  # a pipe or a file: whole values, one target a line, for grep and CI logs
        print(_plain_table(header, rows))
        return 0
    table = Table(*header)
    for column in table.columns[:2]:  # names stay whole on a narrow terminal; descriptions wrap instead
        column.no_wrap = True
        column.min_width = max((len(r[table.columns.index(column)]) for r in rows), default=0)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: a description's "[/b]" is shown, not parsed
    console.print(table)
    return 0


def _profile_kind(profile_id: str, profiles_dir: Path) -> str:
    """"measured", "analytic", "not measured yet" or "unreadable", without loading onnx for the profile."""
    for path in (paths.profile_file(profiles_dir, profile_id), paths.builtin_profile(profile_id)):
        if path.exists():
            try:
                kind = json.loads(path.read_text())["provenance"]["kind"]
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                return "unreadable"
            return kind if kind in ("measured", "analytic") else "unreadable"
    return "not measured yet"


def _plain_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns padded with spaces, never cut: what scripts and CI logs read."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def _config_and_target(args: argparse.Namespace):
    """The project config (with --model/--seed applied) and the target, both validated."""
    import dataclasses

    from hwprune.config import load_config
    from hwprune.config import validate as validate_config
    from hwprune.targets import load_target, target_dirs
    config = load_config(args.config)
    if args.model is not None:
        if args.model not in MODELS:
            raise _config_error(f"unknown model '{args.model}'", f"built-in models: {', '.join(MODELS)}")
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, factory=args.model))
    if args.seed is not None:
        if not 0 <= args.seed < 2 ** 63:
            raise _config_error(f"--seed must be an integer in [0, 2^63), got {args.seed}")
        config = dataclasses.replace(config, seed=args.seed)
    if args.weights is not None:
        config = dataclasses.replace(config, model=dataclasses.replace(
            config.model, weights=str(args.weights.expanduser().resolve()), pretrained=False))
        validate_config(config, "--weights")
    target = load_target(args.target, target_dirs(args.targets_dir, args.config.resolve().parent if args.config
                                                  else None))
    _check_profiles_dir(args.profiles_dir)
    return config, target


def _check_profiles_dir(folder: Path) -> None:
    """Profiles are written (measured, extended) into this folder: refuse one that can never be a folder now,
    before any training, rather than when the first kernel is measured."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        from hwprune.errors import OutputError
        what = "is a file" if blocker == folder else f"lies under {blocker}, which is a file"
        raise OutputError(f"cannot use the profiles folder {folder}: it {what}, not a folder",
                          hint="pass --profiles-dir a folder hwprune can write to")


def cmd_profile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hwprune import pipeline
    err = Console(stderr=True)
    _setup_logging(err, args.debug)
    if args.networks < 0:
        raise _config_error("--networks must be ≥ 0")
    config, target = _config_and_target(args)
    profiles_dir = args.profiles_dir
    device = _device(args, target)
    if args.quiet:
        result = pipeline.profile_target(config, target, profiles_dir, args.networks, device=device)
    else:
        with RichProgress(err) as progress:
            result = pipeline.profile_target(config, target, profiles_dir, args.networks, progress, device)
    b = result.build
    cal = (f"calibration on {b.calibration.networks} networks: scale {b.calibration.scale:.3f}, offset "
           f"{b.calibration.offset_ms * 1000:.1f} us, max error {b.calibration.max_error_pct:.1f}%"
           if b.calibration else "no calibration")
    print(f"profile {result.path}: {b.entries} kernels ({b.measured} measured now) in {b.seconds:.0f} s for "
          f"{b.networks} networks of the search space; {cal}; held-out networks' kernels already in the table: "
          f"{b.coverage:.0%}; preferred channel multiple {result.channel_multiple}")
    if result.replaced:
        print(f"the analytic profile it replaces was moved to {result.replaced}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    err = Console(stderr=True)
    _setup_logging(err, args.debug)
    if args.limit is not None and args.limit < 1:
        raise _config_error("--limit must be a positive integer")
    config, targets = _config_and_targets(args)
    several = len(targets) > 1
    out_dirs = {t.name: (args.out / t.name if several and args.out else args.out or paths.DEFAULT_OUT / t.name)
                for t in targets}

    from hwprune import pipeline
    options = pipeline.RunOptions(out_dir=paths.DEFAULT_OUT, profiles_dir=args.profiles_dir, force=args.force,
                                  data_dir=args.data_dir, data_limit=args.limit,
                                  cache_dir=None if args.no_cache else args.cache_dir or paths.cache_dir_default(),
                                  optimize=args.optimize, storage=args.storage, agents=_agent_urls(args),
                                  agent_token_file=args.agent_token_file, agent_retry_s=args.agent_retry_s)
    outcomes, failures = [], []
    start = time.perf_counter()
    # closing: the output folders are let go even on an error
    with _progress(err, args.quiet) as progress, \
            contextlib.closing(pipeline.run_targets(config, targets, options, out_dirs, progress)) as runs:
        for outcome in runs:
            if outcome.error is not None:
                failures.append(outcome.error)
                if several:
                    err.print(f"error: {outcome.target.name}: {outcome.error.message}", markup=False)
                continue
            outcomes.append(outcome)
            if outcome.finished_before:
                err.print(f"{outcome.target.name}: finished by an earlier run of this command; its results in "
                          f"{outcome.out_dir} are kept", markup=False)
            else:
                _print_summary(outcome.report, outcome.out_dir, Console(stderr=True) if args.json else Console())
    if several:
        err.print(f"{len(outcomes)} of {len(targets)} targets done in {time.perf_counter() - start:.0f} s "
                  f"(one dense training for all)", markup=False)
    if args.json:
        reports = [o.report for o in outcomes]
        print(json.dumps(reports if several else (reports[0] if reports else None), indent=2))
    if failures:
        if several:
            err.print(f"{len(failures)} of {len(targets)} targets failed", markup=False)
        raise failures[0]
    missed = [o for o in outcomes if not o.budget_met]
    if missed:
        r = missed[0].report
        raise BudgetNotMetError(
            f"{missed[0].target.name}: pruned latency {r['pruned']['latency_ms']:.4f} ms "
            f"({r['pruned']['latency_source']}) exceeds the budget {r['budget_ms']:.4f} ms"
            + (f" ({len(missed)} targets missed)" if len(missed) > 1 else ""),
            hint="raise [imp] extra_rounds or [search] trials, or relax the budget")
    return 0


def _config_and_targets(args: argparse.Namespace):
    """The config and the targets named by --target (repeatable) or --all-targets, in the order given."""
    from hwprune.targets import available_targets, load_target, target_dirs
    if args.all_targets and args.target:
        raise _config_error("give --target or --all-targets, not both")
    dirs = target_dirs(args.targets_dir, args.config.resolve().parent if args.config else None)
    names = sorted(available_targets(dirs)) if args.all_targets else list(dict.fromkeys(args.target))
    if not names:
        raise _config_error("no target given", "pass --target NAME (see `hwprune targets`) or --all-targets")
    config, first = _config_and_target(argparse.Namespace(**{**vars(args), "target": names[0]}))
    return config, [first, *(load_target(n, dirs) for n in names[1:])]


def _progress(console, quiet: bool):
    from contextlib import nullcontext

    from hwprune.progress import NullProgress
    return nullcontext(NullProgress()) if quiet else RichProgress(console)


def _agent_urls(args: argparse.Namespace) -> tuple[str, ...]:
    from hwprune.targets import agent_urls
    return agent_urls(args.agent, "--agent")


def _device(args: argparse.Namespace, target):
    """Where `hwprune profile` and `hwprune validate` measure: --agent, else the target's agents, else here."""
    from hwprune import remote
    return remote.open_device(_agent_urls(args) or target.agents, args.agent_token_file, args.agent_retry_s)


def _config_error(message: str, hint: str = "") -> HwpruneError:
    from hwprune.errors import ConfigError
    return ConfigError(message, hint)


def _print_summary(data: dict, out_dir: Path, console) -> None:
    from rich.table import Table
    from rich.text import Text
    d, p = data["dense"], data["pruned"]
    table = Table(title=Text(f"hwprune → {data['target']} (budget {data['budget_ms']:.4f} ms: "
                             f"{'met' if data['budget_met'] else 'NOT met'})"))
    table.add_column("")
    table.add_column("dense", justify="right")
    table.add_column("pruned", justify="right")
    metric = (data.get("metric") or {}).get("name", "accuracy")
    table.add_row(f"test {metric}", f"{d['accuracy']:.4f}", f"{p['accuracy']:.4f}")
    batch = data["target_settings"]["batch"]
    table.add_row("latency" if batch == 1 else f"latency (batch {batch})",
                  f"{d['latency_ms']:.4f} ms ({d['latency_source']})",
                  f"{p['latency_ms']:.4f} ms ({p['latency_source']})")
    table.add_row("predicted", f"{d['predicted_latency_ms']:.4f} ms", f"{p['predicted_latency_ms']:.4f} ms")
    table.add_row("MACs", f"{d['macs']:,}", f"{p['macs']:,}")
    table.add_row("params", f"{d['params']:,}", f"{p['params']:,}")
    console.print(table)
    console.print(f"speedup {data['speedup']:.2f}x; wrote {out_dir / paths.MODEL_ONNX}, {paths.REPORT_JSON}, "
                  f"{paths.REPORT_MD} in {data['seconds']['total_s']:.0f} s", markup=False, highlight=False)


def _one_line(text: str) -> str:
    """A message as one line of plain text: a newline, escape sequence or other control character from a user
    value (a TOML key, a file name) is shown escaped, never acted on by the terminal or splitting the line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted


@contextlib.contextmanager
def _ctrl_c_raises_interrupted() -> Iterator[None]:
    """While a command runs, Ctrl-C raises `Interrupted` (see there why not a bare KeyboardInterrupt).

    Only replaces Python's default handler, and only on the main thread, so an embedding program keeps its own.
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        argv.insert(0, "run")  # the main job needs no command name: `hwprune --target x86-cpu`
    args = build_parser().parse_args(argv)
    command = args.handler
    try:
        with _ctrl_c_raises_interrupted():
            return command(args)
    except HwpruneError as exc:
        if args.debug:
            raise
        print(f"error: {_one_line(exc.message)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {_one_line(exc.hint)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if command is cmd_run:
            print(f"error: interrupted; every finished stage is saved (OUT/{paths.STATE_DIR}), nothing half-written "
                  "was kept", file=sys.stderr)
            print("hint: run the same command again to continue where it stopped", file=sys.stderr)
        else:
            print("error: interrupted; files already written are complete, nothing half-written was kept",
                  file=sys.stderr)
        return EXIT_CODES["interrupted"]


if __name__ == "__main__":
    raise SystemExit(main())
