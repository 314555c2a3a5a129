"""Geometric ImageNet-C corruptions (glass blur, elastic transform) as batched torch functions.

Ports of ``glass_blur`` and ``elastic_transform`` from Hendrycks's original ``make_imagenet_c.py``
(Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019), not of the simplified ``imagecorruptions`` package where the two differ.
Inputs are float32 NCHW batches in [0, 1] of any size (H, W >= 32) on CPU or GPU; outputs have the
same shape, dtype, device and range. All per-sample randomness comes from a
:class:`robustart.noise.seeding.SampleRNG`, so an image's output does not depend on the rest of its batch.

The random draws can also be passed in explicitly (:func:`glass_blur_with_offsets`,
:func:`elastic_transform_with_noise`), which is how the tests compare the ports with literal numpy
transcriptions of the original code fed the same random numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from robustart.noise.natural.blur import extend_index, gaussian_filter, gaussian_weights, symmetric_filter_cpu
from robustart.noise.natural.corruptions import eight_bit_levels
from robustart.noise.natural.kernels import kernels
from robustart.noise.seeding import SampleRNG
from robustart.noise.threads import cpu_map


def _sample(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample each image bilinearly at per-sample pixel coordinates, extending it beyond its border by ``mode``.

    Both extensions needed here are reflections of the continuous coordinate, which
    ``grid_sample``'s ``padding_mode="reflection"`` implements for any distance from the image: with
    ``align_corners=True`` it mirrors about the centres of the edge pixels (OpenCV's
    ``BORDER_REFLECT_101``, ``dcb|abcd|cba``), with ``align_corners=False`` about their outer edges
    (scipy's ``reflect``, ``dcba|abcd|dcba``). Bilinear interpolation of a mirrored signal equals
    interpolation at the mirrored coordinate, so this matches index reflection of the four neighbours.

    Args:
        image: ``(B, C, H, W)``.
        rows: ``(B, H2, W2)`` row coordinates in pixels (any range).
        cols: ``(B, H2, W2)`` column coordinates in pixels.
        mode: ``"reflect101"`` or ``"reflect"``.

    Returns:
        ``(B, C, H2, W2)`` in ``image.dtype``.
    """
    h, w = image.shape[-2:]
    if mode == "reflect101":
        grid = torch.stack([cols * (2 / (w - 1)) - 1, rows * (2 / (h - 1)) - 1], dim=-1)
    elif mode == "reflect":
        grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)
    else:
        raise ValueError(f"unknown boundary mode {mode!r}")
    return F.grid_sample(
        image, grid.to(image.dtype), mode="bilinear", padding_mode="reflection", align_corners=mode == "reflect101"
    )


# ----------------------------------------------------------------------------------------------
# Glass blur
# ----------------------------------------------------------------------------------------------


def glass_offsets(x: torch.Tensor, c: tuple, rng: SampleRNG) -> torch.Tensor:
    """Draw the per-pixel offsets of :func:`glass_blur`, like ``np.random.randint(-delta, delta)``.

    Args:
        x: the batch ``(B, C, H, W)`` (only its shape is used).
        c: ``(sigma, delta, iterations)``.
        rng: per-sample generators.

    Returns:
        Integer tensor (int8 while ``2 * delta`` fits, else int16) ``(B, iterations, H - 2 * delta,
        W - 2 * delta, 2)`` of ``(dx, dy)`` in ``[-delta, delta - 1]`` for the processed pixels
        ``h = delta + 1 .. H - delta`` (rows) and ``w = delta + 1 .. W - delta`` (columns), in spatial
        (not processing) order.
    """
    _, delta, iterations = c
    h, w = x.shape[-2:]
    dtype = torch.int8 if 2 * delta <= 127 else torch.int16
    draws = rng.integers((iterations, h - 2 * delta, w - 2 * delta, 2), 2 * delta, dtype)
    return draws.sub_(delta).to(x.device)


def _glass_pass_source(offsets: torch.Tensor, h: int, w: int, delta: int) -> torch.Tensor:
    """Where each pixel reads its value from after one pass of the original pixel-"swapping" loop.

    The original runs, in reverse raster order over the interior,
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an ``H x W x 3`` array. The right-hand side holds
    views, so the first assignment overwrites the view's target before the second reads it: the
    statement is a copy ``x[h, w] <- x[h', w']`` and ``x[h', w']`` is unchanged. If ``(h', w')`` was
    processed earlier in the same pass, it already holds the value of its own source, and so on. Each
    hop of such a chain goes back in processing time, so the chains are acyclic; they are resolved
    for all pixels at once by pointer jumping (repeated self-composition of the hop map, at most
    ``ceil(log2(n))`` times), and the end of each chain reads the value its source had before the pass.

    Args:
        offsets: ``(B, H - 2 * delta, W - 2 * delta, 2)`` integer ``(dx, dy)`` per processed pixel.
        h: image height.
        w: image width.
        delta: maximum offset.

    Returns:
        Long tensor ``(B, H * W)``: flat index of the pre-pass pixel each pixel ends up with.
    """
    b = offsets.shape[0]
    device = offsets.device
    rows = torch.arange(delta + 1, h - delta + 1, device=device)
    cols = torch.arange(delta + 1, w - delta + 1, device=device)
    target = (rows[:, None] * w + cols[None, :]).reshape(-1)  # flat index of each processed pixel
    src_row = rows[None, :, None] + offsets[..., 1].long()
    src_col = cols[None, None, :] + offsets[..., 0].long()
    source = (src_row * w + src_col).reshape(b, -1)
    # processing runs in reverse raster order, so "processed earlier" means a larger flat index
    src_processed = (src_row > delta) & (src_row <= h - delta) & (src_col > delta) & (src_col <= w - delta)
    follow = src_processed.reshape(b, -1) & (source > target)

    identity = torch.arange(h * w, device=device).expand(b, -1)
    hop = identity.clone()
    hop[:, target] = torch.where(follow, source, target)  # chain ends are fixed points
    read = identity.clone()
    read[:, target] = source
    # chains are at most as long as the number of processed pixels, so ceil(log2(n)) doublings
    # always suffice; in practice each hop continues with probability < 1/2 and chains are short,
    # so stop as soon as the map is idempotent (every pixel already points at its chain's end)
    for _ in range(max(1, math.ceil(math.log2(target.numel())))):
        jumped = hop.gather(1, hop)
        if torch.equal(jumped, hop):
            break
        hop = jumped
    return read.gather(1, hop)


def _glass_sources(offsets: torch.Tensor, h: int, w: int, delta: int) -> torch.Tensor:
    """All passes of the copy loop: flat index of the pre-loop pixel each pixel ends up with, ``(B, H * W)``.

    On the CPU the loop runs as written, per image (compiled, :mod:`robustart.noise.natural.kernels`); elsewhere
    each pass is resolved in parallel (:func:`_glass_pass_source`) and the passes are composed. The
    two give identical maps.
    """
    b, iterations = offsets.shape[:2]
    if offsets.device.type == "cpu":
        kernel = kernels()["glass_sources"]
        offsets_np = offsets.numpy()
        sources = np.tile(np.arange(h * w, dtype=np.int64), (b, 1))
        cpu_map(lambda n: kernel(offsets_np[n], h, w, delta, sources[n]), range(b))
        return torch.from_numpy(sources)
    source = torch.arange(h * w, device=offsets.device).expand(b, -1)
    for i in range(iterations):
        source = source.gather(1, _glass_pass_source(offsets[:, i], h, w, delta))
    return source


def _snap_to_8bit(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64, with values that are float32 roundings of ``k / 255`` restored to exactly ``k / 255``.

    The original always starts from an 8-bit image (``np.array(img) / 255.``) and truncates a blur of
    it to uint8, so flat regions sit exactly on integer levels where float32 input error (up to
    ~1.5e-5 levels) would flip the truncation. Inputs off the 8-bit grid move by at most 1e-4 / 255.

    Args:
        x: float tensor in [0, 1], any shape.

    Returns:
        float64 tensor, same shape.
    """
    if x.device.type == "cpu" and x.dtype == torch.float32:
        images = x.contiguous().reshape(len(x), -1).numpy()
        out = np.empty(images.shape, dtype=np.float64)
        cpu_map(lambda n: kernels()["snap_to_8bit"](images[n], out[n]), range(len(images)))
        return torch.from_numpy(out).reshape(x.shape)
    rounded, on_grid = eight_bit_levels(x)  # the test needs no float64: float32 error is ~3e-5 levels
    return torch.where(on_grid, rounded.double() / 255, x.double())


def _gaussian_nearest_scipy(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage ``gaussian(x, sigma, mode='nearest', truncate=4, channel_axis=-1)`` with scipy's float64 arithmetic.

    Replicates ``scipy.ndimage.gaussian_filter`` operation by operation (numpy-computed kernel, rows
    then columns, and ``correlate1d``'s symmetric-kernel sum ``x[i] * w0 + sum_{j=r..1} (x[i-j] +
    x[i+j]) * wj``), so that the uint8 truncation that follows matches the original bit for bit, also
    in flat regions whose blurred value is an exact integer level. Kernels here are at most 13 taps.

    Args:
        x: float64 ``(..., H, W)``.
        sigma: standard deviation in pixels.

    Returns:
        The filtered float64 tensor, same shape.
    """
    half = gaussian_weights(sigma, 4.0)
    if x.device.type == "cpu":
        return symmetric_filter_cpu(x, half, "nearest")
    radius = len(half) - 1
    weights = np.concatenate([half[:0:-1], half]).tolist()
    for dim in (-2, -1):
        n = x.shape[dim]
        index = extend_index(torch.arange(-radius, n + radius, device=x.device), n, "nearest")
        padded = x.index_select(dim, index)

        def shifted(j: int, padded: torch.Tensor = padded, n: int = n, dim: int = dim) -> torch.Tensor:
            return padded.narrow(dim, radius + j, n)

        out = shifted(0) * weights[radius]
        pair = torch.empty_like(out)
        for j in range(radius, 0, -1):
            # separate add, multiply, add (no fused multiply-add): the same rounding as scipy's C loop
            out += torch.add(shifted(-j), shifted(j), out=pair).mul_(weights[radius - j])
        x = out
    return x


def glass_blur_with_offsets(x: torch.Tensor, c: tuple, offsets: torch.Tensor) -> torch.Tensor:
    """:func:`glass_blur` with explicit random offsets (see :func:`glass_offsets`).

    Args:
        x: float NCHW batch in [0, 1].
        c: ``(sigma, delta, iterations)``.
        offsets: ``(B, iterations, H - 2 * delta, W - 2 * delta, 2)`` integer ``(dx, dy)`` offsets.

    Returns:
        The corrupted batch, same shape, dtype and device as ``x``, values in [0, 1].
    """
    sigma, delta, iterations = c
    b, ch, h, w = x.shape
    expected = (b, iterations, h - 2 * delta, w - 2 * delta, 2)
    if tuple(offsets.shape) != expected:
        raise ValueError(f"offsets must have shape {expected}, got {tuple(offsets.shape)}")
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return _glass_cpu(x, c, offsets)
    # the original blurs in float64 and truncates to uint8: reproduce that arithmetic exactly
    blurred = _gaussian_nearest_scipy(_snap_to_8bit(x), sigma)
    quantised = (blurred * 255).clamp_(0, 255).floor_().to(x.dtype)

    # one read map for all passes, then move each pixel (all channels) once
    source = _glass_sources(offsets.to(x.device), h, w, delta)
    shuffled = quantised.reshape(b, ch, h * w).gather(2, source[:, None, :].expand(b, ch, -1))
    return gaussian_filter(shuffled.reshape(b, ch, h, w) / 255, sigma, 4.0, "nearest").clamp_(0, 1)


def _glass_cpu(x: torch.Tensor, c: tuple, offsets: torch.Tensor) -> torch.Tensor:
    """:func:`glass_blur_with_offsets` on the CPU: every step of one image in compiled kernels, while its data
    stays in cache, one image per CPU thread. The same arithmetic as the batched path."""
    sigma, delta, _ = c
    b, ch, h, w = x.shape
    compiled = kernels()
    half = gaussian_weights(sigma, 4.0)
    weights64, weights32 = half.astype(np.float64), half.astype(np.float32)
    rows = extend_index(torch.arange(-(len(half) - 1), h + len(half) - 1), h, "nearest").numpy()
    cols = extend_index(torch.arange(-(len(half) - 1), w + len(half) - 1), w, "nearest").numpy()
    source, moves = x.contiguous().numpy(), offsets.numpy()
    out = torch.empty(x.shape, dtype=x.dtype)
    target = out.numpy()

    def one(i: int) -> None:
        snapped = np.empty((ch, h, w), dtype=np.float64)
        compiled["snap_to_8bit"](source[i].reshape(-1), snapped.reshape(-1))
        blurred = np.empty_like(snapped)
        compiled["symmetric_filter"](snapped, weights64, rows, cols, blurred)
        sources = np.arange(h * w, dtype=np.int64)
        compiled["glass_sources"](moves[i], h, w, delta, sources)
        shuffled = np.empty((ch, h, w), dtype=np.float32)
        compiled["glass_shuffle"](blurred.reshape(ch, -1), sources, shuffled.reshape(ch, -1))
        compiled["symmetric_filter"](shuffled, weights32, rows, cols, target[i])
        np.clip(target[i], 0, 1, out=target[i])

    cpu_map(one, range(b))
    return out


def glass_blur(x: torch.Tensor, c: tuple, rng: SampleRNG) -> torch.Tensor:
    """Glass blur: Gaussian blur, locally shuffle pixels, blur again (ImageNet-C).

    Reference: Hendrycks & Dietterich, ICLR 2019, ``make_imagenet_c.py``: blur with skimage's
    ``gaussian`` (``sigma``, truncate 4, mode ``nearest``), truncate to uint8, then ``iterations``
    passes over the interior in reverse raster order that copy into each pixel the pixel at a random
    offset ``(dy, dx)`` in ``[-delta, delta - 1]^2``, then blur again. The loop is reproduced exactly,
    including its copy chains (see :func:`_glass_pass_source`), with ``224`` generalised to ``H``
    (rows) and ``W`` (columns).

    Args:
        x: float32 ``(B, 3, H, W)`` in [0, 1], H, W >= 32, on CPU or CUDA.
        c: ``(sigma, delta, iterations)``, see :mod:`robustart.noise.natural.params`.
        rng: per-sample generators; one offset draw per processed pixel and pass.

    Returns:
        ``(B, 3, H, W)``, same dtype and device, values in [0, 1].
    """
    return glass_blur_with_offsets(x, c, glass_offsets(x, c, rng))


# ----------------------------------------------------------------------------------------------
# Elastic transform
# ----------------------------------------------------------------------------------------------


def elastic_noise(x: torch.Tensor, c: tuple, rng: SampleRNG) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the random inputs of :func:`elastic_transform`, in the original's order.

    Args:
        x: the batch ``(B, C, H, W)`` (only its shape is used).
        c: ``(alpha, sigma, jitter)``.
        rng: per-sample generators.

    Returns:
        ``(jitter, ux, uy)``: affine point jitter ``(B, 3, 2)`` uniform in ``[-c[2], c[2])``, and the
        raw displacement fields ``(B, H, W)`` uniform in ``[-1, 1)`` for columns and rows.
    """
    h, w = x.shape[-2:]
    jitter = (rng.rand((3, 2)) * 2 - 1) * c[2]
    ux = rng.rand((h, w)) * 2 - 1
    uy = rng.rand((h, w)) * 2 - 1
    return jitter.to(x.device), ux.to(x.device), uy.to(x.device)


def elastic_transform_with_noise(
    x: torch.Tensor, c: tuple, jitter: torch.Tensor, ux: torch.Tensor, uy: torch.Tensor
) -> torch.Tensor:
    """:func:`elastic_transform` with explicit random inputs (see :func:`elastic_noise`).

    Args:
        x: float NCHW batch in [0, 1].
        c: ``(alpha, sigma, jitter)``.
        jitter: ``(B, 3, 2)`` offsets added to the three affine reference points (``(x, y)`` as OpenCV).
        ux: ``(B, H, W)`` uniform [-1, 1) field smoothed into the column displacement.
        uy: ``(B, H, W)`` uniform [-1, 1) field smoothed into the row displacement.

    Returns:
        The corrupted batch, same shape, dtype and device as ``x``, values in [0, 1].
    """
    alpha, sigma, _ = c
    b, _, h, w = x.shape
    device = x.device

    # random affine: the original builds its points from (rows, cols) but OpenCV reads them as
    # (x, y); kept as is, which only matters for non-square images
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float32, device=device)
    square = min(h, w) // 3
    pts1 = torch.stack(
        [centre + square, torch.stack([centre[0] + square, centre[1] - square]), centre - square]
    )  # (3, 2) float32, as np.float32 in the original
    pts2 = (pts1 + jitter.to(torch.float32)).double()
    # cv2.getAffineTransform: M @ [x, y, 1]^T = pts2 for the three points, i.e. [pts1 | 1] @ M^T = pts2
    lhs = torch.cat([pts1.double(), torch.ones(3, 1, dtype=torch.float64, device=device)], dim=1)
    m = torch.linalg.solve(lhs.expand(b, 3, 3), pts2).transpose(1, 2)  # (B, 2, 3)
    # cv2.warpAffine maps each output pixel through the inverse transform
    inv = torch.linalg.inv(m[:, :, :2])
    shift = -(inv @ m[:, :, 2:])
    # smooth displacement fields: skimage gaussian(sigma, mode='reflect', truncate=3) * alpha, cast to
    # float32 by the original; filtered in float32 here (the fields' relative error stays below 1e-6)
    fields = gaussian_filter(torch.stack([ux, uy], dim=1).float(), sigma, 3.0, "reflect") * alpha
    if device.type == "cpu" and x.dtype == torch.float32:
        return _elastic_cpu(x, torch.cat([inv, shift], dim=2), fields)
    ys = torch.arange(h, dtype=torch.float64, device=device)[None, :, None]
    xs = torch.arange(w, dtype=torch.float64, device=device)[None, None, :]

    def coef(i: int, j: int) -> torch.Tensor:
        return inv[:, i, j, None, None]

    src_x = coef(0, 0) * xs + coef(0, 1) * ys + shift[:, 0, 0, None, None]
    src_y = coef(1, 0) * xs + coef(1, 1) * ys + shift[:, 1, 0, None, None]
    warped = _sample(x, src_y, src_x, "reflect101")

    dx, dy = fields.double().unbind(1)
    # map_coordinates(order=1, mode='reflect') at (row + dy, col + dx); channels are never mixed
    out = _sample(warped, ys + dy, xs + dx, "reflect")
    return out.clamp_(0, 1)


def _elastic_cpu(x: torch.Tensor, inverse: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """Both resamplings of :func:`elastic_transform_with_noise` as compiled kernels, one image per CPU thread.

    Args:
        x: float32 ``(B, C, H, W)`` on the CPU.
        inverse: float64 ``(B, 2, 3)``: the inverse affine map from output ``(x, y, 1)`` to input ``(x, y)``.
        fields: float32 ``(B, 2, H, W)``: column and row displacements.
    """
    source = x.contiguous().numpy()
    maps, shifts = inverse.numpy(), fields.contiguous().numpy()
    out = torch.empty(x.shape, dtype=x.dtype)
    target = out.numpy()
    compiled = kernels()

    def one(i: int) -> None:
        warped = np.empty_like(source[i])
        compiled["warp_affine"](source[i], maps[i], warped)
        compiled["displace"](warped, shifts[i, 1], shifts[i, 0], target[i])
        np.clip(target[i], 0, 1, out=target[i])

    cpu_map(one, range(len(source)))
    return out


def elastic_transform(x: torch.Tensor, c: tuple, rng: SampleRNG) -> torch.Tensor:
    """Elastic transform: random affine warp, then a smooth random displacement field (ImageNet-C).

    Reference: Hendrycks & Dietterich, ICLR 2019, ``make_imagenet_c.py`` (the original, not the
    ``imagecorruptions`` variant): the three points ``centre + s``, ``(centre_0 + s, centre_1 - s)``,
    ``centre - s`` (``s = min(H, W) // 3``) are jittered uniformly by ``c[2]`` and the image is warped
    by the affine map between them (bilinear, ``BORDER_REFLECT_101``, as ``cv2.warpAffine``); then each
    pixel is resampled (bilinear, half-sample reflection, as ``scipy.ndimage.map_coordinates``) at
    an offset given by two uniform [-1, 1) fields smoothed with a Gaussian (``sigma = c[1]``,
    truncate 3, reflect) and scaled by ``alpha = c[0]``. The warp samples at exact coordinates, as
    OpenCV >= 4.11 does for float images; older OpenCV rounded them to 1/32 pixel.

    Args:
        x: float32 ``(B, 3, H, W)`` in [0, 1], H, W >= 32, on CPU or CUDA.
        c: ``(alpha, sigma, jitter)``, see :mod:`robustart.noise.natural.params`.
        rng: per-sample generators.

    Returns:
        ``(B, 3, H, W)``, same dtype and device, values in [0, 1].
    """
    return elastic_transform_with_noise(x, c, *elastic_noise(x, c, rng))
