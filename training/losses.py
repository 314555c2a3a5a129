"""What one training step optimises: the criterion, then adversarial examples and distillation on top.

:func:`build_step` turns a recipe's options into ``step(model, images, labels, step) -> (loss, logits)``:

1. **targets**: the labels, or with Mixup/CutMix (:func:`robustart.training.augment.mixer`) mixed images and soft
   targets; the criterion is cross-entropy with label smoothing (soft targets carry their own), or timm's
   ``JsdCrossEntropy`` for AugMix's three views.
2. **adversarial** (``adversarial={...}``, attacks from :func:`robustart.noise.adversarial.training_attack`):
   - ``pgd`` / ``fgsm``: train on the attacked batch (Madry), or with ``keep_clean`` on the clean and the
     attacked batch together (RobustART's 50/50 batches);
   - ``trades``: clean loss + ``beta`` x KL(attacked || clean) (Zhang et al., 2019);
   - ``step_warmup_epochs``: the attack's step size grows linearly from 0 over that many epochs (ARES-Bench).
3. **distillation** (``teacher``): ``(1 - alpha) x loss + alpha x T^2 x KL(student/T || teacher/T)`` on the
   same inputs (Hinton et al., 2015).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: the adversarial options and their defaults
ADVERSARIAL_DEFAULTS = {
    "method": "pgd",
    "eps": "8/255",
    "steps": 10,
    "step_size": None,
    "random_start": True,
    "keep_clean": False,
    "beta": 6.0,
    "step_warmup_epochs": 0.0,
}


def adversarial_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The adversarial options with defaults filled in and budgets parsed; ValueError for bad ones."""
    from robustart.noise.adversarial import TRAINING_ATTACKS, check_budgets, parse_eps

    if options is None:
        return None
    unknown = sorted(set(options) - set(ADVERSARIAL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown adversarial training options {unknown}; valid: {sorted(ADVERSARIAL_DEFAULTS)}")
    opts = {**ADVERSARIAL_DEFAULTS, **{k: v for k, v in options.items() if v is not None or k == "step_size"}}
    if opts["method"] not in TRAINING_ATTACKS:
        raise ValueError(f"training.adversarial.method must be one of {TRAINING_ATTACKS}, got {opts['method']!r}")
    opts["eps"] = parse_eps(opts["eps"])
    if not opts["eps"] > 0:
        raise ValueError(f"training.adversarial.eps must be > 0, got {options.get('eps')!r}")
    check_budgets("adversarial training", "Linf", [opts["eps"]])
    if opts["step_size"] is not None:
        opts["step_size"] = parse_eps(opts["step_size"])
    steps = opts["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"training.adversarial.steps must be an integer >= 1, got {steps!r}")
    if not opts["beta"] >= 0 or not opts["step_warmup_epochs"] >= 0:
        raise ValueError("training.adversarial.beta and step_warmup_epochs must be >= 0")
    if opts["method"] == "trades" and opts["keep_clean"]:
        raise ValueError("training.adversarial.keep_clean is for pgd/fgsm; trades always uses the clean batch")
    return opts


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target term: T^2 x KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch."""
    t = temperature
    log_student = F.log_softmax(student.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher.float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * t * t


def build_step(
    *,
    num_classes: int,
    label_smoothing: float,
    mix: Any = None,
    jsd: bool = False,
    adversarial: dict[str, Any] | None = None,
    teacher: nn.Module | None = None,
    distill_alpha: float = 0.5,
    distill_temperature: float = 4.0,
    steps_per_epoch: int = 1,
) -> Callable:
    """``step(model, images, labels, step, attack_model) -> (loss, logits)`` (module docstring).

    ``model`` is what is trained (maybe wrapped in DistributedDataParallel); ``attack_model`` the bare module
    the attack differentiates (its passes must not touch DDP's gradient bookkeeping). ``logits`` are those
    of the inputs the loss was computed on first (the attacked batch under pure adversarial training).
    """
    from timm.loss import JsdCrossEntropy, SoftTargetCrossEntropy

    from robustart.noise.adversarial import training_attack

    hard = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    criterion = JsdCrossEntropy(num_splits=3, smoothing=label_smoothing) if jsd else hard
    soft = SoftTargetCrossEntropy()
    adv = adversarial_options(adversarial)
    attacks: dict[int, Any] = {}

    def attack(attack_model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        key = id(attack_model)
        if key not in attacks:
            attacks.clear()
            attacks[key] = training_attack(adv["method"], attack_model, adv["eps"], adv["steps"], adv["step_size"],
                                           adv["random_start"])  # fmt: skip
            attacks[key].base_alpha = attacks[key].alpha
        atk = attacks[key]
        warmup_steps = adv["step_warmup_epochs"] * steps_per_epoch
        atk.alpha = atk.base_alpha * (min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0)
        return atk(images, targets) if atk.alpha > 0 else images

    def step_fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, step: int, attack_model: nn.Module):
        targets = labels
        if images.dim() == 5:  # AugMix views (B, 3, C, H, W) -> clean, first and second draws one after another
            images = images.transpose(0, 1).flatten(0, 1)
        if mix is not None:
            images, targets = mix(images, labels)
        loss_of = soft if targets.dim() == 2 else criterion
        inputs = images
        if adv is None:
            logits = model(inputs)
            loss = loss_of(logits, targets)
        elif adv["method"] == "trades":
            adv_images = attack(attack_model, images, targets, step)
            both = model(torch.cat([images, adv_images]))
            logits, adv_logits = both.float().chunk(2)
            robust = F.kl_div(F.log_softmax(adv_logits, 1), F.log_softmax(logits, 1), reduction="batchmean",
                              log_target=True)  # fmt: skip
            loss = loss_of(logits, targets) + adv["beta"] * robust
        else:
            adv_images = attack(attack_model, images, targets, step)
            if adv["keep_clean"]:
                inputs, targets = torch.cat([images, adv_images]), torch.cat([targets, targets])
            else:
                inputs = adv_images
            logits = model(inputs)
            loss = loss_of(logits, targets)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            kd = distillation_loss(logits, teacher_logits, distill_temperature)
            loss = (1 - distill_alpha) * loss + distill_alpha * kd
        return loss, logits[: len(labels)]

    return step_fn
