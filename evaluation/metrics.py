"""Metrics as pure functions of per-sample results.

Accuracies are fractions in [0, 1]. Every accuracy-like value comes with a 95% Wilson score interval
(Wilson, 1927), which stays inside [0, 1] and behaves at 0 and 100% where the normal approximation
does not.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


class Estimate(NamedTuple):
    """A proportion with its sample size and 95% interval."""

    value: float
    n: int
    ci_low: float
    ci_high: float


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` trials (``(nan, nan)`` when ``n == 0``)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(flags) -> Estimate:
    """Share of true values in ``flags`` (any boolean array-like), with its Wilson interval."""
    flags = np.asarray(flags, dtype=bool)
    n, k = int(flags.size), int(flags.sum())
    low, high = wilson_interval(k, n)
    return Estimate(k / n if n else math.nan, n, low, high)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean per sample: is the label among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def adversarial_robustness(clean_correct, adv_correct, conditional: bool = True) -> Estimate:
    """Accuracy under attack.

    Args:
        clean_correct: per-sample booleans, clean prediction correct.
        adv_correct: per-sample booleans, prediction on the adversarial example correct.
        conditional: if True, RobustART's AR: among the clean-correct samples, the share still
            correct under attack (= 1 - attack success rate). If False, plain robust accuracy over
            all samples.
    """
    clean_correct = np.asarray(clean_correct, dtype=bool)
    adv_correct = np.asarray(adv_correct, dtype=bool)
    if clean_correct.shape != adv_correct.shape:
        raise ValueError(f"shapes differ: {clean_correct.shape} vs {adv_correct.shape}")
    if conditional:
        return proportion(adv_correct[clean_correct])
    return proportion(adv_correct)


def summarize(predictions: pd.DataFrame) -> pd.DataFrame:
    """Metric rows from a per-sample predictions table.

    ``predictions`` has one row per (noise, condition, severity, eps, sample_id) with boolean
    ``correct`` and ``correct_top5``; the clean rows have ``noise == "clean"``. Returns rows with
    ``noise, metric, condition, severity, eps, value, n, ci_low, ci_high``:

    - clean: ``top1``, ``top5``;
    - conditions with an ``eps`` (attacks): ``robust_acc`` (all samples) and ``ar`` (among the
      clean-correct samples);
    - other conditions (corruptions): ``acc``.
    """
    rows = []
    keys = ["noise", "condition", "severity", "eps"]

    def add(key, metric, est: Estimate):
        rows.append(dict(zip(keys, key, strict=True), metric=metric, **est._asdict()))

    clean = predictions[predictions["noise"] == "clean"].set_index("sample_id")
    if clean.index.has_duplicates:
        raise ValueError("predictions hold more than one clean row for some sample")
    if len(clean):
        key = ("clean", "clean", None, None)
        add(key, "top1", proportion(clean["correct"]))
        add(key, "top5", proportion(clean["correct_top5"]))
    noisy = predictions[predictions["noise"] != "clean"]
    for key, group in noisy.groupby(keys, dropna=False, sort=False):
        key = tuple(None if pd.isna(v) else v for v in key)
        if key[3] is not None:
            add(key, "robust_acc", proportion(group["correct"]))
            clean_correct = clean["correct"].reindex(group["sample_id"]).to_numpy()
            if pd.isna(clean_correct).any():
                raise ValueError(f"adversarial rows for {key} have samples without a clean row")
            add(key, "ar", adversarial_robustness(clean_correct.astype(bool), group["correct"].to_numpy()))
        else:
            add(key, "acc", proportion(group["correct"]))
    return pd.DataFrame(rows, columns=[*keys, "metric", *Estimate._fields])
