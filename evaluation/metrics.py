"""Metrics as pure functions of per-sample results.

Accuracies are fractions in [0, 1]. Every accuracy-like value comes with a 95% Wilson score interval
(Wilson, 1927), which stays inside [0, 1] and behaves at 0 and 100% where the normal approximation
does not.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping, Sequence
from importlib import resources
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


def summarize(predictions: pd.DataFrame, corruption_baseline: str | Errors | None = None) -> pd.DataFrame:
    """Metric rows from a per-sample predictions table.

    ``predictions`` has one row per (noise, condition, severity, eps, sample_id) with boolean
    ``correct`` and ``correct_top5``; the clean rows have ``noise == "clean"``. Returns rows with
    ``noise, metric, condition, severity, eps, value, n, ci_low, ci_high``:

    - clean: ``top1``, ``top5``;
    - conditions with an ``eps`` (attacks): ``robust_acc`` (all samples) and ``ar`` (among the
      clean-correct samples);
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
                    rows.append(_aggregate_row(noise, "ce", corruption_error(errs, base[name]), n, name))
        if all(name in errors for name in _benchmark_names()):
            rows.append(_aggregate_row(noise, "mce_unnormalized", mce_unnormalized(errors), n))
            if base is not None:
                rows.append(_aggregate_row(noise, "mce", mce(errors, baseline), n))
                if clean_error is not None and isinstance(baseline, str):
                    rows.append(_aggregate_row(noise, "relative_mce", relative_mce(errors, clean_error, baseline), n))
    return pd.DataFrame(rows, columns=frame.columns)


def _aggregate_row(noise: str, metric: str, value: float, n: int, condition: str | None = None) -> dict:
    """A metric row without a confidence interval (CE and mCE are ratios of error sums, not proportions)."""
    return dict(noise=noise, condition=condition, severity=None, eps=None, metric=metric, value=value, n=n,
                ci_low=math.nan, ci_high=math.nan)  # fmt: skip


# ---------------------------------------------------------------------------------------------- ImageNet-C

Errors = Mapping[str, Sequence[float]]


@functools.lru_cache(maxsize=1)
def alexnet_imagenet_c() -> tuple[dict[str, tuple[float, ...]], float]:
    """AlexNet's ImageNet-C top-1 errors (fractions) per corruption and severity 1..5, and its clean error.

    Shipped as data (``evaluation/baselines/alexnet_imagenet_c.csv``), from the published table.
    """
    text = (resources.files("evaluation") / "baselines" / "alexnet_imagenet_c.csv").read_text()
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    clean = next(float(r["error"]) for r in rows if r["corruption"] == "clean")
    errors: dict[str, list[float]] = {}
    for r in sorted((r for r in rows if r["corruption"] != "clean"), key=lambda r: int(r["severity"])):
        errors.setdefault(r["corruption"], []).append(float(r["error"]))
    return {k: tuple(v) for k, v in errors.items()}, clean


def _benchmark_names() -> tuple[str, ...]:
    from noise.natural.params import BENCHMARK_CORRUPTIONS

    return BENCHMARK_CORRUPTIONS


def _five(errors: Errors, name: str, what: str) -> list[float]:
    if name not in errors:
        raise ValueError(f"{what} has no errors for corruption {name!r}")
    values = [float(e) for e in errors[name]]
    if len(values) != 5:
        raise ValueError(f"{what}: corruption {name!r} needs 5 error rates (severities 1..5), got {len(values)}")
    return values


def _baseline(baseline: str | Errors) -> Errors:
    if isinstance(baseline, str):
        if baseline != "alexnet":
            raise ValueError(f"unknown baseline {baseline!r}; use 'alexnet' or a mapping of errors")
        return alexnet_imagenet_c()[0]
    return baseline


def corruption_error(errors: Sequence[float], baseline_errors: Sequence[float]) -> float:
    """CE in percent: ``100 * sum_s E_s / sum_s E_s^baseline`` over severities 1..5 (Hendrycks & Dietterich)."""
    if len(errors) != 5 or len(baseline_errors) != 5:
        raise ValueError("corruption_error needs 5 error rates (severities 1..5) for the model and the baseline")
    return 100 * sum(errors) / sum(baseline_errors)


def mce(errors: Errors, baseline: str | Errors = "alexnet") -> float:
    """Mean corruption error (percent) over the 15 benchmark corruptions.

    Args:
        errors: corruption name -> five error rates (fractions, severity 1..5).
        baseline: ``"alexnet"`` (the published AlexNet errors) or another model's errors, same form.

    Raises:
        ValueError: a benchmark corruption is missing from ``errors`` or the baseline.
    """
    base = _baseline(baseline)
    return sum(
        corruption_error(_five(errors, n, "errors"), _five(base, n, "baseline")) for n in _benchmark_names()
    ) / len(_benchmark_names())


def relative_mce(
    errors: Errors,
    clean_error: float,
    baseline: str | Errors = "alexnet",
    baseline_clean_error: float | None = None,
) -> float:
    """Relative mCE (percent): ``mean_c sum_s (E_s,c - E_clean) / sum_s (E^b_s,c - E^b_clean)``.

    ``baseline_clean_error`` defaults to AlexNet's (0.43478) when ``baseline="alexnet"``; it is required
    for any other baseline.
    """
    base = _baseline(baseline)
    if baseline_clean_error is None:
        if not isinstance(baseline, str):
            raise ValueError("relative_mce with a custom baseline needs baseline_clean_error")
        baseline_clean_error = alexnet_imagenet_c()[1]
    total = 0.0
    for name in _benchmark_names():
        ours, theirs = _five(errors, name, "errors"), _five(base, name, "baseline")
        total += 100 * sum(e - clean_error for e in ours) / sum(e - baseline_clean_error for e in theirs)
    return total / len(_benchmark_names())


def mce_unnormalized(errors: Errors) -> float:
    """Mean error (percent) over the 15 benchmark corruptions and 5 severities, with no baseline
    (the number RobustART reports as ImageNet-C error)."""
    names = _benchmark_names()
    return 100 * sum(sum(_five(errors, n, "errors")) / 5 for n in names) / len(names)
