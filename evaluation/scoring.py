"""The score stage: a run's metric rows from its per-sample predictions and what its noise recorded.

Pure functions of tables and records: accuracy-like rows per condition (:func:`summarize`), the rows of data
sets that define their own (ImageNet-A/-O/-R...), the rows a noise's records give (cascades, transfer, minimal
budgets, system noise), the validity checks' rows and ImageNet-P's sequence rows.
"""

from __future__ import annotations

import pandas as pd

from robustart.evaluation.corruption_metrics import _benchmark_names
from robustart.evaluation.metrics import summarize
from robustart.evaluation.noise_rows import metric_rows
from robustart.evaluation.sequences import sequence_rows
from robustart.evaluation.shape_bias import DATA as SHAPE_BIAS_DATA
from robustart.evaluation.shape_bias import shape_bias_rows
from robustart.evaluation.shift import OOD, shift_rows
from robustart.evaluation.system import bootstrap_spread

#: data whose corruption errors the published AlexNet ImageNet-C errors normalise (ImageNet-scale data only)
ALEXNET_NORMALISED = ("imagenet", "imagenet_c")


def score(predictions: pd.DataFrame, noise, data: str, *, checks=None, frames=None, sequence_baseline=None):
    """Every metric row of one run, in the columns of :func:`robustart.evaluation.metrics.aggregate_row`.

    Args:
        predictions: the per-sample table (one row per noise, condition, severity, eps and sample).
        noise: the run's noise, whose records give its own rows (see :mod:`robustart.evaluation.noise_rows`).
        data: the data set's name (ImageNet-scale data is normalised by AlexNet's errors; shift sets add rows).
        checks: the attacks' :class:`~robustart.evaluation.validity.ValidityChecks`, checked against the results.
        frames, sequence_baseline: ImageNet-P's per-frame rows and the run that normalises them.
    """
    baseline = "alexnet" if data in ALEXNET_NORMALISED else None
    # ImageNet-O's own images have no accuracy to speak of: they enter only its detection rows
    accuracy = predictions[predictions["noise"] != OOD]
    parts = (
        [summarize(accuracy, corruption_baseline=baseline), mean_corruption_rows(accuracy)] if len(predictions) else []
    )
    parts.append(shift_rows(predictions, data))
    extra = metric_rows(noise, predictions)
    if extra is not None:
        parts.append(pd.DataFrame(extra))
    if checks is not None:
        checks.check_results(predictions)
        parts.append(pd.DataFrame(checks.metric_rows()))
    if frames is not None:
        parts.append(sequence_rows(frames, sequence_baseline))
    if data == SHAPE_BIAS_DATA and "decision" in predictions:
        parts.append(shape_bias_rows(predictions))
    rows = pd.concat([p for p in parts if len(p)], ignore_index=True)
    if "category" not in rows:  # only shape bias has per-category rows
        rows["category"] = None
    return rows


def mean_corruption_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """``mean_acc`` of each noise that has all 15 benchmark corruptions at severities 1-5: the mean accuracy over
    those 75 conditions, on the images every condition scored, with a 95% percentile-bootstrap interval over images
    (the conditions share their images, so their accuracies are not independent)."""
    names = _benchmark_names()
    cells = predictions[predictions["eps"].isna() & predictions["condition"].isin(names)
                        & predictions["severity"].isin(range(1, 6))]  # fmt: skip
    rows = []
    for noise, group in cells.groupby("noise", sort=False):
        table = group.pivot_table(index="sample_id", columns=["condition", "severity"], values="correct",
                                  aggfunc="first")  # fmt: skip
        if table.shape[1] < 5 * len(names):
            continue
        correct = table.dropna().to_numpy(dtype=bool)
        if not len(correct):
            continue
        low, high = bootstrap_spread(correct)["mean"]
        rows.append(dict(noise=noise, condition=None, severity=None, eps=None, metric="mean_acc",
                         value=float(correct.mean()), n=len(correct), ci_low=low, ci_high=high))  # fmt: skip
    return pd.DataFrame(rows, columns=["noise", "condition", "severity", "eps", "metric", "value", "n", "ci_low",
                                       "ci_high"])  # fmt: skip
