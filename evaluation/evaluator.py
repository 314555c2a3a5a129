"""The evaluator: model x noise x data -> per-sample rows (the source of truth for every metric), through one
condition loop (:func:`evaluate_condition`) for every kind of noise, sequences included."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.transforms.functional import center_crop

from robustart.evaluation.metrics import topk_correct
from robustart.evaluation.progress import Progress
from robustart.evaluation.sequences import fix_mmap_threshold, frame_rows, score_chunks
from robustart.evaluation.validity import ValidityChecks
from robustart.noise.base import Condition, Noise
from robustart.noise.natural.sequences import chunked

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


def evaluate_condition(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    condition: Condition,
    noise=None,
    *,
    applied: bool = True,
    device: torch.device | str = "cpu",
    checks: ValidityChecks | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> pd.DataFrame | None:
    """The condition loop: run ``model`` on one condition of ``noise`` over ``batches``; every evaluation,
    the command line's and the library's, goes through here.

    Args:
        model: takes float32 NCHW in [0, 1] and returns logits.
        batches: ``(images, labels, sample_ids)``; for a sequence noise's released videos, ``images`` are
            ``(B, T, C, H, W)`` frames.
        condition: the clean condition, or one of ``noise``'s.
        noise: a :class:`~robustart.noise.Noise`, or a sequence noise (ImageNet-P), whose conditions score
            frames; ``None`` for data that carries its condition.
        applied: whether ``noise`` makes the condition (``False``: the data already carries it, as released
            ImageNet-C files or ImageNet-P videos do).
        checks: validity checks of attack conditions (those with an ``eps``), batch by batch.
        on_batch: called with each batch's size (progress).

    Returns:
        One row per sample (``noise, condition, severity, eps`` and :data:`_Rows.COLUMNS`: ``confidence`` is the
        max softmax probability, ``margin`` the true-class logit minus the largest other logit), or for a
        sequence condition one row per frame (:data:`~robustart.evaluation.sequences.FRAME_COLUMNS`); ``None``
        for no batches.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    sequences = bool(getattr(noise, "sequences", False)) and condition != CLEAN
    transform = noise if applied and condition != CLEAN else None
    crop = getattr(noise, "crop", None) if condition == CLEAN else None  # frames are cut after perturbing
    if sequences:
        fix_mmap_threshold()
    rows, frames = _Rows(), []
    attack_checks = checks is not None and condition.eps is not None and transform is not None
    for images, labels, ids in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if sequences:
            chunks = noise.chunks(images, condition, ids) if applied else chunked(images, noise.chunk)
            pred, top5 = score_chunks(model, chunks, device)
            frames.append(frame_rows(condition, labels, ids, pred, top5))
        else:
            if checks is not None and not checks.model_checked and transform is not None and noise.needs_model:
                checks.check_model(model, images, labels)
            if crop is not None:
                images = center_crop(images, [crop, crop])
            x = images if transform is None else transform.apply(images, labels, ids, condition, model)
            with torch.inference_mode():
                logits = model(x)
                clean_logits = model(images) if attack_checks else None
            rows.add(condition, logits, labels, ids)
            if attack_checks:
                checks.check_batch(condition, images, x, clean_logits, logits, labels)
        if on_batch is not None:
            on_batch(len(labels))
    if frames:
        return pd.concat(frames, ignore_index=True)
    return rows.frame() if rows.columns else None


def _reiterable(batches) -> bool:
    """Whether ``batches`` can be read once per condition (a list, a DataLoader), unlike a generator."""
    return not isinstance(batches, Iterator)


def _conditions(model, sources, noise, *, applied, device, checks, total, progress) -> list[pd.DataFrame]:
    """:func:`evaluate_condition` over ``{condition: batches}``, reported by one :class:`Progress`."""
    meter = Progress(len(sources), bar=False, every=10.0, report=progress)
    out = []
    for condition, batches in sources.items():
        meter.start(condition, total)
        frame = evaluate_condition(model, batches, condition, noise, applied=applied, device=device, checks=checks,
                                   on_batch=meter.step)  # fmt: skip
        meter.finish()
        if frame is not None:
            out.append(frame)
    if not out:
        raise ValueError("no samples were evaluated: the dataset is empty")
    return out


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
    """Run ``model`` on clean data and on every condition of ``noise``, condition by condition
    (:func:`evaluate_condition`, the loop a run uses); ``batches`` are read once and kept for the conditions.

    ``total`` (samples) and ``progress`` (called with a line about every 10 seconds and per condition) report
    progress. Returns the per-sample rows of every condition, clean first.
    """
    batches = batches if _reiterable(batches) else list(batches)
    sources = {condition: batches for condition in [CLEAN, *noise.conditions()]}
    frames = _conditions(model, sources, noise, applied=True, device=device, checks=checks, total=total,
                         progress=progress)  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def evaluate_datasets(
    model: nn.Module,
    batches_by_condition: Mapping[Condition, Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]],
    *,
    device: torch.device | str = "cpu",
    total: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Run ``model`` on data that already carries its noise, one dataset per condition (for example the
    released ImageNet-C files). Same rows as :func:`evaluate`; ``total`` counts samples per condition."""
    frames = _conditions(model, dict(batches_by_condition), None, applied=False, device=device, checks=None,
                         total=total, progress=progress)  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def evaluate_sequences(model: nn.Module, batches, noise, *, applied: bool = True, device: torch.device | str = "cpu",
                       progress: Callable[[str], None] | None = None) -> pd.DataFrame:  # fmt: skip
    """Per-frame rows of every condition of a sequence ``noise`` (ImageNet-P): ``batches`` of clean images whose
    sequences the noise generates, or ``{condition: batches of released videos}`` with ``applied=False``."""
    if applied:
        batches = batches if _reiterable(batches) else list(batches)
        sources = {condition: batches for condition in noise.conditions()}
    else:
        sources = dict(batches)
    frames = _conditions(model, sources, noise, applied=applied, device=device, checks=None, total=None,
                         progress=progress)  # fmt: skip
    return pd.concat(frames, ignore_index=True)
