"""Per-sample randomness and pass counting for library attacks.

**Why.** torchattacks and pyautoattack draw an attack's random start for the whole batch from torch's global
generator (``torch.rand(x.shape)``, ``torch.empty_like(x).uniform_()``). The start an image gets therefore
depends on which other images share its call. An attack cascade (see :mod:`robustart.noise.adversarial.cascade`)
attacks only the images still unbroken, so with batch-wide draws it could not reproduce the result of
attacking every image.

**How.** :class:`RowDraws` is a torch function mode, active only while an attack's entry point runs (a
torchattacks ``forward``, a pyautoattack ``attack_single_run``). At entry it notes the rows of the clean
images the call received. A random draw made during that call whose shape has one slice per row
(``shape[0] == rows``, same number of dimensions as the images) is then filled slice by slice, each from a
generator of its own. Each generator is seeded from the attack's seed and a hash of the image's bytes, and
kept for the whole attack, so a restarted or re-targeted run continues that image's own stream. All other
draws (shared ones, such as Square's window positions) go to the global generator as before. The library
code runs unchanged.

Draws are made on the CPU and then moved, so an image gets the same start on every device. The model
itself runs outside the mode, so its operations pay nothing for it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from robustart.noise.seeding import derive_seed

_FACTORIES = {torch.rand: "uniform", torch.randn: "normal", torch.rand_like: "uniform", torch.randn_like: "normal"}
_IN_PLACE = {torch.Tensor.uniform_: "uniform", torch.Tensor.normal_: "normal"}


def _shape_of(func, args, kwargs) -> tuple[int, ...] | None:
    if func in (torch.rand_like, torch.randn_like):
        return tuple(args[0].shape)
    size = kwargs.get("size", args)
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = size[0]
    return tuple(int(s) for s in size) if all(isinstance(s, int) for s in size) else None


def image_keys(images: torch.Tensor) -> list[str]:
    """A digest of each image's bytes: the same image gets the same key in any batch, on any device."""
    rows = images.detach().to("cpu", torch.float32).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows]


class RowDraws(TorchFunctionMode):
    """Route an attack's per-image random draws to per-image generators (see the module docstring).

    Args:
        seed: the attack's seed; an image's generator is seeded from ``(seed, image digest, occurrence)``.
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.generators: dict[tuple[str, int], torch.Generator] = {}
        self.rows: list[list[tuple[str, int]]] = []  # a stack: entry points may nest
        self.ndims: list[int] = []

    @contextmanager
    def images(self, images: torch.Tensor):
        """Within the block, draws with one slice per row of ``images`` are per-image draws."""
        seen: Counter = Counter()
        keys = []
        for key in image_keys(images):  # identical images in one call still get distinct streams
            keys.append((key, seen[key]))
            seen[key] += 1
        self.rows.append(keys)
        self.ndims.append(images.dim())
        try:
            with self if len(self.rows) == 1 else nullcontext():
                yield
        finally:
            self.rows.pop()
            self.ndims.pop()

    def _generator(self, key: tuple[str, int]) -> torch.Generator:
        if key not in self.generators:
            self.generators[key] = torch.Generator().manual_seed(derive_seed(self.seed, *key))
        return self.generators[key]

    def _draw(self, kind: str, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        out = torch.empty(shape)
        for row, key in zip(out, self.rows[-1], strict=True):
            generator = self._generator(key)
            if kind == "uniform":
                row.uniform_(low, high, generator=generator)
            else:
                row.normal_(low, high, generator=generator)
        return out

    def _matches(self, shape) -> bool:
        return shape is not None and len(shape) == self.ndims[-1] and shape[0] == len(self.rows[-1])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.rows and kwargs.get("generator") is None:
            if func in _FACTORIES:
                shape = _shape_of(func, args, kwargs)
                if self._matches(shape):
                    like = args[0] if func in (torch.rand_like, torch.randn_like) else None
                    dtype = kwargs.get("dtype") or (like.dtype if like is not None else torch.get_default_dtype())
                    device = kwargs.get("device") or (like.device if like is not None else "cpu")
                    return self._draw(_FACTORIES[func], shape).to(device=device, dtype=dtype)
            elif func in _IN_PLACE and self._matches(tuple(args[0].shape)):
                target, kind = args[0], _IN_PLACE[func]
                names = ("from", "to") if kind == "uniform" else ("mean", "std")
                low, high = (args[1 + i] if len(args) > 1 + i else kwargs.get(n, float(i)) for i, n in enumerate(names))
                with torch.no_grad():
                    return target.copy_(self._draw(kind, tuple(target.shape), low, high))
        return func(*args, **kwargs)


def _outside_modes():
    """Suspend torch function modes (the model runs at full speed inside an attack's :class:`RowDraws`)."""
    if torch.overrides._is_torch_function_mode_enabled() and isinstance(
        torch.overrides._get_current_function_mode(), RowDraws
    ):
        return torch.overrides._pop_mode_temporarily()
    return nullcontext()


def per_image_entry(draws: RowDraws, method: Callable) -> Callable:
    """``method(images, ...)`` with :meth:`RowDraws.images` around it, for installing on an attack instance."""

    def entry(images, *args, **kwargs):
        with draws.images(images):
            return method(images, *args, **kwargs)

    return entry


# ---------------------------------------------------------------------------------------------------- counting


class PassCounter:
    """Forward and backward passes through a model, counted per image and booked to the current ``stage``."""

    def __init__(self) -> None:
        self.stage = "attack"
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, kind: str, n: int) -> None:
        book = self.counts.setdefault(self.stage, {"forward": 0, "backward": 0})
        book[kind] += n

    @contextmanager
    def booking(self, stage: str):
        previous, self.stage = self.stage, stage
        try:
            yield
        finally:
            self.stage = previous


class ModelWrapper(nn.Module):
    """A wrapper that attacks can treat as the model: parameters, ``metadata`` and the train/eval mode are the
    wrapped model's, so an attack that restores "the mode it found" restores the model's own."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.metadata = getattr(model, "metadata", None)
        self.training = model.training

    def train(self, mode: bool = True):
        self.model.train(mode)
        self.training = mode
        return self


class CountingModel(ModelWrapper):
    """A model that counts the images passing through it forward and backward (through its output), and
    runs outside any :class:`RowDraws` mode."""

    def __init__(self, model: nn.Module, counter: PassCounter) -> None:
        super().__init__(model)
        self.counter = counter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        with _outside_modes():
            logits = self.model(images)
        self.counter.add("forward", n)
        if logits.requires_grad:
            logits.register_hook(lambda grad: self.counter.add("backward", n))
        return logits
