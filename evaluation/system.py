"""Metric rows of system noise (ImageNet-S), from the per-sample predictions.

The ``acc`` row of every ``decoder/resizer`` condition comes from :func:`robustart.evaluation.metrics.summarize`;
this module adds, over the combinations:

- ``sys_mean``: the mean accuracy, ``sys_std``: the population standard deviation of the accuracies
  (``np.std``, as RobustART's ImageNet-S evaluator), ``sys_worst``: the lowest accuracy (its
  ``condition`` names that combination);
- ``flip_rate`` per combination: the share of samples whose top-1 prediction differs from the one
  under the model's reference preprocessing (the clean rows).

The three aggregates are computed on the samples that every combination scored (a decoder may fail
on a file another one reads); ``sys_mean`` and ``sys_worst`` carry a 95% percentile-bootstrap interval
over those samples, ``flip_rate`` a Wilson interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustart.evaluation import metrics

#: bootstrap resamples of the ``sys_mean`` and ``sys_worst`` intervals (the seed is fixed: reruns agree)
BOOTSTRAP_RESAMPLES = 1000


def spread(accuracies) -> tuple[float, float, float]:
    """``(mean, population std, min)`` of the per-combination accuracies."""
    values = np.asarray(accuracies, dtype=float)
    if not values.size:
        raise ValueError("no combination to aggregate")
    return float(values.mean()), float(values.std()), float(values.min())


def flip_rate(reference_pred, pred) -> metrics.Estimate:
    """Share of samples whose prediction ``pred`` differs from ``reference_pred`` (aligned arrays)."""
    return metrics.proportion(np.asarray(pred) != np.asarray(reference_pred))


def bootstrap_spread(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, tuple]:
    """95% percentile-bootstrap intervals of the mean and of the worst combination accuracy.

    Args:
        correct: ``(samples, combinations)`` booleans; samples are resampled with replacement.

    Returns:
        ``{"mean": (low, high), "worst": (low, high)}``.
    """
    n = correct.shape[0]
    matrix = correct.astype(np.float32)
    rng = np.random.default_rng(seed)
    means, worsts = [], []
    for start in range(0, resamples, 100):
        chunk = min(100, resamples - start)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(chunk)]).astype(np.float32)
        accuracy = counts @ matrix / n  # (chunk, combinations)
        means.append(accuracy.mean(axis=1))
        worsts.append(accuracy.min(axis=1))
    out = {}
    for key, values in (("mean", np.concatenate(means)), ("worst", np.concatenate(worsts))):
        low, high = np.percentile(values, [2.5, 97.5])
        out[key] = (float(low), float(high))
    return out


def system_rows(predictions: pd.DataFrame, noise: str = "imagenet_s") -> pd.DataFrame:
    """``sys_mean``, ``sys_std``, ``sys_worst`` and per-combination ``flip_rate`` rows of ``noise``."""
    columns = ["noise", "condition", "severity", "eps", "metric", "value", "n", "ci_low", "ci_high"]
    rows = []
    grid = predictions[predictions["noise"] == noise]
    reference = predictions[predictions["noise"] == "clean"].set_index("sample_id")["pred"]
    if not len(grid):
        return pd.DataFrame(rows, columns=columns)
    for condition, group in grid.groupby("condition", sort=False):
        ref = reference.reindex(group["sample_id"]).to_numpy()
        scored = ~pd.isna(ref)
        if scored.any():
            est = flip_rate(ref[scored].astype(np.int64), group["pred"].to_numpy()[scored])
            rows.append(dict(noise=noise, condition=condition, severity=None, eps=None, metric="flip_rate",
                             **est._asdict()))  # fmt: skip
    names = list(dict.fromkeys(grid["condition"]))  # the combinations in run order
    correct = grid.pivot(index="sample_id", columns="condition", values="correct").dropna()[names].to_numpy(bool)
    if correct.shape[0]:
        accuracies = correct.mean(axis=0)
        mean, std, worst = spread(accuracies)
        n = correct.shape[0]
        intervals = bootstrap_spread(correct)
        rows.append(dict(noise=noise, condition=None, severity=None, eps=None, metric="sys_mean", value=mean, n=n,
                         ci_low=intervals["mean"][0], ci_high=intervals["mean"][1]))  # fmt: skip
        rows.append(metrics.aggregate_row(noise, "sys_std", std, n))
        # an aggregate over the combinations (the worst one is the lowest of the acc rows): no condition of its own,
        # so that runs whose worst combinations differ still compare
        rows.append(dict(noise=noise, condition=None, severity=None, eps=None, metric="sys_worst", value=worst, n=n,
                         ci_low=intervals["worst"][0], ci_high=intervals["worst"][1]))  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
