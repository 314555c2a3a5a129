"""One training loop: SGD or AdamW, warmup + cosine schedule, label smoothing, AMP on GPU."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


def fit(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: float = 1.0,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 1e-4,
    schedule: str = "cosine",
    warmup_epochs: float = 0.0,
    min_lr: float = 0.0,
    label_smoothing: float = 0.0,
    grad_clip: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: Callable[[str], None] | None = None,
    loss_fn: Callable | None = None,
) -> dict[str, float]:
    """Train ``model`` in place on ``dataset`` of ``(image, label, sample_id)`` items.

    Optimiser and schedule come from timm's factories (``create_optimizer_v2``, ``CosineLRScheduler``),
    stepped per update. Fractional ``epochs`` train on the first part of the last epoch.

    Args:
        model: takes float images in [0, 1] (a :class:`model_zoo.NormalizedModel`) and returns logits.
        dataset: training data.
        epochs: number of passes over the data (may be fractional).
        batch_size: samples per update.
        optimizer: ``sgd`` (momentum, Nesterov if ``nesterov``) or ``adamw``.
        lr: peak learning rate.
        momentum, nesterov: SGD settings.
        weight_decay: decoupled for AdamW, L2 for SGD; biases and norm layers are exempt (timm's default).
        schedule: ``cosine`` (to ``min_lr``) or ``constant``.
        warmup_epochs: linear warmup from ``lr / 100``.
        label_smoothing: cross-entropy label smoothing.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        seed: shuffling seed.
        device: where to train.
        num_workers: DataLoader workers.
        progress: called with a one-line message about every 10 seconds.
        loss_fn: a custom training step: ``loss, logits = loss_fn(model, images, labels, criterion)`` replaces
            ``logits = model(images); loss = criterion(logits, labels)`` (inside the same autocast context;
            ``criterion`` is the label-smoothed cross-entropy). The reported accuracy is that of ``logits``.
            Weight-sharing supernets train through it (:func:`training.supernet.sandwich_loss`).

    Returns:
        ``{"train_loss", "train_acc", "steps", "seconds"}`` over the last epoch's updates.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not epochs > 0 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and lr must be > 0 and batch_size >= 1, got {epochs}, {lr}, {batch_size}")
    device = torch.device(device)
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator, num_workers=num_workers
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(dataset)} samples) is smaller than one batch ({batch_size})")
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    warmup_steps = min(total_steps - 1, round(warmup_epochs * steps_per_epoch))
    opt_name = "adamw" if optimizer == "adamw" else ("sgd" if nesterov else "momentum")
    opt_kwargs = {"momentum": momentum} if optimizer == "sgd" else {}
    opt = create_optimizer_v2(model, opt=opt_name, lr=lr, weight_decay=weight_decay, **opt_kwargs)
    scheduler = None
    if schedule == "cosine":
        scheduler = CosineLRScheduler(
            opt, t_initial=total_steps, lr_min=min_lr, warmup_t=warmup_steps, warmup_lr_init=lr / 100, t_in_epochs=False
        )
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    step, start, last = 0, time.monotonic(), time.monotonic()
    loss_sum, correct, seen = 0.0, 0, 0
    while step < total_steps:
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels, _ in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp):
                if loss_fn is None:
                    logits = model(images)
                    loss = criterion(logits, labels)
                else:
                    loss, logits = loss_fn(model, images, labels, criterion)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            if scheduler is not None:
                scheduler.step_update(num_updates=step)
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
            now = time.monotonic()
            if progress is not None and (now - last > 10 or step == total_steps):
                last = now
                progress(
                    f"step {step}/{total_steps}  loss {loss_sum / seen:.4f}  acc {correct / seen:.2%}  "
                    f"lr {opt.param_groups[0]['lr']:.3g}  ({step / max(now - start, 1e-9):.1f} steps/s)"
                )
            if step >= total_steps:
                break
    model.eval()
    return {
        "train_loss": loss_sum / seen,
        "train_acc": correct / seen,
        "steps": float(step),
        "seconds": time.monotonic() - start,
    }
