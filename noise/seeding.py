"""Per-sample randomness: seeds derived from (seed, sample_id, condition), independent of batching."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, stable across processes and Python versions."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SampleRNG:
    """One generator per sample, seeded from ``(seed, sample_id, *condition)``.

    Draws are stacked along a new batch dimension, so the noise an image gets does not depend on
    which other images share its batch, the batch size, or the number of workers or GPUs.
    """

    def __init__(self, seed: int, sample_ids: Sequence[int], *condition: object, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [
            torch.Generator(device=self.device).manual_seed(derive_seed(seed, int(i), *condition)) for i in sample_ids
        ]

    def rand(self, shape: Sequence[int]) -> torch.Tensor:
        """Uniform [0, 1) draws, shape ``(batch, *shape)``."""
        return torch.stack([torch.rand(tuple(shape), generator=g, device=self.device) for g in self.generators])

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """Standard normal draws, shape ``(batch, *shape)``."""
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.device) for g in self.generators])

    def poisson(self, rates: torch.Tensor) -> torch.Tensor:
        """Poisson draws with the given per-element rates, shape ``rates.shape`` (batch first)."""
        return torch.stack([torch.poisson(r, generator=g) for r, g in zip(rates, self.generators, strict=True)])
