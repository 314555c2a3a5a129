"""Worst-case adversarial robustness (WCAR) over a set of attacks, computed as a cascade.

RobustART's WCAR is the share of clean-correct images that every attack in a set fails to break. Running
every attack on every image wastes most of the work: an image broken by FGSM needs no AutoAttack. The
cascade runs the attacks from the cheapest to the strongest and gives each one only the images still
unbroken.

**Exactness.** Every attack of a cascade draws its random start per image (:mod:`.per_sample`), so the
result an attack gives an image does not depend on which other images share its call. The cascade
therefore breaks exactly the images that running every attack on every image would break. It returns the
same worst-case image too: an image broken at least once gets the output of the first attack (in cascade
order) that broke it, and an unbroken image gets the last attack's output. ``cascade=False`` runs that
reference, every attack on every image, with the same seeds. One caveat remains. Float kernels may sum
in a different order at a different batch size (about 1e-7 on L2 gradients here). Sign-based Linf steps
absorb that, and an image sitting that close to the decision boundary is the only case it could move.

**Records.** Per budget and image, the attack that broke it first (``broken_by``) and, per attack, whether
the image survived it (``outcomes``); the evaluation scores them (``broken_first`` rows, see
:mod:`robustart.evaluation.noise_rows`).

**Cost.** Each attack's forward and backward passes through the model are counted per image and reported
in the manifest (``noise_report``), next to the passes this noise spends on its own checks. The checks are
one clean forward pass and one forward pass per attack to see which images broke.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from robustart.noise.adversarial.attack_base import TorchattacksNoise, check_budgets, parse_eps
from robustart.noise.adversarial.per_sample import CountingModel, PassCounter
from robustart.noise.base import Condition, Noise
from robustart.noise.options import WcarOptions
from robustart.noise.registry import create_noise, get_noise_entry, register_noise

#: the worst-case condition's name and the attack recorded for images already wrong when clean
WCAR, CLEAN = "wcar", "clean"


class WorstCase(Noise):
    """Several attacks at shared budgets; per image, the worst case over them (see the module docstring).

    Args:
        attacks: the attack noises (built with these budgets); run in order of their nominal cost.
        eps: the budgets, in the attacks' shared norm.
        cascade: attack only the images still unbroken (``False``: every attack on every image).
    """

    needs_model = True
    recorded = ("checks.counts", "broken_by", "outcomes")

    def __init__(self, attacks: Sequence[TorchattacksNoise], eps: Sequence[float], cascade: bool = True) -> None:
        norms = {a.norm for a in attacks}
        if len(norms) > 1:
            raise ValueError(f"noise 'wcar': the attacks must share one norm, got {sorted(norms)}")
        self.name = WCAR
        self.attacks = sorted(attacks, key=lambda a: a.passes)  # stable: ties keep the user's order
        self.eps = list(eps)
        self.norm = norms.pop()
        self.cascade = cascade
        for attack in self.attacks:
            attack.per_image = True
        self.checks = PassCounter()
        #: per budget, per sample id: the attack that broke the image first ("clean": wrong when clean)
        self.broken_by: dict[float, dict[int, str]] = {}
        #: per budget and attack, per sample id it attacked: the image stayed correctly classified
        self.outcomes: dict[float, dict[str, dict[int, bool]]] = {}

    def parts(self) -> list[Noise]:
        return list(self.attacks)

    def conditions(self) -> list[Condition]:
        return [Condition(WCAR, WCAR, eps=e) for e in self.eps]

    def apply(self, images, labels, sample_ids, condition, model=None):
        if model is None:
            raise ValueError("noise 'wcar' needs the model")
        counted = CountingModel(model, self.checks)
        with self.checks.booking(f"{condition.eps:.6g}"), torch.no_grad():
            alive = counted(images).argmax(1) == labels  # robust so far; wrong-when-clean images never are
        worst = images.clone()
        first = [None if a else CLEAN for a in alive.tolist()]
        for attack in self.attacks:
            rows = alive.nonzero().squeeze(1) if self.cascade else torch.arange(len(images), device=images.device)
            if len(rows) == 0:
                continue
            adv = attack.apply(images[rows], labels[rows], sample_ids[rows], Condition(attack.name, attack.name,
                               eps=condition.eps), model)  # fmt: skip
            with self.checks.booking(f"{condition.eps:.6g}"), torch.no_grad():
                broken = counted(adv).argmax(1) != labels[rows]
            outcome = self.outcomes.setdefault(condition.eps, {}).setdefault(attack.name, {})
            outcome.update(zip(sample_ids[rows].tolist(), (~broken).tolist(), strict=True))
            newly = broken & alive[rows]
            still = ~broken & alive[rows]
            worst[rows[newly]] = adv[newly]
            worst[rows[still]] = adv[still]  # the latest attack's output while unbroken
            alive[rows[newly]] = False
            for r in rows[newly].tolist():
                first[r] = attack.name
        book = self.broken_by.setdefault(condition.eps, {})
        book.update(zip(sample_ids.tolist(), first, strict=True))
        return worst

    def report(self) -> dict:
        return {
            "cascade": self.cascade,
            "order": [a.name for a in self.attacks],
            "passes": {a.name: a.report()["passes"] for a in self.attacks},
            "check_passes": self.checks.counts,
        }


def _options_for(name: str, options: Mapping) -> dict:
    extra = dict(options.get(name) or {})
    if "eps" in extra:
        raise ValueError(f"noise 'wcar': set the budgets once with noise.eps, not per attack ({name}.eps)")
    return extra


@register_noise(options=WcarOptions)
def wcar(opts: WcarOptions) -> WorstCase:
    """Worst-case robustness over a set of attacks (RobustART's WCAR), as a cascade from the cheapest attack
    to the strongest that attacks only the images still unbroken; ``options`` holds per-attack settings."""
    attacks, eps, seed = opts.attacks, opts.eps, opts.seed
    options = dict(opts.options or {})
    if not attacks:
        raise ValueError("noise 'wcar': attacks must list at least one attack")
    if len(set(attacks)) != len(attacks):
        raise ValueError(f"noise 'wcar': an attack is listed twice: {list(attacks)}")
    unknown = sorted(set(options) - set(attacks))
    if unknown:
        raise ValueError(f"noise 'wcar': options given for attacks not in the list: {unknown}")
    budgets = [parse_eps(e) for e in eps]
    if not budgets:
        raise ValueError("noise 'wcar': eps must list at least one budget")
    built = []
    for name in attacks:
        entry = get_noise_entry(name)
        if entry.kind != "adversarial" or name in ("wcar",):
            raise ValueError(f"noise 'wcar': {name!r} is not an attack")
        attack = create_noise(name, **{"seed": seed, **_options_for(name, options), "eps": list(eps)})
        if not isinstance(attack, TorchattacksNoise):
            raise ValueError(f"noise 'wcar': {name!r} cannot be part of a worst case (it has no budgeted attack)")
        built.append(attack)
    noise = WorstCase(built, budgets, opts.cascade)
    check_budgets("wcar", noise.norm, budgets)
    return noise
