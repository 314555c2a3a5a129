"""ImageNet-C blurs: defocus, Gaussian and zoom blur, batched in torch.

Each function takes ``x`` (float32 NCHW in [0, 1]) and the severity's parameter ``c`` and keeps shape,
dtype, device and range. They are deterministic (no randomness), so ``rng`` is accepted and ignored.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len

from robustart.noise.natural.kernels import kernels
from robustart.noise.seeding import SampleRNG
from robustart.noise.threads import cpu_map


@functools.lru_cache(maxsize=16)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The original's anti-aliased disk: a normalised 0/1 disk, then cv2.GaussianBlur.

    The disk lives on a 17 x 17 grid (3 x 3 blur) for radius <= 8, else on (2r+1)^2 (5 x 5 blur).
    """
    import cv2

    half, ksize = (8, (3, 3)) if radius <= 8 else (int(radius), (5, 5))
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def _reflect_pad_ok(x: torch.Tensor, pad: int) -> None:
    if pad >= min(x.shape[-2:]):
        raise ValueError(f"images of {tuple(x.shape[-2:])} px are too small for a {2 * pad + 1} px blur kernel")


def defocus_blur(x: torch.Tensor, c: tuple[int, float], rng: SampleRNG | None = None) -> torch.Tensor:
    """Defocus: correlate with the anti-aliased disk of radius ``c[0]``; borders reflect-101 like cv2.filter2D.

    The disk has up to 21 x 21 taps, so the product runs in the Fourier domain (as cv2.filter2D does
    for large kernels): the image, padded by reflection, is multiplied with the kernel's spectrum and
    the part of the circular result that never wraps around is kept. Float32 rounding leaves it
    within 2e-6 of direct correlation.
    """
    kernel = torch.from_numpy(disk_kernel(float(c[0]), float(c[1])))
    pad = kernel.shape[0] // 2
    _reflect_pad_ok(x, pad)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    # transform lengths with small prime factors only (244 = 4 x 61 is several times slower than 250);
    # the extra zeros only move the wrapped-around part further out
    size = tuple(next_fast_len(n, real=True) for n in padded.shape[-2:])
    # correlation = convolution with the flipped kernel; output i reads padded[i .. i + 2 pad]
    spectrum = torch.fft.rfft2(kernel.flip(0, 1).to(x), s=size)
    full = torch.fft.irfft2(torch.fft.rfft2(padded, s=size) * spectrum, s=size)
    h, w = x.shape[-2:]
    return full[..., 2 * pad : 2 * pad + h, 2 * pad : 2 * pad + w].clamp_(0, 1)


def extend_index(index: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map integer positions outside ``[0, n)`` back into it, as scipy/OpenCV extend a signal.

    Args:
        index: integer tensor of positions, any shape, any range.
        n: signal length.
        mode: ``"nearest"`` (``aaaa|abcd|dddd``) or ``"reflect"`` (scipy's half-sample symmetric
            ``dcba|abcd|dcba``).

    Returns:
        Positions in ``[0, n)``, same shape. Reflection is periodic, so offsets wider than the
        signal (kernels of large Gaussians) fold back repeatedly as in scipy.
    """
    if mode == "nearest":
        return index.clamp(0, n - 1)
    if mode == "reflect":
        m = torch.remainder(index, 2 * n)
        return torch.where(m >= n, 2 * n - 1 - m, m)
    raise ValueError(f"unknown boundary mode {mode!r}")


@functools.lru_cache(maxsize=64)
def _gaussian_matrix(
    n: int, sigma: float, truncate: float, mode: str, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The ``n x n`` matrix of scipy's ``gaussian_filter1d`` along one axis, boundary included.

    Writing the 1-D filter (kernel radius ``int(truncate * sigma + 0.5)``, weights normalised to sum
    to 1, signal extended by ``mode``) as a dense matrix makes the result exact for any kernel
    radius, even one several times the image size (elastic severity 1 has radius 512 on a 224 px
    image), and turns the separable 2-D filter into two batched matrix products.

    Args:
        n: signal length.
        sigma: Gaussian standard deviation in pixels.
        truncate: kernel radius in standard deviations.
        mode: boundary mode, see :func:`extend_index`.
        dtype: dtype of the returned matrix.
        device: device of the returned matrix.

    Returns:
        ``K`` of shape ``(n, n)`` with ``filtered = K @ signal``; cached, so never modify it.
    """
    radius = int(truncate * float(sigma) + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 / (float(sigma) ** 2) * taps**2)
    weights = weights / weights.sum()
    rows = torch.arange(n)[:, None].expand(n, 2 * radius + 1)
    cols = extend_index(rows + taps.long()[None, :], n, mode)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    # accumulate: with reflection several taps can land on the same source pixel; built on the CPU,
    # where accumulation order is fixed, so results are bitwise reproducible on every device
    matrix.index_put_((rows.reshape(-1), cols.reshape(-1)), weights.expand(n, -1).reshape(-1), accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """One half of scipy's 1-D Gaussian kernel in float64, centre first: ``(radius + 1,)`` weights.

    Computed as ``scipy.ndimage.gaussian_filter1d`` does (radius ``int(truncate * sigma + 0.5)``,
    ``exp(-0.5 / sigma**2 * x**2)`` normalised to sum 1 over the full kernel).
    """
    radius = int(truncate * float(sigma) + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 / (float(sigma) * float(sigma)) * taps**2)
    return (weights / weights.sum())[radius:]


def symmetric_filter_cpu(x: torch.Tensor, weights: np.ndarray, mode: str) -> torch.Tensor:
    """Filter the last two dimensions of a CPU tensor with a symmetric 1-D kernel, rows then columns.

    Compiled (:mod:`noise.natural.kernels`) and run on :func:`noise.threads.cpu_map`, a block of planes
    per thread, in ``x``'s dtype with scipy's operation order, so float64 input gives
    ``scipy.ndimage.correlate1d`` applied along both axes bit for bit.

    Args:
        x: CPU float tensor ``(..., H, W)``.
        weights: ``(radius + 1,)`` half kernel, centre first (see :func:`gaussian_weights`).
        mode: boundary mode, see :func:`extend_index`.

    Returns:
        The filtered tensor, same shape and dtype.
    """
    kernel = kernels()["symmetric_filter"]
    h, w = x.shape[-2:]
    radius = len(weights) - 1
    planes = x.reshape(-1, h, w).contiguous()
    out = torch.empty_like(planes)
    rows = extend_index(torch.arange(-radius, h + radius), h, mode).numpy()
    cols = extend_index(torch.arange(-radius, w + radius), w, mode).numpy()
    src, dest = planes.numpy(), out.numpy()
    taps = np.asarray(weights, dtype=src.dtype)
    blocks = [b for b in np.array_split(np.arange(len(src)), torch.get_num_threads()) if len(b)]
    cpu_map(lambda b: kernel(src[b[0] : b[-1] + 1], taps, rows, cols, dest[b[0] : b[-1] + 1]), blocks)
    return out.reshape(x.shape)


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """Separable 2-D Gaussian over the last two dimensions, as ``scipy.ndimage.gaussian_filter``.

    Args:
        x: tensor ``(..., H, W)``; the leading dimensions (batch, channels) are not mixed, as with
            skimage's ``gaussian(..., channel_axis=-1)``.
        sigma: standard deviation in pixels, the same along both axes.
        truncate: kernel radius in standard deviations.
        mode: boundary mode, see :func:`extend_index`.

    Returns:
        The filtered tensor, same shape and dtype.
    """
    if sigma == 0:  # scipy leaves an axis with sigma 0 unfiltered (CIFAR-10-C's first elastic severity)
        return x
    h, w = x.shape[-2:]
    radius = int(truncate * float(sigma) + 0.5)
    if x.device.type == "cpu" and 5 * (radius + 1) < min(h, w):
        # small kernels: a direct filter costs O(radius) per pixel, the dense matrices O(size)
        return symmetric_filter_cpu(x, gaussian_weights(sigma, truncate), mode)
    kh = _gaussian_matrix(h, sigma, truncate, mode, x.dtype, x.device)
    kw = _gaussian_matrix(w, sigma, truncate, mode, x.dtype, x.device)
    return kh @ x @ kw.T


def gaussian_blur(x: torch.Tensor, c: float, rng: SampleRNG | None = None) -> torch.Tensor:
    """Gaussian blur with standard deviation ``c`` px (truncated at 4 sigma, edges replicated)."""
    return gaussian_filter(x, float(c)).clamp_(0, 1)


def zoom_factors(severity_index: int) -> np.ndarray:
    """The original's zoom factors, with ``np.arange``'s float end points (sev 1 has 12 factors)."""
    ranges = [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)]
    return np.arange(*ranges[severity_index])


def _zoom_taps(n: int, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """Source positions of :func:`clipped_zoom` along one axis of length ``n``: for each output pixel, the
    first of its two source pixels (an index into the full axis) and the weight of the second."""
    inner = math.ceil(n / zoom)
    start = (n - inner) // 2
    size = round(inner * zoom)
    trim = (size - n) // 2
    # scipy.ndimage.zoom(order=1) aligns the corner pixels: output k reads input k * (inner - 1) / (size - 1)
    position = (np.arange(trim, trim + n) * ((inner - 1) / (size - 1))) if size > 1 else np.zeros(n)
    first = np.minimum(np.floor(position), max(inner - 2, 0)).astype(np.int64)
    return first + start, (position - first).astype(np.float32)


def _zooms_cpu(x: torch.Tensor, zooms: list[float], out: torch.Tensor) -> torch.Tensor:
    """Add the :func:`clipped_zoom` of ``x`` by each factor in ``zooms`` to ``out``, per image on the CPU threads."""
    h, w = x.shape[-2:]
    taps_h = [_zoom_taps(h, z) for z in zooms]
    taps_w = [_zoom_taps(w, z) for z in zooms]
    rows, row_weight = (np.stack(t) for t in zip(*taps_h))
    cols, col_weight = (np.stack(t) for t in zip(*taps_w))
    kernel = kernels()["zoom_sum"]
    src, dest = x.contiguous().numpy(), out.numpy()
    cpu_map(lambda n: kernel(src[n], rows, row_weight, cols, col_weight, dest[n]), range(len(src)))
    return out


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Zoom into the centre of a batch, keeping its size, as the original's ``clipped_zoom``.

    The centre ``ceil(h / zoom) x ceil(w / zoom)`` is cut out (top-left corner ``(h - ch) // 2``), enlarged
    to ``round(ch * zoom) x round(cw * zoom)`` like ``scipy.ndimage.zoom(order=1)`` (linear, corner pixels
    aligned) and the centre ``h x w`` of that is kept. Height and width are handled separately. scipy's
    ``mode='constant'`` can zero a last row whose float coordinate lands a hair past the edge (160 px at
    zoom 2.5; never at 224 px, where the trim drops it): a rounding artefact, not reproduced.

    Args:
        x: float batch ``(N, C, H, W)``.
        zoom: zoom factor, >= 1.
    """
    h, w = x.shape[-2:]
    if x.device.type == "cpu" and x.dtype == torch.float32 and min(h, w) > 1:
        return _zooms_cpu(x, [zoom], torch.zeros_like(x, memory_format=torch.contiguous_format))
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    # scipy.ndimage.zoom's output size is round(input * zoom)
    out = F.interpolate(crop, size=(round(ch * zoom), round(cw * zoom)), mode="bilinear", align_corners=True)
    trim_top, trim_left = (out.shape[-2] - h) // 2, (out.shape[-1] - w) // 2
    return out[..., trim_top : trim_top + h, trim_left : trim_left + w]


def zoom_blur(x: torch.Tensor, c: np.ndarray, rng: SampleRNG | None = None) -> torch.Tensor:
    """Average of the image and its centre zooms by each factor in ``c``."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and min(x.shape[-2:]) > 1:
        out = _zooms_cpu(x, [float(z) for z in c], x.clone(memory_format=torch.contiguous_format))
    else:
        out = x.clone()
        for zoom in c:
            out += clipped_zoom(x, float(zoom))
    return (out / (len(c) + 1)).clamp_(0, 1)
