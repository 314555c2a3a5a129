"""Shared helper: build a timm model and read its evaluation metadata from its pretrained config."""

from __future__ import annotations

from typing import Any

from model_zoo.metadata import ModelMetadata


def build_timm(name: str, tag: str, family: str, **overrides: Any):
    """Create ``timm.create_model(tag)`` with random weights and describe it.

    ``None`` overrides are dropped so that timm's own defaults stay in force. Pretrained weights
    are loaded later by :mod:`model_zoo.weights`, so building never touches the network.
    """
    import timm
    from timm.models import get_pretrained_cfg

    kwargs = {k: v for k, v in overrides.items() if v is not None}
    module = timm.create_model(tag, pretrained=False, **kwargs)
    cfg = get_pretrained_cfg(tag)
    in_chans = kwargs.get("in_chans", cfg.input_size[0])
    mean, std = tuple(cfg.mean), tuple(cfg.std)
    if in_chans != len(mean):  # grey-scale or multispectral input: average the RGB statistics
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    size = kwargs.get("img_size", cfg.input_size[1])
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
