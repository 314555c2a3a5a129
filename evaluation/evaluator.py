"""The evaluator: model x noise x data -> per-sample rows (the source of truth for every metric)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from evaluation.metrics import topk_correct
from noise.base import Condition, Noise

log = logging.getLogger(__name__)

CLEAN = Condition("clean", "clean")


@dataclass
class _Rows:
    """Per-sample columns of one condition, accumulated batch by batch."""

    sample_id: list
    label: list
    pred: list
    correct: list
    correct_top5: list
    confidence: list
    margin: list


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
) -> pd.DataFrame:
    """Run ``model`` on clean data and on every condition of ``noise``.

    Args:
        model: takes float32 NCHW in [0, 1] and returns logits.
        batches: ``(images, labels, sample_ids)`` tuples.
        noise: the noise; its conditions are applied to each batch in turn (data is read once).
        device: where the model and the batches run.
        total: number of samples expected, for progress messages.
        progress: called with a one-line progress message about every 10 seconds.

    Returns:
        One row per (condition, sample): ``noise, condition, severity, eps, sample_id, label, pred,
        correct, correct_top5, confidence, margin`` (``confidence`` = max softmax probability,
        ``margin`` = true-class logit minus the largest other logit).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    conditions = [CLEAN, *noise.conditions()]
    acc = {c: {k: [] for k in _Rows.__dataclass_fields__} for c in conditions}
    seen, start, last = 0, time.monotonic(), time.monotonic()
    for images, labels, ids in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        for cond in conditions:
            x = images if cond is CLEAN else noise.apply(images, labels, ids, cond, model)
            with torch.inference_mode():
                scores = _score(model(x), labels)
            rows = acc[cond]
            rows["sample_id"].append(ids.cpu().numpy())
            for key, value in scores.items():
                rows[key].append(value)
        seen += len(labels)
        now = time.monotonic()
        if progress is not None and (now - last > 10 or (total and seen >= total)):
            last = now
            rate = seen / max(now - start, 1e-9)
            of = f"/{total}" if total else ""
            progress(f"evaluated {seen}{of} samples x {len(conditions)} conditions ({rate:.1f} samples/s)")
    frames = []
    for cond, cols in acc.items():
        if not cols["sample_id"]:
            continue
        data = {k: np.concatenate(v) for k, v in cols.items()}
        n = len(data["sample_id"])
        frame = pd.DataFrame(
            {
                "noise": cond.noise,
                "condition": cond.name,
                "severity": pd.array([cond.severity] * n, dtype="Int64"),
                "eps": pd.array([cond.eps] * n, dtype="Float64"),
                **data,
            }
        )
        frames.append(frame)
    if not frames:
        raise ValueError("no samples were evaluated: the dataset is empty")
    return pd.concat(frames, ignore_index=True)
