"""The rows a noise adds to a run's results, from the per-sample predictions and what the noise recorded.

Noises only record what they observe while they run (plain data in the attributes their ``recorded`` lists);
this module scores it:

- minimal-perturbation noises (``cw``, ``deepfool``, ``min_eps``): the per-sample ``min_eps`` column that the
  run joins onto ``predictions.parquet`` (:func:`sample_columns`), and the ``robust_acc_vs_eps`` and
  ``min_eps_qNN`` rows of :mod:`robustart.evaluation.curves`;
- ``wcar``: ``broken_first`` per attack and budget, the share of clean-correct images that the attack broke
  first in cascade order (identical with and without the cascade);
- ``transfer``: RobustART's ``transfer_asr`` per attack and budget (:func:`robustart.evaluation.metrics.transfer_asr`);
- attacks run with ``iteration_curve=true``: ``robust_acc_vs_steps`` (:mod:`robustart.evaluation.curves`);
- ``imagenet_s``: the rows over the decoder x resizer combinations (:mod:`robustart.evaluation.system`).

A suite gives its members' rows, in order. Other noises, and objects that are no :class:`robustart.noise.Noise`
(sequence noises), give none: ``None``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustart.evaluation.curves import curve_rows, steps_rows
from robustart.evaluation.metrics import proportion, transfer_asr
from robustart.evaluation.system import system_rows
from robustart.noise.adversarial.cascade import CLEAN, WCAR, WorstCase
from robustart.noise.adversarial.curves import IterationCurveNoise
from robustart.noise.adversarial.minimal import MinimalPerturbationNoise
from robustart.noise.adversarial.transfer import TRANSFER, TransferNoise
from robustart.noise.base import Condition, NoiseSuite
from robustart.noise.system import SystemNoise


def sample_columns(noise) -> pd.DataFrame | None:
    """Extra per-sample columns of ``noise`` (keyed by ``noise, condition, eps, sample_id``) for the run to join
    onto ``predictions.parquet``: a minimal-perturbation noise's ``min_eps``; ``None`` if the noise has none."""
    if isinstance(noise, NoiseSuite):
        parts = [c for m in noise.members.values() if (c := sample_columns(m)) is not None and len(c)]
        return pd.concat(parts, ignore_index=True) if parts else None
    if isinstance(noise, MinimalPerturbationNoise):
        return _min_eps_columns(noise)
    return None


def metric_rows(noise, predictions: pd.DataFrame | None) -> pd.DataFrame | None:
    """Extra metric rows of ``noise`` (in the columns of :func:`robustart.evaluation.metrics.aggregate_row`), from
    the finished per-sample ``predictions`` (with the :func:`sample_columns` joined on) and the noise's records;
    ``None`` if the noise adds none."""
    if isinstance(noise, NoiseSuite):
        parts = [r for m in noise.members.values() if (r := metric_rows(m, predictions)) is not None and len(r)]
        return pd.concat(parts, ignore_index=True) if parts else None
    if isinstance(noise, MinimalPerturbationNoise):
        rows = _min_eps_rows(noise, predictions)
    elif isinstance(noise, WorstCase):
        rows = _broken_first_rows(noise)
    elif isinstance(noise, TransferNoise):
        rows = _transfer_rows(noise, predictions)
    elif isinstance(noise, IterationCurveNoise):
        rows = _steps_curve_rows(noise, predictions)
    elif isinstance(noise, SystemNoise):
        rows = system_rows(predictions, noise.name)
    else:
        return None
    return None if rows is None else pd.DataFrame(rows)


# --------------------------------------------------------------------------------------- minimal budgets


def _min_eps_columns(noise: MinimalPerturbationNoise) -> pd.DataFrame | None:
    """``noise, condition, eps, sample_id, min_eps``; ``min_eps`` keeps NaN (never broken) apart from null
    (a noise that does not measure it) through to the Parquet file."""
    frames = []
    for cond, (ids, values) in noise.measured().items():
        n = len(ids)
        frames.append(pd.DataFrame({
            "noise": cond.noise,
            "condition": cond.name,
            "eps": pd.array([cond.eps] * n, dtype="Float64"),
            "sample_id": ids,
            "min_eps": pd.arrays.FloatingArray(values, np.zeros(n, dtype=bool)),
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else None


def _min_eps_rows(noise: MinimalPerturbationNoise, predictions) -> list[dict] | None:
    """``robust_acc_vs_eps`` and ``min_eps_qNN`` rows per condition, from the predictions' ``min_eps`` column
    (or the noise's own records when the table has none)."""
    if predictions is None or "min_eps" not in predictions:
        predictions = _min_eps_columns(noise)
        if predictions is None:
            return None
    return curve_rows(predictions, noise.name, points=noise.curve_points, upper=noise.curve_upper())


# ------------------------------------------------------------------------------------------- worst case


def _broken_first_rows(noise: WorstCase) -> list[dict]:
    """``broken_first`` per attack and budget, from the attack that broke each image first (``broken_by``)."""
    rows = []
    for eps, book in noise.broken_by.items():
        firsts = pd.Series(book)
        correct = firsts[firsts != CLEAN]
        for attack in noise.attacks:
            est = proportion(correct == attack.name)
            rows.append(dict(noise=WCAR, condition=attack.name, severity=None, eps=eps, metric="broken_first",
                             **est._asdict()))  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------- transfer


def _transfer_rows(noise: TransferNoise, predictions: pd.DataFrame) -> list[dict]:
    """``transfer_asr`` per condition (attack x budget), from the target's clean and adversarial rows in
    ``predictions`` and the source's clean correctness that the noise recorded (``source_correct``)."""
    clean = predictions[predictions["noise"] == "clean"].set_index("sample_id")["correct"]
    source = pd.Series(noise.source_correct, dtype=bool)
    rows = []
    mine = predictions[predictions["noise"] == TRANSFER]
    for (name, eps), group in mine.groupby(["condition", "eps"], sort=False):
        ids = group["sample_id"]
        flags = [f.reindex(ids, fill_value=False).to_numpy(bool) for f in (source, clean)]
        est = transfer_asr(*flags, group["correct"].to_numpy(bool))
        key = dict(noise=TRANSFER, condition=name, severity=None, eps=float(eps))
        rows.append(dict(key, metric="transfer_asr", **est._asdict()))
    return rows


# ------------------------------------------------------------------------------------ accuracy vs. steps


def _steps_curve_rows(noise: IterationCurveNoise, predictions) -> list[dict]:
    """``robust_acc_vs_steps`` rows of every budget attacked."""
    rows = []
    for condition in noise.step_records:
        rows += steps_rows(noise.name, condition.name, condition.eps, _step_correct(noise, condition, predictions))
    return rows


def _step_correct(noise: IterationCurveNoise, condition: Condition, predictions) -> np.ndarray:
    """The noise's per-step correctness of ``condition`` (``(samples, calls)``), with the run's scored output of
    the attack (after all steps) as a last column where ``predictions`` hold every sample of it."""
    ids, correct = noise.step_correct(condition)
    if predictions is not None and len(predictions):
        mine = (predictions["noise"] == condition.noise) & (predictions["condition"] == condition.name)
        rows = predictions[(mine & (predictions["eps"] == condition.eps)).fillna(False).astype(bool)]
        final = rows.set_index("sample_id")["correct"].reindex(ids)
        if final.notna().all():
            correct = np.column_stack([correct, final.to_numpy(dtype=bool)])
    return correct
