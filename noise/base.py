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
    identify the images so random noises can draw per-sample randomness (see :mod:`robustart.noise.seeding`).
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

    # What a noise learns while it runs, beyond the images it returns, is plain data in the attributes that
    # ``recorded`` lists; the evaluation turns it into metric rows once the run is over (a noise scores nothing).

    def report(self) -> dict:
        """JSON-able facts for the run's manifest (attack costs, validity warnings), ``{}`` if none."""
        return {}

    #: the attributes holding what the noise records while it runs (dotted paths reach into helpers), which
    #: :meth:`take_state` and :meth:`merge_state` move between processes and runs
    recorded: tuple[str, ...] = ()

    def parts(self) -> list[Noise]:
        """The noises inside this one whose records travel with it (a suite's members, a cascade's attacks)."""
        return []

    def take_state(self) -> dict:
        """What the noise recorded since the last call, emptied here: a run that commits its work condition by
        condition stores it with the condition, and :meth:`merge_state` adds it back in another process."""
        state = {}
        for path in self.recorded:
            owner, _, attr = _owner(self, path)
            value = getattr(owner, attr)
            state[path] = value
            setattr(owner, attr, type(value)())
        return {"own": state, "parts": [part.take_state() for part in self.parts()]}

    def merge_state(self, state: dict) -> None:
        """Add a state from :meth:`take_state` to what this noise recorded (records joined, counts summed)."""
        for path, value in state["own"].items():
            owner, _, attr = _owner(self, path)
            setattr(owner, attr, merge_records(getattr(owner, attr), value))
        for part, part_state in zip(self.parts(), state["parts"], strict=True):
            part.merge_state(part_state)


def _owner(noise, path: str):
    """``(object, '.', attribute)`` that a dotted ``recorded`` path names."""
    head, dot, attr = path.rpartition(".")
    owner = noise
    for name in filter(None, head.split(".")):
        owner = getattr(owner, name)
    return owner, dot, attr


def merge_records(mine, theirs):
    """Join two records of the same shape: dicts key by key, lists end to end, counts summed; anything else
    (a flag, a name) is taken from ``theirs``."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        out = dict(mine)
        for key, value in theirs.items():
            out[key] = merge_records(out[key], value) if key in out else value
        return out
    if isinstance(mine, list) and isinstance(theirs, list):
        return mine + theirs
    if isinstance(mine, int) and isinstance(theirs, int) and not isinstance(mine, bool):
        return mine + theirs
    return theirs


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

    def report(self) -> dict:
        return {name: r for name, m in self.members.items() if (r := m.report())}

    def parts(self) -> list[Noise]:
        return list(self.members.values())
