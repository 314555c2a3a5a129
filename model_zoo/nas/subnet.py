"""A standalone subnet: an ordinary MobileNetV3-like network built from its :class:`model_zoo.nas.space.Genes`.

The module names (``stem``, ``first``, ``stages.<stage>.<block>.{expand,dw,project}``, ``head``,
``classifier``) are the same as the supernet's, so a subnet's state dict is the supernet's, sliced (see
:func:`robustart.model_zoo.nas.supernet.extract_subnet`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustart.model_zoo.nas.space import NUM_STAGES, Genes, backbone_for


def activation(name: str) -> nn.Module:
    """``relu``, ``hswish`` (hard-swish) or ``none``."""
    return {"relu": nn.ReLU, "hswish": nn.Hardswish, "none": nn.Identity}[name]()


def init_conv_(weight: torch.Tensor) -> None:
    """He-normal initialisation by fan-out (as torchvision's MobileNetV3)."""
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


def resize_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` (N, C, H, W) resized to ``size`` x ``size`` (bilinear) when it is not that size already."""
    if x.shape[-2] == size and x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


class ConvBNAct(nn.Module):
    """Convolution (no bias), batch norm, activation; ``padding = kernel // 2`` ("same" at stride 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = activation(act)
        init_conv_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted-residual block: 1x1 expand (to ``cin * expand`` channels; none when ``expand == 1``),
    ``kernel`` x ``kernel`` depthwise (with the block's stride), 1x1 linear projection to ``cout``, and an
    identity shortcut when ``residual``."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, stride: int, act: str, residual: bool):
        super().__init__()
        if residual and (cin != cout or stride != 1):
            raise ValueError(f"an identity shortcut needs cin == cout and stride 1, got {cin}, {cout}, {stride}")
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1, act=act) if expand != 1 else None
        self.dw = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act)
        self.project = ConvBNAct(mid, cout, 1, act="none")
        self.residual = residual
        if residual:  # the block starts as the identity (BigNAS's zero-init of the last batch-norm scale)
            nn.init.zeros_(self.project.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.dw(out))
        return out + x if self.residual else out


def first_block(backbone) -> MBConv:
    """The fixed first block after the stem (expand 1, kernel 3, stride 1), the same in every subnet."""
    cin, cout = backbone.stem_channels, backbone.first_channels
    return MBConv(cin, cout, kernel=3, expand=1, stride=1, act="relu", residual=cin == cout)


def stage_plan(cin: int, cout: int, stride: int, depth: int) -> list[tuple[int, int, bool]]:
    """``(input channels, stride, identity shortcut)`` of each block of a stage: the first block changes
    the channels and the size (no shortcut), the others keep both and add their input to their output."""
    return [(cin, stride, False)] + [(cout, 1, True)] * (depth - 1)


class SubNet(nn.Module):
    """The network that :class:`Genes` describe, at base image size ``img_size``.

    stem (3x3 conv) -> fixed first block (expand 1, kernel 3) -> five stages of ``genes.depth[i]``
    :class:`MBConv` blocks (the first with the stage's stride and no shortcut, the others with identity
    shortcuts) -> 1x1 head conv -> global average pool -> linear classifier.

    Takes normalised images of any size and resizes them (bilinear) to the subnet's resolution
    (``genes.resolution_px(img_size)``) when they differ.

    Attributes:
        genes, num_classes, in_chans, img_size: as given.
        resolution: the input resolution in pixels.
    """

    def __init__(self, genes: Genes, num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> None:
        super().__init__()
        if not isinstance(genes, Genes):
            raise TypeError(f"SubNet takes Genes (see model_zoo.nas.decode), got {type(genes).__name__}")
        backbone = backbone_for(img_size)
        self.genes, self.num_classes, self.in_chans, self.img_size = genes, num_classes, in_chans, img_size
        self.resolution = genes.resolution_px(img_size)

        self.stem = ConvBNAct(in_chans, backbone.stem_channels, 3, backbone.stem_stride, act="hswish")
        self.first = first_block(backbone)
        cin, stages = backbone.first_channels, []
        for stage, cout in enumerate(genes.channels(img_size)):
            kernel, expand, act = genes.kernel[stage], genes.expand[stage], backbone.activations[stage]
            plan = stage_plan(cin, cout, backbone.strides[stage], genes.depth[stage])
            stages.append(nn.Sequential(*(MBConv(c, cout, kernel, expand, s, act, r) for c, s, r in plan)))
            cin = cout
        assert len(stages) == NUM_STAGES
        self.stages = nn.ModuleList(stages)
        head = genes.head_channels(img_size)
        self.head = ConvBNAct(cin, head, 1, act="hswish")
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(resize_to(x, self.resolution)))
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.head(x).mean(dim=(2, 3)))

    def extra_repr(self) -> str:
        return f"genes={self.genes}, resolution={self.resolution}"
