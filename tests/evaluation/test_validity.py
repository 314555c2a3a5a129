"""Validity checks of adversarial evaluations: each check fires on the fault it names and stays quiet on a
sound attack."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from robustart.evaluation import evaluate
from robustart.evaluation.validity import ValidityChecks, norm_of, perturbation_norms
from robustart.noise import Condition, create_noise

COND = Condition("pgd_linf", "pgd_linf", eps=8 / 255)


def _checks(norm="Linf"):
    return ValidityChecks(lambda cond: norm)


def _logits(pred, classes=3):
    return nn.functional.one_hot(torch.as_tensor(pred), classes).float()


def test_perturbation_norms():
    delta = torch.zeros(2, 1, 2, 2)
    delta[0, 0, 0, 0], delta[0, 0, 1, 1] = 0.3, -0.4
    assert torch.allclose(perturbation_norms(delta, "Linf"), torch.tensor([0.4, 0.0], dtype=torch.float64))
    assert torch.allclose(perturbation_norms(delta, "L2"), torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert torch.allclose(perturbation_norms(delta, "L1"), torch.tensor([0.7, 0.0], dtype=torch.float64))


def test_a_sound_batch_raises_nothing():
    checks = _checks()
    images = torch.full((4, 1, 2, 2), 0.5)
    adv = images + torch.tensor([1, -1, 1, -1]).view(4, 1, 1, 1) * (8 / 255)
    labels = torch.tensor([0, 1, 2, 0])
    checks.check_batch(COND, images, adv, _logits([0, 1, 2, 1]), _logits([0, 2, 2, 1]), labels)
    assert checks.findings == {} and checks.warnings() == []


def test_each_batch_fault_is_flagged():
    checks = _checks()
    images = torch.full((4, 1, 2, 2), 0.5)
    adv = images.clone()
    adv[0, 0, 0, 0] += 9 / 255  # outside the 8/255 ball
    adv[1, 0, 0, 0] = 1.2  # outside [0, 1] (and the ball)
    labels = torch.tensor([0, 1, 2, 0])
    checks.check_batch(COND, images, adv, _logits([1, 1, 2, 1]), _logits([0, 1, 2, 0]), labels)  # 2 right -> 4
    found = {check: counts[0] for (check, _), counts in checks.findings.items()}
    assert found == {"outside_ball": 2, "out_of_range": 1, "robust_above_clean": 2}
    rows = pd.DataFrame(checks.metric_rows()).set_index("metric")
    assert rows.loc["warning_outside_ball", "value"] == 2 and rows.loc["warning_outside_ball", "n"] == 4
    assert any("outside_ball: pgd_linf/pgd_linf eps=0.0313725" in w for w in checks.warnings())


def test_l2_budgets_are_checked_in_their_norm():
    images = torch.full((1, 1, 2, 2), 0.5)
    adv = images + 0.24  # L2 norm 0.48, Linf 0.24
    fine, tight = _checks("L2"), _checks("L2")
    fine.check_batch(Condition("pgd_l2", "pgd_l2", eps=0.5), images, adv, _logits([0]), _logits([1]), torch.tensor([0]))
    tight.check_batch(
        Condition("pgd_l2", "pgd_l2", eps=0.4), images, adv, _logits([0]), _logits([1]), torch.tensor([0])
    )
    assert fine.findings == {} and [k for k, _ in tight.findings] == ["outside_ball"]


def test_model_checks_flag_a_randomised_model_and_zero_gradients():
    images, labels = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    random_model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3)).train()
    checks = _checks()
    checks.check_model(random_model, images, labels)
    assert [k for k, _ in checks.findings] == ["randomized_model"]

    class Constant(nn.Module):  # outputs that do not depend on the image: every gradient is zero
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return self.bias.expand(len(x), 3) + 0 * x.sum() * 0

    checks = _checks()
    checks.check_model(Constant(), images, labels)
    assert [k for k, _ in checks.findings] == ["zero_gradients"] and checks.findings[("zero_gradients", None)][0] == 8


def _rows(noise, eps, correct):
    return pd.DataFrame({"noise": noise, "condition": noise, "eps": eps, "sample_id": range(len(correct)),
                         "correct": correct})  # fmt: skip


def test_result_checks_flag_an_attack_that_breaks_nothing_or_weakens_with_budget():
    n = 20
    clean = _rows("clean", None, [True] * n).assign(condition="clean")
    clean["eps"] = pd.array([None] * n, dtype="Float64")
    weak = _rows("fgsm", 8 / 255, [True] * n)
    small = _rows("pgd_linf", 2 / 255, [True] * 5 + [False] * 15)
    large = _rows("pgd_linf", 8 / 255, [True] * 10 + [False] * 10)  # 5 more unbroken at the larger budget
    checks = _checks()
    checks.check_results(pd.concat([clean, weak, small, large], ignore_index=True))
    found = {(check, cond.noise): counts[0] for (check, cond), counts in checks.findings.items()}
    assert found == {("no_image_broken", "fgsm"): 20, ("not_monotone", "pgd_linf"): 5}


def test_a_real_attack_passes_every_check(fashion_subset_model):
    model, x, y = fashion_subset_model
    noise = create_noise("pgd_linf", eps=["2/255", "8/255"], steps=5)
    checks = ValidityChecks(lambda cond: norm_of(noise, cond))
    rows = evaluate(model, [(x[:64], y[:64], torch.arange(64))], noise, checks=checks)
    checks.check_results(rows)
    assert checks.model_checked and checks.warnings() == []


@pytest.mark.parametrize("name", ["pgd_l2", "apgd_l1"])
def test_norm_of_finds_the_attack_norm_in_suites(name):
    from omegaconf import OmegaConf

    from robustart.run import build_noise

    suite = build_noise(OmegaConf.create({"name": "suite", "members": {name: {}, "fgsm": {}}}))
    expected = {"pgd_l2": "L2", "apgd_l1": "L1"}[name]
    assert norm_of(suite, Condition(name, name, eps=1.0)) == expected
    assert norm_of(suite, Condition("fgsm", "fgsm", eps=1.0)) == "Linf"
