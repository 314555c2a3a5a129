"""Evaluators (model x noise -> per-sample rows) and metrics (pure functions of those rows)."""

from robustart.evaluation.evaluator import evaluate, evaluate_condition, evaluate_datasets, evaluate_sequences
from robustart.evaluation.metrics import (
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
    "evaluate_condition",
    "evaluate_datasets",
    "evaluate_sequences",
    "proportion",
    "summarize",
    "topk_correct",
    "wilson_interval",
]
