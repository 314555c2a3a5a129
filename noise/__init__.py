"""Noise generators: adversarial, natural (ImageNet-C, -P) and system noise (ImageNet-S).

Every noise is a list of :class:`~robustart.noise.base.Condition` s; ``create_noise(name, **options)`` builds one.

>>> from noise import create_noise
>>> [str(c) for c in create_noise("imagenet_c", corruptions=["contrast"], severities=[1, 5]).conditions()]
['imagenet_c/contrast severity=1', 'imagenet_c/contrast severity=5']

Importing the package (or its registry) imports no PyTorch: every noise's options are declared in
:mod:`robustart.noise.options`, so names, options and run identities are known without it. The noises
themselves (their factories, :class:`Noise`, the ``adversarial``, ``natural`` and ``system`` modules) are
imported on first use.
"""

from __future__ import annotations

import importlib

from robustart.noise import options, registry  # noqa: F401  (options declares every noise's options)
from robustart.noise.registry import get_noise_entry, list_noises, register_noise

__all__ = ["Condition", "Noise", "NoiseSuite", "create_noise", "get_noise_entry", "list_noises", "load_factories",
           "register_noise"]  # fmt: skip

#: the names the package gives on first use, by the module they come from (which imports PyTorch)
_LAZY = {"Condition": "base", "Noise": "base", "NoiseSuite": "base"}
_SUBMODULES = ("adversarial", "natural", "system", "base", "factories", "seeding", "threads")


def load_factories() -> None:
    """Register every built-in noise's factory (imports PyTorch and the noises' modules)."""
    from robustart.noise import factories  # noqa: F401


def create_noise(name: str, **kwargs):
    """Build the noise ``name`` with keyword arguments (its options); unknown arguments are a clear ``ValueError``.
    Imports the factories (and PyTorch) on first use."""
    load_factories()
    return registry.create_noise(name, **kwargs)


def __getattr__(attr: str):
    if attr in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[attr]}"), attr)
    if attr in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{attr}")
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
