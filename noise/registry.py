"""The noise registry: each noise declares its options once, as a dataclass registered with its factory.

A noise's options dataclass holds every option with its default, in types OmegaConf checks (``int``, ``float``,
``str``, ``bool``, ``list[str]``, ``dict[str, Any]``, ``X | None``); the factory takes one instance of it.
``create_noise(name, **kwargs)`` builds the options from keyword arguments and calls the factory. The command
line's schemas are made from the same dataclasses (:func:`robustart.config.register_configs`).

Declaring a noise (``@dataclass`` options next to the factory)::

    @dataclass
    class BlankOptions:
        value: float = 0.0  # every option has its default here, and only here
        channels: list[int] = field(default_factory=lambda: [0, 1, 2])
        # added after runs existed: in a run's identity only when not at its default (see OMIT_DEFAULT)
        gamma: float = field(default=1.0, metadata={"identity": OMIT_DEFAULT})

    @register_noise("blank", kind="natural", options=BlankOptions)
    def blank(opts: BlankOptions) -> Noise:  # its docstring's first line describes the noise
        return BlankNoise(opts.value)

    create_noise("blank", value=0.5)  # == blank(BlankOptions(value=0.5))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("none", "natural", "adversarial", "system")
#: an options field's ``metadata["identity"]`` says how the option enters a run's identity: ``True`` (the default),
#: always; ``OMIT_DEFAULT``, only when set to another value (an option added after runs exist, so that they keep
#: their ids); ``False``, never (an option that cannot change results)
OMIT_DEFAULT = "omit_default"


@dataclass(frozen=True)
class NoiseEntry:
    name: str
    kind: str
    factory: Callable
    #: the options dataclass; ``factory(options(**kwargs))`` builds the noise
    options: type
    description: str

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]


_REGISTRY: dict[str, NoiseEntry] = {}


def register_noise(name: str, *, kind: str, options: type) -> Callable[[Callable], Callable]:
    """Register ``factory(options) -> Noise`` under ``name``; ``kind`` is one of :data:`KINDS`, ``options`` the
    dataclass of the noise's options (with their defaults)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"noise {name!r}: options must be a dataclass, got {options!r}")
    for f in dataclasses.fields(options):
        if f.name == "name":
            raise ValueError(f"noise {name!r}: 'name' is reserved (the config's noise name), not an option")
        if f.metadata.get("identity", True) not in (True, False, OMIT_DEFAULT):
            raise ValueError(f"noise {name!r}: option {f.name!r} has identity {f.metadata['identity']!r}; "
                             f"use True, False or {OMIT_DEFAULT!r}")  # fmt: skip

    def decorator(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"noise {name!r} is already registered")
        description = (factory.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = NoiseEntry(name, kind, factory, options, description)
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
    """Build the noise ``name`` with keyword arguments (its options); unknown arguments are a clear ``ValueError``."""
    entry = get_noise_entry(name)
    valid = entry.option_names()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"noise {name!r} takes no option(s) {unknown}; its options: {sorted(valid)}")
    return entry.factory(entry.options(**kwargs))


def identity_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` of noise ``name`` without those its dataclass keeps out of a run's identity: ``identity=False``
    fields, and ``"omit_default"`` fields at their default."""
    out = dict(options)
    for f in dataclasses.fields(get_noise_entry(name).options):
        rule = f.metadata.get("identity", True)
        if f.name not in out or rule is True:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if rule is False or (rule == OMIT_DEFAULT and out[f.name] == default):
            del out[f.name]
    return out
