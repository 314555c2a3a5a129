"""MLP-Mixers (Tolstikhin et al., 2021) from timm."""

from __future__ import annotations

from model_zoo._timm import build_timm
from model_zoo.registry import register_model


@register_model("mixer_b16", family="mlp")
def mixer_b16(**overrides):
    """Mixer-B/16 at 224 px, timm ``mixer_b16_224.goog_in21k_ft_in1k``."""
    return build_timm("mixer_b16", "mixer_b16_224.goog_in21k_ft_in1k", "mlp", **overrides)
