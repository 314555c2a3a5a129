"""The model registry: ``@register_model`` on a small factory, ``create_model(name)`` to build."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from robustart.model_zoo.metadata import FAMILIES


@dataclass(frozen=True)
class ZooEntry:
    """A registered model: its name, family and the factory that builds it.

    The factory takes keyword overrides (``num_classes``, ``in_chans``, ``img_size``...) and
    returns ``(module, metadata)``: an ``nn.Module`` that expects *normalised* inputs and a
    :class:`~robustart.model_zoo.metadata.ModelMetadata` describing it (``params`` filled in later).
    """

    name: str
    family: str
    factory: Callable
    description: str = ""
    #: weights this entry can be cut from, by the entry that holds them: ``{"nas_supernet": slice_fn}`` where
    #: ``slice_fn(source_net, **overrides)`` returns this entry's module (a subnet sliced from a supernet).
    weights_from: dict[str, Callable] | None = None


_REGISTRY: dict[str, ZooEntry] = {}


def register_model(
    name: str, *, family: str, description: str = "", weights_from: dict[str, Callable] | None = None
) -> Callable[[Callable], Callable]:
    """Register a model factory under ``name``; duplicate names are refused (see :class:`ZooEntry`)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def decorator(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ZooEntry(name, family, factory, description or (factory.__doc__ or "").strip(), weights_from)
        return factory

    return decorator


def get_entry(name: str) -> ZooEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None


def registered_names(family: str | None = None) -> list[str]:
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)
