"""Resizers of three libraries, and the evaluation preprocessing with a decoder and a resizer swapped in.

The preprocessing is the one of :func:`torchvision.transforms.Resize` (shorter side to ``size / crop_pct``,
the longer side scaled and truncated) then ``CenterCrop(size)`` then ``ToTensor``: with the ``pil`` decoder
and the model's own PIL filter it gives the model's reference pixels exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from robustart.noise.system import codecs

#: resizer name -> (library, method); the PIL filters, OpenCV's interpolation flags, and
#: ``torch.nn.functional.interpolate`` (on floats in [0, 1], clamped back) with and without antialiasing
RESIZER_METHODS: dict[str, tuple[str, str]] = {
    "pil_nearest": ("pil", "NEAREST"),
    "pil_bilinear": ("pil", "BILINEAR"),
    "pil_bicubic": ("pil", "BICUBIC"),
    "pil_box": ("pil", "BOX"),
    "pil_hamming": ("pil", "HAMMING"),
    "pil_lanczos": ("pil", "LANCZOS"),
    "opencv_nearest": ("opencv", "INTER_NEAREST"),
    "opencv_linear": ("opencv", "INTER_LINEAR"),
    "opencv_area": ("opencv", "INTER_AREA"),
    "opencv_cubic": ("opencv", "INTER_CUBIC"),
    "opencv_lanczos4": ("opencv", "INTER_LANCZOS4"),
    "torch_bilinear": ("torch", "bilinear"),
    "torch_bicubic": ("torch", "bicubic"),
    "torch_bilinear_aa": ("torch", "bilinear+antialias"),
    "torch_bicubic_aa": ("torch", "bicubic+antialias"),
}
RESIZERS: tuple[str, ...] = tuple(RESIZER_METHODS)


def check_resizer(name: str) -> None:
    if name not in RESIZER_METHODS:
        raise ValueError(f"unknown resizer {name!r}; valid resizers: {', '.join(RESIZERS)}")


def reference_resizer(interpolation: str) -> str:
    """The resizer of a model's own preprocessing: torchvision's ``Resize`` on a PIL image uses PIL's filter."""
    name = f"pil_{interpolation}"
    if name not in RESIZER_METHODS:
        raise ValueError(f"no PIL resizer for the interpolation {interpolation!r}")
    return name


def resize(image: np.ndarray, resizer: str, height: int, width: int) -> torch.Tensor:
    """``image`` (``uint8 (H, W, C)``) resized to ``height x width``: ``float32 (C, height, width)`` in [0, 1].

    PIL and OpenCV resize the 8-bit pixels and round to 8 bits, as they do in a data pipeline; torch
    resizes the float image (``ToTensor`` then ``interpolate``), so its bicubic overshoot is clamped.
    """
    if RESIZER_METHODS[resizer][0] == "torch":
        return resize_floats(torch.tensor(image).permute(2, 0, 1)[None].float().div_(255), resizer, height, width)[0]
    return _to_floats(resize_pixels(image, resizer, height, width))


def resize_pixels(image: np.ndarray, resizer: str, height: int, width: int) -> np.ndarray:
    """A PIL or OpenCV resizer on ``uint8 (H, W, C)`` pixels: ``uint8 (height, width, C)``."""
    library, method = RESIZER_METHODS[resizer]
    channels = image.shape[-1]
    if library == "pil":
        from PIL import Image

        pil = Image.fromarray(image[..., 0] if channels == 1 else image)
        out = np.asarray(pil.resize((width, height), getattr(Image.Resampling, method)))
    elif library == "opencv":
        import cv2

        out = cv2.resize(image, (width, height), interpolation=getattr(cv2, method))
    else:
        raise ValueError(f"{resizer} resizes float tensors: use resize_floats")
    return out.reshape(height, width, channels)


def resize_floats(images: torch.Tensor, resizer: str, height: int, width: int) -> torch.Tensor:
    """A torch resizer on a float batch ``(N, C, H, W)`` in [0, 1]; the result is clamped to [0, 1]."""
    mode, _, antialias = RESIZER_METHODS[resizer][1].partition("+")
    out = torch.nn.functional.interpolate(images, size=(height, width), mode=mode, align_corners=False,
                                          antialias=bool(antialias))  # fmt: skip
    return out.clamp_(0, 1)


def _to_floats(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1).float().div_(255)


def resample_round_trip(images: list[np.ndarray], resizer: str, larger: int) -> torch.Tensor:
    """In-memory images ``uint8 (S, S, C)`` resized up to ``larger`` px (stored as 8 bits, as a larger copy of
    an image would be) and back down to ``S`` px by ``resizer``: the resampling differences of the libraries
    without changing the images' geometry. Returns ``float32 (N, C, S, S)`` in [0, 1]."""
    size = images[0].shape[0]
    if RESIZER_METHODS[resizer][0] != "torch":
        down = [resize_pixels(resize_pixels(x, resizer, larger, larger), resizer, size, size) for x in images]
        return torch.from_numpy(np.stack(down)).permute(0, 3, 1, 2).float().div_(255)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
    up = resize_floats(batch, resizer, larger, larger).mul_(255).round_().div_(255)
    return resize_floats(up, resizer, size, size)


def resized_size(height: int, width: int, target: int, square: bool = False) -> tuple[int, int]:
    """The size before the centre crop: the shorter side to ``target`` and the longer one scaled and truncated
    (torchvision's ``Resize(target)``), or ``target x target`` with ``square`` (RobustART's ImageNet-S)."""
    if square:
        return target, target
    if width <= height:
        return int(target * height / width), target
    return target, int(target * width / height)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size x size`` of ``image (C, H, W)``, placed as torchvision's ``CenterCrop`` places it."""
    height, width = image.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"a {height} x {width} image is smaller than the {size} px crop")
    top, left = round((height - size) / 2.0), round((width - size) / 2.0)
    return image[:, top : top + size, left : left + size]


@dataclass(frozen=True)
class Pipeline:
    """Decode, resize, centre crop: the model's preprocessing with ``decoder`` and ``resizer`` swapped in.

    Calling it on compressed bytes gives the model's input, ``float32 (C, size, size)`` in [0, 1]. It is a
    plain frozen dataclass, so data-loader workers receive it pickled.

    Attributes:
        decoder: one of :data:`robustart.noise.system.codecs.DECODERS`.
        resizer: one of :data:`RESIZERS`.
        size: the model's input size (the crop).
        crop_pct: the crop's share of the resized image (the shorter side is resized to ``size / crop_pct``).
        square: resize both sides to ``size / crop_pct`` (distorting the aspect ratio), as RobustART does.
        grey: decode to one channel instead of RGB.
    """

    decoder: str
    resizer: str
    size: int
    crop_pct: float
    square: bool = False
    grey: bool = False

    def __post_init__(self) -> None:
        codecs.check_available(self.decoder)
        check_resizer(self.resizer)
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    @property
    def target(self) -> int:
        return math.floor(self.size / self.crop_pct)

    def __call__(self, data: bytes) -> torch.Tensor:
        return self.preprocess(codecs.decode(self.decoder, data, grey=self.grey))

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Resize and crop decoded pixels ``uint8 (H, W, C)``."""
        height, width = resized_size(image.shape[0], image.shape[1], self.target, self.square)
        return center_crop(resize(image, self.resizer, height, width), self.size)
