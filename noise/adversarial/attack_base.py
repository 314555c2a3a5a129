"""What every torchattacks-backed noise shares: budgets (``"8/255"`` strings, norms, checks) and
:class:`TorchattacksNoise`, one attack at a list of budgets. The attack factories register in the package."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robustart.noise.adversarial.per_sample import CountingModel, PassCounter, RowDraws, per_image_entry
from robustart.noise.base import Condition, Noise
from robustart.noise.options import L1_EPS, L2_EPS, LINF_EPS  # noqa: F401  (the default budgets, declared there)
from robustart.noise.seeding import derive_seed


def parse_eps(value: float | int | str) -> float:
    """Parse an attack budget: a number or a fraction string such as ``"4/255"``; must be >= 0."""
    if isinstance(value, bool):
        raise ValueError(f"eps must be a number or a fraction like '4/255', got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                eps = float(num) / float(den)
            else:
                eps = float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"eps must be a number or a fraction like '4/255', got {value!r}") from None
    else:
        eps = float(value)
    if not eps >= 0 or eps == float("inf"):
        raise ValueError(f"eps must be a finite number >= 0, got {value!r}")
    return eps


NORMS = ("Linf", "L2", "L1")


def check_norm(name: str, norm: str, supported: Sequence[str] = NORMS) -> str:
    """``norm`` if attack ``name`` supports it, else a ValueError listing the ones it does."""
    if norm not in supported:
        raise ValueError(f"attack {name!r} does not support norm {norm!r}; supported: {', '.join(supported)}")
    return norm


def check_budgets(name: str, norm: str, eps: Sequence[float]) -> None:
    """Linf budgets above 1 (the whole pixel range) are a mistake, almost always a missing ``/255``."""
    if norm == "Linf":
        large = [e for e in eps if e > 1]
        if large:
            raise ValueError(f"attack {name!r}: Linf eps must be at most 1 (pixels are in [0, 1]), got {large}; "
                             "write budgets like '8/255'")  # fmt: skip


def check_positive(name: str, what: str, value) -> None:
    if isinstance(value, bool) or not value > 0:
        raise ValueError(f"attack {name!r}: {what} must be > 0, got {value!r}")


class TorchattacksNoise(Noise):
    """An attack from torchattacks at a list of budgets.

    Args:
        name: registry name (the results' ``noise`` and ``condition`` columns).
        build: ``build(model, eps) -> torchattacks.Attack``.
        eps: budgets (numbers or ``"a/b"`` strings).
        seed: seeds the attack's own randomness (PGD's random start) per batch.

        norm: the budget's norm (``Linf``, ``L2``, ``L1``).
        passes: the attack's nominal forward+backward passes per image, to order a cascade cheapest first.

    By default the libraries draw their random starts as they always do, from torch's global generator for
    the whole batch, seeded per batch from ``(seed, attack, eps, first sample id)``: runs are reproducible at a
    fixed batch size and equal the library called directly with that seed. With ``per_image = True`` (set by
    the WCAR cascade) every image draws its start from a generator of its own
    (:mod:`robustart.noise.adversarial.per_sample`), so its result does not depend on the other images of its call.

    The forward and backward passes through the model are counted per image (:attr:`passes_used`, reported
    in the run's manifest).
    """

    needs_model = True
    recorded = ("passes_used",)

    def __init__(
        self, name: str, build, eps: Sequence[float | str], seed: int = 0, norm: str = "Linf", passes: int = 1
    ) -> None:
        if not eps:
            raise ValueError(f"noise {name!r}: eps must list at least one budget")
        self.name = name
        self.build = build
        self.eps = [parse_eps(e) for e in eps]
        self.seed = seed
        self.norm = check_norm(name, norm)
        check_budgets(name, norm, self.eps)
        self.passes = passes
        self.per_image = False
        #: ``{eps: {"images", "forward", "backward"}}`` summed over the batches attacked so far
        self.passes_used: dict[float, dict[str, int]] = {}

    def conditions(self) -> list[Condition]:
        return [Condition(self.name, self.name, eps=e) for e in self.eps]

    def apply(self, images, labels, sample_ids, condition, model=None):
        if model is None:
            raise ValueError(f"attack {self.name!r} needs the model")
        if condition.eps == 0:
            return images
        counter = PassCounter()
        attack = self.build(CountingModel(model, counter), condition.eps)
        if self.per_image:
            _draw_per_image(attack, RowDraws(derive_seed(self.seed, self.name, condition.eps)))
            seed = derive_seed(self.seed, self.name, condition.eps)  # shared draws: the same for any batch
        else:
            seed = derive_seed(self.seed, self.name, condition.eps, int(sample_ids[0]))
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            with torch.enable_grad():
                adv = attack(images, labels)
        used = self.passes_used.setdefault(condition.eps, {"images": 0, "forward": 0, "backward": 0})
        used["images"] += len(images)
        for book in counter.counts.values():
            for kind, n in book.items():
                used[kind] += n
        return adv.detach()

    def report(self) -> dict:
        return {"passes": {f"{eps:.6g}": dict(used) for eps, used in self.passes_used.items()}}


class AutoAttackCall:
    """``attack(images, labels) -> adversarial images`` for a pyautoattack attack object."""

    def __init__(self, attack, method: str) -> None:
        self.attack, self.method = attack, method

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.method == "standard":
            adv, _ = self.attack.run_standard_evaluation(images, labels, batch_size=len(images))
            return adv
        return self.attack.perturb(images, labels)

    def parts(self) -> list:
        """The pyautoattack attack objects that draw random starts (AutoAttack's four, or the one attack)."""
        if self.method == "standard":
            return [self.attack.apgd, self.attack.apgd_targeted, self.attack.fab, self.attack.square]
        return [self.attack]


def _draw_per_image(attack, draws: RowDraws) -> None:
    """Install per-image random draws on a library attack's entry points (see :mod:`.per_sample`)."""
    if isinstance(attack, AutoAttackCall):
        for part in attack.parts():
            part.attack_single_run = per_image_entry(draws, part.attack_single_run)
    else:  # a torchattacks attack: its forward receives the clean images
        attack.forward = per_image_entry(draws, attack.forward)
