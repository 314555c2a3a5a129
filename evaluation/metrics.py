"""Metrics as pure functions of per-sample results.

Accuracies are fractions in [0, 1]. Every accuracy-like value comes with a 95% Wilson score interval
(Wilson, 1927), which stays inside [0, 1] and behaves at 0 and 100% where the normal approximation
does not.

This module holds the proportions (accuracy, AR, WCAR, transfer ASR) and :func:`summarize`, which turns
per-sample predictions into metric rows. The ImageNet-C metrics (CE, mCE) are in
:mod:`robustart.evaluation.corruption_metrics`, those of ImageNet-P, -A and -O in
:mod:`robustart.evaluation.shift_metrics`; both are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from robustart.evaluation.corruption_metrics import (
    Errors,
    _baseline,
    _benchmark_names,
    alexnet_imagenet_c,
    corruption_error,
    mce,
    mce_unnormalized,
    relative_mce,
)
from robustart.evaluation.shift_metrics import (
    aupr,
    auroc,
    aurra,
    calibration_rms,
    flip_probability,
    fpr_at_95_tpr,
    top5_distance,
)

__all__ = [
    "Z95",
    "Errors",
    "Estimate",
    "adversarial_robustness",
    "aggregate_row",
    "alexnet_imagenet_c",
    "aupr",
    "auroc",
    "aurra",
    "calibration_rms",
    "corruption_error",
    "flip_probability",
    "fpr_at_95_tpr",
    "mce",
    "mce_unnormalized",
    "proportion",
    "relative_mce",
    "summarize",
    "top5_distance",
    "topk_correct",
    "transfer_asr",
    "wilson_interval",
    "worst_case_robustness",
]

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


def worst_case_robustness(clean_correct, adv_correct_by_attack: Mapping[str, Sequence[bool]]) -> Estimate:
    """RobustART's WCAR: among the clean-correct samples, the share that every attack fails to break.

    Args:
        clean_correct: per-sample booleans, clean prediction correct.
        adv_correct_by_attack: per attack, per-sample booleans (same order), prediction under that attack correct.

    >>> worst_case_robustness([1, 1, 1, 0], {"fgsm": [1, 1, 0, 1], "pgd": [1, 0, 1, 1]}).value
    0.3333333333333333
    """
    if not adv_correct_by_attack:
        raise ValueError("worst_case_robustness needs at least one attack")
    clean_correct = np.asarray(clean_correct, dtype=bool)
    survived = np.ones_like(clean_correct)
    for name, correct in adv_correct_by_attack.items():
        correct = np.asarray(correct, dtype=bool)
        if correct.shape != clean_correct.shape:
            raise ValueError(f"attack {name!r}: shape {correct.shape} differs from the clean {clean_correct.shape}")
        survived &= correct
    return proportion(survived[clean_correct])


def transfer_asr(source_correct, clean_correct, adv_correct) -> Estimate:
    """Transfer attack success rate, as RobustART's ``parse_transfer.py`` defines it: among the samples that both
    the source model and the target model classify correctly when clean, the share that the target gets wrong on
    the adversarial example crafted on the source.

    Args:
        source_correct: per-sample booleans, the source model's clean prediction correct.
        clean_correct: per-sample booleans, the target model's clean prediction correct.
        adv_correct: per-sample booleans, the target's prediction on the source's adversarial example correct.

    >>> transfer_asr([1, 1, 1, 0], [1, 1, 0, 1], [0, 1, 0, 0]).value
    0.5
    """
    source_correct, clean_correct, adv_correct = (
        np.asarray(a, dtype=bool) for a in (source_correct, clean_correct, adv_correct)
    )
    if not source_correct.shape == clean_correct.shape == adv_correct.shape:
        raise ValueError(f"shapes differ: {source_correct.shape}, {clean_correct.shape}, {adv_correct.shape}")
    return proportion(~adv_correct[source_correct & clean_correct])


def summarize(predictions: pd.DataFrame, corruption_baseline: str | Errors | None = None) -> pd.DataFrame:
    """Metric rows from a per-sample predictions table.

    ``predictions`` has one row per (noise, condition, severity, eps, sample_id) with boolean
    ``correct`` and ``correct_top5``; the clean rows have ``noise == "clean"``. Returns rows with
    ``noise, metric, condition, severity, eps, value, n, ci_low, ci_high``:

    - clean: ``top1``, ``top5``;
    - conditions with an ``eps`` (attacks): ``robust_acc`` (all samples) and ``ar`` (among the
      clean-correct samples); the worst case over attacks (noise ``wcar``) also ``wcar``;
    - other conditions (corruptions): ``acc``; per noise, ``mce_unnormalized`` once the 15 benchmark
      corruptions have all five severities; with ``corruption_baseline`` (``"alexnet"`` for ImageNet, or
      another model's errors) also ``ce`` per complete corruption, ``mce`` and ``relative_mce``.
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
            if key[0] == "wcar":  # the worst case over the attacks is already per sample: WCAR is its AR
                add(key, "wcar", worst_case_robustness(clean_correct.astype(bool), {"worst": group["correct"]}))
        else:
            add(key, "acc", proportion(group["correct"]))
    frame = pd.DataFrame(rows, columns=[*keys, "metric", *Estimate._fields])
    clean_error = 1 - rows[0]["value"] if len(clean) else None
    extra = _corruption_rows(frame, clean_error, corruption_baseline)
    return pd.concat([frame, extra], ignore_index=True) if len(extra) else frame


def _corruption_rows(frame: pd.DataFrame, clean_error: float | None, baseline) -> pd.DataFrame:
    """``ce`` / ``mce`` / ``relative_mce`` / ``mce_unnormalized`` rows from the ``acc`` rows of each noise."""
    rows = []
    acc = frame[frame["metric"] == "acc"]
    for noise, group in acc.groupby("noise", sort=False):
        errors = {}
        for name, g in group.groupby("condition", sort=False):
            by_severity = dict(zip(g["severity"], 1 - g["value"], strict=True))
            if sorted(by_severity) == [1, 2, 3, 4, 5]:
                errors[name] = [by_severity[s] for s in range(1, 6)]
        n = int(group["n"].min())
        base = _baseline(baseline) if baseline is not None else None

        if base is not None:
            for name, errs in errors.items():
                if name in base:
                    rows.append(aggregate_row(noise, "ce", corruption_error(errs, base[name]), n, name))
        if all(name in errors for name in _benchmark_names()):
            rows.append(aggregate_row(noise, "mce_unnormalized", mce_unnormalized(errors), n))
            if base is not None:
                rows.append(aggregate_row(noise, "mce", mce(errors, baseline), n))
                if clean_error is not None and isinstance(baseline, str):
                    rows.append(aggregate_row(noise, "relative_mce", relative_mce(errors, clean_error, baseline), n))
    return pd.DataFrame(rows, columns=frame.columns)


def aggregate_row(
    noise: str, metric: str, value: float, n: int, condition: str | None = None, severity=None, eps=None
) -> dict:
    """A metric row without a confidence interval, for values that are not proportions (CE and mCE are ratios
    of error sums; calibration, detection and sequence metrics are not shares of samples either)."""
    return dict(noise=noise, condition=condition, severity=severity, eps=eps, metric=metric, value=float(value),
                n=int(n), ci_low=math.nan, ci_high=math.nan)  # fmt: skip
