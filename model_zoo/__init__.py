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
    "create_timm_model",
    "get_metadata",
    "list_models",
    "load_weights_file",
    "register_model",
    "timm_metadata",
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
    card = read_card(weights) if weights not in ("random", "pretrained") else None
    if packaged is not None:
        load_packaged(net, name, packaged)
        meta = meta.with_weights(f"package:{PACKAGED_WEIGHTS[name][0]}/{packaged.name}", sha256_file(packaged))
    elif card is not None:
        net = _from_checkpoint(name, net, card, sha256, overrides)
        meta = meta.with_weights(f"robustart:{card.get('config_hash', '?')}", card["sha256"])
    else:
        meta = _load_weights(net, meta, weights, sha256)
    return NormalizedModel(net, meta).eval()


def _load_weights(net: nn.Module, meta: ModelMetadata, weights: str, sha256: str | None) -> ModelMetadata:
    """Load ``pretrained`` (the hub weights of ``meta.architecture``) or a weights file into ``net``; ``random``
    leaves it as built. Returns the metadata naming the weights."""
    if weights == "pretrained":
        if meta.architecture.startswith("robustart."):
            raise ValueError(
                f"model {meta.name!r} has no published pretrained weights; train it (training=...) or set "
                "model.weights=PATH"
            )
        source = load_pretrained(
            net, name=meta.name, tag=meta.architecture, in_chans=meta.in_chans, num_classes=meta.num_classes
        )
        return meta.with_weights(source)
    if weights != "random":
        return meta.with_weights(*load_weights_file(net, weights, sha256))
    return meta


def load_weights_file(net: nn.Module, weights: str | Path, sha256: str | None = None) -> tuple[str, str]:
    """Load a ``.safetensors`` or torch state-dict file strictly into ``net`` (``sha256`` checked first; missing,
    unexpected or misshapen tensors refused with what does not fit); returns ``("file:<name>", sha256)``."""
    path = Path(weights).expanduser()
    apply_state_dict(net, read_state_dict(path, sha256=sha256), source=f"weights file {path}")
    return f"file:{path.name}", sha256 or sha256_file(path)


def _timm_cfg(tag: str):
    """timm's pretrained config of ``tag`` (a model name, with or without its weights tag); unknown names are
    refused with the closest names timm knows."""
    import difflib

    import timm
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(tag)
    except RuntimeError:  # a known architecture with an unknown weights tag
        cfg = None
    if cfg is None:
        arch = tag.partition(".")[0]
        names = timm.list_pretrained(f"{arch}.*") if timm.is_model(arch) else timm.list_models()
        close = difflib.get_close_matches(tag, names, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() or timm.list_pretrained()"
        raise ValueError(f"timm does not know the model {tag!r}{hint}")
    return cfg


def _build_timm(tag: str, family: str, name: str | None, overrides: dict[str, Any]):
    from robustart.model_zoo._timm import build_timm

    cfg = _timm_cfg(tag)
    net, meta = build_timm(name or tag, tag, family, **overrides)
    return net, replace(meta, architecture=f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture)


@functools.lru_cache(maxsize=64)
def _timm_metadata(key: str) -> ModelMetadata:
    import json

    args = json.loads(key)
    with torch.device("meta"):
        net, meta = _build_timm(args["tag"], args["family"], args["name"], args["overrides"])
        params = sum(p.numel() for p in net.parameters())
        return replace(meta, params=params, flops=count_flops(net, meta.input_size))


def timm_metadata(tag: str, *, family: str = "cnn", name: str | None = None, **overrides: Any) -> ModelMetadata:
    """Metadata of any timm model (not only the zoo's): input size, mean/std, crop and interpolation from timm's
    pretrained config of ``tag``, parameters and FLOPs counted on the meta device. ``name`` labels it (default: the
    tag); ``overrides`` as :func:`create_timm_model`'s."""
    import json

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    kept = {k: v for k, v in overrides.items() if v is not None}
    key = json.dumps({"tag": tag, "family": family, "name": name, "overrides": kept}, sort_keys=True)
    return _timm_metadata(key)


def create_timm_model(
    tag: str, *, family: str = "cnn", weights: str = "random", sha256: str | None = None, name: str | None = None,
    **overrides: Any,
) -> NormalizedModel:  # fmt: skip
    """Build any timm model by name, as :func:`create_model` builds a zoo entry: normalisation inside, metadata
    from timm's pretrained config of ``tag``.

    Args:
        tag: a timm model name, with or without its weights tag (``convnext_nano.in12k_ft_in1k``, ``resnet10t``).
        family: ``cnn``, ``transformer``, ``mlp`` or ``nas``: how results group it.
        weights: ``random``, ``pretrained`` (the tag's hub weights, local cache first, failing fast offline) or a
            ``.safetensors`` / torch state-dict file.
        sha256: expected digest of the weights file.
        name: the model's name in the results (default: ``tag``).
        overrides: ``num_classes``, ``in_chans``, ``img_size`` and any other ``timm.create_model`` argument.

    Raises:
        ValueError: unknown model, family or option, weights that do not fit, sha256 mismatch.
        FileNotFoundError: weights file missing, or pretrained weights unavailable offline.
    """
    meta = timm_metadata(tag, family=family, name=name, **overrides)
    net, _ = _build_timm(tag, family, name, {k: v for k, v in overrides.items() if v is not None})
    if weights not in ("random", "pretrained") and read_card(weights) is not None:
        raise ValueError(
            f"{weights} is a robustart training checkpoint, which belongs to a zoo entry: evaluate it with "
            f"model=<entry> model.weights={weights}"
        )
    return NormalizedModel(net, _load_weights(net, meta, weights, sha256)).eval()


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
