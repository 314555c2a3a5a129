"""The noise registry: ``@register_noise`` on a factory, ``create_noise(name, **kwargs)`` to build."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("none", "natural", "adversarial", "system")


@dataclass(frozen=True)
class NoiseEntry:
    name: str
    kind: str
    factory: Callable
    description: str


_REGISTRY: dict[str, NoiseEntry] = {}


def register_noise(name: str, *, kind: str) -> Callable[[Callable], Callable]:
    """Register a noise factory under ``name``; ``kind`` is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def decorator(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"noise {name!r} is already registered")
        _REGISTRY[name] = NoiseEntry(name, kind, factory, (factory.__doc__ or "").strip().splitlines()[0])
        return factory

    return decorator


def get_noise_entry(name: str) -> NoiseEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown noise {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None


def list_noises(kind: str | None = None) -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def create_noise(name: str, **kwargs):
    """Build the noise ``name`` with keyword arguments; unknown arguments are a clear ``ValueError``."""
    entry = get_noise_entry(name)
    params = inspect.signature(entry.factory).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"noise {name!r} takes no option(s) {unknown}; its options: {sorted(params)}")
    return entry.factory(**kwargs)
