"""The frames of ImageNet-P sequences, perturbation by perturbation, in increasing order.

:class:`_Sequence` renders the frames of one batch with the schedules of
:mod:`robustart.noise.natural.perturbation_params`, the noises, blurs and weather of ImageNet-C and the warps of
:mod:`robustart.noise.natural.perturbation_warps`, keeping the running state of zoom_blur and spatter between
calls. :mod:`robustart.noise.natural.perturbations` checks the arguments and is the public entry point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robustart.noise.natural import corruptions
from robustart.noise.natural.blur import gaussian_filter
from robustart.noise.natural.motion import apply_motion_blur, apply_snow
from robustart.noise.natural.perturbation_params import GEOMETRIC_PERTURBATIONS, P_PARAMETER_SETS
from robustart.noise.natural.perturbation_warps import (
    _centre_window,
    _Sampler,
    _tilt_matrix,
    _torchvision_affine_inverse,
)
from robustart.noise.natural.weather import _WATER, _water_relief
from robustart.noise.seeding import SampleRNG
from robustart.noise.threads import cpu_map

_NOISE_FUNCTIONS = {
    "gaussian_noise": corruptions.gaussian_noise,
    "shot_noise": corruptions.shot_noise,
    "speckle_noise": corruptions.speckle_noise,
}


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
