"""Training, evaluation and BatchNorm re-estimation for classifiers (cross-entropy, accuracy)."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from hwprune import atomic, faults
from hwprune.compute import Compute, on_device, resolve, to_device
from hwprune.config import TrainConfig
from hwprune.errors import DataError, OutputError
from hwprune.inputs import call
from hwprune.progress import NullProgress, Progress, stage


@dataclass(frozen=True)
class Snapshot:
    """Take a copy of the model after iteration `at` and hand it to `take` (θ_k, the rewind point)."""

    at: int
    take: Callable[[nn.Module], None]


def loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0,
                      drop_last=False)


def _lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warm = max(1, int(total * config.warmup_fraction))
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(model: nn.Module, dataset: Dataset, config: TrainConfig, epochs: float, seed: int,
          progress: Progress = NullProgress(), description: str = "training", snapshot: Snapshot | None = None,
          teacher: nn.Module | None = None, resume_file: Path | None = None, fault_label: str = "",
          loss: Callable[[nn.Module, Any], torch.Tensor] | None = None) -> None:
    """SGD (Nesterov) with warm-up + cosine schedule, in place; `snapshot` takes a copy of the model at one
    iteration (θ_k). Fractional `epochs` end part-way through a pass.

    The loss is the user's `loss(model, batch)` when given; else cross-entropy on class indices, which with a
    `teacher` and `config.distill` > 0 blends in the KL divergence to the teacher's softened outputs (Hinton
    et al. 2015): a pruned network retrained briefly recovers more of the dense network's accuracy from its
    soft targets than from the labels alone.

    With a `resume_file`, the whole training state (weights, optimiser, step, data order, RNG, θ_k if
    taken) is saved atomically after every full pass over the data and picked up from there when the file
    exists, so a killed training loses at most one epoch and ends bit-identical to an uninterrupted one.

    Image batches (4-D inputs) train in channels-last layout (faster for small convolutions on x86 CPUs, same
    float32 arithmetic) and the model is handed back in the default layout; inputs of other ranks (tabular,
    sequences) are left as they are.
    """
    torch.manual_seed(seed)
    compute = resolve(config)
    data = loader(dataset, config.batch_size, shuffle=True, seed=seed)
    total = max(1, round(epochs * len(data)))
    if snapshot is not None and snapshot.at == 0:
        snapshot.take(copy.deepcopy(model))
    model.to(compute.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                                weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(compute.device.type, enabled=compute.autocast == torch.float16)
    loss_of = _loss(compute, config, teacher) if loss is None else _autocast(loss, compute)
    model.train()
    step = 0
    model.to(memory_format=torch.channels_last)
    snapshot_state: dict[str, torch.Tensor] | None = None  # θ_k, once taken (saved with each checkpoint)
    if resume_file is not None and resume_file.exists():
        step, snapshot_state = _restore(resume_file, model, optimizer, data, snapshot)
    with stage(progress, description, total) as bar:
        bar.advance(step, "resumed" if step else "")
        while step < total:
            for batch in data:
                if step == total:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(step, total, config)
                optimizer.zero_grad(set_to_none=True)
                value = loss_of(model, to_device(_channels_last(batch), compute.device))
                scaler.scale(value).backward()
                scaler.step(optimizer)
                scaler.update()
                step += 1
                bar.advance(1, f"loss {float(value.detach()):.3f}")
                if snapshot is not None and step == snapshot.at:
                    taken = _default_layout(copy.deepcopy(model).cpu())
                    snapshot_state = taken.state_dict()
                    snapshot.take(taken)
                if fault_label:
                    faults.reached(f"{fault_label}:step:{step}")
            else:
                if resume_file is not None and step < total:
                    _save(resume_file, step, model, optimizer, data, snapshot_state)
    _default_layout(model.cpu()).eval()


def _channels_last(batch: Any) -> Any:
    """The batch with its 4-D input tensors in channels-last layout (other ranks have no such layout)."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, tuple | list):
        return type(batch)(_channels_last(b) for b in batch)
    return batch


def _autocast(loss: Callable[[nn.Module, Any], torch.Tensor], compute: Compute
              ) -> Callable[[nn.Module, Any], torch.Tensor]:
    def loss_of(model: nn.Module, batch: Any) -> torch.Tensor:
        with _autocast_on(compute):
            return loss(model, batch)

    return loss_of


def _autocast_on(compute: Compute) -> torch.autocast:
    return torch.autocast(compute.device.type, dtype=compute.autocast or torch.bfloat16,
                          enabled=compute.autocast is not None)


def _loss(compute: Compute, config: TrainConfig, teacher: nn.Module | None
          ) -> Callable[[nn.Module, Any], torch.Tensor]:
    """The training loss of one batch: cross-entropy, blended with distillation from `teacher` when
    `config.distill` > 0, under autocast when the precision asks for it (compute.py)."""
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    distill = config.distill if teacher is not None else 0.0
    if distill:
        teacher = copy.deepcopy(teacher).eval().to(compute.device).to(memory_format=torch.channels_last)

    def loss_of(model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, labels = batch
        with _autocast_on(compute):
            logits = call(model, inputs)
            _check_labels(labels, logits)
            loss = criterion(logits, labels)
            if distill:
                loss = (1.0 - distill) * loss + distill * _distillation(logits, teacher, inputs,
                                                                        config.distill_temperature)
        return loss

    return loss_of


def _save(path: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, data: DataLoader,
          snapshot_state: dict[str, torch.Tensor] | None) -> None:
    buffer = io.BytesIO()
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "data_order": data.generator.get_state(), "rng": torch.get_rng_state(),
                "snapshot": snapshot_state}, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, data: DataLoader,
             snapshot: Snapshot | None) -> tuple[int, dict[str, torch.Tensor] | None]:
    """Load a `_save` checkpoint into model, optimiser and data order; hand θ_k on again if it was taken."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise OutputError(f"unreadable training checkpoint {path} ({type(exc).__name__})",
                          hint="delete it to train this stage from its start, or pass --force to start over") from None
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    data.generator.set_state(saved["data_order"])
    torch.set_rng_state(saved["rng"])
    if saved["snapshot"] is not None and snapshot is not None and snapshot.at:
        taken = _default_layout(copy.deepcopy(model))
        taken.load_state_dict(saved["snapshot"])
        snapshot.take(taken)
    return int(saved["step"]), saved["snapshot"]


def _check_labels(labels: torch.Tensor, logits: torch.Tensor) -> None:
    """Labels are the user's data: class indices within the model's outputs (one per sample, or one per pixel
    for [N, C, H, W] outputs), or cross-entropy fails deep inside torch (an IndexError, or a dtype error for
    float labels)."""
    if (not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool
            or logits.dim() < 2 or labels.dim() != logits.dim() - 1):
        what = (f"{labels.dtype} of shape {list(labels.shape)}" if isinstance(labels, torch.Tensor)
                else type(labels).__name__)
        raise DataError(f"the default loss is cross-entropy on class indices (an integer per sample, or per pixel "
                        f"of [N, C, H, W] outputs): the model gives outputs of shape {list(logits.shape)}, the data "
                        f"targets {what}",
                        hint="for regression or another task set [train] loss (and [eval] metric) to your own; "
                             "for classification return (input, class index) from the datasets")
    classes = logits.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DataError(f"a training label is {bad}, outside the model's {classes} classes (0..{classes - 1})",
                        hint="fix the dataset's labels, or give the model as many outputs as there are classes")


def _distillation(logits: torch.Tensor, teacher: nn.Module, inputs: Any, temperature: float
                  ) -> torch.Tensor:
    """T²·KL(teacher ‖ student) on temperature-softened outputs (the T² keeps gradient scale independent of T)."""
    with torch.no_grad():
        target = torch.log_softmax(call(teacher, inputs).float() / temperature, dim=1)
    student = torch.log_softmax(logits.float() / temperature, dim=1)
    return nn.functional.kl_div(student, target, reduction="batchmean", log_target=True) * temperature ** 2


def _default_layout(model: nn.Module) -> nn.Module:
    """Back to contiguous (NCHW) parameters, which slicing, export and checkpoints expect."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone(memory_format=torch.contiguous_format)  # also canonical strides for size-1 dims
    return model


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 512, limit: int | None = None,
             device: torch.device | None = None) -> float:
    """Top-1 accuracy (fraction) on `dataset` (its first `limit` items when given), computed on `device`."""
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    correct = total = 0  # per sample, or per pixel for [N, C, H, W] outputs (segmentation)
    with on_device(model.eval(), device):
        for inputs, labels in loader(dataset, batch_size, shuffle=False, seed=0):
            predicted = call(model, to_device(inputs, device or torch.device("cpu"))).argmax(1).cpu()
            correct += int((predicted == labels).sum())
            total += labels.numel()
    return correct / max(total, 1)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: list[Any], device: torch.device | None = None) -> nn.Module:
    """Re-estimate BatchNorm running statistics on `batches` (cumulative average), in place.

    Pruning shifts activation statistics; re-estimating them makes the masked network's accuracy a cheap,
    well-correlated proxy for its accuracy after retraining (EagleEye, ECCV 2020).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with on_device(model, device):
            for x in batches:
                call(model, to_device(x, device or torch.device("cpu")))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
    return model


def sample_batches(dataset: Dataset, count: int, batch_size: int, seed: int) -> list[Any]:
    """A fixed list of input batches (the same for every trial, so trials compare fairly)."""
    torch.manual_seed(seed)  # augmentation's draws
    batches = []
    for inputs, _ in loader(dataset, batch_size, shuffle=True, seed=seed):
        batches.append(inputs)
        if len(batches) == count:
            break
    return batches

