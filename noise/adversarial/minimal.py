"""Minimal adversarial budgets per sample: the attack side of ARES's accuracy-vs-budget curves.

Two kinds of noise record, for every sample, ``min_eps``: the smallest perturbation found to change its
prediction (0 for a sample misclassified when clean, NaN where the attack never changed it):

- ``cw`` and ``deepfool``, minimal-perturbation attacks (torchattacks ``CW``, ``DeepFool``): no budget;
  ``min_eps`` is the L2 norm of the perturbation they find.
- ``min_eps``, ARES's search for the smallest budget at which a budgeted attack (``fgsm``, ``pgd_linf``,
  ``mim`` from torchattacks, Linf) succeeds, per sample (:func:`search_min_eps`).

The noises only record ``min_eps`` (:meth:`MinimalPerturbationNoise.measured`); the evaluation joins it onto
``predictions.parquet`` and adds the budget-curve rows to ``metrics.parquet`` (see
:mod:`robustart.evaluation.noise_rows`). The images these noises return
are the adversarial examples at ``min_eps`` (the clean image for a sample misclassified already, the
strongest failed attempt where the attack never succeeded), so the run's ``acc`` row of such a condition is
the share of samples never broken.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robustart.noise.adversarial.attack_base import check_budgets, parse_eps
from robustart.noise.base import Condition, Noise
from robustart.noise.options import CwOptions, DeepFoolOptions, MinEpsOptions
from robustart.noise.registry import register_noise

#: attacks the budget search can drive: torchattacks Linf attacks taking a budget ``eps``
SEARCHABLE = ("fgsm", "pgd_linf", "mim")


def _check(name: str, what: str, ok: bool, value, rule: str) -> None:
    if isinstance(value, bool) or not ok:
        raise ValueError(f"noise {name!r}: {what} must be {rule}, got {value!r}")


def _predictions(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(dim=1)


class MinimalPerturbationNoise(Noise):
    """A noise that measures a per-sample minimal budget ``min_eps`` under each of its conditions.

    Subclasses call :meth:`record` from ``apply``; this class keeps the records per condition (:meth:`measured`),
    which the evaluation turns into the ``min_eps`` column of the predictions and the curve rows of the metrics.

    Args:
        name: registry name (the results' ``noise`` column).
        curve_points: points of the ``robust_acc_vs_eps`` grid, from 0 to :meth:`curve_upper`.
        curve_max: the grid's largest budget; ``None``: the subclass's default (:meth:`curve_upper`).
    """

    needs_model = True
    recorded = ("_records",)

    def __init__(self, name: str, curve_points: int = 21, curve_max: float | str | None = None) -> None:
        _check(
            name, "curve_points", isinstance(curve_points, int) and curve_points >= 2, curve_points, "an integer >= 2"
        )
        self.name = name
        self.curve_points = curve_points
        self.curve_max = None if curve_max is None else parse_eps(curve_max)
        if self.curve_max is not None:
            _check(name, "curve_max", self.curve_max > 0, curve_max, "> 0")
        self._records: dict[Condition, list[tuple[np.ndarray, np.ndarray]]] = {}

    def record(self, condition: Condition, sample_ids: torch.Tensor, min_eps: torch.Tensor) -> None:
        """Keep the ``min_eps`` of a batch (float, NaN where never broken) for ``condition``."""
        ids = sample_ids.detach().cpu().numpy().astype(np.int64)
        self._records.setdefault(condition, []).append((ids, min_eps.detach().cpu().double().numpy()))

    def curve_upper(self) -> float | None:
        """The end of the budget grid; ``None``: the largest finite ``min_eps`` of each condition."""
        return self.curve_max

    def measured(self) -> dict[Condition, tuple[np.ndarray, np.ndarray]]:
        """Per condition, in the order measured: ``(sample_ids, min_eps)`` (int64, float64 with NaN where never
        broken); a sample measured twice keeps its latest value."""
        out = {}
        for cond, parts in self._records.items():
            ids = np.concatenate([i for i, _ in parts])
            values = np.concatenate([v for _, v in parts])
            _, last = np.unique(ids[::-1], return_index=True)
            keep = np.sort(len(ids) - 1 - last)
            out[cond] = ids[keep], values[keep]
        return out

    def report(self) -> dict:
        """Per condition: samples measured, misclassified when clean, never broken."""
        out = {
            cond.name: {"samples": len(values), "clean_wrong": int((values == 0).sum()),
                        "never_broken": int(np.isnan(values).sum())}
            for cond, (_, values) in self.measured().items()
        }  # fmt: skip
        return {"min_eps": out} if out else {}


# ---------------------------------------------------------------------------------- minimal-perturbation attacks


class UnboundedAttackNoise(MinimalPerturbationNoise):
    """A minimal-perturbation attack from torchattacks (no budget): ``min_eps`` is the L2 norm of the
    perturbation it returns where that changes the prediction.

    Args:
        name: registry name; also the condition's name.
        build: ``build(model) -> torchattacks.Attack``.
    """

    def __init__(self, name: str, build: Callable, curve_points: int = 21, curve_max: float | str | None = None):
        super().__init__(name, curve_points, curve_max)
        self.build = build

    def conditions(self) -> list[Condition]:
        return [Condition(self.name, self.name)]

    def apply(self, images, labels, sample_ids, condition, model=None):
        if model is None:
            raise ValueError(f"attack {self.name!r} needs the model")
        clean_wrong = _predictions(model, images) != labels
        with torch.enable_grad():
            adv = self.build(model)(images, labels).detach()
        adv = torch.where(clean_wrong.view(-1, *([1] * (images.dim() - 1))), images, adv)
        broken = _predictions(model, adv) != labels
        norms = (adv - images).flatten(1).double().norm(dim=1)
        min_eps = torch.where(broken, norms, torch.full_like(norms, math.nan))
        self.record(condition, sample_ids, torch.where(clean_wrong, torch.zeros_like(norms), min_eps))
        return adv


@register_noise(options=CwOptions)
def cw(opts: CwOptions) -> UnboundedAttackNoise:
    """Carlini & Wagner's L2 attack (2017) via ``torchattacks.CW``: minimal perturbation, ``min_eps`` = its L2 norm."""
    import torchattacks

    c, kappa, steps, lr = opts.c, opts.kappa, opts.steps, opts.lr
    _check("cw", "c", isinstance(c, (int, float)) and c > 0, c, "> 0")
    _check("cw", "kappa", isinstance(kappa, (int, float)) and kappa >= 0, kappa, ">= 0")
    _check("cw", "steps", isinstance(steps, int) and steps >= 1, steps, "an integer >= 1")
    _check("cw", "lr", isinstance(lr, (int, float)) and lr > 0, lr, "> 0")

    def build(model):
        return torchattacks.CW(model, c=c, kappa=kappa, steps=steps, lr=lr)

    return UnboundedAttackNoise("cw", build, opts.curve_points, opts.curve_max)


@register_noise(options=DeepFoolOptions)
def deepfool(opts: DeepFoolOptions) -> UnboundedAttackNoise:
    """DeepFool (Moosavi-Dezfooli et al., 2016) via ``torchattacks.DeepFool``: minimal L2 perturbation.

    torchattacks computes the full Jacobian (one backward pass per class) for every image and step: quick
    on 10 classes, slow on ImageNet's 1000.
    """
    import torchattacks

    steps, overshoot = opts.steps, opts.overshoot
    _check("deepfool", "steps", isinstance(steps, int) and steps >= 1, steps, "an integer >= 1")
    _check("deepfool", "overshoot", isinstance(overshoot, (int, float)) and overshoot >= 0, overshoot, ">= 0")

    def build(model):
        return torchattacks.DeepFool(model, steps=steps, overshoot=overshoot)

    return UnboundedAttackNoise("deepfool", build, opts.curve_points, opts.curve_max)


# ---------------------------------------------------------------------------------------------- budget search


@dataclass
class SearchResult:
    """What :func:`search_min_eps` found for a batch.

    Attributes:
        min_eps: float64 per sample: the smallest budget at which the attack succeeded, 0 where the clean
            image is misclassified, NaN where no budget tried succeeded.
        below: float64 per sample: the largest budget tried at which the attack failed (where broken, the lower
            end of the final bracket, below ``min_eps``; 0 if none was tried; NaN for misclassified clean images).
        adv: the attack's output at ``min_eps``; where never broken, at the largest budget tried.
        trials: attack runs on the batch.
    """

    min_eps: torch.Tensor
    below: torch.Tensor
    adv: torch.Tensor
    trials: int


def search_min_eps(
    attack: Callable[[torch.Tensor], torch.Tensor],
    is_broken: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    init: float,
    search_steps: int = 5,
    binsearch_steps: int = 10,
    linear: bool = False,
) -> SearchResult:
    """ARES's per-sample search for the smallest budget at which ``attack`` changes the prediction.

    Every trial attacks the whole batch, each sample at its own budget. Then:

    - exponential (``linear=False``; ARES's BIM / PGD / MIM): budgets ``init * 2**j`` for ``j = 0 ..
      search_steps - 1``, stopping per sample at the first success; a sample never broken goes on with the
      bracket ``[init * 2**(search_steps - 1), init * 2**search_steps]``;
    - linear (``linear=True``; ARES's FGSM, which does not play well with doubling): budgets
      ``init * k`` for ``k = 2**search_steps`` down to 1; the smallest success ``init * k`` gives the
      bracket ``[init * (k - 1), init * k]``; a sample broken at none stays NaN;
    - then ``binsearch_steps`` bisections of each bracket: the midpoint replaces the upper end if the
      attack succeeds there, else the lower end.

    ``min_eps`` is the upper end where some trial succeeded (unlike ARES, which stores the measured norm of
    the perturbation: for these Linf attacks the two agree unless clipping to [0, 1] shortens every step).

    Args:
        attack: ``attack(eps) -> adversarial images`` for per-sample budgets ``eps`` of shape ``(n, 1, 1, 1)``.
        is_broken: ``is_broken(images) -> bool per sample``, the prediction differs from the label.
        images: the clean batch ``(n, C, H, W)``.
        init: the first budget (ARES's ``--distortion``), > 0.
        search_steps: doublings (or ``2**search_steps`` linear steps).
        binsearch_steps: bisection steps.
        linear: linear instead of exponential search.
    """
    n, device = len(images), images.device
    f64 = {"dtype": torch.float64, "device": device}
    broken0 = is_broken(images)
    active = ~broken0
    found = torch.zeros(n, dtype=torch.bool, device=device)
    lo, hi = torch.zeros(n, **f64), torch.full((n,), float(init), **f64)
    hi[broken0] = 0.0
    best, fallback = images.clone(), images.clone()
    fallback_eps = torch.zeros(n, **f64)
    trials = 0

    def per_row(values: torch.Tensor) -> torch.Tensor:
        return values.view(n, *([1] * (images.dim() - 1)))

    def run(eps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attack at per-sample ``eps``; keep the outputs of the samples in ``mask``; (successes, failures)."""
        nonlocal trials
        trials += 1
        adv = attack(per_row(eps.to(images.dtype)))
        # a sample whose gradient vanished can come back NaN (MIM divides by the mean |gradient|): no step
        adv = torch.where(per_row(torch.isfinite(adv).flatten(1).all(1)), adv, images)
        succ = is_broken(adv) & mask
        fail = mask & ~succ
        best[succ] = adv[succ]
        stronger = fail & (eps >= fallback_eps)
        fallback[stronger], fallback_eps[stronger] = adv[stronger], eps[stronger]
        return succ, fail

    if linear:
        for k in range(2**search_steps, 0, -1):
            if not active.any():
                break
            succ, _ = run(torch.where(active, init * k, hi), active)
            hi[succ] = init * k
            found |= succ
        lo = torch.where(found, hi - init, lo)
        bisect = active & found
    else:
        for _ in range(search_steps):
            todo = active & ~found
            if not todo.any():
                break
            succ, fail = run(hi, todo)
            found |= succ
            lo[fail] = hi[fail]
            hi[fail] *= 2
        bisect = active
    for _ in range(binsearch_steps):
        if not bisect.any():
            break
        mid = (lo + hi) / 2
        succ, fail = run(torch.where(bisect, mid, hi), bisect)
        hi[succ], lo[fail] = mid[succ], mid[fail]
        found |= succ
    min_eps = torch.where(found, hi, torch.full_like(hi, math.nan))
    min_eps[broken0] = 0.0
    below = torch.where(broken0, torch.full_like(lo, math.nan), torch.where(found, lo, fallback_eps))
    adv = torch.where(per_row(found), best, fallback)
    return SearchResult(min_eps, below, adv, trials)


def library_attack(name: str, model: nn.Module, eps, steps: int = 20, rel_stepsize: float | None = None,
                   decay: float = 1.0):  # fmt: skip
    """The torchattacks attack ``name`` (one of :data:`SEARCHABLE`) at budget ``eps`` (a number, or a tensor
    of per-sample budgets shaped ``(n, 1, 1, 1)``), as the budget search runs it.

    PGD and MIM start from the clean image (no random start), so every trial is deterministic, and step
    ``rel_stepsize * eps`` (default ``1.5 / steps``, ARES's ``alpha = 1.5 * eps / iterations``).
    """
    import torchattacks

    alpha = (1.5 / steps if rel_stepsize is None else rel_stepsize) * eps
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if name == "pgd_linf":
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    if name == "mim":
        return torchattacks.MIFGSM(model, eps=eps, alpha=alpha, steps=steps, decay=decay)
    raise ValueError(
        f"noise 'min_eps': cannot search the budget of attack {name!r}; choose from {', '.join(SEARCHABLE)}"
    )


class MinEpsSearchNoise(MinimalPerturbationNoise):
    """The per-sample minimal Linf budget of each attack in ``attacks`` (see :func:`search_min_eps`); one
    condition per attack, named after it, with no budget of its own."""

    recorded = ("_records", "trials")

    def __init__(
        self,
        attacks: Sequence[str],
        init: float | str,
        search_steps: int,
        binsearch_steps: int,
        steps: int,
        rel_stepsize: float | None,
        decay: float,
        curve_points: int,
        curve_max: float | str | None,
    ) -> None:
        super().__init__("min_eps", curve_points, curve_max)
        if not attacks:
            raise ValueError(f"noise 'min_eps': attacks must list at least one of {', '.join(SEARCHABLE)}")
        unknown = [a for a in attacks if a not in SEARCHABLE]
        if unknown:
            raise ValueError(
                f"noise 'min_eps': cannot search the budget of {unknown}; choose from {', '.join(SEARCHABLE)}"
            )
        if len(set(attacks)) != len(attacks):
            raise ValueError(f"noise 'min_eps': attacks lists an attack twice: {list(attacks)}")
        self.attacks = list(attacks)
        self.init = parse_eps(init)
        _check("min_eps", "init", self.init > 0, init, "> 0")
        check_budgets("min_eps", "Linf", [self.init])
        for what, value in (("search_steps", search_steps), ("binsearch_steps", binsearch_steps)):
            _check("min_eps", what, isinstance(value, int) and value >= 0, value, "an integer >= 0")
        _check("min_eps", "steps", isinstance(steps, int) and steps >= 1, steps, "an integer >= 1")
        if rel_stepsize is not None:
            _check("min_eps", "rel_stepsize", rel_stepsize > 0, rel_stepsize, "> 0 (or null for 1.5 / steps)")
        _check("min_eps", "decay", decay >= 0, decay, ">= 0")
        self.search_steps, self.binsearch_steps = search_steps, binsearch_steps
        self.steps, self.rel_stepsize, self.decay = steps, rel_stepsize, decay
        self.trials: dict[str, int] = {}

    def conditions(self) -> list[Condition]:
        return [Condition(self.name, a) for a in self.attacks]

    def curve_upper(self) -> float:
        """The searched range's end, ``init * 2**search_steps``, unless ``curve_max`` says otherwise."""
        return self.curve_max if self.curve_max is not None else self.init * 2**self.search_steps

    def search(self, images, labels, condition: Condition, model: nn.Module) -> SearchResult:
        """:func:`search_min_eps` of the condition's attack on one batch."""

        def attack(eps):
            built = library_attack(condition.name, model, eps, self.steps, self.rel_stepsize, self.decay)
            with torch.enable_grad():
                return built(images, labels).detach()

        return search_min_eps(attack, lambda x: _predictions(model, x) != labels, images, self.init,
                              self.search_steps, self.binsearch_steps, linear=condition.name == "fgsm")  # fmt: skip

    def apply(self, images, labels, sample_ids, condition, model=None):
        if model is None:
            raise ValueError(f"noise {self.name!r} needs the model")
        found = self.search(images, labels, condition, model)
        self.record(condition, sample_ids, found.min_eps)
        self.trials[condition.name] = self.trials.get(condition.name, 0) + found.trials
        return found.adv

    def report(self) -> dict:
        out = super().report()
        if out:
            out["trials"] = dict(self.trials)
            out["searched_up_to"] = self.init * 2**self.search_steps
        return out


@register_noise(options=MinEpsOptions)
def min_eps(opts: MinEpsOptions) -> MinEpsSearchNoise:
    """ARES's per-sample minimal Linf budget of FGSM, PGD or MIM: exponential (FGSM: linear) then binary search."""
    return MinEpsSearchNoise(opts.attacks, opts.init, opts.search_steps, opts.binsearch_steps, opts.steps,
                             opts.rel_stepsize, opts.decay, opts.curve_points, opts.curve_max)  # fmt: skip
