"""The plan stage: build data, noise and model from a config and check every input a user can get wrong.

Everything is checked in :func:`prepare` before any work (training or evaluation) starts, and raised as
:class:`~robustart.errors.UserError`; the command line turns that into one message and exit status 2.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from robustart import store
from robustart.errors import UserError
from robustart.identity import (
    TRAINING_ADDED,
    build_noise,
    model_kind,
    model_label,
    noise_options,
    recipe_label,
    training_key,
)
from robustart.loading import load_data
from robustart.locking import check_if_locked
from robustart.model_options import check_model_family, check_model_options
from robustart.tracking import check_logger

log = logging.getLogger("robustart")


def validate_config(cfg: DictConfig) -> None:
    """Refuse keys that no schema declares, also those added with ``+`` (which Hydra lets through): a misspelt
    option must not silently change nothing but the run id. Noise options are checked by their own schemas."""
    import dataclasses
    import typing

    from robustart.config import Config

    def walk(node, schema, path: str) -> None:
        hints = typing.get_type_hints(schema)
        names = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in hints:
                raise UserError(f"unknown option {path}{key}; the options of {path.rstrip('.') or 'the config'} are: "
                                f"{', '.join(names)}")  # fmt: skip
            inner = [t for t in typing.get_args(hints[key]) or (hints[key],) if dataclasses.is_dataclass(t)]
            if inner and isinstance(node[key], DictConfig):
                walk(node[key], inner[0], f"{path}{key}.")

    walk({k: cfg[k] for k in cfg if k != "noise"}, Config, "")
    check_if_locked(cfg.evaluation.get("if_locked", "wait"))  # wait or exit, before the run's lock is looked at
    check_model_options(cfg.model)  # which options a zoo entry, model=timm and model=custom take
    noise = cfg.noise
    extra = sorted(set(noise) - {"name", "members"}) if "members" in noise else []
    if extra:
        raise UserError(f"unknown option noise.{extra[0]} of noise suite {noise.name!r}; a suite takes name, members")
    noise_options(noise)  # each noise's options against its schema


@dataclass
class Plan:
    """Everything built and checked before work starts."""

    cfg: DictConfig
    run_id: str
    run_dir: Path
    device: Any
    noise: Any
    eval_data: Any
    data_info: Any
    model: Any
    train_data: Any = None
    checkpoint: dict | None = None  # card of the checkpoint used (existing or to be trained)
    checkpoint_dir: Path | None = None
    #: the zoo entry that training trains (``nas_supernet`` when the model is a subnet cut from it)
    trained_entry: str | None = None
    teacher: Any = None  # the model distilled from (training.teacher)
    state_file: Path | None = None  # the resumable training state
    world: Any = None  # training.distributed.World: this process among the training processes
    notes: list[str] = field(default_factory=list)
    baseline: Any = None  # metrics of the run that normalises sequence metrics (nmfp, mt5d)


def resolve_device(name: str, local_rank: int = 0):
    """The device ``evaluation.device`` names; ``auto`` and ``cuda`` take this process's GPU when several train."""
    import torch

    if name in ("auto", "cuda") and torch.cuda.is_available():
        # a Slurm task bound to its own GPU (--gpus-per-task) sees that one GPU alone, as cuda:0
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "auto":
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"evaluation.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"evaluation.device={name!r} but no CUDA device is available; use evaluation.device=cpu")
    return device


def prepare(cfg: DictConfig, run_id: str, run_dir: Path) -> Plan:
    """Build data, noise and model and check every user input; raises :class:`UserError`."""
    try:
        return _prepare(cfg, run_id, run_dir)
    except UserError:
        raise
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError, OmegaConfBaseException) as err:
        raise UserError(str(err)) from None


def _prepare(cfg: DictConfig, run_id: str, run_dir: Path) -> Plan:
    import torch

    from robustart import model_zoo
    from robustart.evaluation.precision import check_precision
    from robustart.models import build_model, check_factory, model_metadata
    from robustart.training import find_checkpoint
    from robustart.transfer import bind_sources

    ev = cfg.evaluation
    if ev.max_samples is not None and ev.max_samples < 1:
        raise UserError(f"evaluation.max_samples must be a positive number or null (all), got {ev.max_samples}")
    if ev.batch_size < 1:
        raise UserError(f"evaluation.batch_size must be >= 1, got {ev.batch_size}")
    from robustart.training import distributed

    device = resolve_device(ev.device, distributed.environment().local_rank)
    check_precision(ev.amp, device)
    check_logger(cfg)
    noise = build_noise(cfg.noise)
    if "members" in cfg.noise and "imagenet_p" in noise_options(cfg.noise):
        raise UserError("noise=imagenet_p scores frame sequences and cannot be a member of a suite; run it alone")
    baseline = _baseline_metrics(cfg, noise.baseline_run) if getattr(noise, "baseline_run", None) else None
    cache_dir = Path(os.path.expanduser(cfg.paths.cache_dir))
    model_name, kind = model_label(cfg.model), model_kind(cfg.model)
    if kind == "zoo":
        model_zoo.registry.get_entry(model_name)  # unknown names fail here with the list of valid ones
    elif cfg.training is not None:
        raise UserError(f"training=... trains zoo entries; model={kind} is evaluated as it is: drop training=...")
    elif kind == "timm":
        check_model_family(cfg.model)
        model_metadata(cfg.model)  # an unknown tag or option fails here, before data is read
    else:
        check_model_family(cfg.model)
        check_factory(cfg.model)  # the import, the factory and its kwargs, before data is read

    trained = _trained_entry(cfg, cache_dir) if kind == "zoo" else None
    eval_data, info, train_data = load_data(cfg, cache_dir, noise, need_train=trained is not None)
    data_classes, data_chans = info.num_classes, info.in_chans

    # model: trained by robustart (cached by training hash), or with the weights the config names
    overrides = {"num_classes": cfg.model.num_classes, "in_chans": cfg.model.in_chans, "img_size": cfg.model.img_size,
                 "subnet": cfg.model.subnet}  # fmt: skip
    checkpoint, checkpoint_dir = None, None
    if cfg.training is not None:
        overrides["num_classes"] = overrides["num_classes"] or data_classes
        overrides["in_chans"] = overrides["in_chans"] or data_chans
        train_hash, _ = training_key(cfg)
        label = recipe_label(cfg.training)
        checkpoint_dir = cache_dir / "checkpoints" / f"{trained}-{cfg.data.name}-{label}-{train_hash}"
        card = find_checkpoint(checkpoint_dir)
        if card is not None:
            model = model_zoo.create_model(model_name, weights=str(checkpoint_dir), **overrides)
            checkpoint = card
        else:  # trained in execute(); a subnet is cut from its supernet afterwards
            check_training(cfg, device)
            torch.manual_seed(cfg.training.seed)
            own = overrides if trained == model_name else {k: v for k, v in overrides.items() if k != "subnet"}
            model_zoo.get_metadata(model_name, **overrides)  # a bad subnet id fails now, not after training
            tcfg = cfg.training
            regularisers = {"drop_rate": tcfg.drop_rate, "drop_path_rate": tcfg.drop_path_rate}
            init = "random"
            if tcfg.init_from is not None:
                init = checkpoint_path(tcfg.init_from, cache_dir, "training.init_from")
            model = model_zoo.create_model(trained, weights=init, **own, **regularisers)
            teacher = _teacher(cfg, cache_dir, data_classes, data_chans)
            state_file = Path(tcfg.resume).expanduser() if tcfg.resume else checkpoint_dir / STATE_FILE
            if tcfg.resume and not state_file.is_file():
                raise UserError(f"training.resume={tcfg.resume}: no such training state file")
            if state_file.is_file():
                from robustart.training import load_state

                load_state(state_file, train_hash)  # a state of another config is refused now
    elif kind != "zoo":  # any timm model, or a factory of one's own
        sample = next(iter(eval_data.values())) if isinstance(eval_data, dict) else eval_data
        model = build_model(cfg.model, sample, info, checkpoint_path(cfg.model.weights, cache_dir), cfg.seed)
    else:
        weights = checkpoint_path(cfg.model.weights, cache_dir)
        model = model_zoo.create_model(model_name, weights=weights, sha256=cfg.model.sha256, **overrides)
    if info.class_groups is not None and model.metadata.num_classes != 1000:
        raise UserError(
            f"data={cfg.data.name} turns the 1000 ImageNet-1k classes into {len(info.class_groups)} category "
            f"decisions, but model {model_name} has {model.metadata.num_classes} outputs; use a 1000-class ImageNet "
            "model"
        )
    if info.class_mask is not None and model.metadata.num_classes != data_classes:
        raise UserError(
            f"data={cfg.data.name} restricts the outputs of an ImageNet-1k model to its {len(info.class_mask)} "
            f"classes, but model {model_name} has {model.metadata.num_classes} outputs; use a 1000-class ImageNet model"
        )
    if model.metadata.num_classes != data_classes:
        fix = (f"make the factory return {data_classes} logits (+model.kwargs.NAME=VALUE)" if kind == "custom" else
               f"set model.num_classes={data_classes} with matching weights, or train with training=...")  # fmt: skip
        raise UserError(
            f"model {model_name} has {model.metadata.num_classes} classes but data {cfg.data.name} has {data_classes}; "
            + fix
        )
    if model.metadata.in_chans != data_chans:
        raise UserError(
            f"model {model_name} takes {model.metadata.in_chans} channels but data {cfg.data.name} has {data_chans}; "
            f"set model.in_chans={data_chans}"
        )
    bind_sources(cfg, noise, model, info.class_mask)  # transfer attacks: their source models, checked here
    if getattr(noise, "sequences", False) and cfg.data.name == "imagenet":
        noise.crop = model.metadata.input_size[-1]  # frames come uncropped (see load_data)
    plan = Plan(cfg, run_id, run_dir, device, noise, eval_data, info, model, train_data, checkpoint, checkpoint_dir,
                trained)  # fmt: skip
    plan.baseline = baseline
    if cfg.training is not None and checkpoint is None:
        plan.teacher, plan.state_file = teacher, state_file
    return plan


STATE_FILE = "train_state.pt"


def check_training(cfg: DictConfig, device) -> None:
    """Refuse a recipe that cannot train (bad technique options) before data or models are built."""
    from robustart.training import check_recipe

    needs = {  # technique -> (option it needs, what to give)
        "distillation": ("teacher", "a zoo model to distil from (and training.teacher_weights=...)"),
        "adv_finetune": ("init_from", "the weights to start from: pretrained, a file, a checkpoint folder or "
                         "robustart:HASH"),
    }  # fmt: skip
    for technique, (key, what) in needs.items():
        if cfg.training.techniques.get(technique) and cfg.training.get(key) is None:
            raise UserError(f"training={technique} needs training.{key}=... : {what}")
    tcfg = OmegaConf.to_container(cfg.training, resolve=True)
    if tcfg["adversarial"]["method"] is None and tcfg["adversarial"] != TRAINING_ADDED["adversarial"]:
        raise UserError(
            "training.adversarial options are set but no adversarial method: compose pgd_at, fgsm_at, trades, ares_at "
            "or adv_finetune (training=[...,pgd_at]) or set training.adversarial.method"
        )
    tcfg["adversarial"] = adversarial_options(tcfg)
    teacher = tcfg.pop("teacher") is not None
    check_recipe(**tcfg, device=device, custom_loss=tcfg["sandwich_random"] is not None, teacher=teacher)
    if tcfg["checkpoint_every"] < 0:
        raise UserError(f"training.checkpoint_every must be >= 0 (0: never), got {tcfg['checkpoint_every']}")


def adversarial_options(tcfg: dict) -> dict | None:
    """The recipe's adversarial training options, or None when it has none."""
    return tcfg["adversarial"] if tcfg["adversarial"]["method"] is not None else None


def _teacher(cfg: DictConfig, cache_dir: Path, data_classes: int, data_chans: int):
    """The model to distil from (``training.teacher``), checked to fit the data, or None."""
    from robustart import model_zoo

    tcfg = cfg.training
    if tcfg.teacher is None:
        return None
    if not 0 <= tcfg.distill_alpha <= 1 or not tcfg.distill_temperature > 0:
        raise UserError("training.distill_alpha must be in [0, 1] and training.distill_temperature > 0")
    weights = checkpoint_path(tcfg.teacher_weights, cache_dir, "training.teacher_weights")
    classes = (model_zoo.cards.read_card(weights) or {}).get("num_classes")
    if classes is not None and classes != data_classes:
        raise UserError(
            f"training.teacher={tcfg.teacher} (weights {tcfg.teacher_weights}) predicts {classes} classes but data "
            f"{cfg.data.name} has {data_classes}; distil from a teacher trained on the same classes"
        )
    try:
        teacher = model_zoo.create_model(tcfg.teacher, weights=weights, num_classes=data_classes, in_chans=data_chans)
    except ValueError as err:
        raise UserError(
            f"training.teacher={tcfg.teacher} with weights {tcfg.teacher_weights} does not fit data {cfg.data.name} "
            f"({data_classes} classes, {data_chans} channels): {err}"
        ) from None
    log.info("distilling from %s (%s)", tcfg.teacher, teacher.metadata.weights)
    return teacher


def checkpoint_path(weights: str, cache_dir: Path, option: str = "model.weights") -> str:
    """``robustart:<hash>`` names a checkpoint in the cache by its training config hash."""
    if not weights.startswith("robustart:"):
        return weights
    key = weights.removeprefix("robustart:")
    matches = sorted((cache_dir / "checkpoints").glob(f"*-{key}")) if key else []
    if len(matches) != 1:
        raise UserError(
            f"{option}={weights}: {len(matches)} checkpoints of that training hash in "
            f"{cache_dir / 'checkpoints'}; train it (training=...) or give the checkpoint folder"
        )
    return str(matches[0])


def _trained_entry(cfg: DictConfig, cache_dir: Path) -> str | None:
    """The zoo entry whose weights training produces, or whose weights the model is cut from (a subnet cut from
    a supernet re-estimates its batch norm on training data); ``None`` when neither applies."""
    from robustart import model_zoo

    if cfg.training is not None:
        if cfg.training.sandwich_random is None:
            return cfg.model.name
        if cfg.model.name != "nas_subnet":
            raise UserError(
                f"training.sandwich_random trains a weight-sharing supernet for model=nas_subnet, not "
                f"model={cfg.model.name}; set training.sandwich_random=null or use model=nas_subnet"
            )
        return "nas_supernet"
    card = model_zoo.cards.read_card(checkpoint_path(cfg.model.weights, cache_dir))
    if card is not None and model_zoo.cards.trained_entry(card) != cfg.model.name:
        return model_zoo.cards.trained_entry(card)
    return None


def _baseline_metrics(cfg: DictConfig, name: str):
    """The metrics table of the finished run ``name`` (a run folder, or a run id in the results folder)."""
    import pandas as pd

    folder = store.find_run(cfg.paths.results_dir, name, "noise.baseline_run")
    metrics = pd.read_parquet(folder / store.METRICS_FILE)
    if not {"fp", "t5d"} <= set(metrics["metric"]):
        raise UserError(f"noise.baseline_run={name}: {folder} has no fp/t5d rows (not an imagenet_p run)")
    return metrics
