"""Robustness curves (ARES): pure functions of per-sample results, and their rows in ``metrics.parquet``.

Two curves, after ARES (Dong et al., 2020):

- **Accuracy vs. budget** from each sample's minimal adversarial budget ``min_eps`` (the smallest
  perturbation found to change its prediction; 0 for a sample misclassified when clean; NaN where the
  attack never changed the prediction, which counts as robust at every budget). The curve is the
  survival function ``acc(eps) = #{i: min_eps_i > eps} / n``, read off on a grid, and the quantiles
  of ``min_eps`` summarise it without a grid.
- **Accuracy vs. attack steps** from one run of an iterative attack: the share of samples still
  classified correctly after ``k`` steps, ``k = 0 .. steps``.

How the points are encoded as metric rows (the x value of a point is always in a column of its own,
never in a name):

============================  ==================================  =========================================
metric                        x value                             value
============================  ==================================  =========================================
``robust_acc_vs_eps``         ``eps``: the budget                 share of samples with ``min_eps > eps``,
                                                                  with its Wilson 95% interval
``robust_acc_vs_steps``       ``steps``: steps taken (0 is the    share still correct after that many steps
                              attack's starting point); ``eps``:  (Wilson 95% interval)
                              the attack's budget
``min_eps_q10`` .. ``_q90``   none (``eps`` is null)              the 10/25/50/75/90% quantile of
                                                                  ``min_eps``; ``inf`` where more than the
                                                                  rest were never broken
============================  ==================================  =========================================

``noise`` and ``condition`` say which attack: ``noise=min_eps, condition=pgd_linf`` for the budget
search, ``noise=cw, condition=cw`` for a minimal-perturbation attack, ``noise=pgd_linf,
condition=pgd_linf, eps=8/255`` for the steps curve of that PGD run. ``n`` is the number of samples.

>>> import numpy as np
>>> min_eps = np.array([0.0, 0.1, 0.2, np.nan])
>>> survival(min_eps, [0.0, 0.1, 0.15, 1.0]).tolist()
[0.75, 0.5, 0.5, 0.25]
>>> min_eps_quantile(min_eps, 0.5), min_eps_quantile(min_eps, 0.9)
(0.1, inf)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from robustart.evaluation.metrics import aggregate_row, proportion

EPS_CURVE = "robust_acc_vs_eps"
STEPS_CURVE = "robust_acc_vs_steps"
#: the quantiles of ``min_eps`` reported as ``min_eps_q10`` .. ``min_eps_q90``
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _min_eps_array(min_eps) -> np.ndarray:
    """``min_eps`` as a 1-D float array (NaN for never broken); negative values are an error."""
    values = pd.Series(min_eps, dtype="Float64").to_numpy(dtype="float64", na_value=np.nan)
    if (values < 0).any():
        raise ValueError("min_eps must be >= 0 (or NaN for samples the attack never broke)")
    return values


def robust_at(min_eps, eps: float) -> np.ndarray:
    """Per sample: still correct under the attack at budget ``eps``, i.e. ``min_eps > eps`` or NaN."""
    values = _min_eps_array(min_eps)
    return np.isnan(values) | (values > eps)


def survival(min_eps, eps) -> np.ndarray:
    """Accuracy at each budget of ``eps``: the share of samples whose ``min_eps`` exceeds it (NaN counts as
    robust). The empirical survival function of ``min_eps``; ``nan`` for an empty sample."""
    values = _min_eps_array(min_eps)
    if values.size == 0:
        return np.full(len(np.atleast_1d(eps)), math.nan)
    return np.array([robust_at(values, float(e)).mean() for e in np.atleast_1d(eps)])


def min_eps_quantile(min_eps, q: float) -> float:
    """The ``q``-quantile of ``min_eps`` (never-broken samples count as ``+inf``): the smallest budget at
    which at least a share ``q`` of the samples is broken, so ``survival(min_eps, quantile) <= 1 - q``.

    The inverse of the empirical distribution function (no interpolation), so it is always one of the
    observed values, or ``inf`` when more than ``1 - q`` of the samples were never broken.
    """
    if not 0 < q < 1:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    values = np.sort(np.where(np.isnan(v := _min_eps_array(min_eps)), np.inf, v))
    if values.size == 0:
        return math.nan
    rank = math.ceil(q * values.size - 1e-9)  # the smallest k with k / n >= q
    return float(values[max(rank, 1) - 1])


def quantile_metric(q: float) -> str:
    """The metric name of the ``q``-quantile of ``min_eps``: ``0.5 -> "min_eps_q50"``."""
    return f"min_eps_q{round(100 * q):02d}"


def eps_grid(upper: float, points: int) -> np.ndarray:
    """``points`` evenly spaced budgets from 0 to ``upper`` (both included)."""
    if points < 2:
        raise ValueError(f"a curve needs at least 2 points, got {points}")
    if not upper > 0 or math.isinf(upper):
        raise ValueError(f"the curve's largest budget must be a finite number > 0, got {upper}")
    return np.linspace(0.0, upper, points)


def default_upper(min_eps) -> float:
    """A grid's end when none is given: the largest finite ``min_eps`` (1 if there is none above 0)."""
    values = _min_eps_array(min_eps)
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def min_eps_rows(noise: str, condition: str, min_eps, grid: Sequence[float], quantiles=QUANTILES) -> list[dict]:
    """Metric rows of one attack's ``min_eps``: ``robust_acc_vs_eps`` at every budget of ``grid`` and the
    ``min_eps_qNN`` quantiles (see the module docstring for the encoding)."""
    values = _min_eps_array(min_eps)
    rows = []
    for eps in grid:
        est = proportion(robust_at(values, float(eps)))
        rows.append(dict(noise=noise, condition=condition, severity=None, eps=float(eps), metric=EPS_CURVE,
                         **est._asdict()))  # fmt: skip
    for q in quantiles:
        rows.append(aggregate_row(noise, quantile_metric(q), min_eps_quantile(values, q), values.size, condition))
    return rows


def accuracy_by_step(correct) -> np.ndarray:
    """Accuracy after each number of steps from a boolean ``(samples, steps + 1)`` array whose column ``k``
    says whether each sample is still classified correctly after ``k`` attack steps."""
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ValueError(f"correct must be (samples, steps), got shape {correct.shape}")
    return correct.mean(axis=0) if correct.shape[0] else np.full(correct.shape[1], math.nan)


def steps_rows(noise: str, condition: str, eps: float, correct) -> list[dict]:
    """``robust_acc_vs_steps`` rows, one per number of steps ``k`` (in ``steps``), from the boolean
    ``(samples, steps + 1)`` array of :func:`accuracy_by_step`."""
    correct = np.asarray(correct, dtype=bool)
    accuracy_by_step(correct)  # checks the shape
    rows = []
    for k in range(correct.shape[1]):
        est = proportion(correct[:, k])
        rows.append(dict(noise=noise, condition=condition, severity=None, steps=k, eps=float(eps), metric=STEPS_CURVE,
                         **est._asdict()))  # fmt: skip
    return rows


def curve_rows(
    predictions: pd.DataFrame, noise: str, points: int = 21, upper: float | None = None, quantiles=QUANTILES
) -> list[dict]:
    """Budget-curve rows of every condition of ``noise`` from a predictions table with a ``min_eps`` column
    (``predictions.parquet``): recomputable from the stored results alone.

    Args:
        predictions: per-sample rows with ``noise, condition, sample_id, min_eps``.
        noise: whose conditions to read.
        points: grid points from 0 to ``upper``.
        upper: the grid's largest budget; ``None``: the largest finite ``min_eps`` of each condition.
        quantiles: quantile levels of ``min_eps`` to report.
    """
    rows = []
    own = predictions[predictions["noise"] == noise]
    for condition, group in own.groupby("condition", sort=False):
        min_eps = group["min_eps"].astype("float64").to_numpy()
        grid = eps_grid(upper if upper is not None else default_upper(min_eps), points)
        rows += min_eps_rows(noise, condition, min_eps, grid, quantiles)
    return rows
