"""Vision transformers from timm: ViT (Dosovitskiy et al., 2021), DeiT (Touvron et al., 2021), Swin (Liu et
al., 2021), and small ones for 28-32 px inputs.

Their shape depends on the input size (position embeddings, attention windows): ``img_size`` rebuilds them
for it, so that a 32 px ViT-B/16 has 2x2 patches.
"""

from __future__ import annotations

from torch import nn

from robustart.model_zoo._timm import register_small, register_timm

#: zoo name -> (timm tag, description)
TIMM_TRANSFORMERS = {
    "vit_t": ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "ViT-Ti/16 at 224 px (Dosovitskiy et al., 2021)"),
    "vit_s": ("vit_small_patch16_224.augreg_in21k_ft_in1k", "ViT-S/16 at 224 px (Dosovitskiy et al., 2021)"),
    "vit_b": ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT-B/16 at 224 px (Dosovitskiy et al., 2021)"),
    "vit_l": ("vit_large_patch16_224.augreg_in21k_ft_in1k", "ViT-L/16 at 224 px (Dosovitskiy et al., 2021)"),
    "deit_t": ("deit_tiny_patch16_224.fb_in1k", "DeiT-Ti/16 at 224 px (Touvron et al., 2021), ImageNet-1k only"),
    "deit_s": ("deit_small_patch16_224.fb_in1k", "DeiT-S/16 at 224 px (Touvron et al., 2021), ImageNet-1k only"),
    "deit_b": ("deit_base_patch16_224.fb_in1k", "DeiT-B/16 at 224 px (Touvron et al., 2021), ImageNet-1k only"),
    "swin_t": ("swin_tiny_patch4_window7_224.ms_in1k", "Swin-T, patch 4, window 7, 224 px (Liu et al., 2021)"),
    "swin_s": ("swin_small_patch4_window7_224.ms_in1k", "Swin-S, patch 4, window 7, 224 px (Liu et al., 2021)"),
    "swin_b": ("swin_base_patch4_window7_224.ms_in1k", "Swin-B, patch 4, window 7, 224 px (Liu et al., 2021)"),
}

register_timm("transformer", TIMM_TRANSFORMERS)


@register_small("small_vit", "transformer", size_multiple=4)
def small_vit(num_classes: int, in_chans: int, img_size: int, **regularisers: float) -> nn.Module:
    """ViT for 28-32 px inputs: 4x4 patches (49 tokens at 28 px), 6 blocks of width 96 with 3 heads, a class
    token; 0.7 M parameters (Fashion-MNIST by default: 1 channel, 10 classes)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=img_size, patch_size=4, in_chans=in_chans, num_classes=num_classes, embed_dim=96, depth=6,
        num_heads=3, **regularisers,
    )  # fmt: skip


@register_small("small_swin", "transformer", size_multiple=4)
def small_swin(num_classes: int, in_chans: int, img_size: int, **regularisers: float) -> nn.Module:
    """Swin for 28-32 px inputs: 2x2 patches, two stages (2 blocks of width 48 with 3 heads, 4 of width 96 with
    6 heads); the window is half the first stage's grid (7 at 28 px: 2x2 shifted windows, then one window
    over the merged 7x7 map); 0.6 M parameters (Fashion-MNIST by default: 1 channel, 10 classes)."""
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        img_size=img_size, patch_size=2, window_size=img_size // 4, in_chans=in_chans, num_classes=num_classes,
        embed_dim=48, depths=(2, 4), num_heads=(3, 6), **regularisers,
    )  # fmt: skip
