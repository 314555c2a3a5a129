"""ImageNet-P perturbation sequences generated on the fly (Hendrycks & Dietterich, ICLR 2019).

ImageNet-P (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019) turns each validation image into a short video whose frames change the image a
little at a time: fresh noise in every frame, a blur turning or growing, a slow shift, rotation, tilt or zoom.
A robust classifier keeps its prediction across the frames (flip probability, top-5 distance; see
:mod:`robustart.evaluation.sequences`, whose ``score_chunks`` takes :func:`iter_frames`' chunks).
This module makes those frames from a batch of images, with the frame counts and schedules of
``make_imagenet_p.py``:

=============== ====== ============================================================================
perturbation    frames frame ``i``
=============== ====== ============================================================================
gaussian_noise  31     0 clean; ``clip(x + N(0, σ))``, σ = 0.03 / 0.05 / 0.08 (difficulty 1 / 2 / 3)
shot_noise      31     0 clean; ``clip(Poisson(x c) / c)``, c = 300 / 120 / 60
speckle_noise   31     0 clean; ``clip(x + x N(0, σ))``, σ = 0.05 / 0.10 / 0.15
motion_blur     31     ImageMagick motion blur, radius 10, σ 3, angle ``4 (i - 30)``°
zoom_blur       31     mean of the image zoomed by ``1 + 0.004 k`` about its centre, k = 0..i
snow            31     one snow layer per image, blurred at angle ``4 i - 150``°, whitening 0.85
brightness      31     HSV value ``+ 0.02 (i - 15)``, clipped
translate       41     shift by ``i - 20`` px along x (nearest, zero fill)
rotate          31     rotation by ``i - 15``° (bilinear, zero fill)
tilt            31     3-D rotation by ``i - 15``° about the x and y axes, perspective projection
scale           31     zoom by ``(2.5 i + 40) / 100`` about the centre (bilinear, zero fill)
gaussian_blur   31     Gaussian blur, σ = ``0.25 + 0.035 i``, truncated at 6 σ
spatter         31     water drops from one random layer, dripping down one step per frame
shear           31     shear by ``i - 15``° (bilinear, zero fill)
=============== ====== ============================================================================

The first ten are the benchmark (:data:`P_TEST`), the last four the validation perturbations
(:data:`P_VALIDATION`). Only the three noises have difficulties 2 and 3 (the released ``*_2`` and ``*_3``
folders); the rest have difficulty 1 only.

Parameter sets. The table above is ``params="imagenet"`` (the default). The same authors made smaller
sequences for CIFAR-10-P (``make_cifar_p.py``, 32 px) and Tiny-ImageNet-P (``make_tinyimagenet_p.py``,
64 px) with their own constants; ``params="cifar"`` and ``params="tiny"`` use those, and ``params="auto"``
picks the set by the frames' size (the crop if given, else the images') with the rule ImageNet-C's
``auto`` uses (:func:`robustart.noise.natural.params.parameter_set`: up to 48 px CIFAR, up to 128 px Tiny-ImageNet,
else ImageNet), so 28 px Fashion-MNIST and 32 px CIFAR get the CIFAR set. Where the sets differ:

=============== ==================================== ==============================================
perturbation    cifar (32 px)                        tiny (64 px)
=============== ==================================== ==============================================
gaussian_noise  σ = 0.02 / 0.04 / 0.06               σ = 0.025 / 0.05 / 0.075
shot_noise      c = 700 / 400 / 200                  c = 500 / 250 / 125
speckle_noise   σ = 0.05 / 0.07 / 0.10               as imagenet
motion_blur     21 frames, radius 6, σ 1.8,          radius 14, σ 3, angle ``5 (i - 30)``°
                angle ``9 (i - 20)``°
snow            zoom 2, blur radius 10, σ 2          normal scale 0.28, zoom 2, blur radius 10, σ 2.5
brightness      ``+ 0.015 (i - 15)``                 as imagenet
translate       16 frames, shift ``i - 7`` px        31 frames, shift ``i - 15`` px
tilt            ``0.75 (i - 15)``°                   as imagenet
scale           ``(2 i + 70) / 100``                 as imagenet
gaussian_blur   σ = ``0.3 + 0.015 i``, truncate 7    σ = ``0.35 + 0.014 i``, truncate 7
spatter         N(0.6, 0.265), blur σ 1.75, cut 0.7, N(0.6, 0.25), blur σ 1.75, cut 0.7,
                drip ``[0.2, 0.8]``                  drip ``[0.2, 0.8]``
=============== ==================================== ==============================================

zoom_blur, rotate and shear are the same in all three sets (the full constants are in
:data:`P_PARAMETER_SETS`). Neither small script scales its schedule to a larger image first: CIFAR-10-P
perturbs the 32 px image itself (its ``CenterCrop(32)`` is a no-op), and Tiny-ImageNet-P resizes the shorter
side to 64 px, applies the geometric perturbations to that image and centre-crops 64 x 64 (a margin only
along the longer side), which ``crop=64`` on such images reproduces. One exception: Tiny-ImageNet-P blurred
the *full-resolution* image (radius 14, σ 3) and resized the result to 64 px, so its blur was weaker at
64 px by the unknown resize factor; here, with only the given image at hand, the published radius and σ act
on the given image (as strong as Tiny-ImageNet-C's severity-5 motion blur, radius 12, σ 3).

Protocol and crop. The original resizes each image to 256 px (shorter side), applies the geometric
perturbations (translate, rotate, tilt, scale, shear, and zoom_blur, whose zoom is a torchvision affine
too) to that image and cuts the centre 224 x 224 out of every frame, while the other perturbations start
from the 224 px centre crop. ``crop=224`` on 256 px inputs reproduces that; with ``crop=None`` every
perturbation acts on the image as given.

Resampling follows the libraries the original called: the affine perturbations use torchvision 0.2's
``affine`` (the version whose ``resample=`` argument and single shear angle ``make_imagenet_p.py`` uses:
centre ``(w / 2 + 0.5, h / 2 + 0.5)`` in PIL's coordinates, positive angles clockwise, and its shear
matrix) with PIL's bilinear or nearest sampling (edge pixels extended by half a pixel, black beyond);
tilt follows ``cv2.warpPerspective`` (bilinear, black outside the image).

Randomness is per image and per frame: the noise of frame ``i`` comes from
``SampleRNG(seed, sample_ids, "imagenet_p", name, difficulty, "frame", i)`` and the fixed layers of snow
and spatter from ``SampleRNG(seed, sample_ids, "imagenet_p", name, difficulty)``, so a frame never depends
on the other images of the batch or on which frames were asked for. zoom_blur (a running mean) and spatter
(cumulative dripping) carry their state from frame to frame; :func:`iter_frames` keeps it between chunks.

As with the ImageNet-C functions, frames are returned as floats: the original's ``uint8`` PNG frames and
H.264 video encoding are left out, except for the 8-bit steps inside ImageMagick's motion blur (motion_blur
and snow), which :func:`robustart.noise.natural.motion.apply_motion_blur` reproduces.

>>> import torch
>>> from noise.natural.perturbations import perturbation_frames
>>> perturbation_frames(torch.rand(2, 3, 64, 64), "rotate").shape
torch.Size([2, 31, 3, 64, 64])
>>> perturbation_frames(torch.rand(2, 1, 28, 28), "translate", params="auto").shape  # the CIFAR set
torch.Size([2, 16, 1, 28, 28])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robustart.noise.natural import corruptions
from robustart.noise.natural.blur import gaussian_filter
from robustart.noise.natural.motion import apply_motion_blur, apply_snow
from robustart.noise.natural.params import PARAMETER_SETS, parameter_set
from robustart.noise.natural.weather import _WATER, _water_relief
from robustart.noise.seeding import SampleRNG
from robustart.noise.threads import cpu_map

__all__ = [
    "DIFFICULTIES",
    "GEOMETRIC_PERTURBATIONS",
    "NOISE_PERTURBATIONS",
    "P_PARAMETER_SETS",
    "P_PERTURBATIONS",
    "P_TEST",
    "P_VALIDATION",
    "iter_frames",
    "num_frames",
    "perturbation_frames",
    "resolve_params",
]

#: the ten benchmark perturbations of ImageNet-P
P_TEST = (
    "gaussian_noise",
    "shot_noise",
    "motion_blur",
    "zoom_blur",
    "snow",
    "brightness",
    "translate",
    "rotate",
    "tilt",
    "scale",
)
#: the four validation perturbations
P_VALIDATION = ("speckle_noise", "gaussian_blur", "spatter", "shear")
P_PERTURBATIONS = P_TEST + P_VALIDATION
#: the perturbations with difficulties 1..3; the others have difficulty 1 only
NOISE_PERTURBATIONS = ("gaussian_noise", "shot_noise", "speckle_noise")
DIFFICULTIES = (1, 2, 3)
#: perturbations the original applies to the full (256 px) image before its centre crop
GEOMETRIC_PERTURBATIONS = ("zoom_blur", "translate", "rotate", "tilt", "scale", "shear")

_NOISE_FUNCTIONS = {
    "gaussian_noise": corruptions.gaussian_noise,
    "shot_noise": corruptions.shot_noise,
    "speckle_noise": corruptions.speckle_noise,
}

# Per-frame schedules, one dict per parameter set and perturbation. Frame i of a sequence uses:
#   levels                     noise level of difficulty 1 / 2 / 3 (Gaussian and speckle σ, shot-noise photon count)
#   radius, sigma, step, zero  motion blur of angle (i - zero) * step degrees
#   step (zoom_blur)           the running mean of the image zoomed by 1 + step * k, k = 0..i
#   layer, start, step (snow)  apply_snow's (loc, scale, zoom, threshold, blur radius, blur sigma, mix); angle
#                              start + step * i degrees
#   step, zero (brightness)    HSV value + (i - zero) * step / 100
#   zero (translate)           shift by i - zero pixels along x
#   step, zero                 rotate, tilt, shear by step * (i - zero) degrees
#   start, step (scale)        zoom by (i * step + start) / 100
#   start, step, truncate      Gaussian blur of sigma start + step * i, cut at truncate sigmas
#   loc, scale, sigma, threshold, drip, intensity
#                              spatter: liquid layer N(loc, scale) blurred by sigma, zero below threshold, dripping by
#                              np.convolve(column, drip, "same") once per frame, drops at intensity
# The constants are the original scripts' (hendrycks/robustness, ImageNet-P/create_p/), written in the same
# arithmetic order, so each frame's parameter is the same float as there.

# make_imagenet_p.py: 224 px crops of 256 px resizes
_IMAGENET_P: dict[str, dict] = {
    "gaussian_noise": {"frames": 31, "levels": (0.03, 0.05, 0.08)},
    "shot_noise": {"frames": 31, "levels": (300, 120, 60)},
    "speckle_noise": {"frames": 31, "levels": (0.05, 0.10, 0.15)},
    "motion_blur": {"frames": 31, "radius": 10, "sigma": 3, "step": 4, "zero": 30},
    "zoom_blur": {"frames": 31, "step": 0.004},
    "snow": {"frames": 31, "layer": (0.05, 0.3, 3, 0.5, 14, 4, 0.85), "start": -150, "step": 4},
    "brightness": {"frames": 31, "step": 2, "zero": 15},
    "translate": {"frames": 41, "zero": 20},
    "rotate": {"frames": 31, "step": 1, "zero": 15},
    "tilt": {"frames": 31, "step": 1, "zero": 15},
    "scale": {"frames": 31, "start": 40, "step": 2.5},
    "gaussian_blur": {"frames": 31, "start": 0.25, "step": 0.035, "truncate": 6.0},
    "spatter": {
        "frames": 31, "loc": 0.65, "scale": 0.27, "sigma": 3.7, "threshold": 0.69,
        "drip": (0.05, 0.1, 0.15, 0.7), "intensity": 0.6,
    },
    "shear": {"frames": 31, "step": 1, "zero": 15},
}  # fmt: skip

# make_cifar_p.py: CIFAR-10 test images (32 px) as they are
_CIFAR_P: dict[str, dict] = {
    "gaussian_noise": {"frames": 31, "levels": (0.02, 0.04, 0.06)},
    "shot_noise": {"frames": 31, "levels": (700, 400, 200)},
    "speckle_noise": {"frames": 31, "levels": (0.05, 0.07, 0.1)},
    "motion_blur": {"frames": 21, "radius": 6, "sigma": 1.8, "step": 9, "zero": 20},
    "zoom_blur": {"frames": 31, "step": 0.004},
    "snow": {"frames": 31, "layer": (0.05, 0.3, 2, 0.5, 10, 2, 0.85), "start": -150, "step": 4},
    "brightness": {"frames": 31, "step": 1.5, "zero": 15},
    "translate": {"frames": 16, "zero": 7},
    "rotate": {"frames": 31, "step": 1, "zero": 15},
    "tilt": {"frames": 31, "step": 0.75, "zero": 15},
    "scale": {"frames": 31, "start": 70, "step": 2},
    "gaussian_blur": {"frames": 31, "start": 0.3, "step": 0.015, "truncate": 7.0},
    "spatter": {
        "frames": 31, "loc": 0.6, "scale": 0.265, "sigma": 1.75, "threshold": 0.7,
        "drip": (0.2, 0.8), "intensity": 0.6,
    },
    "shear": {"frames": 31, "step": 1, "zero": 15},
}  # fmt: skip

# make_tinyimagenet_p.py: 64 px (shorter side) resizes, centre-cropped to 64 x 64. Its motion blur acted on the
# full-resolution image before the resize; here the same radius and sigma act on the given image.
_TINY_P: dict[str, dict] = {
    "gaussian_noise": {"frames": 31, "levels": (0.025, 0.05, 0.075)},
    "shot_noise": {"frames": 31, "levels": (500, 250, 125)},
    "speckle_noise": {"frames": 31, "levels": (0.05, 0.1, 0.15)},
    "motion_blur": {"frames": 31, "radius": 14, "sigma": 3, "step": 5, "zero": 30},
    "zoom_blur": {"frames": 31, "step": 0.004},
    "snow": {"frames": 31, "layer": (0.05, 0.28, 2, 0.5, 10, 2.5, 0.85), "start": -150, "step": 4},
    "brightness": {"frames": 31, "step": 2, "zero": 15},
    "translate": {"frames": 31, "zero": 15},
    "rotate": {"frames": 31, "step": 1, "zero": 15},
    "tilt": {"frames": 31, "step": 1, "zero": 15},
    "scale": {"frames": 31, "start": 40, "step": 2.5},
    "gaussian_blur": {"frames": 31, "start": 0.35, "step": 0.014, "truncate": 7.0},
    "spatter": {
        "frames": 31, "loc": 0.6, "scale": 0.25, "sigma": 1.75, "threshold": 0.7,
        "drip": (0.2, 0.8), "intensity": 0.6,
    },
    "shear": {"frames": 31, "step": 1, "zero": 15},
}  # fmt: skip

#: the per-frame schedules of each parameter set (``imagenet``, ``cifar``, ``tiny``), per perturbation
P_PARAMETER_SETS: dict[str, dict[str, dict]] = {"imagenet": _IMAGENET_P, "cifar": _CIFAR_P, "tiny": _TINY_P}
_PARAMS_CHOICES = (*P_PARAMETER_SETS, "auto")


def _unknown_params(params: object) -> ValueError:
    return ValueError(f"unknown ImageNet-P parameter set {params!r}; valid: {', '.join(_PARAMS_CHOICES)}")


def resolve_params(params: str, height: int, width: int) -> str:
    """The parameter set ``params`` stands for on ``height x width`` frames: ``imagenet``, ``cifar`` or ``tiny``.

    ``auto`` follows ImageNet-C's rule (:func:`robustart.noise.natural.params.parameter_set`): CIFAR's set up to 48 px
    (the longer side), Tiny-ImageNet's up to 128 px, ImageNet's above.

    Raises:
        ValueError: for a name other than ``imagenet``, ``cifar``, ``tiny`` and ``auto``.
    """
    if not isinstance(params, str) or params not in _PARAMS_CHOICES:
        raise _unknown_params(params)
    if params != "auto":
        return params
    chosen = parameter_set("auto", height, width)  # ImageNet-C's table for that size: take its name
    return next(key for key, table in PARAMETER_SETS.items() if table is chosen)


def num_frames(name: str, params: str = "imagenet") -> int:
    """Frames in an ImageNet-P sequence of parameter set ``params``.

    ``imagenet`` and ``tiny``: 31 for every perturbation except translate (41 and 31); ``cifar``: 31 except
    motion_blur (21) and translate (16).

    Args:
        name: perturbation name (one of :data:`P_PERTURBATIONS`).
        params: ``imagenet``, ``cifar`` or ``tiny`` (``auto`` depends on the image size: pass
            :func:`resolve_params`' answer).

    Raises:
        ValueError: for an unknown name or parameter set, or ``auto``.
    """
    _check_name(name)
    if params == "auto":
        raise ValueError(
            "num_frames needs a concrete parameter set (imagenet, cifar, tiny); 'auto' depends on the image size: "
            "use resolve_params('auto', height, width)"
        )
    if not isinstance(params, str) or params not in P_PARAMETER_SETS:
        raise _unknown_params(params)
    return P_PARAMETER_SETS[params][name]["frames"]


def _check_name(name: str) -> None:
    if name not in P_PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; valid names: {', '.join(P_PERTURBATIONS)}")


def _check_difficulty(name: str, difficulty: int) -> None:
    valid = DIFFICULTIES if name in NOISE_PERTURBATIONS else (1,)
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty not in valid:
        if name in NOISE_PERTURBATIONS:
            raise ValueError(f"difficulty of {name} must be an integer in 1..3 (valid: 1, 2, 3), got {difficulty!r}")
        raise ValueError(
            f"difficulty of {name} must be 1 (valid: 1; only {', '.join(NOISE_PERTURBATIONS)} have 1..3), "
            f"got {difficulty!r}"
        )


def _check_images(images: torch.Tensor) -> None:
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or not images.is_floating_point()
        or images.shape[1] not in (1, 3)
    ):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        dtype = images.dtype if isinstance(images, torch.Tensor) else ""
        raise ValueError(f"images must be a float NCHW batch with 1 or 3 channels, got {shape} {dtype}")
    if images.numel():
        low, high = (v.item() for v in torch.aminmax(images))  # one pass, one device sync
        if not (low >= 0 and high <= 1):  # also catches NaN
            raise ValueError(f"images must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")


def _centre_window(h: int, w: int, crop: int | None) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of torchvision's ``CenterCrop(crop)`` (``int(round((h - crop) / 2))``)."""
    if crop is None:
        return 0, 0, h, w
    if isinstance(crop, bool) or not isinstance(crop, int) or not 1 <= crop <= min(h, w):
        raise ValueError(f"crop must be None or an integer in 1..{min(h, w)} (the image side), got {crop!r}")
    return round((h - crop) / 2), round((w - crop) / 2), crop, crop  # Python rounds half to even, as torchvision


# ----------------------------------------------------------------------------------------------
# Geometric warps
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Sequences
# ----------------------------------------------------------------------------------------------


def _drip(layer: torch.Tensor, kernel: Sequence[float]) -> torch.Tensor:
    """One step of spatter's dripping: ``np.convolve(column, kernel, mode="same")`` down every column of
    ``(..., H, W)``, zeros beyond the image. For a kernel of ``L`` taps that is
    ``out[r] = sum_t kernel[t] a[r + (L - 1) // 2 - t]``: with ImageNet's ``[0.05, 0.1, 0.15, 0.7]``,
    ``0.05 a[r + 1] + 0.1 a[r] + 0.15 a[r - 1] + 0.7 a[r - 2]`` (most of the liquid moves two rows down); with
    the small sets' ``[0.2, 0.8]``, ``0.2 a[r] + 0.8 a[r - 1]`` (one row down)."""
    taps = len(kernel)
    below = (taps - 1) // 2
    padded = F.pad(layer, (0, 0, taps - 1 - below, below))
    h = layer.shape[-2]
    out = kernel[0] * padded[..., taps - 1 : taps - 1 + h, :]
    for t in range(1, taps):  # summed left to right, as the expression written out
        out = out + kernel[t] * padded[..., taps - 1 - t : taps - 1 - t + h, :]
    return out


class _Sequence:
    """The frames of one batch's sequences, rendered in increasing order.

    zoom_blur and spatter depend on all earlier frames; their state (the running sum of zoomed images, the
    dripped liquid layer) is kept here, so asking for consecutive ranges costs each frame once.
    """

    def __init__(
        self,
        images: torch.Tensor,
        name: str,
        difficulty: int,
        seed: int,
        ids: Sequence[int],
        crop: int | None,
        params: str = "imagenet",
    ):
        self.name, self.difficulty, self.seed, self.ids = name, difficulty, seed, list(ids)
        self.p = P_PARAMETER_SETS[params][name]  # this perturbation's schedule
        self.full = images.to(torch.float32).contiguous()
        self.device = images.device
        self.window = _centre_window(images.shape[-2], images.shape[-1], crop)
        top, left, h, w = self.window
        self.crop = self.full[..., top : top + h, left : left + w].contiguous()
        self._sampler = _Sampler(self.full, self.window) if name in GEOMETRIC_PERTURBATIONS else None
        self._layer: torch.Tensor | None = None  # snow's normal draws; spatter's (un)dripped layer
        self._position = 0  # zoom_blur: frames in the running sum; spatter: drips applied to the layer
        self._sum: torch.Tensor | None = None

    def _rng(self, *frame: object) -> SampleRNG:
        condition = ("imagenet_p", self.name, self.difficulty, *frame)
        return SampleRNG(self.seed, self.ids, *condition, device=self.device)

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``start .. stop - 1``, ``(N, stop - start, C, H', W')``."""
        n, c = self.crop.shape[:2]
        out = torch.empty((n, stop - start, c, *self.crop.shape[-2:]), dtype=torch.float32, device=self.device)
        if n == 0:
            return out
        render = getattr(self, "_" + self.name)
        for j, i in enumerate(range(start, stop)):
            out[:, j] = render(i)
        return out

    # noise: a fresh draw per frame, frame 0 clean -------------------------------------------------

    def _noise(self, i: int) -> torch.Tensor:
        if i == 0:
            return self.crop
        level = self.p["levels"][self.difficulty - 1]
        return _NOISE_FUNCTIONS[self.name](self.crop, level, self._rng("frame", i))

    _gaussian_noise = _shot_noise = _speckle_noise = _noise

    # photometric, on the crop ---------------------------------------------------------------------

    def _motion_blur(self, i: int) -> torch.Tensor:
        p = self.p
        return apply_motion_blur(
            self.crop, p["radius"], p["sigma"], [float((i - p["zero"]) * p["step"])] * len(self.crop)
        )

    def _snow(self, i: int) -> torch.Tensor:
        if self._layer is None:  # one layer per image for the whole sequence
            self._layer = self._rng().randn(tuple(self.crop.shape[-2:]))
        angle = float(self.p["step"] * i + self.p["start"])
        return apply_snow(self.crop, self.p["layer"], self._layer, [angle] * len(self.crop))

    def _brightness(self, i: int) -> torch.Tensor:
        # corruptions.brightness scales each pixel by V' / V; for negative shifts V' = V + c goes below 0
        # where V < -c, and the final clip turns those pixels black, as the original's clip of V to [0, 1]
        return corruptions.brightness(self.crop, (i - self.p["zero"]) * self.p["step"] / 100)

    def _gaussian_blur(self, i: int) -> torch.Tensor:
        # skimage's gaussian(sigma, truncate=6.0): mode "nearest"; each channel separately
        p = self.p
        return gaussian_filter(self.crop, p["start"] + p["step"] * i, p["truncate"], "nearest").clamp_(0, 1)

    def _spatter(self, i: int) -> torch.Tensor:
        if self._layer is None or i < self._position:
            # float64 as the original's numpy layer: N(loc, scale), skimage gaussian (nearest, truncate 4)
            p = self.p
            normal = self._rng().randn(tuple(self.crop.shape[-2:])).to(self.device, torch.float64)
            layer = (normal * p["scale"] + p["loc"])[:, None]
            # one image at a time: on a GPU the filter is a matrix product whose rounding may depend on the
            # batch size, and a last-bit change can move a pixel across an 8-bit level of the relief
            layer = torch.cat([gaussian_filter(one[None], p["sigma"]) for one in layer])
            self._layer = torch.where(layer < p["threshold"], torch.zeros_like(layer), layer)
            self._position = 0
        while self._position < i:  # frame i shows the layer after i drips
            self._layer = _drip(self._layer, self.p["drip"])
            self._position += 1
        return self._water(self._layer)

    def _water(self, layer: torch.Tensor) -> torch.Tensor:
        """ImageNet-C's water spatter (:func:`robustart.noise.natural.weather.spatter_from_layer`, mode 0) from a ready
        liquid layer ``(N, 1, H, W)``: the ``uint8`` layer (truncated) times its OpenCV relief, normalised to
        a maximum of 1, times the intensity, adds the pale turquoise (175, 238, 238) / 255 to channels 0, 1, 2
        (the original's BGR-named arrays hold RGB data; a grey image gets channel 0's value)."""
        liquid8 = (layer * 255).clamp_(0, 255).floor_().to(torch.uint8)[:, 0].cpu().numpy()

        def mask(one: np.ndarray) -> np.ndarray:
            m = one.astype(np.float32) * _water_relief(one)
            peak = m.max()
            return m / peak if peak > 0 else m  # an empty layer leaves the image as it is

        masks = torch.from_numpy(np.stack(cpu_map(mask, liquid8)))[:, None].to(self.device)
        colour = torch.tensor(_WATER, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        return (self.crop + masks * self.p["intensity"] * colour[:, : self.crop.shape[1]]).clamp_(0, 1)

    # geometric, on the full image, sampled on the crop window -----------------------------------

    def _degrees(self, i: int) -> float:
        """rotate's, tilt's and shear's angle at frame ``i``: ``step (i - zero)`` (an int for a step of 1)."""
        return self.p["step"] * (i - self.p["zero"])

    def _zoom_blur(self, i: int) -> torch.Tensor:
        if self._sum is None or i < self._position:
            self._sum, self._position = self.crop.clone(), 1  # frame 0: the image itself
        h, w = self.full.shape[-2:]
        while self._position <= i:
            # torchvision affine, scale 1 + 0.004 k, bilinear; summed in float32 as the original's ToTensor
            zoom = 1 + self.p["step"] * self._position
            self._sum += self._sampler.pil_affine(_torchvision_affine_inverse(h, w, scale=zoom))
            self._position += 1
        return self._sum / (i + 1)

    def _translate(self, i: int) -> torch.Tensor:
        # torchvision's affine without resample= uses PIL's NEAREST
        h, w = self.full.shape[-2:]
        shift = (i - self.p["zero"], 0)
        return self._sampler.pil_affine(_torchvision_affine_inverse(h, w, translate=shift), nearest=True)

    def _rotate(self, i: int) -> torch.Tensor:
        h, w = self.full.shape[-2:]
        return self._sampler.pil_affine(_torchvision_affine_inverse(h, w, angle=self._degrees(i)))

    def _scale(self, i: int) -> torch.Tensor:
        h, w = self.full.shape[-2:]
        zoom = (i * self.p["step"] + self.p["start"]) / 100.0
        return self._sampler.pil_affine(_torchvision_affine_inverse(h, w, scale=zoom))

    def _shear(self, i: int) -> torch.Tensor:
        h, w = self.full.shape[-2:]
        return self._sampler.pil_affine(_torchvision_affine_inverse(h, w, shear=self._degrees(i)))

    def _tilt(self, i: int) -> torch.Tensor:
        h, w = self.full.shape[-2:]
        return self._sampler.cv2_perspective(_tilt_matrix(h, w, self._degrees(i)))


def _prepare(
    images: torch.Tensor,
    name: str,
    difficulty: int,
    seed: int,
    sample_ids: Sequence[int] | torch.Tensor | None,
    start: int,
    stop: int | None,
    crop: int | None,
    params: str = "imagenet",
) -> tuple[_Sequence, int, int]:
    """Check every argument and set up the sequences; returns ``(sequence, start, stop)``."""
    _check_name(name)
    _check_difficulty(name, difficulty)
    if not isinstance(params, str) or params not in _PARAMS_CHOICES:
        raise _unknown_params(params)
    _check_images(images)
    _, _, frame_h, frame_w = _centre_window(images.shape[-2], images.shape[-1], crop)  # checks crop
    params = resolve_params(params, frame_h, frame_w)  # "auto": by the frames' size
    n = num_frames(name, params)
    stop = n if stop is None else stop
    for value in (start, stop):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"start and stop must be integers, got start={start!r}, stop={stop!r}")
    if not 0 <= start <= stop <= n:
        raise ValueError(
            f"{name} has {n} frames: need 0 <= start <= stop <= {n}, got start={start}, stop={stop} "
            f"(parameter set {params})"
        )
    ids = range(len(images)) if sample_ids is None else [int(i) for i in sample_ids]
    if len(ids) != len(images):
        raise ValueError(f"got {len(ids)} sample_ids for {len(images)} images")
    return _Sequence(images, name, difficulty, seed, ids, crop, params), start, stop


def perturbation_frames(
    images: torch.Tensor,
    name: str,
    *,
    difficulty: int = 1,
    seed: int = 0,
    sample_ids: Sequence[int] | torch.Tensor | None = None,
    start: int = 0,
    stop: int | None = None,
    crop: int | None = None,
    params: str = "imagenet",
) -> torch.Tensor:
    """Frames ``start .. stop - 1`` of each image's ImageNet-P sequence (Hendrycks & Dietterich, ICLR 2019).

    Args:
        images: float NCHW batch in [0, 1] with 1 or 3 channels, on the CPU or a GPU (computed in float32).
        name: perturbation (one of :data:`P_PERTURBATIONS`).
        difficulty: 1..3 for the noises (:data:`NOISE_PERTURBATIONS`), 1 for the others.
        seed: base seed; see the module notes for how frames draw their randomness.
        sample_ids: one id per image (default ``0 .. N - 1``); an id always gets the same sequence.
        start: first frame.
        stop: one past the last frame (default :func:`num_frames` of the parameter set).
        crop: side of a centre crop taken from every frame. The geometric perturbations
            (:data:`GEOMETRIC_PERTURBATIONS`) act on the full images and the crop is cut from their result;
            the others act on the crop. ``crop=224`` on 256 px images is the original's protocol.
        params: the schedules (:data:`P_PARAMETER_SETS`): ``imagenet`` (ImageNet-P, 224 px), ``cifar``
            (CIFAR-10-P, 32 px), ``tiny`` (Tiny-ImageNet-P, 64 px), or ``auto`` to choose by the frames' size
            (:func:`resolve_params`).

    Returns:
        float32 ``(N, stop - start, C, H', W')`` on the images' device, values in [0, 1]; ``H' = W' = crop``
        if given, else the images' size.

    Raises:
        ValueError: for an unknown name or parameter set, a difficulty the perturbation lacks, images that
            are not a float NCHW batch in [0, 1] with 1 or 3 channels, a frame range outside
            ``0 .. num_frames(name, params)``, a crop larger than the images, or a number of sample ids other
            than the number of images.
    """
    sequence, start, stop = _prepare(images, name, difficulty, seed, sample_ids, start, stop, crop, params)
    return sequence.frames(start, stop)


def iter_frames(
    images: torch.Tensor, name: str, *, chunk: int = 8, params: str = "imagenet", **kwargs
) -> Iterator[tuple[int, torch.Tensor]]:
    """Walk through the sequences in chunks of frames, for a model that consumes them with bounded memory.

    Yields ``(start, frames)`` with ``frames`` as :func:`perturbation_frames` returns frames
    ``start .. start + chunk - 1`` (fewer at the end), covering frames ``kwargs.get("start", 0)`` to
    ``kwargs.get("stop", num_frames(name, params))``. The frames equal those of a single call; zoom_blur's running
    mean and spatter's dripping carry over from one chunk to the next instead of starting again.

    Args:
        images: as for :func:`perturbation_frames`.
        name: perturbation name.
        chunk: frames per chunk, at least 1.
        params: parameter set, as for :func:`perturbation_frames`.
        **kwargs: ``difficulty``, ``seed``, ``sample_ids``, ``start``, ``stop``, ``crop`` of
            :func:`perturbation_frames`.

    Raises:
        ValueError: as :func:`perturbation_frames`, or for a chunk below 1; raised at the call, before
            iteration starts.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    unknown = set(kwargs) - {"difficulty", "seed", "sample_ids", "start", "stop", "crop"}
    if unknown:
        raise TypeError(f"iter_frames() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    sequence, start, stop = _prepare(
        images,
        name,
        kwargs.get("difficulty", 1),
        kwargs.get("seed", 0),
        kwargs.get("sample_ids"),
        kwargs.get("start", 0),
        kwargs.get("stop"),
        kwargs.get("crop"),
        params,
    )

    def chunks() -> Iterator[tuple[int, torch.Tensor]]:
        for first in range(start, stop, chunk):
            yield first, sequence.frames(first, min(first + chunk, stop))

    return chunks()
