"""ImageNet-C metrics: corruption error (CE), mCE, relative mCE and the unnormalized mean error.

Pure functions of per-corruption error rates (fractions, severities 1..5), with AlexNet's published errors as
the default baseline (Hendrycks & Dietterich, ICLR 2019). :func:`robustart.evaluation.metrics.summarize` turns
them into metric rows.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping, Sequence
from importlib import resources

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
    from robustart.noise.natural.params import BENCHMARK_CORRUPTIONS

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
