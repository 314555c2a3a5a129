"""Metrics: hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from evaluation.metrics import adversarial_robustness, proportion, summarize, topk_correct, wilson_interval


def test_wilson_interval_known_values():
    # 8 of 10: Wilson 95% interval (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(0, 20)
    assert low == 0 and high == pytest.approx(0.1611, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_ar_is_conditional_on_clean_correct():
    clean = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    adv = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    assert adversarial_robustness(clean, adv).value == pytest.approx(2 / 4)
    assert adversarial_robustness(clean, adv).n == 4
    assert adversarial_robustness(clean, adv, conditional=False).value == pytest.approx(3 / 6)
    with pytest.raises(ValueError):
        adversarial_robustness(clean, adv[:3])


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    labels = torch.tensor([0, 0])
    assert topk_correct(logits, labels, 1).tolist() == [False, True]
    assert topk_correct(logits, labels, 2).tolist() == [True, True]
    assert topk_correct(logits, labels, 5).tolist() == [True, True]  # k larger than classes


def _rows(noise, condition, severity, eps, correct):
    n = len(correct)
    return pd.DataFrame(
        {
            "noise": noise,
            "condition": condition,
            "severity": pd.array([severity] * n, dtype="Int64"),
            "eps": pd.array([eps] * n, dtype="Float64"),
            "sample_id": np.arange(n),
            "correct": correct,
            "correct_top5": [True] * n,
        }
    )


def test_summarize_rows():
    preds = pd.concat(
        [
            _rows("clean", "clean", None, None, [True, True, False, True]),
            _rows("pgd_linf", "pgd_linf", None, 0.03, [True, False, False, False]),
            _rows("imagenet_c", "contrast", 2, None, [False, True, False, True]),
        ]
    )
    m = summarize(preds).set_index(["noise", "metric"])
    assert m.loc[("clean", "top1"), "value"] == 0.75
    assert m.loc[("clean", "top5"), "value"] == 1.0
    assert m.loc[("pgd_linf", "robust_acc"), "value"] == 0.25
    assert m.loc[("pgd_linf", "ar"), "value"] == pytest.approx(1 / 3) and m.loc[("pgd_linf", "ar"), "n"] == 3
    assert m.loc[("imagenet_c", "acc"), "value"] == 0.5
    assert m.loc[("imagenet_c", "acc"), "severity"] == 2
    assert set(m.reset_index()["metric"]) == {"top1", "top5", "robust_acc", "ar", "acc"}
    est = proportion([True, False, True, True])
    assert m.loc[("clean", "top1"), "ci_low"] == pytest.approx(est.ci_low)
