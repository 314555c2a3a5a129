"""Natural noise: ImageNet-C corruptions generated on the fly.

>>> import torch
>>> from noise.natural import corrupt
>>> x = torch.rand(4, 3, 32, 32)
>>> corrupt(x, "gaussian_noise", 3, seed=0).shape
torch.Size([4, 3, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robustart.noise.base import Condition, Noise
from robustart.noise.natural import blur, corruptions, digital, geometric, motion, weather
from robustart.noise.natural.params import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, PARAMETER_SETS, parameter_set
from robustart.noise.options import SEVERITIES, ImagenetCOptions
from robustart.noise.registry import register_noise
from robustart.noise.seeding import SampleRNG

__all__ = [
    "BENCHMARK_CORRUPTIONS",
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "FUNCTIONS",
    "PARAMETER_SETS",
    "SEVERITIES",
    "CorruptionNoise",
    "corrupt",
]

#: name -> function(x, c, rng), for every corruption implemented so far
FUNCTIONS = {
    "gaussian_noise": corruptions.gaussian_noise,
    "shot_noise": corruptions.shot_noise,
    "impulse_noise": corruptions.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": geometric.glass_blur,
    "motion_blur": motion.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": motion.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": corruptions.brightness,
    "contrast": corruptions.contrast,
    "elastic_transform": geometric.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": corruptions.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": weather.spatter,
    "saturate": corruptions.saturate,
}

#: all 19 corruptions: the 15 of the benchmark, then the 4 extra ones
CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
if set(FUNCTIONS) != set(CORRUPTIONS):  # a new corruption must be listed in params.py as well
    raise ImportError(f"noise.natural.FUNCTIONS and CORRUPTIONS differ: {sorted(set(FUNCTIONS) ^ set(CORRUPTIONS))}")
#: corruptions that mix in colour (the frost pictures): grey-scale images go through RGB and back with the
#: original's ``rgb2gray`` weights
_COLOUR_ONLY = {"frost"}
_GREY = (0.2989, 0.5870, 0.1140)


def _check(name: str, severity: int) -> None:
    if name not in FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5 (valid: 1, 2, 3, 4, 5), got {severity!r}")


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    *,
    seed: int = 0,
    sample_ids: Sequence[int] | torch.Tensor | None = None,
    params: str = "auto",
) -> torch.Tensor:
    """Apply an ImageNet-C corruption to a batch.

    Args:
        images: float32 NCHW in [0, 1], on any device.
        name: corruption name (one of :data:`CORRUPTIONS`).
        severity: 1..5.
        seed: base seed; per-sample randomness comes from ``(seed, sample_id, name, severity)``.
        sample_ids: one id per image (default ``0..N-1``); the same id always gets the same noise.
        params: severity parameters: ``imagenet`` (224 px), ``cifar`` (CIFAR-10-C, 32 px), ``tiny``
            (Tiny-ImageNet-C, 64 px) or ``auto`` (chosen by image size, see
            :func:`robustart.noise.natural.params.parameter_set`).

    Returns:
        The corrupted batch, same shape, dtype and device, values in [0, 1].
    """
    _check(name, severity)
    if images.ndim != 4 or not images.is_floating_point() or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be a float NCHW batch with 1 or 3 channels, got {tuple(images.shape)} {images.dtype}"
        )
    if images.numel():
        low, high = (v.item() for v in torch.aminmax(images))  # one pass, one device sync
        if low < 0 or high > 1:
            raise ValueError(f"images must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    ids = range(len(images)) if sample_ids is None else [int(i) for i in sample_ids]
    if len(ids) != len(images):
        raise ValueError(f"got {len(ids)} sample_ids for {len(images)} images")
    param = parameter_set(params, *images.shape[-2:])[name][severity - 1]
    rng = SampleRNG(seed, ids, name, severity, device=images.device)
    # the functions are written for the standard layout; a channels-last batch (for instance a permuted
    # HWC array) runs several of them 3-5x slower, so copying it once is cheaper
    images = images.contiguous()
    if images.shape[1] == 1 and name in _COLOUR_ONLY:
        out = FUNCTIONS[name](images.expand(-1, 3, -1, -1).contiguous(), param, rng)
        return (out * torch.tensor(_GREY, device=out.device).view(1, 3, 1, 1)).sum(1, keepdim=True).clamp_(0, 1)
    return FUNCTIONS[name](images, param, rng)


class CorruptionNoise(Noise):
    """ImageNet-C corruptions x severities, generated on the fly."""

    def __init__(
        self,
        name: str,
        corruptions: Sequence[str],
        severities: Sequence[int],
        seed: int,
        params: str = "auto",
        released_format: bool = False,
    ) -> None:
        if not corruptions:
            raise ValueError(f"noise {name!r}: corruptions must not be empty")
        if not severities:
            raise ValueError(f"noise {name!r}: severities must not be empty")
        for c in corruptions:
            for s in severities:
                _check(c, s)
        self.name = name
        self.corruptions = list(corruptions)
        self.severities = list(severities)
        self.seed = seed
        parameter_set(params, 224, 224)  # an unknown set name fails here, before any work
        self.params = params
        self.released_format = released_format

    def conditions(self) -> list[Condition]:
        return [Condition(self.name, c, severity=s) for c in self.corruptions for s in self.severities]

    def apply(self, images, labels, sample_ids, condition, model=None):
        out = corrupt(
            images, condition.name, condition.severity, seed=self.seed, sample_ids=sample_ids, params=self.params
        )
        return digital.save_like_released(out) if self.released_format else out


@register_noise(options=ImagenetCOptions)
def imagenet_c(opts: ImagenetCOptions) -> CorruptionNoise:
    """ImageNet-C corruptions generated on the fly (all implemented ones by default) at severities 1..5."""
    return CorruptionNoise("imagenet_c", list(opts.corruptions or CORRUPTIONS), list(opts.severities), opts.seed,
                           opts.params, opts.released_format)  # fmt: skip


from robustart.noise.natural import sequences  # noqa: E402,F401  (registers noise=imagenet_p)
