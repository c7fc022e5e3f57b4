"""Fault injection for the kill-and-restart tests: `HWPRUNE_FAULT=POINT` kills this process with SIGKILL
(no cleanup, no handler runs: a power cut) the moment it reaches POINT. Unset, every call is a no-op.

Points: `dense:step:N` (dense training, after step N), `trial:roundR:N` (after trial N's evaluation, before
Optuna records it), `retrain:round:R:step:N` (round R's retraining, after step N).
"""

from __future__ import annotations

import os
import signal


def reached(point: str) -> None:
    if os.environ.get("HWPRUNE_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
