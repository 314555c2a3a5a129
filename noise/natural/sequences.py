"""``noise=imagenet_p``: ImageNet-P perturbation sequences as a noise of the registry.

Unlike the other noises, a condition (a perturbation at a difficulty) turns each image into a sequence of
frames, which the sequence evaluator (:mod:`robustart.evaluation.sequences`) scores chunk by chunk. The frames are
generated from clean images by :mod:`robustart.noise.natural.perturbations`, or read from the released videos with
``data=imagenet_p``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from robustart.noise.base import Condition
from robustart.noise.options import ImagenetPOptions
from robustart.noise.registry import register_noise


class SequenceNoise:
    """ImageNet-P perturbations x difficulties; each condition maps a batch to its frame sequences."""

    sequences = True  # the run scores frames (evaluation.sequences), not single images
    needs_model = False

    def __init__(
        self, name: str, perturbations: Sequence[str], difficulties: Sequence[int], seed: int, chunk: int,
        baseline_run: str | None, params: str = "auto",
    ) -> None:  # fmt: skip
        from robustart.noise.natural.perturbations import NOISE_PERTURBATIONS, P_PARAMETER_SETS, P_PERTURBATIONS

        if params != "auto" and params not in P_PARAMETER_SETS:
            raise ValueError(
                f"noise {name!r}: unknown parameter set {params!r}; valid: auto, {', '.join(P_PARAMETER_SETS)}"
            )
        self.params = params

        unknown = [p for p in perturbations if p not in P_PERTURBATIONS]
        if unknown or not perturbations:
            raise ValueError(
                f"noise {name!r}: unknown perturbation(s) {unknown or '(none given)'}; "
                f"valid: {', '.join(P_PERTURBATIONS)}"
            )
        bad = [d for d in difficulties if isinstance(d, bool) or d not in (1, 2, 3)]
        if bad or not difficulties:
            raise ValueError(f"noise {name!r}: difficulties must be among 1, 2, 3, got {list(difficulties)}")
        if chunk < 1:
            raise ValueError(f"noise {name!r}: chunk (frames per forward pass) must be >= 1, got {chunk}")
        self.name, self.seed, self.chunk, self.baseline_run = name, seed, chunk, baseline_run
        #: side of the centre crop cut from every frame after the geometric perturbations (``None``: no crop).
        #: On ImageNet the run sets it to the model's size and feeds the uncropped resize, as the original.
        self.crop: int | None = None
        self.perturbations, self.difficulties = list(perturbations), list(difficulties)
        self._noise = NOISE_PERTURBATIONS

    def conditions(self) -> list[Condition]:
        """One condition per perturbation and difficulty (``severity`` holds the difficulty)."""
        return [Condition(self.name, p, severity=d) for p in self.perturbations for d in self.difficulties]

    def chunks(
        self, images: torch.Tensor, condition: Condition, sample_ids: torch.Tensor
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """The frames of each image's sequence, ``chunk`` frames at a time: ``(start, (B, T, C, H, W))``.

        For the noise perturbations the difficulty sets the noise strength; the others are generated at
        difficulty 1 and their difficulty is the step between compared frames (as in the original).
        """
        from robustart.noise.natural.perturbations import iter_frames

        difficulty = condition.severity if condition.name in self._noise else 1
        ids = [int(i) for i in sample_ids]
        return iter_frames(
            images,
            condition.name,
            difficulty=difficulty,
            seed=self.seed,
            sample_ids=ids,
            chunk=self.chunk,
            crop=self.crop,
            params=self.params,
        )


def chunked(videos: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """A batch of decoded videos ``(B, T, C, H, W)`` as ``(start, frames)`` chunks of ``chunk`` frames."""
    for start in range(0, videos.shape[1], chunk):
        yield start, videos[:, start : start + chunk]


@register_noise(options=ImagenetPOptions)
def imagenet_p(opts: ImagenetPOptions) -> SequenceNoise:
    """ImageNet-P perturbation sequences (the 10 test perturbations by default), scored frame by frame."""
    from robustart.noise.natural.perturbations import P_TEST

    return SequenceNoise("imagenet_p", list(opts.perturbations or P_TEST), list(opts.difficulties), opts.seed,
                         opts.chunk, opts.baseline_run, opts.params)  # fmt: skip
