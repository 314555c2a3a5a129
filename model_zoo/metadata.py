"""Metadata that travels with every zoo model (a frozen dataclass, never encoded in names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

FAMILIES = ("cnn", "transformer", "mlp", "nas")


def channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation for ``in_chans`` input channels: the given statistics, or, for grey-scale or
    multispectral input, their average repeated per channel."""
    mean, std = tuple(mean), tuple(std)
    if in_chans != len(mean):
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return mean, std


@dataclass(frozen=True)
class ModelMetadata:
    """What a results table needs to know about a model.

    Attributes:
        name: zoo name (``resnet50``, ``vit_b``); this is the ``model`` column of the results.
        family: one of ``cnn``, ``transformer``, ``mlp``, ``nas``.
        architecture: the underlying constructor (a timm model name, or the zoo's own).
        num_classes: size of the classifier head.
        in_chans: input channels the model takes (1 for grey-scale small-input models).
        input_size: ``(channels, height, width)`` the model is evaluated at.
        mean, std: per-channel normalisation applied *inside* the model (inputs are in [0, 1]).
        crop_pct: centre-crop fraction of the evaluation transform (resize to size / crop_pct).
        interpolation: resize interpolation of the evaluation transform (``bilinear``, ``bicubic``...).
        params: number of parameters.
        flops: floating-point operations of one forward pass on one image at ``input_size``, counted by
            torch's own ``FlopCounterMode`` (a multiply-add counts 2), on the meta device.
        genes: architecture genes of a searched subnet (``nas_subnet``: depth, width, kernel size and
            expansion per stage, input resolution); ``None`` for hand-designed entries.
        weights: where the weights came from: ``random``, ``timm:<hub tag>``, ``file:<name>`` or
            ``robustart:<checkpoint hash>``.
        sha256: digest of the weights file, when weights were loaded from a file.
    """

    name: str
    family: str
    architecture: str
    num_classes: int
    in_chans: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    interpolation: str
    params: int = 0
    flops: int = 0
    weights: str = "random"
    sha256: str | None = None
    genes: dict[str, int | float] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")

    def with_weights(self, weights: str, sha256: str | None = None) -> ModelMetadata:
        return replace(self, weights=weights, sha256=sha256)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
