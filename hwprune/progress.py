"""Progress reporting without printing: library code calls a `Progress`; the CLI supplies a Rich one."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol


class Progress(Protocol):
    def stage(self, description: str, total: int | None, transient: bool = False) -> "StageHandle": ...

    def note(self, message: str) -> None: ...


class StageHandle(Protocol):
    def advance(self, steps: int = 1, status: str = "") -> None: ...


class _NullStage:
    def advance(self, steps: int = 1, status: str = "") -> None:
        return None


class NullProgress:
    """Discards everything (library use, tests)."""

    def stage(self, description: str, total: int | None, transient: bool = False) -> _NullStage:
        return _NullStage()

    def note(self, message: str) -> None:
        return None


@contextmanager
def stage(progress: Progress, description: str, total: int | None, transient: bool = False
          ) -> Iterator[StageHandle]:
    """A progress stage; `transient` ones disappear when done (short, repeated work)."""
    handle = progress.stage(description, total, transient)
    try:
        yield handle
    finally:
        close = getattr(handle, "close", None)
        if close:
            close()
