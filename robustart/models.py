"""A researcher's own model and data as the engine takes them: a module with its preprocessing and metadata,
and samples of ``(float image in [0, 1], label, sample_id)``."""

from __future__ import annotations

import hashlib

import torch
from torch import nn
from torch.nn import functional as F

from robustart.errors import UserError
from robustart.identity import model_kind, model_label, plain_model_options
from robustart.model_options import INTERPOLATIONS, KIND_OPTIONS, check_model_options  # noqa: F401  (declared there)

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


def wrap_module(module: nn.Module, dataset, info, options: dict, in_memory: bool | None = None):
    """A researcher's module with its preprocessing inside, and its metadata (classes from one forward pass).

    ``in_memory``: the data's images are as stored, so cropping and resizing happen inside the model (default: when
    ``info.root`` is ``"in memory"``); otherwise the data was read at the model's size and crop already."""
    from dataclasses import replace

    from robustart import model_zoo
    from robustart.model_zoo.metadata import FAMILIES, channel_stats

    in_memory = info.root == "in memory" if in_memory is None else in_memory
    image, _, _ = dataset[0]
    pretrained = dict(getattr(module, "pretrained_cfg", None) or {})
    pick = lambda key, default: options[key] if options.get(key) is not None else pretrained.get(key, default)  # noqa: E731
    input_size = tuple(pick("input_size", tuple(image.shape)))
    if input_size[0] != image.shape[0]:
        raise UserError(f"the model takes {input_size[0]} channels but the data has {image.shape[0]}")
    mean, std = channel_stats(pick("mean", (0.0,)), pick("std", (1.0,)), input_size[0])
    crop_pct = float(pick("crop_pct", 1.0)) if in_memory else 1.0  # folders are cropped when read
    interpolation = pick("interpolation", "bilinear")
    family = options.get("family") or "cnn"
    if family not in FAMILIES:
        raise UserError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    net = Preprocess(module, input_size[1:], crop_pct, interpolation) if in_memory else module
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


# ------------------------------------------------------------------------------------------------ model=timm, custom


def load_factory(target: str):
    """The callable ``MODULE:FACTORY`` names, imported from PYTHONPATH or the current folder."""
    import importlib
    import os
    import sys

    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name or module_name.startswith(f"{err.name}."):  # not a module it imports
            raise UserError(
                f"model.target={target}: no module named {module_name!r} (put its folder on PYTHONPATH or run "
                "from the folder that holds it)"
            ) from None
        raise UserError(f"model.target={target}: importing module {module_name!r} failed: {err}") from None
    except Exception as err:  # the user's module: a syntax error, or anything its import runs
        raise UserError(f"model.target={target}: importing module {module_name!r} failed: "
                        f"{type(err).__name__}: {err}") from None  # fmt: skip
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise UserError(f"model.target={target}: module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UserError(f"model.target={target} is a {type(factory).__name__}, not a callable returning an nn.Module")
    return factory


def check_factory(model_cfg):
    """The factory of ``model=custom``, imported, with ``model.kwargs`` checked against its signature."""
    import inspect

    options = plain_model_options(model_cfg)
    target, kwargs = options["target"], options.get("kwargs") or {}
    factory = load_factory(target)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or extension: its call tells
        return factory
    params = signature.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise UserError(
                f"model.target={target} does not take model.kwargs.{unknown[0]}; it takes "
                f"{', '.join(names) or 'no keyword arguments'}"
            )
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise UserError(f"model.target={target}: its arguments do not fit model.kwargs {kwargs}: {err}") from None
    return factory


def model_metadata(model_cfg):
    """The model's :class:`~robustart.model_zoo.ModelMetadata` as far as it is known before the model is built
    (input size, crop, interpolation, mean/std, family): a zoo entry's, a timm model's (its pretrained config), or
    a custom model's from ``model.input_size``... (which image folders need, to read the files at that size)."""
    from robustart import model_zoo
    from robustart.model_zoo.metadata import channel_stats

    options = plain_model_options(model_cfg)
    kind = model_kind(options)
    sizes = {k: options.get(k) for k in ("num_classes", "in_chans", "img_size")}
    if kind == "zoo":
        return model_zoo.get_metadata(options["name"], **sizes)
    if kind == "timm":
        return model_zoo.timm_metadata(options["tag"], family=options.get("family") or "cnn",
                                       name=model_label(options), **sizes, **(options.get("kwargs") or {}))  # fmt: skip
    if options.get("input_size") is None:
        raise UserError("model=custom on image files needs model.input_size=[3,H,W]: the size the images are read at")
    size = tuple(options["input_size"])
    mean, std = channel_stats(options.get("mean") or (0.0,), options.get("std") or (1.0,), size[0])
    return model_zoo.ModelMetadata(
        name=model_label(options), family=options.get("family") or "cnn", architecture=options["target"],
        num_classes=0, in_chans=size[0], input_size=size, mean=mean, std=std,
        crop_pct=float(options.get("crop_pct") or 1.0), interpolation=options.get("interpolation") or "bilinear",
    )  # fmt: skip


def build_model(model_cfg, dataset, info, weights: str, seed: int = 0):
    """A ``model=timm`` or ``model=custom`` model for ``dataset`` (one sample runs through a custom module to learn
    its classes), with its metadata: as :func:`prepare_model` gives a researcher's module to
    :func:`robustart.evaluate`. ``weights`` is the weights file, ``random`` or (timm) ``pretrained``."""
    from dataclasses import replace

    from robustart import model_zoo
    from robustart.samples import TensorDataset

    options = plain_model_options(model_cfg)
    label, family = model_label(options), options.get("family") or "cnn"
    kwargs, sha256 = options.get("kwargs") or {}, options.get("sha256")
    if model_kind(options) == "timm":
        return model_zoo.create_timm_model(
            options["tag"], family=family, weights=weights, sha256=sha256, name=label, num_classes=options.get(
                "num_classes"), in_chans=options.get("in_chans"), img_size=options.get("img_size"), **kwargs,
        )  # fmt: skip
    target = options["target"]
    factory = check_factory(options)
    try:
        with torch.random.fork_rng(devices=[]):  # a randomly initialised module is the same in every run
            torch.manual_seed(seed)
            module = factory(**kwargs)
    except Exception as err:  # the user's factory: its failure is theirs to see
        raise UserError(
            f"model.target={target} failed when called with {kwargs}: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(module, nn.Module):
        raise UserError(f"model.target={target} returned a {type(module).__name__}, not an nn.Module")
    source = None
    if weights != "random":
        source = model_zoo.load_weights_file(module, weights, sha256)
    in_memory = isinstance(dataset, TensorDataset)  # else read from files at the model's size and crop
    given = {k: options.get(k) for k in ("input_size", "mean", "std", "crop_pct", "interpolation")}
    model, _ = wrap_module(module, dataset, info, {**given, "name": label, "family": family}, in_memory=in_memory)
    meta = replace(model.metadata, architecture=target)
    if not in_memory:  # the crop and interpolation the files were read with
        read = model_metadata(options)
        meta = replace(meta, crop_pct=read.crop_pct, interpolation=read.interpolation)
    if source is not None:
        meta = meta.with_weights(*source)
    model.metadata = meta
    return model
