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

Layout: the names and schedules are in :mod:`robustart.noise.natural.perturbation_params`, the warps in
:mod:`robustart.noise.natural.perturbation_warps` and the frame-by-frame rendering in
:mod:`robustart.noise.natural.perturbation_render`; this module checks the arguments, makes the frames and
re-exports the names.

>>> import torch
>>> from noise.natural.perturbations import perturbation_frames
>>> perturbation_frames(torch.rand(2, 3, 64, 64), "rotate").shape
torch.Size([2, 31, 3, 64, 64])
>>> perturbation_frames(torch.rand(2, 1, 28, 28), "translate", params="auto").shape  # the CIFAR set
torch.Size([2, 16, 1, 28, 28])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from robustart.noise.natural.perturbation_params import (
    _PARAMS_CHOICES,
    DIFFICULTIES,
    GEOMETRIC_PERTURBATIONS,
    NOISE_PERTURBATIONS,
    P_PARAMETER_SETS,
    P_PERTURBATIONS,
    P_TEST,
    P_VALIDATION,
    _check_name,
    _unknown_params,
    num_frames,
    resolve_params,
)

# the `name as name` imports re-export internals that the tests check
from robustart.noise.natural.perturbation_render import _drip as _drip
from robustart.noise.natural.perturbation_render import _Sequence
from robustart.noise.natural.perturbation_warps import _centre_window
from robustart.noise.natural.perturbation_warps import _Sampler as _Sampler
from robustart.noise.natural.perturbation_warps import _tilt_matrix as _tilt_matrix
from robustart.noise.natural.perturbation_warps import _torchvision_affine_inverse as _torchvision_affine_inverse

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
