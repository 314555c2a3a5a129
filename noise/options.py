"""Every built-in noise's options, declared once: one dataclass per noise, with its defaults and its place in a
run's identity (``field(metadata={"identity": ...})``, see :data:`~robustart.noise.registry.OMIT_DEFAULT`).

This module imports no PyTorch and none of the noises' code, so the command line composes, checks and names a
run from these dataclasses before any work starts (:func:`robustart.config.register_configs`,
:func:`robustart.identity.noise_options`). Each noise's factory, next to its implementation, takes one instance of
its dataclass and registers with ``@register_noise(options=<the dataclass>)`` (:mod:`robustart.noise.factories`).
The constants the defaults use live here too; the noises' modules import them from here.

The results' protocol columns (``norm``, ``steps``, ``restarts``, ``random_start``, ``targeted``, ``step_size``,
``param_set``, ``source_model``; see :data:`robustart.store.PROTOCOL_COLUMNS`) are declared here as well: an option
whose name is a protocol column fills it, ``field(metadata={"protocol": "<column>"})`` maps an option of another
name onto one, and a class's ``PROTOCOL`` holds what its options do not say (FGSM takes one step; PGD-Linf's norm).
``step_size: "eps"`` means one step of the whole budget; ``rel_stepsize`` gives ``step_size = rel_stepsize * eps``
(:func:`robustart.evaluation.protocol.protocol_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from robustart.noise.registry import noise_options

#: RobustART's small / mid / large budgets per norm (224 px images)
LINF_EPS, L2_EPS, L1_EPS = ("0.5/255", "2/255", "8/255"), ("0.5", "2.0", "8.0"), ("100", "400", "1600")
#: ImageNet-C's severities
SEVERITIES = (1, 2, 3, 4, 5)
#: the transfer noise's name (and the ``noise`` column of its results)
TRANSFER = "transfer"
#: the results' protocol columns that a noise's options fill (see the module's docstring)
NOISE_PROTOCOL = ("norm", "steps", "restarts", "step_size", "random_start", "targeted", "param_set", "source_model")


@noise_options("clean", kind="none")
@dataclass
class CleanOptions:
    """The clean evaluation takes no options."""


# --------------------------------------------------------------------------- adversarial: torchattacks (adversarial/)


@noise_options("pgd_linf", kind="adversarial")
@dataclass
class PgdLinfOptions:
    """PGD-Linf; ``eps`` written as users write them (``"4/255"``)."""

    PROTOCOL: ClassVar[dict[str, Any]] = {"norm": "Linf", "restarts": 1, "targeted": False}

    eps: list[str] = field(default_factory=lambda: list(LINF_EPS))
    steps: int = 20
    #: step size as a fraction of eps (RobustART: 3/40)
    rel_stepsize: float = 0.075
    random_start: bool = True
    seed: int = 0
    #: also record the accuracy after every step (``robust_acc_vs_steps`` rows,
    #: :mod:`~robustart.noise.adversarial.curves`)
    iteration_curve: bool = False


@noise_options("fgsm", kind="adversarial")
@dataclass
class FgsmOptions:
    PROTOCOL: ClassVar[dict[str, Any]] = {
        "norm": "Linf",
        "steps": 1,
        "restarts": 1,
        "step_size": "eps",
        "random_start": False,
        "targeted": False,
    }

    eps: list[str] = field(default_factory=lambda: list(LINF_EPS))
    seed: int = 0


@noise_options("pgd_l2", kind="adversarial")
@dataclass
class PgdL2Options(PgdLinfOptions):
    """PGD-L2; budgets in L2 units on [0, 1] pixels (the other options as PGD-Linf's)."""

    PROTOCOL: ClassVar[dict[str, Any]] = {"norm": "L2", "restarts": 1, "targeted": False}

    eps: list[str] = field(default_factory=lambda: list(L2_EPS))


@noise_options("mim", kind="adversarial")
@dataclass
class MimOptions:
    """MIM, Linf; RobustART's absolute step 0.002 (a string, like the budgets: ``"1/255"`` works too)."""

    PROTOCOL: ClassVar[dict[str, Any]] = {"norm": "Linf", "restarts": 1, "random_start": False, "targeted": False}

    eps: list[str] = field(default_factory=lambda: list(LINF_EPS))
    steps: int = 20
    step_size: str = "0.002"
    decay: float = 1.0
    seed: int = 0
    iteration_curve: bool = False


# ------------------------------------------------------------------------- adversarial: pyautoattack (adversarial/)


@noise_options("apgd_ce", kind="adversarial")
@dataclass
class ApgdCeOptions:
    PROTOCOL: ClassVar[dict[str, Any]] = {"random_start": True, "targeted": False}

    eps: list[str] = field(default_factory=lambda: list(LINF_EPS))
    #: Linf, L2 or L1
    norm: str = "Linf"
    steps: int = 100
    restarts: int = 1
    seed: int = 0


@noise_options("apgd_l1", kind="adversarial")
@dataclass
class ApgdL1Options:
    PROTOCOL: ClassVar[dict[str, Any]] = {"norm": "L1", "random_start": True, "targeted": False}

    eps: list[str] = field(default_factory=lambda: list(L1_EPS))
    steps: int = 100
    restarts: int = 1
    seed: int = 0


@noise_options("apgd_t", kind="adversarial")
@dataclass
class ApgdTOptions:
    PROTOCOL: ClassVar[dict[str, Any]] = {"restarts": 1, "random_start": True, "targeted": True}

    eps: list[str] = field(default_factory=lambda: list(LINF_EPS))
    norm: str = "Linf"
    steps: int = 100
    #: the likeliest wrong classes attacked in turn
    target_classes: int = 9
    seed: int = 0


@noise_options("fab", kind="adversarial")
@dataclass
class FabOptions:
    PROTOCOL: ClassVar[dict[str, Any]] = {"targeted": False}

    eps: list[str] = field(default_factory=lambda: list(LINF_EPS))
    norm: str = "Linf"
    steps: int = 100
    restarts: int = 1
    seed: int = 0


@noise_options("square", kind="adversarial")
@dataclass
class SquareOptions:
    PROTOCOL: ClassVar[dict[str, Any]] = {"restarts": 1, "random_start": True, "targeted": False}

    eps: list[str] = field(default_factory=lambda: list(LINF_EPS))
    #: Linf or L2
    norm: str = "Linf"
    queries: int = field(default=5000, metadata={"protocol": "steps"})
    seed: int = 0


@noise_options("autoattack", kind="adversarial")
@dataclass
class AutoAttackOptions:
    """RobustART's Linf budgets plus 4/255 (the common ImageNet budget; 8/255 is CIFAR's)."""

    eps: list[str] = field(default_factory=lambda: ["0.5/255", "2/255", "4/255", "8/255"])
    norm: str = "Linf"
    #: standard, plus or rand
    version: str = "standard"
    seed: int = 0


# ---------------------------------------------------- adversarial: built on the attacks (cascade, transfer, minimal)


@noise_options("wcar", kind="adversarial")
@dataclass
class WcarOptions:
    """Attacks at shared budgets; ``options`` maps an attack to its own settings, e.g. ``{pgd_linf: {steps: 50}}``."""

    PROTOCOL: ClassVar[dict[str, Any]] = {"norm": "Linf"}

    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd_linf", "mim", "autoattack"])
    eps: list[str] = field(default_factory=lambda: list(LINF_EPS))
    options: dict[str, Any] = field(default_factory=dict)
    #: false: every attack on every image (the reference the cascade reproduces, at full cost)
    cascade: bool = True
    seed: int = 0


@noise_options(TRANSFER, kind="adversarial")
@dataclass
class TransferOptions:
    """Examples crafted by ``attack`` on the ``source`` model, scored on the run's model."""

    #: a zoo model name, or a finished run (its folder, or its id in the results folder) whose model to use; from
    #: Python also the source ``nn.Module`` itself
    source: str | None = field(default=None, metadata={"protocol": "source_model"})
    #: a zoo source's weights: ``pretrained`` (``null``), ``random`` or a file; a run source uses the run's own
    source_weights: str | None = None
    source_sha256: str | None = None
    #: the registered attack that crafts the examples on the source (``fgsm``, ``pgd_linf``, ``mim``, ``apgd_ce``...)
    attack: str = "fgsm"
    #: budgets; ``null`` takes the attack's defaults (FGSM: RobustART's 0.5/255, 2/255, 8/255), in its norm's units
    eps: list[str] | None = None
    #: the attack's other options, e.g. ``{steps: 10}`` for pgd_linf
    attack_options: dict[str, Any] = field(default_factory=dict)
    #: the attack's seed
    seed: int = 0


@noise_options("cw", kind="adversarial")
@dataclass
class CwOptions:
    """Carlini-Wagner L2: no budget; per-sample ``min_eps`` (L2)."""

    PROTOCOL: ClassVar[dict[str, Any]] = {"norm": "L2", "targeted": False}

    #: weight of the misclassification term against the distance (torchattacks does no binary search over it)
    c: float = 1.0
    #: the required logit margin
    kappa: float = 0.0
    #: steps and learning rate of its Adam optimiser
    steps: int = 100
    lr: float = 0.01
    #: ``robust_acc_vs_eps`` grid: points from 0 to ``curve_max`` (``null``: the largest min_eps found)
    curve_points: int = 21
    curve_max: str | None = None


@noise_options("deepfool", kind="adversarial")
@dataclass
class DeepFoolOptions:
    """DeepFool: no budget; per-sample ``min_eps`` (L2)."""

    PROTOCOL: ClassVar[dict[str, Any]] = {"norm": "L2", "targeted": False}

    steps: int = 50
    overshoot: float = 0.02
    #: ``robust_acc_vs_eps`` grid, as cw's
    curve_points: int = 21
    curve_max: str | None = None


@noise_options("min_eps", kind="adversarial")
@dataclass
class MinEpsOptions:
    """ARES's per-sample minimal Linf budget of each of ``attacks`` (see
    :func:`~robustart.noise.adversarial.minimal.search_min_eps`)."""

    PROTOCOL: ClassVar[dict[str, Any]] = {"norm": "Linf", "targeted": False}

    #: any of ``fgsm``, ``pgd_linf``, ``mim`` (torchattacks); one condition each
    attacks: list[str] = field(default_factory=lambda: ["pgd_linf"])
    #: the first budget tried (ARES's ``--distortion``); the search reaches ``init * 2**search_steps``
    init: str = "0.5/255"
    #: doublings of the budget (FGSM: ``2**search_steps`` linear steps), then bisections of the bracket found
    search_steps: int = 5
    binsearch_steps: int = 10
    #: PGD / MIM iterations per trial, and their step as a fraction of the trial's budget (null: 1.5 / steps, ARES)
    steps: int = 20
    rel_stepsize: float | None = None
    #: MIM's momentum decay
    decay: float = 1.0
    #: ``robust_acc_vs_eps`` grid: its points, and its end (``null``: the end of the search, ``init * 2**search_steps``)
    curve_points: int = 21
    curve_max: str | None = None


# ------------------------------------------------------------------------------------------------ natural (natural/)


@noise_options("imagenet_c", kind="natural")
@dataclass
class ImagenetCOptions:
    """ImageNet-C corruptions x severities, generated on the fly."""

    #: corruption names; ``null``: every implemented corruption (:data:`~robustart.noise.natural.CORRUPTIONS`)
    corruptions: list[str] | None = None
    severities: list[int] = field(default_factory=lambda: list(SEVERITIES))
    seed: int = 0
    #: severity parameters: imagenet (224 px), cifar (CIFAR-10-C, 32 px), tiny (64 px) or auto (by image size)
    params: str = field(default="auto", metadata={"protocol": "param_set"})
    #: pass each corrupted image through the released set's uint8 truncation and JPEG quality-85 save, so the
    #: numbers compare with evaluations on the released files
    released_format: bool = False


@noise_options("imagenet_p", kind="natural")
@dataclass
class ImagenetPOptions:
    """ImageNet-P sequences: generated on the fly from clean images, or read with ``data=imagenet_p``."""

    #: perturbation names; ``null``: the 10 test perturbations
    perturbations: list[str] | None = None
    #: noise perturbations: strength 1..3; the others: step between compared frames
    difficulties: list[int] = field(default_factory=lambda: [1])
    seed: int = 0
    #: frames of every sequence in a batch per forward pass (memory is bounded by batch x chunk)
    chunk: int = 8
    #: a finished run (folder, or run id in the results folder) of another model on the same perturbations, whose
    #: ``fp`` / ``t5d`` normalise ``nmfp`` and ``mt5d``
    baseline_run: str | None = None
    #: schedules: imagenet (ImageNet-P), cifar (CIFAR-10-P), tiny (Tiny-ImageNet-P) or auto (by frame size)
    params: str = field(default="auto", metadata={"protocol": "param_set"})


# -------------------------------------------------------------------------------------------------- system (system/)


@noise_options("imagenet_s", kind="system")
@dataclass
class ImagenetSOptions:
    """ImageNet-S: every decoder x resizer combination."""

    #: decoders (pil, opencv, torchvision, ffmpeg); ``null``: all. ffmpeg needs ``robustart[system]``.
    decoders: list[str] | None = None
    #: resizers (:data:`~robustart.noise.system.RESIZERS`: 6 PIL filters, 5 OpenCV flags, 4 torch modes); ``null``: all.
    resizers: list[str] | None = None
    #: resize both sides to size / crop_pct (RobustART's ImageNet-S) instead of the shorter side
    square: bool = False
    #: the crop's share of the resized image; ``null``: the model's own. In-memory images are resampled to
    #: size / crop_pct and back (``null``: 0.875, 28 -> 32 -> 28 px)
    crop_pct: float | None = None
    #: in-memory images (fashion_mnist): the codec of each library's round trip, jpeg or png
    codec: str = "jpeg"
