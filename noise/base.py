"""What every noise is: a list of conditions, each of which transforms a batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Condition:
    """One cell of a noise: a corruption at a severity, an attack at an eps...

    Attributes:
        noise: the registry name of the noise that owns the condition (the results' ``noise`` column).
        name: the condition's name (``gaussian_noise``, ``pgd_linf``); the ``condition`` column.
        severity: 1..5 for corruptions, else ``None``.
        eps: attack budget in [0, 1] pixel units (or the norm's units), else ``None``.
    """

    noise: str
    name: str
    severity: int | None = None
    eps: float | None = None

    def __str__(self) -> str:
        extra = f" severity={self.severity}" if self.severity is not None else ""
        extra += f" eps={self.eps:.6g}" if self.eps is not None else ""
        return f"{self.noise}/{self.name}{extra}"


class Noise(ABC):
    """A noise generator: ``conditions()`` lists its cells, ``apply`` transforms one batch for one cell.

    Images are ``float32`` NCHW in [0, 1]; the output keeps shape, dtype and range. ``sample_ids``
    identify the images so random noises can draw per-sample randomness (see :mod:`noise.seeding`).
    """

    name: str
    needs_model: bool = False

    @abstractmethod
    def conditions(self) -> list[Condition]: ...

    @abstractmethod
    def apply(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: torch.Tensor,
        condition: Condition,
        model: nn.Module | None = None,
    ) -> torch.Tensor: ...


class NoiseSuite(Noise):
    """Several noises evaluated in one run; each condition is dispatched to the noise that owns it."""

    def __init__(self, name: str, members: list[Noise]) -> None:
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"noise suite {name!r} lists a noise twice: {names}")
        self.name = name
        self.members = {m.name: m for m in members}
        self.needs_model = any(m.needs_model for m in members)

    def conditions(self) -> list[Condition]:
        return [c for m in self.members.values() for c in m.conditions()]

    def apply(self, images, labels, sample_ids, condition, model=None):
        return self.members[condition.noise].apply(images, labels, sample_ids, condition, model)
