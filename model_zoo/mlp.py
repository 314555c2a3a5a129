"""All-MLP networks from timm: MLP-Mixer (Tolstikhin et al., 2021), ResMLP (Touvron et al., 2022), and small
ones for 28-32 px inputs.

Their token-mixing layers are sized for the number of patches: ``img_size`` rebuilds them for it.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from robustart.model_zoo._timm import register_small, register_timm

#: zoo name -> (timm tag, description)
TIMM_MLPS = {
    "mixer_b16": ("mixer_b16_224.goog_in21k_ft_in1k", "Mixer-B/16 at 224 px (Tolstikhin et al., 2021)"),
    "mixer_l16": ("mixer_l16_224.goog_in21k_ft_in1k", "Mixer-L/16 at 224 px (Tolstikhin et al., 2021)"),
    "resmlp_12": ("resmlp_12_224.fb_in1k", "ResMLP-12, patch 16, 224 px (Touvron et al., 2022)"),
    "resmlp_24": ("resmlp_24_224.fb_in1k", "ResMLP-24, patch 16, 224 px (Touvron et al., 2022)"),
}

register_timm("mlp", TIMM_MLPS)


@register_small("small_mixer", "mlp", size_multiple=4)
def small_mixer(num_classes: int, in_chans: int, img_size: int, **regularisers: float) -> nn.Module:
    """MLP-Mixer for 28-32 px inputs: 4x4 patches (49 tokens at 28 px), 6 blocks of width 128 (token MLP
    x0.5, channel MLP x4); 0.8 M parameters (Fashion-MNIST by default: 1 channel, 10 classes)."""
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(
        num_classes=num_classes,
        img_size=img_size,
        in_chans=in_chans,
        patch_size=4,
        num_blocks=6,
        embed_dim=128,
        **regularisers,
    )


@register_small("small_resmlp", "mlp", size_multiple=4)
def small_resmlp(num_classes: int, in_chans: int, img_size: int, **regularisers: float) -> nn.Module:
    """ResMLP for 28-32 px inputs: 4x4 patches, 6 residual blocks of width 128 (linear token mixing, channel
    MLP x4, affine norms, layer scale 0.1 as the paper's shallow models); 0.8 M parameters (Fashion-MNIST by
    default: 1 channel, 10 classes)."""
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    return MlpMixer(
        num_classes=num_classes, img_size=img_size, in_chans=in_chans, patch_size=4, num_blocks=6, embed_dim=128,
        mlp_ratio=4, block_layer=partial(ResBlock, init_values=0.1), norm_layer=Affine, **regularisers,
    )  # fmt: skip
