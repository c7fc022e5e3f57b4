"""Settings as frozen dataclasses, loaded from TOML with strict key and type checking.

No config file means the built-in Fashion-MNIST example (`ProjectConfig()` defaults).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwprune.errors import ConfigError
from hwprune.models import MODELS


@dataclass(frozen=True)
class ModelSpec:
    """Where the network comes from: "module:function" returning an nn.Module, or a built-in model's name."""

    factory: str = "example-cnn"
    input_shape: tuple[int, ...] = (1, 1, 28, 28)
    ignore: tuple[str, ...] = ()  # module names whose output channels must never be pruned


DEFAULT_DATA_FACTORY = "hwprune.data.fashion_mnist:build"


@dataclass(frozen=True)
class DataSpec:
    """Where the data come from: one of `factory` ("module:function" returning (train, val, test) datasets of
    (input, class index)), `npz` or `image_folder` (data without code; README 'Data without code')."""

    factory: str = DEFAULT_DATA_FACTORY
    data_dir: str = ""  # passed to the factory as `data_dir` when set; "" lets the factory choose
    # A NumPy .npz file with x_train, y_train (and optionally x_val, y_val, x_test, y_test); relative paths
    # are resolved from the config file's folder.
    npz: str = ""
    # A folder with one subfolder of images per class (optionally inside train/, val/, test/); relative
    # paths are resolved from the config file's folder.
    image_folder: str = ""

    def sources(self) -> list[str]:
        """The data sources set: the factory counts only when it is not the built-in example's."""
        return [name for name, on in (("factory", self.factory != DEFAULT_DATA_FACTORY), ("npz", bool(self.npz)),
                                      ("image_folder", bool(self.image_folder))) if on]


@dataclass(frozen=True)
class TrainConfig:
    """Dense training and per-round retraining recipe (SGD with Nesterov momentum, cosine decay)."""

    epochs: int = 8  # the example CNN reaches 0.92 on Fashion-MNIST
    retrain_epochs: float = 1.5  # the final IMP round's retraining (earlier rounds: see [imp] intermediate_share)
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_fraction: float = 0.05
    threads: int = 2  # torch intra-op threads for training
    # "bf16": convolutions and matmuls in bfloat16 under autocast (weights, BatchNorm and the optimiser stay
    # float32); faster where the CPU has native bf16 (AVX512_BF16/AMX), slower where it is emulated.
    precision: str = "fp32"
    # Retraining after pruning: weight of the distillation loss from the dense network (0: labels only) and
    # the softening temperature. Dense training never distils.
    distill: float = 0.5  # example CNN at 0.5x latency: +0.6 points over labels alone (README, Pareto)
    distill_temperature: float = 4.0


@dataclass(frozen=True)
class ImpConfig:
    """Iterative magnitude pruning schedule."""

    rounds: int = 2
    # "lr": survivors keep their trained values and the learning-rate schedule restarts (LR rewinding,
    # Renda et al., ICLR 2020: matches or beats weight rewinding and fine-tuning at equal retraining);
    # "weights": survivors are reset to θ_k, the dense weights at an early iteration (the lottery ticket).
    rewind: str = "lr"
    rewind_fraction: float = 0.05  # θ_k as a fraction of dense training iterations (rewind = "weights")
    # Retraining of the rounds before the last, as a share of retrain_epochs: an intermediate network is
    # pruned again, so its retraining only has to re-settle the survivors; the final network keeps what it gets.
    intermediate_share: float = 1 / 3
    extra_rounds: int = 2  # extra rounds allowed if the measured latency still misses the budget
    safety_margin: float = 0.03  # search for predicted latency ≤ target·(1 − margin)


@dataclass(frozen=True)
class SearchConfig:
    """Optuna search of per-group prune rates inside each IMP round."""

    sampler: str = "tpe"  # "tpe" or "nsga2"
    trials: int = 24
    max_prune_rate: float = 0.85
    bn_batches: int = 10  # batches used to re-estimate BatchNorm statistics for the proxy score
    val_samples: int = 2000  # validation images scored per trial
    # Training steps each candidate gets before it is scored (0: score right after BatchNorm re-estimation).
    # A short fine-tune ranks candidates by what they recover to, not by how little pruning first hurts.
    proxy_steps: int = 0


@dataclass(frozen=True)
class ProjectConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    imp: ImpConfig = field(default_factory=ImpConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    seed: int = 0
    base_dir: str = "."  # directory that factory modules are resolved from (the config file's folder)


INT_LIMIT = 2 ** 63  # TOML integers are signed 64-bit
MAX_THREADS = 4096
MAX_INPUT_ELEMENTS = 10 ** 8  # per sample: larger is a typo, not a network to prune on a CPU


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Validate (and lightly coerce) one TOML value against a dataclass field type."""
    origin = typing.get_origin(hint)
    if origin in (tuple,):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_type, *_), = [typing.get_args(hint)]
        return tuple(_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int) and abs(value) >= INT_LIMIT or not math.isfinite(value):  # TOML has nan, inf
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if abs(value) >= INT_LIMIT:  # tomllib reads integers of any size; TOML's are 64-bit
            raise ConfigError(f"{where}: integer {value} is out of range")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    return value


def from_mapping(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from `data`, naming the file and key of any unknown key or bad type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"{where}: unknown key '{key}'",
                hint=f"allowed keys: {', '.join(names)}",
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            kwargs[key] = from_mapping(hint, value, f"{where} [{key}]")
        else:
            kwargs[key] = _check_type(value, hint, f"{where}: key '{key}'")
    return cls(**kwargs)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax problems into ConfigError."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", hint="check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML file", hint="check the path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})", hint="check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})", hint="fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML (not UTF-8 text)", hint="save the file as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML (nested too deeply)", hint="fix the syntax") from None


def load_config(path: Path | None) -> ProjectConfig:
    """Load `hwprune.toml`; None gives the built-in example. Validates every setting."""
    if path is None:
        config = ProjectConfig()
    else:
        data = read_toml(path)
        data.setdefault("base_dir", str(path.resolve().parent))
        config = from_mapping(ProjectConfig, data, str(path))
    validate(config, str(path) if path else "built-in config")
    return config


def validate(config: ProjectConfig, where: str) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        (config.train.epochs >= 1, "[train] epochs must be ≥ 1"),
        (0 < config.train.retrain_epochs <= 10_000, "[train] retrain_epochs must be in (0, 10000]"),
        (config.train.batch_size >= 1, "[train] batch_size must be ≥ 1"),
        (0 < config.train.lr <= 100, "[train] lr must be in (0, 100]"),
        (0 < config.train.momentum < 1, "[train] momentum must be in (0, 1) (SGD with Nesterov momentum)"),
        (0 <= config.train.weight_decay <= 1, "[train] weight_decay must be in [0, 1]"),
        (0 <= config.train.label_smoothing < 1, "[train] label_smoothing must be in [0, 1)"),
        (0 <= config.train.warmup_fraction < 1, "[train] warmup_fraction must be in [0, 1)"),
        (1 <= config.train.threads <= MAX_THREADS, f"[train] threads must be in [1, {MAX_THREADS}]"),
        (config.train.precision in ("fp32", "bf16"), "[train] precision must be 'fp32' or 'bf16'"),
        (0 <= config.train.distill <= 1, "[train] distill must be in [0, 1]"),
        (config.train.distill_temperature > 0, "[train] distill_temperature must be > 0"),
        (config.imp.rounds >= 1, "[imp] rounds must be ≥ 1"),
        (config.imp.extra_rounds >= 0, "[imp] extra_rounds must be ≥ 0"),
        (config.imp.rewind in ("lr", "weights"), "[imp] rewind must be 'lr' or 'weights'"),
        (0 < config.imp.intermediate_share <= 1, "[imp] intermediate_share must be in (0, 1]"),
        (0 < config.imp.rewind_fraction < 1, "[imp] rewind_fraction must be in (0, 1)"),
        (0 <= config.imp.safety_margin < 0.5, "[imp] safety_margin must be in [0, 0.5)"),
        (config.search.sampler in ("tpe", "nsga2"), "[search] sampler must be 'tpe' or 'nsga2'"),
        (config.search.trials >= 1, "[search] trials must be ≥ 1"),
        (0 < config.search.max_prune_rate < 1, "[search] max_prune_rate must be in (0, 1)"),
        (config.search.bn_batches >= 1, "[search] bn_batches must be ≥ 1"),
        (config.search.val_samples >= 1, "[search] val_samples must be ≥ 1"),
        (config.search.proxy_steps >= 0, "[search] proxy_steps must be ≥ 0"),
        (len(config.model.input_shape) >= 2 and all(d >= 1 for d in config.model.input_shape),
         "[model] input_shape must be positive, e.g. [1, 3, 32, 32]"),
        (math.prod(config.model.input_shape[1:]) <= MAX_INPUT_ELEMENTS,
         f"[model] input_shape is too large (over {MAX_INPUT_ELEMENTS:,} values per sample)"),
        (config.seed >= 0, "seed must be ≥ 0"),
        (":" in config.model.factory or config.model.factory in MODELS,
         f"[model] factory must be 'module:function' or a built-in model ({', '.join(MODELS)})"),
        (":" in config.data.factory, "[data] factory must look like 'module:function'"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}", hint="see README 'Your own model' for the allowed values")
    sources = config.data.sources()
    if len(sources) > 1:
        raise ConfigError(f"{where}: [data] sets {' and '.join(sources)}: set one data source",
                          hint="keep one of [data] factory, npz or image_folder (README 'Data without code')")
    if config.data.data_dir and sources and sources[0] != "factory":
        raise ConfigError(f"{where}: [data] data_dir is for a data factory, not for [data] {sources[0]}",
                          hint=f"remove data_dir; [data] {sources[0]} is the path to the data")
