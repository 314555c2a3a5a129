"""Noise generators: adversarial, natural (ImageNet-C, -P) and system noise (ImageNet-S).

Every noise is a list of :class:`~robustart.noise.base.Condition` s; ``create_noise(name, **options)`` builds one.

>>> from noise import create_noise
>>> [str(c) for c in create_noise("imagenet_c", corruptions=["contrast"], severities=[1, 5]).conditions()]
['imagenet_c/contrast severity=1', 'imagenet_c/contrast severity=5']
"""

from __future__ import annotations

from dataclasses import dataclass

from robustart.noise import adversarial, natural, system  # noqa: F401  (registers the entries)
from robustart.noise.base import Condition, Noise, NoiseSuite
from robustart.noise.registry import create_noise, get_noise_entry, list_noises, register_noise

__all__ = ["Condition", "Noise", "NoiseSuite", "create_noise", "get_noise_entry", "list_noises", "register_noise"]


@dataclass
class CleanOptions:
    """The clean evaluation takes no options."""


@register_noise("clean", kind="none", options=CleanOptions)
def clean(opts: CleanOptions) -> NoiseSuite:
    """No noise: only the clean evaluation that every run does."""
    return NoiseSuite("clean", [])
