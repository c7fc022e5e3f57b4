"""Error hierarchy: every user-facing failure carries a one-line message, a hint and an exit code.

Library code raises these; only the CLI prints them and exits with `exit_code`.
"""

from __future__ import annotations


class HwpruneError(Exception):
    """Base class. `message` says what went wrong, `hint` what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(HwpruneError):
    """A config, target or command-line setting is wrong (unknown key, bad value, unknown target)."""

    exit_code = 2


class DataError(HwpruneError):
    """The dataset is missing or unreadable."""

    exit_code = 3


class ModelError(HwpruneError):
    """The model factory cannot be imported or does not build a usable nn.Module."""

    exit_code = 4


class ProfileError(HwpruneError):
    """A device profile is malformed, from another host, or cannot cover a layer."""

    exit_code = 5


class PruningError(HwpruneError):
    """The pruning engine cannot handle the model or the request (e.g. nothing prunable)."""

    exit_code = 6


class SearchError(HwpruneError):
    """The search found no configuration meeting the latency target (infeasible budget)."""

    exit_code = 7


class ExportError(HwpruneError):
    """ONNX export, checking or numerical validation failed."""

    exit_code = 8


class OutputError(HwpruneError):
    """The output directory exists (use --force) or cannot be written."""

    exit_code = 9


class BudgetNotMetError(HwpruneError):
    """The pruned model was built and validated but its latency exceeds the budget (CI gate)."""

    exit_code = 10


class ReportError(HwpruneError):
    """A report given to `compare` is unreadable, not hwprune's, or of a schema version this one cannot read."""

    exit_code = 11


class Interrupted(KeyboardInterrupt):
    """Ctrl-C as raised by the CLI's own SIGINT handler (exit code 130).

    A subclass on purpose: CPython remembers any *bare* KeyboardInterrupt that crossed a C-API evaluation
    inside a library and then kills the process with SIGINT at exit, even when the CLI caught it, so the
    documented exit code 130 would become death by signal (seen in CI as return code -2). The interpreter
    compares the exact type, so a subclass is not remembered; every `except KeyboardInterrupt` still catches it.
    """


EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "internal error": 1,
    **{cls.__name__: cls.exit_code for cls in (
        ConfigError, DataError, ModelError, ProfileError, PruningError,
        SearchError, ExportError, OutputError, BudgetNotMetError, ReportError)},
    "interrupted": 130,
}
