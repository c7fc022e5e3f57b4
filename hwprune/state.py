"""A run's resumable state: every finished stage saved atomically in OUT/.hwprune/, so a killed run started
again with the same command continues where it stopped and ends with the same result.

What is kept: `run.json` (the settings fingerprint and which stages finished), the dense network
(`dense-KEY.pt`, the dense cache's format) and its epoch checkpoints while it trains, one file per finished
IMP round (`round-N.pt`: masks, slim weights, the round's record), and the Optuna study of each round's
search (`optuna.journal`, Optuna's own journal storage; each finished trial is a line in it). Checkpoints
are loaded with `weights_only=True`.

A state written with other settings is never resumed silently: the run stops and says so (--force starts
over). A finished run keeps `run.json` and the study; its weight files are deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hwprune import __version__, atomic
from hwprune.config import ProjectConfig
from hwprune.errors import OutputError
from hwprune.targets import Target

STATE_DIR = ".hwprune"
FORMAT = 1


def settings_fingerprint(config: ProjectConfig, target: Target, data_dir: str | None, data_limit: int | None) -> str:
    """Everything that determines a run's result (threads excluded: they change speed, not results)."""
    settings = dataclasses.asdict(config)
    settings["train"].pop("threads")
    material = {"format": FORMAT, "hwprune": __version__, "config": settings, "target": dataclasses.asdict(target),
                "data_dir": data_dir, "data_limit": data_limit, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class RunState:
    """The state folder of one target's run (`out_dir/.hwprune`)."""

    dir: Path
    fingerprint: str

    @classmethod
    def open(cls, out_dir: Path, fingerprint: str, force: bool) -> tuple[RunState, bool]:
        """(state, resuming). --force discards an earlier state; one written with other settings is refused."""
        state = cls(out_dir / STATE_DIR, fingerprint)
        info = state.info()
        if info is not None and force:
            shutil.rmtree(state.dir)
            info = None
        if info is not None and info.get("fingerprint") != fingerprint:
            raise OutputError(f"{out_dir} holds an unfinished run with other settings (state in {state.dir})",
                              hint="run the same command as before to resume it, pass --force to discard it, "
                                   "or choose another --out")
        resuming = info is not None and bool(info.get("stages"))
        if info is None:
            state._write_info({"fingerprint": fingerprint, "stages": []})
        return state, resuming

    def info(self) -> dict[str, Any] | None:
        path = self.dir / "run.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OutputError(f"unreadable run state {path} ({exc})",
                              hint="pass --force to discard it and start over") from None

    def _write_info(self, info: dict[str, Any]) -> None:
        atomic.write_json(self.dir / "run.json", info)

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
        return self.path("optuna.journal")

    def finish(self) -> None:
        """Keep the record and the study, drop the weight files."""
        self.mark("finished")
        for file in self.dir.glob("*.pt"):
            file.unlink()
