"""A researcher's own model and data as the engine takes them: a module with its preprocessing and metadata,
and samples of ``(float image in [0, 1], label, sample_id)``."""

from __future__ import annotations

import hashlib

import torch
from torch import nn
from torch.nn import functional as F

from robustart.errors import UserError

#: the preprocessing and labelling options of a model given as a module
MODEL_OPTIONS = ("input_size", "mean", "std", "crop_pct", "interpolation", "num_classes", "name", "family")


class Samples(torch.utils.data.Dataset):
    """Any dataset of ``(image, label)`` or ``(image, label, sample_id)`` as ``(float32 CHW in [0, 1], label,
    sample_id)``; uint8 images are divided by 255, the sample id defaults to the index."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            kind = type(item).__name__
            raise UserError(f"data items must be (image, label) or (image, label, sample_id), got a {kind}")
        image, label = torch.as_tensor(item[0]), torch.as_tensor(item[1])
        if image.ndim != 3:
            raise UserError(f"data images must be CHW tensors, got shape {tuple(image.shape)}")
        image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        sample_id = torch.as_tensor(item[2] if len(item) == 3 else i)
        return image, label.long(), sample_id.long()

    def num_classes(self) -> int:
        """One more than the largest label (read from a tensor set's labels, or from every item)."""
        tensors = getattr(self.dataset, "tensors", None)
        if tensors is not None and len(tensors) >= 2:
            return int(tensors[1].max()) + 1
        return max(int(self[i][1]) for i in range(len(self))) + 1


class Preprocess(nn.Module):
    """Centre-crop by ``crop_pct`` and resize to ``size`` (when the input differs), then run ``net``."""

    def __init__(self, net: nn.Module, size: tuple[int, int], crop_pct: float, interpolation: str) -> None:
        super().__init__()
        self.net, self.size, self.crop_pct = net, tuple(size), crop_pct
        self.mode = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}.get(interpolation, "bilinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop_pct < 1:
            h, w = x.shape[-2:]
            ch, cw = round(h * self.crop_pct), round(w * self.crop_pct)
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        if tuple(x.shape[-2:]) != self.size:
            align = None if self.mode == "nearest" else False
            x = F.interpolate(x, size=self.size, mode=self.mode, align_corners=align, antialias=self.mode != "nearest")
        return self.net(x)


def model_input_size(model, options: dict):
    """The ``(C, H, W)`` a model is evaluated at, if known before data is read (zoo and timm models, or given)."""
    if options.get("input_size") is not None:
        return tuple(options["input_size"])
    meta = getattr(model, "metadata", None)
    if meta is not None:
        return tuple(meta.input_size)
    cfg = getattr(model, "pretrained_cfg", None)
    return tuple(cfg["input_size"]) if cfg and cfg.get("input_size") else None


def weights_digest(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, shapes and values), which names its weights in the results."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(str(tuple(value.shape)).encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def prepare_model(model, dataset, info, options: dict, weights: str = "random"):
    """``(model with metadata, weights label)``: a zoo name is built, a zoo model is used as it is, and any other
    module gets its preprocessing and a :class:`~robustart.model_zoo.ModelMetadata`."""
    from robustart import model_zoo

    if isinstance(model, str):
        try:
            built = model_zoo.create_model(model, weights=weights, num_classes=options.get("num_classes"),
                                           in_chans=info.in_chans)  # fmt: skip
        except (ValueError, FileNotFoundError) as err:
            raise UserError(str(err)) from None
        return built, built.metadata.weights
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be an nn.Module or a zoo name, got {type(model).__name__}")
    if isinstance(getattr(model, "metadata", None), model_zoo.ModelMetadata):
        return model, model.metadata.weights
    return wrap_module(model, dataset, info, options)


def wrap_module(module: nn.Module, dataset, info, options: dict):
    """A researcher's module with its preprocessing inside, and its metadata (classes from one forward pass)."""
    from dataclasses import replace

    from robustart import model_zoo
    from robustart.model_zoo.metadata import FAMILIES, channel_stats

    image, _, _ = dataset[0]
    pretrained = dict(getattr(module, "pretrained_cfg", None) or {})
    pick = lambda key, default: options[key] if options.get(key) is not None else pretrained.get(key, default)  # noqa: E731
    input_size = tuple(pick("input_size", tuple(image.shape)))
    if input_size[0] != image.shape[0]:
        raise UserError(f"the model takes {input_size[0]} channels but the data has {image.shape[0]}")
    mean, std = channel_stats(pick("mean", (0.0,)), pick("std", (1.0,)), input_size[0])
    crop_pct = float(pick("crop_pct", 1.0)) if info.root == "in memory" else 1.0  # folders are cropped when read
    interpolation = pick("interpolation", "bilinear")
    family = options.get("family") or "cnn"
    if family not in FAMILIES:
        raise UserError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    net = Preprocess(module, input_size[1:], crop_pct, interpolation) if info.root == "in memory" else module
    meta = model_zoo.ModelMetadata(
        name=options.get("name") or type(module).__name__.lower(), family=family,
        architecture=f"{type(module).__module__}.{type(module).__qualname__}", num_classes=0, in_chans=input_size[0],
        input_size=input_size, mean=mean, std=std, crop_pct=crop_pct, interpolation=interpolation,
        params=sum(p.numel() for p in module.parameters()),
    )  # fmt: skip
    wrapped = model_zoo.NormalizedModel(net, meta).eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            logits = wrapped.to(device)(image.unsqueeze(0).to(device))
    except Exception as err:  # the user's module: any failure is theirs to see, with the shapes involved
        raise UserError(f"the model fails on one data image of shape {tuple(image.shape)}: {err}") from None
    if logits.ndim != 2:
        raise UserError(f"the model must return logits (batch, classes); it returned shape {tuple(logits.shape)}")
    classes = int(logits.shape[1])
    if options.get("num_classes") is not None and options["num_classes"] != classes:
        raise UserError(f"num_classes={options['num_classes']} but the model returns {classes} logits")
    weights = f"module:{weights_digest(module)[:16]}"
    wrapped.metadata = replace(meta, num_classes=classes, flops=_flops(wrapped, input_size, device), weights=weights)
    return wrapped, weights


def _flops(model: nn.Module, input_size, device) -> int:
    """FLOPs of one image (torch's counter on a real forward pass), or 0 where the module cannot be counted."""
    from robustart.model_zoo import count_flops

    try:
        return count_flops(model.net, input_size)
    except Exception:  # a counter that cannot trace the module costs the column, not the run
        return 0
