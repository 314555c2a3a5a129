"""The weight-sharing supernet: one set of weights from which every subnet of the space is a slice.

Each searchable layer holds the weights of its largest version; a subnet uses

- the first ``out`` output and first ``in`` input channels of a convolution, and the centre
  ``k`` x ``k`` of its 7x7 kernel (:func:`crop`);
- the first channels of a batch norm's scale, shift and running statistics;
- the first input features of the classifier;
- the first ``depth`` blocks of each stage.

:meth:`SuperNet.set_active` picks the subnet that ``forward`` runs; :func:`extract_subnet` copies its
slices into a standalone :class:`~robustart.model_zoo.nas.subnet.SubNet` (ordinary ``nn.Conv2d`` / ``nn.BatchNorm2d``
/ ``nn.Linear``) that computes the same function. Training a supernet mixes the batch-norm statistics
of many subnets, so re-estimate them for the subnet you evaluate with :func:`recalibrate_bn`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from robustart.model_zoo.nas.space import DEPTHS, EXPANDS, KERNELS, NUM_STAGES, WIDTHS, Genes, backbone_for
from robustart.model_zoo.nas.subnet import ConvBNAct as _FixedConvBNAct
from robustart.model_zoo.nas.subnet import SubNet, activation, first_block, init_conv_, resize_to, stage_plan


def crop(tensor: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """The part of ``tensor`` of size ``shape`` that a smaller layer uses: the first entries of each
    dimension, except the kernel dimensions of a convolution weight (dims 2 and 3 of a 4-D tensor),
    where it is the centre. Returns a view."""
    if len(shape) != tensor.dim() or any(want > have for want, have in zip(shape, tensor.shape)):
        raise ValueError(f"cannot cut a {tuple(shape)} tensor from a {tuple(tensor.shape)} one")
    index = []
    for dim, (have, want) in enumerate(zip(tensor.shape, shape)):
        start = (have - want) // 2 if dim >= 2 else 0
        index.append(slice(start, start + want))
    return tensor[tuple(index)]


# ------------------------------------------------------------------------------------------------ dynamic layers


class DynamicConv2d(nn.Module):
    """A convolution (no bias) holding its largest weight; ``forward`` takes the output channels and kernel
    size to use; the input channels are those of ``x``. ``depthwise`` convolutions have one filter per
    input channel (their output channels are the input's)."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, stride: int = 1, depthwise: bool = False):
        super().__init__()
        if depthwise and max_in != max_out:
            raise ValueError(f"a depthwise convolution has as many outputs as inputs, got {max_in}, {max_out}")
        self.stride, self.depthwise = stride, depthwise
        self.weight = nn.Parameter(torch.empty(max_out, 1 if depthwise else max_in, max_kernel, max_kernel))
        init_conv_(self.weight)

    def forward(self, x: torch.Tensor, out_channels: int, kernel_size: int) -> torch.Tensor:
        channels = x.shape[1]
        if self.depthwise:
            weight, groups = crop(self.weight, (channels, 1, kernel_size, kernel_size)), channels
        else:
            weight, groups = crop(self.weight, (out_channels, channels, kernel_size, kernel_size)), 1
        return F.conv2d(x, weight, None, self.stride, kernel_size // 2, 1, groups)

    def extra_repr(self) -> str:
        return f"max_shape={tuple(self.weight.shape)}, stride={self.stride}, depthwise={self.depthwise}"


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the first ``x.shape[1]`` channels of its largest parameters and statistics.

    In training mode it normalises with the batch statistics and updates the running statistics of
    those channels only, as ``nn.BatchNorm2d`` would (``momentum=None`` gives a cumulative average);
    the other channels' statistics are left as they were. It always tracks running statistics and has a
    learnable scale and shift.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        weight, bias = self.weight[:channels], self.bias[:channels]
        if not self.training:
            mean, var = self.running_mean[:channels], self.running_var[:channels]
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        # F.batch_norm updates the statistics it is given in place: give it copies of the active slices,
        # then write them back (so that the update never depends on how views are handled)
        mean, var = self.running_mean[:channels].clone(), self.running_var[:channels].clone()
        out = F.batch_norm(x, mean, var, weight, bias, True, factor, self.eps)
        with torch.no_grad():
            self.running_mean[:channels].copy_(mean)
            self.running_var[:channels].copy_(var)
        return out


class DynamicLinear(nn.Linear):
    """A linear layer that uses the first ``x.shape[-1]`` input features of its largest weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[-1]], self.bias)


class DynamicConvBNAct(nn.Module):
    """:class:`DynamicConv2d`, :class:`DynamicBatchNorm2d`, activation (the supernet's ``ConvBNAct``)."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, stride=1, depthwise=False, act="relu"):
        super().__init__()
        self.conv = DynamicConv2d(max_in, max_out, max_kernel, stride, depthwise)
        self.bn = DynamicBatchNorm2d(max_out)
        self.act = activation(act)

    def forward(self, x: torch.Tensor, out_channels: int, kernel_size: int) -> torch.Tensor:
        return self.act(self.bn(self.conv(x, out_channels, kernel_size)))


class DynamicMBConv(nn.Module):
    """The supernet's inverted-residual block (see :class:`~robustart.model_zoo.nas.subnet.MBConv`) with searchable
    output channels, kernel size and expansion ratio; the expanded width is ``input channels * expand``."""

    def __init__(self, max_in: int, max_out: int, stride: int, act: str, residual: bool):
        super().__init__()
        max_mid = max_in * max(EXPANDS)
        self.expand = DynamicConvBNAct(max_in, max_mid, 1, act=act)
        self.dw = DynamicConvBNAct(max_mid, max_mid, max(KERNELS), stride, depthwise=True, act=act)
        self.project = DynamicConvBNAct(max_mid, max_out, 1, act="none")
        self.residual = residual
        if residual:
            nn.init.zeros_(self.project.bn.weight)

    def forward(self, x: torch.Tensor, out_channels: int, kernel_size: int, expand: int) -> torch.Tensor:
        mid = x.shape[1] * expand
        out = self.expand(x, mid, 1)
        out = self.dw(out, mid, kernel_size)
        out = self.project(out, out_channels, 1)
        return out + x if self.residual else out


# ------------------------------------------------------------------------------------------------ supernet


class SuperNet(nn.Module):
    """Every subnet of the space in one network (the largest weights of every layer).

    ``forward`` runs the active subnet (:meth:`set_active`; the largest by default) on normalised images,
    resized to its resolution. The stem and the fixed first block are shared as they are; the searchable
    stages hold ``max(DEPTHS)`` blocks each; the head convolution's output scales with the last stage's width,
    so the classifier is sliced on its input features.

    Attributes:
        num_classes, in_chans, img_size: as given (``img_size`` picks the backbone and the resolutions).
        active: the :class:`Genes` that ``forward`` runs.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> None:
        super().__init__()
        backbone = backbone_for(img_size)
        self.num_classes, self.in_chans, self.img_size = num_classes, in_chans, img_size
        # the stem and first block are the same in every subnet: ordinary layers, as in SubNet
        self.stem = _FixedConvBNAct(in_chans, backbone.stem_channels, 3, backbone.stem_stride, act="hswish")
        self.first = first_block(backbone)
        cin, stages = backbone.first_channels, []
        for stage in range(NUM_STAGES):
            cout, act = backbone.stage_channels(max(WIDTHS), stage), backbone.activations[stage]
            plan = stage_plan(cin, cout, backbone.strides[stage], max(DEPTHS))
            stages.append(nn.ModuleList(DynamicMBConv(c, cout, s, act, r) for c, s, r in plan))
            cin = cout
        self.stages = nn.ModuleList(stages)
        head = backbone.head_width(max(WIDTHS))
        self.head = DynamicConvBNAct(cin, head, 1, act="hswish")
        self.classifier = DynamicLinear(head, num_classes)
        self.active = Genes.largest()

    def set_active(self, genes: Genes) -> None:
        """Make ``forward`` run the subnet ``genes``."""
        if not isinstance(genes, Genes):
            raise TypeError(f"set_active takes Genes (see model_zoo.nas.decode), got {type(genes).__name__}")
        self.active = genes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        genes = self.active
        x = self.first(self.stem(resize_to(x, genes.resolution_px(self.img_size))))
        for stage, (blocks, channels) in enumerate(zip(self.stages, genes.channels(self.img_size))):
            for block in blocks[: genes.depth[stage]]:
                x = block(x, channels, genes.kernel[stage], genes.expand[stage])
        x = self.head(x, genes.head_channels(self.img_size), 1)
        return self.classifier(x.mean(dim=(2, 3)))

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, active={self.active}"


def extract_subnet(supernet: SuperNet, genes: Genes | None = None) -> SubNet:
    """A standalone :class:`SubNet` for ``genes`` (default: the active subnet) holding copies of the
    supernet's weights and batch-norm statistics, sliced (see :func:`crop`). Same device, dtype and
    train/eval mode as the supernet; the supernet is not changed."""
    genes = supernet.active if genes is None else genes
    with torch.device("meta"):  # built without allocating or drawing random numbers: every tensor is replaced
        subnet = SubNet(genes, supernet.num_classes, supernet.in_chans, supernet.img_size)
    source = supernet.state_dict()
    state = {name: crop(source[name], shape.shape).clone() for name, shape in subnet.state_dict().items()}
    subnet.load_state_dict(state, strict=True, assign=True)
    return subnet.train(supernet.training)


# ------------------------------------------------------------------------------------------------ batch norm


@torch.no_grad()
def recalibrate_bn(module: nn.Module, batches: Iterable, num_batches: int | None = None) -> int:
    """Re-estimate the batch-norm running statistics of ``module`` on ``batches``.

    Resets every batch norm's statistics, sets its ``momentum`` to ``None`` (a cumulative average over the
    batches), runs ``module`` in training mode without gradients on each batch, then restores the
    momenta and leaves ``module`` in eval mode. A batch is a tensor of images in the form ``module`` takes
    (in [0, 1] for a :class:`robustart.model_zoo.NormalizedModel`), or a tuple/list whose first item is one.
    On a :class:`SuperNet` only the active subnet's slices are estimated (the rest stay reset).

    Args:
        module: the network (a :class:`SubNet`, a :class:`SuperNet`, or a wrapper of either).
        batches: an iterable of batches (a DataLoader, a list, a generator).
        num_batches: use at most this many batches (``None``: all).

    Returns:
        The number of batches used.

    Raises:
        ValueError: no batch norm in ``module``, or no batch to estimate from.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{type(module).__name__} has no batch norm to recalibrate")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    used = 0
    try:
        module.train()
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            module(images)
            used += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.eval()
    if used == 0:
        raise ValueError("recalibrate_bn got no batch: the running statistics are reset, not estimated")
    return used
