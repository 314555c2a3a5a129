"""The model zoo: architectures by family, each with metadata, built by name.

Every model takes RGB (or grey) floats in [0, 1]; normalisation lives inside the returned module.

>>> import model_zoo
>>> model = model_zoo.create_model("small_cnn")
>>> model.metadata.family, model.metadata.input_size
('cnn', (1, 28, 28))
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustart.model_zoo import cnn, mlp, nas, searched, transformer  # noqa: F401  (registers the entries)
from robustart.model_zoo.cards import read_card, trained_entry
from robustart.model_zoo.metadata import FAMILIES, ModelMetadata
from robustart.model_zoo.registry import ZooEntry, get_entry, register_model, registered_names
from robustart.model_zoo.weights import (
    PACKAGED_WEIGHTS,
    apply_state_dict,
    load_packaged,
    load_pretrained,
    packaged_weights,
    read_state_dict,
    sha256_file,
)

__all__ = [
    "FAMILIES",
    "ModelMetadata",
    "NormalizedModel",
    "ZooEntry",
    "create_model",
    "get_metadata",
    "list_models",
    "register_model",
]


class NormalizedModel(nn.Module):
    """Wraps a classifier so that it takes images in [0, 1] and normalises them itself.

    Attributes:
        net: the wrapped classifier (its state dict is what checkpoints hold).
        metadata: the model's :class:`ModelMetadata`.
    """

    def __init__(self, net: nn.Module, metadata: ModelMetadata) -> None:
        super().__init__()
        self.net = net
        self.metadata = metadata
        shape = (1, len(metadata.mean), 1, 1)
        self.register_buffer("mean", torch.tensor(metadata.mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(metadata.std).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def list_models(family: str | None = None) -> list[str]:
    """Names of the registered models, optionally of one family (``cnn``, ``transformer``, ``mlp``, ``nas``)."""
    return registered_names(family)


#: the options every entry takes (``None`` keeps the entry's default)
COMMON_OPTIONS = ("num_classes", "in_chans", "img_size")


def _build(name: str, overrides: dict[str, Any]) -> tuple[nn.Module, ModelMetadata]:
    """Call the entry's factory with the overrides that are set (``None`` keeps the entry's default)."""
    entry = get_entry(name)
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    parameters = inspect.signature(entry.factory).parameters
    named = {k for k, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    takes = named if len(named) == len(parameters) else named | set(COMMON_OPTIONS)  # **overrides: the common ones
    unknown = sorted(set(kwargs) - takes)
    if unknown:
        raise ValueError(f"model {name!r} does not take {unknown}; it takes {sorted(takes)}")
    return entry.factory(**kwargs)


def count_flops(net: nn.Module, input_size: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one image of ``input_size`` (torch's ``FlopCounterMode``; a multiply-add
    counts 2). Run on a meta-device ``net`` it allocates nothing and takes well under a second."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(net.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.eval()(torch.empty(1, *input_size, device=device))
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=256)
def _metadata(name: str, overrides: tuple[tuple[str, Any], ...]) -> ModelMetadata:
    with torch.device("meta"):
        net, meta = _build(name, dict(overrides))
        params = sum(p.numel() for p in net.parameters())
        return replace(meta, params=params, flops=count_flops(net, meta.input_size))


def get_metadata(name: str, **overrides: Any) -> ModelMetadata:
    """Metadata of a zoo entry, parameters and FLOPs included (counted on the meta device: nothing is allocated).

    ``overrides`` are the same as :func:`create_model`'s (``num_classes``, ``in_chans``, ``img_size``, ...).
    """
    return _metadata(name, tuple(sorted((k, v) for k, v in overrides.items() if v is not None)))


def create_model(name: str, *, weights: str = "random", sha256: str | None = None, **overrides: Any) -> NormalizedModel:
    """Build a zoo model by name.

    Args:
        name: a registered name (see :func:`list_models`).
        weights: ``random``, ``pretrained`` (weights shipped in an installed package where the entry
            has them, else timm's hub tag of the entry, from the local cache, failing fast offline) or a
            path to a ``.safetensors`` / torch state-dict file.
        sha256: expected digest of the weights file; a mismatch refuses it.
        overrides: the entry's options; every entry takes ``num_classes``, ``in_chans`` and ``img_size``,
            some take more (``nas_subnet``: ``subnet``). ``None`` keeps the entry's default.

    Returns:
        A :class:`NormalizedModel` in eval mode with ``.metadata`` set.

    Raises:
        ValueError: unknown name or option, weights that do not fit, sha256 mismatch.
        FileNotFoundError: weights file missing, or pretrained weights unavailable offline.
    """
    net, _ = _build(name, overrides)
    meta = get_metadata(name, **overrides)
    packaged = packaged_weights(name) if weights == "pretrained" else None
    if packaged is not None:
        load_packaged(net, name, packaged)
        meta = meta.with_weights(f"package:{PACKAGED_WEIGHTS[name][0]}/{packaged.name}", sha256_file(packaged))
    elif weights == "pretrained":
        if meta.architecture.startswith("robustart."):
            raise ValueError(
                f"model {name!r} has no published pretrained weights; train it (training=...) or set model.weights=PATH"
            )
        source = load_pretrained(
            net, name=name, tag=meta.architecture, in_chans=meta.in_chans, num_classes=meta.num_classes
        )
        meta = meta.with_weights(source)
    elif weights != "random":
        path = Path(weights).expanduser()
        card = read_card(path)
        if card is not None:
            net = _from_checkpoint(name, net, card, sha256, overrides)
            meta = meta.with_weights(f"robustart:{card.get('config_hash', '?')}", card["sha256"])
        else:
            state = read_state_dict(path, sha256=sha256)
            apply_state_dict(net, state, source=f"weights file {path}")
            meta = meta.with_weights(f"file:{path.name}", sha256 or sha256_file(path))
    return NormalizedModel(net, meta).eval()


def _from_checkpoint(name: str, net: nn.Module, card: dict, sha256: str | None, overrides: dict) -> nn.Module:
    """``net`` with the weights of a robustart checkpoint, refused when they belong to another entry, or cut
    from them when this entry declares how (a subnet from its supernet)."""
    trained = trained_entry(card)
    where = f"checkpoint {Path(card['path']).parent}"
    if sha256 is not None and sha256.lower() != card["sha256"].lower():
        raise ValueError(f"{where} has sha256 {card['sha256']}, expected {sha256} (fix model.sha256 or the path)")
    if trained == name:
        apply_state_dict(net, read_state_dict(card["path"], sha256=card["sha256"]), source=where)
        return net
    cut = (get_entry(name).weights_from or {}).get(trained)
    if cut is None:
        raise ValueError(
            f"{where} holds weights of model {trained!r}, not {name!r}: use model={trained}, or a checkpoint "
            f"trained for {name}"
        )
    shared = {k: v for k, v in overrides.items() if k in COMMON_OPTIONS}
    source = create_model(trained, weights=card["path"], sha256=card["sha256"], **shared)
    return cut(source.net, **overrides)
