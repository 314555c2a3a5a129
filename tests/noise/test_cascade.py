"""The WCAR cascade: per-image attack randomness, equality with every attack on every image, and its cost."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robustart.evaluation import evaluate, summarize
from robustart.evaluation.metrics import worst_case_robustness
from robustart.noise import create_noise
from robustart.noise.adversarial.attack_base import parse_eps
from robustart.noise.adversarial.per_sample import RowDraws
from tests.conftest import run_cli, run_dirs

EPS = ["2/255", "8/255"]
# cheapest first; APGD-T (a random start per target class) is the strongest and dominates the cost, as
# AutoAttack does in the default set
ATTACKS = ["fgsm", "pgd_linf", "apgd_t"]
OPTIONS = {"pgd_linf": {"steps": 1}, "apgd_t": {"steps": 10, "target_classes": 5}}
N = 48  # images, in two batches


def _batches(x, y, size=N // 2):
    return [(x[i : i + size], y[i : i + size], torch.arange(i, min(i + size, len(x)))) for i in range(0, len(x), size)]


def test_worst_case_robustness_is_robustart_wcar():
    clean = [1, 1, 1, 1, 0]
    by_attack = {"fgsm": [1, 1, 0, 1, 1], "pgd": [1, 0, 1, 1, 1], "aa": [1, 1, 1, 0, 1]}
    est = worst_case_robustness(clean, by_attack)
    assert est.value == 0.25 and est.n == 4  # only image 0 survives all three, among the 4 clean-correct
    assert est.ci_low < 0.25 < est.ci_high
    with pytest.raises(ValueError, match="at least one attack"):
        worst_case_robustness(clean, {})
    with pytest.raises(ValueError, match="shape"):
        worst_case_robustness(clean, {"fgsm": [1, 1]})


def test_row_draws_give_each_image_its_own_stream_and_leave_other_draws_alone():
    images = torch.rand(6, 1, 4, 4)
    draws = RowDraws(seed=3)
    with draws.images(images):
        full = torch.rand(images.shape)
    with RowDraws(seed=3).images(images[[4, 1]]):
        part = torch.empty_like(images[[4, 1]]).uniform_(0, 1)
    assert torch.equal(full[[4, 1]], part)  # same image, same start, whatever its batch and draw call
    with draws.images(images):
        again = torch.rand(images.shape)
    assert not torch.equal(full, again)  # a second draw continues each image's stream
    torch.manual_seed(0)
    expected = torch.rand(3, 1, 1)
    torch.manual_seed(0)
    with RowDraws(seed=3).images(images):
        shared = torch.rand(3, 1, 1)  # not one slice per image: the global generator, as before
    assert torch.equal(shared, expected)


@pytest.mark.parametrize(
    "name, options",
    [
        ("pgd_linf", {"steps": 5}),
        pytest.param("apgd_ce", {"steps": 10}, marks=pytest.mark.slow),
        # Square at 8/255 breaks none of these images in 40 (or 300) queries, so its output would equal its input
        # and the check below would be empty: a larger budget makes it find adversarial images
        pytest.param("square", {"queries": 40, "eps": ["0.1"]}, marks=pytest.mark.slow),
    ],
)
def test_per_image_attacks_do_not_depend_on_the_other_images(fashion_subset_model, name, options):
    model, x, y = fashion_subset_model
    x, y, ids = x[:32], y[:32], torch.arange(32)
    noise = create_noise(name, **{"eps": ["8/255"], **options})
    noise.per_image = True
    [cond] = noise.conditions()
    rows = torch.tensor([3, 17, 18, 25, 31])
    full = noise.apply(x, y, ids, cond, model)
    part = noise.apply(x[rows], y[rows], ids[rows], cond, model)
    assert torch.equal(full[rows], part)
    assert (full - x).abs().max() > 0


@pytest.fixture(scope="module")
def cascade_runs(fashion_subset_model):
    """The cascade and the reference (every attack on every image, the same seeds) on real images."""
    model, x, y = fashion_subset_model
    runs = {}
    for cascade in (True, False):
        noise = create_noise("wcar", attacks=ATTACKS, eps=EPS, options=OPTIONS, cascade=cascade)
        runs[cascade] = (noise, evaluate(model, _batches(x[:N], y[:N]), noise))
    return runs


@pytest.mark.slow
def test_the_cascade_gives_exactly_the_wcar_of_every_attack_on_every_image(cascade_runs):
    (fast, fast_rows), (ref, ref_rows) = cascade_runs[True], cascade_runs[False]
    cols = ["noise", "condition", "eps", "sample_id", "pred", "correct", "margin"]
    assert fast_rows[cols].equals(ref_rows[cols])  # the same worst-case image for every sample
    assert fast.broken_by == ref.broken_by
    metrics = summarize(fast_rows).set_index(["metric", "eps"])["value"]
    clean = fast_rows[fast_rows["noise"] == "clean"].sort_values("sample_id")["correct"].to_numpy()
    for eps, by_attack in ref.outcomes.items():  # the reference ran every attack on every image
        assert all(len(outcome) == N for outcome in by_attack.values())
        correct = {name: [outcome[i] for i in range(N)] for name, outcome in by_attack.items()}
        assert metrics[("wcar", eps)] == worst_case_robustness(clean, correct).value
    # non-trivial: the cheap attacks broke images, and at some budget some images survived every attack while
    # others were broken (which budget does so depends on how the model trained with the installed libraries)
    firsts = [v for book in fast.broken_by.values() for v in book.values()]
    assert "fgsm" in firsts and any(0 < metrics[("wcar", parse_eps(e))] < 1 for e in EPS)


def _passes(report: dict) -> int:
    return sum(used["forward"] + used["backward"] for used in report["passes"].values())


@pytest.mark.slow
def test_the_cascade_costs_at_most_1_15_times_the_strongest_attack_alone(cascade_runs):
    fast, ref = cascade_runs[True][0], cascade_runs[False][0]
    report = fast.report()
    assert report["order"] == ATTACKS and report["cascade"] is True
    checks = sum(b["forward"] + b["backward"] for b in report["check_passes"].values())
    cascade_cost = sum(_passes({"passes": p}) for p in report["passes"].values()) + checks
    # in the reference, APGD-T attacked every image with the same seeds: the strongest attack alone
    strongest = _passes({"passes": ref.report()["passes"]["apgd_t"]})
    assert cascade_cost <= 1.15 * strongest, (cascade_cost, strongest)
    # every attack's passes are counted per image: FGSM is one forward and one backward pass an image
    fgsm = report["passes"]["fgsm"]
    clean_right = {eps: sum(v != "clean" for v in book.values()) for eps, book in fast.broken_by.items()}
    assert [u["images"] for u in fgsm.values()] == list(clean_right.values())  # FGSM sees every clean-right image
    assert all(u["forward"] == u["images"] == u["backward"] for u in fgsm.values())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"attacks": ["fgsm", "pgd_l2"]}, "must share one norm"),
        ({"attacks": ["fgsm", "fgsm"]}, "listed twice"),
        ({"attacks": ["fgsm", "nope"]}, "unknown noise 'nope'"),
        ({"attacks": ["imagenet_c"]}, "'imagenet_c' is not an attack"),
        ({"attacks": []}, "at least one attack"),
        ({"eps": ["9"]}, "Linf eps must be at most 1"),
        ({"options": {"mim": {"steps": 3}}, "attacks": ["fgsm"]}, "not in the list"),
        ({"options": {"fgsm": {"eps": ["1/255"]}}}, "set the budgets once"),
        ({"options": {"pgd_linf": {"steps": 0}}}, "steps must be >= 1"),
    ],
)
def test_bad_wcar_settings_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        create_noise("wcar", **options)


@pytest.mark.slow
@pytest.mark.cli
def test_wcar_runs_from_the_cli_and_reports_its_cost(workspace):
    import pandas as pd

    from robustart import store

    results, _ = workspace
    base = ["experiment=quickstart", "training.epochs=0.05", "evaluation.max_samples=32"]
    proc = run_cli(*base, "noise=wcar", "noise.attacks=[fgsm,pgd_linf,mim]", 'noise.eps=["8/255"]')
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    metrics = pd.read_parquet(run_dir / store.METRICS_FILE)
    wcar = metrics[metrics["metric"] == "wcar"]["value"].item()
    ar = metrics[(metrics["metric"] == "ar") & (metrics["noise"] == "wcar")]["value"].item()
    assert wcar == ar
    firsts = metrics[metrics["metric"] == "broken_first"].set_index("condition")["value"]
    assert set(firsts.index) == {"fgsm", "pgd_linf", "mim"}
    assert np.isclose(firsts.sum() + wcar, 1.0)  # every clean-correct image is broken first by one, or survives
    manifest = json.loads((run_dir / store.MANIFEST_FILE).read_text())
    report = manifest["noise_report"]
    assert report["order"] == ["fgsm", "pgd_linf", "mim"] and set(report["passes"]) == set(report["order"])
    assert manifest["validity_warnings"] == []
    assert "wcar" in proc.stdout


@pytest.mark.slow
@pytest.mark.cli
def test_wcar_with_its_default_attacks_runs_from_the_cli(workspace):
    results, _ = workspace
    proc = run_cli("experiment=quickstart", "training.epochs=0.05", "evaluation.max_samples=8", "noise=wcar",
                   'noise.eps=["8/255"]')  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["noise_report"]["order"] == ["fgsm", "pgd_linf", "mim", "autoattack"]
