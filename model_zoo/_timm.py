"""Shared helpers: build timm models and describe them.

- :func:`build_timm`: a timm model by tag (``resnet50.a1_in1k``), its evaluation metadata read from the tag's
  pretrained config, so that ``weights=pretrained`` knows which hub weights belong to it;
- :func:`register_timm`: one zoo entry per row of a table ``{zoo name: (timm tag, description)}``;
- :func:`register_small` / :func:`build_small`: a network configured by the zoo for 28-32 px inputs
  (Fashion-MNIST, CIFAR-10), usually from a timm model class, with no published weights.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from robustart.model_zoo.metadata import ModelMetadata, channel_stats
from robustart.model_zoo.registry import register_model

# Fashion-MNIST and CIFAR-10 training-set statistics (pixel values in [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

#: defaults of the small-input entries: Fashion-MNIST's 10 classes, 1 channel, 28 px
SMALL_DEFAULTS = {"num_classes": 10, "in_chans": 1, "img_size": 28}


def build_timm(name: str, tag: str, family: str, **overrides: Any) -> tuple[nn.Module, ModelMetadata]:
    """Create ``timm.create_model(tag)`` with random weights and describe it.

    ``None`` overrides are dropped so that timm's own defaults stay in force. ``img_size`` reaches timm only
    for models whose shape depends on it (timm marks them ``fixed_input_size``: position embeddings, token-mixing
    MLPs, attention windows: ViT, DeiT, Swin, Mixer, ResMLP); convolutional networks take any size, so for them
    it only sets the input size of the metadata. Pretrained weights are loaded later by :mod:`model_zoo.weights`,
    so building never touches the network.
    """
    import timm
    from timm.models import get_pretrained_cfg

    kwargs = {k: v for k, v in overrides.items() if v is not None}
    cfg = get_pretrained_cfg(tag)
    if cfg is None:
        raise ValueError(f"timm does not know the model {tag!r}")
    size = kwargs.pop("img_size", cfg.input_size[1])
    if cfg.fixed_input_size:
        kwargs["img_size"] = size
    try:
        module = timm.create_model(tag, pretrained=False, **kwargs)
    except TypeError as e:  # an option this architecture does not have (drop_path_rate on VGG, ...)
        raise ValueError(f"model {name!r} (timm {tag}) does not take these options {sorted(kwargs)}: {e}") from None
    in_chans = kwargs.get("in_chans", cfg.input_size[0])
    mean, std = channel_stats(cfg.mean, cfg.std, in_chans)
    meta = ModelMetadata(
        name=name,
        family=family,
        architecture=tag,
        num_classes=module.num_classes,
        in_chans=in_chans,
        input_size=(in_chans, size, size),
        mean=mean,
        std=std,
        crop_pct=cfg.crop_pct,
        interpolation=cfg.interpolation,
    )
    return module, meta


def register_timm(family: str, table: dict[str, tuple[str, str]]) -> None:
    """Register one entry of ``family`` per row ``name: (timm tag, description)``; each entry's factory takes
    ``num_classes``, ``in_chans``, ``img_size``, ``drop_rate`` and ``drop_path_rate`` and calls :func:`build_timm`."""
    for name, (tag, description) in table.items():
        _register_timm_entry(name, tag, family, f"{description}; timm ``{tag}``")


def _register_timm_entry(name: str, tag: str, family: str, description: str) -> None:
    def factory(
        num_classes: int | None = None,
        in_chans: int | None = None,
        img_size: int | None = None,
        drop_rate: float | None = None,
        drop_path_rate: float | None = None,
    ):
        return build_timm(name, tag, family, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                          drop_rate=drop_rate, drop_path_rate=drop_path_rate)  # fmt: skip

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = description
    factory.architecture = tag  # what the metadata will say, known without building
    register_model(name, family=family, description=description)(factory)


def small_input_stats(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation of a small-input entry: Fashion-MNIST's for one channel, CIFAR-10's for three, else 0.5."""
    if in_chans == 1:
        return (FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,)
    if in_chans == 3:
        return CIFAR10_MEAN, CIFAR10_STD
    return (0.5,) * in_chans, (0.5,) * in_chans


def build_small(
    name: str, family: str, make: Callable[..., nn.Module], *, size_multiple: int = 1, **overrides: Any
) -> tuple[nn.Module, ModelMetadata]:
    """Build a small-input entry: ``make(num_classes=, in_chans=, img_size=)`` returns the module.

    Unset overrides take :data:`SMALL_DEFAULTS`; ``img_size`` must be a multiple of ``size_multiple`` (the
    patch size of patch models). The architecture is named ``robustart.<name>``: the zoo's own
    configuration, with no published weights (``weights=pretrained`` is refused; train it or give a file).
    """
    options = {**SMALL_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    in_chans, size = options["in_chans"], options["img_size"]
    if size % size_multiple:
        raise ValueError(f"model {name!r} takes img_size a multiple of {size_multiple}, got {size}")
    takes = inspect.signature(make).parameters
    extra = sorted(k for k in options if k not in takes and not any(p.kind is p.VAR_KEYWORD for p in takes.values()))
    if extra:
        raise ValueError(f"model {name!r} does not take {extra}")
    module = make(**options)
    mean, std = small_input_stats(in_chans)
    meta = ModelMetadata(
        name=name,
        family=family,
        architecture=f"robustart.{name}",
        num_classes=options["num_classes"],
        in_chans=in_chans,
        input_size=(in_chans, size, size),
        mean=mean,
        std=std,
        crop_pct=1.0,
        interpolation="bilinear",
    )
    return module, meta


def register_small(name: str, family: str, *, size_multiple: int = 1) -> Callable:
    """Decorator: register ``make(num_classes, in_chans, img_size) -> nn.Module`` as the small-input entry
    ``name`` (its docstring is the entry's description); the factory calls :func:`build_small`."""

    def decorator(make: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        def factory(
            num_classes: int | None = None,
            in_chans: int | None = None,
            img_size: int | None = None,
            drop_rate: float | None = None,
            drop_path_rate: float | None = None,
        ):
            return build_small(
                name, family, make, size_multiple=size_multiple, num_classes=num_classes, in_chans=in_chans,
                img_size=img_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
            )  # fmt: skip

        factory.__name__ = factory.__qualname__ = name
        factory.__doc__ = make.__doc__
        factory.architecture = f"robustart.{name}"
        register_model(name, family=family)(factory)
        return make

    return decorator
