"""conf/experiment: every study composes, every value its sweep (hydra.sweeper.params) names makes a valid run
config, and a shrunk family comparison sweeps through the command line."""

from __future__ import annotations

import json
import math
from functools import cache

import pytest
from omegaconf import OmegaConf

from robustart import model_zoo, store
from robustart.model_zoo import nas
from robustart.noise.natural import BENCHMARK_CORRUPTIONS
from robustart.run import build_noise, check_training, recipe_label
from tests.conftest import CONF, compose_config, run_cli, run_dirs, sweep_jobs, sweep_params, swept_values

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
#: the studies that sweep; quickstart is a single run
STUDIES = ["family_comparison", "family_comparison_small", "family_comparison_cifar", "training_techniques",
           "nas_robustness", "shape_bias"]  # fmt: skip


@cache
def family(model: str) -> str:
    return model_zoo.get_entry(model).family


def check_runnable(cfg) -> None:
    """What a run checks before any work, short of data and weights: a zoo model (and subnet), a noise that builds
    its conditions, a recipe the training loop accepts."""
    assert cfg.model.name in model_zoo.list_models(), f"model {cfg.model.name} is not in the zoo"
    if cfg.model.subnet is not None:
        nas.decode(int(cfg.model.subnet))  # raises for an id outside the search space
    conditions = build_noise(cfg.noise).conditions()
    assert conditions or cfg.noise.name == "clean", f"noise {cfg.noise.name} has no conditions"
    if cfg.training is not None:
        check_training(cfg, "cpu")


def test_every_study_is_listed():
    assert set(STUDIES) <= set(EXPERIMENTS)
    assert not sweep_params("quickstart"), "the quickstart is one run; it must not sweep"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_to_a_runnable_config(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.experiment == experiment
    check_runnable(cfg)


@pytest.mark.parametrize(
    "experiment",  # shape_bias sweeps 75 models: about 30 s of composing, so in the slow tier
    [pytest.param(e, marks=pytest.mark.slow) if e == "shape_bias" else e for e in EXPERIMENTS if e != "quickstart"],
)
def test_every_swept_value_composes_to_a_runnable_config(experiment):
    values = swept_values(experiment)
    assert values, f"{experiment} sweeps nothing: set hydra.sweeper.params"
    for key, options in values.items():
        assert len(options) == len(set(options)), f"{key}: a value is swept twice"
        for value in options:
            cfg = compose_config([f"experiment={experiment}", f"{key}={value}"])
            assert cfg.experiment == experiment
            if key in ("model", "noise"):  # the option's own YAML, which may preset a zoo entry (nas_subnet_smallest)
                declared = OmegaConf.load(CONF / key / f"{value}.yaml").get("name", value)
                assert cfg[key].name == declared, f"{key}={value} composed {cfg[key].name}"
            check_runnable(cfg)
    jobs = sweep_jobs(experiment)
    assert len(jobs) == math.prod(len(v) for v in values.values())
    assert len({tuple(sorted(job)) for job in jobs}) == len(jobs)


def test_command_line_values_replace_a_swept_list():
    jobs = sweep_jobs("family_comparison_small", ("model=small_cnn,small_vit", "training.epochs=0.01"))
    assert len(jobs) == 2 * len(swept_values("family_comparison_small")["noise"])
    assert {o for job in jobs for o in job if o.startswith("model=")} == {"model=small_cnn", "model=small_vit"}
    cfg = compose_config(jobs[0])
    assert cfg.training.epochs == 0.01


def test_family_comparison_covers_every_family_on_imagenet_with_pretrained_weights():
    values = swept_values("family_comparison")
    assert {family(m) for m in values["model"]} == set(model_zoo.FAMILIES)
    assert {"clean", "pgd_linf", "imagenet_c", "imagenet_s"} <= set(values["noise"])
    for model in values["model"]:
        cfg = compose_config(["experiment=family_comparison", f"model={model}", "data.root=/data/imagenet/val"])
        assert cfg.model.weights == "pretrained" and cfg.training is None
        assert cfg.data.name == "imagenet" and cfg.data.root == "/data/imagenet/val"
        assert cfg.evaluation.max_samples is None  # the whole val set, as the published numbers use


def test_shape_bias_sweeps_every_imagenet_zoo_model_with_its_pretrained_weights():
    values = swept_values("shape_bias")
    # the zoo less its Fashion-MNIST (small_*), CIFAR-10 and supernet/subnet entries: the 1000-class ImageNet ones
    others = {n for n in model_zoo.list_models() if n.startswith(("small_", "nas_")) or n == "cifar_resnet18"}
    assert set(values["model"]) == set(model_zoo.list_models()) - others
    assert {family(m) for m in values["model"]} == set(model_zoo.FAMILIES)
    for name in ("alexnet", "vit_b", "resmlp_12", "hardcorenas_a"):  # one per family (the sweep composes them all)
        assert model_zoo.get_metadata(name).num_classes == 1000
    cfg = compose_config(["experiment=shape_bias", "model=vit_b"])
    assert cfg.model.weights == "pretrained" and cfg.data.name == "cue_conflict" and cfg.noise.name == "clean"
    assert cfg.training is None and cfg.evaluation.max_samples is None


def test_family_comparison_small_trains_small_input_models_of_every_trained_family():
    values = swept_values("family_comparison_small")
    assert {family(m) for m in values["model"]} == {"cnn", "transformer", "mlp"}
    for model in values["model"]:
        meta = model_zoo.get_metadata(model)
        assert meta.input_size == (1, 28, 28) and meta.num_classes == 10, model
        cfg = compose_config(["experiment=family_comparison_small", f"model={model}"])
        assert cfg.data.name == "fashion_mnist" and cfg.model.weights == "random"
        assert cfg.training is not None and cfg.training.epochs <= 1
        assert 0 < cfg.evaluation.max_samples <= 1000


def test_training_techniques_sweeps_distinct_recipes_on_one_baseline():
    values = swept_values("training_techniques")
    assert "model" not in values
    labels = []
    for recipe in values["training"]:
        cfg = compose_config(["experiment=training_techniques", f"training={recipe}"])
        assert cfg.training.name == "baseline_cnn" and cfg.training.epochs == 1  # the shortened baseline
        labels.append(recipe_label(cfg.training))
        # the model takes the recipe's regularisers (dropout, drop path)
        model_zoo.create_model(
            cfg.model.name, drop_rate=cfg.training.drop_rate, drop_path_rate=cfg.training.drop_path_rate
        )
    assert len(set(labels)) == len(labels) and "baseline_cnn" in labels
    assert {"baseline_cnn+mixup", "baseline_cnn+pgd_at", "baseline_cnn+augmix"} <= set(labels)


def test_nas_robustness_sweeps_subnets_of_one_supernet():
    values = swept_values("nas_robustness")
    ids = [int(i) for i in values["model.subnet"]]
    assert {0, nas.num_subnets() - 1} <= set(ids)
    assert all(0 <= i < nas.num_subnets() for i in ids)
    cfg = compose_config(["experiment=nas_robustness", f"model.subnet={ids[-1]}"])
    assert cfg.model.name == "nas_subnet" and cfg.training.sandwich_random, "subnets are cut from a trained supernet"


@pytest.mark.slow  # four CLI runs (two models trained 5 steps, two noises): 2.5 to 4 minutes on 2 busy cores
@pytest.mark.cli
def test_family_comparison_small_sweeps_through_the_command_line(workspace):
    results, cache_dir = workspace
    models, noises = ["small_cnn", "small_vit"], swept_values("family_comparison_small")["noise"]
    proc = run_cli(
        "-m",
        "experiment=family_comparison_small",
        f"model={','.join(models)}",
        "training.epochs=0.01",
        "evaluation.max_samples=16",
        "evaluation.batch_size=16",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Launching {len(models) * len(noises)} jobs" in proc.stdout + proc.stderr
    dirs = run_dirs(results)
    landed = set()
    for run_dir in dirs:
        assert (run_dir / store.DONE_FILE).is_file(), run_dir
        config = json.loads((run_dir / "manifest.json").read_text())["config"]
        assert config["experiment"] == "family_comparison_small"
        landed.add((config["model"]["name"], config["noise"]["name"]))
    assert landed == {(m, n) for m in models for n in noises} and len(dirs) == len(landed)
    # each model trained once, its checkpoint reused by its other noise
    checkpoints = sorted(p.name for p in (cache_dir / "checkpoints").iterdir() if p.is_dir())
    assert [c.split("-")[0] for c in checkpoints] == models


def test_family_comparison_cifar_trains_every_family_in_colour_under_one_recipe():
    values = swept_values("family_comparison_cifar")
    assert set(values["noise"]) == {"cifar_family", "imagenet_s"}
    recipes = set()
    for model in values["model"]:
        cfg = compose_config(["experiment=family_comparison_cifar", f"model={model}"])
        meta = model_zoo.get_metadata(cfg.model.name, in_chans=3, img_size=32, subnet=cfg.model.subnet)
        assert meta.num_classes == 10 and meta.input_size[0] == 3, model
        assert cfg.data.name == "cifar10" and cfg.model.weights == "random" and cfg.evaluation.max_samples == 1000
        recipes.add(recipe_label(cfg.training) + repr(sorted(cfg.training.items())))
    assert len(recipes) == 1  # one aligned recipe for every family
    assert {family(compose_config([f"model={m}"]).model.name) for m in values["model"]} == set(model_zoo.FAMILIES)
    assert compose_config(["model=nas_subnet_smallest"]).model.subnet == 0  # the smallest subnet of the space
    members = compose_config(["experiment=family_comparison_cifar"]).noise.members
    assert list(members.pgd_linf.eps) == ["2/255", "8/255"] and members.pgd_linf.steps == 10
    assert sorted(members.imagenet_c.corruptions) == sorted(BENCHMARK_CORRUPTIONS)
    assert list(members.imagenet_c.severities) == [1, 2, 3, 4, 5] and members.imagenet_c.params == "auto"
