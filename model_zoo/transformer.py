"""Vision Transformers (Dosovitskiy et al., 2021) from timm."""

from __future__ import annotations

from model_zoo._timm import build_timm
from model_zoo.registry import register_model


@register_model("vit_t", family="transformer")
def vit_t(**overrides):
    """ViT-Ti/16 at 224 px, timm ``vit_tiny_patch16_224.augreg_in21k_ft_in1k``."""
    return build_timm("vit_t", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "transformer", **overrides)


@register_model("vit_b", family="transformer")
def vit_b(**overrides):
    """ViT-B/16 at 224 px, timm ``vit_base_patch16_224.augreg2_in21k_ft_in1k``."""
    return build_timm("vit_b", "vit_base_patch16_224.augreg2_in21k_ft_in1k", "transformer", **overrides)
