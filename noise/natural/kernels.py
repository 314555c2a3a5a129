"""CPU kernels, compiled with numba on first use (and cached on disk), for the steps that are loops in
the original or that need 8-bit pixels: each works on one image and releases the GIL, so a batch runs
on :func:`noise.threads.cpu_map`'s threads. Other devices use the torch formulations next to each caller.

numba comes with ``imagecorruptions-imaug``, a core dependency. Compiled code does not contract
multiply-adds (numba leaves fast-math off), so integer and float results are the same as numpy's.
"""

from __future__ import annotations

import functools


@functools.cache
def kernels():
    """Compile the kernels (once per process; numba's disk cache makes later processes fast)."""
    import numba
    import numpy as np

    jit = numba.njit(nogil=True, cache=True)

    @jit
    def glass_sources(offsets, h, w, delta, out):  # pragma: no cover - compiled
        """The original glass-blur copy loop on pixel indices: ``out`` (``H * W``, initially ``arange``) ends
        holding, for each pixel, the pixel whose pre-loop value it receives. ``offsets`` is
        ``(iterations, H - 2 delta, W - 2 delta, 2)`` ``(dx, dy)`` in spatial order."""
        for i in range(offsets.shape[0]):
            for row in range(h - delta, delta, -1):
                for col in range(w - delta, delta, -1):
                    dx = offsets[i, row - delta - 1, col - delta - 1, 0]
                    dy = offsets[i, row - delta - 1, col - delta - 1, 1]
                    out[row * w + col] = out[(row + dy) * w + col + dx]

    @jit
    def to_hwc_uint8(x, out, truncate):  # pragma: no cover - compiled
        """float ``(C, H, W)`` in [0, 1] -> uint8 ``(H, W, C)``: ``x * 255`` rounded half to even (as
        ``torch.round``), or truncated as ``np.uint8`` does, clipped to 0..255."""
        channels, height, width = x.shape
        for c in range(channels):
            for i in range(height):
                for j in range(width):
                    # rounding multiplies in the input's precision (as torch does); truncation in float64,
                    # as the original's np.uint8 of a float64 array
                    v = np.floor(np.float64(x[c, i, j]) * 255.0) if truncate else np.rint(x[c, i, j] * np.float32(255))
                    out[i, j, c] = np.uint8(min(max(v, 0.0), 255.0))

    @jit
    def from_hwc_uint8(levels, out, lut):  # pragma: no cover - compiled
        """uint8 ``(H, W, C)`` -> float ``(C, H, W)``: ``out[c, i, j] = lut[levels[i, j, c]]``."""
        height, width, channels = levels.shape
        for c in range(channels):
            for i in range(height):
                for j in range(width):
                    out[c, i, j] = lut[levels[i, j, c]]

    @jit
    def pixelate(x, out, col_index, col_weight, row_index, row_weight, up_rows, up_cols, precision, lut):
        """Pillow BOX down-sampling of one float ``(C, H, W)`` image (rounded to 8 bits; columns, then
        rows, each pass rounded and clipped to 8 bits, as Pillow's fixed point), then BOX up-sampling,
        which for an enlargement gives every output pixel exactly one source pixel with full weight,
        so it is the gather ``up_rows x up_cols``. ``lut[k]`` is the float value of level ``k``."""
        channels, height, width = x.shape
        small_w, small_h = col_index.shape[1], row_index.shape[1]
        half = 1 << (precision - 1)
        levels = np.empty(width, dtype=np.int32)
        narrow = np.empty((height, small_w), dtype=np.int32)
        acc = np.empty(small_w, dtype=np.int32)
        small = np.empty((small_h, small_w), dtype=np.uint8)
        for c in range(channels):
            for i in range(height):  # horizontal pass, one row at a time
                for j in range(width):
                    levels[j] = np.int32(min(max(np.rint(x[c, i, j] * np.float32(255)), 0), 255))
                for o in range(small_w):
                    total = half
                    for t in range(col_index.shape[0]):
                        total += levels[col_index[t, o]] * col_weight[t, o]
                    narrow[i, o] = min(max(total >> precision, 0), 255)
            for o in range(small_h):  # vertical pass, a whole output row at a time
                acc[:] = half
                for t in range(row_index.shape[0]):
                    weight, source = row_weight[t, o], row_index[t, o]
                    for j in range(small_w):
                        acc[j] += narrow[source, j] * weight
                for j in range(small_w):
                    small[o, j] = min(max(acc[j] >> precision, 0), 255)
            for i in range(out.shape[1]):  # enlargement: a gather
                row = small[up_rows[i]]
                for j in range(out.shape[2]):
                    out[c, i, j] = lut[row[up_cols[j]]]

    return {
        "glass_sources": glass_sources,
        "to_hwc_uint8": to_hwc_uint8,
        "from_hwc_uint8": from_hwc_uint8,
        "pixelate": pixelate,
    }
