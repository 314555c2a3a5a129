"""The score stage: a run's metric rows from its per-sample predictions and what its noise recorded.

Pure functions of tables and records: accuracy-like rows per condition (:func:`summarize`), the rows of data
sets that define their own (ImageNet-A/-O/-R...), the rows a noise's records give (cascades, transfer, minimal
budgets, system noise), the validity checks' rows and ImageNet-P's sequence rows.
"""

from __future__ import annotations

import pandas as pd

from robustart.evaluation.metrics import summarize
from robustart.evaluation.noise_rows import metric_rows
from robustart.evaluation.sequences import sequence_rows
from robustart.evaluation.shape_bias import DATA as SHAPE_BIAS_DATA
from robustart.evaluation.shape_bias import shape_bias_rows
from robustart.evaluation.shift import OOD, shift_rows

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
    parts = [summarize(accuracy, corruption_baseline=baseline)] if len(predictions) else []
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
