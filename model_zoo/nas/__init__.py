"""Weight-sharing neural architecture search (BigNAS / Once-for-All style) over a MobileNetV3-like space.

- :mod:`robustart.model_zoo.nas.space`: the genes of a subnet (:class:`Genes`), subnet ids (:func:`decode`,
  :func:`encode`, :func:`sample`) and the result columns (:data:`GENE_NAMES`);
- :mod:`robustart.model_zoo.nas.subnet`: :class:`SubNet`, a standalone network built from genes;
- :mod:`robustart.model_zoo.nas.supernet`: :class:`SuperNet` (every subnet in one set of weights),
  :func:`extract_subnet` and :func:`recalibrate_bn`.

Zoo entries: ``nas_subnet`` (option ``subnet``: an id; default the largest) and ``nas_supernet``. A subnet
can be cut from a trained supernet's checkpoint: ``create_model("nas_subnet", subnet=7,
weights=<nas_supernet checkpoint>)``; re-estimate its batch norm (:func:`recalibrate_bn`) before use.
Training a supernet: :func:`robustart.training.supernet.fit_supernet`.

>>> import model_zoo
>>> model_zoo.get_metadata("nas_subnet", subnet=0).genes["resolution"]
24
"""

from __future__ import annotations

from robustart.model_zoo.metadata import ModelMetadata
from robustart.model_zoo.nas.space import (
    DEPTHS,
    EXPANDS,
    GENE_NAMES,
    IMAGENET,
    KERNELS,
    NUM_STAGES,
    RESOLUTION_SCALES,
    SMALL,
    WIDTHS,
    Backbone,
    Genes,
    backbone_for,
    decode,
    encode,
    largest_id,
    num_subnets,
    random_genes,
    resolutions,
    sample,
    smallest_id,
)
from robustart.model_zoo.nas.subnet import SubNet
from robustart.model_zoo.nas.supernet import SuperNet, crop, extract_subnet, recalibrate_bn
from robustart.model_zoo.registry import register_model

__all__ = [
    "DEPTHS",
    "EXPANDS",
    "GENE_NAMES",
    "IMAGENET",
    "KERNELS",
    "NUM_STAGES",
    "RESOLUTION_SCALES",
    "SMALL",
    "WIDTHS",
    "Backbone",
    "Genes",
    "SubNet",
    "SuperNet",
    "backbone_for",
    "crop",
    "decode",
    "encode",
    "extract_subnet",
    "largest_id",
    "num_subnets",
    "random_genes",
    "recalibrate_bn",
    "resolutions",
    "sample",
    "smallest_id",
]

FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _metadata(name: str, architecture: str, num_classes: int, in_chans: int, img_size: int, size: int, genes):
    """Metadata of both entries: Fashion-MNIST statistics for grey inputs, ImageNet's for RGB."""
    small = backbone_for(img_size) is SMALL
    if in_chans == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (FASHION_MNIST_MEAN,) * in_chans, (FASHION_MNIST_STD,) * in_chans
    return ModelMetadata(
        name=name,
        family="nas",
        architecture=architecture,
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=(in_chans, size, size),
        mean=mean,
        std=std,
        crop_pct=1.0 if small else 0.875,
        interpolation="bilinear",
        genes=genes,
    )


def _subnet_from_supernet(supernet: SuperNet, subnet: int | None = None, **overrides) -> SubNet:
    """The zoo's way to cut ``nas_subnet`` from a trained ``nas_supernet`` (see ``ZooEntry.weights_from``);
    ``num_classes``, ``in_chans`` and ``img_size`` are the supernet's (``overrides`` that are set must agree)."""
    for key, value in overrides.items():
        if value is not None and value != getattr(supernet, key):
            raise ValueError(f"the supernet has {key}={getattr(supernet, key)}, but the subnet asks for {value}")
    return extract_subnet(supernet, decode(largest_id() if subnet is None else subnet))


@register_model("nas_subnet", family="nas", weights_from={"nas_supernet": _subnet_from_supernet})
def nas_subnet(
    subnet: int | None = None, num_classes: int | None = None, in_chans: int | None = None, img_size: int | None = None
):
    """A subnet of the weight-sharing MobileNetV3-like search space, by id (default: the largest)
    (Fashion-MNIST by default: 1 channel, 10 classes, base size 28 px)."""
    num_classes, in_chans, img_size = num_classes or 10, in_chans or 1, img_size or 28
    subnet_id = largest_id() if subnet is None else subnet
    genes = decode(subnet_id)
    net = SubNet(genes, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    columns = {**genes.as_dict(img_size), "subnet": int(subnet_id)}
    meta = _metadata("nas_subnet", "robustart.nas.SubNet", num_classes, in_chans, img_size, net.resolution, columns)
    return net, meta


@register_model("nas_supernet", family="nas")
def nas_supernet(num_classes: int | None = None, in_chans: int | None = None, img_size: int | None = None):
    """The weight-sharing supernet of the NAS space (runs its largest subnet unless told otherwise);
    train it with ``training.supernet.fit_supernet`` and cut subnets from it."""
    num_classes, in_chans, img_size = num_classes or 10, in_chans or 1, img_size or 28
    net = SuperNet(num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    return net, _metadata("nas_supernet", "robustart.nas.SuperNet", num_classes, in_chans, img_size, img_size, None)
