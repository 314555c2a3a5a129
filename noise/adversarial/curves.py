"""Accuracy vs. attack steps from one run of an iterative attack (ARES's second robustness curve).

torchattacks' PGD, PGD-L2 and MIM call the model exactly once per step, on the current iterate, before
moving it. :class:`StepRecorder` wraps the model and notes, at every call, which samples are still
classified correctly: call ``k`` (from 0) sees the iterate after ``k`` steps. The attack's output (after
all ``steps`` steps) is scored by the run itself, so the curve's last point comes from the predictions and
equals the run's ``robust_acc``. Point 0 is the attack's starting point: the clean image, or PGD's random
start.

Turned on per attack with ``noise.iteration_curve=true`` (``pgd_linf``, ``pgd_l2``, ``mim``); the noise records
the per-step correctness (``step_records``), and the evaluation turns it into ``robust_acc_vs_steps`` rows with the
number of steps in ``severity`` (see :mod:`robustart.evaluation.noise_rows`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustart.noise.adversarial.attack_base import TorchattacksNoise
from robustart.noise.adversarial.per_sample import ModelWrapper
from robustart.noise.base import Condition


class StepRecorder(ModelWrapper):
    """A model wrapper recording, at every forward call on the batch, whether each prediction is the label."""

    def __init__(self, model: nn.Module, labels: torch.Tensor) -> None:
        super().__init__(model)
        self.labels = labels
        self.calls: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        if logits.shape[0] == self.labels.shape[0]:
            self.calls.append((logits.detach().argmax(dim=1) == self.labels).cpu())
        return logits

    def correct(self) -> torch.Tensor:
        """Boolean ``(samples, calls)``: column ``k`` is the correctness at the ``k``-th call."""
        if not self.calls:
            return torch.zeros(self.labels.shape[0], 0, dtype=torch.bool)
        return torch.stack(self.calls, dim=1)


class IterationCurveNoise(TorchattacksNoise):
    """A :class:`~robustart.noise.adversarial.TorchattacksNoise` that also records the accuracy after every step of
    its (iterative) attack, for the ``robust_acc_vs_steps`` rows. Its adversarial examples are the same."""

    recorded = ("passes_used", "step_records")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step_records: dict[Condition, list[tuple[np.ndarray, np.ndarray]]] = {}

    def apply(self, images, labels, sample_ids, condition, model=None):
        if model is None or condition.eps == 0:
            return super().apply(images, labels, sample_ids, condition, model)
        recorder = StepRecorder(model, labels)
        adv = super().apply(images, labels, sample_ids, condition, recorder)
        ids = sample_ids.detach().cpu().numpy().astype(np.int64)
        self.step_records.setdefault(condition, []).append((ids, recorder.correct().numpy()))
        return adv

    def step_correct(self, condition: Condition) -> tuple[np.ndarray, np.ndarray]:
        """``(sample_ids, correct)`` with ``correct[:, k]`` = still correct at the ``k``-th model call, i.e. after
        ``k`` steps (the attack's output, after all steps, is scored by the run, not here)."""
        parts = self.step_records[condition]
        if len({c.shape[1] for _, c in parts}) != 1:
            raise ValueError(f"attack {self.name!r} called the model a varying number of times per batch")
        ids = np.concatenate([i for i, _ in parts])
        correct = np.concatenate([c for _, c in parts])
        _, last = np.unique(ids[::-1], return_index=True)  # a sample attacked twice: keep its latest record
        keep = np.sort(len(ids) - 1 - last)
        return ids[keep], correct[keep]
