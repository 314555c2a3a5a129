"""The noise registry: each noise declares its options once, as a dataclass, and registers a factory taking it.

A noise's options dataclass holds every option with its default, in types OmegaConf checks (``int``, ``float``,
``str``, ``bool``, ``list[str]``, ``dict[str, Any]``, ``X | None``); the factory takes one instance of it.
``create_noise(name, **kwargs)`` builds the options from keyword arguments and calls the factory. The command
line's schemas are made from the same dataclasses (:func:`robustart.config.register_configs`).

The built-in noises declare their options in :mod:`robustart.noise.options` (``@noise_options(name, kind=...)``),
which imports no PyTorch, so that the command line composes, checks and names a run without it; their factories,
next to the code that needs PyTorch, register with ``@register_noise(options=<the dataclass>)`` when
:mod:`robustart.noise.factories` is imported (``robustart.noise.create_noise`` does that). A noise of one's own can
declare both at once (``@dataclass`` options next to the factory)::

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

This module imports nothing but the standard library.
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


@dataclass
class NoiseEntry:
    name: str
    kind: str
    #: ``factory(options(**kwargs))`` builds the noise; ``None`` while only the options are declared (the built-in
    #: factories register when :mod:`robustart.noise.factories` is imported)
    factory: Callable | None
    #: the options dataclass
    options: type
    #: the first line of the factory's docstring (empty until the factory registers)
    description: str = ""

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]


_REGISTRY: dict[str, NoiseEntry] = {}


def _check_options(name: str, kind: str, options: type) -> None:
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


def noise_options(name: str, *, kind: str) -> Callable[[type], type]:
    """Declare the dataclass it decorates as the options of noise ``name`` (``kind`` one of :data:`KINDS`), without
    its factory, which registers later with ``@register_noise(options=<the dataclass>)``. The name is listed, and
    its options are checked and enter run ids, from here on."""

    def decorator(options: type) -> type:
        _check_options(name, kind, options)
        if name in _REGISTRY:
            raise ValueError(f"noise {name!r} is already registered")
        _REGISTRY[name] = NoiseEntry(name, kind, None, options)
        return options

    return decorator


def _declared(options: type) -> NoiseEntry | None:
    """The entry whose options ``options`` are (declared with :func:`noise_options`), if any."""
    return next((e for e in _REGISTRY.values() if e.options is options), None)


def register_noise(name: str | None = None, *, kind: str | None = None,
                   options: type) -> Callable[[Callable], Callable]:  # fmt: skip
    """Register ``factory(options) -> Noise``. ``options`` is the dataclass of the noise's options (with their
    defaults): one declared with :func:`noise_options` gives the name and kind; else ``name`` and ``kind`` (one of
    :data:`KINDS`) are required."""
    entry = _declared(options)
    if entry is not None:
        if name not in (None, entry.name) or kind not in (None, entry.kind):
            raise ValueError(f"noise {entry.name!r} ({entry.kind}) declares {options.__name__}; "
                             f"got name {name!r}, kind {kind!r}")  # fmt: skip
    elif name is None or kind is None:
        raise ValueError(f"register_noise: {getattr(options, '__name__', options)!r} is not declared with "
                         "noise_options(); give the noise's name and kind")  # fmt: skip
    else:
        _check_options(name, kind, options)

    def decorator(factory: Callable) -> Callable:
        description = (factory.__doc__ or "").strip().splitlines()[0]
        if entry is None:
            if name in _REGISTRY:
                raise ValueError(f"noise {name!r} is already registered")
            _REGISTRY[name] = NoiseEntry(name, kind, factory, options, description)
        elif entry.factory is not None:
            raise ValueError(f"noise {entry.name!r} is already registered")
        else:  # the entry itself, so that every view of the registry sees the factory
            entry.factory, entry.description = factory, description
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
    """Build the noise ``name`` with keyword arguments (its options); unknown arguments are a clear ``ValueError``.

    The noise's factory must be registered: ``robustart.noise.create_noise`` imports the built-in ones first."""
    entry = get_noise_entry(name)
    valid = entry.option_names()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"noise {name!r} takes no option(s) {unknown}; its options: {sorted(valid)}")
    if entry.factory is None:
        raise ValueError(f"noise {name!r} declares its options but no factory is registered; build it with "
                         "robustart.noise.create_noise, which imports the factories")  # fmt: skip
    options = entry.options(**kwargs)
    noise = entry.factory(options)
    noise.built_with = options  # the results' protocol columns are read from it (robustart.evaluation.protocol)
    return noise


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
