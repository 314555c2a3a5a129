"""Geometric warps of the ImageNet-P frames, as the libraries the original called compute them.

torchvision 0.2's ``affine`` matrix (translate, rotate, scale, shear, zoom_blur), the tilt's perspective
homography, and a sampler that resamples a batch for the pixels of a centre-crop window as PIL's affine
transform (bilinear or nearest) and ``cv2.warpPerspective`` do. Used by
:mod:`robustart.noise.natural.perturbation_render`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _centre_window(h: int, w: int, crop: int | None) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of torchvision's ``CenterCrop(crop)`` (``int(round((h - crop) / 2))``)."""
    if crop is None:
        return 0, 0, h, w
    if isinstance(crop, bool) or not isinstance(crop, int) or not 1 <= crop <= min(h, w):
        raise ValueError(f"crop must be None or an integer in 1..{min(h, w)} (the image side), got {crop!r}")
    return round((h - crop) / 2), round((w - crop) / 2), crop, crop  # Python rounds half to even, as torchvision


def _torchvision_affine_inverse(
    h: int, w: int, angle: float = 0.0, translate: tuple[float, float] = (0.0, 0.0), scale: float = 1.0, shear=0.0
) -> list[float]:
    """The 2 x 3 matrix PIL receives from torchvision 0.2's ``affine``: output -> input, in PIL's coordinates.

    torchvision 0.2 builds the forward map ``T C RSS C⁻¹`` about the centre ``c = (w / 2 + 0.5, h / 2 + 0.5)``,
    with ``RSS = scale [[cos a, -sin(a + s)], [sin a, cos(a + s)]]`` (so positive angles turn the picture
    clockwise, and the shear ``s`` moves row ``y`` by ``-sin(s) y`` while shortening columns by ``cos s``),
    and passes PIL its inverse ``c + RSS⁻¹ (p - c - t)``. Newer torchvision releases changed both the centre
    and the shear; the released ImageNet-P frames were made with this one.
    """
    cx, cy = w * 0.5 + 0.5, h * 0.5 + 0.5
    a, s = math.radians(angle), math.radians(shear)
    d = math.cos(a + s) * math.cos(a) + math.sin(a + s) * math.sin(a)
    m = [math.cos(a + s), math.sin(a + s), 0.0, -math.sin(a), math.cos(a), 0.0]
    m = [(1.0 / scale) / d * v for v in m]
    m[2] += m[0] * (-cx - translate[0]) + m[1] * (-cy - translate[1])
    m[5] += m[3] * (-cx - translate[0]) + m[4] * (-cy - translate[1])
    m[2] += cx
    m[5] += cy
    return m


def _tilt_matrix(h: int, w: int, degrees: float) -> torch.Tensor:
    """The forward homography of the original's tilt, float64 ``3 x 3`` (input pixel -> output pixel).

    Pixels ``(x, y)`` become the 3-D points ``(x - w / 2, y - h / 2, 1)`` (at depth 1, as in the original),
    are rotated about the y axis and then the x axis by the same angle, moved to depth ``+ f`` and projected
    with focal length ``f = sqrt(w² + h²)`` onto an image centred at ``(w / 2, h / 2)``. Because of the
    depth-1 start, the untilted frame (``degrees = 0``) is the image shrunk by ``f / (f + 1)`` about that
    centre (0.3% at 256 px), as in the original.
    """
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    f = math.sqrt(w**2 + h**2)
    dt = torch.float64
    to_3d = torch.tensor([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]], dtype=dt)
    rot_x = torch.tensor([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]], dtype=dt)
    rot_y = torch.tensor([[c, 0, -s, 0], [0, 1, 0, 0], [s, 0, c, 0], [0, 0, 0, 1]], dtype=dt)
    away = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]], dtype=dt)
    project = torch.tensor([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]], dtype=dt)
    return project @ away @ rot_x @ rot_y @ to_3d


class _Sampler:
    """Resamples a batch at coordinates shared by all its images, for the output pixels of a crop window.

    Every image of a batch has the same size and the same warp, so each neighbour is one ``index_select``
    of the batch laid out pixel-major, ``(H * W, N * C)``, which reads all the values of a pixel at once.
    """

    def __init__(self, images: torch.Tensor, window: tuple[int, int, int, int]):
        self.images = images
        self.n, self.c, self.h, self.w = images.shape
        self.pixels = images.permute(2, 3, 0, 1).reshape(self.h * self.w, self.n * self.c).contiguous()
        top, left, self.out_h, self.out_w = window
        device = images.device
        # output pixel indices of the window, in the full image
        self.xs = torch.arange(left, left + self.out_w, dtype=torch.float64, device=device)[None, :]
        self.ys = torch.arange(top, top + self.out_h, dtype=torch.float64, device=device)[:, None]

    def _take(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Pixels ``[rows, cols]`` (in range) of every image, ``(out_h * out_w, N * C)``."""
        return self.pixels.index_select(0, (rows * self.w + cols).reshape(-1))

    def _finish(self, values: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
        """``(out_h * out_w, N * C)`` values, black where not ``inside``, as an ``(N, C, out_h, out_w)`` view."""
        if inside is not None:
            values.mul_(inside.reshape(-1, 1).to(values.dtype))
        return values.reshape(self.out_h, self.out_w, self.n, self.c).permute(2, 3, 0, 1)

    def pil_affine(self, m: Sequence[float], nearest: bool = False) -> torch.Tensor:
        """``Image.transform(AFFINE, m)`` of PIL, with ``BILINEAR`` or ``NEAREST`` sampling and black fill.

        PIL maps output pixel ``(x, y)`` through ``m`` at its centre ``(x + 0.5, y + 0.5)``; the result ``q`` is
        sampled if ``0 <= q < size`` along both axes, else black. Nearest takes pixel ``floor(q)``; bilinear
        interpolates at ``q - 0.5`` between the two nearest pixels of each axis, clamped to the image (so the
        edge pixels reach half a pixel beyond the image). Interpolation runs in the images' float dtype on
        float64 weights, where PIL rounds to ``uint8``.
        """
        px, py = self.xs + 0.5, self.ys + 0.5
        qx = m[0] * px + m[1] * py + m[2]
        qy = m[3] * px + m[4] * py + m[5]
        inside = (qx >= 0) & (qx < self.w) & (qy >= 0) & (qy < self.h)
        if nearest:
            rows = qy.floor().clamp_(0, self.h - 1).long()
            cols = qx.floor().clamp_(0, self.w - 1).long()
            return self._finish(self._take(rows, cols), inside)
        u, v = qx - 0.5, qy - 0.5
        x0, y0 = u.floor(), v.floor()
        dx, dy = (u - x0).to(self.images.dtype), (v - y0).to(self.images.dtype)
        cols0, cols1 = x0.clamp(0, self.w - 1).long(), (x0 + 1).clamp(0, self.w - 1).long()
        rows0, rows1 = y0.clamp(0, self.h - 1).long(), (y0 + 1).clamp(0, self.h - 1).long()
        out = self._lerp(
            self._take(rows0, cols0),
            self._take(rows0, cols1),
            self._take(rows1, cols0),
            self._take(rows1, cols1),
            dx,
            dy,
        )
        return self._finish(out, inside)

    def cv2_perspective(self, forward: torch.Tensor) -> torch.Tensor:
        """``cv2.warpPerspective(image, forward, (w, h))`` with ``INTER_LINEAR`` and a black constant border.

        OpenCV inverts ``forward``, maps each output pixel (integer coordinates at pixel centres) through the
        inverse and interpolates bilinearly, each of the four neighbours outside the image counting as black.
        The coordinates are used as they are, as current OpenCV does (the original's OpenCV 3.4 rounded them
        to 1/32 px first, a shift of at most 1/64 px); the interpolation runs in float, where OpenCV rounds to
        ``uint8``.
        """
        inverse = torch.linalg.inv(forward).to(self.xs.device)
        den = inverse[2, 0] * self.xs + inverse[2, 1] * self.ys + inverse[2, 2]
        u = (inverse[0, 0] * self.xs + inverse[0, 1] * self.ys + inverse[0, 2]) / den
        v = (inverse[1, 0] * self.xs + inverse[1, 1] * self.ys + inverse[1, 2]) / den
        x0, y0 = u.floor(), v.floor()
        dx, dy = (u - x0).to(self.images.dtype), (v - y0).to(self.images.dtype)
        corners = []
        for row in (y0, y0 + 1):
            for col in (x0, x0 + 1):
                inside = (row >= 0) & (row < self.h) & (col >= 0) & (col < self.w)
                values = self._take(row.clamp(0, self.h - 1).long(), col.clamp(0, self.w - 1).long())
                corners.append(values.mul_(inside.reshape(-1, 1).to(values.dtype)))
        return self._finish(self._lerp(*corners, dx, dy))

    @staticmethod
    def _lerp(a, b, c, d, dx, dy):
        """Bilinear blend of the corners ``a b / c d`` (``(P, N * C)``, overwritten) as PIL writes it:
        ``top = a + (b - a) dx``, ``bottom = c + (d - c) dx``, ``top + (bottom - top) dy``."""
        dx, dy = dx.reshape(-1, 1), dy.reshape(-1, 1)
        top = b.sub_(a).mul_(dx).add_(a)
        bottom = d.sub_(c).mul_(dx).add_(c)
        return bottom.sub_(top).mul_(dy).add_(top)
