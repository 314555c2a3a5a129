"""The ImageNet-P perturbations by name and their per-frame schedules, for each parameter set.

The names (:data:`P_TEST`, :data:`P_VALIDATION`, ...) and the schedules of ``make_imagenet_p.py``,
``make_cifar_p.py`` and ``make_tinyimagenet_p.py`` (:data:`P_PARAMETER_SETS`), with the frame counts and the
choice of a set by image size. :mod:`robustart.noise.natural.perturbations` documents them and makes the frames.
"""

from __future__ import annotations

from robustart.noise.natural.params import PARAMETER_SETS, parameter_set

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
