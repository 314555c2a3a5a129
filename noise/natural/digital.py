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
from noise.threads import cpu_map

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


@functools.lru_cache(maxsize=64)
def _box_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero BOX coefficients as ``(index, weight)`` arrays of shape ``(taps, out_size)``: each
    output pixel reads only a few neighbours, so gathering them beats a dense matrix product."""
    weights = box_weights(in_size, out_size)
    taps = int((weights != 0).sum(axis=1).max())
    index = np.zeros((taps, out_size), dtype=np.int64)
    value = np.zeros((taps, out_size), dtype=np.float64)
    for row, w in enumerate(weights):
        nonzero = np.flatnonzero(w)
        index[: len(nonzero), row] = nonzero
        value[: len(nonzero), row] = w[nonzero]
    return index, value


def _resample_rows(x8: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """One Pillow pass along the rows (dim -2) of 8-bit values held in float64, exact in fixed point."""
    index, value = _box_taps(in_size, out_size)
    acc = None
    for idx, w in zip(index, value, strict=True):
        term = x8.index_select(-2, torch.from_numpy(idx).to(x8.device)) * torch.from_numpy(w).to(x8)[:, None]
        acc = term if acc is None else acc.add_(term)
    return torch.floor_(acc.div_(1 << _PRECISION_BITS).add_(0.5)).clamp_(0, 255)


def pil_box_resize(x8: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow ``Image.resize((width, height), BOX)`` of 8-bit images (float64 NCHW holding 0..255)."""
    h, w = x8.shape[-2:]
    if width != w:  # horizontal first, as Pillow; on transposed rows, where gathering is contiguous
        x8 = _resample_rows(x8.transpose(-1, -2).contiguous(), w, width).transpose(-1, -2)
    if height != h:
        x8 = _resample_rows(x8, h, height)
    return x8


def to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] as 8-bit levels 0..255 (rounded), in float64."""
    return torch.round(x * 255).clamp_(0, 255).to(torch.float64)


def pixelate(x: torch.Tensor, c: float, rng: SampleRNG | None = None) -> torch.Tensor:
    """Pixelate: BOX-downsample to ``int(size * c)`` and BOX-upsample back, as Pillow does.

    On the CPU this calls Pillow itself (its uint8 C loops are the fastest there); on other devices it
    runs the same arithmetic in torch (:func:`pixelate_torch`), so the batch never leaves the device.
    """
    if x.device.type != "cpu":
        return pixelate_torch(x, c)
    from PIL import Image

    h, w = x.shape[-2:]
    levels = _hwc_uint8(x)
    out = np.empty_like(levels)

    def one(i: int) -> None:  # Pillow releases the GIL while it resamples: images run in parallel
        pil = Image.fromarray(levels[i, ..., 0] if levels.shape[-1] == 1 else levels[i])
        small = np.asarray(pil.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX))
        out[i] = small.reshape(h, w, -1)

    cpu_map(one, range(len(levels)))
    return _from_hwc_uint8(out, x)


def _hwc_uint8(x: torch.Tensor) -> np.ndarray:
    """NCHW floats in [0, 1] as a contiguous NHWC uint8 array (rounded) on the CPU, for Pillow."""
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _from_hwc_uint8(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(array).to(like.device).permute(0, 3, 1, 2).to(like.dtype).div_(255)


def pixelate_torch(x: torch.Tensor, c: float) -> torch.Tensor:
    """:func:`pixelate` in torch: Pillow's BOX arithmetic, on any device."""
    h, w = x.shape[-2:]
    small = pil_box_resize(to_uint8_levels(x), int(h * c), int(w * c))
    return (pil_box_resize(small, h, w) / 255).to(x.dtype)


def jpeg_compression(x: torch.Tensor, c: int, rng: SampleRNG | None = None) -> torch.Tensor:
    """JPEG at quality ``c`` with Pillow's defaults (4:2:0), decoded again. Runs on the CPU."""
    return _jpeg_round_trip(_hwc_uint8(x), int(c), x)


def save_like_released(x: torch.Tensor) -> torch.Tensor:
    """What the released ImageNet-C files hold: ``np.uint8`` truncation, then JPEG quality 85
    (``optimize=True``, 4:2:0), decoded again. Runs on the CPU.

    Applying it to on-the-fly corruptions makes their numbers comparable with the released set's.
    """
    truncated = torch.floor(x.to(torch.float64) * 255).clamp_(0, 255).to(torch.uint8)
    return _jpeg_round_trip(truncated.permute(0, 2, 3, 1).contiguous().cpu().numpy(), 85, x, optimize=True)


def _jpeg_round_trip(levels: np.ndarray, quality: int, like: torch.Tensor, optimize: bool = False) -> torch.Tensor:
    """Encode each NHWC uint8 image as JPEG with Pillow and decode it again."""
    from PIL import Image

    out = np.empty_like(levels)
    mode = "L" if levels.shape[-1] == 1 else "RGB"

    def one(i: int) -> None:  # Pillow's codec releases the GIL: images run in parallel
        buffer = io.BytesIO()
        Image.fromarray(levels[i, ..., 0] if mode == "L" else levels[i], mode).save(
            buffer, "JPEG", quality=quality, optimize=optimize
        )
        decoded = np.asarray(Image.open(buffer))
        out[i] = decoded[..., None] if mode == "L" else decoded

    cpu_map(one, range(len(levels)))
    return _from_hwc_uint8(out, like)
