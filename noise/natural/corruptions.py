"""ImageNet-C noise and colour corruptions (Hendrycks & Dietterich, ICLR 2019) as batched torch functions.

Each function maps a batch ``x`` (float32 NCHW in [0, 1], CPU or GPU) to a batch of the same shape,
dtype and range; ``c`` is one severity's parameter (:mod:`robustart.noise.natural.params`).
Random corruptions take a :class:`robustart.noise.seeding.SampleRNG`, so each image's noise depends only on
``(seed, sample_id, corruption, severity)``.

The original saves each corrupted image as ``uint8`` (truncating) in a JPEG at quality 85; these
functions return the float image before that step.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from robustart.noise.natural.kernels import kernels
from robustart.noise.seeding import SampleRNG
from robustart.noise.threads import cpu_map


def gaussian_noise(x: torch.Tensor, c: float, rng: SampleRNG) -> torch.Tensor:
    """Additive Gaussian noise with standard deviation ``c``: ``clip(x + N(0, c))``."""
    return (x + c * rng.randn(x.shape[1:])).clamp_(0, 1)


def shot_noise(x: torch.Tensor, c: float, rng: SampleRNG) -> torch.Tensor:
    """Poisson (photon) noise: ``clip(Poisson(x * c) / c)``; smaller ``c`` is stronger.

    Images whose pixels are 8-bit levels (``k / 255``, as every decoded photograph) have at most 256
    distinct rates, so their counts are drawn by inverting the exact Poisson CDF of each level
    (:func:`poisson_from_levels`), one uniform per pixel; other images use ``torch.poisson``. Both
    draw from the same distribution; the first is several times faster on the CPU.
    """
    uniform = rng.rand(x.shape[1:], torch.float64)
    if x.device.type == "cpu" and x.dtype == torch.float32:
        cdf, guide, size = (t.numpy() if torch.is_tensor(t) else t for t in _poisson_tables(float(c), x.device))
        images, draws = x.contiguous().reshape(len(x), -1).numpy(), uniform.reshape(len(x), -1).numpy()
        out = torch.empty(images.shape, dtype=x.dtype)
        dest = out.numpy()
        kernel = kernels()["poisson_from_levels"]
        tables = (cdf, guide, size, _GUIDE_BINS, c)
        on_grid = cpu_map(lambda i: kernel(images[i], draws[i], *tables, dest[i]), range(len(x)))
        out = out.reshape(x.shape)
    else:
        rounded, on_grid_pixels = eight_bit_levels(x)
        on_grid = on_grid_pixels.flatten(1).all(1).tolist()
        out = (poisson_from_levels(rounded.long(), c, uniform).to(x.dtype) / c).clamp_(0, 1)
    for i in (i for i, ok in enumerate(on_grid) if not ok):
        out[i] = (torch.poisson(x[i] * c, generator=rng.generators[i]) / c).clamp_(0, 1)
    return out


def eight_bit_levels(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x * 255`` rounded to integer levels, and where ``x`` is within float32 error of that level.

    Float images decoded from 8-bit files hold float32 roundings of ``k / 255`` (off by up to ~3e-5
    levels); anything further than 1e-4 levels from an integer is not an 8-bit value.

    Returns:
        ``(rounded, on_grid)``: float levels 0..255 and a boolean mask, both shaped like ``x``.
    """
    levels = x * 255
    rounded = levels.round()
    return rounded, (levels - rounded).abs() < 1e-4


#: bins of the guide table that starts each CDF search close to its answer
_GUIDE_BINS = 1024


@functools.lru_cache(maxsize=32)
def _poisson_tables(c: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """CDF and guide tables of Poisson(``k / 255 * c``) for the 256 levels ``k``.

    Returns:
        ``(cdf, guide, size)``: ``cdf`` float64 ``(256 * size,)``, level ``k``'s CDF at ``0 .. size - 1``
        in ``cdf[k * size:]`` (the last entry set to 1; the mass beyond it is below 1e-30);
        ``guide`` int64 ``(256 * _GUIDE_BINS,)``, the flat ``cdf`` position of the smallest count whose
        CDF exceeds ``j / _GUIDE_BINS``.
    """
    from scipy.stats import poisson

    size = int(c + 15 * math.sqrt(c) + 30)
    rates = np.arange(256) / 255 * c
    cdf = poisson.cdf(np.arange(size)[None, :], rates[:, None])
    cdf[:, -1] = 1.0
    bins = np.arange(_GUIDE_BINS) / _GUIDE_BINS
    guide = np.stack([np.searchsorted(row, bins, side="right") for row in cdf]) + np.arange(256)[:, None] * size
    return torch.from_numpy(cdf.reshape(-1)).to(device), torch.from_numpy(guide.reshape(-1)).to(device), size


def poisson_from_levels(levels: torch.Tensor, c: float, uniform: torch.Tensor) -> torch.Tensor:
    """Poisson(``levels / 255 * c``) counts by inverse transform: the smallest ``n`` with ``CDF(n) > u``.

    Args:
        levels: int64 8-bit levels 0..255, any shape.
        c: counts per unit intensity.
        uniform: float64 draws in [0, 1), same shape as ``levels``.

    Returns:
        float64 counts, same shape.
    """
    cdf, guide, size = _poisson_tables(float(c), levels.device)
    shape = levels.shape
    levels, uniform = levels.reshape(-1), uniform.reshape(-1)
    position = guide.index_select(0, levels * _GUIDE_BINS + (uniform * _GUIDE_BINS).long())
    # walk up from the guide's start: one step for a few percent of the pixels, more only in the
    # guide's last bin (the upper tail), so after the first step only the unfinished ones are visited
    step = cdf.index_select(0, position) <= uniform
    position += step
    todo = step.nonzero().squeeze(1)
    while todo.numel():
        here = position[todo]
        step = cdf.index_select(0, here) <= uniform[todo]
        position[todo] = here + step
        todo = todo[step]
    return (position - levels * size).to(torch.float64).reshape(shape)


def impulse_noise(x: torch.Tensor, c: float, rng: SampleRNG) -> torch.Tensor:
    """Salt-and-pepper noise as scikit-image's ``random_noise(mode='s&p', amount=c)``.

    Each element (each channel independently) is replaced with probability ``c``, by 1 or 0 with
    equal odds. One uniform draw ``u`` per element decides both: replaced if ``u < c``, and then salt
    if ``u < c / 2`` (probability 1/2 given ``u < c``, as the original's second draw).
    """
    u = rng.rand(x.shape[1:])
    return torch.where(u < c, (u < c / 2).to(x.dtype), x)


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
