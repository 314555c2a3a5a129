"""Validity checks on adversarial evaluations: what a robustness number needs to be believed.

Every batch of every attack condition (a condition with an ``eps``) is checked for:

- ``outside_ball``: images perturbed by more than ``eps`` in the attack's norm;
- ``out_of_range``: pixels outside [0, 1];
- ``robust_above_clean``: more images right under attack than when clean, in one batch.

The model is checked once, on the first 16 images, for signs that gradient attacks will mislead:

- ``randomized_model``: two forward passes on the same images disagree (dropout or stochastic layers left
  on, or nondeterminism large enough to matter);
- ``zero_gradients``: images whose loss gradient is exactly zero (saturated softmax, masked gradients).

Once the run is over, each attack's results are checked for failures that look suspicious:

- ``no_image_broken``: at the attack's largest budget it broke none of at least 10 clean-correct images;
- ``not_monotone``: a larger budget left clearly more images unbroken (more than 1% of the images) than a
  smaller one.

Findings become warnings in the manifest and ``warning_<check>`` rows in ``metrics.parquet``. A warning
states a symptom; it does not stop the run.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from robustart.noise.base import Condition

#: slack for float32 rounding when comparing a perturbation's norm with its budget
_RTOL, _ATOL = 1e-5, 1e-6


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image ``norm`` (``Linf``, ``L2`` or ``L1``) of a batch of perturbations."""
    flat = delta.flatten(1).double()
    if norm == "Linf":
        return flat.abs().amax(1)
    if norm == "L2":
        return flat.norm(p=2, dim=1)
    if norm == "L1":
        return flat.abs().sum(1)
    raise ValueError(f"unknown norm {norm!r}")


def norm_of(noise, condition: Condition) -> str | None:
    """The norm of the attack behind ``condition`` (a suite dispatches to its member), or ``None``."""
    owner = getattr(noise, "members", {}).get(condition.noise, noise)
    return getattr(owner, "norm", None)


class ValidityChecks:
    """Collects the findings of the checks above over a run (see the module docstring).

    Args:
        norm_for: maps an attack condition to its norm (``None``: the budget cannot be checked).
    """

    def __init__(self, norm_for: Callable[[Condition], str | None]) -> None:
        self.norm_for = norm_for
        self.model_checked = False
        #: ``(check, Condition or None) -> [flagged count, checked count, message]``
        self.findings: dict[tuple[str, Condition | None], list] = {}

    def take_state(self) -> list:
        """The findings of attack conditions since the last call, emptied here (the once-per-run model checks
        stay): a run that commits condition by condition stores them with the condition."""
        taken = [(check, cond, *entry) for (check, cond), entry in self.findings.items() if cond is not None]
        self.findings = {key: entry for key, entry in self.findings.items() if key[1] is None}
        return taken

    def merge_state(self, state: list) -> None:
        """Add findings from :meth:`take_state` (counts summed; the first message kept)."""
        for check, cond, flagged, checked, message in state:
            self._flag(check, cond, flagged, checked, message)

    def _flag(self, check: str, cond: Condition | None, flagged: int, checked: int, message: str) -> None:
        entry = self.findings.setdefault((check, cond), [0, 0, message])
        entry[0] += flagged
        entry[1] += checked

    def check_model(self, model, images: torch.Tensor, labels: torch.Tensor, limit: int = 16) -> None:
        """The once-per-run model checks, on the first ``limit`` images of a batch."""
        self.model_checked = True
        images, labels = images[:limit], labels[:limit]
        with torch.no_grad():
            first, second = model(images).float(), model(images).float()
        if not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
            self._flag("randomized_model", None, len(images), len(images),
                       "two forward passes on the same images disagree: the model is randomised, and gradient "
                       "attacks on it need expectation over transformation to be meaningful")  # fmt: skip
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model(x).float(), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        zero = int((grad.flatten(1).abs().amax(1) == 0).sum())
        if zero:
            self._flag("zero_gradients", None, zero, len(images),
                       "images with an exactly zero loss gradient: gradient attacks cannot move them "
                       "(saturated or masked gradients), so their robustness may be overstated")  # fmt: skip

    def check_batch(self, cond: Condition, images, adv, clean_logits, adv_logits, labels) -> None:
        """The per-batch checks of one attack condition."""
        n = len(images)
        low, high = float(adv.min()), float(adv.max())
        outside = int(((adv < -_ATOL) | (adv > 1 + _ATOL)).flatten(1).any(1).sum())
        if outside:
            self._flag("out_of_range", cond, outside, n, f"pixels outside [0, 1] (seen {low:.4g} .. {high:.4g})")
        norm = self.norm_for(cond)
        if norm is not None and cond.eps is not None:
            norms = perturbation_norms(adv - images, norm)
            over = int((norms > cond.eps * (1 + _RTOL) + _ATOL).sum())
            if over:
                self._flag("outside_ball", cond, over, n, f"perturbations larger than eps={cond.eps:.6g} ({norm}); "
                           f"largest {float(norms.max()):.6g}")  # fmt: skip
        clean_right = int((clean_logits.argmax(1) == labels).sum())
        adv_right = int((adv_logits.argmax(1) == labels).sum())
        if adv_right > clean_right:
            self._flag("robust_above_clean", cond, adv_right - clean_right, n,
                       "more images right under attack than when clean in one batch: the attack helped the "
                       "model")  # fmt: skip

    def check_results(self, predictions: pd.DataFrame) -> None:
        """The end-of-run checks over each attack's budgets."""
        clean = predictions[predictions["noise"] == "clean"].set_index("sample_id")["correct"]
        attacked = predictions[predictions["eps"].notna() & (predictions["noise"] != "clean")]
        for (noise, name), group in attacked.groupby(["noise", "condition"], sort=False):
            robust = group.groupby("eps")["correct"].agg(["sum", "size"]).sort_index()
            largest = float(robust.index[-1])
            at_largest = group[group["eps"] == largest]
            right = clean.reindex(at_largest["sample_id"]).to_numpy().astype(bool)
            if right.sum() >= 10 and at_largest["correct"].to_numpy()[right].all():
                self._flag("no_image_broken", Condition(noise, name, eps=largest), int(right.sum()), int(right.sum()),
                           "the attack broke none of the clean-correct images at its largest budget: check its "
                           "settings and the model's gradients")  # fmt: skip
            counts = robust["sum"].to_numpy()
            for k in range(1, len(counts)):
                excess = int(counts[k] - counts[:k].min())
                if excess > 0.01 * robust["size"].iloc[k]:
                    eps = float(robust.index[k])
                    self._flag("not_monotone", Condition(noise, name, eps=eps), excess, int(robust["size"].iloc[k]),
                               f"{excess} more images unbroken at eps={eps:.6g} than at a smaller budget: the attack "
                               "is weaker than it should be (steps, step size, restarts)")  # fmt: skip

    def warnings(self) -> list[str]:
        """One line per finding, for the manifest and the log."""
        lines = []
        for (check, cond), (flagged, checked, message) in self.findings.items():
            where = f"{cond}: " if cond is not None else "model: "
            lines.append(f"{check}: {where}{flagged}/{checked} images: {message}")
        return lines

    def metric_rows(self) -> list[dict]:
        """``warning_<check>`` rows: the number of flagged images (``n``: images checked)."""
        from robustart.evaluation.metrics import aggregate_row

        rows = []
        for (check, cond), (flagged, checked, _) in self.findings.items():
            noise = cond.noise if cond is not None else "clean"
            name = cond.name if cond is not None else "clean"
            eps = cond.eps if cond is not None else None
            rows.append(aggregate_row(noise, f"warning_{check}", flagged, checked, condition=name, eps=eps))
        return rows
