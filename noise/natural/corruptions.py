"""ImageNet-C noise and colour corruptions (Hendrycks & Dietterich, ICLR 2019) as batched torch functions.

Each function maps a batch ``x`` (float32 NCHW in [0, 1], CPU or GPU) to a batch of the same shape,
dtype and range; ``c`` is one severity's parameter (:mod:`noise.natural.params`).
Random corruptions take a :class:`noise.seeding.SampleRNG`, so each image's noise depends only on
``(seed, sample_id, corruption, severity)``.

The original saves each corrupted image as ``uint8`` (truncating) in a JPEG at quality 85; these
functions return the float image before that step.
"""

from __future__ import annotations

import torch

from noise.seeding import SampleRNG


def gaussian_noise(x: torch.Tensor, c: float, rng: SampleRNG) -> torch.Tensor:
    """Additive Gaussian noise with standard deviation ``c``: ``clip(x + N(0, c))``."""
    return (x + c * rng.randn(x.shape[1:])).clamp_(0, 1)


def shot_noise(x: torch.Tensor, c: float, rng: SampleRNG) -> torch.Tensor:
    """Poisson (photon) noise: ``clip(Poisson(x * c) / c)``; smaller ``c`` is stronger."""
    return (rng.poisson(x * c) / c).clamp_(0, 1)


def impulse_noise(x: torch.Tensor, c: float, rng: SampleRNG) -> torch.Tensor:
    """Salt-and-pepper noise as scikit-image's ``random_noise(mode='s&p', amount=c)``.

    Each element (each channel independently) is replaced with probability ``c``, by 1 or 0 with
    equal odds.
    """
    flip = rng.rand(x.shape[1:]) < c
    salt = rng.rand(x.shape[1:]) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


def speckle_noise(x: torch.Tensor, c: float, rng: SampleRNG) -> torch.Tensor:
    """Multiplicative Gaussian noise: ``clip(x + x * N(0, c))``."""
    return (x + x * (c * rng.randn(x.shape[1:]))).clamp_(0, 1)


def brightness(x: torch.Tensor, c: float, rng: SampleRNG | None = None) -> torch.Tensor:
    """Raise the HSV value channel by ``c`` (clipped to 1), keeping hue and saturation.

    With hue and saturation fixed, each RGB channel is proportional to V, so the HSV round trip of
    the original equals scaling the pixel by ``V' / V``; a black pixel (V = 0, S = 0) becomes grey ``c``.
    Grey-scale images (one channel) are their own V.
    """
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(max=1)
    scaled = x * (v_new / v.clamp(min=torch.finfo(x.dtype).tiny))
    return torch.where(v > 0, scaled, v_new.expand_as(x)).clamp_(0, 1)


def saturate(x: torch.Tensor, c: tuple[float, float], rng: SampleRNG | None = None) -> torch.Tensor:
    """Scale the HSV saturation: ``S' = clip(S * c[0] + c[1], 0, 1)``, keeping hue and value.

    With hue and value fixed, each channel is ``V - (V - x) * S' / S``; a grey pixel (S = 0, hue 0 in
    scikit-image's convention) becomes ``(V, V (1 - S'), V (1 - S'))``. Grey-scale images (one
    channel) are treated as RGB with equal channels, of which the first is returned.
    """
    rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    v = rgb.amax(dim=1, keepdim=True)
    delta = v - rgb.amin(dim=1, keepdim=True)
    s = torch.where(v > 0, delta / v.clamp(min=torch.finfo(x.dtype).tiny), torch.zeros_like(v))
    s_new = (s * c[0] + c[1]).clamp(0, 1)
    coloured = v - (v - rgb) * (s_new / s.clamp(min=torch.finfo(x.dtype).tiny))
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], dim=1)
    out = torch.where(delta > 0, coloured, grey).clamp_(0, 1)
    return out[:, :1] if x.shape[1] == 1 else out


def contrast(x: torch.Tensor, c: float, rng: SampleRNG | None = None) -> torch.Tensor:
    """Scale each channel's deviation from its spatial mean by ``c``: ``clip((x - m) * c + m)``."""
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * c + m).clamp_(0, 1)
