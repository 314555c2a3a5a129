"""Shared helpers: build torchvision models (architectures timm does not have) and describe them.

Metadata comes from the default weights of the torchvision builder: the evaluation transform
(``resize_size`` / ``crop_size``, mean, std, interpolation) and the number of categories. The architecture
string is ``torchvision.<builder>``; ``weights=pretrained`` reads that builder's weights from the local
torch hub cache (:func:`robustart.model_zoo.weights.load_pretrained`).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from robustart.model_zoo.metadata import ModelMetadata, channel_stats
from robustart.model_zoo.registry import register_model

PREFIX = "torchvision."


def default_weights(fn: str):
    """The default ``WeightsEnum`` member of the torchvision builder ``fn`` (``alexnet``...)."""
    from torchvision.models import get_model_weights

    return get_model_weights(fn).DEFAULT


def first_layer(module: nn.Module, kind: type[nn.Module], last: bool = False) -> str:
    """Name of the first (or ``last``) submodule of type ``kind``."""
    names = [n for n, m in module.named_modules() if isinstance(m, kind)]
    if not names:
        raise ValueError(f"{type(module).__name__} has no {kind.__name__}")
    return names[-1] if last else names[0]


def _replace_first_conv(module: nn.Module, in_chans: int) -> None:
    """Swap the first convolution for one taking ``in_chans`` channels (otherwise identical)."""
    name = first_layer(module, nn.Conv2d)
    old = module.get_submodule(name)
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
    )
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent), child, new)


def build_torchvision(
    name: str,
    fn: str,
    family: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    img_size: int | None = None,
    min_size: int = 1,
) -> tuple[nn.Module, ModelMetadata]:
    """Create ``torchvision.models.<fn>`` with random weights and describe it.

    ``in_chans`` other than 3 replaces the first convolution; ``img_size`` only sets the metadata's input
    size (these are convolutional networks with adaptive pooling), and must be at least ``min_size``.
    """
    from torchvision.models import get_model

    weights = default_weights(fn)
    transform = weights.transforms()
    num_classes = num_classes or len(weights.meta["categories"])
    in_chans = in_chans or 3
    size = img_size or transform.crop_size[0]
    if size < min_size:
        raise ValueError(f"model {name!r} needs inputs of at least {min_size} px, got img_size={size}")
    module = get_model(fn, weights=None, num_classes=num_classes)
    if in_chans != 3:
        _replace_first_conv(module, in_chans)
    module.num_classes = num_classes  # as timm models have it (read by weight loading's messages)
    mean, std = channel_stats(transform.mean, transform.std, in_chans)
    meta = ModelMetadata(
        name=name,
        family=family,
        architecture=PREFIX + fn,
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=(in_chans, size, size),
        mean=mean,
        std=std,
        crop_pct=round(transform.crop_size[0] / transform.resize_size[0], 4),
        interpolation=transform.interpolation.value,
    )
    return module, meta


def cached_weights(tag: str) -> tuple[object, Path]:
    """The default weights of ``torchvision.<fn>`` and the file torch's hub cache keeps them in
    (``torch.hub.get_dir()/checkpoints/<file name of the URL>``, where ``load_state_dict_from_url`` puts it)."""
    weights = default_weights(tag.removeprefix(PREFIX))
    filename = os.path.basename(urlparse(weights.url).path)
    return weights, Path(torch.hub.get_dir()) / "checkpoints" / filename


def fit_pretrained(
    module: nn.Module, state: dict[str, torch.Tensor], *, in_chans: int, num_classes: int
) -> dict[str, torch.Tensor]:
    """Adapt an ImageNet state dict to ``module`` as timm does: the first convolution's RGB filters are
    folded to ``in_chans`` channels, and a classifier of another size keeps the module's own random head."""
    from timm.models import adapt_input_conv

    state = dict(state)
    if in_chans != 3:
        key = first_layer(module, nn.Conv2d) + ".weight"
        state[key] = adapt_input_conv(in_chans, state[key])
    head = first_layer(module, nn.Linear, last=True)
    if state.get(f"{head}.weight", torch.empty(0)).shape[0] != num_classes:
        for key, value in module.get_submodule(head).state_dict().items():
            state[f"{head}.{key}"] = value
    return state


def register_torchvision(family: str, table: dict[str, tuple[str, str, int]]) -> None:
    """Register one entry of ``family`` per row ``name: (torchvision builder, description, min_size)``; each
    factory takes ``num_classes``, ``in_chans`` and ``img_size`` and carries its ``min_img_size``."""
    for name, (fn, description, min_size) in table.items():
        _register_torchvision_entry(name, fn, family, f"{description}; torchvision ``{fn}``", min_size)


def _register_torchvision_entry(name: str, fn: str, family: str, description: str, min_size: int) -> None:
    def factory(num_classes: int | None = None, in_chans: int | None = None, img_size: int | None = None):
        return build_torchvision(
            name, fn, family, num_classes=num_classes, in_chans=in_chans, img_size=img_size, min_size=min_size
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = description
    factory.architecture = PREFIX + fn  # what the metadata will say, known without building
    factory.min_img_size = min_size  # smallest input the architecture takes (px)
    register_model(name, family=family, description=description)(factory)
