"""Structured config schemas (dataclasses in Hydra's ConfigStore).

The YAML files in ``conf/`` are variants of these schemas, so a misspelt key or a value of the wrong
type fails while the config is composed, before any work. Each noise YAML names its schema in its
defaults list (``/noise_schema_<kind>@_here_``), because noises of different kinds take different
options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    """Which zoo model, and with which weights."""

    name: str = MISSING
    #: ``random``, ``pretrained`` (timm's hub, local cache first, fails fast offline) or a file path.
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


@dataclass
class DataConfig:
    """Clean evaluation (and training) data."""

    name: str = MISSING
    #: dataset folder; for ``fashion_mnist`` optional (searched in the cache, then the Debian package path).
    root: str | None = None
    #: split to evaluate on.
    split: str = "test"
    #: split to train on, when ``training`` is set.
    train_split: str = "train"
    #: DataLoader workers for decoding.
    num_workers: int = 0
    #: ``imagenet_o`` only: the ImageNet val folder; its images of ImageNet-O's 200 classes are the
    #: in-distribution set.
    in_root: str | None = None


@dataclass
class CleanNoiseConfig:
    name: str = "clean"


@dataclass
class CorruptionNoiseConfig:
    """ImageNet-C corruptions generated on the fly."""

    name: str = "imagenet_c"
    #: corruption names; ``null`` means every implemented corruption
    corruptions: list[str] | None = None
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    seed: int = 0
    #: severity parameters: imagenet (224 px), cifar (32 px), tiny (64 px) or auto (by image size)
    params: str = "auto"
    #: pass corrupted images through the released set's uint8 truncation + JPEG q85 save
    released_format: bool = False


@dataclass
class PerturbationNoiseConfig:
    """ImageNet-P sequences: generated on the fly from clean images, or read with ``data=imagenet_p``."""

    name: str = "imagenet_p"
    #: perturbation names; ``null`` means the 10 test perturbations
    perturbations: list[str] | None = None
    #: noise perturbations: strength 1..3; the others: step between compared frames
    difficulties: list[int] = field(default_factory=lambda: [1])
    seed: int = 0
    #: frames of every sequence in a batch per forward pass (memory is bounded by batch x chunk)
    chunk: int = 8
    #: a finished run (folder, or run id in the results folder) whose fp / t5d normalise nmfp and mt5d
    baseline_run: str | None = None
    #: schedules: imagenet (ImageNet-P), cifar (CIFAR-10-P), tiny (Tiny-ImageNet-P) or auto (by frame size)
    params: str = "auto"


@dataclass
class SystemNoiseConfig:
    """ImageNet-S: every decoder x resizer combination (see ``noise.system``)."""

    name: str = "imagenet_s"
    #: decoders (pil, opencv, torchvision, ffmpeg); ``null``: all. ffmpeg needs ``robustart[system]``.
    decoders: list[str] | None = None
    #: resizers (``noise.system.RESIZERS``: 6 PIL filters, 5 OpenCV flags, 4 torch modes); ``null``: all.
    resizers: list[str] | None = None
    #: resize both sides to size / crop_pct (RobustART's ImageNet-S) instead of the shorter side
    square: bool = False
    #: the crop's share of the resized image; ``null``: the model's own. In-memory images are resampled to
    #: size / crop_pct and back (``null``: 0.875, 28 -> 32 -> 28 px)
    crop_pct: float | None = None
    #: in-memory images (fashion_mnist): the codec of each library's round trip, jpeg or png
    codec: str = "jpeg"


@dataclass
class PgdNoiseConfig:
    """Projected gradient descent; ``eps`` written as users write them (``"4/255"``)."""

    name: str = "pgd_linf"
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "8/255"])
    steps: int = 20
    #: step size as a fraction of eps (RobustART: 3/40).
    rel_stepsize: float = 0.075
    random_start: bool = True
    seed: int = 0
    #: also record the accuracy after every step (``robust_acc_vs_steps`` rows)
    iteration_curve: bool = False


@dataclass
class FgsmNoiseConfig:
    name: str = "fgsm"
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "8/255"])
    seed: int = 0


@dataclass
class PgdL2NoiseConfig:
    """PGD-L2 via torchattacks; budgets in L2 units on [0, 1] pixels."""

    name: str = "pgd_l2"
    eps: list[str] = field(default_factory=lambda: ["0.5", "2.0", "8.0"])
    steps: int = 20
    rel_stepsize: float = 0.075
    random_start: bool = True
    seed: int = 0
    iteration_curve: bool = False


@dataclass
class MimNoiseConfig:
    """Momentum iterative FGSM (Linf) via torchattacks; RobustART's absolute step 0.002."""

    name: str = "mim"
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "8/255"])
    steps: int = 20
    step_size: str = "0.002"
    decay: float = 1.0
    seed: int = 0
    iteration_curve: bool = False


@dataclass
class ApgdNoiseConfig:
    """APGD-CE via pyautoattack (``apgd_l1``: the same with the L1 norm and L1 budgets)."""

    name: str = "apgd_ce"
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "8/255"])
    norm: str = "Linf"
    steps: int = 100
    restarts: int = 1
    seed: int = 0


@dataclass
class ApgdL1NoiseConfig:
    name: str = "apgd_l1"
    eps: list[str] = field(default_factory=lambda: ["100", "400", "1600"])
    steps: int = 100
    restarts: int = 1
    seed: int = 0


@dataclass
class ApgdTargetedNoiseConfig:
    """Targeted APGD-DLR via pyautoattack, against the ``target_classes`` likeliest wrong classes."""

    name: str = "apgd_t"
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "8/255"])
    norm: str = "Linf"
    steps: int = 100
    target_classes: int = 9
    seed: int = 0


@dataclass
class FabNoiseConfig:
    name: str = "fab"
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "8/255"])
    norm: str = "Linf"
    steps: int = 100
    restarts: int = 1
    seed: int = 0


@dataclass
class SquareNoiseConfig:
    """Square attack (black-box) via pyautoattack; Linf or L2."""

    name: str = "square"
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "8/255"])
    norm: str = "Linf"
    queries: int = 5000
    seed: int = 0


@dataclass
class AutoAttackNoiseConfig:
    """AutoAttack via pyautoattack (standard: APGD-CE, APGD-T, FAB-T, Square)."""

    name: str = "autoattack"
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "4/255", "8/255"])
    norm: str = "Linf"
    version: str = "standard"
    seed: int = 0


@dataclass
class WcarNoiseConfig:
    """Worst-case robustness over ``attacks`` at shared budgets, as a cascade (cheapest attack first, each on
    the images still unbroken); ``options`` maps an attack to its own settings, e.g. ``{pgd_linf: {steps: 50}}``."""

    name: str = "wcar"
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd_linf", "mim", "autoattack"])
    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "8/255"])
    options: dict[str, Any] = field(default_factory=dict)
    #: false: every attack on every image (the reference the cascade reproduces, at full cost)
    cascade: bool = True
    seed: int = 0


@dataclass
class TransferNoiseConfig:
    """Transfer attack: examples crafted by ``attack`` on the ``source`` model, scored on the run's model."""

    name: str = "transfer"
    #: a zoo model name, or a finished run (its folder, or its id in the results folder) whose model to use
    source: str | None = None
    #: a zoo source's weights: ``pretrained`` (``null``), ``random`` or a file; a run source uses the run's own
    source_weights: str | None = None
    source_sha256: str | None = None
    #: the registered attack that crafts the examples on the source
    attack: str = "fgsm"
    #: budgets; ``null`` takes the attack's defaults (FGSM: RobustART's 0.5/255, 2/255, 8/255)
    eps: list[str] | None = None
    #: the attack's other options, e.g. ``{steps: 10}`` for pgd_linf
    attack_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class CwNoiseConfig:
    """Carlini-Wagner L2 via torchattacks: minimal perturbation, no budget; per-sample ``min_eps`` (L2)."""

    name: str = "cw"
    c: float = 1.0
    kappa: float = 0.0
    steps: int = 100
    lr: float = 0.01
    #: ``robust_acc_vs_eps`` grid: points from 0 to ``curve_max`` (``null``: the largest min_eps found)
    curve_points: int = 21
    curve_max: str | None = None


@dataclass
class DeepFoolNoiseConfig:
    """DeepFool via torchattacks: minimal perturbation, no budget; per-sample ``min_eps`` (L2)."""

    name: str = "deepfool"
    steps: int = 50
    overshoot: float = 0.02
    curve_points: int = 21
    curve_max: str | None = None


@dataclass
class MinEpsNoiseConfig:
    """ARES's per-sample minimal Linf budget of ``attacks`` (fgsm, pgd_linf, mim): exponential (FGSM: linear)
    search from ``init``, then bisection."""

    name: str = "min_eps"
    attacks: list[str] = field(default_factory=lambda: ["pgd_linf"])
    init: str = "0.5/255"
    search_steps: int = 5
    binsearch_steps: int = 10
    #: PGD / MIM iterations per trial, and their step as a fraction of the trial's budget (null: 1.5 / steps)
    steps: int = 20
    rel_stepsize: float | None = None
    decay: float = 1.0
    curve_points: int = 21
    #: end of the ``robust_acc_vs_eps`` grid; ``null``: the end of the search, ``init * 2**search_steps``
    curve_max: str | None = None


@dataclass
class SuiteNoiseConfig:
    """Several noises in one run. ``members`` maps a noise name to its options."""

    name: str = MISSING
    members: dict[str, Any] = field(default_factory=dict)


#: schema of each registered noise name, used to validate suite members too.
NOISE_SCHEMAS: dict[str, type] = {
    "clean": CleanNoiseConfig,
    "imagenet_c": CorruptionNoiseConfig,
    "imagenet_p": PerturbationNoiseConfig,
    "imagenet_s": SystemNoiseConfig,
    "pgd_linf": PgdNoiseConfig,
    "fgsm": FgsmNoiseConfig,
    "pgd_l2": PgdL2NoiseConfig,
    "mim": MimNoiseConfig,
    "apgd_ce": ApgdNoiseConfig,
    "apgd_l1": ApgdL1NoiseConfig,
    "apgd_t": ApgdTargetedNoiseConfig,
    "fab": FabNoiseConfig,
    "square": SquareNoiseConfig,
    "autoattack": AutoAttackNoiseConfig,
    "wcar": WcarNoiseConfig,
    "transfer": TransferNoiseConfig,
    "cw": CwNoiseConfig,
    "deepfool": DeepFoolNoiseConfig,
    "min_eps": MinEpsNoiseConfig,
}


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
    #: evaluate the first N samples of the split (``null``: all).
    max_samples: int | None = None
    #: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    device: str = "auto"
    #: mixed precision of every forward pass (attacks and scoring): ``null`` (float32), ``bf16`` (CUDA or CPU)
    #: or ``fp16`` (CUDA); logits are scored in float32 either way.
    amp: str | None = None
    #: channels-last memory layout for the model and the inputs (faster convolutions on recent GPUs).
    channels_last: bool = False


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
    cache_dir: str = "${oc.env:ROBUSTART_CACHE,'~/.cache/robustart'}"


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


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="robustart_schema", node=Config)
    cs.store(name="noise_schema_clean", node=CleanNoiseConfig)
    cs.store(name="noise_schema_corruption", node=CorruptionNoiseConfig)
    cs.store(name="noise_schema_perturbation", node=PerturbationNoiseConfig)
    cs.store(name="noise_schema_pgd", node=PgdNoiseConfig)
    cs.store(name="noise_schema_fgsm", node=FgsmNoiseConfig)
    cs.store(name="noise_schema_suite", node=SuiteNoiseConfig)
    for name in ("pgd_l2", "mim", "apgd_ce", "apgd_l1", "apgd_t", "fab", "square", "autoattack", "wcar"):
        cs.store(name=f"noise_schema_{name}", node=NOISE_SCHEMAS[name])
    for name in ("cw", "deepfool", "min_eps", "imagenet_s"):
        cs.store(name=f"noise_schema_{name}", node=NOISE_SCHEMAS[name])
    cs.store(name="noise_schema_transfer", node=TransferNoiseConfig)
