"""CPU kernels, compiled with numba on first use (and cached on disk), for the steps that are loops in
the original or that need 8-bit pixels: each works on one image and releases the GIL, so a batch runs
on :func:`robustart.noise.threads.cpu_map`'s threads. Other devices use the torch formulations next to each caller.

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
    inline = numba.njit(nogil=True, cache=True, inline="always")  # helpers, compiled into their callers

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
    def glass_shuffle(blurred, sources, out):  # pragma: no cover - compiled
        """Glass blur's middle step for one image, on flat ``(C, H * W)`` planes: truncate the float64 blur to
        8-bit levels (``np.uint8(blurred * 255)``) and move each pixel to where the copy loop puts it,
        ``out[c, p] = level(blurred[c, sources[p]]) / 255`` in float32."""
        for c in range(blurred.shape[0]):
            src, dest = blurred[c], out[c]
            for p in range(sources.size):
                level = np.floor(min(max(src[sources[p]] * 255.0, 0.0), 255.0))
                dest[p] = np.float32(level) / np.float32(255)

    @jit
    def to_hwc_uint8(x, out, truncate, reverse):  # pragma: no cover - compiled
        """float ``(C, H, W)`` in [0, 1] -> uint8 ``(H, W, C)``: ``x * 255`` rounded half to even (as
        ``torch.round``), or truncated as ``np.uint8`` does, clipped to 0..255; channels in reverse
        order if ``reverse`` (RGB -> BGR). Rounding multiplies in the input's precision (as torch
        does), truncation in float64 (as the original's ``np.uint8`` of a float64 array)."""
        channels, height, width = x.shape
        row = np.empty(width, dtype=np.uint8)
        for c in range(channels):
            d = channels - 1 - c if reverse else c
            for i in range(height):
                src = x[c, i]
                if truncate:
                    for j in range(width):
                        row[j] = np.uint8(min(max(np.floor(np.float64(src[j]) * 255.0), 0.0), 255.0))
                else:  # a separate loop per branch vectorises
                    for j in range(width):
                        row[j] = np.uint8(min(max(np.rint(src[j] * np.float32(255)), np.float32(0)), np.float32(255)))
                dest = out[i]
                for j in range(width):
                    dest[j, d] = row[j]

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
        so it is the gather ``up_rows x up_cols``. ``lut[k]`` is the float value of level ``k``. Loops
        run tap by tap over whole rows, so that the inner loops vectorise."""
        channels, height, width = x.shape
        taps_w, small_w = col_index.shape
        taps_h, small_h = row_index.shape
        half = np.int32(1 << (precision - 1))
        levels = np.empty(width, dtype=np.int32)
        total = np.empty(small_w, dtype=np.int32)  # at most 255 * 2^22 + 2^21 < 2^31
        narrow = np.empty((height, small_w), dtype=np.int32)
        small = np.empty((small_h, small_w), dtype=np.uint8)
        for c in range(channels):
            for i in range(height):  # horizontal pass, one row at a time
                src = x[c, i]
                for j in range(width):
                    levels[j] = np.int32(min(max(np.rint(src[j] * np.float32(255)), np.float32(0)), np.float32(255)))
                total[:] = half
                for t in range(taps_w):
                    index, weight = col_index[t], col_weight[t]
                    for o in range(small_w):
                        total[o] += levels[index[o]] * weight[o]
                row = narrow[i]
                for o in range(small_w):
                    row[o] = min(max(total[o] >> precision, 0), 255)
            for o in range(small_h):  # vertical pass, a whole output row at a time
                total[:] = half
                for t in range(taps_h):
                    weight, source = row_weight[t, o], narrow[row_index[t, o]]
                    for j in range(small_w):
                        total[j] += source[j] * weight
                dest = small[o]
                for j in range(small_w):
                    dest[j] = min(max(total[j] >> precision, 0), 255)
            for i in range(out.shape[1]):  # enlargement: a gather, once per distinct source row
                dest = out[c, i]
                if i > 0 and up_rows[i] == up_rows[i - 1]:
                    dest[:] = out[c, i - 1]
                    continue
                row = small[up_rows[i]]
                for j in range(dest.size):
                    dest[j] = lut[row[up_cols[j]]]

    @inline
    def _mirror(index, n, mode):  # pragma: no cover - compiled
        """Fold an integer position into ``[0, n)``: mode 0 mirrors about the edge pixels' centres (OpenCV's
        ``BORDER_REFLECT_101``), mode 1 about their outer edges (scipy's ``reflect``)."""
        if n == 1:
            return 0
        period = 2 * (n - 1) if mode == 0 else 2 * n
        index %= period
        if index >= n:
            index = period - index if mode == 0 else period - 1 - index
        return index

    @inline
    def _bilinear(image, y, x, mode, out, i, j):  # pragma: no cover - compiled
        """Write the bilinear sample of every channel of ``image`` at ``(y, x)`` to ``out[:, i, j]``, each of
        the four neighbours folded back into the image by ``mode`` (see ``_mirror``)."""
        height, width = image.shape[1], image.shape[2]
        top, left = np.floor(y), np.floor(x)
        fy, fx = y - top, x - left
        r0, c0 = np.int64(top), np.int64(left)
        r1, c1 = r0 + 1, c0 + 1
        if r0 < 0 or r1 >= height:  # only near the border: folding costs integer divisions
            r0, r1 = _mirror(r0, height, mode), _mirror(r1, height, mode)
        if c0 < 0 or c1 >= width:
            c0, c1 = _mirror(c0, width, mode), _mirror(c1, width, mode)
        for c in range(image.shape[0]):
            upper = (1 - fx) * image[c, r0, c0] + fx * image[c, r0, c1]
            lower = (1 - fx) * image[c, r1, c0] + fx * image[c, r1, c1]
            out[c, i, j] = (1 - fy) * upper + fy * lower

    @jit
    def warp_affine(image, inverse, out):  # pragma: no cover - compiled
        """``cv2.warpAffine`` (bilinear, ``BORDER_REFLECT_101``) of one ``(C, H, W)`` image: output ``(i, j)``
        samples the input at ``x = inverse[0] . (j, i, 1)``, ``y = inverse[1] . (j, i, 1)``."""
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                x = inverse[0, 0] * j + inverse[0, 1] * i + inverse[0, 2]
                y = inverse[1, 0] * j + inverse[1, 1] * i + inverse[1, 2]
                _bilinear(image, y, x, 0, out, i, j)

    @jit
    def displace(image, dy, dx, out):  # pragma: no cover - compiled
        """``scipy.ndimage.map_coordinates(order=1, mode='reflect')`` of each channel of one ``(C, H, W)`` image
        at ``(i + dy[i, j], j + dx[i, j])``, the coordinates summed in float64."""
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                _bilinear(image, i + np.float64(dy[i, j]), j + np.float64(dx[i, j]), 1, out, i, j)

    @jit
    def plasma(draws, wibbledecay, out):  # pragma: no cover - compiled
        """The original's diamond-square plasma map (``n x n``, ``n`` a power of two), computed in float64 and
        written, normalised to [0, 1], to ``out``; from its uniform draws in the original's order (per
        step: squares, then the diamonds on the corner rows, then on the centre rows; see
        ``weather.plasma_fractal``). Neighbours wrap around, as ``np.roll``."""
        n = out.shape[0]
        grid = np.zeros((n, n))
        step, wibble, used = n, 100.0, 0
        while step >= 2:
            half, m = step // 2, n // step
            wrap = m - 1  # m is a power of two: & wraps indices, also -1
            for a in range(m):  # squares: the mean of the four corners
                for b in range(m):
                    top, bottom, left, right = a * step, ((a + 1) & wrap) * step, b * step, ((b + 1) & wrap) * step
                    total = (grid[top, left] + grid[bottom, left]) + (grid[top, right] + grid[bottom, right])
                    grid[top + half, left + half] = total / 4 + wibble * (-wibble + 2 * wibble * draws[used])
                    used += 1
            for a in range(m):  # diamonds on the corner rows: centres above and below, corners left and right
                for b in range(m):
                    row, col, above = a * step, b * step, ((a - 1) & wrap) * step
                    total = (grid[row + half, col + half] + grid[above + half, col + half]) + (
                        grid[row, col] + grid[row, ((b + 1) & wrap) * step]
                    )
                    grid[row, col + half] = total / 4 + wibble * (-wibble + 2 * wibble * draws[used])
                    used += 1
            for a in range(m):  # diamonds on the centre rows: centres left and right, corners above and below
                for b in range(m):
                    row, col, before = a * step, b * step, ((b - 1) & wrap) * step
                    total = (grid[row + half, col + half] + grid[row + half, before + half]) + (
                        grid[row, col] + grid[((a + 1) & wrap) * step, col]
                    )
                    grid[row + half, col] = total / 4 + wibble * (-wibble + 2 * wibble * draws[used])
                    used += 1
            step //= 2
            wibble /= wibbledecay
        low = grid.min()
        high = grid.max() - low
        for i in range(n):
            for j in range(n):
                out[i, j] = (grid[i, j] - low) / high

    @jit
    def padded_levels(x, pad_y, pad_x, offset, out):  # pragma: no cover - compiled
        """One float ``(C, H, W)`` image in [0, 1] as 8-bit levels ``floor(clip(x) * 255 + offset)`` (``offset``
        0.5 rounds half up, 0 truncates), edge-replicated by ``pad_y`` rows and ``pad_x`` columns into
        ``out`` (``(C, H + 2 pad_y, W + 2 pad_x)``), all in float32."""
        channels, height, width = x.shape
        for c in range(channels):
            for i in range(out.shape[1]):
                src, dest = x[c, min(max(i - pad_y, 0), height - 1)], out[c, i]
                for k in range(width):
                    dest[pad_x + k] = np.floor(
                        min(max(src[k], np.float32(0)), np.float32(1)) * np.float32(255) + offset
                    )
                for k in range(pad_x):
                    dest[k] = dest[pad_x]
                    dest[pad_x + width + k] = dest[pad_x + width - 1]

    @jit
    def shifted_sum(padded, weights, rows, cols, out):  # pragma: no cover - compiled
        """ImageMagick's motion blur of one padded image of 8-bit levels, written back as 8-bit levels / 255:
        ``out[c, i, :] = min(floor(acc + 0.5), 255) / 255`` with ``acc = sum_t weights[t] * padded[c, i +
        rows[t], cols[t] : cols[t] + W]``, taps added in order from zero (zero-weight taps skipped). Each
        output row is finished while it is in cache, instead of one pass over the image per tap."""
        channels, height, width = out.shape
        acc = np.empty(width, dtype=out.dtype)
        for c in range(channels):
            for i in range(height):
                acc[:] = 0
                for t in range(weights.size):
                    weight = weights[t]
                    if weight == 0:
                        continue
                    src = padded[c, i + rows[t], cols[t] : cols[t] + width]
                    for k in range(width):
                        acc[k] += weight * src[k]
                dest = out[c, i]
                for k in range(width):
                    dest[k] = min(max(np.floor(acc[k] + np.float32(0.5)), np.float32(0)), np.float32(255)) / np.float32(
                        255
                    )

    @jit
    def zoom_sum(x, rows, row_weight, cols, col_weight, out):  # pragma: no cover - compiled
        """Add to ``out`` (``(C, H2, W2)``) the bilinear resamplings of one image ``x`` (``(C, H, W)``) given per
        zoom ``z``: output row ``i`` mixes source rows ``rows[z, i]`` and ``rows[z, i] + 1`` with weight
        ``row_weight[z, i]`` on the second, and likewise for columns. Rows are mixed first, over whole
        image rows (vectorised), then columns are gathered."""
        channels = x.shape[0]
        line = np.empty(x.shape[2], dtype=out.dtype)
        for z in range(rows.shape[0]):
            for c in range(channels):
                for i in range(out.shape[1]):
                    top, bottom, b = x[c, rows[z, i]], x[c, rows[z, i] + 1], row_weight[z, i]
                    a = 1 - b
                    for k in range(line.size):
                        line[k] = a * top[k] + b * bottom[k]
                    dest = out[c, i]
                    for j in range(dest.size):
                        left, wr = cols[z, j], col_weight[z, j]
                        dest[j] += (1 - wr) * line[left] + wr * line[left + 1]

    @jit
    def poisson_from_levels(x, uniform, cdf, guide, size, bins, c, out):  # pragma: no cover - compiled
        """Shot noise of one flat float32 image on the 8-bit grid: ``out = clip(n / c, 0, 1)`` where ``n`` is the
        smallest count with ``CDF(n) > u`` for the pixel's level (tables of ``corruptions._poisson_tables``,
        walked up from the guide's start). Returns False, leaving ``out`` partly written, as soon as a
        pixel is not within 1e-4 of an 8-bit level."""
        scale = np.float32(c)
        for i in range(x.size):
            level = x[i] * np.float32(255)
            rounded = np.rint(level)
            if abs(level - rounded) >= np.float32(1e-4):
                return False
            k = np.int64(rounded)
            u = uniform[i]
            position = guide[k * bins + np.int64(u * bins)]
            while cdf[position] <= u:
                position += 1
            out[i] = min(max(np.float32(position - k * size) / scale, np.float32(0)), np.float32(1))
        return True

    @jit
    def snap_to_8bit(x, out):  # pragma: no cover - compiled
        """float32 -> float64 elementwise (flat arrays): ``k / 255`` where ``x * 255`` is within 1e-4 of an integer
        level ``k``, else ``x`` (as ``geometric._snap_to_8bit`` computes it in torch)."""
        for i in range(x.size):
            level = x[i] * np.float32(255)
            rounded = np.rint(level)
            out[i] = rounded / 255.0 if abs(level - rounded) < np.float32(1e-4) else np.float64(x[i])

    @jit
    def symmetric_filter(planes, weights, rows, cols, out):  # pragma: no cover - compiled
        """A separable symmetric filter over each ``(H, W)`` plane of ``planes`` (``(N, H, W)``), rows first, in
        ``scipy.ndimage.correlate1d``'s order: ``centre * w[0]``, then ``+= (x[-j] + x[j]) * w[j]`` for
        ``j = r .. 1``. ``weights`` is ``(r + 1,)``, centre first; ``rows`` (``H + 2r``) and ``cols``
        (``W + 2r``) index the signal extended beyond each border. The arithmetic runs in the dtype of
        ``planes`` and ``weights`` (float64 gives scipy's results bit for bit)."""
        n, height, width = planes.shape
        r = weights.shape[0] - 1
        tmp = np.empty((height, width), dtype=out.dtype)
        line = np.empty(width + 2 * r, dtype=out.dtype)
        for p in range(n):
            # slices rather than offset indices below: indices known to be in range let the loops vectorise
            for i in range(height):  # along the rows: whole image rows at a time
                row, centre = tmp[i], planes[p, rows[i + r]]
                for k in range(width):
                    row[k] = centre[k] * weights[0]
                for j in range(r, 0, -1):
                    above, below, wj = planes[p, rows[i + r - j]], planes[p, rows[i + r + j]], weights[j]
                    for k in range(width):
                        row[k] += (above[k] + below[k]) * wj
            for i in range(height):  # along the columns, on the row extended beyond its ends
                for k in range(width + 2 * r):
                    line[k] = tmp[i, cols[k]]
                dest, centre = out[p, i], line[r : r + width]
                for k in range(width):
                    dest[k] = centre[k] * weights[0]
                for j in range(r, 0, -1):
                    left, right, wj = line[r - j : r - j + width], line[r + j : r + j + width], weights[j]
                    for k in range(width):
                        dest[k] += (left[k] + right[k]) * wj

    return {
        "glass_sources": glass_sources,
        "glass_shuffle": glass_shuffle,
        "to_hwc_uint8": to_hwc_uint8,
        "from_hwc_uint8": from_hwc_uint8,
        "pixelate": pixelate,
        "poisson_from_levels": poisson_from_levels,
        "padded_levels": padded_levels,
        "plasma": plasma,
        "warp_affine": warp_affine,
        "displace": displace,
        "shifted_sum": shifted_sum,
        "zoom_sum": zoom_sum,
        "snap_to_8bit": snap_to_8bit,
        "symmetric_filter": symmetric_filter,
    }
