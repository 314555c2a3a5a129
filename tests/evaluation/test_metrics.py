"""Metrics: hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from robustart.evaluation.metrics import (
    adversarial_robustness,
    alexnet_imagenet_c,
    corruption_error,
    mce,
    mce_unnormalized,
    proportion,
    relative_mce,
    summarize,
    topk_correct,
    wilson_interval,
)
from robustart.noise.natural.params import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS


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


# ------------------------------------------------------------------------------------ ImageNet-C metrics


def test_alexnet_baseline_data():
    errors, clean = alexnet_imagenet_c()
    assert set(errors) == set(BENCHMARK_CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    assert clean == pytest.approx(0.43478)
    # the published per-corruption averages
    assert sum(errors["gaussian_noise"]) / 5 == pytest.approx(0.886428)
    assert sum(errors["jpeg_compression"]) / 5 == pytest.approx(0.606500)
    assert mce(errors) == pytest.approx(100.0) and relative_mce(errors, clean) == pytest.approx(100.0)


@pytest.mark.fidelity
def test_resnet50_reference_corruption_errors():
    """The published ResNet-50 accuracies give the published CEs (within the rounding of the accuracies)."""
    base = alexnet_imagenet_c()[0]
    acc = {"brightness": 68.02, "contrast": 39.06, "gaussian_noise": 29.29, "glass_blur": 26.79}
    expected = {"brightness": 56.64, "contrast": 71.43, "gaussian_noise": 79.77, "glass_blur": 88.61}
    for name, a in acc.items():
        assert corruption_error([1 - a / 100] * 5, base[name]) == pytest.approx(expected[name], abs=0.02)


def test_mce_family_by_hand():
    base = {n: [0.5] * 5 for n in BENCHMARK_CORRUPTIONS}
    errors = {n: [0.25] * 5 for n in BENCHMARK_CORRUPTIONS}
    errors["fog"] = [0.1, 0.2, 0.3, 0.4, 0.5]  # sums to 1.5 -> CE 60
    assert mce(errors, base) == pytest.approx((14 * 50 + 60) / 15)
    assert mce_unnormalized(errors) == pytest.approx(100 * (14 * 0.25 + 0.3) / 15)
    assert relative_mce(errors, 0.2, base, baseline_clean_error=0.4) == pytest.approx(
        (14 * 100 * 0.05 / 0.1 + 100 * (1.5 - 1.0) / 0.5) / 15
    )
    with pytest.raises(ValueError, match="'snow'"):
        mce({k: v for k, v in errors.items() if k != "snow"})
    with pytest.raises(ValueError, match="5 error rates"):
        mce({**errors, "fog": [0.1]})
    with pytest.raises(ValueError, match="baseline_clean_error"):
        relative_mce(errors, 0.2, base)


def test_summarize_adds_ce_rows_when_complete():
    rng = np.random.default_rng(0)
    frames = [_rows("clean", "clean", None, None, rng.random(50) < 0.7)]
    for name in BENCHMARK_CORRUPTIONS:
        for severity in range(1, 6):
            frames.append(_rows("imagenet_c", name, severity, None, rng.random(50) < 0.9 - 0.1 * severity))
    preds = pd.concat(frames)
    plain = summarize(preds)
    assert set(plain["metric"]) == {"top1", "top5", "acc", "mce_unnormalized"}
    m = summarize(preds, corruption_baseline="alexnet")
    assert len(m[m.metric == "ce"]) == 15
    errors = {
        c: [1 - m[(m.metric == "acc") & (m.condition == c) & (m.severity == s)]["value"].item() for s in range(1, 6)]
        for c in BENCHMARK_CORRUPTIONS
    }
    assert m[m.metric == "mce"]["value"].item() == pytest.approx(mce(errors))
    top1 = m[m.metric == "top1"]["value"].item()
    assert m[m.metric == "relative_mce"]["value"].item() == pytest.approx(relative_mce(errors, 1 - top1))
    # an incomplete set of corruptions gets no mCE
    partial = summarize(preds[preds["condition"] != "fog"], corruption_baseline="alexnet")
    assert "mce" not in set(partial["metric"]) and len(partial[partial.metric == "ce"]) == 14
