"""Evaluators (model x noise -> per-sample rows) and metrics (pure functions of those rows)."""

from evaluation.evaluator import evaluate, evaluate_datasets
from evaluation.metrics import (
    Estimate,
    adversarial_robustness,
    proportion,
    summarize,
    topk_correct,
    wilson_interval,
)

__all__ = [
    "Estimate",
    "adversarial_robustness",
    "evaluate",
    "evaluate_datasets",
    "proportion",
    "summarize",
    "topk_correct",
    "wilson_interval",
]
