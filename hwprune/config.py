"""Settings as frozen dataclasses, loaded from TOML with strict key and type checking.

No config file means the built-in Fashion-MNIST example (`ProjectConfig()` defaults).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwprune.errors import ConfigError
from hwprune.models import MODELS

INPUT_DTYPES = ("float32", "float64", "float16", "int64", "int32", "bool")  # what an input may be fed as
DEFAULT_INPUT_SHAPE = (1, 1, 28, 28)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class InputSpec:
    """One input of the model: its name (in the exported graph), shape with the batch dimension first, dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelSpec:
    """Where the network comes from: "module:function" returning an nn.Module, or a built-in model's name."""

    factory: str = "example-cnn"
    # One input's shape, batch first ([1, 3, 32, 32], [1, 16] for a table row, [1, 28, 100] for a sequence), or
    # a list of shapes for a model with several float inputs, passed to forward in that order.
    input_shape: tuple[int, ...] | tuple[tuple[int, ...], ...] = DEFAULT_INPUT_SHAPE
    # Named inputs with dtypes instead, in forward's order: {ids = {shape = [1, 32], dtype = "int64"}, ...}.
    inputs: dict[str, Any] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()  # module names whose output channels must never be pruned
    # A trained start: a state_dict file (relative to this config's folder) loaded into the factory's model,
    # or `pretrained = true` when the factory itself returns trained weights. Either skips dense training.
    weights: str = ""
    pretrained: bool = False

    @property
    def input_specs(self) -> tuple[InputSpec, ...]:
        """Every input, named and typed (unnamed ones are `input`, or `input0`, `input1`, ... when several)."""
        if self.inputs:
            return tuple(InputSpec(name, tuple(v["shape"]), v.get("dtype", "float32"))
                         for name, v in self.inputs.items())
        several = bool(self.input_shape) and isinstance(self.input_shape[0], tuple | list)
        shapes = tuple(tuple(s) for s in self.input_shape) if several else (tuple(self.input_shape),)
        names = [f"input{i}" for i in range(len(shapes))] if len(shapes) > 1 else ["input"]
        return tuple(InputSpec(n, s) for n, s in zip(names, shapes))  # type: ignore[arg-type]

    @property
    def trained(self) -> bool:
        """The user brings trained weights: there is no dense training (and no trajectory to rewind into)."""
        return bool(self.weights) or self.pretrained


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
    # Where training, retraining, BatchNorm re-estimation and the search's scoring run: "auto" (the first CUDA GPU
    # when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    # "bf16"/"fp16": convolutions and matmuls in bfloat16/float16 under autocast (weights, BatchNorm and the
    # optimiser stay float32; fp16 only on a GPU, with loss scaling); "auto": bf16 (else fp16) on a GPU, fp32 on
    # the CPU (bf16 pays only where the CPU has it natively, AVX512_BF16/AMX; elsewhere it is emulated, slower).
    precision: str = "auto"
    # Retraining after pruning: weight of the distillation loss from the dense network (0: labels only) and
    # the softening temperature. Dense training never distils.
    distill: float = 0.5  # example CNN at 0.5x latency: +0.6 points over labels alone (README, Pareto)
    distill_temperature: float = 4.0
    # The user's training objective, "module:function" called as fn(model, batch) → scalar loss tensor, with
    # `batch` what the data loader yields. "" is cross-entropy on (input, class index) with distillation.
    loss: str = ""


@dataclass(frozen=True)
class EvalConfig:
    """How a network is scored: the search's proxy, every round's validation score and the test results."""

    # "module:function" called as fn(model, dataset) → a number, higher is better (return −MSE for an error).
    # "" is top-1 accuracy.
    metric: str = ""
    metric_name: str = ""  # its name in reports ("" : the function's name)


@dataclass(frozen=True)
class ImpConfig:
    """Iterative magnitude pruning schedule."""

    rounds: int = 2
    # "lr": survivors keep their trained values and the learning-rate schedule restarts (LR rewinding,
    # Renda et al., ICLR 2020: matches or beats weight rewinding and fine-tuning at equal retraining);
    # "weights": survivors are reset to θ_k, the dense weights at an early iteration (the lottery ticket).
    rewind: str = "lr"
    rewind_fraction: float = 0.05  # θ_k as a fraction of dense training iterations (rewind = "weights"); 0: θ_0
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
class ExportConfig:
    """The shipped model.onnx."""

    # A dynamic batch axis (the first dimension of every input and output): one file serves any batch size.
    # It is checked against PyTorch at batch 1 and at the target's batch; latencies are measured at the target's.
    dynamic_batch: bool = False


@dataclass(frozen=True)
class ProjectConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    imp: ImpConfig = field(default_factory=ImpConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
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
    if origin in (types.UnionType, typing.Union):  # the first member type the value fits
        problems = []
        for member in typing.get_args(hint):
            try:
                return _check_type(value, member, where)
            except ConfigError as exc:
                problems.append(exc)
        raise problems[0]  # what the value fails as the simplest member (e.g. one input's shape)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
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
        (config.train.precision in ("auto", "fp32", "bf16", "fp16"),
         "[train] precision must be 'auto', 'fp32', 'bf16' or 'fp16'"),
        (bool(re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", config.train.device)),
         "[train] device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (0 <= config.train.distill <= 1, "[train] distill must be in [0, 1]"),
        (config.train.distill_temperature > 0, "[train] distill_temperature must be > 0"),
        (config.imp.rounds >= 1, "[imp] rounds must be ≥ 1"),
        (config.imp.extra_rounds >= 0, "[imp] extra_rounds must be ≥ 0"),
        (config.imp.rewind in ("lr", "weights"), "[imp] rewind must be 'lr' or 'weights'"),
        (0 < config.imp.intermediate_share <= 1, "[imp] intermediate_share must be in (0, 1]"),
        (0 <= config.imp.rewind_fraction < 1,
         "[imp] rewind_fraction must be in [0, 1) (0: the original initialisation θ_0)"),
        (0 <= config.imp.safety_margin < 0.5, "[imp] safety_margin must be in [0, 0.5)"),
        (config.search.sampler in ("tpe", "nsga2"), "[search] sampler must be 'tpe' or 'nsga2'"),
        (config.search.trials >= 1, "[search] trials must be ≥ 1"),
        (0 < config.search.max_prune_rate < 1, "[search] max_prune_rate must be in (0, 1)"),
        (config.search.bn_batches >= 1, "[search] bn_batches must be ≥ 1"),
        (config.search.val_samples >= 1, "[search] val_samples must be ≥ 1"),
        (config.search.proxy_steps >= 0, "[search] proxy_steps must be ≥ 0"),
        (config.seed >= 0, "seed must be ≥ 0"),
        (":" in config.model.factory or config.model.factory in MODELS,
         f"[model] factory must be 'module:function' or a built-in model ({', '.join(MODELS)})"),
        (":" in config.data.factory, "[data] factory must look like 'module:function'"),
        (not config.train.loss or ":" in config.train.loss, "[train] loss must look like 'module:function'"),
        (not config.eval.metric or ":" in config.eval.metric, "[eval] metric must look like 'module:function'"),
        (not (config.model.weights and config.model.pretrained),
         "[model] weights and pretrained = true both say where trained weights come from: set one"),
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
    _validate_inputs(config.model, where)
    if config.model.trained and config.imp.rewind == "weights":
        raise ConfigError(f"{where}: [imp] rewind = 'weights' resets survivors to θ_k, weights from early in the "
                          "dense training, but a pretrained model comes without its training trajectory",
                          hint="use rewind = 'lr' (the default: survivors keep their trained values and the "
                               "learning-rate schedule restarts), or train from scratch without weights")


def _validate_inputs(model: ModelSpec, where: str) -> None:
    """Shapes batch-first and positive, one batch size for all inputs, known dtypes, names fit for a graph."""
    hint = ("see README 'Your own model': e.g. input_shape = [1, 3, 32, 32], or "
            "[model.inputs] ids = {shape = [1, 32], dtype = \"int64\"}")
    if model.inputs and tuple(model.input_shape) != DEFAULT_INPUT_SHAPE:
        raise ConfigError(f"{where}: [model] input_shape and [model.inputs] both describe the inputs: set one",
                          hint=hint)
    for name, value in model.inputs.items():
        if not isinstance(value, dict) or set(value) - {"shape", "dtype"} or "shape" not in value:
            raise ConfigError(f"{where}: [model.inputs] {name} must be a table {{shape = [...], dtype = \"...\"}}",
                              hint=hint)
        _check_type(value["shape"], tuple[int, ...], f"{where}: [model.inputs] {name}.shape")
        _check_type(value.get("dtype", "float32"), str, f"{where}: [model.inputs] {name}.dtype")
    specs = model.input_specs
    for spec in specs:
        label = f"[model] input '{spec.name}'" if model.inputs else "[model] input_shape"
        if not _NAME.fullmatch(spec.name):
            raise ConfigError(f"{where}: [model.inputs] name '{spec.name[:64]}' is not a plain name "
                              "(letters, digits, _)", hint=hint)
        if len(spec.shape) < 2 or any(d < 1 for d in spec.shape):
            raise ConfigError(f"{where}: {label} {list(spec.shape)} must be positive with the batch dimension "
                              "first, e.g. [1, 3, 32, 32]", hint=hint)
        if math.prod(spec.shape[1:]) > MAX_INPUT_ELEMENTS:
            raise ConfigError(f"{where}: {label} is too large (over {MAX_INPUT_ELEMENTS:,} values per sample)",
                              hint=hint)
        if spec.dtype not in INPUT_DTYPES:
            raise ConfigError(f"{where}: {label} has dtype '{spec.dtype[:32]}'",
                              hint=f"dtypes: {', '.join(INPUT_DTYPES)}")
    if len({s.shape[0] for s in specs}) > 1:
        raise ConfigError(f"{where}: the inputs have different batch sizes "
                          f"({', '.join(str(s.shape[0]) for s in specs)})",
                          hint="every input's first dimension is the batch; give them the same")
