"""System noise (ImageNet-S): the same image decoded and resized by different libraries.

A condition is a ``decoder/resizer`` pair (``opencv/pil_bilinear``: OpenCV decodes, PIL's bilinear filter
resizes). On data stored as compressed files (ImageNet), each condition re-decodes the raw bytes with its
decoder and runs the model's own preprocessing with its resizer (:class:`~robustart.noise.system.resize.Pipeline`;
the run builds one dataset per condition, decoded in the data-loader workers). On data held as tensors
(Fashion-MNIST), :meth:`SystemNoise.apply` round-trips each image through the decoder's library's JPEG
(or PNG) codec with that library's defaults, then has the resizer scale it up to ``size / crop_pct`` and
back down to its size: the geometry stays the clean image's, so the clean predictions are a fair
reference, and what changes is only what the libraries do. The rows over the combinations (``sys_mean``,
``flip_rate``...) are the evaluation's, from the predictions alone (see :mod:`robustart.evaluation.system`).

>>> from noise import create_noise
>>> [c.name for c in create_noise("imagenet_s", decoders=["pil"], resizers=["pil_nearest", "opencv_area"]).conditions()]
['pil/pil_nearest', 'pil/opencv_area']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from robustart.noise.base import Condition, Noise
from robustart.noise.options import ImagenetSOptions
from robustart.noise.registry import register_noise
from robustart.noise.system import codecs
from robustart.noise.system.codecs import CODECS, DECODERS
from robustart.noise.system.resize import RESIZERS, Pipeline, check_resizer, reference_resizer, resample_round_trip

__all__ = ["CODECS", "DECODERS", "RESIZERS", "Pipeline", "SystemNoise", "reference_resizer"]

#: in-memory images are resampled to ``size / IN_MEMORY_CROP_PCT`` and back (RobustART's 256 / 224: 28 -> 32 px)
IN_MEMORY_CROP_PCT = 0.875


class SystemNoise(Noise):
    """Every ``decoder x resizer`` combination; see the module's description.

    Args:
        decoders: decoder names (:data:`DECODERS`); ``None``: all.
        resizers: resizer names (:data:`RESIZERS`); ``None``: all.
        square: resize both sides to ``size / crop_pct`` (RobustART's ImageNet-S) instead of the shorter side.
        crop_pct: the crop's share of the resized image; ``None``: the model's own. In-memory images are
            resampled to ``size / crop_pct`` and back (``None``: ``0.875``).
        codec: ``jpeg`` or ``png``: the round trip of in-memory images.
        name: the registry name (the results' ``noise`` column).
    """

    def __init__(
        self,
        decoders: Sequence[str] | None = None,
        resizers: Sequence[str] | None = None,
        square: bool = False,
        crop_pct: float | None = None,
        codec: str = "jpeg",
        name: str = "imagenet_s",
    ) -> None:
        self.decoders = tuple(DECODERS if decoders is None else decoders)
        self.resizers = tuple(RESIZERS if resizers is None else resizers)
        if not self.decoders or not self.resizers:
            raise ValueError("imagenet_s needs at least one decoder and one resizer")
        for label, names in (("decoder", self.decoders), ("resizer", self.resizers)):
            if len(set(names)) != len(names):
                raise ValueError(f"imagenet_s lists a {label} twice: {list(names)}")
        for decoder in self.decoders:
            codecs.check_available(decoder)
        for resizer in self.resizers:
            check_resizer(resizer)
        if crop_pct is not None and not 0 < crop_pct <= 1:
            raise ValueError(f"imagenet_s crop_pct must be in (0, 1] or null, got {crop_pct}")
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; valid codecs: {', '.join(CODECS)}")
        self.square, self.crop_pct, self.codec, self.name = square, crop_pct, codec, name
        # the round trips of the batch in hand, per decoder: the evaluator applies every condition to one
        # batch in turn, and the resizers of a decoder share its round trip (held with the batch it is of)
        self._batch: torch.Tensor | None = None
        self._round_trips: dict[str, list[np.ndarray]] = {}

    def conditions(self) -> list[Condition]:
        return [Condition(self.name, f"{d}/{r}") for d in self.decoders for r in self.resizers]

    @staticmethod
    def split(condition: Condition) -> tuple[str, str]:
        """``(decoder, resizer)`` of a condition."""
        decoder, _, resizer = condition.name.partition("/")
        return decoder, resizer

    def pipeline(self, condition: Condition, size: int, crop_pct: float, grey: bool = False) -> Pipeline:
        """The preprocessing of ``condition`` for a model of input ``size`` and ``crop_pct`` (overridden by this
        noise's ``crop_pct`` when set): compressed bytes -> the model's input."""
        decoder, resizer = self.split(condition)
        return Pipeline(decoder, resizer, size, self.crop_pct or crop_pct, self.square, grey)

    def apply(self, images, labels, sample_ids, condition, model=None):
        """In-memory images: each through the decoder library's codec round trip, then resampled by the resizer
        to ``size / crop_pct`` and back to its size."""
        decoder, resizer = self.split(condition)
        channels, height, width = images.shape[1:]
        if channels not in (1, 3) or height != width:
            raise ValueError(
                f"imagenet_s on in-memory images needs square grey or RGB images, got {tuple(images.shape[1:])}"
            )
        larger = math.floor(height / (self.crop_pct or IN_MEMORY_CROP_PCT))
        # one image takes some 0.1 ms here: a thread pool would cost more than it saves
        return resample_round_trip(self._round_trip(images, decoder), resizer, larger).to(images.device, images.dtype)

    def _round_trip(self, images: torch.Tensor, decoder: str) -> list[np.ndarray]:
        """The batch's images (as 8-bit pixels) after ``decoder``'s codec round trip; computed once per batch."""
        if self._batch is not images:
            self._batch, self._round_trips = images, {}
        if decoder not in self._round_trips:
            pixels = images.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            # serially: on small images the codec calls are too short for a thread pool to pay off (measured)
            self._round_trips[decoder] = [codecs.round_trip(decoder, image, self.codec) for image in pixels]
        return self._round_trips[decoder]

    def report(self) -> dict:
        """The libraries behind every decoder, so a number can be traced to the code that produced it."""
        return {
            "decoders": {d: codecs.versions(d) for d in self.decoders},
            "resizers": list(self.resizers),
            "square": self.square,
            "crop_pct": self.crop_pct,
            "in_memory_codec": self.codec,
        }


@register_noise(options=ImagenetSOptions)
def imagenet_s(opts: ImagenetSOptions) -> SystemNoise:
    """System noise: every decoder x resizer combination (ImageNet-S)."""
    return SystemNoise(opts.decoders, opts.resizers, opts.square, opts.crop_pct, opts.codec)
