"""Every built-in noise's factory, registered on import (PyTorch and the attack libraries come with them).

The options of every noise are declared in :mod:`robustart.noise.options`, without PyTorch; the factories register
against those dataclasses (``@register_noise(options=...)``) in the modules below, and ``clean`` here.
:func:`robustart.noise.create_noise` imports this module before it builds a noise.
"""

from __future__ import annotations

from robustart.noise import adversarial, natural, system  # noqa: F401  (registers their factories)
from robustart.noise.base import NoiseSuite
from robustart.noise.options import CleanOptions
from robustart.noise.registry import register_noise


@register_noise(options=CleanOptions)
def clean(opts: CleanOptions) -> NoiseSuite:
    """No noise: only the clean evaluation that every run does."""
    return NoiseSuite("clean", [])
