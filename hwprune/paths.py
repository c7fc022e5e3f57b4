"""Every file and folder name hwprune reads or writes, in one place (open_lth's `foundations/paths.py`
habit): a run folder and its saved state, the dense-training cache, the profiles folder, the comparison
files, and the built-in targets and profiles shipped inside the package. Code asks here; it never spells a
name itself, so renaming an artifact is one change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
BUILTIN_TARGETS = PACKAGE / "builtin" / "targets"  # package data: found from a wheel as from a checkout
BUILTIN_PROFILES = PACKAGE / "builtin" / "profiles"  # the analytic profiles of the built-in targets
SCHEMAS = PACKAGE / "schemas"

DEFAULT_OUT = Path("out")  # a run for target NAME writes out/NAME unless --out says otherwise
DEFAULT_PROFILES = Path("profiles")  # measured profiles are written here (--profiles-dir)
DEFAULT_COMPARISON = Path("comparison")
TARGETS_FOLDER = "targets"  # looked up beside the config file and in the working folder

# A run folder (--out): what a finished run hands over.
MODEL_ONNX = "model.onnx"
OPTIMIZED_ONNX = "model.optimized.onnx"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
ARTIFACTS = (MODEL_ONNX, OPTIMIZED_ONNX, REPORT_JSON, REPORT_MD)

# Its saved state (OUT/.hwprune): names relative to the state folder, as its manifest lists them.
STATE_DIR = ".hwprune"
RUN_RECORD = "run.json"
STATE_LOCK = "lock"
JOURNAL = "optuna.journal"
JOURNAL_LOCK = "optuna.journal.lock"
STATE_PATTERNS = (RUN_RECORD, JOURNAL, JOURNAL_LOCK, "dense-*.pt", "round-*.pt")  # when the manifest is unreadable

# The comparison (`hwprune compare`).
COMPARISON_MD = "comparison.md"
COMPARISON_HTML = "comparison.html"


def comparison_plot(folder: Path, stem: str, plot: str) -> Path:
    """A comparison's PNG, beside its Markdown file (`stem` is that file's name without .md)."""
    return folder / f"{stem}-{plot}.png"


@dataclass(frozen=True)
class RunFolder:
    """The files of one target's run folder."""

    root: Path

    @property
    def model_onnx(self) -> Path:
        return self.root / MODEL_ONNX

    @property
    def optimized_onnx(self) -> Path:
        return self.root / OPTIMIZED_ONNX

    @property
    def report_json(self) -> Path:
        return self.root / REPORT_JSON

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def existing_artifacts(self) -> list[str]:
        return [name for name in ARTIFACTS if (self.root / name).exists()]


def dense_file(key: str) -> str:
    """A trained dense network (the cache's entry, and the run state's copy when there is no cache)."""
    return f"dense-{key}.pt"


def dense_checkpoint(key: str) -> str:
    """Dense training's epoch checkpoint, while it trains."""
    return f"dense-{key}.training.pt"


def round_file(number: int) -> str:
    """A finished IMP round: masks, slim weights, its record."""
    return f"round-{number}.pt"


def cache_dir_default() -> Path:
    """$HWPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/hwprune, else ~/.cache/hwprune."""
    if os.environ.get("HWPRUNE_CACHE_DIR"):
        return Path(os.environ["HWPRUNE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hwprune"


def cache_entry(cache_dir: Path, key: str) -> Path:
    return cache_dir / dense_file(key)


def profile_file(profiles_dir: Path, profile_id: str) -> Path:
    return profiles_dir / f"{profile_id}.json"


def builtin_profile(profile_id: str) -> Path:
    return profile_file(BUILTIN_PROFILES, profile_id)


def lock_beside(path: Path) -> Path:
    """The lock file that guards `path` (a profile, a sqlite database)."""
    return path.with_name(path.name + ".lock")


def replaced_analytic(profile: Path) -> Path:
    """Where `hwprune profile` moves the analytic profile a measurement replaces."""
    return profile.with_suffix(".analytic.json")


def report_schema(version: int) -> Path:
    return SCHEMAS / f"report-{version}.schema.json"
