"""One run: config -> identity -> (train) -> evaluate -> results store.

``run(cfg)`` is the task that ``python -m robustart`` calls; tests call it with a composed config.
Everything a user can get wrong is checked in :func:`prepare`, before any work, and raised as
:class:`UserError`; the CLI turns that into one message and exit status 2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from robustart import store
from robustart.config import NOISE_SCHEMAS, TRAINING_BOOKKEEPING, TrainingConfig

log = logging.getLogger("robustart")

# What affects results, and so the run identity. Paths, logging, workers and device do not.
_IDENTITY_KEYS = {
    "model": None,
    "data": ("name", "root", "in_root", "split", "train_split"),
    "noise": None,
    "training": None,
    "evaluation": ("batch_size", "max_samples"),
    "seed": None,
}


#: training options added after the first recipes, with their defaults: a recipe that leaves them there keeps
#: the training hash (and run id) it had before they existed
_TRAINING_DEFAULTS = OmegaConf.to_container(OmegaConf.structured(TrainingConfig))
_TRAINING_ADDED = {
    key: _TRAINING_DEFAULTS[key]
    for key in ("decay_epochs", "decay_rate", "amp", "channels_last", "ema", "mixup", "cutmix", "mix_prob",
                "switch_prob", "augment", "augmix_jsd", "drop_rate", "drop_path_rate", "adversarial", "teacher",
                "teacher_weights", "distill_alpha", "distill_temperature", "init_from")
}  # fmt: skip


class UserError(Exception):
    """A problem with the user's input (name, path, value, checkpoint), with the fix in the message."""


@dataclass
class RunResult:
    run_dir: Path
    skipped: bool
    metrics: Any = None  # pandas DataFrame when the run was executed


def _hash(data: Any, length: int = 10) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the NAS settings of runs that do not use them, so that adding those
    settings left every other run's id (and training hash) as it was."""
    full = OmegaConf.to_container(cfg, resolve=True)
    model, training = full.get("model") or {}, full.get("training")
    if model.get("subnet") is None:
        model.pop("subnet", None)
        model.pop("bn_batches", None)
    if training and training.get("sandwich_random") is None:
        training.pop("sandwich_random", None)
        training.pop("inplace_distill", None)
    if training:
        for key in TRAINING_BOOKKEEPING:
            training.pop(key, None)
        for key, default in _TRAINING_ADDED.items():  # techniques left at their defaults
            if key in training and training[key] == default:
                training.pop(key)
    return full


def recipe_label(training: DictConfig | dict) -> str:
    """A readable name for a composed recipe: its base and the techniques added, ``baseline_cnn+mixup+ema``."""
    return "+".join([training["name"], *[k for k, on in (training.get("techniques") or {}).items() if on]])


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The part of the resolved config that determines the results."""
    full = _resolved(cfg)
    ident = {}
    for key, fields in _IDENTITY_KEYS.items():
        value = full.get(key)
        if fields is not None and value is not None:
            value = {f: value.get(f) for f in fields}
        ident[key] = value
    for key in ("root", "in_root"):
        if ident["data"].get(key):
            ident["data"][key] = str(Path(ident["data"][key]).expanduser().resolve())
    # every option with its default spelled out, so a changed default makes a new run
    ident["noise"] = {"name": cfg.noise.name, "options": noise_options(cfg.noise)}
    amp = cfg.evaluation.get("amp")  # mixed precision changes the numbers; float32 runs keep their ids
    if amp is not None and str(amp).lower() not in ("off", "false", "none"):
        ident["evaluation"]["amp"] = str(amp).lower()
    return ident


def run_directory(cfg: DictConfig) -> tuple[str, Path]:
    """``(run_id, folder)``: the id is a hash of :func:`identity`, the folder names it readably."""
    run_id = _hash(identity(cfg))
    results = Path(os.path.expanduser(cfg.paths.results_dir))
    return run_id, results / f"{cfg.model.name}-{cfg.noise.name}-{cfg.data.name}-{run_id}"


# ---------------------------------------------------------------------------------------------------- prepare


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


def _resolve_device(name: str, local_rank: int = 0):
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


def noise_options(noise_cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Each noise of the config (one, or a suite's members) with all its options, schema defaults
    included and checked: ``{noise name: keyword arguments of its factory}``."""

    def one(name: str, options: dict) -> dict[str, Any]:
        schema = NOISE_SCHEMAS.get(name)
        if schema is None:
            raise UserError(f"unknown noise {name!r}; valid names: {', '.join(sorted(NOISE_SCHEMAS))}")
        try:
            validated = OmegaConf.merge(OmegaConf.structured(schema), {**options, "name": name})
        except OmegaConfBaseException as err:
            raise UserError(f"noise {name!r}: {err}".splitlines()[0]) from None
        kwargs = OmegaConf.to_container(validated)
        kwargs.pop("name")
        return kwargs

    options = OmegaConf.to_container(noise_cfg, resolve=True)
    if "members" in options:
        members = options["members"] or {}
        if not members:
            raise UserError(f"noise suite {options['name']!r} has no members")
        return {name: one(name, opts or {}) for name, opts in members.items()}
    name = options.pop("name")
    return {name: one(name, options)}


def build_noise(noise_cfg: DictConfig):
    """Turn a noise config (one noise or a suite of members) into a :class:`robustart.noise.Noise`."""
    from robustart.noise import NoiseSuite, create_noise

    built = [create_noise(name, **kwargs) for name, kwargs in noise_options(noise_cfg).items()]
    return NoiseSuite(noise_cfg.name, built) if "members" in noise_cfg else built[0]


def _training_key(cfg: DictConfig) -> tuple[str, dict]:
    """The hash of what a training run produces: model, training data and recipe. A supernet is trained once
    for all its subnets, so the subnet id and its batch-norm calibration are not part of it."""
    full = _resolved(cfg)
    drop = {"weights", "sha256"} | ({"subnet", "bn_batches"} if full["training"].get("sandwich_random") else set())
    model = {k: v for k, v in full["model"].items() if k not in drop}
    data = {k: full["data"].get(k) for k in ("name", "train_split")}
    key = {"model": model, "data": data, "training": full["training"]}
    return _hash(key, 12), key


def prepare(cfg: DictConfig, run_id: str, run_dir: Path) -> Plan:
    """Build data, noise and model and check every user input; raises :class:`UserError`."""
    try:
        return _prepare(cfg, run_id, run_dir)
    except UserError:
        raise
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError, OmegaConfBaseException) as err:
        raise UserError(str(err)) from None


SHIFT_SETS = ("imagenet_a", "imagenet_o", "imagenet_r", "imagenet_sketch", "imagenetv2")
DATA_NAMES = ("fashion_mnist", "fashion_mnist_ood", "imagenet", "imagenet_c", "imagenet_p", *SHIFT_SETS)


def _load_data(cfg: DictConfig, cache_dir: Path, noise, need_train: bool):
    """``(eval_data, info, train_data)``: the evaluation set (one dataset, or ``{Condition: dataset}`` for
    sets that carry their noise: the released ImageNet-C files, ImageNet-O with its in-distribution
    images, image folders re-decoded by system noise), its description, and the training set when
    ``need_train`` (training, or a subnet whose batch-norm statistics are re-estimated)."""
    from robustart import data as datasets
    from robustart import model_zoo
    from robustart.evaluation.shift import OOD
    from robustart.noise import Condition

    ev, train_data = cfg.evaluation, None
    if cfg.data.name in ("fashion_mnist", "fashion_mnist_ood"):
        eval_data, info = datasets.load_fashion_mnist(cfg.data.root, cache_dir, cfg.data.split)
        if need_train:
            train_data, _ = datasets.load_fashion_mnist(cfg.data.root, cache_dir, cfg.data.train_split)
        if cfg.data.name == "fashion_mnist_ood":  # the small-scale out-of-distribution pair
            if cfg.noise.name != "clean":
                raise UserError("data=fashion_mnist_ood measures out-of-distribution detection: use noise=clean")
            patches = datasets.photo_patches(len(eval_data), seed=cfg.seed)
            eval_data = {Condition("clean", "clean"): eval_data, Condition(OOD, "photo_patches"): patches}
            info.name = "fashion_mnist_ood"
            info.notes.append(
                f"out-of-distribution set: {len(patches)} grey 28 px patches of scikit-image's photographs"
            )
    elif cfg.data.name in ("imagenet", "imagenet_c", "imagenet_p", *SHIFT_SETS):
        if need_train:
            raise UserError(
                f"training (or re-estimating a subnet's batch norm) on data={cfg.data.name} is not supported yet; "
                "drop training= or use fashion_mnist"
            )
        # the model's own preprocessing, from its metadata
        meta = model_zoo.get_metadata(cfg.model.name, num_classes=cfg.model.num_classes, in_chans=cfg.model.in_chans,
                                      img_size=cfg.model.img_size)  # fmt: skip
        if cfg.data.name == "imagenet":
            transform = datasets.eval_transform(meta.input_size, meta.crop_pct, meta.interpolation)
            if cfg.noise.name == "imagenet_p":
                # ImageNet-P's protocol: the geometric perturbations act on the resized image (256 px for
                # 224 px models), and every frame is then centre-cropped (the noise does it)
                resized = math.floor(meta.input_size[-1] / meta.crop_pct)
                transform = datasets.eval_transform((*meta.input_size[:2], resized), 1.0, meta.interpolation)
            eval_data, info = datasets.load_imagenet_folder(cfg.data.root, cfg.data.split, transform)
        elif cfg.data.name in SHIFT_SETS:
            if cfg.data.name == "imagenet_o" and cfg.noise.name != "clean":
                raise UserError(
                    "data=imagenet_o measures out-of-distribution detection on clean images: use noise=clean"
                )
            transform = datasets.eval_transform(meta.input_size, meta.crop_pct, meta.interpolation)
            eval_data, info = datasets.load_shift_folder(cfg.data.name, cfg.data.root, transform, cfg.data.in_root)
            if isinstance(eval_data, dict):
                eval_data = {Condition("clean", "clean"): eval_data["in_distribution"],
                             Condition(OOD, "imagenet_o"): eval_data["imagenet_o"]}  # fmt: skip
        elif cfg.data.name == "imagenet_p":
            if cfg.noise.name != "imagenet_p":
                raise UserError("data=imagenet_p holds perturbation videos: use it with noise=imagenet_p "
                                "(noise.perturbations and noise.difficulties choose the folders to read)")  # fmt: skip
            from robustart.noise.natural.perturbations import P_TEST

            options = noise_options(cfg.noise)["imagenet_p"]
            released, info = datasets.load_imagenet_p_folder(
                cfg.data.root, options["perturbations"] or list(P_TEST), options["difficulties"], meta.input_size[-1]
            )
            eval_data = {Condition(cfg.noise.name, p, severity=d): v for (p, d), v in released.items()}
        else:
            if cfg.noise.name != "imagenet_c":
                raise UserError("data=imagenet_c holds the corrupted images already: use it with noise=imagenet_c "
                                "(noise.corruptions and noise.severities choose the folders to read)")  # fmt: skip
            options = noise_options(cfg.noise)["imagenet_c"]
            transform = datasets.released_transform(meta.input_size)
            released, info = datasets.load_imagenet_c_folder(
                cfg.data.root, options["corruptions"], options["severities"], transform
            )
            eval_data = {Condition(cfg.noise.name, c, severity=s): d for (c, s), d in released.items()}
        eval_data = _system_noise_datasets(cfg, noise, eval_data, info, meta)
    else:
        raise UserError(f"unknown data {cfg.data.name!r}; valid names: {', '.join(DATA_NAMES)}")
    if ev.max_samples is not None:
        if isinstance(eval_data, dict):  # released conditions: the first N images of each
            eval_data = {k: d.subset(ev.max_samples) for k, d in eval_data.items()}
            info.num_samples = max(len(d) for d in eval_data.values())
        elif ev.max_samples < len(eval_data):
            eval_data = eval_data.subset(ev.max_samples)
            info.num_samples = len(eval_data)
    return eval_data, info, train_data


def _system_noise_datasets(cfg: DictConfig, noise, eval_data, info, meta):
    """Image folders under system noise: ``{clean: the model's own preprocessing, decoder/resizer: the same
    files re-decoded and resized by that pair}`` (decoded in the loader's workers); other data unchanged."""
    from robustart import data as datasets
    from robustart.noise import Condition
    from robustart.noise.system import SystemNoise, reference_resizer

    if "members" in cfg.noise and "imagenet_s" in noise_options(cfg.noise):
        raise UserError(
            f"noise=imagenet_s re-decodes the image files of data={cfg.data.name} and cannot be a member of a suite "
            "there; run it alone (in suites it works on in-memory data such as fashion_mnist)"
        )
    if not isinstance(noise, SystemNoise):
        return eval_data
    if not isinstance(eval_data, datasets.ImageFolderDataset):
        raise UserError(
            f"noise=imagenet_s re-decodes image files, which data={cfg.data.name} does not provide as one folder "
            "set; use data=imagenet (or imagenet_a, imagenet_r, imagenet_sketch, imagenetv2)"
        )
    size, crop_pct = meta.input_size[-1], meta.crop_pct
    grid = {c: eval_data.raw(noise.pipeline(c, size, crop_pct)) for c in noise.conditions()}
    info.notes.append(
        f"imagenet_s: {len(grid)} decoder x resizer combinations of the raw files; the reference (clean) is the "
        f"model's own preprocessing, pil/{reference_resizer(meta.interpolation)} at crop_pct {crop_pct}"
    )
    return {Condition("clean", "clean"): eval_data, **grid}


def _prepare(cfg: DictConfig, run_id: str, run_dir: Path) -> Plan:
    import torch

    from robustart import model_zoo
    from robustart.evaluation.precision import check_precision
    from robustart.training import find_checkpoint
    from robustart.transfer import bind_sources

    ev = cfg.evaluation
    if ev.max_samples is not None and ev.max_samples < 1:
        raise UserError(f"evaluation.max_samples must be a positive number or null (all), got {ev.max_samples}")
    if ev.batch_size < 1:
        raise UserError(f"evaluation.batch_size must be >= 1, got {ev.batch_size}")
    from robustart.training import distributed

    device = _resolve_device(ev.device, distributed.environment().local_rank)
    check_precision(ev.amp, device)
    _check_logger(cfg)
    noise = build_noise(cfg.noise)
    if "members" in cfg.noise and "imagenet_p" in noise_options(cfg.noise):
        raise UserError("noise=imagenet_p scores frame sequences and cannot be a member of a suite; run it alone")
    baseline = _baseline_metrics(cfg, noise.baseline_run) if getattr(noise, "baseline_run", None) else None
    cache_dir = Path(os.path.expanduser(cfg.paths.cache_dir))
    model_name = cfg.model.name
    model_zoo.registry.get_entry(model_name)  # unknown names fail here with the list of valid ones

    trained = _trained_entry(cfg, cache_dir)
    eval_data, info, train_data = _load_data(cfg, cache_dir, noise, need_train=trained is not None)
    data_classes, data_chans = info.num_classes, info.in_chans

    # model: trained by robustart (cached by training hash), or with the weights the config names
    overrides = {"num_classes": cfg.model.num_classes, "in_chans": cfg.model.in_chans, "img_size": cfg.model.img_size,
                 "subnet": cfg.model.subnet}  # fmt: skip
    checkpoint, checkpoint_dir = None, None
    if cfg.training is not None:
        overrides["num_classes"] = overrides["num_classes"] or data_classes
        overrides["in_chans"] = overrides["in_chans"] or data_chans
        train_hash, _ = _training_key(cfg)
        label = recipe_label(cfg.training)
        checkpoint_dir = cache_dir / "checkpoints" / f"{trained}-{cfg.data.name}-{label}-{train_hash}"
        card = find_checkpoint(checkpoint_dir)
        if card is not None:
            model = model_zoo.create_model(model_name, weights=str(checkpoint_dir), **overrides)
            checkpoint = card
        else:  # trained in execute(); a subnet is cut from its supernet afterwards
            _check_training(cfg, device)
            torch.manual_seed(cfg.training.seed)
            own = overrides if trained == model_name else {k: v for k, v in overrides.items() if k != "subnet"}
            model_zoo.get_metadata(model_name, **overrides)  # a bad subnet id fails now, not after training
            tcfg = cfg.training
            regularisers = {"drop_rate": tcfg.drop_rate, "drop_path_rate": tcfg.drop_path_rate}
            init = "random"
            if tcfg.init_from is not None:
                init = _checkpoint_path(tcfg.init_from, cache_dir, "training.init_from")
            model = model_zoo.create_model(trained, weights=init, **own, **regularisers)
            teacher = _teacher(cfg, cache_dir, data_classes, data_chans)
            state_file = Path(tcfg.resume).expanduser() if tcfg.resume else checkpoint_dir / STATE_FILE
            if tcfg.resume and not state_file.is_file():
                raise UserError(f"training.resume={tcfg.resume}: no such training state file")
            if state_file.is_file():
                from robustart.training import load_state

                load_state(state_file, train_hash)  # a state of another config is refused now
    else:
        weights = _checkpoint_path(cfg.model.weights, cache_dir)
        model = model_zoo.create_model(model_name, weights=weights, sha256=cfg.model.sha256, **overrides)
    if info.class_mask is not None and model.metadata.num_classes != data_classes:
        raise UserError(
            f"data={cfg.data.name} restricts the outputs of an ImageNet-1k model to its {len(info.class_mask)} "
            f"classes, but model {model_name} has {model.metadata.num_classes} outputs; use a 1000-class ImageNet model"
        )
    if model.metadata.num_classes != data_classes:
        raise UserError(
            f"model {model_name} has {model.metadata.num_classes} classes but data {cfg.data.name} has {data_classes}; "
            f"set model.num_classes={data_classes} with matching weights, or train with training=..."
        )
    if model.metadata.in_chans != data_chans:
        raise UserError(
            f"model {model_name} takes {model.metadata.in_chans} channels but data {cfg.data.name} has {data_chans}; "
            f"set model.in_chans={data_chans}"
        )
    bind_sources(cfg, noise, model, info.class_mask)  # transfer attacks: their source models, checked here
    if getattr(noise, "sequences", False) and cfg.data.name == "imagenet":
        noise.crop = model.metadata.input_size[-1]  # frames come uncropped (see _load_data)
    plan = Plan(cfg, run_id, run_dir, device, noise, eval_data, info, model, train_data, checkpoint, checkpoint_dir,
                trained)  # fmt: skip
    plan.baseline = baseline
    if cfg.training is not None and checkpoint is None:
        plan.teacher, plan.state_file = teacher, state_file
    return plan


STATE_FILE = "train_state.pt"


def _check_training(cfg: DictConfig, device) -> None:
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
    if tcfg["adversarial"]["method"] is None and tcfg["adversarial"] != _TRAINING_ADDED["adversarial"]:
        raise UserError(
            "training.adversarial options are set but no adversarial method: compose pgd_at, fgsm_at, trades, ares_at "
            "or adv_finetune (training=[...,pgd_at]) or set training.adversarial.method"
        )
    tcfg["adversarial"] = _adversarial(tcfg)
    teacher = tcfg.pop("teacher") is not None
    check_recipe(**tcfg, device=device, custom_loss=tcfg["sandwich_random"] is not None, teacher=teacher)
    if tcfg["checkpoint_every"] < 0:
        raise UserError(f"training.checkpoint_every must be >= 0 (0: never), got {tcfg['checkpoint_every']}")


def _adversarial(tcfg: dict) -> dict | None:
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
    weights = _checkpoint_path(tcfg.teacher_weights, cache_dir, "training.teacher_weights")
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


def _checkpoint_path(weights: str, cache_dir: Path, option: str = "model.weights") -> str:
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
    card = model_zoo.cards.read_card(_checkpoint_path(cfg.model.weights, cache_dir))
    if card is not None and model_zoo.cards.trained_entry(card) != cfg.model.name:
        return model_zoo.cards.trained_entry(card)
    return None


def find_run(cfg: DictConfig, name: str, option: str) -> Path:
    """The folder of the finished run ``name`` (a run folder, or a run id in the results folder); ``option`` is
    the setting that named it, for the error messages."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        results = Path(os.path.expanduser(cfg.paths.results_dir))
        matches = sorted(results.glob(f"*-{name}")) if results.is_dir() else []
        if len(matches) != 1:
            raise UserError(f"{option}={name}: no run folder or run id of that name in {results}")
        folder = matches[0]
    if not store.is_done(folder):
        raise UserError(f"{option}={name}: {folder} is not a finished run (no 'done' file)")
    return folder


def _baseline_metrics(cfg: DictConfig, name: str):
    """The metrics table of the finished run ``name`` (a run folder, or a run id in the results folder)."""
    import pandas as pd

    folder = find_run(cfg, name, "noise.baseline_run")
    metrics = pd.read_parquet(folder / store.METRICS_FILE)
    if not {"fp", "t5d"} <= set(metrics["metric"]):
        raise UserError(f"noise.baseline_run={name}: {folder} has no fp/t5d rows (not an imagenet_p run)")
    return metrics


# ---------------------------------------------------------------------------------------------------- execute


#: recipe options that robustart resolves itself instead of passing to training.fit
_NOT_FIT_OPTIONS = ("name", "techniques", "sandwich_random", "inplace_distill", "drop_rate", "drop_path_rate",
                    "teacher", "teacher_weights", "init_from", "resume")  # fmt: skip


def _train(plan: Plan, timings: dict, logger=None) -> None:
    from robustart.training import distributed, fit, save_checkpoint

    cfg = plan.cfg
    tcfg = OmegaConf.to_container(cfg.training, resolve=True)
    rank, world = distributed.current()
    log.info("training %s with recipe %r on %s/%s (%d samples%s)", cfg.model.name, recipe_label(tcfg), cfg.data.name,
             cfg.data.train_split, len(plan.train_data), f", {world} processes" if world > 1 else "")  # fmt: skip
    t = time.monotonic()
    train_hash, key = _training_key(cfg)
    kwargs = {k: v for k, v in tcfg.items() if k not in _NOT_FIT_OPTIONS}
    kwargs["adversarial"] = _adversarial(tcfg)
    kwargs.update(state_file=plan.state_file, state_key=train_hash, device=plan.device, progress=log.info,
                  log_metrics=logger.log if logger is not None else None)  # fmt: skip
    if tcfg.get("sandwich_random") is not None:
        from robustart.training.supernet import fit_supernet

        num_random, distill = tcfg["sandwich_random"], tcfg["inplace_distill"]
        log.info("supernet: each step trains the largest, the smallest and %d random subnets%s", num_random,
                 ", distilled from the largest" if distill else "")  # fmt: skip
        kwargs.pop("channels_last")
        metrics = fit_supernet(plan.model, plan.train_data, num_random=num_random, distill=distill, **kwargs)
    else:
        metrics = fit(plan.model, plan.train_data, teacher=plan.teacher, **kwargs)
    timings["train_s"] = time.monotonic() - t
    meta = plan.model.metadata
    card = {
        "config_hash": train_hash,
        "entry": plan.trained_entry,
        "recipe": tcfg,
        "model": key["model"],
        "num_classes": meta.num_classes,
        "in_chans": meta.in_chans,
        "data": {**key["data"], "num_samples": len(plan.train_data)},
        "epochs": tcfg["epochs"],
        "processes": world,
        "final_metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if rank == 0:
        save_checkpoint(plan.checkpoint_dir, plan.model.net, card)
        if plan.state_file is not None and plan.state_file.parent == plan.checkpoint_dir:
            plan.state_file.unlink(missing_ok=True)  # the finished checkpoint supersedes it
        plan.checkpoint = {**card, **(json.loads((plan.checkpoint_dir / "checkpoint.json").read_text()))}
        plan.checkpoint["path"] = str(plan.checkpoint_dir / plan.checkpoint["weights"])
        log.info("checkpoint saved to %s", plan.checkpoint_dir)


def _share_checkpoint(plan: Plan) -> None:
    """After data-parallel training, every process evaluates the weights rank 0 saved (batch-norm statistics
    differ between processes until then)."""
    from robustart import model_zoo
    from robustart.training import distributed, find_checkpoint

    distributed.barrier()
    if plan.world.rank == 0:
        return
    plan.checkpoint = find_checkpoint(plan.checkpoint_dir)
    if plan.trained_entry == plan.cfg.model.name:  # a subnet is cut from the saved supernet in any case
        meta = plan.model.metadata
        plan.model = model_zoo.create_model(plan.cfg.model.name, weights=str(plan.checkpoint_dir),
                                            num_classes=meta.num_classes, in_chans=meta.in_chans,
                                            img_size=plan.cfg.model.img_size)  # fmt: skip


def _cut_subnet(plan: Plan, timings: dict) -> None:
    """Replace the supernet by the configured subnet with its sliced weights, then re-estimate the subnet's
    batch-norm statistics on ``model.bn_batches`` training batches (the supernet's are a mix of every subnet's)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from robustart import model_zoo
    from robustart.model_zoo.nas import recalibrate_bn

    cfg, t = plan.cfg, time.monotonic()
    if plan.checkpoint_dir is not None:  # trained here: the subnet is cut from the checkpoint just written
        meta = plan.model.metadata
        plan.model = model_zoo.create_model(cfg.model.name, weights=str(plan.checkpoint_dir), subnet=cfg.model.subnet,
                                            num_classes=meta.num_classes, in_chans=meta.in_chans,
                                            img_size=cfg.model.img_size)  # fmt: skip
    batch = cfg.evaluation.batch_size
    count = min(len(plan.train_data), cfg.model.bn_batches * batch)
    order = torch.randperm(len(plan.train_data), generator=torch.Generator().manual_seed(cfg.seed))[:count]
    loader = DataLoader(Subset(plan.train_data, order.tolist()), batch_size=batch, num_workers=cfg.data.num_workers)
    recalibrate_bn(plan.model.to(plan.device), (images.to(plan.device) for images, *_ in loader))
    genes = plan.model.metadata.genes or {}
    log.info("subnet %s cut from %s; batch norm re-estimated on %d training images (%.1f s)", genes.get("subnet"),
             plan.trained_entry, count, time.monotonic() - t)  # fmt: skip
    timings["bn_recalibration_s"] = time.monotonic() - t


def execute(plan: Plan, t_start: float) -> RunResult:
    import pandas as pd

    from robustart import data as datasets
    from robustart import parts as committed
    from robustart.environment import device_description, git_commit, library_versions
    from robustart.evaluation import summarize
    from robustart.evaluation.evaluator import CLEAN
    from robustart.evaluation.precision import with_precision
    from robustart.evaluation.sequences import sequence_rows
    from robustart.evaluation.shift import OOD, MaskedOutputs, shift_rows
    from robustart.evaluation.validity import ValidityChecks, norm_of
    from robustart.summary import format_summary
    from robustart.training import distributed

    cfg, timings = plan.cfg, {}
    rank, size = (plan.world.rank, plan.world.size) if plan.world is not None else (0, 1)
    logger = _start_logger(cfg, plan.run_dir) if rank == 0 else None
    if cfg.training is not None and plan.checkpoint is None:
        _train(plan, timings, logger)
        if size > 1:
            _share_checkpoint(plan)
    if plan.checkpoint is not None and "train_s" not in timings:
        log.info("reusing checkpoint %s (sha256 %s...)", plan.checkpoint["path"], plan.checkpoint["sha256"][:12])
    if plan.trained_entry not in (None, cfg.model.name):  # a subnet, cut from its supernet
        _cut_subnet(plan, timings)
    meta = plan.model.metadata
    weights = f"robustart:{plan.checkpoint['config_hash']}" if plan.checkpoint else meta.weights
    if weights == "random":
        msg = f"model {meta.name} has RANDOM weights: its numbers measure an untrained network"
        plan.notes.append(msg)
        log.warning(msg)

    counter = datasets.SkipCounter()
    model = plan.model if plan.data_info.class_mask is None else MaskedOutputs(plan.model, plan.data_info.class_mask)
    model = with_precision(model, cfg.evaluation.amp, cfg.evaluation.channels_last)  # attacks and scoring alike
    t = time.monotonic()
    frames, checks = None, None
    if getattr(plan.noise, "sequences", False):
        if rank != 0:
            log.info("rank %d: sequence noises are evaluated by rank 0 alone", rank)
            distributed.shutdown()
            return RunResult(plan.run_dir, skipped=True)
        predictions, frames, conditions = _evaluate_sequences(plan, model, counter)
    else:  # condition by condition, each committed as it finishes, batches shared out over the processes
        work = committed.units(plan.noise, plan.eval_data)
        if isinstance(plan.eval_data, dict):  # data that carries its conditions: one dataset each, no clean pass
            conditions = [u.condition for u in work]
            log.info("evaluating %s on %s: %d conditions (a dataset each), %d images on %s", meta.name,
                     cfg.data.name, len(conditions), sum(len(u.dataset) for u in work), plan.device)  # fmt: skip
        else:
            conditions = [u.condition for u in work if u.condition != CLEAN]
            log.info("evaluating %s on %s/%s (%d samples) x %d noise conditions + clean on %s", meta.name,
                     cfg.data.name, cfg.data.split, plan.data_info.num_samples, len(conditions),
                     plan.device)  # fmt: skip
            if any(c.eps is not None for c in conditions):
                checks = ValidityChecks(lambda cond: norm_of(plan.noise, cond))
        if size > 1:
            log.info("process %d of %d evaluates batches %d, %d + %d, ... of each condition", rank, size, rank, rank,
                     size)  # fmt: skip
        committed.run_parts(plan.run_dir, work, model, plan.noise, batch_size=cfg.evaluation.batch_size,
                            num_workers=cfg.data.num_workers, device=plan.device, checks=checks, rank=rank,
                            world=size)  # fmt: skip
        if size > 1:
            distributed.barrier()
            distributed.shutdown()
            if rank != 0:
                log.info("rank %d: its parts are committed; rank 0 merges them", rank)
                return RunResult(plan.run_dir, skipped=True)
        merged = committed.merge_parts(plan.run_dir, work, plan.noise, checks, size)
        predictions, counter.skipped = merged.predictions, counter.skipped + merged.skipped
        timings["eval_parts_s"] = merged.seconds
    timings["eval_s"] = time.monotonic() - t
    if counter.skipped:
        msg = f"{counter.skipped} unreadable image(s) were skipped"
        plan.notes.append(msg)
        log.warning(msg)

    run_cols = {"run_id": plan.run_id, "model": meta.name, "weights": weights}
    predictions = _join_sample_columns(predictions, _noise_extra(plan.noise, "sample_columns")).assign(**run_cols)
    # AlexNet's published ImageNet-C errors normalise CE only for ImageNet-scale data
    baseline = "alexnet" if cfg.data.name in ("imagenet", "imagenet_c") else None
    # ImageNet-O's own images have no accuracy to speak of: they enter only its detection rows
    parts = (
        [summarize(predictions[predictions["noise"] != OOD], corruption_baseline=baseline)] if len(predictions) else []
    )
    parts.append(shift_rows(predictions, cfg.data.name))
    extra = _noise_extra(plan.noise, "metric_rows", predictions)
    if extra is not None:
        parts.append(pd.DataFrame(extra))
    if checks is not None:
        checks.check_results(predictions)
        for line in checks.warnings():
            log.warning("validity check %s", line)
        parts.append(pd.DataFrame(checks.metric_rows()))
    if frames is not None:
        frames = frames.assign(**run_cols)
        parts.append(sequence_rows(frames, plan.baseline))
    metrics = pd.concat([p for p in parts if len(p)], ignore_index=True).assign(
        **run_cols, **_model_columns(meta), data=cfg.data.name
    )
    timings["total_s"] = time.monotonic() - t_start
    manifest = {
        "schema_version": store.SCHEMA_VERSION,
        "run_id": plan.run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "identity": identity(cfg),
        "git_commit": git_commit(),
        "versions": library_versions(),
        "device": device_description(plan.device),
        "seeds": {"run": cfg.seed, "training": cfg.training.seed if cfg.training else None},
        "model": {**meta.as_dict(), "weights": weights},
        "checkpoint": plan.checkpoint,
        "data": {**vars(plan.data_info), "skipped_unreadable": counter.skipped},
        "noise_conditions": [str(c) for c in conditions],
        "noise_report": _noise_extra(plan.noise, "report") or {},
        "validity_warnings": checks.warnings() if checks is not None else None,
        "notes": plan.notes,
        "timings": timings,
    }
    store.write_table(predictions, store.predictions_schema(), plan.run_dir / store.PREDICTIONS_FILE)
    if frames is not None:
        store.write_table(frames, store.frames_schema(), plan.run_dir / store.FRAMES_FILE)
    store.write_table(metrics, store.metrics_schema(), plan.run_dir / store.METRICS_FILE)
    store.write_json(manifest, plan.run_dir / store.MANIFEST_FILE)
    store.mark_done(plan.run_dir)
    committed.clear(plan.run_dir)
    if logger is not None:
        _log_results(logger, metrics)

    header = (
        f"robustart run {plan.run_id}: {meta.name} ({meta.family}, {meta.params:,} params, {meta.flops / 1e6:,.1f} "
        f"MFLOPs, weights {weights}) on {cfg.data.name}/{cfg.data.split}, {plan.data_info.num_samples} samples"
    )
    if meta.genes:
        header += "\nsubnet " + ", ".join(f"{k} {v}" for k, v in meta.genes.items())
    notes = "".join(f"\nNOTE: {n}" for n in plan.notes)
    print(f"\n{header}{notes}\n\n{format_summary(metrics)}\n\nresults: {plan.run_dir}  ({timings['total_s']:.1f} s)")
    return RunResult(plan.run_dir, skipped=False, metrics=pd.DataFrame(metrics))


def _model_columns(meta) -> dict:
    """The metadata columns every metrics row carries (see :func:`robustart.store.model_columns`)."""
    genes = meta.genes or {}
    columns = {"family": meta.family, "params": meta.params, "flops": meta.flops, "input_size": meta.input_size[-1]}
    columns["subnet"] = genes.get("subnet")
    columns.update({name: genes.get(name.removeprefix("nas_")) for name in store.model_columns() if name[:4] == "nas_"})
    return columns


def _noise_extra(noise, hook: str, *args):
    """A :class:`noise.Noise` extras hook (``sample_columns``, ``metric_rows``, ``report``); ``None`` for noises
    that are not :class:`robustart.noise.Noise` subclasses and have none (sequence noises)."""
    method = getattr(noise, hook, None)
    return method(*args) if method is not None else None


def _join_sample_columns(predictions, extra):
    """``predictions`` with a noise's extra per-sample columns (see ``Noise.sample_columns``) joined on; every
    column of ``store.predictions_schema`` the noise did not fill is null."""
    import pandas as pd

    keys = ["noise", "condition", "eps", "sample_id"]
    if extra is not None and len(extra):
        predictions = predictions.merge(extra, on=keys, how="left", validate="many_to_one")
    for name in store.predictions_schema().names:
        if name not in predictions and name not in ("run_id", "model", "weights"):
            predictions[name] = pd.NA
    return predictions


def _evaluate_sequences(plan: Plan, model, counter):
    """``(predictions, frames, conditions)`` of a sequence noise (ImageNet-P): per-frame rows of every
    condition, from the released videos or generated from each clean batch (which is also scored clean)."""
    import pandas as pd

    from robustart import data as datasets
    from robustart.evaluation import evaluate
    from robustart.evaluation.evaluator import _Rows
    from robustart.evaluation.sequences import evaluate_sequences
    from robustart.noise import create_noise
    from robustart.noise.natural.sequences import chunked

    cfg, noise, device = plan.cfg, plan.noise, plan.device
    size, workers = cfg.evaluation.batch_size, cfg.data.num_workers
    conditions = noise.conditions()

    def released(dataset):
        for videos, labels, ids in datasets.iterate(dataset, size, workers, counter):
            yield chunked(videos, noise.chunk), labels, ids

    def generated(cond):
        for images, labels, ids in datasets.iterate(plan.eval_data, size, workers, counter):
            yield noise.chunks(images.to(device), cond, ids), labels, ids

    log.info("evaluating %s on %s: %d perturbation sequences conditions on %s", plan.model.metadata.name,
             cfg.data.name, len(conditions), device)  # fmt: skip
    try:
        if isinstance(plan.eval_data, dict):
            sources = {cond: released(d) for cond, d in plan.eval_data.items()}
            predictions = pd.DataFrame(columns=["noise", "condition", "severity", "eps", *_Rows.COLUMNS])
        else:
            sources = {cond: generated(cond) for cond in conditions}
            batches = datasets.iterate(plan.eval_data, size, workers, counter)
            if noise.crop is not None:  # frames are cropped after the perturbation: the clean pass likewise
                from torchvision.transforms.functional import center_crop

                batches = ((center_crop(x, [noise.crop, noise.crop]), y, i) for x, y, i in batches)
            predictions = evaluate(model, batches, create_noise("clean"), device=device, progress=log.info)
        frames = evaluate_sequences(model, sources, device=device, progress=log.info)
    except datasets.VideoError as err:
        raise UserError(str(err).strip().splitlines()[-1].removeprefix("robustart.data.VideoError: ")) from None
    return predictions, frames, conditions


def _check_logger(cfg: DictConfig) -> None:
    if cfg.logger.name not in ("none", "wandb"):
        raise UserError(f"unknown logger {cfg.logger.name!r}; valid names: none, wandb")
    if cfg.logger.name == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError('logger=wandb needs wandb: pip install "robustart[wandb]"') from None


def _log_results(logger, metrics) -> None:
    """Send the run's metrics to wandb: one value per (noise, condition, metric, severity, eps), the whole table,
    and a figure of accuracy per condition (attack budgets and corruption severities on the x axis)."""
    import wandb

    logger.log({f"{r.noise}/{r.condition}/{r.metric}/{r.severity}/{r.eps}": r.value for r in metrics.itertuples()})
    table = metrics.astype({c: "object" for c in metrics.columns if str(metrics[c].dtype) in ("Int64", "Float64")})
    logger.log({"metrics": wandb.Table(dataframe=table)})
    figure = accuracy_figure(metrics)
    if figure is not None:
        logger.log({"accuracy_by_condition": wandb.Image(figure)})
        import matplotlib.pyplot as plt

        plt.close(figure)
    logger.finish()


def accuracy_figure(metrics):
    """One run's accuracy per condition: robust accuracy against eps for each attack, accuracy against
    severity for each corruption (``None`` when the run has neither)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("eps", metrics[(metrics["metric"] == "robust_acc") & metrics["eps"].notna()], "attack budget (eps)"),
        ("severity", metrics[(metrics["metric"] == "acc") & metrics["severity"].notna()], "severity"),
    ]
    panels = [p for p in panels if len(p[1])]
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (x, rows, label) in zip(axes[0], panels, strict=True):
        for name, curve in rows.groupby("condition", sort=False):
            curve = curve.sort_values(x)
            ax.plot(curve[x].astype(float), curve["value"].astype(float), marker="o", label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def _start_logger(cfg: DictConfig, run_dir: Path):
    """A wandb run whose files live in the run folder, or None for console-only logging."""
    if cfg.logger.name == "none":
        return None
    import wandb

    run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.logger.project,
        mode=cfg.logger.mode,
        dir=str(run_dir),
        name=run_dir.name,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def run(cfg: DictConfig) -> RunResult:
    """Run one configured evaluation (training first if ``cfg.training`` is set); skip it if done."""
    t_start = time.monotonic()
    run_id, run_dir = run_directory(cfg)
    if store.is_done(run_dir):
        print(f"already done: {run_dir} (delete its 'done' file to run again)")
        return RunResult(run_dir, skipped=True)
    world = _join_world(cfg)
    plan = prepare(cfg, run_id, run_dir)
    plan.world = world
    return execute(plan, t_start)


def _join_world(cfg: DictConfig):
    """Under torchrun or a multi-task Slurm step, join the other processes; ``None`` for one process.

    Processes train together (data-parallel; rank 0 writes the checkpoint) and share out the evaluation's
    batches (:mod:`robustart.parts`); rank 0 merges the results and writes the tables."""
    from robustart.training import distributed

    world = distributed.environment()
    if not world.distributed:
        return None
    log.info("process %d of %d (%s)", world.rank, world.size, world.source)
    distributed.init(world, _resolve_device(cfg.evaluation.device, world.local_rank))
    return world
