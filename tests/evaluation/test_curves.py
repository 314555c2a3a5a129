"""Robustness curves as pure functions (evaluation.curves): survival of min_eps, its quantiles, accuracy by
attack step, and their metric rows, on hand-made arrays with exact expected values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robustart.evaluation import curves
from robustart.evaluation.metrics import wilson_interval

NAN = math.nan
# a misclassified-clean sample (0), four broken at growing budgets, one never broken (NaN)
MIN_EPS = [0.0, 0.1, 0.2, 0.3, 0.4, NAN]


def test_survival_counts_strictly_larger_budgets_and_nan_as_robust():
    got = curves.survival(MIN_EPS, [0.0, 0.05, 0.1, 0.25, 0.4, 10.0])
    np.testing.assert_array_equal(got, np.array([5, 5, 4, 3, 1, 1]) / 6)


def test_survival_at_zero_is_the_clean_accuracy_and_never_rises():
    grid = curves.eps_grid(0.5, 11)
    values = curves.survival(MIN_EPS, grid)
    assert values[0] == 5 / 6  # everything but the misclassified sample
    assert (np.diff(values) <= 0).all()


def test_robust_at_per_sample():
    assert curves.robust_at(MIN_EPS, 0.2).tolist() == [False, False, False, True, True, True]


def test_survival_reads_nullable_columns():
    column = pd.Series([0.0, None, 0.5], dtype="Float64")  # how a predictions table holds min_eps
    assert curves.survival(column, [0.1]).tolist() == [2 / 3]


@pytest.mark.parametrize(
    "q, expected",
    [(0.1, 0.0), (1 / 6, 0.0), (0.25, 0.1), (0.5, 0.2), (0.75, 0.4), (5 / 6, 0.4), (0.9, math.inf)],
)
def test_quantiles_invert_the_empirical_distribution(q, expected):
    # sorted: 0, .1, .2, .3, .4, inf; the q-quantile is the k-th value with k = ceil(q * 6)
    assert curves.min_eps_quantile(MIN_EPS, q) == expected


def test_quantile_is_the_budget_where_the_curve_falls_to_one_minus_q():
    values = np.array([0.03, 0.01, NAN, 0.02, 0.05, 0.0, 0.04, NAN])
    for q in curves.QUANTILES:
        quantile = curves.min_eps_quantile(values, q)
        if math.isinf(quantile):
            assert curves.survival(values, [1e9])[0] > 1 - q
            continue
        assert curves.survival(values, [quantile])[0] <= 1 - q
        below = np.nextafter(quantile, -1)
        assert quantile == 0 or curves.survival(values, [below])[0] > 1 - q


def test_quantile_metric_names():
    assert [curves.quantile_metric(q) for q in curves.QUANTILES] == [
        "min_eps_q10", "min_eps_q25", "min_eps_q50", "min_eps_q75", "min_eps_q90",
    ]  # fmt: skip


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="min_eps must be >= 0"):
        curves.survival([0.1, -0.2], [0.0])
    with pytest.raises(ValueError, match=r"quantile level must be in \(0, 1\)"):
        curves.min_eps_quantile(MIN_EPS, 1.0)
    with pytest.raises(ValueError, match="at least 2 points"):
        curves.eps_grid(1.0, 1)
    with pytest.raises(ValueError, match="largest budget must be a finite number > 0"):
        curves.eps_grid(0.0, 5)
    with pytest.raises(ValueError, match=r"must be \(samples, steps\)"):
        curves.accuracy_by_step([True, False])


def test_empty_samples_give_nan():
    assert np.isnan(curves.survival([], [0.1])).all()
    assert math.isnan(curves.min_eps_quantile([], 0.5))


def test_grid_and_its_default_end():
    np.testing.assert_allclose(curves.eps_grid(0.4, 5), [0.0, 0.1, 0.2, 0.3, 0.4])
    assert curves.default_upper(MIN_EPS) == 0.4
    assert curves.default_upper([0.0, NAN]) == 1.0


def test_min_eps_rows_encode_the_budget_in_eps_and_the_quantile_in_the_name():
    rows = pd.DataFrame(curves.min_eps_rows("min_eps", "pgd_linf", MIN_EPS, [0.0, 0.25]))
    curve = rows[rows["metric"] == curves.EPS_CURVE]
    assert curve["eps"].tolist() == [0.0, 0.25]
    assert curve["value"].tolist() == [5 / 6, 3 / 6]
    assert (curve["n"] == 6).all() and curve["severity"].isna().all()
    intervals = list(zip(curve["ci_low"], curve["ci_high"], strict=True))
    assert intervals == [pytest.approx(wilson_interval(5, 6)), pytest.approx(wilson_interval(3, 6))]
    quantiles = rows[rows["metric"] != curves.EPS_CURVE].set_index("metric")
    assert quantiles["value"].to_dict() == {
        "min_eps_q10": 0.0, "min_eps_q25": 0.1, "min_eps_q50": 0.2, "min_eps_q75": 0.4, "min_eps_q90": math.inf,
    }  # fmt: skip
    assert quantiles["eps"].isna().all() and (quantiles["condition"] == "pgd_linf").all()
    assert quantiles["ci_low"].isna().all()


def test_steps_rows_put_the_step_count_in_steps():
    correct = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(curves.accuracy_by_step(correct), [0.75, 0.5, 0.25, 0.25])
    rows = pd.DataFrame(curves.steps_rows("pgd_linf", "pgd_linf", 8 / 255, correct))
    assert rows["steps"].tolist() == [0, 1, 2, 3] and rows["severity"].isna().all()  # its own axis column
    assert rows["value"].tolist() == [0.75, 0.5, 0.25, 0.25]
    assert (rows["metric"] == curves.STEPS_CURVE).all() and (rows["eps"] == 8 / 255).all()
    assert (rows["n"] == 4).all() and rows["ci_high"].notna().all()


def test_curve_rows_from_a_predictions_table():
    predictions = pd.DataFrame({
        "noise": ["min_eps"] * 6 + ["clean"] * 3,
        "condition": ["fgsm"] * 3 + ["mim"] * 3 + ["clean"] * 3,
        "sample_id": [0, 1, 2] * 3,
        "min_eps": pd.array([0.0, 0.2, None, 0.0, 0.1, 0.3, None, None, None], dtype="Float64"),
    })  # fmt: skip
    rows = pd.DataFrame(curves.curve_rows(predictions, "min_eps", points=3))
    assert set(rows["condition"]) == {"fgsm", "mim"}
    fgsm = rows[(rows["condition"] == "fgsm") & (rows["metric"] == curves.EPS_CURVE)]
    assert fgsm["eps"].tolist() == [0.0, 0.1, 0.2]  # up to the largest finite min_eps
    assert fgsm["value"].tolist() == [2 / 3, 2 / 3, 1 / 3]
    fixed = pd.DataFrame(curves.curve_rows(predictions, "min_eps", points=2, upper=1.0))
    assert fixed[fixed["metric"] == curves.EPS_CURVE]["eps"].tolist() == [0.0, 1.0, 0.0, 1.0]
