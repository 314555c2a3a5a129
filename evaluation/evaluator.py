"""The evaluator: model x noise x data -> per-sample rows (the source of truth for every metric)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from robustart.evaluation.metrics import topk_correct
from robustart.evaluation.validity import ValidityChecks
from robustart.noise.base import Condition, Noise

log = logging.getLogger(__name__)

CLEAN = Condition("clean", "clean")


class _Rows:
    """Per-sample columns of every condition, accumulated batch by batch, then one tidy frame."""

    COLUMNS = ("sample_id", "label", "pred", "correct", "correct_top5", "confidence", "margin")

    def __init__(self) -> None:
        self.columns: dict[Condition, dict[str, list]] = {}

    def add(self, condition: Condition, logits: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> None:
        cols = self.columns.setdefault(condition, {k: [] for k in self.COLUMNS})
        cols["sample_id"].append(ids.cpu().numpy())
        for key, value in _score(logits, labels).items():
            cols[key].append(value)

    def frame(self) -> pd.DataFrame:
        frames = []
        for cond, cols in self.columns.items():
            if not cols["sample_id"]:
                continue
            data = {k: np.concatenate(v) for k, v in cols.items()}
            n = len(data["sample_id"])
            frames.append(
                pd.DataFrame(
                    {
                        "noise": cond.noise,
                        "condition": cond.name,
                        "severity": pd.array([cond.severity] * n, dtype="Int64"),
                        "eps": pd.array([cond.eps] * n, dtype="Float64"),
                        **data,
                    }
                )
            )
        if not frames:
            raise ValueError("no samples were evaluated: the dataset is empty")
        return pd.concat(frames, ignore_index=True)


class _Progress:
    def __init__(self, progress: Callable[[str], None] | None, total: int | None, what: str) -> None:
        self.progress, self.total, self.what = progress, total, what
        self.seen, self.start, self.last = 0, time.monotonic(), time.monotonic()

    def step(self, n: int) -> None:
        self.seen += n
        now = time.monotonic()
        if self.progress is not None and (now - self.last > 10 or (self.total and self.seen >= self.total)):
            self.last = now
            rate = self.seen / max(now - self.start, 1e-9)
            of = f"/{self.total}" if self.total else ""
            self.progress(f"evaluated {self.seen}{of} {self.what} ({rate:.1f}/s)")


def _score(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    logits = logits.float()
    probs = logits.softmax(dim=1)
    pred = logits.argmax(dim=1)
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return {
        "label": labels.cpu().numpy(),
        "pred": pred.cpu().numpy(),
        "correct": (pred == labels).cpu().numpy(),
        "correct_top5": topk_correct(logits, labels, 5).cpu().numpy(),
        "confidence": probs.max(dim=1).values.cpu().numpy(),
        "margin": (true_logit - others.max(dim=1).values).cpu().numpy(),
    }


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    noise: Noise,
    *,
    device: torch.device | str = "cpu",
    total: int | None = None,
    progress: Callable[[str], None] | None = None,
    checks: ValidityChecks | None = None,
) -> pd.DataFrame:
    """Run ``model`` on clean data and on every condition of ``noise``.

    Args:
        model: takes float32 NCHW in [0, 1] and returns logits.
        batches: ``(images, labels, sample_ids)`` tuples.
        noise: the noise; its conditions are applied to each batch in turn (data is read once).
        device: where the model and the batches run.
        total: number of samples expected, for progress messages.
        progress: called with a one-line progress message about every 10 seconds.
        checks: validity checks of the attack conditions (conditions with an ``eps``), batch by batch.

    Returns:
        One row per (condition, sample): ``noise, condition, severity, eps, sample_id, label, pred,
        correct, correct_top5, confidence, margin`` (``confidence`` = max softmax probability,
        ``margin`` = true-class logit minus the largest other logit).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    conditions = [CLEAN, *noise.conditions()]
    rows, meter = _Rows(), _Progress(progress, total, f"samples x {len(conditions)} conditions")
    for images, labels, ids in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if checks is not None and not checks.model_checked:
            checks.check_model(model, images, labels)
        for cond in conditions:
            x = images if cond is CLEAN else noise.apply(images, labels, ids, cond, model)
            with torch.inference_mode():
                logits = model(x)
            rows.add(cond, logits, labels, ids)
            if cond is CLEAN:
                clean_logits = logits
            elif checks is not None and cond.eps is not None:
                checks.check_batch(cond, images, x, clean_logits, logits, labels)
        meter.step(len(labels))
    return rows.frame()


def evaluate_datasets(
    model: nn.Module,
    batches_by_condition: Mapping[Condition, Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]],
    *,
    device: torch.device | str = "cpu",
    total: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Run ``model`` on data that already carries its noise, one dataset per condition (for example the
    released ImageNet-C files). Same rows as :func:`evaluate`; ``total`` counts samples over all conditions."""
    device = torch.device(device)
    model = model.to(device).eval()
    rows, meter = _Rows(), _Progress(progress, total, "samples over all conditions")
    for cond, batches in batches_by_condition.items():
        for images, labels, ids in batches:
            with torch.inference_mode():
                rows.add(cond, model(images.to(device, non_blocking=True)), labels.to(device), ids)
            meter.step(len(labels))
    return rows.frame()


def evaluate_condition(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    condition: Condition,
    noise: Noise | None = None,
    *,
    device: torch.device | str = "cpu",
    checks: ValidityChecks | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> pd.DataFrame | None:
    """Run ``model`` on one condition: the batches through ``noise`` (``None``, or the clean condition: as
    they come, for data that carries its condition), one row per sample as in :func:`evaluate`.

    A run that commits its work condition by condition (:mod:`robustart.parts`) calls this once per
    condition. ``on_batch`` is called with each batch's size (progress); ``None`` is returned for no batches.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    rows = _Rows()
    attack_checks = checks is not None and condition.eps is not None and noise is not None
    for images, labels, ids in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if checks is not None and not checks.model_checked and noise is not None and noise.needs_model:
            checks.check_model(model, images, labels)
        x = images if noise is None or condition == CLEAN else noise.apply(images, labels, ids, condition, model)
        with torch.inference_mode():
            logits = model(x)
            clean_logits = model(images) if attack_checks else None
        rows.add(condition, logits, labels, ids)
        if attack_checks:
            checks.check_batch(condition, images, x, clean_logits, logits, labels)
        if on_batch is not None:
            on_batch(len(labels))
    return rows.frame() if rows.columns else None
