"""Metrics of the natural-shift benchmarks, as pure functions of per-sample results.

- ImageNet-P: stability along perturbation sequences (flip probability, top-5 distance);
- ImageNet-A: calibration of the max-softmax confidence (RMS calibration error, AURRA);
- ImageNet-O: out-of-distribution detection (AUPR, AUROC, FPR at 95% TPR).
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------- ImageNet-P
#
# Stability under perturbation sequences (Hendrycks & Dietterich, 2019). A video is a sequence of frames of
# one image under a growing perturbation. For noise perturbations every frame is a fresh noise draw on the
# clean frame 0, so each frame is compared with frame 0; for the other perturbations each frame is compared
# with the one ``difficulty`` steps before it.


def _frame_pairs(frames: int, noise: bool, difficulty: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(reference, other)`` of the frame pairs compared in every video.

    With ``noise`` the pairs are ``(0, j)`` for ``j >= 1``. Otherwise they are the consecutive frames of the
    subsequences ``i, i + difficulty, i + 2 * difficulty, ...`` for each offset ``i < difficulty``: taken over
    all offsets, these are exactly the pairs ``(j, j + difficulty)``.
    """
    if frames < 2:
        raise ValueError(f"need at least 2 frames per video, got {frames}")
    if difficulty < 1:
        raise ValueError(f"difficulty must be >= 1, got {difficulty}")
    if noise:
        others = np.arange(1, frames)
        return np.zeros_like(others), others
    if difficulty >= frames:
        raise ValueError(f"difficulty {difficulty} leaves no pair of frames to compare in videos of {frames} frames")
    refs = np.arange(frames - difficulty)
    return refs, refs + difficulty


def flip_probability(predictions, *, noise: bool, difficulty: int = 1) -> float:
    """Flip probability of ImageNet-P: how often the top-1 prediction changes along a perturbation sequence.

    Per video, the number of compared frame pairs whose predictions differ over the number of compared
    pairs; then the mean over videos. Every video has the same pairs, so each counts the same.

    Args:
        predictions: integer array ``(videos, frames)`` of the predicted class (argmax) for each frame.
        noise: True for the noise perturbations (Gaussian, shot, speckle): frame 0 is the clean image and
            every later frame is compared with it. False for the others: each frame is compared with the
            frame ``difficulty`` steps earlier.
        difficulty: the stride between compared frames when ``noise`` is False (ImageNet-P uses 1, 2, 3).
            Ignored when ``noise`` is True (as in Hendrycks's code, where the harder noise sequences are
            separate videos, not a stride); it must still be >= 1.

    Returns:
        The flip probability, a fraction in [0, 1].

    Raises:
        ValueError: ``predictions`` is not 2-D, has fewer than 2 frames, ``difficulty < 1``, or (without
            ``noise``) ``difficulty`` is at least the number of frames.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be (videos, frames), got shape {predictions.shape}")
    if predictions.shape[0] == 0:
        raise ValueError("predictions hold no video")
    refs, others = _frame_pairs(predictions.shape[1], noise, difficulty)
    flips = predictions[:, refs] != predictions[:, others]
    return float(flips.mean(axis=1).mean())


def top5_distance(logits, *, noise: bool, difficulty: int = 1) -> float:
    """Top-5 distance of ImageNet-P: how much the five highest-ranked classes move along a perturbation sequence.

    For two frames with logits ``a`` (the reference) and ``b``, rank the classes of each (rank 1 = highest
    logit; ties go to the class with the lower index, as ``scipy.stats.rankdata(-a, "ordinal")``). Let
    ``sigma_k`` be the rank under ``b`` of the class ranked ``k`` under ``a``; the distance is
    ``sum_{k=1..5} |(k - 1) - min(sigma_k - 1, 5)|``. So a swap of the first two classes costs 2, and a
    top-5 class that falls out of the top 5 costs as if it had fallen to rank 6. The pairs are those of
    :func:`flip_probability` (the earlier frame, or frame 0 for noise, is the reference). Per video, the
    mean distance over its pairs; then the mean over videos.

    Args:
        logits: float array ``(videos, frames, classes)``, with at least 5 classes.
        noise: as in :func:`flip_probability`.
        difficulty: as in :func:`flip_probability`.

    Returns:
        The mean top-5 distance (0 when the top-5 ranking never changes; at most 15).

    Raises:
        ValueError: ``logits`` is not 3-D, has fewer than 5 classes or non-finite values, or the frames and
            ``difficulty`` are invalid as in :func:`flip_probability`.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (videos, frames, classes), got shape {logits.shape}")
    if logits.shape[0] == 0:
        raise ValueError("logits hold no video")
    if logits.shape[2] < 5:
        raise ValueError(f"top5_distance needs at least 5 classes, got {logits.shape[2]}")
    if not np.isfinite(logits).all():
        raise ValueError("logits must be finite")
    refs, others = _frame_pairs(logits.shape[1], noise, difficulty)
    classes = logits.shape[2]
    # order[..., k] = the class ranked k + 1; ranks[..., c] = the rank (1-based) of class c
    order = np.argsort(-logits, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, classes + 1), axis=-1)
    top5 = order[:, refs, :5]  # (videos, pairs, 5): the reference frame's five best classes
    sigma = np.take_along_axis(ranks[:, others, :], top5, axis=-1)
    distance = np.abs(np.arange(5) - np.minimum(sigma - 1, 5)).sum(axis=-1)
    return float(distance.mean(axis=1).mean())


# ---------------------------------------------------------------------------------------------- ImageNet-A
#
# Calibration of the max-softmax confidence on ImageNet-A (Hendrycks et al., 2021).


def _confidence_correct(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.ndim != 1 or correct.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-D, got shapes {confidence.shape} and {correct.shape}")
    if confidence.shape != correct.shape:
        raise ValueError(f"confidence and correct differ in length: {confidence.size} vs {correct.size}")
    if not ((confidence >= 0) & (confidence <= 1)).all():
        raise ValueError("confidence must lie in [0, 1]")
    return confidence, correct


def calibration_rms(confidence, correct, beta: int = 100) -> float:
    """RMS calibration error, as Hendrycks's ``calib_err(confidence, correct, p="2", beta=100)``.

    The samples are sorted by confidence (ascending, stable) and cut into consecutive bins of ``beta``
    samples; the ``n % beta`` left over join the last bin. The error is
    ``sqrt(sum_bins (bin size / n) * (mean confidence - accuracy)^2)``, where, as in the reference code,
    the sum runs over all bins but the last one: the most confident ``beta + n % beta`` samples never count
    (they do count in ``n``). Hence the result is 0 with fewer than ``2 * beta`` samples, and also with fewer
    than ``beta`` (no bin at all; the reference code fails there).

    Args:
        confidence: per-sample confidence (e.g. max softmax probability), floats in [0, 1].
        correct: per-sample booleans, prediction correct; same length.
        beta: target number of samples per bin.

    Returns:
        The RMS calibration error, in [0, 1].

    Raises:
        ValueError: the arrays are not 1-D or differ in length, a confidence lies outside [0, 1], or ``beta < 1``.
    """
    confidence, correct = _confidence_correct(confidence, correct)
    if beta < 1:
        raise ValueError(f"beta must be >= 1, got {beta}")
    n = confidence.size
    counted = max(n // beta - 1, 0)  # bins before the last; each holds exactly beta samples
    if counted == 0:
        return 0.0
    idx = np.argsort(confidence, kind="stable")[: counted * beta]
    conf = confidence[idx].reshape(counted, beta).mean(axis=1)
    acc = correct[idx].reshape(counted, beta).mean(axis=1)
    return float(np.sqrt(np.sum(beta / n * (conf - acc) ** 2)))


def aurra(confidence, correct) -> float:
    """Area under the response rate accuracy curve (AURRA).

    Answering only the ``k`` most confident samples gives an accuracy; AURRA is the mean of these accuracies
    over ``k = 1..n``. Samples are ordered by confidence, descending; ties keep their input order.

    Args:
        confidence: per-sample confidence, floats in [0, 1].
        correct: per-sample booleans, prediction correct; same length.

    Returns:
        AURRA, a fraction in [0, 1].

    Raises:
        ValueError: empty input, arrays not 1-D or of different lengths, or a confidence outside [0, 1].
    """
    confidence, correct = _confidence_correct(confidence, correct)
    if confidence.size == 0:
        raise ValueError("aurra needs at least one sample")
    ordered = correct[np.argsort(-confidence, kind="stable")]
    accuracy = np.cumsum(ordered) / np.arange(1, ordered.size + 1)
    return float(accuracy.mean())


# ---------------------------------------------------------------------------------------------- ImageNet-O
#
# Out-of-distribution detection (Hendrycks et al., 2021). A higher score means more anomalous, and the
# out-of-distribution samples are the positive class; ImageNet-O scores a sample by minus its max softmax
# probability, with ImageNet validation images as the in-distribution samples.


def _detection_curve(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray, int, int]:
    """True and false positives (float counts) at each distinct score, thresholds in descending order.

    Point ``k`` flags every sample scoring at least the ``k``-th highest distinct score. Returns
    ``(tps, fps, n_out, n_in)``; the last point flags everything.
    """
    in_scores = np.asarray(in_scores, dtype=np.float64)
    out_scores = np.asarray(out_scores, dtype=np.float64)
    for name, s in (("in_scores", in_scores), ("out_scores", out_scores)):
        if s.ndim != 1 or s.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array, got shape {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError(f"{name} must be finite")
    scores = np.concatenate([in_scores, out_scores])
    positive = np.concatenate([np.zeros(in_scores.size), np.ones(out_scores.size)])
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last sample of each distinct score
    tps = np.cumsum(positive)[last]
    fps = (last + 1) - tps
    return tps, fps, out_scores.size, in_scores.size


def aupr(in_scores, out_scores) -> float:
    """Area under the precision-recall curve, as average precision, with the out samples as positives.

    ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct scores in descending order, where ``P_k`` and ``R_k``
    are the precision and recall when flagging every sample scoring at least the ``k``-th score and
    ``R_0 = 0`` (the same as ``sklearn.metrics.average_precision_score(labels, scores)`` with label 1 for the
    out samples).

    Args:
        in_scores: anomaly scores of the in-distribution samples (higher = more anomalous).
        out_scores: anomaly scores of the out-of-distribution samples.

    Returns:
        The average precision, in (0, 1].

    Raises:
        ValueError: an array is empty, not 1-D, or holds non-finite scores.
    """
    tps, fps, n_out, _ = _detection_curve(in_scores, out_scores)
    precision = tps / (tps + fps)
    recall_gain = np.diff(np.r_[0.0, tps]) / n_out
    return float(np.sum(recall_gain * precision))


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve, with the out samples as positives.

    The probability that a random out sample scores above a random in sample, ties counted as half (the
    trapezoids between the ROC points at the distinct scores; equal to ``sklearn.metrics.roc_auc_score``).

    Args:
        in_scores: anomaly scores of the in-distribution samples (higher = more anomalous).
        out_scores: anomaly scores of the out-of-distribution samples.

    Returns:
        The AUROC in [0, 1]: 1 when every out sample scores above every in sample, 0 when all score below.

    Raises:
        ValueError: an array is empty, not 1-D, or holds non-finite scores.
    """
    tps, fps, n_out, n_in = _detection_curve(in_scores, out_scores)
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    # twice the area in units of (one in sample) x (one out sample): exact integer sums
    doubled = np.sum(np.diff(fps) * (tps[1:] + tps[:-1]))
    return float(doubled / (2.0 * n_in * n_out))


def fpr_at_95_tpr(in_scores, out_scores) -> float:
    """False-positive rate at 95% true-positive rate, with the out samples as positives.

    Going down the distinct scores (descending), the first threshold at which at least 95% of the out
    samples are flagged; returns the share of in samples flagged there (those scoring at least the
    threshold). This is the highest such threshold, so the lowest false-positive rate reaching that recall.

    Hendrycks's ``fpr_and_fdr_at_recall`` differs: it takes the point whose recall is closest to 0.95, and of
    equally close points the lowest threshold. That point can have a recall just below 0.95, and when several
    thresholds give the same recall (in samples scoring between two out samples) it takes the one flagging
    the most in samples, where this function takes the one flagging the fewest. With many distinct scores
    the two are close; on small or tied samples they can differ widely.

    Args:
        in_scores: anomaly scores of the in-distribution samples (higher = more anomalous).
        out_scores: anomaly scores of the out-of-distribution samples.

    Returns:
        The false-positive rate, a fraction in [0, 1].

    Raises:
        ValueError: an array is empty, not 1-D, or holds non-finite scores.
    """
    tps, fps, n_out, n_in = _detection_curve(in_scores, out_scores)
    k = int(np.argmax(tps / n_out >= 0.95))  # the last point has recall 1, so some point qualifies
    return float(fps[k] / n_in)
