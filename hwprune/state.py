"""A run's resumable state: every finished stage saved atomically in OUT/.hwprune/, so a killed run started
again with the same command continues where it stopped and ends with the same result.

What is kept: `run.json` (the settings fingerprint and which stages finished), the dense network
(`dense-KEY.pt`, the dense cache's format) and its epoch checkpoints while it trains, one file per finished
IMP round (`round-N.pt`: masks, slim weights, the round's record), and the Optuna study of each round's
search (`optuna.journal`, Optuna's own journal storage; each finished trial is a line in it). Checkpoints
are loaded with `weights_only=True`.

A state written with other settings is never resumed silently: the run stops and says so (--force starts
over). A finished run keeps `run.json` and the study; its weight files are deleted.

`run.json` also lists every file the state handed out (`files`), so --force deletes only those: a file of
the user's in the folder is kept. One run at a time writes a folder: the state holds `lock` (fcntl.flock)
from `open` until `release`, and a second run is refused while it does.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwprune import __version__, atomic, paths, weights
from hwprune.config import ProjectConfig
from hwprune.errors import OutputError
from hwprune.targets import Target

FORMAT = 1


def settings_fingerprint(config: ProjectConfig, target: Target, data_dir: str | None, data_limit: int | None) -> str:
    """Everything that determines a run's result (threads excluded: they change speed, not results; so are
    the agents' addresses: the device behind them is checked against the profile's fingerprint instead)."""
    settings = dataclasses.asdict(config)
    settings["train"].pop("threads")
    target_settings = dataclasses.asdict(target)
    target_settings.pop("agents")
    material = {"format": FORMAT, "hwprune": __version__, "config": settings, "target": target_settings,
                "data_dir": data_dir, "data_limit": data_limit, "torch": torch.__version__}
    path = weights.resolve(config.model.weights, config.base_dir) if config.model.weights else None
    if path is not None and path.is_file():  # other weights in the same file are another run
        material["weights_sha256"] = weights.sha256(path)
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class RunState:
    """The state folder of one target's run (`out_dir/.hwprune`)."""

    dir: Path
    fingerprint: str
    lock: atomic.FileLock | None = field(default=None, compare=False, repr=False)  # held from open to release

    @classmethod
    def open(cls, out_dir: Path, fingerprint: str, force: bool) -> tuple[RunState, bool]:
        """(state, resuming), locked against other runs until `release()`. --force discards an earlier state
        (an unreadable one too); one written with other settings is refused."""
        state_dir = paths.RunFolder(out_dir).state_dir
        state = cls(state_dir, fingerprint, atomic.FileLock(state_dir / paths.STATE_LOCK))
        if not state.lock.acquire(wait=False):
            pid = state.lock.holder()
            raise OutputError(f"another hwprune run{f' (pid {pid})' if pid else ''} is writing {out_dir}",
                              hint="wait for it to finish, or choose another --out")
        try:
            try:
                info = state.info()
            except OutputError:
                if not force:
                    raise
                info = {}
            if info is not None and (force or not state.holds_work(info)):  # an empty one is no one's work
                state.discard()
                info = None
            if info is not None and info.get("fingerprint") != fingerprint:
                raise OutputError(f"{out_dir} holds an unfinished run with other settings (state in {state.dir})",
                                  hint="run the same command as before to resume it, pass --force to discard it, "
                                       "or choose another --out")
            resuming = info is not None and bool(info.get("stages"))
            if info is None:
                state._write_info({"fingerprint": fingerprint, "stages": [], "files": []})
        except BaseException:
            state.release()
            raise
        return state, resuming

    def holds_work(self, info: dict[str, Any]) -> bool:
        """Whether an earlier run left anything to resume: a finished stage, or a file with content (a dense
        training checkpoint, a trial in the journal). A run that failed before that (a bad model factory, say)
        leaves nothing, so fixing its settings must not need --force."""
        if info.get("stages"):
            return True
        written = [self.dir / name for name in self.files() if not name.endswith(".lock")]
        return any(p.is_file() and p.stat().st_size > 0 for p in written)

    def release(self) -> None:
        """Let other runs write the folder again (once this run's outputs are written)."""
        if self.lock is not None:
            self.lock.release()

    def files(self) -> list[str]:
        """The files this state wrote or handed out (the names hwprune uses when its record is unreadable)."""
        try:
            info = self.info()
        except OutputError:
            info = None
        names = info.get("files") if isinstance(info, dict) else None
        if not isinstance(names, list):
            names = sorted({p.name for pattern in paths.STATE_PATTERNS for p in self.dir.glob(pattern)})
        return [n for n in names if isinstance(n, str) and n not in ("", ".", "..", paths.STATE_LOCK) and "/" not in n
                and "\\" not in n]

    def discard(self) -> None:
        """--force: delete what this state wrote (its files, their temp files, run.json), nothing else: a file
        of the user's in the folder stays. The lock stays too (see atomic.FileLock)."""
        for name in [*self.files(), paths.RUN_RECORD]:
            for path in [self.dir / name, *self.dir.glob(f".{glob.escape(name)}.*.tmp*")]:
                path.unlink(missing_ok=True)

    def info(self) -> dict[str, Any] | None:
        path = self.dir / paths.RUN_RECORD
        if not path.exists():
            return None
        try:
            info = json.loads(path.read_text())
            if not isinstance(info, dict) or not isinstance(info.get("stages"), list):
                raise ValueError("not hwprune's run record")
            return info
        except (OSError, ValueError) as exc:
            raise OutputError(f"unreadable run state {path} ({exc})",
                              hint="pass --force to discard it and start over") from None

    def _write_info(self, info: dict[str, Any]) -> None:
        atomic.write_json(self.dir / paths.RUN_RECORD, info)

    def stages(self) -> list[str]:
        info = self.info()
        return list(info["stages"]) if info else []

    def mark(self, stage: str) -> None:
        """Record a finished stage (after its files are written)."""
        info = self.info() or {"fingerprint": self.fingerprint, "stages": []}
        if stage not in info["stages"]:
            info["stages"].append(stage)
            self._write_info(info)

    def path(self, name: str) -> Path:
        """The path of state file `name`, listed in run.json first, so --force knows it is hwprune's."""
        info = self.info()
        if info is not None and name not in info.setdefault("files", []):
            info["files"].append(name)
            self._write_info(info)
        return self.dir / name

    def save(self, name: str, payload: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic.write_bytes(self.path(name), buffer.getvalue())

    def load(self, name: str) -> dict[str, Any] | None:
        """The saved payload (tensors, numbers, strings, lists, dicts only), or None when absent."""
        path = self.path(name)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise OutputError(f"unreadable checkpoint {path} ({type(exc).__name__})",
                              hint="pass --force to discard the run state and start over") from None

    def journal(self) -> Path:
        self.path(paths.JOURNAL_LOCK)  # Optuna's own lock, left behind when a run is killed while it writes
        return self.path(paths.JOURNAL)

    def finish(self) -> None:
        """Keep the record and the study, drop the weight files (hwprune's only)."""
        self.mark("finished")
        for name in self.files():
            if name.endswith(".pt"):
                (self.dir / name).unlink(missing_ok=True)
