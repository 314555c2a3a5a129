"""A run's identity: the part of the resolved config that determines its results, hashed into the run id.

Paths, logging, workers and device do not change results and stay out of it. The same hash function keys
training checkpoints (:func:`training_key`), so a checkpoint is reused by every run that trains the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from robustart.config import TRAINING_BOOKKEEPING, TrainingConfig
from robustart.errors import UserError
from robustart.noise.registry import get_noise_entry, identity_options

#: the model options of ``model=timm`` and ``model=custom`` (``robustart.models.OWN_OPTIONS``): part of the identity
#: when set (so the tag, the factory, its kwargs, the preprocessing and the family each make another run), left out
#: at their defaults so that zoo runs keep the ids they had before these options existed
OWN_MODEL_OPTIONS = ("tag", "target", "kwargs", "input_size", "mean", "std", "crop_pct", "interpolation", "family")

# What affects results, and so the run identity. Paths, logging, workers and device do not.
_IDENTITY_KEYS = {
    "model": None,
    "data": ("name", "root", "in_root", "split", "train_split"),
    "noise": None,
    "training": None,
    "evaluation": ("batch_size", "max_samples"),
    "seed": None,
}

_TRAINING_DEFAULTS = OmegaConf.to_container(OmegaConf.structured(TrainingConfig))
#: training options added after the first recipes, with their defaults: a recipe that leaves them there keeps
#: the training hash (and run id) it had before they existed

TRAINING_ADDED = {
    key: _TRAINING_DEFAULTS[key]
    for key in ("decay_epochs", "decay_rate", "amp", "channels_last", "ema", "mixup", "cutmix", "mix_prob",
                "switch_prob", "augment", "augmix_jsd", "drop_rate", "drop_path_rate", "adversarial", "teacher",
                "teacher_weights", "distill_alpha", "distill_temperature", "init_from")
}  # fmt: skip


def stable_hash(data: Any, length: int = 10) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the NAS settings of runs that do not use them, so that adding those
    settings left every other run's id (and training hash) as it was."""
    full = OmegaConf.to_container(cfg, resolve=True)
    model, training = full.get("model") or {}, full.get("training")
    if model.get("subnet") is None:
        model.pop("subnet", None)
        model.pop("bn_batches", None)
    for key in OWN_MODEL_OPTIONS:  # options of model=timm and model=custom, added after zoo runs existed
        if model.get(key) in (None, {}):
            model.pop(key, None)
    if training and training.get("sandwich_random") is None:
        training.pop("sandwich_random", None)
        training.pop("inplace_distill", None)
    if training:
        for key in TRAINING_BOOKKEEPING:
            training.pop(key, None)
        for key, default in TRAINING_ADDED.items():  # techniques left at their defaults
            if key in training and training[key] == default:
                training.pop(key)
    return full


def plain_model_options(model_cfg) -> dict[str, Any]:
    """A model config (DictConfig or mapping) as a plain dict."""
    return model_cfg if isinstance(model_cfg, dict) else OmegaConf.to_container(model_cfg, resolve=True)


def model_kind(model_cfg) -> str:
    """``timm`` (any timm model, ``model=timm``), ``custom`` (a factory of one's own, ``model=custom``) or ``zoo``."""
    name = plain_model_options(model_cfg).get("name")
    return name if name in ("timm", "custom") else "zoo"


def model_label(model_cfg) -> str:
    """The model's name in the results and the run folder: a zoo entry's name, a timm model's tag, a custom
    factory's ``module.factory`` (``model.target`` with ``.`` for ``:``)."""
    options = plain_model_options(model_cfg)
    kind = model_kind(options)
    if kind == "timm" and options.get("tag"):
        return str(options["tag"])
    if kind == "custom" and options.get("target"):
        return str(options["target"]).replace(":", ".")
    return str(options["name"])


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
    train_root = full["data"].get("train_root")
    if train_root:  # only where set (data=folder, CIFAR), so runs from before the option keep their ids
        ident["data"]["train_root"] = str(Path(train_root).expanduser().resolve())
    # every option with its default spelled out, so a changed default makes a new run (but options declared
    # to leave results as they are, or added after runs existed and left at their defaults, stay out)
    options = {name: identity_options(name, kwargs) for name, kwargs in noise_options(cfg.noise).items()}
    ident["noise"] = {"name": cfg.noise.name, "options": options}
    amp = cfg.evaluation.get("amp")  # mixed precision changes the numbers; float32 runs keep their ids
    if amp is not None and str(amp).lower() not in ("off", "false", "none"):
        ident["evaluation"]["amp"] = str(amp).lower()
    return ident


def run_directory(cfg: DictConfig) -> tuple[str, Path]:
    """``(run_id, folder)``: the id is a hash of :func:`identity`, the folder names it readably."""
    run_id = stable_hash(identity(cfg))
    results = Path(os.path.expanduser(cfg.paths.results_dir))
    return run_id, results / f"{model_label(cfg.model)}-{cfg.noise.name}-{cfg.data.name}-{run_id}"


def noise_kwargs(name: str, options: dict) -> dict[str, Any]:
    """The options of noise ``name`` for its factory: ``options`` over its dataclass's defaults, checked."""
    try:
        entry = get_noise_entry(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    valid = entry.option_names()
    unknown = sorted(set(options) - {"name", *valid})
    if unknown:
        raise UserError(f"noise {name!r} has no option {unknown[0]!r}; its options: {', '.join(valid)}")
    try:
        validated = OmegaConf.merge(OmegaConf.structured(entry.options), {k: v for k, v in options.items()
                                                                          if k != "name"})  # fmt: skip
    except OmegaConfBaseException as err:
        raise UserError(f"noise {name!r}: {err}".splitlines()[0]) from None
    return OmegaConf.to_container(validated)


def noise_options(noise_cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Each noise of the config (one, or a suite's members) with all its options, schema defaults
    included and checked: ``{noise name: keyword arguments of its factory}``."""
    options = OmegaConf.to_container(noise_cfg, resolve=True)
    if "members" in options:
        members = options["members"] or {}
        if not members:
            raise UserError(f"noise suite {options['name']!r} has no members")
        return {name: noise_kwargs(name, opts or {}) for name, opts in members.items()}
    name = options.pop("name")
    return {name: noise_kwargs(name, options)}


def build_noise(noise_cfg: DictConfig):
    """Turn a noise config (one noise or a suite of members) into a :class:`robustart.noise.Noise`."""
    from robustart.noise import NoiseSuite, create_noise

    built = [create_noise(name, **kwargs) for name, kwargs in noise_options(noise_cfg).items()]
    return NoiseSuite(noise_cfg.name, built) if "members" in noise_cfg else built[0]


def training_key(cfg: DictConfig) -> tuple[str, dict]:
    """The hash of what a training run produces: model, training data and recipe. A supernet is trained once
    for all its subnets, so the subnet id and its batch-norm calibration are not part of it."""
    full = _resolved(cfg)
    drop = {"weights", "sha256"} | ({"subnet", "bn_batches"} if full["training"].get("sandwich_random") else set())
    model = {k: v for k, v in full["model"].items() if k not in drop}
    data = {k: full["data"].get(k) for k in ("name", "train_split")}
    if full["data"]["name"] in ("folder", "cifar10", "cifar100"):  # which files were trained on (data added later)
        folder = full["data"].get("train_root") or full["data"].get("root")
        data["root"] = str(Path(folder).expanduser().resolve()) if folder else None
    key = {"model": model, "data": data, "training": full["training"]}
    return stable_hash(key, 12), key
