"""The protocol columns: what each results row was measured under, read from the options a noise was built with."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from robustart.evaluation.protocol import NOISE_PROTOCOL, add_protocol, options_by_noise, protocol_of, unit_of
from robustart.evaluation.scoring import mean_corruption_rows
from robustart.noise import NoiseSuite, create_noise, list_noises
from robustart.noise.natural.params import BENCHMARK_CORRUPTIONS
from robustart.noise.registry import get_noise_entry

EPS = 8 / 255


@pytest.mark.parametrize("name", [n for n in list_noises() if get_noise_entry(n).kind == "adversarial"])
def test_every_attack_declares_its_norm(name):
    options = get_noise_entry(name).options
    kwargs = {"source": "small_cnn"} if name == "transfer" else {}
    cols = protocol_of(options(**kwargs), EPS)
    assert set(cols) == set(NOISE_PROTOCOL)
    assert cols["norm"] in ("Linf", "L2", "L1"), name
    assert cols["param_set"] is None


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("fgsm", {}, {"norm": "Linf", "steps": 1, "step_size": EPS, "random_start": False, "targeted": False}),
        ("pgd_linf", {"steps": 7, "rel_stepsize": 0.25}, {"norm": "Linf", "steps": 7, "step_size": 0.25 * EPS,
                                                         "restarts": 1, "random_start": True}),
        ("pgd_l2", {"random_start": False}, {"norm": "L2", "steps": 20, "step_size": 0.075 * EPS,
                                             "random_start": False}),
        ("mim", {"step_size": "1/255"}, {"norm": "Linf", "step_size": 1 / 255, "random_start": False}),
        ("apgd_ce", {"norm": "L2", "restarts": 3}, {"norm": "L2", "steps": 100, "restarts": 3, "step_size": None}),
        ("apgd_t", {}, {"targeted": True, "steps": 100}),
        ("square", {"queries": 300}, {"steps": 300, "norm": "Linf"}),
        ("autoattack", {"norm": "L2"}, {"norm": "L2", "steps": None}),
        ("transfer", {"source": "small_vit", "attack": "pgd_linf", "attack_options": {"steps": 5}},
         {"source_model": "small_vit", "norm": "Linf", "steps": 5, "step_size": 0.075 * EPS}),
        ("imagenet_c", {}, {"param_set": "cifar", "norm": None, "steps": None}),
        ("imagenet_c", {"params": "imagenet"}, {"param_set": "imagenet"}),
        ("imagenet_s", {}, dict.fromkeys(NOISE_PROTOCOL)),
    ],
)  # fmt: skip
def test_protocol_of_an_options_set(name, options, expected):
    cols = protocol_of(get_noise_entry(name).options(**options), EPS, image_side=32)
    for key, value in expected.items():
        assert cols[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_units_name_what_the_values_are():
    assert unit_of("top1") == unit_of("robust_acc") == unit_of("shape_bias") == "fraction"
    assert unit_of("mce") == unit_of("ce") == unit_of("mce_unnormalized") == "percent"
    assert unit_of("warning_clean_not_matching") == "count" and unit_of("nmfp") == unit_of("min_eps_q50") == "score"
    assert unit_of("mfp") == unit_of("broken_first") == unit_of("aupr") == "fraction"


def test_rows_get_their_members_protocol_and_curves_keep_their_steps_axis():
    suite = NoiseSuite("s", [create_noise("pgd_linf", eps=["2/255", "8/255"], steps=10, rel_stepsize=0.25),
                             create_noise("imagenet_c", corruptions=["fog"])])  # fmt: skip
    assert set(options_by_noise(suite)) == {"pgd_linf", "imagenet_c"}
    rows = pd.DataFrame({
        "noise": ["clean", "pgd_linf", "pgd_linf", "imagenet_c", "pgd_linf"],
        "eps": [None, 2 / 255, 8 / 255, None, 8 / 255],
        "metric": ["top1", "robust_acc", "robust_acc", "acc", "robust_acc_vs_steps"],
        "steps": [math.nan, math.nan, math.nan, math.nan, 3.0],
        "ci_low": [0.1, 0.1, 0.2, math.nan, 0.3],
    })  # fmt: skip
    out = add_protocol(rows, suite, recipe="baseline_cnn+mixup", image_side=224)
    assert list(out["steps"]) == [None, 10, 10, None, 3]  # the curve's row keeps its x value
    assert out["step_size"].iloc[1] == pytest.approx(0.25 * 2 / 255) and out["norm"].iloc[0] is None
    assert list(out["param_set"]) == [None, None, None, "imagenet", None]
    assert set(out["recipe"]) == {"baseline_cnn+mixup"} and set(out["unit"]) == {"fraction"}
    assert list(out["ci_method"]) == ["wilson", "wilson", "wilson", "none", "wilson"]


def test_a_noise_object_of_ones_own_leaves_the_protocol_null():
    noise = create_noise("fgsm")
    del noise.built_with
    out = add_protocol(pd.DataFrame({"noise": ["fgsm"], "eps": [EPS]}), noise, recipe="none", image_side=32)
    assert all(out[c].iloc[0] is None for c in NOISE_PROTOCOL) and "unit" not in out


def test_mean_corruption_accuracy_needs_all_75_conditions():
    samples = range(20)
    cells = [(c, s) for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)]
    rows = [{"noise": "imagenet_c", "condition": c, "severity": s, "eps": None, "sample_id": i,
             "correct": (i + s) % 3 != 0} for c, s in cells for i in samples]  # fmt: skip
    predictions = pd.DataFrame(rows)
    [row] = mean_corruption_rows(predictions).to_dict("records")
    assert row["metric"] == "mean_acc" and row["n"] == 20
    assert row["value"] == pytest.approx(predictions["correct"].mean())
    assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["ci_high"] - row["ci_low"] > 0
    assert mean_corruption_rows(predictions[predictions.severity < 5]).empty


def test_options_classes_declare_only_protocol_columns():
    for name in list_noises():
        options = get_noise_entry(name).options
        assert set(getattr(options, "PROTOCOL", {})) <= set(NOISE_PROTOCOL), name
        for f in dataclasses.fields(options):
            assert f.metadata.get("protocol", "norm") in NOISE_PROTOCOL, (name, f.name)


def test_no_rows_and_sequence_noises_leave_the_columns_typed():
    from robustart.noise.natural.sequences import SequenceNoise

    empty = pd.DataFrame({"noise": pd.Series(dtype=object), "eps": pd.Series(dtype="float64")})
    sequences = SequenceNoise.__new__(SequenceNoise)  # holds no other noise, and no parts()
    sequences.name = "imagenet_p"
    out = add_protocol(empty, sequences, recipe="none", image_side=224)
    assert out.empty and set(NOISE_PROTOCOL) <= set(out.columns)
