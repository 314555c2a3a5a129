"""The search space: which subnets exist, and the integer id of each.

A subnet is a MobileNetV3-like network (BigNAS / Once-for-All style) described by its :class:`Genes`:

- five searchable stages, each with a **depth** (the first 2, 3 or 4 blocks of the stage run), a
  **kernel** size of its depthwise convolutions (3, 5 or 7; smaller kernels are the centre of the
  supernet's shared 7x7 weight), an **expand** ratio of its inverted-residual blocks (3, 4 or 6) and a
  **width** (its output channels: 0.75 or 1.0 times the stage's base channels);
- one input **resolution**: 6/7, 7/7 or 8/7 of the model's base image size (24, 28 or 32 px at 28 px;
  192, 224 or 256 px at 224 px).

The fixed parts (stem, a first block, strides, base channels, head) come from a :class:`Backbone` picked by
the base image size: a compact one for small inputs (``img_size <= 64``, e.g. Fashion-MNIST) and a
MobileNetV3-Large-like one for ImageNet-sized inputs.

Subnet ids
----------
An id is a mixed-radix number over the genes, most significant digit first, in this fixed order::

    resolution, depth_1, kernel_1, expand_1, width_1, depth_2, kernel_2, ..., expand_5, width_5

where each digit is the index of the gene's value in its list of choices (``RESOLUTION_SCALES``,
``DEPTHS``, ``KERNELS``, ``EXPANDS``, ``WIDTHS``). So id 0 is the smallest choice of every gene, the
last id (``num_subnets() - 1``) the largest, and ``3 * (3 * 3 * 3 * 2) ** 5 = 1,377,495,072`` ids each name
a different architecture. :func:`decode` and :func:`encode` convert between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NUM_STAGES = 5
DEPTHS = (2, 3, 4)
KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
WIDTHS = (0.75, 1.0)
#: input resolution as a fraction of the base image size (index 0, 1, 2 in :attr:`Genes.resolution`)
RESOLUTION_SCALES = (6 / 7, 1.0, 8 / 7)
#: the largest image size that gets the small-input backbone
SMALL_INPUT_MAX = 64

#: the flat result columns of a subnet's genes (see :meth:`Genes.as_dict`), in a fixed order
GENE_NAMES: tuple[str, ...] = (
    *(f"depth_{i}" for i in range(1, NUM_STAGES + 1)),
    *(f"kernel_{i}" for i in range(1, NUM_STAGES + 1)),
    *(f"expand_{i}" for i in range(1, NUM_STAGES + 1)),
    *(f"width_{i}" for i in range(1, NUM_STAGES + 1)),
    "resolution",
    "total_depth",
    "total_kernel",
    "last_depth",
)


def make_divisible(value: float, divisor: int) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(value / divisor + 0.5) * divisor)


# ------------------------------------------------------------------------------------------------ backbones


@dataclass(frozen=True)
class Backbone:
    """The fixed skeleton that genes are applied to.

    Attributes:
        name: ``small`` or ``imagenet``.
        stem_channels, stem_stride: the 3x3 stem convolution.
        first_channels: output channels of the fixed first block (expand 1, kernel 3, stride 1).
        base_widths: output channels of each searchable stage at width 1.0.
        strides: stride of the first block of each stage (the others have stride 1).
        activations: ``relu`` or ``hswish`` per stage (MobileNetV3 uses ReLU early, hard-swish late).
        head_channels: channels of the 1x1 head convolution at width 1.0 of the last stage.
        divisor: channel counts are rounded to multiples of this.
    """

    name: str
    stem_channels: int
    stem_stride: int
    first_channels: int
    base_widths: tuple[int, ...]
    strides: tuple[int, ...]
    activations: tuple[str, ...]
    head_channels: int
    divisor: int

    def stage_channels(self, width: float, stage: int) -> int:
        """Output channels of ``stage`` (0-based) at width multiplier ``width``."""
        return make_divisible(self.base_widths[stage] * width, self.divisor)

    def head_width(self, width: float) -> int:
        """Channels of the head convolution when the last stage has width multiplier ``width``."""
        return make_divisible(self.head_channels * width, self.divisor)


#: small inputs (28-64 px): no early downsampling (stem stride 1), then the first two stages halve the size
#: (28 px ends at 7x7, where the other three stages work: the cheapest place for them on a CPU), compact widths
SMALL = Backbone(
    name="small",
    stem_channels=16,
    stem_stride=1,
    first_channels=16,
    base_widths=(16, 24, 32, 48, 64),
    strides=(2, 2, 1, 1, 1),
    activations=("relu", "relu", "hswish", "hswish", "hswish"),
    head_channels=256,
    divisor=4,
)

#: ImageNet-sized inputs: MobileNetV3-Large / Once-for-All strides and widths
IMAGENET = Backbone(
    name="imagenet",
    stem_channels=16,
    stem_stride=2,
    first_channels=16,
    base_widths=(24, 40, 80, 112, 160),
    strides=(2, 2, 2, 1, 2),
    activations=("relu", "relu", "hswish", "hswish", "hswish"),
    head_channels=1280,
    divisor=8,
)


def backbone_for(img_size: int) -> Backbone:
    """The backbone for base image size ``img_size``: :data:`SMALL` up to 64 px, else :data:`IMAGENET`."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
        raise ValueError(f"img_size must be an integer >= 8, got {img_size!r}")
    return SMALL if img_size <= SMALL_INPUT_MAX else IMAGENET


def resolutions(img_size: int) -> tuple[int, ...]:
    """The three input resolutions (px) of the space at base image size ``img_size``."""
    backbone_for(img_size)  # validates img_size
    return tuple(round(img_size * scale) for scale in RESOLUTION_SCALES)


# ------------------------------------------------------------------------------------------------ genes


@dataclass(frozen=True)
class Genes:
    """The architecture of one subnet. Tuples hold one value per searchable stage (5).

    Attributes:
        depth: active blocks per stage, each in :data:`DEPTHS`.
        kernel: depthwise kernel size per stage, each in :data:`KERNELS`.
        expand: expansion ratio per stage, each in :data:`EXPANDS`.
        width: output-channel multiplier per stage, each in :data:`WIDTHS` (see :meth:`channels` for
            the channel counts, which depend on the backbone).
        resolution: index into :data:`RESOLUTION_SCALES` (0, 1 or 2; see :meth:`resolution_px`).
    """

    depth: tuple[int, ...]
    kernel: tuple[int, ...]
    expand: tuple[int, ...]
    width: tuple[float, ...]
    resolution: int

    def __post_init__(self) -> None:
        for name, choices in (("depth", DEPTHS), ("kernel", KERNELS), ("expand", EXPANDS), ("width", WIDTHS)):
            values = tuple(getattr(self, name))
            if len(values) != NUM_STAGES or any(v not in choices for v in values):
                raise ValueError(f"genes.{name} must be {NUM_STAGES} values from {choices}, got {values}")
            if name == "width":
                values = tuple(float(v) for v in values)
            object.__setattr__(self, name, values)  # lists become tuples, so Genes stay hashable
        if isinstance(self.resolution, bool) or self.resolution not in range(len(RESOLUTION_SCALES)):
            raise ValueError(
                f"genes.resolution must be an index in 0..{len(RESOLUTION_SCALES) - 1}, got {self.resolution!r}"
            )

    @classmethod
    def smallest(cls) -> Genes:
        return decode(smallest_id())

    @classmethod
    def largest(cls) -> Genes:
        return decode(largest_id())

    def channels(self, img_size: int) -> tuple[int, ...]:
        """Output channels of each stage at base image size ``img_size``."""
        backbone = backbone_for(img_size)
        return tuple(backbone.stage_channels(w, stage) for stage, w in enumerate(self.width))

    def head_channels(self, img_size: int) -> int:
        """Channels of the 1x1 head convolution (it scales with the last stage's width)."""
        return backbone_for(img_size).head_width(self.width[-1])

    def resolution_px(self, img_size: int) -> int:
        """The input resolution in pixels at base image size ``img_size``."""
        return resolutions(img_size)[self.resolution]

    def as_dict(self, img_size: int) -> dict[str, int]:
        """Flat integer columns named as in :data:`GENE_NAMES`: per-stage ``depth_i``, ``kernel_i``,
        ``expand_i``, ``width_i`` (channels); ``resolution`` (px); ``total_depth`` (active blocks in the
        searchable stages), ``total_kernel`` (sum of the kernel sizes of those blocks, RobustART's "total
        kernel size") and ``last_depth`` (depth of the last stage)."""
        row: dict[str, int] = {}
        for name, values in (
            ("depth", self.depth),
            ("kernel", self.kernel),
            ("expand", self.expand),
            ("width", self.channels(img_size)),
        ):
            row.update({f"{name}_{i}": int(v) for i, v in enumerate(values, start=1)})
        row["resolution"] = self.resolution_px(img_size)
        row["total_depth"] = sum(self.depth)
        row["total_kernel"] = sum(d * k for d, k in zip(self.depth, self.kernel))
        row["last_depth"] = self.depth[-1]
        assert tuple(row) == GENE_NAMES
        return row

    def __str__(self) -> str:
        stages = " ".join(
            f"{d}x(k{k},e{e},w{w:g})" for d, k, e, w in zip(self.depth, self.kernel, self.expand, self.width)
        )
        return f"r{self.resolution} {stages}"


# ------------------------------------------------------------------------------------------------ ids

#: the choices of every digit of an id, most significant first (see the module docstring)
_DIGITS: tuple[tuple[str, int | None, tuple], ...] = (
    ("resolution", None, tuple(range(len(RESOLUTION_SCALES)))),
    *(
        (gene, stage, choices)
        for stage in range(NUM_STAGES)
        for gene, choices in (("depth", DEPTHS), ("kernel", KERNELS), ("expand", EXPANDS), ("width", WIDTHS))
    ),
)


def num_subnets() -> int:
    """How many subnets (ids) the space has."""
    return math.prod(len(choices) for _, _, choices in _DIGITS)


def smallest_id() -> int:
    """The id of the smallest subnet (every gene at its smallest choice): 0."""
    return 0


def largest_id() -> int:
    """The id of the largest subnet (every gene at its largest choice): ``num_subnets() - 1``."""
    return num_subnets() - 1


def check_id(subnet_id: object) -> int:
    """``subnet_id`` as a Python int, or ValueError (naming the valid range) when it is not a valid id."""
    valid = f"a subnet id must be an integer in [0, {largest_id()}]"
    if isinstance(subnet_id, (bool, np.bool_)) or not isinstance(subnet_id, (int, np.integer)):
        raise ValueError(f"{valid}, got {subnet_id!r} of type {type(subnet_id).__name__}")
    if not 0 <= subnet_id < num_subnets():
        raise ValueError(f"{valid}, got {subnet_id}")
    return int(subnet_id)


def decode(subnet_id: int) -> Genes:
    """The genes of subnet ``subnet_id`` (an integer in ``[0, num_subnets())``; ValueError otherwise)."""
    remainder = check_id(subnet_id)
    values: dict[str, list] = {gene: [None] * NUM_STAGES for gene in ("depth", "kernel", "expand", "width")}
    resolution = 0
    for gene, stage, choices in reversed(_DIGITS):  # least significant digit first
        remainder, index = divmod(remainder, len(choices))
        if stage is None:
            resolution = choices[index]
        else:
            values[gene][stage] = choices[index]
    return Genes(resolution=resolution, **{k: tuple(v) for k, v in values.items()})


def encode(genes: Genes) -> int:
    """The id of ``genes`` (the inverse of :func:`decode`)."""
    if not isinstance(genes, Genes):
        raise TypeError(f"encode takes Genes, got {type(genes).__name__}")
    subnet_id = 0
    for gene, stage, choices in _DIGITS:  # most significant digit first
        value = genes.resolution if stage is None else getattr(genes, gene)[stage]
        subnet_id = subnet_id * len(choices) + choices.index(value)
    return subnet_id


def sample(n: int, seed: int = 0) -> list[int]:
    """``n`` distinct subnet ids drawn uniformly at random (without replacement), the same for the same seed."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= num_subnets():
        raise ValueError(f"n must be an integer in [0, {num_subnets()}], got {n!r}")
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(num_subnets(), size=int(n), replace=False)]


def random_genes(generator: torch.Generator) -> Genes:
    """Genes of a subnet drawn uniformly with ``generator`` (advances it; used by supernet training)."""
    subnet_id = int(torch.randint(num_subnets(), (1,), generator=generator).item())
    return decode(subnet_id)
