"""Trained weights the user brings (`[model] weights = "model.pt"`): a state_dict file, loaded with
`weights_only=True` (nothing in it runs as code) and matched to the model key by key, so that a wrong file
is named precisely (missing, unexpected and mis-shaped tensors) instead of failing deep inside torch."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from hwprune.errors import ConfigError, ModelError

SAVE_HINT = "save the trained weights with torch.save(model.state_dict(), 'model.pt')"
# Checkpoint files often wrap the state_dict with the optimiser and epoch: these keys are unwrapped.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
NAMED = 3  # keys named in an error before "and N more"


def resolve(spec: str, base_dir: str) -> Path:
    """The weights file: a path as written, relative to the config file's folder."""
    path = Path(spec).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict in `path` (unwrapped from a checkpoint dict, `module.` prefixes of DataParallel removed)."""
    if not path.is_file():
        raise ConfigError(f"[model] weights: {path} {'is a folder' if path.is_dir() else 'does not exist'}",
                          hint="give the path of a state_dict file, relative to the config file's folder")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        refused = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        raise ModelError(f"cannot load weights from {path}: "
                         + ("it holds pickled objects, not only tensors (refused: loading them would run code)"
                            if refused else f"{type(exc).__name__}: {first[:200]}"),
                         hint=SAVE_HINT) from None
    state = _unwrap(loaded)
    if state is None:
        raise ModelError(f"{path} holds a {type(loaded).__name__}, not a state_dict (a mapping of names to tensors)",
                         hint=SAVE_HINT)
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):  # saved from nn.DataParallel / DistributedDataParallel
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _unwrap(loaded: object) -> dict[str, torch.Tensor] | None:
    if _is_state_dict(loaded):
        return dict(loaded)  # type: ignore[arg-type]
    if isinstance(loaded, Mapping):
        for key in WRAPPER_KEYS:
            if _is_state_dict(loaded.get(key)):
                return dict(loaded[key])
    return None


def _is_state_dict(value: object) -> bool:
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def load_into(model: nn.Module, path: Path) -> None:
    """Load the file's weights into `model`, refusing any missing, unexpected or mis-shaped tensor."""
    state = read(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {list(state[k].shape)} ≠ {list(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    problems = [f"{what}: {_names(keys)}" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file ≠ model)", mismatched))
                if keys]
    if problems:
        raise ModelError(f"{path} does not fit the model: {'; '.join(problems)}",
                         hint="the weights must come from the same architecture as [model] factory builds")
    with torch.no_grad():
        model.load_state_dict({k: state[k].to(v.dtype) if v.is_floating_point() else state[k]
                               for k, v in expected.items()})


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:NAMED])
    return shown + (f" and {len(keys) - NAMED} more" if len(keys) > NAMED else "")
