"""ImageNet-C digital corruptions that the original runs through Pillow: pixelate and JPEG.

The original applies these to 8-bit PIL images, so inputs are quantised to 8 bits (``round(x * 255)``)
first. ``pixelate`` reproduces Pillow's BOX resampling, including its 22-bit fixed-point weights and
8-bit rounding between the horizontal and vertical passes (a compiled kernel on the CPU, batched
torch operations elsewhere).
``jpeg_compression`` must use a real JPEG codec (libjpeg's quantisation tables and 4:2:0 chroma), so it
runs libjpeg-turbo (through OpenCV, pixel-identical to Pillow's) on the CPU, image by image, and moves the
result back to the input's device.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from robustart.noise.seeding import SampleRNG
from robustart.noise.threads import cpu_map

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

    On the CPU a compiled kernel runs Pillow's 8-bit fixed-point arithmetic image by image, in parallel
    (:func:`robustart.noise.natural.kernels.kernels`); on other devices the same arithmetic runs in torch
    (:func:`pixelate_torch`), so the batch never leaves the device.
    """
    if x.device.type != "cpu":
        return pixelate_torch(x, c)
    from robustart.noise.natural.kernels import kernels

    h, w = x.shape[-2:]
    small_h, small_w = int(h * c), int(w * c)
    col_index, col_weight = _box_taps_int(w, small_w)
    row_index, row_weight = _box_taps_int(h, small_h)
    up_rows, up_cols = _enlarge_map(small_h, h), _enlarge_map(small_w, w)
    source = x.detach().contiguous().numpy()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    target = out.numpy()
    kernel = kernels()["pixelate"]
    args = (col_index, col_weight, row_index, row_weight, up_rows, up_cols, _PRECISION_BITS, _level_values(x.dtype))
    cpu_map(lambda i: kernel(source[i], target[i], *args), range(len(x)))
    return out


@functools.lru_cache(maxsize=64)
def _box_taps_int(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_box_taps` with integer weights (they are integers: fixed point scaled by 2^22)."""
    index, value = _box_taps(in_size, out_size)
    return index, value.astype(np.int32)  # at most 2^22 each, and 255 * 2^22 fits


@functools.lru_cache(maxsize=4)
def _level_values(dtype: torch.dtype) -> np.ndarray:
    """The float value of each 8-bit level, ``k / 255`` computed in ``dtype`` as torch computes it."""
    return (torch.arange(256, dtype=dtype) / 255).numpy()


@functools.lru_cache(maxsize=64)
def _enlarge_map(in_size: int, out_size: int) -> np.ndarray:
    """The source pixel of each output pixel in Pillow's BOX enlargement from ``in_size`` to ``out_size``.

    With a scale below 1 the box is one input pixel wide, so exactly one tap has weight 1 (``2^22``
    in fixed point) and the pass copies that pixel's value.
    """
    weights = box_weights(in_size, out_size)
    if not np.all((weights != 0).sum(axis=1) == 1):
        raise ValueError(f"BOX resampling {in_size} -> {out_size} px is not an enlargement")
    return weights.argmax(axis=1)


def pixelate_torch(x: torch.Tensor, c: float) -> torch.Tensor:
    """:func:`pixelate` in torch: Pillow's BOX arithmetic, on any device."""
    h, w = x.shape[-2:]
    small = pil_box_resize(to_uint8_levels(x), int(h * c), int(w * c))
    return (pil_box_resize(small, h, w) / 255).to(x.dtype)


def jpeg_compression(x: torch.Tensor, c: int, rng: SampleRNG | None = None) -> torch.Tensor:
    """JPEG at quality ``c`` with Pillow's defaults (4:2:0), decoded again. Runs on the CPU (see
    :func:`_jpeg_round_trip`)."""
    return _jpeg_round_trip(x, int(c))


def save_like_released(x: torch.Tensor) -> torch.Tensor:
    """What the released ImageNet-C files hold: ``np.uint8`` truncation, then JPEG quality 85
    (``optimize=True``, 4:2:0), decoded again. Runs on the CPU.

    Applying it to on-the-fly corruptions makes their numbers comparable with the released set's.
    """
    return _jpeg_round_trip(x, 85, optimize=True, truncate=True)


def _jpeg_round_trip(x: torch.Tensor, quality: int, optimize: bool = False, truncate: bool = False) -> torch.Tensor:
    """Encode each image of a float NCHW batch as an 8-bit JPEG and decode it again, as Pillow does.

    Pixels become 8-bit by rounding (``truncate=False``) or truncation. The original saves with Pillow;
    here OpenCV encodes and decodes, because its codec releases the GIL for all its work, so images run
    in parallel on the CPU threads, while Pillow's JPEG encoder holds it. Both wrap libjpeg-turbo with
    the same settings for this purpose (IJG quality tables, 4:2:0 chroma, integer DCT, fancy chroma
    upsampling), so the decoded pixels are Pillow's; the tests check that against Pillow's own round
    trip on real photographs at every quality. ``optimize`` (Huffman tables) changes the file size
    only, never the pixels, and is passed on for completeness. Conversions are compiled kernels.
    """
    import cv2

    from robustart.noise.natural.kernels import kernels

    n, channels, h, w = x.shape
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR_RGB
    settings = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, int(optimize)]
    if channels == 3:
        settings += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    source = x.detach().cpu().contiguous().numpy()
    out = torch.empty(x.shape, dtype=x.dtype)
    target = out.numpy()
    compiled = kernels()
    lut = _level_values(x.dtype)

    def one(i: int) -> None:
        levels = np.empty((h, w, channels), dtype=np.uint8)
        compiled["to_hwc_uint8"](source[i], levels, truncate, True)  # OpenCV encodes BGR
        ok, encoded = cv2.imencode(".jpg", levels, settings)
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {h} x {w} JPEG")
        decoded = cv2.imdecode(encoded, flag)
        compiled["from_hwc_uint8"](decoded.reshape(h, w, channels), target[i], lut)

    cpu_map(one, range(n))
    return out.to(x.device)
