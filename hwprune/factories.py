"""Import the user's model and data factories ("module:function"), resolved beside their config file."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hwprune import inputs, models
from hwprune.config import DataSpec, InputSpec
from hwprune.errors import ConfigError, DataError, HwpruneError, ModelError

log = logging.getLogger(__name__)


def load_callable(spec: str, base_dir: str, what: str, error: type[HwpruneError]) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, str(Path(base_dir).resolve()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise error(f"{what} '{spec}': cannot import module '{module_name}' ({type(exc).__name__}: {exc})",
                    hint=f"the module must be importable from {Path(base_dir).resolve()}") from None
    finally:
        sys.path.pop(0)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{what} '{spec}': '{module_name}' has no callable '{attr}'",
                    hint="write it as 'module:function'")
    return fn


def _call(fn: Callable[..., Any], spec: str, what: str, error: type[HwpruneError], **offered: Any) -> Any:
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in offered.items() if k in params and v not in (None, "")}
    try:
        return fn(**kwargs)
    except HwpruneError:
        raise
    except Exception as exc:
        raise error(f"{what} factory '{spec}' failed: {type(exc).__name__}: {exc}",
                    hint=f"call it yourself to debug: python -c \"import ...; {spec.replace(':', '.')}()\"") from None


def build_model(spec: str, base_dir: str) -> nn.Module:
    spec = models.resolve(spec)
    model = _call(load_callable(spec, base_dir, "model factory", ModelError), spec, "model", ModelError)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model factory '{spec}' returned {type(model).__name__}, not a torch.nn.Module",
                         hint="return an nn.Module instance")
    return model


def check_input(model: nn.Module, example: inputs.Example, spec: str) -> None:
    """The model runs on the configured input shape: one forward pass, before anything is traced or trained.
    The forward is the user's code, so whatever it raises is reported as theirs (exit 4, no traceback)."""
    training = model.training
    try:
        with torch.no_grad():
            inputs.call(model.eval(), example)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        given = inputs.args(example)
        shapes = ", ".join(str(list(t.shape)) + ("" if t.is_floating_point() else f" {t.dtype}".replace("torch.", ""))
                           for t in given)
        what = f"an input of shape {shapes}" if len(given) == 1 else f"inputs of shapes {shapes}"
        raise ModelError(f"model '{spec}' fails on {what} ({type(exc).__name__}: "
                         f"{text[0] if text else ''})",
                         hint="set [model] input_shape to the shape the model takes, e.g. [1, 3, 32, 32]") from None
    finally:
        model.train(training)


def check_samples(data: tuple[Dataset, ...], specs: tuple[InputSpec, ...], source: str) -> None:
    """The data's samples hold the inputs [model] input_shape (or [model.inputs]) promises: as many, of the same
    shapes without the batch dimension, and floating point where the model takes floats, integers where ids.
    `source` names the data in messages, e.g. "factory 'my_data:build'" (see describe_data)."""
    try:
        sample = data[0][0]
    except Exception as exc:
        raise DataError(f"data {source}: reading the first training sample failed ({type(exc).__name__}: "
                        f"{exc})", hint="the dataset's __getitem__ must return (input tensor, target)") from None
    given = inputs.args(sample[0]) if isinstance(sample, tuple | list) and len(sample) == 2 else ()
    if not given or not all(isinstance(t, torch.Tensor) for t in given):
        raise DataError(f"data {source}: a sample must be (input tensor, target), or (tuple of input "
                        f"tensors, target) for several inputs; got {type(sample).__name__}",
                        hint="return (input, label) pairs from the datasets")
    if len(given) != len(specs):
        raise ConfigError(f"the model is configured with {len(specs)} input(s) but the data's samples hold "
                          f"{len(given)}", hint="list every input in [model] input_shape or [model.inputs]")
    several = len(specs) > 1
    for s, t in zip(specs, given):
        if tuple(t.shape) != s.shape[1:]:
            what = f"input '{s.name}' {list(s.shape)}" if several else f"input_shape {list(s.shape)}"
            raise ConfigError(f"[model] {what} does not match the data: its samples have shape {list(t.shape)} "
                              "(without the batch dimension)",
                              hint=f"set [model.inputs] {s.name} shape = {[1, *t.shape]}" if several
                              else f"set [model] input_shape = {[1, *t.shape]}")
        held = str(t.dtype).removeprefix("torch.")
        if t.dtype.is_floating_point != s.dtype.startswith("float"):
            raise ConfigError(f"[model] input '{s.name}' is {s.dtype} but the data's samples hold {held}",
                              hint="give the input its dtype in [model.inputs] (e.g. dtype = \"int64\" for ids)")
        if t.dtype.is_floating_point and held != s.dtype:  # float64 samples into float32 layers fail mid-training
            raise DataError(f"data {source}: input '{s.name}' samples are {held}, the model takes {s.dtype}",
                            hint=f"convert them in the dataset (e.g. torch.from_numpy(x).float()), or declare "
                                 f"dtype = \"{held}\" in [model.inputs] if the model computes in it")


def data_path(value: str, base_dir: str) -> Path:
    """A data path from the config: relative ones are resolved from the config file's folder, as factories are."""
    return Path(base_dir) / Path(value).expanduser()


def describe_data(data: DataSpec) -> str:
    """How messages name the data source."""
    if data.npz:
        return f"npz file '{data.npz}'"
    if data.image_folder:
        return f"image folder '{data.image_folder}'"
    return f"factory '{data.factory}'"


def build_data(data: DataSpec, base_dir: str, data_dir: str | None, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, test) from the configured source: an .npz file, an image folder, or the data factory."""
    if data.npz or data.image_folder:
        if data_dir:
            log.warning("--data-dir %s is for a data factory; ignored with [data] %s", data_dir,
                        "npz" if data.npz else "image_folder")
        if data.npz:
            from hwprune.data import arrays
            return arrays.build(data_path(data.npz, base_dir), seed)
        from hwprune.data import image_folder  # Pillow is loaded only for image folders
        return image_folder.build(data_path(data.image_folder, base_dir), seed)
    return build_factory_data(data.factory, base_dir, data_dir, seed)


def build_factory_data(spec: str, base_dir: str, data_dir: str | None, seed: int
                       ) -> tuple[Dataset, Dataset, Dataset]:
    result = _call(load_callable(spec, base_dir, "data factory", DataError), spec, "data", DataError,
                   data_dir=data_dir, seed=seed)
    if not (isinstance(result, tuple | list) and len(result) == 3):
        raise DataError(f"data factory '{spec}' must return (train, val, test) datasets",
                        hint="return three torch.utils.data.Dataset objects of (input, class index)")
    for name, ds in zip(("train", "val", "test"), result):
        try:
            if len(ds) == 0:
                raise DataError(f"data factory '{spec}': the {name} dataset is empty")
        except TypeError:
            raise DataError(f"data factory '{spec}': the {name} dataset has no length") from None
    return tuple(result)  # type: ignore[return-value]
