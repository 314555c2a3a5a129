"""Transfer attacks (``noise=transfer``): RobustART's transfer ASR, the noise on real models, and the run's
source models (a zoo name or a finished run) with their errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from robustart import model_zoo, store
from robustart.evaluation import evaluate, noise_rows, summarize
from robustart.evaluation.metrics import transfer_asr
from robustart.noise import Condition, create_noise
from robustart.run import UserError, run
from tests.conftest import compose_config

# ------------------------------------------------------------------------------------------------- the formula


def test_transfer_asr_on_hand_made_arrays():
    #                 samples:  0  1  2  3  4  5  6
    source_correct = [1, 1, 1, 1, 0, 0, 1]
    target_correct = [1, 1, 1, 0, 1, 0, 1]
    target_adv_correct = [0, 1, 0, 0, 0, 0, 1]
    # both correct when clean: 0, 1, 2, 6; fooled among them: 0, 2
    est = transfer_asr(source_correct, target_correct, target_adv_correct)
    assert (est.value, est.n) == (0.5, 4)
    assert est.ci_low < 0.5 < est.ci_high
    assert transfer_asr([1, 1, 1], [1, 1, 1], [0, 0, 0]).value == 1.0
    assert transfer_asr([1, 1, 1], [1, 1, 1], [1, 1, 1]).value == 0.0
    nothing = transfer_asr([0, 1], [1, 0], [0, 0])  # no image both classify correctly
    assert nothing.n == 0 and math.isnan(nothing.value)
    with pytest.raises(ValueError, match="shapes differ"):
        transfer_asr([1, 1], [1, 1], [1])


def test_metric_rows_per_budget_from_hand_made_predictions():
    noise = create_noise("transfer", source=torch.nn.Linear(1, 2), eps=["2/255", "8/255"])
    noise.source_correct = {0: True, 1: True, 2: False, 3: True}
    rows = [("clean", "clean", None, i, c) for i, c in enumerate([True, True, True, False])]
    rows += [("transfer", "fgsm", 2 / 255, i, c) for i, c in enumerate([True, True, False, False])]
    rows += [("transfer", "fgsm", 8 / 255, i, c) for i, c in enumerate([False, False, False, False])]
    predictions = pd.DataFrame(rows, columns=["noise", "condition", "eps", "sample_id", "correct"])
    out = noise_rows.metric_rows(noise, predictions).set_index("eps")
    assert list(out["metric"]) == ["transfer_asr"] * 2 and set(out["condition"]) == {"fgsm"}
    # both correct when clean: samples 0 and 1
    assert out.loc[2 / 255, ["value", "n"]].tolist() == [0.0, 2]
    assert out.loc[8 / 255, ["value", "n"]].tolist() == [1.0, 2]


def test_bad_transfer_settings():
    with pytest.raises(ValueError, match="'imagenet_c' cannot craft the examples"):
        create_noise("transfer", attack="imagenet_c")
    with pytest.raises(ValueError, match="'transfer' cannot craft the examples"):
        create_noise("transfer", attack="transfer")
    with pytest.raises(ValueError, match=r"set noise\.eps, not noise\.attack_options\.eps"):
        create_noise("transfer", attack_options={"eps": ["1/255"]})
    with pytest.raises(ValueError, match="takes no option"):
        create_noise("transfer", attack="fgsm", attack_options={"steps": 3})
    unbound = create_noise("transfer")
    with pytest.raises(ValueError, match="no source model"):
        unbound.apply(torch.rand(1, 1, 28, 28), torch.tensor([0]), torch.tensor([0]), unbound.conditions()[0])


def test_defaults_are_robustarts_fgsm_budgets_and_the_attacks_options_pass_through():
    noise = create_noise("transfer", source="resnet50")
    assert noise.attack.name == "fgsm" and noise.source_name == "resnet50"
    assert [c.eps * 255 for c in noise.conditions()] == pytest.approx([0.5, 2, 8])
    pgd = create_noise("transfer", attack="pgd_l2", attack_options={"steps": 3}, seed=4)
    assert [c.eps for c in pgd.conditions()] == [0.5, 2.0, 8.0] and pgd.norm == "L2"  # pgd_l2's own defaults
    assert pgd.attack.seed == 4 and {(c.noise, c.name) for c in pgd.conditions()} == {("transfer", "pgd_l2")}


# --------------------------------------------------------------------------------------------- real models


def test_source_equal_to_target_is_the_white_box_attack(fashion_subset_model):
    """With the attacked model as its own source, the transferred examples are the white-box ones (FGSM, and
    PGD with its seeded random start), and transfer_asr is the white-box attack success rate, 1 - AR."""
    model, x, y = fashion_subset_model
    x, y, ids = x[:64], y[:64], torch.arange(64)
    for attack, options in (("fgsm", {}), ("pgd_linf", {"steps": 3})):
        white = create_noise(attack, eps=["2/255", "8/255"], seed=2, **options)
        transfer = create_noise("transfer", source=model, attack=attack, eps=["2/255", "8/255"], seed=2,
                                attack_options=options)  # fmt: skip
        for cond in white.conditions():
            mine = Condition("transfer", cond.name, eps=cond.eps)
            assert torch.equal(transfer.apply(x, y, ids, mine, model), white.apply(x, y, ids, cond, model))

    transfer = create_noise("transfer", source=model, eps=["2/255", "8/255"])
    predictions = evaluate(model, [(x[:32], y[:32], ids[:32]), (x[32:], y[32:], ids[32:])], transfer)
    rows = summarize(predictions).set_index(["metric", "eps"])["value"]
    asr = noise_rows.metric_rows(transfer, predictions).set_index("eps")
    clean = predictions[predictions["noise"] == "clean"]
    assert transfer.report()["source_top1"] == pytest.approx(clean["correct"].mean())
    for eps, row in asr.iterrows():
        assert row["value"] == pytest.approx(1 - rows[("ar", eps)]) and row["n"] == clean["correct"].sum()
    # FGSM at 8/255 breaks a share of an undefended CNN's images (18% of the fixture model's correct ones)
    assert asr["value"].iloc[-1] > 0.1


@pytest.mark.slow
def test_another_source_transfers_less_than_the_white_box_attack(fashion_subset_model):
    """Examples crafted on an untrained network barely move a trained one; the source's clean accuracy is
    recorded per sample, so the ASR counts only images both models get right."""
    model, x, y = fashion_subset_model
    x, y, ids = x[:128], y[:128], torch.arange(128)
    torch.manual_seed(3)
    stranger = model_zoo.create_model("small_cnn")
    white = create_noise("transfer", source=model, eps=["8/255"])
    other = create_noise("transfer", source=stranger, eps=["8/255"])
    asr = {}
    for name, noise in (("white", white), ("other", other)):
        predictions = evaluate(model, [(x, y, ids)], noise)
        asr[name] = noise_rows.metric_rows(noise, predictions).iloc[0]
    with torch.no_grad():
        both = ((stranger(x).argmax(1) == y) & (model(x).argmax(1) == y)).sum().item()
    assert asr["other"]["n"] == both < asr["white"]["n"]
    assert asr["other"]["value"] < asr["white"]["value"]


# ----------------------------------------------------------------------------------------------- the run


@pytest.fixture
def trained_weights(tmp_path, fashion_subset_model):
    from safetensors.torch import save_file

    path = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in fashion_subset_model[0].net.state_dict().items()}, str(path))
    return path


def _values(result, metric: str) -> pd.Series:
    rows = result.metrics[result.metrics["metric"] == metric]
    return rows.set_index("eps")["value"].sort_index()


def test_transfer_runs_from_a_zoo_source_and_from_a_finished_run(workspace, trained_weights):
    """Source = target, named three ways (the white-box run's folder, its run id, the zoo model with the same
    weights file): the target's robust accuracy equals the white-box FGSM run's at every budget, transfer_asr
    is 1 - AR, and each naming is a run of its own with the source described in the manifest."""
    base = ["model=small_cnn", f"model.weights={trained_weights}", "data=fashion_mnist",
            "evaluation.max_samples=128", "evaluation.batch_size=64"]  # fmt: skip
    white = run(compose_config([*base, "noise=fgsm"]))
    sources = [f"noise.source={white.run_dir}", f"noise.source={white.run_dir.name.rsplit('-', 1)[1]}",
               "noise.source=small_cnn", f"noise.source_weights={trained_weights}"]  # fmt: skip
    results = [run(compose_config([*base, "noise=transfer", *s])) for s in (sources[:1], sources[1:2], sources[2:])]
    assert len({r.run_dir for r in results}) == 3
    for result in results:
        assert not result.skipped
        pd.testing.assert_series_equal(_values(result, "robust_acc"), _values(white, "robust_acc"))
        pd.testing.assert_series_equal(_values(result, "transfer_asr"), 1 - _values(white, "ar"))
        assert (result.run_dir / store.DONE_FILE).is_file()
    report = json.loads((results[0].run_dir / store.MANIFEST_FILE).read_text())["noise_report"]
    assert report["source"]["run_id"] == white.run_dir.name.rsplit("-", 1)[1]
    assert report["source"]["weights"] == "file:trained.safetensors" and report["attack"] == "fgsm"
    stored = pd.read_parquet(results[2].run_dir / store.METRICS_FILE)
    assert (stored["metric"] == "transfer_asr").sum() == 3 and stored["ci_low"].notna().all()


def test_bad_sources_are_user_errors(workspace, tmp_path):
    base = ["model=small_cnn", "model.weights=random", "data=fashion_mnist", "evaluation.max_samples=16"]
    cases = [
        (["noise=transfer"], "noise=transfer needs a source model"),
        (["noise=transfer", "noise.source=resnet5"], "unknown noise.source='resnet5': neither a zoo model"),
        (["noise=transfer", "noise.source=efficientnet_lite0"], "has 1000 classes but model small_cnn has 10"),
        (["noise=transfer", "noise.source=small_cnn"], "has no published pretrained weights"),
        (["noise=transfer", f"noise.source={tmp_path}"], "is not a finished run"),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            run(compose_config([*base, *overrides]))


def test_a_source_run_of_random_weights_is_refused(workspace):
    base = ["model=small_cnn", "model.weights=random", "data=fashion_mnist", "evaluation.max_samples=16"]
    random_run = run(compose_config([*base, "noise=clean"]))
    with pytest.raises(UserError, match="untrained random weights, which cannot be rebuilt"):
        run(compose_config([*base, "noise=transfer", f"noise.source={random_run.run_dir}"]))
    with pytest.raises(UserError, match=r"source_weights and noise\.source_sha256 do not apply"):
        run(compose_config([*base, "noise=transfer", f"noise.source={random_run.run_dir}",
                            "noise.source_weights=random"]))  # fmt: skip
