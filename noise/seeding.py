"""Per-sample randomness: seeds derived from (seed, sample_id, condition), independent of batching."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

from robustart.noise.threads import cpu_map


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, stable across processes and Python versions."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SampleRNG:
    """One generator per sample, seeded from ``(seed, sample_id, *condition)``.

    Draws are stacked along a new batch dimension, so the noise an image gets does not depend on
    which other images share its batch, the batch size, or the number of workers or GPUs.

    On the CPU, large draws run on a small thread pool (one image per task): each generator is
    single-threaded, torch releases the GIL while it fills a tensor, and every image still uses only
    its own generator, so the values are the same as drawing the images one after another.
    """

    def __init__(self, seed: int, sample_ids: Sequence[int], *condition: object, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [
            torch.Generator(device=self.device).manual_seed(derive_seed(seed, int(i), *condition)) for i in sample_ids
        ]

    def _fill(self, out: torch.Tensor, draw: Callable[[torch.Tensor, torch.Generator], object]) -> torch.Tensor:
        """Call ``draw(out[i], generator_i)`` for every image, in parallel where that pays."""
        parallel = self.device.type == "cpu" and out[0].numel() >= _PARALLEL_MIN if len(out) else False
        cpu_map(lambda i: draw(out[i], self.generators[i]), range(len(self.generators)), parallel)
        return out

    def _empty(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.empty((len(self.generators), *shape), dtype=dtype, device=self.device)

    def rand(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform [0, 1) draws, shape ``(batch, *shape)``."""
        return self._fill(self._empty(shape, dtype), lambda out, g: out.uniform_(generator=g))

    def integers(self, shape: Sequence[int], high: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """Uniform integers in ``[0, high)``, shape ``(batch, *shape)``; a small ``dtype`` keeps large draws cheap."""
        return self._fill(self._empty(shape, dtype), lambda out, g: out.random_(0, high, generator=g))

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """Standard normal draws, shape ``(batch, *shape)``."""
        return self._fill(self._empty(shape), lambda out, g: out.normal_(generator=g))


#: draws smaller than this many elements per image are not worth a thread hand-off
_PARALLEL_MIN = 1 << 14
