"""Every recipe in conf/training trains: two steps each through a real run, alone and composed; bad recipes
are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robustart import model_zoo
from robustart.run import UserError, recipe_label, run
from robustart.training import save_checkpoint
from tests.conftest import CONF, compose_config

RECIPES = sorted(p.stem for p in (CONF / "training").glob("*.yaml"))
BATCH = 32
TRAIN_SAMPLES = 60_000  # Fashion-MNIST's training split


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """A robustart checkpoint of small_cnn (random weights) to distil from and to fine-tune."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ck") / "small_cnn-checkpoint"
    net = model_zoo.create_model("small_cnn").net
    save_checkpoint(folder, net, {"config_hash": "0123456789ab", "entry": "small_cnn", "num_classes": 10})
    return folder


def _overrides(recipe: str, checkpoint: Path, steps: int = 2) -> list[str]:
    extra = {
        "distillation": ["training.teacher=small_cnn", f"training.teacher_weights={checkpoint}"],
        "adv_finetune": [f"training.init_from={checkpoint}"],
        "drop_path": ["model=small_resnet"],
        "supernet": ["model=nas_subnet", "model.subnet=0", "model.bn_batches=1"],
    }.get(recipe, [])
    attack = ["training.adversarial.steps=2"] if _is_adversarial(recipe) else []
    return [
        f"training={recipe}", *extra, *attack, "noise=clean", "evaluation.max_samples=32",
        f"training.batch_size={BATCH}", f"training.epochs={steps * BATCH / TRAIN_SAMPLES}",
    ]  # fmt: skip


def _is_adversarial(recipe: str) -> bool:
    return recipe in ("pgd_at", "fgsm_at", "trades", "ares_at", "adv_finetune")


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_trains_two_steps_and_evaluates(recipe, workspace, small_checkpoint):
    _, cache = workspace
    cfg = compose_config(_overrides(recipe, small_checkpoint))
    result = run(cfg)
    assert not result.skipped and (result.run_dir / "done").is_file()
    [folder] = (cache / "checkpoints").iterdir()
    card = json.loads((folder / "checkpoint.json").read_text())
    assert card["final_metrics"]["steps"] == 2
    assert recipe_label(cfg.training) in folder.name
    technique = card["recipe"]["techniques"]
    bases = ("standard", "quickstart", "adamw_cosine", "supernet")
    assert technique == ({} if recipe in bases or recipe.startswith("baseline")
                         else {recipe: True})  # fmt: skip
    assert not (folder / "train_state.pt").exists()  # the finished checkpoint supersedes the resumable state


def test_techniques_compose_on_a_baseline(workspace, small_checkpoint):
    _, cache = workspace
    cfg = compose_config(
        ["training=[baseline_transformer,mixup,cutmix,randaugment,ema,drop_path]", "model=small_vit", "noise=clean",
         "evaluation.max_samples=32", f"training.batch_size={BATCH}", f"training.epochs={2 * BATCH / TRAIN_SAMPLES}"]
    )  # fmt: skip
    tcfg = cfg.training
    assert (tcfg.optimizer, tcfg.lr, tcfg.mixup, tcfg.cutmix, tcfg.ema, tcfg.drop_path_rate) == (
        "adamw",
        5e-4,
        0.2,
        1.0,
        0.9999,
        0.1,
    )
    assert recipe_label(tcfg) == "baseline_transformer+mixup+cutmix+randaugment+ema+drop_path"
    run(cfg)
    [folder] = (cache / "checkpoints").iterdir()
    assert folder.name.startswith(f"small_vit-fashion_mnist-{recipe_label(tcfg)}-")


def test_ablations_turn_the_baselines_techniques_off():
    cfg = compose_config(["training=[baseline_cnn,no_label_smoothing,no_ema]"])
    assert cfg.training.label_smoothing == 0.0 and cfg.training.ema is None
    assert compose_config(["training=baseline_cnn"]).training.ema == 0.9999


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training=pgd_at", "training.adversarial.eps=2"], "Linf eps must be at most 1"),
        (["training=pgd_at", "training.adversarial.eps=-0.1"], "eps must be"),
        (["training=pgd_at", "training.adversarial.method=cw"], "method must be one of"),
        (["training=randaugment", "training.augment=bogus"], "is not a timm policy"),
        (["training=distillation"], "training=distillation needs training.teacher"),
        (["training=adv_finetune"], "training=adv_finetune needs training.init_from"),
        (["training=[quickstart,augmix,mixup]"], "augmix_jsd does not combine"),
        (["training=[supernet,pgd_at]", "model=nas_subnet"], "does not combine with adversarial training"),
        (["training=drop_path"], "does not take ['drop_path_rate']"),
        (["training=quickstart", "training.adversarial.eps=0.1"], "no adversarial method"),
    ],
)
def test_bad_recipes_are_refused_before_training(overrides, message, workspace):
    with pytest.raises(UserError) as err:  # (a tiny budget, should one be wrongly accepted)
        run(compose_config([*overrides, "noise=clean", "training.epochs=0.001", "evaluation.max_samples=8"]))
    assert message in str(err.value)
    _, cache = workspace
    assert not list(cache.glob("checkpoints/*/model.safetensors"))


def test_a_teacher_with_another_class_count_is_refused(workspace, tmp_path):
    net = model_zoo.create_model("small_cnn", num_classes=5).net
    save_checkpoint(tmp_path / "five", net, {"config_hash": "ab", "entry": "small_cnn", "num_classes": 5})
    overrides = ["training=distillation", "training.teacher=small_cnn", f"training.teacher_weights={tmp_path / 'five'}"]
    with pytest.raises(UserError, match="predicts 5 classes but data fashion_mnist has 10"):
        run(compose_config([*overrides, "noise=clean"]))
