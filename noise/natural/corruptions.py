"""ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) as batched torch functions.

Each function maps a batch ``x`` (float32 NCHW in [0, 1], CPU or GPU) to a batch of the same shape,
dtype and range. Parameters are those of the original ``make_imagenet_c.py`` for 224 px ImageNet.
Random corruptions take a :class:`noise.seeding.SampleRNG`, so each image's noise depends only on
``(seed, sample_id, corruption, severity)``.

The original saves each corrupted image as ``uint8`` (truncating) in a JPEG at quality 85; these
functions return the float image before that step.
"""

from __future__ import annotations

import torch

from noise.seeding import SampleRNG

# severity 1..5 parameters, exactly as in make_imagenet_c.py (224 x 224 ImageNet)
IMAGENET_PARAMS: dict[str, tuple] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
}


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


def contrast(x: torch.Tensor, c: float, rng: SampleRNG | None = None) -> torch.Tensor:
    """Scale each channel's deviation from its spatial mean by ``c``: ``clip((x - m) * c + m)``."""
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * c + m).clamp_(0, 1)


FUNCTIONS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "brightness": brightness,
    "contrast": contrast,
}
