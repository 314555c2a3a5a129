"""Evaluation on perturbation sequences (ImageNet-P): per-frame predictions and the stability metrics.

A sequence is scored chunk by chunk (a few frames of every video in the batch per forward pass), so the
memory an evaluation needs depends on the batch and chunk sizes, not on the number or length of the
videos. Each frame keeps its prediction and its top-5 classes: the top-5 distance between two frames only
needs the reference frame's top 5 and where they rank in the other frame, capped at 6, which the other
frame's top 5 tells (a class outside it ranks 6th or lower).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from robustart.evaluation import metrics
from robustart.noise.base import Condition
from robustart.noise.natural.perturbations import NOISE_PERTURBATIONS, P_TEST

#: the noise perturbations compare every frame with the clean frame 0 (the others compare neighbours);
#: ``mfp``, ``nmfp`` and ``mt5d`` average over the ten test perturbations
TEST_PERTURBATIONS = P_TEST

#: the five highest classes of a frame, best first (``top5_1`` is the prediction), as integer columns: compact
#: per-frame rows keep an evaluation's memory small however many sequences it scores
TOP5_COLUMNS = ("top5_1", "top5_2", "top5_3", "top5_4", "top5_5")
FRAME_COLUMNS = ("noise", "condition", "severity", "sample_id", "label", "frame", "pred", *TOP5_COLUMNS)


def score_chunks(
    model: nn.Module, chunks: Iterable[tuple[int, torch.Tensor]], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and top-5 classes of every frame of a batch of sequences.

    Args:
        model: float32 NCHW in [0, 1] -> logits (at least 5 classes).
        chunks: ``(start, frames)`` with ``frames`` shaped ``(B, T, C, H, W)``, in order, covering the
            sequence without gaps.
        device: where the model runs.

    Returns:
        ``(pred, top5)``: int arrays ``(B, frames)`` and ``(B, frames, 5)``.
    """
    preds, tops, expected = [], [], 0
    for start, frames in chunks:
        if start != expected:
            raise ValueError(f"sequence chunks must be contiguous: expected frame {expected}, got {start}")
        b, t = frames.shape[:2]
        with torch.inference_mode():
            logits = model(frames.reshape(b * t, *frames.shape[2:]).to(device, non_blocking=True)).float()
        if logits.shape[1] < 5:
            raise ValueError(f"the top-5 distance needs at least 5 classes; the model has {logits.shape[1]}")
        top = logits.topk(5, dim=1).indices.reshape(b, t, 5)
        tops.append(top.cpu().numpy())
        preds.append(top[..., 0].cpu().numpy())
        expected = start + t
    return np.concatenate(preds, axis=1), np.concatenate(tops, axis=1)


def frame_rows(condition: Condition, labels: torch.Tensor, ids: torch.Tensor, pred: np.ndarray, top5: np.ndarray):
    """The per-frame rows of one batch of sequences, as a frame of :data:`FRAME_COLUMNS`."""
    b, t = pred.shape
    return pd.DataFrame(
        {
            "noise": condition.noise,
            "condition": condition.name,
            "severity": pd.array([condition.severity] * (b * t), dtype="Int64"),
            "sample_id": np.repeat(ids.cpu().numpy(), t),
            "label": np.repeat(labels.cpu().numpy(), t),
            "frame": np.tile(np.arange(t), b),
            "pred": pred.reshape(-1),
            **{name: top5[..., k].reshape(-1) for k, name in enumerate(TOP5_COLUMNS)},
        }
    )


def fix_mmap_threshold(size: int = 1 << 22) -> None:
    """Have glibc serve every allocation of ``size`` bytes or more with ``mmap`` (given back when freed).

    By default glibc raises that threshold after each large block is freed, so the frames of later chunks
    come from the heap, where the small, long-lived per-frame rows pin them: resident memory then grows
    with every batch (measured: about 5 MB per batch of 64 Fashion-MNIST sequences) although nothing
    leaks. A fixed threshold keeps it flat. Elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _pseudo_logits(top5: np.ndarray) -> np.ndarray:
    """Logits with the same top-5 distances as the frames whose top-5 classes are ``top5`` (videos, frames, 5).

    A video's classes are renumbered (so they keep their identities across its frames); each frame gives
    its five classes the scores 5..1 and every other class 0, so a class outside a frame's top 5 ranks 6th
    or lower there, which :func:`metrics.top5_distance` caps at 6 as it does for the real ranks.
    """
    videos, frames, _ = top5.shape
    local = [np.unique(top5[v], return_inverse=True)[1].reshape(frames, 5) for v in range(videos)]
    out = np.zeros((videos, frames, max(int(x.max()) for x in local) + 2))  # >= 6 classes
    scores = np.arange(5, 0, -1, dtype=np.float64)
    for v, x in enumerate(local):
        np.put_along_axis(out[v], x, np.broadcast_to(scores, x.shape), axis=1)
    return out


def _videos(group: pd.DataFrame, column: str) -> np.ndarray:
    ordered = group.sort_values(["sample_id", "frame"])
    counts = ordered.groupby("sample_id").size()
    if counts.nunique() != 1:
        raise ValueError("every sequence of a perturbation must have the same number of frames")
    values = ordered[list(TOP5_COLUMNS)].to_numpy() if column == "top5" else ordered[column].to_numpy()
    return values.reshape(len(counts), int(counts.iloc[0]), *values.shape[1:])


def _mean_ratio(values: pd.Series, baseline: pd.Series) -> float:
    """Mean over the test perturbations of ``values / baseline``; NaN if the baseline is 0 for any of them
    (a baseline that never flips cannot normalise)."""
    ratios = [values[p] / baseline[p] if baseline[p] > 0 else math.nan for p in TEST_PERTURBATIONS]
    return float(np.mean(ratios))


def sequence_rows(frames: pd.DataFrame, baseline: pd.DataFrame | None = None) -> pd.DataFrame:
    """Metric rows from per-frame rows: ``fp`` and ``t5d`` per perturbation and difficulty; per noise and
    difficulty ``mfp`` (plain mean of ``fp`` over the test perturbations, once all ten are there); with
    ``baseline`` (a metrics table holding another run's ``fp``/``t5d`` rows) also ``nmfp`` (mean of
    ``fp / fp_baseline``, Hendrycks's mFR) and ``mt5d`` (mean of ``t5d / t5d_baseline``); NaN where the
    baseline's value is 0 for some perturbation.

    The ``severity`` column holds the difficulty: for the noise perturbations it chose their strength,
    for the others it is the step between the compared frames, as in Hendrycks's ``test.py``.
    """
    rows = []
    for (noise, name, difficulty), group in frames.groupby(["noise", "condition", "severity"], sort=False):
        is_noise = name in NOISE_PERTURBATIONS
        step = 1 if is_noise else int(difficulty)
        pred = _videos(group, "pred")
        fp = metrics.flip_probability(pred, noise=is_noise, difficulty=step)
        t5d = metrics.top5_distance(_pseudo_logits(_videos(group, "top5")), noise=is_noise, difficulty=step)
        rows += [
            metrics.aggregate_row(noise, m, v, len(pred), name, int(difficulty)) for m, v in (("fp", fp), ("t5d", t5d))
        ]
    table = pd.DataFrame(
        rows, columns=["noise", "condition", "severity", "eps", "metric", "value", "n", "ci_low", "ci_high"]
    )
    extra = []
    for (noise, difficulty), group in table.groupby(["noise", "severity"], sort=False):
        fp = group[group.metric == "fp"].set_index("condition")["value"]
        t5d = group[group.metric == "t5d"].set_index("condition")["value"]
        if not set(TEST_PERTURBATIONS) <= set(fp.index):
            continue
        n = int(group["n"].min())
        extra.append(
            metrics.aggregate_row(noise, "mfp", np.mean([fp[p] for p in TEST_PERTURBATIONS]), n, None, difficulty)
        )
        if baseline is not None:
            base = baseline[(baseline["noise"] == noise) & (baseline["severity"] == difficulty)]
            base_fp = base[base.metric == "fp"].set_index("condition")["value"]
            base_t5d = base[base.metric == "t5d"].set_index("condition")["value"]
            missing = [p for p in TEST_PERTURBATIONS if p not in base_fp.index or p not in base_t5d.index]
            if missing:
                raise ValueError(f"the baseline run has no fp/t5d rows for {missing} at difficulty {difficulty}")
            extra.append(metrics.aggregate_row(noise, "nmfp", _mean_ratio(fp, base_fp), n, None, difficulty))
            extra.append(metrics.aggregate_row(noise, "mt5d", _mean_ratio(t5d, base_t5d), n, None, difficulty))
    return pd.concat([table, pd.DataFrame(extra, columns=table.columns)], ignore_index=True) if extra else table
