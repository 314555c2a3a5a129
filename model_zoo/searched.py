"""Architectures found by published neural architecture searches (family ``nas``), from timm.

Hand-picked results of searches, each trained from scratch on ImageNet by its authors: MnasNet (Tan et al.,
2019), FBNet (Wu et al., 2019), Single-Path NAS (Stamoulis et al., 2019), HardCoRe-NAS (Nayman et al., 2021)
and TinyNet (Han et al., 2020). The zoo's own weight-sharing search lives in :mod:`robustart.model_zoo.nas`.
"""

from __future__ import annotations

from robustart.model_zoo._timm import register_timm

#: zoo name -> (timm tag, description)
SEARCHED = {
    "mnasnet": ("mnasnet_100.rmsp_in1k", "MnasNet-A1 at width 1.0 (Tan et al., 2019), latency-aware RL search"),
    "fbnet": ("fbnetc_100.rmsp_in1k", "FBNet-C (Wu et al., 2019), differentiable hardware-aware search"),
    "spnasnet": ("spnasnet_100.rmsp_in1k", "Single-Path NAS (Stamoulis et al., 2019), one-shot search"),
    **{
        f"hardcorenas_{v}": (
            f"hardcorenas_{v}.miil_green_in1k",
            f"HardCoRe-NAS-{v.upper()} (Nayman et al., 2021), latency-constrained one-shot search",
        )
        for v in "abcdef"
    },
    **{
        f"tinynet_{v}": (
            f"tinynet_{v}.in1k",
            f"TinyNet-{v.upper()} (Han et al., 2020), searched resolution, depth, width",
        )
        for v in "abcde"
    },
}

register_timm("nas", SEARCHED)
