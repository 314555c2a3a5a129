"""ImageNet-C motion blur and snow (Hendrycks & Dietterich, ICLR 2019) as batched torch functions.

Both corruptions rest on ImageMagick's ``MotionImage.motion_blur`` (called through Wand in the original
``make_imagenet_c.py``). That filter is a one-sided line kernel: ``2 * radius + 1`` taps with Gaussian
weights ``w_i ∝ exp(-i² / 2σ²)`` (normalised over all taps), tap ``i`` reading the pixel
``(ceil(i sin θ - ½), ceil(i cos θ - ½))`` rows/columns away, edge pixels replicated; taps whose offset
reaches the image size are dropped (the weights are not renormalised). This follows the numpy port in
``imagecorruptions`` (``_motion_blur``), which matches Wand's output exactly on uint8 images.

Here it is a weighted sum of up to ``2 * radius + 1`` shifted copies of the batch; each image has its own
angle, so its own offsets, and the shifted copies are windows of one edge-replicated padding of the batch.

The functions map float32 NCHW batches in [0, 1] (CPU or GPU) to batches of the same shape, dtype and
range; randomness comes from a :class:`robustart.noise.seeding.SampleRNG`, so an image's corruption depends only on
``(seed, sample_id, corruption, severity)``. As in :mod:`robustart.noise.natural.corruptions`, the final
``uint8`` truncation and JPEG encoding of the original are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robustart.noise.natural.blur import clipped_zoom
from robustart.noise.natural.kernels import kernels
from robustart.noise.seeding import SampleRNG
from robustart.noise.threads import cpu_map

# severity 1..5 parameters, exactly as in make_imagenet_c.py (224 x 224 ImageNet)
# cv2.cvtColor(..., COLOR_RGB2GRAY) weights, which the original applies to the float32 image
_GRAY = (0.299, 0.587, 0.114)


def motion_blur_kernel_offsets(radius: int, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Taps of ImageMagick's motion-blur kernel for one angle (Hendrycks & Dietterich, ICLR 2019).

    The offsets are computed in float64 with the same operations, in the same order, as the reference
    (``i * (width sin θ) / hypot(width sin θ, width cos θ)``), because ``ceil(· - ½)`` is discontinuous and
    angles such as 30° put some taps exactly on a boundary where one ulp decides the pixel.

    Args:
        radius: kernel radius; the kernel has ``2 * radius + 1`` taps.
        sigma: standard deviation of the one-sided Gaussian weights, in taps.
        angle: direction of the blur in degrees (0 = along the rows, towards larger column indices).

    Returns:
        ``(weights, dy, dx)``, each of shape ``(2 * radius + 1,)``: float64 weights summing to 1, and the
        int64 row and column offsets of the pixel each tap reads (output ``[r, c]`` reads input
        ``[r + dy, c + dx]``, clamped to the image).
    """
    width = 2 * radius + 1
    taps = np.arange(width)
    weights = np.exp(-(taps.astype(np.float64) ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    rad = np.deg2rad(float(angle))
    point_y, point_x = width * np.sin(rad), width * np.cos(rad)
    hypot = math.hypot(point_y, point_x)
    dy = np.ceil(taps * point_y / hypot - 0.5).astype(np.int64)
    dx = np.ceil(taps * point_x / hypot - 0.5).astype(np.int64)
    return weights, dy, dx


def _blur_taps(
    radius: int, sigma: float, angles: Sequence[float], height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample taps, shape ``(batch, 2 * radius + 1)`` each, with dropped taps given weight 0.

    The reference stops at the first tap whose offset is as large as the image (``break``); offsets grow
    monotonically with the tap index, so that is every tap from there on.
    """
    taps = [motion_blur_kernel_offsets(radius, sigma, a) for a in angles]
    weights, dy, dx = (np.stack(parts) for parts in zip(*taps))
    inside = (np.abs(dy) < height) & (np.abs(dx) < width)
    weights = weights * np.cumprod(inside, axis=1)
    return weights, dy, dx


def _shifted_sum(x: torch.Tensor, weights: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> torch.Tensor:
    """``out[n, :, r, c] = Σ_t weights[n, t] * x[n, :, clamp(r + dy[n, t]), clamp(c + dx[n, t])]``.

    The batch is padded once by replicating its edges (as the reference's ``shift`` does), so every
    shifted image is a ``C x H x W`` window of that padding. (On the CPU, :func:`_motion_blur_8bit_cpu`
    runs instead.) On other devices, where many small kernels
    cost more than copies, a strided view exposes the windows starting at every element of the
    padding and tap ``t`` selects one per sample with a single ``index_select``, so the loop runs over
    taps only.
    """
    n, c, h, w = x.shape
    used = int(np.flatnonzero(weights.any(axis=0)).max()) + 1  # trailing taps dropped for every sample
    weights, dy, dx = weights[:, :used], dy[:, :used], dx[:, :used]
    pad_y, pad_x = int(np.abs(dy).max()), int(np.abs(dx).max())
    padded = F.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="replicate").contiguous()
    sn, sc, sh, sw = padded.stride()
    extent = (c - 1) * sc + (h - 1) * sh + (w - 1) * sw
    # windows[k] is the C x H x W window whose first element is element k of the padding (a view, no copy)
    windows = padded.view(-1).as_strided((padded.numel() - extent, c, h, w), (1, sc, sh, sw))
    starts = np.arange(n)[:, None] * sn + (dy + pad_y) * sh + (dx + pad_x) * sw
    starts_t = torch.as_tensor(starts, dtype=torch.long, device=x.device)
    weights_t = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    out = torch.zeros_like(x)
    for t in range(used):
        out.addcmul_(windows.index_select(0, starts_t[:, t]), weights_t[:, t, None, None, None])
    return out


def _motion_blur_255(
    x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor | Sequence[float]
) -> torch.Tensor:
    """Motion blur of a batch on any scale (unquantised), one angle in degrees per sample."""
    angles = torch.as_tensor(angles).detach().flatten().cpu().double().tolist()
    if len(angles) != len(x):
        raise ValueError(f"got {len(angles)} angles for {len(x)} images")
    weights, dy, dx = _blur_taps(radius, sigma, angles, x.shape[-2], x.shape[-1])
    return _shifted_sum(x, weights, dy, dx)


def _motion_blur_8bit_cpu(
    x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor | Sequence[float], offset: float
) -> torch.Tensor:
    """The original's 8-bit motion blur on the CPU: ``x`` to levels ``floor(clip(x) * 255 + offset)``, the
    blur, and rounding back to levels / 255, as two compiled kernels per image on the CPU threads."""
    angles = torch.as_tensor(angles).detach().flatten().cpu().double().tolist()
    if len(angles) != len(x):
        raise ValueError(f"got {len(angles)} angles for {len(x)} images")
    n, c, h, w = x.shape
    weights, dy, dx = _blur_taps(radius, sigma, angles, h, w)
    pad_y, pad_x = int(np.abs(dy).max()), int(np.abs(dx).max())
    rows, cols, taps = dy + pad_y, dx + pad_x, weights.astype(np.float32)
    src = x.contiguous().numpy()
    out = torch.empty(x.shape, dtype=x.dtype)
    dest = out.numpy()
    compiled = kernels()

    def one(i: int) -> None:
        padded = np.empty((c, h + 2 * pad_y, w + 2 * pad_x), dtype=np.float32)
        compiled["padded_levels"](src[i], pad_y, pad_x, np.float32(offset), padded)
        compiled["shifted_sum"](padded, taps[i], rows[i], cols[i], dest[i])

    cpu_map(one, range(n))
    return out


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    # ImageMagick writes its float result to an 8-bit PNG as floor(v + 0.5) (round half up)
    return torch.floor(x + 0.5)


def apply_motion_blur(
    x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor | Sequence[float], *, quantize: bool = True
) -> torch.Tensor:
    """ImageMagick motion blur with a given angle per image (Hendrycks & Dietterich, ICLR 2019).

    Args:
        x: float NCHW batch in [0, 1].
        radius: kernel radius (``2 * radius + 1`` taps).
        sigma: standard deviation of the one-sided Gaussian weights.
        angles: one angle in degrees per image, shape ``(N,)``.
        quantize: reproduce the original's ``uint8`` steps: the image reaches ImageMagick as a PNG of
            ``uint8`` pixels (rounded here, as the input is meant to be ``k / 255`` already) and comes back
            as a ``uint8`` PNG (ImageMagick rounds half up). With ``False`` the blur is applied to ``x`` as is.

    Returns:
        The blurred batch, same shape, dtype and device as ``x``, values in [0, 1].
    """
    if not quantize:
        return _motion_blur_255(x, radius, sigma, angles).clamp_(0, 1)
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return _motion_blur_8bit_cpu(x, radius, sigma, angles, 0.5)
    pixels = _round_half_up(x.clamp(0, 1) * 255)  # the PNG round trip of the original: uint8 in
    blurred = _motion_blur_255(pixels, radius, sigma, angles)
    return _round_half_up(blurred).clamp_(0, 255).div_(255)  # and uint8 out


def motion_blur(x: torch.Tensor, c: tuple[int, float], rng: SampleRNG) -> torch.Tensor:
    """Motion blur (Hendrycks & Dietterich, ICLR 2019): ImageMagick's motion blur at an angle ~ U(-45°, 45°).

    Args:
        x: float32 NCHW batch in [0, 1], CPU or GPU.
        c: ``(radius, sigma)`` of the kernel, see :data:`robustart.noise.natural.params.IMAGENET_PARAMS`.
        rng: per-sample generators; one uniform draw per image gives its angle.

    Returns:
        The blurred batch, same shape, dtype and device, values in [0, 1] (multiples of 1/255, as the
        original returns ImageMagick's ``uint8`` output).
    """
    angles = -45 + 90 * rng.rand((1,))[:, 0].double()
    return apply_motion_blur(x, c[0], c[1], angles)


def snow_layer(normal: torch.Tensor, c: tuple, angles: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """The falling-snow layer of ImageNet-C's snow (Hendrycks & Dietterich, ICLR 2019), from given draws.

    ``c[0] + c[1] * normal`` is zoomed by ``c[2]`` (:func:`clipped_zoom`), values below ``c[3]`` are set to
    0, and the result is motion-blurred with radius ``c[4]`` and sigma ``c[5]``. The original passes the
    layer to ImageMagick as a ``uint8`` grey PNG (``(clip(layer) * 255).astype(uint8)``, truncating) and
    reads the blurred one back as ``uint8`` (rounded); both quantisations are reproduced.

    Args:
        normal: standard normal draws, shape ``(N, H, W)``.
        c: snow parameters, see :data:`robustart.noise.natural.params.IMAGENET_PARAMS`.
        angles: blur angle in degrees per image, shape ``(N,)``; the original draws U(-135°, -45°).

    Returns:
        The layer, shape ``(N, 1, H, W)``, values in [0, 1] (multiples of 1/255).
    """
    layer = clipped_zoom((c[0] + c[1] * normal)[:, None], c[2])
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer)
    if layer.device.type == "cpu" and layer.dtype == torch.float32:
        return _motion_blur_8bit_cpu(layer, c[4], c[5], angles, 0.0)
    pixels = torch.floor(layer.clamp(0, 1) * 255)  # 'L' PNG: uint8 by truncation
    blurred = _motion_blur_255(pixels, c[4], c[5], angles)
    return _round_half_up(blurred).clamp_(0, 255).div_(255)  # ImageMagick's uint8 output


def apply_snow(x: torch.Tensor, c: tuple, normal: torch.Tensor, angles: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Snow with given random draws: the deterministic part of :func:`snow`.

    The image is whitened towards ``max(x, 1.5 * gray(x) + 0.5)`` with weight ``1 - c[6]``, then the snow
    layer and its 180° rotation are added (the original's ``x + snow + rot90(snow, 2)``).

    Args:
        x: float NCHW batch in [0, 1], 3 (RGB) or 1 channels.
        c: snow parameters, see :data:`robustart.noise.natural.params.IMAGENET_PARAMS`.
        normal: standard normal draws for the layer, shape ``(N, H, W)``.
        angles: blur angle in degrees per image, shape ``(N,)``.

    Returns:
        The snowy batch, same shape, dtype and device as ``x``, values in [0, 1].
    """
    layer = snow_layer(normal.to(device=x.device, dtype=x.dtype), c, angles)
    # a grey (one-channel) image is its own luminance, as in the reference
    gray = x if x.shape[1] == 1 else _GRAY[0] * x[:, 0:1] + _GRAY[1] * x[:, 1:2] + _GRAY[2] * x[:, 2:3]
    whitened = c[6] * x + (1 - c[6]) * torch.maximum(x, gray * 1.5 + 0.5)
    return (whitened + layer + layer.flip(-2, -1)).clamp_(0, 1)


def snow(x: torch.Tensor, c: tuple, rng: SampleRNG) -> torch.Tensor:
    """Snow (Hendrycks & Dietterich, ICLR 2019): motion-blurred bright speckles over a whitened image.

    Per image, an ``H x W`` map of N(c[0], c[1]) is drawn, then one blur angle ~ U(-135°, -45°)
    (see :func:`snow_layer` and :func:`apply_snow` for the rest).

    Args:
        x: float32 NCHW batch in [0, 1], 3 channels (RGB), CPU or GPU.
        c: ``(loc, scale, zoom, threshold, blur radius, blur sigma, mix)``, see :mod:`robustart.noise.natural.params`.
        rng: per-sample generators.

    Returns:
        The snowy batch, same shape, dtype and device, values in [0, 1].
    """
    normal = rng.randn(tuple(x.shape[-2:]))
    angles = -135 + 90 * rng.rand((1,))[:, 0].double()
    return apply_snow(x, c, normal, angles)
