"""Minimal-perturbation attacks (cw, deepfool), ARES's per-sample minimal budget search (min_eps) and the
accuracy-vs-steps recorder: settings checks, the search's arithmetic on an attack with known thresholds,
consistency with the torchattacks attacks themselves, and the columns and rows a run writes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from robustart import model_zoo
from robustart.evaluation import evaluate, noise_rows, summarize
from robustart.evaluation.curves import EPS_CURVE, STEPS_CURVE, robust_at, survival
from robustart.noise import create_noise
from robustart.noise.adversarial.minimal import library_attack, search_min_eps
from tests.conftest import compose_config, run_cli, run_dirs

# ------------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("cw", {"steps": 0}, "steps must be an integer >= 1"),
        ("cw", {"c": -1.0}, "c must be > 0"),
        ("cw", {"kappa": -0.5}, "kappa must be >= 0"),
        ("cw", {"lr": 0}, "lr must be > 0"),
        ("deepfool", {"overshoot": -0.1}, "overshoot must be >= 0"),
        ("deepfool", {"steps": 0}, "steps must be an integer >= 1"),
        ("deepfool", {"curve_points": 1}, "curve_points must be an integer >= 2"),
        ("cw", {"curve_max": "0"}, "curve_max must be > 0"),
        ("min_eps", {"attacks": ["cw"]}, "cannot search the budget of ['cw']; choose from fgsm, pgd_linf, mim"),
        ("min_eps", {"attacks": []}, "attacks must list at least one"),
        ("min_eps", {"init": "0"}, "init must be > 0"),
        ("min_eps", {"init": "2"}, "Linf eps must be at most 1"),
        ("min_eps", {"steps": 0}, "steps must be an integer >= 1"),
        ("min_eps", {"search_steps": -1}, "search_steps must be an integer >= 0"),
        ("min_eps", {"binsearch_steps": -2}, "binsearch_steps must be an integer >= 0"),
        ("min_eps", {"rel_stepsize": 0.0}, "rel_stepsize must be > 0"),
    ],
)
def test_bad_settings_are_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[").replace(")", r"\)")):
        create_noise(name, **options)


@pytest.mark.parametrize("name", ["cw", "deepfool", "min_eps"])
def test_configs_compose_into_conditions_without_a_budget(name):
    cfg = compose_config(["experiment=quickstart", f"noise={name}"])
    from robustart.run import build_noise

    conditions = build_noise(cfg.noise).conditions()
    assert conditions and all(c.eps is None and c.noise == name for c in conditions)


def test_iteration_curve_option_composes():
    cfg = compose_config(["experiment=quickstart", "noise=mim", "noise.iteration_curve=true"])
    from robustart.noise.adversarial.curves import IterationCurveNoise
    from robustart.run import build_noise

    assert isinstance(build_noise(cfg.noise), IterationCurveNoise)


# ---------------------------------------------------------------------------------- the search's arithmetic


def _threshold_attack(thresholds):
    """A stand-in attack on 1-pixel images: at budget eps it returns an image holding eps, and breaks a sample
    exactly when eps reaches its threshold (0: misclassified when clean; inf: never broken)."""
    thr = torch.tensor(thresholds, dtype=torch.float32)
    images = torch.zeros(len(thresholds), 1, 1, 1)

    def attack(eps):
        return eps.expand_as(images).clone()

    def is_broken(x):
        return x.flatten(1)[:, 0] >= thr

    return images, attack, is_broken


@pytest.mark.parametrize("linear", [False, True])
def test_search_brackets_each_threshold(linear):
    thresholds = [0.0, 0.3, 1.0, 2.5, 7.9, 100.0]
    images, attack, is_broken = _threshold_attack(thresholds)
    found = search_min_eps(attack, is_broken, images, init=1.0, search_steps=3, binsearch_steps=10, linear=linear)
    # exponential: 3 doublings (1, 2, 4) + 10 bisections; linear: budgets 8, 7, ..., 1 + 10 bisections
    assert found.trials == (18 if linear else 13)
    assert found.min_eps[0] == 0 and math.isnan(found.below[0])
    assert math.isnan(found.min_eps[-1])  # never broken up to 8
    for i, thr in enumerate(thresholds[1:-1], start=1):
        lo, hi = found.below[i].item(), found.min_eps[i].item()
        assert lo < np.float32(thr) <= hi, (thr, lo, hi)
        # the first bracket is [0, 1] or [2^(j-1), 2^j] (linear: [k - 1, k]), halved ten times
        width = 1.0 if linear or thr <= 1 else 2 ** math.ceil(math.log2(thr)) / 2
        assert hi - lo == pytest.approx(width / 2**10)
        assert found.adv[i].item() == np.float32(hi)  # the returned image is the attack's at min_eps
    assert found.adv[0].item() == 0  # misclassified clean: the clean image


def test_search_exponential_reaches_the_doubled_bracket():
    # a sample not broken by the 3 doublings (1, 2, 4) is bisected in [4, 8]: found if its threshold is below 8
    images, attack, is_broken = _threshold_attack([7.9, 8.5])
    found = search_min_eps(attack, is_broken, images, init=1.0, search_steps=3, binsearch_steps=10)
    assert 7.9 <= found.min_eps[0] <= 7.9 + 4 / 1024
    assert math.isnan(found.min_eps[1]) and found.below[1] == pytest.approx(8 - 4 / 1024)
    assert found.adv[1].item() == pytest.approx(8 - 4 / 1024)  # never broken: the strongest failed attempt


# ------------------------------------------------------------------------- the torchattacks attacks themselves


@pytest.fixture(scope="module")
def tiny():
    """A small CNN (random weights), four Fashion-MNIST-sized images and the model's own predictions as labels,
    but for sample 0, whose label is wrong (misclassified when clean)."""
    torch.manual_seed(0)
    model = model_zoo.create_model("small_cnn").eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 10
    return model, x, y


def _broken(model, name, eps, x, y, steps):
    """Per sample: does the library attack at the (scalar) budget ``eps``, run on the whole batch, break it."""
    adv = library_attack(name, model, float(eps), steps)(x, y)
    with torch.no_grad():
        return model(adv).argmax(1) != y


@pytest.mark.parametrize("name", ["fgsm", "pgd_linf", "mim"])
def test_per_sample_budgets_are_the_library_at_each_budget(tiny, name):
    """The search hands torchattacks one budget per sample (a tensor); each row must be what the attack gives
    at that budget as a number."""
    model, x, y = tiny
    eps = torch.tensor([0.01, 0.02, 0.05, 0.1])
    together = library_attack(name, model, eps.view(-1, 1, 1, 1), steps=3)(x, y)
    for i, e in enumerate(eps.tolist()):
        alone = library_attack(name, model, e, steps=3)(x, y)
        assert torch.equal(together[i], alone[i]), (name, i)


@pytest.mark.parametrize("name", ["fgsm", "pgd_linf", "mim"])
def test_min_eps_breaks_the_sample_and_the_bracket_below_does_not(tiny, name):
    model, x, y = tiny
    noise = create_noise("min_eps", attacks=[name], init="2/255", search_steps=3, binsearch_steps=6, steps=3)
    found = noise.search(x, y, noise.conditions()[0], model)
    assert found.min_eps[0] == 0
    checked = 0
    for i in range(1, len(x)):
        if math.isnan(found.min_eps[i]):
            continue
        checked += 1
        assert _broken(model, name, found.min_eps[i], x, y, 3)[i], (name, i)
        assert not _broken(model, name, found.below[i], x, y, 3)[i], (name, i)
        assert found.min_eps[i] - found.below[i] <= found.min_eps[i] * 2**-5  # ten bisections of a 2x bracket
    assert checked >= 2


def test_min_eps_noise_in_an_evaluation(tiny):
    """Through the evaluator: the returned images are broken exactly where min_eps is a number, the column
    joins onto the predictions, and the rows cover the searched range."""
    from robustart.engine import join_sample_columns

    model, x, y = tiny
    noise = create_noise("min_eps", attacks=["fgsm"], init="2/255", search_steps=3, binsearch_steps=4,
                         curve_points=5)  # fmt: skip
    predictions = evaluate(model, [(x, y, torch.arange(4))], noise)
    joined = join_sample_columns(predictions, noise_rows.sample_columns(noise))
    attacked = joined[joined["noise"] == "min_eps"].set_index("sample_id")
    assert attacked["correct"].tolist() == attacked["min_eps"].isna().tolist()
    assert joined[joined["noise"] == "clean"]["min_eps"].isna().all()
    rows = noise_rows.metric_rows(noise, joined)
    curve = rows[rows["metric"] == EPS_CURVE]
    assert curve["eps"].tolist() == pytest.approx([0, 4 / 255, 8 / 255, 12 / 255, 16 / 255])
    assert curve["value"].iloc[0] == 0.75  # every sample but the misclassified one
    assert curve["value"].iloc[-1] == attacked["correct"].mean()
    assert noise.report()["min_eps"]["fgsm"]["clean_wrong"] == 1


@pytest.mark.parametrize("name, options", [("cw", {"steps": 20, "c": 10.0, "lr": 0.05}), ("deepfool", {"steps": 3})])
def test_minimal_attacks_record_the_l2_norm_of_what_they_return(tiny, name, options):
    model, x, y = tiny
    noise = create_noise(name, **options)
    [condition] = noise.conditions()
    adv = noise.apply(x, y, torch.arange(4), condition, model)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    min_eps = noise_rows.sample_columns(noise).set_index("sample_id")["min_eps"]
    min_eps = min_eps.to_numpy(dtype="float64", na_value=np.nan)
    with torch.no_grad():
        broken = (model(adv).argmax(1) != y).numpy()
    norms = (adv - x).flatten(1).norm(dim=1).double().numpy()
    assert min_eps[0] == 0 and torch.equal(adv[0], x[0])  # misclassified clean: nothing to do
    assert np.isnan(min_eps[1:]).tolist() == (~broken[1:]).tolist()
    np.testing.assert_allclose(min_eps[1:][broken[1:]], norms[1:][broken[1:]])
    assert broken[1:].any(), f"{name} broke nothing: the check above is empty"


def test_min_eps_column_keeps_nan_apart_from_null(tmp_path):
    import pyarrow.parquet as pq

    from robustart import store
    from robustart.engine import join_sample_columns
    from robustart.noise import Condition

    noise = create_noise("deepfool")
    noise.record(Condition("deepfool", "deepfool"), torch.tensor([0, 1]), torch.tensor([0.5, math.nan]))
    predictions = pd.DataFrame({
        "noise": ["clean", "clean", "deepfool", "deepfool"], "condition": ["clean", "clean", "deepfool", "deepfool"],
        "severity": pd.array([None] * 4, dtype="Int64"), "eps": pd.array([None] * 4, dtype="Float64"),
        "sample_id": [0, 1, 0, 1], "label": 0, "pred": 0, "correct": True, "correct_top5": True,
        "confidence": np.float32(1), "margin": np.float32(1),
    })  # fmt: skip
    joined = join_sample_columns(predictions, noise_rows.sample_columns(noise))
    joined = joined.assign(run_id="r", model="m", weights="w")
    store.write_table(joined, store.predictions_schema(), tmp_path / "p.parquet")
    column = pq.read_table(tmp_path / "p.parquet").column("min_eps").to_pylist()
    assert column[:2] == [None, None] and column[2] == 0.5 and math.isnan(column[3])


# ------------------------------------------------------------------------------------ accuracy vs. steps


def test_iteration_curve_ends_at_the_runs_robust_accuracy(tiny):
    model, x, _ = tiny
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 10
    options = {"eps": ["4/255", "16/255"], "steps": 4, "random_start": False}
    plain = create_noise("pgd_linf", **options)
    noise = create_noise("pgd_linf", iteration_curve=True, **options)
    batches = [(x, y, torch.arange(4))]
    predictions = evaluate(model, batches, noise)
    assert not model.training  # the recorder hands the attack the model's own mode
    assert predictions.equals(evaluate(model, batches, plain))  # recording changes no adversarial example
    rows = noise_rows.metric_rows(noise, predictions)
    assert (rows["metric"] == STEPS_CURVE).all()
    summary = summarize(predictions).set_index(["metric", "eps"])["value"]
    for eps, curve in rows.groupby("eps"):
        assert curve["steps"].tolist() == [0, 1, 2, 3, 4]  # the start, then after each of the 4 steps
        assert curve["severity"].isna().all()  # the x value has its own column
        assert curve["value"].iloc[0] == 0.75  # no random start: the clean images
        assert curve["value"].iloc[-1] == summary[("robust_acc", eps)]
        assert (curve["n"] == 4).all()


def test_step_recorder_sees_one_call_per_step(tiny):
    from robustart.noise.adversarial.curves import StepRecorder

    model, x, y = tiny
    for name in ("pgd_linf", "mim"):
        recorder = StepRecorder(model, y)
        library_attack(name, recorder, 0.05, steps=5)(x, y)
        assert recorder.correct().shape == (4, 5)
    import torchattacks

    recorder = StepRecorder(model, y)
    torchattacks.PGDL2(recorder, eps=1.0, alpha=0.2, steps=3)(x, y)
    assert recorder.correct().shape == (4, 3)


# -------------------------------------------------------------------------------------- a trained model


@pytest.mark.fidelity
@pytest.mark.slow
def test_fgsm_curve_matches_fgsm_at_each_scanned_budget(fashion_subset_model):
    """FGSM is deterministic: at a budget of the linear scan (init * k), a sample FGSM breaks there has
    min_eps <= that budget, and where FGSM's success grows with the budget (as it does here) the curve
    equals FGSM's robust accuracy."""
    model, x, y = fashion_subset_model
    x, y, ids = x[:48], y[:48], torch.arange(48)
    init = 2 / 255
    search = create_noise("min_eps", attacks=["fgsm"], init=init, search_steps=4, binsearch_steps=6)
    budgets = [init * k for k in (1, 2, 4, 8, 16)]
    fgsm = create_noise("fgsm", eps=budgets)
    evaluate(model, [(x, y, ids)], search)
    min_eps = noise_rows.sample_columns(search)["min_eps"].to_numpy(dtype="float64", na_value=np.nan)
    predictions = evaluate(model, [(x, y, ids)], fgsm)
    for eps in budgets:
        rows = predictions[(predictions["noise"] == "fgsm") & (predictions["eps"] == eps)].sort_values("sample_id")
        fgsm_correct = rows["correct"].to_numpy(dtype=bool)
        assert (robust_at(min_eps, eps) <= fgsm_correct).all()  # broken by FGSM at eps => min_eps <= eps
        assert survival(min_eps, [eps])[0] == fgsm_correct.mean(), eps
    assert np.isfinite(min_eps).sum() >= 10  # the model is broken often enough for this to mean something


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pgd_linf", "mim"])
def test_iterative_search_on_a_trained_model(fashion_subset_model, name):
    model, x, y = fashion_subset_model
    x, y = x[:8], y[:8]
    noise = create_noise("min_eps", attacks=[name], init="4/255", search_steps=3, binsearch_steps=6, steps=3)
    found = noise.search(x, y, noise.conditions()[0], model)
    broken = torch.isfinite(found.min_eps) & (found.min_eps > 0)
    assert broken.sum() >= 4
    for i in broken.nonzero().flatten().tolist():
        assert _broken(model, name, found.min_eps[i], x, y, 3)[i]
        assert not _broken(model, name, found.below[i], x, y, 3)[i]


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.mark.slow
@pytest.mark.cli
def test_cli_writes_min_eps_and_curve_rows(workspace):
    import pyarrow.parquet as pq

    from robustart import store

    results, _ = workspace
    base = ["experiment=quickstart", "training.epochs=0.05", "evaluation.max_samples=16"]
    proc = run_cli(*base, "noise=min_eps", "noise.attacks=[fgsm]", "noise.init=4/255", "noise.search_steps=2",
                   "noise.binsearch_steps=3", "noise.curve_points=5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "robust_acc_vs_eps    5 points" in proc.stdout
    [run_dir] = run_dirs(results)
    predictions = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    attacked = predictions[predictions["noise"] == "min_eps"]
    assert len(attacked) == 16 and predictions[predictions["noise"] == "clean"]["min_eps"].isna().all()
    clean = predictions[predictions["noise"] == "clean"].set_index("sample_id")["correct"]
    assert ((attacked.set_index("sample_id")["min_eps"] == 0) == ~clean).all()
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    curve = metrics[metrics["metric"] == EPS_CURVE]
    assert curve["eps"].tolist() == pytest.approx([0, 4 / 255, 8 / 255, 12 / 255, 16 / 255])
    assert curve["value"].iloc[0] == clean.mean()
    assert {"min_eps_q10", "min_eps_q50", "min_eps_q90"} <= set(metrics["metric"])

    proc = run_cli(*base, "noise=pgd_linf", "noise.iteration_curve=true", "noise.steps=3", 'noise.eps=["8/255"]')
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next(d for d in run_dirs(results) if "-pgd_linf-" in d.name)
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    steps = metrics[metrics["metric"] == STEPS_CURVE].sort_values("steps")
    assert steps["steps"].tolist() == [0, 1, 2, 3] and steps["severity"].isna().all()
    robust = metrics[metrics["metric"] == "robust_acc"]
    assert robust["steps"].tolist() == [3] and robust["norm"].tolist() == ["Linf"]  # the attack's own protocol
    assert steps["value"].iloc[-1] == metrics[metrics["metric"] == "robust_acc"]["value"].item()
