"""ImageNet-C digital corruptions that the original runs through Pillow: pixelate and JPEG.

The original applies these to 8-bit PIL images, so inputs are quantised to 8 bits (``round(x * 255)``)
first. ``pixelate`` reproduces Pillow's BOX resampling, including its 22-bit fixed-point weights and
8-bit rounding between the horizontal and vertical passes, as a batched torch matrix product.
``jpeg_compression`` must use a real JPEG codec (libjpeg's quantisation tables and 4:2:0 chroma), so it
runs Pillow on the CPU, image by image, and moves the result back to the input's device.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import torch

from noise.seeding import SampleRNG

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


@functools.lru_cache(maxsize=64)
def box_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's BOX resampling coefficients as an ``(out_size, in_size)`` integer matrix (scaled by 2^22)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        arg = (taps - center + 0.5) / filterscale
        w = ((arg > -0.5) & (arg <= 0.5)).astype(np.float64)
        if w.sum():
            w /= w.sum()
        weights[xx, lo:hi] = np.where(
            w < 0, np.trunc(-0.5 + w * (1 << _PRECISION_BITS)), np.trunc(0.5 + w * (1 << _PRECISION_BITS))
        )
    return weights


def _resample_pass(x8: torch.Tensor, weights: np.ndarray, dim: int) -> torch.Tensor:
    """One Pillow pass along ``dim`` (-1 horizontal, -2 vertical) on 8-bit values held in float64."""
    m = torch.from_numpy(weights).to(x8.device)
    acc = torch.matmul(x8, m.T) if dim == -1 else torch.matmul(m, x8)
    return torch.floor(acc / (1 << _PRECISION_BITS) + 0.5).clamp_(0, 255)


def pil_box_resize(x8: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow ``Image.resize((width, height), BOX)`` of 8-bit images (float64 NCHW holding 0..255)."""
    h, w = x8.shape[-2:]
    if width != w:
        x8 = _resample_pass(x8, box_weights(w, width), -1)
    if height != h:
        x8 = _resample_pass(x8, box_weights(h, height), -2)
    return x8


def to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] as 8-bit levels 0..255 (rounded), in float64."""
    return torch.round(x.to(torch.float64) * 255).clamp_(0, 255)


def pixelate(x: torch.Tensor, c: float, rng: SampleRNG | None = None) -> torch.Tensor:
    """Pixelate: BOX-downsample to ``int(size * c)`` and BOX-upsample back, as Pillow does."""
    h, w = x.shape[-2:]
    small = pil_box_resize(to_uint8_levels(x), int(h * c), int(w * c))
    return (pil_box_resize(small, h, w) / 255).to(x.dtype)


def jpeg_compression(x: torch.Tensor, c: int, rng: SampleRNG | None = None) -> torch.Tensor:
    """JPEG at quality ``c`` with Pillow's defaults (4:2:0), decoded again. Runs on the CPU."""
    return _jpeg_round_trip(to_uint8_levels(x), int(c), x)


def save_like_released(x: torch.Tensor) -> torch.Tensor:
    """What the released ImageNet-C files hold: ``np.uint8`` truncation, then JPEG quality 85
    (``optimize=True``, 4:2:0), decoded again. Runs on the CPU.

    Applying it to on-the-fly corruptions makes their numbers comparable with the released set's.
    """
    return _jpeg_round_trip(torch.floor(x.to(torch.float64) * 255).clamp_(0, 255), 85, x, optimize=True)


def _jpeg_round_trip(levels: torch.Tensor, quality: int, like: torch.Tensor, optimize: bool = False) -> torch.Tensor:
    from PIL import Image

    levels = levels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(levels)
    for i, image in enumerate(levels):
        buffer = io.BytesIO()
        mode = "L" if image.shape[-1] == 1 else "RGB"
        Image.fromarray(image.squeeze(-1) if mode == "L" else image, mode).save(
            buffer, "JPEG", quality=quality, optimize=optimize
        )
        decoded = np.asarray(Image.open(buffer))
        out[i] = decoded[..., None] if mode == "L" else decoded
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(like.device, like.dtype) / 255
