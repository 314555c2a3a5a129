"""Adversarial noise: attacks from torchattacks behind the noise registry.

Budgets are in [0, 1] pixel units and can be written as users write them (``"8/255"``).

>>> from noise.adversarial import parse_eps
>>> round(parse_eps("8/255"), 6)
0.031373
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from noise.base import Condition, Noise
from noise.registry import register_noise
from noise.seeding import derive_seed


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


class TorchattacksNoise(Noise):
    """An attack from torchattacks at a list of budgets.

    Args:
        name: registry name (the results' ``noise`` and ``condition`` columns).
        build: ``build(model, eps) -> torchattacks.Attack``.
        eps: budgets (numbers or ``"a/b"`` strings).
        seed: seeds the attack's own randomness (PGD's random start) per batch.

    torchattacks draws its random start from torch's global generator for the whole batch, so the
    start is seeded per batch from ``(seed, attack, eps, first sample id)``: runs are reproducible at a
    fixed batch size, and with ``random_start=False`` they are independent of batching altogether.
    """

    needs_model = True

    def __init__(self, name: str, build, eps: Sequence[float | str], seed: int = 0) -> None:
        if not eps:
            raise ValueError(f"noise {name!r}: eps must list at least one budget")
        self.name = name
        self.build = build
        self.eps = [parse_eps(e) for e in eps]
        self.seed = seed

    def conditions(self) -> list[Condition]:
        return [Condition(self.name, self.name, eps=e) for e in self.eps]

    def apply(self, images, labels, sample_ids, condition, model=None):
        if model is None:
            raise ValueError(f"attack {self.name!r} needs the model")
        if condition.eps == 0:
            return images
        attack = self.build(model, condition.eps)
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self.seed, self.name, condition.eps, int(sample_ids[0])))
            with torch.enable_grad():
                adv = attack(images, labels)
        return adv.detach()


@register_noise("pgd_linf", kind="adversarial")
def pgd_linf(
    eps: Sequence[float | str] = ("0.5/255", "2/255", "8/255"),
    steps: int = 20,
    rel_stepsize: float = 3 / 40,
    random_start: bool = True,
    seed: int = 0,
) -> TorchattacksNoise:
    """PGD with the Linf norm (Madry et al., 2018) via ``torchattacks.PGD``; step = rel_stepsize * eps."""
    import torchattacks

    if steps < 1:
        raise ValueError(f"pgd_linf: steps must be >= 1, got {steps}")
    if not rel_stepsize > 0:
        raise ValueError(f"pgd_linf: rel_stepsize must be > 0, got {rel_stepsize}")

    def build(model, e):
        return torchattacks.PGD(model, eps=e, alpha=rel_stepsize * e, steps=steps, random_start=random_start)

    return TorchattacksNoise("pgd_linf", build, eps, seed)


@register_noise("fgsm", kind="adversarial")
def fgsm(eps: Sequence[float | str] = ("0.5/255", "2/255", "8/255"), seed: int = 0) -> TorchattacksNoise:
    """Fast gradient sign method (Goodfellow et al., 2015) via ``torchattacks.FGSM``."""
    import torchattacks

    return TorchattacksNoise("fgsm", lambda model, e: torchattacks.FGSM(model, eps=e), eps, seed)
