"""Structured config schemas (dataclasses in Hydra's ConfigStore).

The YAML files in ``conf/`` are variants of these schemas, so a misspelt key or a value of the wrong
type fails while the config is composed, before any work. A noise's options are declared once, as the
dataclass registered with its factory in ``noise/`` (``@register_noise(name, kind=..., options=...)``);
:func:`register_configs` makes each registered noise's schema from it (``noise_schema_<name>``: the options
plus ``name``), and a noise YAML names that schema in its defaults list (``/noise_schema_<name>@_here_``) and
sets only what differs from the defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from robustart.store import DEFAULT_CACHE_DIR


@dataclass
class ModelConfig:
    """Which model, and with which weights: a zoo entry by name, ``timm`` (any timm model, ``tag``) or ``custom``
    (a factory of one's own, ``target``). The options after ``bn_batches`` belong to ``timm`` and ``custom``
    (see :func:`robustart.models.check_model_options`); a zoo entry refuses them."""

    name: str = MISSING
    #: ``random``, ``pretrained`` (timm's hub, local cache first, fails fast offline) or a file path;
    #: ``custom``: ``random`` keeps the module as its factory returns it.
    weights: str = "random"
    #: expected sha256 of the weights file; a mismatch refuses it.
    sha256: str | None = None
    num_classes: int | None = None
    in_chans: int | None = None
    img_size: int | None = None
    #: ``nas_subnet`` only: which subnet of the search space (an integer id; see ``model_zoo.nas``).
    subnet: int | None = None
    #: subnets sliced from a trained supernet: training batches that re-estimate their batch-norm statistics.
    bn_batches: int = 20
    #: ``timm``: the timm model name (``convnext_nano.in12k_ft_in1k``, ``resnet10t``); preprocessing from its
    #: pretrained config.
    tag: str | None = None
    #: ``custom``: ``MODULE:FACTORY``, importable from PYTHONPATH or the current folder; returns an ``nn.Module``.
    target: str | None = None
    #: ``custom``: the factory's keyword arguments; ``timm``: extra arguments of ``timm.create_model``.
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: ``custom``: preprocessing (defaults: the data's size, mean 0, std 1, no crop, bilinear).
    input_size: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    #: ``timm`` and ``custom``: ``cnn`` (default), ``transformer``, ``mlp`` or ``nas``.
    family: str | None = None


@dataclass
class DataConfig:
    """Clean evaluation (and training) data."""

    name: str = MISSING
    #: dataset folder; for ``fashion_mnist`` optional (searched in the cache, then the Debian package path), for
    #: ``cifar10``/``cifar100`` optional (downloaded into the cache), for ``folder`` the folder of class folders.
    root: str | None = None
    #: split to evaluate on.
    split: str = "test"
    #: split to train on, when ``training`` is set.
    train_split: str = "train"
    #: the training images' folder: ``folder`` (class folders of the same classes as ``root``; required to train),
    #: ``cifar10``/``cifar100`` (default: ``root``).
    train_root: str | None = None
    #: DataLoader workers for decoding.
    num_workers: int = 0
    #: ``imagenet_o`` only: the ImageNet val folder; its images of ImageNet-O's 200 classes are the
    #: in-distribution set.
    in_root: str | None = None


@dataclass
class SuiteNoiseConfig:
    """Several noises in one run. ``members`` maps a noise name to its options (a suite's YAML gives each member
    its options schema, ``/noise_options_<name>@members.<name>``, so their keys and types are checked too)."""

    name: str = MISSING
    members: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdversarialTrainingConfig:
    """Adversarial training (see :mod:`robustart.training.losses`); budgets on [0, 1] pixels, Linf."""

    #: ``pgd`` (Madry), ``fgsm`` (FGSM from a random start: fast AT) or ``trades``; ``null``: off.
    method: str | None = None
    eps: Any = "8/255"
    steps: int = 10
    #: the attack's step (``null``: 2.5 eps / steps; FGSM: 1.25 eps).
    step_size: Any = None
    random_start: bool = True
    #: train on the clean and the attacked batch together (RobustART's 50/50 batches); else on the attacked one.
    keep_clean: bool = False
    #: TRADES: weight of the KL term.
    beta: float = 6.0
    #: the step size grows linearly from 0 over this many epochs (ARES-Bench).
    step_warmup_epochs: float = 0.0


@dataclass
class TrainingConfig:
    """A training recipe (see :func:`robustart.training.fit`). A baseline sets the optimiser and schedule; techniques
    (conf/training/*.yaml) each set their own fields and compose: ``training=[baseline_cnn,mixup,ema]``."""

    name: str = "standard"
    #: the techniques composed on top of ``name`` (each technique file adds itself); they label checkpoints.
    techniques: dict[str, bool] = field(default_factory=dict)
    epochs: float = 1.0
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    #: ``cosine``, ``step`` or ``constant``, after ``warmup_epochs`` of linear warmup.
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    #: ``step`` schedule: multiply the rate by ``decay_rate`` every ``decay_epochs``.
    decay_epochs: float = 30.0
    decay_rate: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    #: ``auto`` (float16 on CUDA, off on a CPU), ``bf16``, ``fp16`` or ``off``.
    amp: str = "auto"
    channels_last: bool = False
    #: decay of an EMA of the weights (the checkpoint holds the average); ``null``: off.
    ema: float | None = None
    #: Beta alphas of Mixup and CutMix (0: off), the chance a batch is mixed, the chance CutMix is picked.
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    #: a timm augmentation policy: ``rand-m9-mstd0.5-inc1``, ``original`` (AutoAugment), ``augmix-m3-w3``.
    augment: str | None = None
    #: AugMix's Jensen-Shannon consistency loss over three views.
    augmix_jsd: bool = False
    #: dropout and stochastic depth of the trained model (where its architecture has them).
    drop_rate: float | None = None
    drop_path_rate: float | None = None
    adversarial: AdversarialTrainingConfig = field(default_factory=AdversarialTrainingConfig)
    #: knowledge distillation from this zoo model, with ``teacher_weights`` (``pretrained``, a file, a
    #: checkpoint folder or ``robustart:<hash>``).
    teacher: str | None = None
    teacher_weights: str = "pretrained"
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    #: start from these weights (fine-tuning): ``pretrained``, a file, a checkpoint folder or ``robustart:<hash>``.
    init_from: str | None = None
    #: write the resumable training state every this many steps (0: never); a killed run continues from it.
    checkpoint_every: int = 200
    #: resume from this training state file (by default the one in the checkpoint folder is used).
    resume: str | None = None
    #: weight-sharing supernet training (``model=nas_subnet`` only): each step trains the largest, the smallest
    #: and this many random subnets (the sandwich rule); ``null`` trains the model alone.
    sandwich_random: int | None = None
    #: sandwich rule: the other subnets learn from the largest one's predictions (in-place distillation).
    inplace_distill: bool = True


#: training options that do not change what is trained (left out of the training hash and the run id)
TRAINING_BOOKKEEPING = ("techniques", "checkpoint_every", "resume")


@dataclass
class EvaluationConfig:
    batch_size: int = 256
    #: evaluate N samples of the split (``null``: all): the first N of in-memory data, a class-balanced subset
    #: (every k-th file of each class) of file data.
    max_samples: int | None = None
    #: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: mixed precision of every forward pass (attacks and scoring): ``null`` (float32), ``bf16`` (CUDA or CPU)
    #: or ``fp16`` (CUDA); logits are scored in float32 either way.
    amp: str | None = None
    #: channels-last memory layout for the model and the inputs (faster convolutions on recent GPUs).
    channels_last: bool = False
    #: when another process holds the run's lock (``<run>/.lock``): ``wait`` for it, then skip the run if it
    #: finished or resume it if not, or ``exit`` with status 2 naming the holder (see :mod:`robustart.locking`).
    if_locked: str = "wait"


@dataclass
class LoggerConfig:
    #: ``none`` (console only) or ``wandb``.
    name: str = "none"
    project: str = "robustart"
    #: wandb mode: ``offline``, ``online`` or ``disabled``.
    mode: str = "offline"


@dataclass
class PathsConfig:
    results_dir: str = "${oc.env:ROBUSTART_RESULTS,results}"
    cache_dir: str = f"${{oc.env:ROBUSTART_CACHE,'{DEFAULT_CACHE_DIR}'}}"


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    noise: Any = MISSING
    training: TrainingConfig | None = None
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    #: name of the experiment that set this run up (informational; set by conf/experiment files).
    experiment: str | None = None
    seed: int = 0


#: schema names of earlier releases, kept so that noise YAMLs written for them still compose
_OLD_SCHEMA_NAMES = {"corruption": "imagenet_c", "perturbation": "imagenet_p", "pgd": "pgd_linf"}
_NOISE_SCHEMAS: dict[str, type] = {}


def noise_schema(name: str) -> type:
    """The config schema of the registered noise ``name``: its options dataclass plus ``name: str = "<name>"``.

    The class is ``robustart.config.noise_schema_<name>`` (importable, so a composed config pickles)."""
    from robustart.noise import get_noise_entry

    if name not in _NOISE_SCHEMAS:
        options = get_noise_entry(name).options
        schema = dataclasses.make_dataclass(f"noise_schema_{name}", [("name", str, field(default=name))],
                                            bases=(options,), namespace={"__doc__": options.__doc__})  # fmt: skip
        schema.__module__ = __name__
        _NOISE_SCHEMAS[name] = schema
    return _NOISE_SCHEMAS[name]


def noise_schemas() -> dict[str, type]:
    """Every registered noise's config schema (:func:`noise_schema`), by noise name."""
    from robustart.noise import list_noises

    return {name: noise_schema(name) for name in list_noises()}


def __getattr__(attr: str) -> type:
    """``noise_schema_<name>``: the schema of a registered noise, made on first use (see :func:`noise_schema`)."""
    if attr.startswith("noise_schema_"):
        from robustart.noise import list_noises

        if (name := attr.removeprefix("noise_schema_")) in list_noises():
            return noise_schema(name)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent). Per registered noise: ``noise_schema_<name>`` (a noise
    config: ``name`` and the options) and ``noise_options_<name>`` (the options alone, for a suite's member)."""
    from robustart.noise import get_noise_entry

    cs = ConfigStore.instance()
    cs.store(name="robustart_schema", node=Config)
    cs.store(name="noise_schema_suite", node=SuiteNoiseConfig)
    for name, schema in noise_schemas().items():
        cs.store(name=f"noise_schema_{name}", node=schema)
        cs.store(name=f"noise_options_{name}", node=get_noise_entry(name).options)
    for old, name in _OLD_SCHEMA_NAMES.items():
        cs.store(name=f"noise_schema_{old}", node=noise_schema(name))
