"""One training loop for every recipe: optimiser and schedule from timm, techniques switched by options.

:func:`fit` trains a model in place. The pieces it composes are well-kept ones: timm's optimiser and
scheduler factories, ``Mixup`` (also CutMix), the RandAugment / AutoAugment / AugMix policies, ``ModelEmaV3``,
``JsdCrossEntropy``; attacks from the noise pillar (torchattacks underneath); torch's AMP and
``DistributedDataParallel``.

**Batches are a function of the step.** Step ``s`` of epoch ``e`` takes the ``s``-th slice of a permutation
drawn from ``(seed, e)``; under data parallelism each of ``W`` processes takes its ``1/W`` of that global
batch. So a run that resumes at step ``k`` sees exactly the batches an uninterrupted one sees from ``k`` on,
and ``W`` processes see the batches one process sees.

**Resume.** Every ``checkpoint_every`` steps the whole training state (weights, optimiser, EMA, gradient scaler,
the step, and the torch, NumPy and Python random states) is written atomically to ``state_file``. A run that
finds one with its own ``state_key`` continues from it; one with another key is refused. With
``num_workers=0`` on a CPU (deterministic kernels), a run killed at any point and resumed ends with exactly
the weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from robustart.training import distributed

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")


class StepBatches(Sampler):
    """Index lists of this process's part of global batches ``start .. total - 1`` (module docstring)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.rank, self.world = rank, world
        self.per_epoch = n // batch_size
        self.part = batch_size // world

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[int]]:
        epoch, order = -1, None
        for step in range(self.start, self.total):
            if step // self.per_epoch != epoch:
                epoch = step // self.per_epoch
                order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            first = (step % self.per_epoch) * self.batch_size + self.rank * self.part
            yield order[first : first + self.part].tolist()


def _amp_dtype(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    amp = "off" if amp in (None, False) else ("auto" if amp is True else str(amp).lower())
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs a CUDA device; use bf16 on a CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state(state_file: str | Path, state_key: str | None) -> dict[str, Any]:
    """A saved training state (``weights_only``), refused with ValueError when its key is not ``state_key``."""
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    if state_key is not None and state.get("key") != state_key:
        raise ValueError(
            f"the training state {state_file} belongs to training config {state.get('key')!r}, not to this one "
            f"({state_key!r}); resume with the config that wrote it, or remove the file"
        )
    return state


def check_recipe(
    *,
    optimizer: str = "sgd",
    schedule: str = "cosine",
    epochs: float = 1.0,
    batch_size: int = 128,
    lr: float = 0.1,
    ema: float | None = None,
    augment: str | None = None,
    augmix_jsd: bool = False,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    adversarial: dict[str, Any] | None = None,
    amp: str | bool | None = "auto",
    device: torch.device | str = "cpu",
    custom_loss: bool = False,
    teacher: bool = False,
    **_: Any,
) -> None:
    """Raise ValueError for options :func:`fit` cannot train with, before any work (the other options of
    ``fit`` are accepted and ignored, so a recipe's whole dict can be passed)."""
    from robustart.training.augment import check_policy
    from robustart.training.losses import adversarial_options

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not epochs > 0 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and lr must be > 0 and batch_size >= 1, got {epochs}, {lr}, {batch_size}")
    if ema is not None and not 0 < ema < 1:
        raise ValueError(f"ema is a decay in (0, 1), got {ema}")
    if augmix_jsd and not (augment or "").startswith("augmix"):
        raise ValueError("augmix_jsd needs an AugMix policy: augment='augmix-m3-w3' (training=augmix)")
    if augmix_jsd and (mixup > 0 or cutmix > 0 or adversarial is not None):
        raise ValueError("augmix_jsd does not combine with mixup/cutmix or adversarial training")
    if custom_loss and (adversarial is not None or teacher or mixup > 0 or cutmix > 0):
        raise ValueError(
            "a custom loss (loss_fn; the supernet's sandwich rule) does not combine with adversarial training, "
            "distillation, mixup or cutmix"
        )
    if mixup < 0 or cutmix < 0:
        raise ValueError(f"mixup and cutmix are Beta alphas >= 0 (0: off), got {mixup}, {cutmix}")
    check_policy(augment)
    adversarial_options(adversarial)
    _amp_dtype(amp, torch.device(device))


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
    decay_epochs: float = 30.0,
    decay_rate: float = 0.1,
    label_smoothing: float = 0.0,
    grad_clip: float | None = None,
    seed: int = 0,
    amp: str | bool | None = "auto",
    channels_last: bool = False,
    ema: float | None = None,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
    augment: str | None = None,
    augmix_jsd: bool = False,
    adversarial: dict[str, Any] | None = None,
    teacher: nn.Module | None = None,
    distill_alpha: float = 0.5,
    distill_temperature: float = 4.0,
    checkpoint_every: int = 0,
    state_file: str | Path | None = None,
    state_key: str | None = None,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: Callable[[str], None] | None = None,
    log_metrics: Callable[[dict[str, float]], None] | None = None,
    loss_fn: Callable | None = None,
) -> dict[str, float]:
    """Train ``model`` in place on ``dataset`` of ``(image, label, sample_id)`` items.

    Args:
        model: takes float images in [0, 1] (a :class:`robustart.model_zoo.NormalizedModel`) and returns logits.
        dataset: training data.
        epochs: passes over the data (may be fractional: the last one stops part way).
        batch_size: samples per update, over all processes when data-parallel.
        optimizer: ``sgd`` (momentum, Nesterov if ``nesterov``) or ``adamw`` (timm's ``create_optimizer_v2``).
        lr, momentum, nesterov, weight_decay: optimiser settings (biases and norm layers skip weight decay).
        schedule: ``cosine`` (to ``min_lr``), ``step`` (x ``decay_rate`` every ``decay_epochs``) or ``constant``;
            stepped per update, after a linear warmup of ``warmup_epochs`` from ``lr / 100``.
        label_smoothing: cross-entropy label smoothing (Mixup's soft targets carry it too).
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        seed: seeds the batches' permutation and the global torch, NumPy and Python generators the techniques
            draw from.
        amp: ``auto`` (float16 with a gradient scaler on CUDA, off on a CPU), ``bf16``, ``fp16`` or ``off``.
        channels_last: channels-last memory format for the model and the batches.
        ema: decay of an exponential moving average of the weights (timm ``ModelEmaV3`` with warmup); the
            model ends with the average's weights. ``None``: off.
        mixup, cutmix: Beta alphas of timm's Mixup / CutMix (0: off); ``mix_prob``: chance a batch is mixed;
            ``switch_prob``: chance CutMix is used when both are on.
        augment: a timm policy string (:mod:`robustart.training.augment`): RandAugment, AutoAugment or AugMix.
        augmix_jsd: AugMix with the Jensen-Shannon consistency loss over three views (``augment`` must be AugMix).
        adversarial: adversarial training options (:data:`robustart.training.losses.ADVERSARIAL_DEFAULTS`).
        teacher: a model to distil from (same classes); ``distill_alpha`` weighs its term, at temperature
            ``distill_temperature``.
        checkpoint_every: write the resumable state every this many steps (0: never).
        state_file: where the state is written and resumed from; ``state_key`` identifies the config.
        device: where to train.
        num_workers: DataLoader workers (exact resume needs 0: workers reseed their augmentation).
        progress: called with a one-line message about every 10 seconds.
        log_metrics: called with ``{"train/loss", "train/acc", "train/lr", "train/step"}`` at the same times.
        loss_fn: a custom step, ``loss, logits = loss_fn(model, images, labels, criterion)``, in place of the
            techniques above (weight-sharing supernets train through it: :func:`training.supernet.sandwich_loss`).

    Returns:
        ``{"train_loss", "train_acc", "steps", "seconds"}`` (loss and accuracy over the last epoch's updates;
        ``resumed_from``, the step a saved state was resumed at, when one was).
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler, StepLRScheduler

    from robustart.training.augment import Augmented, mixer
    from robustart.training.losses import build_step

    check_recipe(optimizer=optimizer, schedule=schedule, epochs=epochs, batch_size=batch_size, lr=lr, ema=ema,
                 augment=augment, augmix_jsd=augmix_jsd, mixup=mixup, cutmix=cutmix, adversarial=adversarial,
                 amp=amp, device=device, custom_loss=loss_fn is not None, teacher=teacher is not None)  # fmt: skip
    device = torch.device(device)
    amp_dtype = _amp_dtype(amp, device)
    rank, world = distributed.current()
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {world} processes")
    if (mixup > 0 or cutmix > 0) and (batch_size // world) % 2:
        raise ValueError(f"mixup/cutmix need an even batch per process, got {batch_size // world}")
    steps_per_epoch = len(dataset) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(dataset)} samples) is smaller than one batch ({batch_size})")
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    warmup_steps = min(total_steps - 1, round(warmup_epochs * steps_per_epoch))

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt_name = "adamw" if optimizer == "adamw" else ("sgd" if nesterov else "momentum")
    opt_kwargs = {"momentum": momentum} if optimizer == "sgd" else {}
    opt = create_optimizer_v2(model, opt=opt_name, lr=lr, weight_decay=weight_decay, **opt_kwargs)
    sched_kwargs = {"warmup_t": warmup_steps, "warmup_lr_init": lr / 100, "t_in_epochs": False}
    scheduler = None
    if schedule == "cosine":
        scheduler = CosineLRScheduler(opt, t_initial=total_steps, lr_min=min_lr, **sched_kwargs)
    elif schedule == "step":
        decay_t = max(1, round(decay_epochs * steps_per_epoch))
        scheduler = StepLRScheduler(opt, decay_t=decay_t, decay_rate=decay_rate, **sched_kwargs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    averaged = None
    if ema is not None:
        from timm.utils import ModelEmaV3

        averaged = ModelEmaV3(model, decay=ema, use_warmup=True)

    start, result_extra, tally = 0, {}, [0.0, 0, 0]
    # the techniques draw from the global generators (timm's policies from Python's, Mixup from NumPy's, dropout
    # and random starts from torch's): seeded here, saved with the state, so that a run is reproducible and resumes
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if state_file is not None and Path(state_file).is_file():
        state = load_state(state_file, state_key)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if averaged is not None:
            averaged.load_state_dict(state["ema"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
        tally = state["tally"]
        result_extra["resumed_from"] = float(start)
        if progress is not None:
            progress(f"resuming from step {start}/{total_steps} ({state_file})")
    if scheduler is not None:
        scheduler.step_update(num_updates=start)

    train_model: nn.Module = model
    if world > 1:
        if loss_fn is not None:
            raise ValueError("data-parallel training takes no custom loss_fn (supernets train in one process)")
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    data = dataset
    if augment:
        data = Augmented(dataset, augment, views=3 if augmix_jsd else 1)
    num_classes = _num_classes(model)
    step_loss = build_step(
        num_classes=num_classes, label_smoothing=label_smoothing,
        mix=mixer(mixup, cutmix, mix_prob, switch_prob, label_smoothing, num_classes), jsd=augmix_jsd,
        adversarial=adversarial, teacher=teacher, distill_alpha=distill_alpha,
        distill_temperature=distill_temperature, steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    if teacher is not None:
        teacher.to(device).eval()
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    batches = StepBatches(len(data), batch_size, seed, start, total_steps, rank, world)
    # the loader's own generator: creating it must not draw from the global one (resume replays that)
    loader = DataLoader(data, batch_sampler=batches, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda")  # fmt: skip
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    step, t0, last = start, time.monotonic(), time.monotonic()
    loss_sum, correct, seen = tally
    for images, labels, _ in loader:
        if step % steps_per_epoch == 0:
            loss_sum, correct, seen = 0.0, 0, 0
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            if loss_fn is not None:
                loss, logits = loss_fn(model, images, labels, criterion)
            else:
                loss, logits = step_loss(train_model, images, labels, step, model)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(opt)
        scaler.update()
        step += 1
        if averaged is not None:
            averaged.update(model, step=step)
        if scheduler is not None:
            scheduler.step_update(num_updates=step)
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        if state_file is not None and checkpoint_every > 0 and step % checkpoint_every == 0 and step < total_steps:
            _save_state(state_file, state_key, step, model, opt, scaler, averaged, rank, [loss_sum, correct, seen])
        now = time.monotonic()
        if now - last > 10 or step == total_steps:
            last = now
            lr_now = opt.param_groups[0]["lr"]
            if progress is not None:
                progress(
                    f"step {step}/{total_steps}  loss {loss_sum / seen:.4f}  acc {correct / seen:.2%}  "
                    f"lr {lr_now:.3g}  ({(step - start) / max(now - t0, 1e-9):.1f} steps/s)"
                )
            if log_metrics is not None and rank == 0:
                log_metrics({"train/loss": loss_sum / seen, "train/acc": correct / seen, "train/lr": lr_now,
                             "train/step": step})  # fmt: skip
    if averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "steps": float(step),
        "seconds": time.monotonic() - t0,
        **result_extra,
    }


def _num_classes(model: nn.Module) -> int:
    meta = getattr(model, "metadata", None)
    if meta is not None:
        return meta.num_classes
    return getattr(getattr(model, "net", model), "num_classes", 1000)


def _save_state(state_file, state_key, step, model, opt, scaler, averaged, rank, tally) -> None:
    """Write the resumable state atomically (the main process only; every process holds the same weights)."""
    from robustart.training.checkpoint import atomic_write

    if rank != 0:
        return
    state = {
        "key": state_key,
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(),
        "tally": tally,  # the current epoch's loss sum, correct and seen so far
    }
    if averaged is not None:
        state["ema"] = averaged.state_dict()
    atomic_write(state_file, lambda tmp: torch.save(state, tmp))
