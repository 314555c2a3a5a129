"""Adversarial noise: attacks from torchattacks and pyautoattack behind the noise registry.

Budgets are in the units of the attack's norm on [0, 1] pixels (Linf at most 1) and can be written as
users write them (``"8/255"``). The defaults are RobustART's small / mid / large budgets per norm: Linf
{0.5, 2, 8}/255, L2 {0.5, 2, 8}, L1 {100, 400, 1600} (224 px images).

>>> from robustart.noise.adversarial import parse_eps
>>> round(parse_eps("8/255"), 6)
0.031373
"""

from __future__ import annotations

import torch

from robustart.noise.adversarial.attack_base import (
    NORMS,
    AutoAttackCall,
    TorchattacksNoise,
    check_budgets,
    check_norm,
    check_positive,
    parse_eps,
)
from robustart.noise.options import (
    ApgdCeOptions,
    ApgdL1Options,
    ApgdTOptions,
    AutoAttackOptions,
    FabOptions,
    FgsmOptions,
    MimOptions,
    PgdL2Options,
    PgdLinfOptions,
    SquareOptions,
)
from robustart.noise.registry import register_noise

__all__ = ["NORMS", "TRAINING_ATTACKS", "TorchattacksNoise", "check_budgets", "check_norm", "parse_eps",
           "training_attack"]  # fmt: skip


def _attack_class(iteration_curve: bool) -> type[TorchattacksNoise]:
    """:class:`TorchattacksNoise`, or its subclass that also records the accuracy after every attack step."""
    if not iteration_curve:
        return TorchattacksNoise
    from robustart.noise.adversarial.curves import IterationCurveNoise

    return IterationCurveNoise


@register_noise(options=PgdLinfOptions)
def pgd_linf(opts: PgdLinfOptions) -> TorchattacksNoise:
    """PGD with the Linf norm (Madry et al., 2018) via ``torchattacks.PGD``; step = rel_stepsize * eps."""
    import torchattacks

    steps, rel_stepsize, random_start = opts.steps, opts.rel_stepsize, opts.random_start
    if steps < 1:
        raise ValueError(f"pgd_linf: steps must be >= 1, got {steps}")
    if not rel_stepsize > 0:
        raise ValueError(f"pgd_linf: rel_stepsize must be > 0, got {rel_stepsize}")

    def build(model, e):
        return torchattacks.PGD(model, eps=e, alpha=rel_stepsize * e, steps=steps, random_start=random_start)

    return _attack_class(opts.iteration_curve)("pgd_linf", build, opts.eps, opts.seed, passes=steps)


@register_noise(options=FgsmOptions)
def fgsm(opts: FgsmOptions) -> TorchattacksNoise:
    """Fast gradient sign method (Goodfellow et al., 2015) via ``torchattacks.FGSM``."""
    import torchattacks

    return TorchattacksNoise("fgsm", lambda model, e: torchattacks.FGSM(model, eps=e), opts.eps, opts.seed, passes=1)


# ------------------------------------------------------------------------------------- more torchattacks attacks


@register_noise(options=PgdL2Options)
def pgd_l2(opts: PgdL2Options) -> TorchattacksNoise:
    """PGD with the L2 norm via ``torchattacks.PGDL2``; step = rel_stepsize * eps (``iteration_curve``: as PGD)."""
    import torchattacks

    steps, rel_stepsize, random_start = opts.steps, opts.rel_stepsize, opts.random_start
    check_positive("pgd_l2", "steps", steps)
    check_positive("pgd_l2", "rel_stepsize", rel_stepsize)

    def build(model, e):
        return torchattacks.PGDL2(model, eps=e, alpha=rel_stepsize * e, steps=steps, random_start=random_start)

    return _attack_class(opts.iteration_curve)("pgd_l2", build, opts.eps, opts.seed, norm="L2", passes=steps)


@register_noise(options=MimOptions)
def mim(opts: MimOptions) -> TorchattacksNoise:
    """Momentum iterative FGSM (Dong et al., 2018) via ``torchattacks.MIFGSM``, Linf (``iteration_curve``: as PGD).

    RobustART's settings: 20 steps of an absolute step size 0.002 with decay 1.0 (so at the smallest budget
    a step exceeds eps; the projection keeps the result inside the ball).
    """
    import torchattacks

    steps, decay = opts.steps, opts.decay
    check_positive("mim", "steps", steps)
    alpha = parse_eps(opts.step_size)
    check_positive("mim", "step_size", alpha)

    def build(model, e):
        return torchattacks.MIFGSM(model, eps=e, alpha=alpha, steps=steps, decay=decay)

    return _attack_class(opts.iteration_curve)("mim", build, opts.eps, opts.seed, passes=steps)


# ---------------------------------------------------------------------------------------------- pyautoattack


def _device(model) -> torch.device:
    return next(model.parameters()).device


@register_noise(options=ApgdCeOptions)
def apgd_ce(opts: ApgdCeOptions) -> TorchattacksNoise:
    """APGD with the cross-entropy loss (Croce & Hein, 2020) via pyautoattack's ``APGDAttack``."""
    from pyautoattack.autopgd_base import APGDAttack

    norm, steps, restarts, seed = opts.norm, opts.steps, opts.restarts, opts.seed
    check_norm("apgd_ce", norm)
    check_positive("apgd_ce", "steps", steps)
    check_positive("apgd_ce", "restarts", restarts)

    def build(model, e):
        attack = APGDAttack(model, n_iter=steps, norm=norm, n_restarts=restarts, eps=e, seed=seed, loss="ce",
                            device=_device(model))  # fmt: skip
        return AutoAttackCall(attack, "perturb")

    return TorchattacksNoise("apgd_ce", build, opts.eps, seed, norm=norm, passes=steps * restarts)


@register_noise(options=ApgdL1Options)
def apgd_l1(opts: ApgdL1Options) -> TorchattacksNoise:
    """APGD-CE with the L1 norm (Croce & Hein, 2021) via pyautoattack; RobustART's L1 budgets by default."""
    noise = apgd_ce(ApgdCeOptions(opts.eps, "L1", opts.steps, opts.restarts, opts.seed))
    noise.name = "apgd_l1"
    return noise


@register_noise(options=ApgdTOptions)
def apgd_t(opts: ApgdTOptions) -> TorchattacksNoise:
    """Targeted APGD with the DLR loss (Croce & Hein, 2020) via pyautoattack's ``APGDAttack_targeted``,
    against each of the ``target_classes`` most likely wrong classes in turn."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    norm, steps, target_classes, seed = opts.norm, opts.steps, opts.target_classes, opts.seed
    check_norm("apgd_t", norm)
    check_positive("apgd_t", "steps", steps)
    check_positive("apgd_t", "target_classes", target_classes)

    def build(model, e):
        attack = APGDAttack_targeted(model, n_iter=steps, norm=norm, eps=e, seed=seed, device=_device(model))
        attack.n_target_classes = target_classes
        return AutoAttackCall(attack, "perturb")

    return TorchattacksNoise("apgd_t", build, opts.eps, seed, norm=norm, passes=steps * target_classes)


@register_noise(options=FabOptions)
def fab(opts: FabOptions) -> TorchattacksNoise:
    """FAB (Croce & Hein, 2020), untargeted, via pyautoattack's ``FABAttack_PT``; budget-bounded."""
    from pyautoattack.fab_pt import FABAttack_PT

    norm, steps, restarts, seed = opts.norm, opts.steps, opts.restarts, opts.seed
    check_norm("fab", norm)
    check_positive("fab", "steps", steps)
    check_positive("fab", "restarts", restarts)

    def build(model, e):
        attack = FABAttack_PT(model, n_restarts=restarts, n_iter=steps, eps=e, seed=seed, norm=norm,
                              device=_device(model))  # fmt: skip
        return AutoAttackCall(attack, "perturb")

    return TorchattacksNoise("fab", build, opts.eps, seed, norm=norm, passes=2 * steps * restarts)


@register_noise(options=SquareOptions)
def square(opts: SquareOptions) -> TorchattacksNoise:
    """Square attack (Andriushchenko et al., 2020), black-box (queries only), via pyautoattack."""
    from pyautoattack.square import SquareAttack

    norm, queries, seed = opts.norm, opts.queries, opts.seed
    check_norm("square", norm, ("Linf", "L2"))
    check_positive("square", "queries", queries)

    def build(model, e):
        attack = SquareAttack(model, p_init=0.8, n_queries=queries, eps=e, norm=norm, n_restarts=1, seed=seed,
                              device=_device(model), resc_schedule=False)  # fmt: skip
        return AutoAttackCall(attack, "perturb")

    return TorchattacksNoise("square", build, opts.eps, seed, norm=norm, passes=queries)


@register_noise(options=AutoAttackOptions)
def autoattack(opts: AutoAttackOptions) -> TorchattacksNoise:
    """AutoAttack (Croce & Hein, 2020) via pyautoattack: ``standard`` runs APGD-CE, APGD-T, FAB-T and Square
    on the samples still unbroken."""
    from pyautoattack import AutoAttack

    norm, version, seed = opts.norm, opts.version, opts.seed
    check_norm("autoattack", norm)
    if version not in ("standard", "plus", "rand"):
        raise ValueError(f"attack 'autoattack': version must be standard, plus or rand, got {version!r}")

    def build(model, e):
        attack = AutoAttack(model, eps=e, norm=norm, version=version, seed=seed, device=_device(model))
        attack.verbose = False
        return AutoAttackCall(attack, "standard")

    # APGD-CE, 9 x APGD-T, 9 x FAB-T (two passes a step) and Square, as run on an image they cannot break
    return TorchattacksNoise("autoattack", build, opts.eps, seed, norm=norm, passes=100 + 900 + 1800 + 5000)


# ------------------------------------------------------------------------------------------ for training


TRAINING_ATTACKS = ("pgd", "fgsm", "trades")


def training_attack(method: str, model, eps: float, steps: int = 10, step_size: float | None = None,
                    random_start: bool = True):  # fmt: skip
    """The torchattacks attack that adversarial training runs on each batch (Linf, pixels in [0, 1]).

    - ``pgd``: ``torchattacks.PGD`` (Madry et al., 2018); its cross-entropy also takes soft targets, so a batch
      mixed by Mixup/CutMix is attacked against its mixed labels (ARES-Bench's recipe).
    - ``fgsm``: ``torchattacks.FFGSM``, one signed-gradient step from a uniform random start (Wong et al., 2020,
      "fast adversarial training"); ``step_size`` defaults to their 1.25 eps.
    - ``trades``: ``torchattacks.TPGD``, PGD on the KL divergence to the clean prediction (Zhang et al., 2019).

    ``step_size`` defaults to 2.5 eps / steps for the iterative attacks. The attack switches ``model`` to eval
    mode while it runs (batch-norm statistics are not updated by attack steps) and back afterwards.
    """
    import torchattacks

    if method not in TRAINING_ATTACKS:
        raise ValueError(f"adversarial training method must be one of {TRAINING_ATTACKS}, got {method!r}")
    check_budgets(method, "Linf", [eps])
    if not eps > 0:
        raise ValueError(f"adversarial training: eps must be > 0, got {eps}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"adversarial training: steps must be an integer >= 1, got {steps!r}")
    if method == "fgsm":
        return torchattacks.FFGSM(model, eps=eps, alpha=1.25 * eps if step_size is None else step_size)
    alpha = 2.5 * eps / steps if step_size is None else step_size
    if method == "trades":
        return torchattacks.TPGD(model, eps=eps, alpha=alpha, steps=steps)
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)


# the noises that build on the attacks above: wcar, transfer, and cw, deepfool and min_eps
from robustart.noise.adversarial import cascade, minimal, transfer  # noqa: E402, F401
