"""Metric rows of the natural-distribution-shift sets, from the per-sample predictions.

- ``imagenet_a``: besides top-1, ``calib_rms`` (RMS calibration error, Hendrycks's binning) and ``aurra``
  (area under the response-rate accuracy curve) per condition.
- out-of-distribution detection (``imagenet_o``; ``fashion_mnist_ood`` at small scale): ``aupr``,
  ``auroc`` and ``fpr95`` of telling the out-of-distribution images (the positive class; rows with
  ``noise == "ood"``, the condition naming the set) from the in-distribution ones (the clean rows), with
  the anomaly score ``-confidence`` (negative maximum softmax probability, over the 200 classes for
  ImageNet-O).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from robustart.evaluation import metrics

#: the ``noise`` of out-of-distribution rows (their ``condition`` names the set)
OOD = "ood"


class MaskedOutputs(nn.Module):
    """A model whose outputs are restricted to some of its classes (``logits[:, mask]``), so that labels,
    softmax confidences and attacks all live in the subset, as the sets' original evaluations do."""

    def __init__(self, model: nn.Module, mask: list[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).index_select(1, self.mask)


def shift_rows(predictions: pd.DataFrame, data: str) -> pd.DataFrame:
    """The extra metric rows of data set ``data`` (none for sets without any), as :func:`metrics.summarize`'s."""
    rows = []
    keys = ["noise", "condition", "severity", "eps"]
    if data == "imagenet_a":
        for key, group in predictions.groupby(keys, dropna=False, sort=False):
            noise, condition, severity, eps = (None if pd.isna(v) else v for v in key)
            confidence, correct = group["confidence"].to_numpy(), group["correct"].to_numpy(bool)
            for metric, value in (("calib_rms", metrics.calibration_rms(confidence, correct)),
                                  ("aurra", metrics.aurra(confidence, correct))):  # fmt: skip
                rows.append(metrics.aggregate_row(noise, metric, value, len(group), condition, severity, eps))
    inside = predictions[predictions["noise"] == "clean"]["confidence"].to_numpy()
    for name, group in predictions[predictions["noise"] == OOD].groupby("condition", sort=False):
        if not len(inside):
            continue
        outside = group["confidence"].to_numpy()
        n = len(inside) + len(outside)
        for metric, measure in (("aupr", metrics.aupr), ("auroc", metrics.auroc), ("fpr95", metrics.fpr_at_95_tpr)):
            rows.append(metrics.aggregate_row(OOD, metric, measure(-inside, -outside), n, name))
    columns = [*keys, "metric", "value", "n", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)
