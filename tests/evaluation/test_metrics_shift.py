"""ImageNet-P / -A / -O metrics: hand-computed values, and scikit-learn as the reference for AUPR and AUROC."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from robustart.evaluation.metrics import (
    aupr,
    auroc,
    aurra,
    calibration_rms,
    flip_probability,
    fpr_at_95_tpr,
    top5_distance,
)

# ------------------------------------------------------------------------------------------- flip probability


def test_flip_probability_noise_compares_with_frame_0():
    preds = np.array([[0, 1, 1, 1, 1]])
    # noise: frames 1..4 against frame 0 -> all 4 differ
    assert flip_probability(preds, noise=True) == pytest.approx(1.0)
    # consecutive: (0,1) flips, (1,1) x3 do not -> 1/4
    assert flip_probability(preds, noise=False) == pytest.approx(0.25)


def test_flip_probability_difficulty_2_pools_the_offsets():
    preds = np.array([[0, 1, 0, 2, 0]])
    # offset 0: frames 0, 2, 4 = [0, 0, 0] -> 0 flips in 2 pairs; offset 1: frames 1, 3 = [1, 2] -> 1 flip in 1 pair.
    # Pooled: 1/3 (a mean of the per-offset shares would give 1/2).
    assert flip_probability(preds, noise=False, difficulty=2) == pytest.approx(1 / 3)
    # difficulty 1: all four consecutive pairs flip
    assert flip_probability(preds, noise=False, difficulty=1) == pytest.approx(1.0)
    # noise ignores the difficulty: frames 1..4 = [1, 0, 2, 0] against 0 -> 2/4
    assert flip_probability(preds, noise=True) == pytest.approx(0.5)
    assert flip_probability(preds, noise=True, difficulty=3) == pytest.approx(0.5)


def test_flip_probability_means_over_videos():
    preds = np.array([[0, 1, 1, 1, 1], [3, 3, 3, 3, 3]])
    # video 0: 1/4, video 1: 0 -> 1/8
    assert flip_probability(preds, noise=False) == pytest.approx(0.125)


@pytest.mark.parametrize(
    "preds, kwargs",
    [
        (np.zeros(5, dtype=int), dict(noise=False)),  # not 2-D
        (np.zeros((2, 1), dtype=int), dict(noise=True)),  # one frame
        (np.zeros((2, 1), dtype=int), dict(noise=False)),
        (np.zeros((2, 5), dtype=int), dict(noise=False, difficulty=0)),
        (np.zeros((2, 5), dtype=int), dict(noise=True, difficulty=0)),
        (np.zeros((2, 5), dtype=int), dict(noise=False, difficulty=5)),  # no pair
        (np.zeros((0, 5), dtype=int), dict(noise=False)),  # no video
    ],
)
def test_flip_probability_bad_input(preds, kwargs):
    with pytest.raises(ValueError):
        flip_probability(preds, **kwargs)


# ---------------------------------------------------------------------------------------------- top-5 distance

BASE = [7.0, 6, 5, 4, 3, 2, 1, 0]  # classes ranked 1..8 in index order


def test_top5_distance_identical_frames_is_zero():
    frame = np.random.default_rng(0).normal(size=10)
    logits = np.tile(frame, (2, 4, 1))
    assert top5_distance(logits, noise=True) == 0
    assert top5_distance(logits, noise=False, difficulty=2) == 0


def test_top5_distance_swap_of_the_first_two():
    swapped = [6.0, 7, 5, 4, 3, 2, 1, 0]
    # sigma = [2, 1, 3, 4, 5, ...]: |0 - 1| + |1 - 0| = 2
    assert top5_distance(np.array([[BASE, swapped]]), noise=False) == pytest.approx(2)


def test_top5_distance_class_leaving_the_top5():
    # class 4 (rank 5) and class 5 (rank 6) swap: sigma_5 = 6 -> |4 - min(5, 5)| = 1; class 5 entering the
    # top 5 is not counted, only the reference's top 5 are followed
    fifth_out = [7.0, 6, 5, 4, 2, 3, 1, 0]
    assert top5_distance(np.array([[BASE, fifth_out]]), noise=False) == pytest.approx(1)
    # the top class drops to rank 8, the others move up one: sigma = [8, 1, 2, 3, 4]
    # |0 - min(7, 5)| + |1 - 0| + |2 - 1| + |3 - 2| + |4 - 3| = 5 + 4 = 9 (uncapped it would be 11)
    top_out = [-10.0, 6, 5, 4, 3, 2, 1, 0]
    assert top5_distance(np.array([[BASE, top_out]]), noise=False) == pytest.approx(9)


def test_top5_distance_noise_vs_consecutive():
    swapped = [6.0, 7, 5, 4, 3, 2, 1, 0]
    logits = np.array([[BASE, swapped, BASE]])
    # noise: (0, 1) -> 2, (0, 2) -> 0; mean 1
    assert top5_distance(logits, noise=True) == pytest.approx(1)
    # consecutive: (0, 1) -> 2, (1, 2) -> 2 (frame 1 is the reference: its top two swap back); mean 2
    assert top5_distance(logits, noise=False) == pytest.approx(2)
    # difficulty 2: the only pair is (0, 2) -> 0
    assert top5_distance(logits, noise=False, difficulty=2) == 0


def test_top5_distance_ties_rank_by_class_index():
    # frame 0 all tied: ranks 1..6 in index order. Frame 1: class 2 on top, then classes 0, 1, 3, 4 (ties by index)
    # sigma = [2, 3, 1, 4, 5] -> |0 - 1| + |1 - 2| + |2 - 0| = 4
    logits = np.array([[[0.0] * 6, [0, 0, 1, 0, 0, 0]]])
    assert top5_distance(logits, noise=False) == pytest.approx(4)


def _top5_reference(logits, noise, difficulty):
    """A direct loop over videos, offsets and frames, with scipy's ordinal ranks."""
    from scipy.stats import rankdata

    step = 1 if noise else difficulty
    per_video = []
    for video in logits:
        ranks = [rankdata(-frame, method="ordinal") for frame in video]
        dists = []
        for i in range(step):
            seq = list(range(i, len(video), step))
            for a, b in itertools.pairwise(seq):
                ref = seq[0] if noise else a
                sigma = ranks[b][np.argsort(ranks[ref])]
                dists.append(sum(abs(k - min(sigma[k] - 1, 5)) for k in range(5)))
        per_video.append(np.mean(dists))
    return float(np.mean(per_video))


@pytest.mark.fidelity
@pytest.mark.parametrize("noise, difficulty", [(True, 1), (False, 1), (False, 2), (False, 3)])
def test_top5_distance_matches_a_loop_with_scipy_ranks(noise, difficulty):
    rng = np.random.default_rng(difficulty + 10 * noise)
    logits = rng.integers(0, 4, size=(3, 7, 12)).astype(float)  # many ties
    assert top5_distance(logits, noise=noise, difficulty=difficulty) == pytest.approx(
        _top5_reference(logits, noise, difficulty), abs=1e-12
    )


@pytest.mark.parametrize(
    "logits, kwargs",
    [
        (np.zeros((1, 3, 4)), dict(noise=False)),  # 4 classes
        (np.zeros((3, 10)), dict(noise=False)),  # not 3-D
        (np.zeros((1, 1, 10)), dict(noise=True)),  # one frame
        (np.zeros((1, 3, 10)), dict(noise=False, difficulty=3)),  # no pair
        (np.full((1, 3, 10), np.nan), dict(noise=False)),
    ],
)
def test_top5_distance_bad_input(logits, kwargs):
    with pytest.raises(ValueError):
        top5_distance(logits, **kwargs)


# ------------------------------------------------------------------------------------------------- calibration


def test_calibration_rms_skips_the_most_confident_bin():
    # beta=2, 6 samples -> 3 bins (given shuffled; sorted by confidence):
    #   bin 0: conf [0.2, 0.4] mean 0.3, correct [0, 1] mean 0.5 -> diff 0.2
    #   bin 1: conf [0.6, 0.8] mean 0.7, correct [1, 1] mean 1.0 -> diff 0.3
    #   bin 2: conf [0.9, 1.0], correct [0, 0]: diff 0.95, but the last bin is never counted
    # sqrt(2/6 * 0.04 + 2/6 * 0.09) = sqrt(0.26 / 6)
    conf = np.array([0.9, 0.6, 0.2, 1.0, 0.4, 0.8])
    correct = np.array([0, 1, 0, 0, 1, 1], dtype=bool)
    assert calibration_rms(conf, correct, beta=2) == pytest.approx(math.sqrt(0.26 / 6))


def test_calibration_rms_remainder_joins_the_last_bin():
    # beta=2, 5 samples -> bins [0, 2) and [2, 5): the leftover sample joins the last bin, which is skipped.
    #   bin 0: conf [0.1, 0.3] mean 0.2, correct [0, 0] -> diff 0.2, weight 2/5 (n counts all 5)
    #   samples 2, 3 (conf 0.5, 0.7, wrong: diff 0.6) are in the skipped last bin
    # sqrt(2/5 * 0.04) = sqrt(0.016); a bin of their own would add 2/5 * 0.36
    conf = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    correct = np.zeros(5, dtype=bool)
    assert calibration_rms(conf, correct, beta=2) == pytest.approx(math.sqrt(0.016))


def test_calibration_rms_default_beta():
    # 100 at 0.2 all correct (diff 0.8), 100 at 0.6 with 60 correct (diff 0), 100 at 0.99 all wrong (last bin)
    conf = np.repeat([0.2, 0.6, 0.99], 100)
    correct = np.r_[np.ones(100), np.ones(60), np.zeros(40), np.zeros(100)].astype(bool)
    order = np.random.default_rng(0).permutation(300)
    # sqrt(100/300 * 0.64)
    assert calibration_rms(conf[order], correct[order]) == pytest.approx(math.sqrt(0.64 / 3))


def test_calibration_rms_is_zero_below_two_bins():
    conf = np.full(199, 0.99)
    correct = np.zeros(199, dtype=bool)  # badly miscalibrated, yet only one bin (the skipped last one)
    assert calibration_rms(conf, correct) == 0
    assert calibration_rms(conf[:50], correct[:50]) == 0  # no bin at all
    assert calibration_rms([], []) == 0


@pytest.mark.parametrize(
    "conf, correct, beta",
    [
        ([0.5, 0.5], [True], 1),  # lengths differ
        ([0.5, 0.5], [True, False], 0),
        ([1.5, 0.5], [True, False], 1),  # not a probability
        ([np.nan, 0.5], [True, False], 1),
        ([[0.5, 0.5]], [[True, False]], 1),  # not 1-D
    ],
)
def test_calibration_rms_bad_input(conf, correct, beta):
    with pytest.raises(ValueError):
        calibration_rms(conf, correct, beta=beta)


def test_aurra_known_value():
    # by confidence: 0.9 right, 0.8 wrong, 0.7 right, 0.6 right
    # accuracies of the top k: 1, 1/2, 2/3, 3/4 -> mean (12 + 6 + 8 + 9) / 48 = 35/48
    conf = np.array([0.7, 0.9, 0.6, 0.8])
    correct = np.array([1, 1, 1, 0], dtype=bool)
    assert aurra(conf, correct) == pytest.approx(35 / 48)
    assert aurra(conf, np.ones(4, dtype=bool)) == 1
    assert aurra(conf, np.zeros(4, dtype=bool)) == 0
    # ties keep the input order: right then wrong -> (1 + 1/2) / 2; wrong then right -> (0 + 1/2) / 2
    assert aurra([0.5, 0.5], [True, False]) == pytest.approx(0.75)
    assert aurra([0.5, 0.5], [False, True]) == pytest.approx(0.25)


def test_aurra_bad_input():
    with pytest.raises(ValueError):
        aurra([], [])
    with pytest.raises(ValueError):
        aurra([0.5, 0.6], [True])


# ----------------------------------------------------------------------------------------------- OOD detection


def test_aupr_auroc_known_values():
    # descending: 0.8 out, 0.4 in, 0.35 out, 0.1 in
    # AP = 1/2 * 1 (recall 1/2 at precision 1) + 1/2 * 2/3 (recall 1 at precision 2/3) = 5/6
    # AUROC: out > in for (0.8, 0.1), (0.8, 0.4), (0.35, 0.1), not (0.35, 0.4) -> 3/4
    assert aupr([0.1, 0.4], [0.35, 0.8]) == pytest.approx(5 / 6)
    assert auroc([0.1, 0.4], [0.35, 0.8]) == pytest.approx(3 / 4)
    # a tie between an in and an out sample counts half: (1 + 1/2) / 2
    assert auroc([0.5], [0.5, 1.0]) == pytest.approx(3 / 4)
    # tied samples enter together: 1.0 -> P 1, R 1/2; 0.5 (one in, one out) -> P 2/3, R 1
    assert aupr([0.5], [0.5, 1.0]) == pytest.approx(5 / 6)


def test_fpr_at_95_tpr_known_value():
    out = np.r_[np.full(10, 3.0), np.full(9, 1.0), -1.0]
    inn = np.array([2.0, 0.0, 0.0, 0.0])
    # threshold 3: recall 10/20; 2: recall 10/20, 1 in flagged; 1: recall 19/20 = 0.95, 1 in flagged -> 1/4
    assert fpr_at_95_tpr(inn, out) == pytest.approx(0.25)


def test_fpr_at_95_tpr_takes_the_first_threshold_reaching_the_recall():
    # out scores 20..1: the threshold 2 flags 19/20 = 0.95 of them and no in sample. The next threshold, 1.5,
    # has the same recall and flags the in sample at 1.5; it is not the one taken (Hendrycks's code takes it).
    out = np.arange(20.0, 0.0, -1.0)
    assert fpr_at_95_tpr([1.5, -5.0], out) == 0
    # out scores 10..1: recall 0.9 at threshold 2 then 1.0 at threshold 1, where the in sample tied at 1 is
    # flagged too: the recall must reach 0.95, so 1/2 (the closest recall, 0.9, would give 0)
    assert fpr_at_95_tpr([1.0, -5.0], np.arange(10.0, 0.0, -1.0)) == pytest.approx(0.5)


def test_detection_sign_convention():
    rng = np.random.default_rng(0)
    inn, out = rng.uniform(0, 1, 50), rng.uniform(2, 3, 30)
    assert aupr(inn, out) == 1
    assert auroc(inn, out) == 1
    assert fpr_at_95_tpr(inn, out) == 0
    assert auroc(out, inn) == 0
    assert fpr_at_95_tpr(out, inn) == 1
    # ImageNet-O: score = -max softmax probability; confident in samples, unsure out samples -> perfect
    in_conf, out_conf = rng.uniform(0.8, 1.0, 20), rng.uniform(0.1, 0.5, 20)
    assert auroc(-in_conf, -out_conf) == 1


@pytest.mark.parametrize("seed", range(6))
def test_aupr_auroc_fpr_match_sklearn(seed):
    from sklearn import metrics  # the reference (a dev dependency)

    rng = np.random.default_rng(seed)
    n_in, n_out = rng.integers(1, 300, size=2)
    inn = np.round(rng.normal(0.0, 1.0, n_in), 1)  # rounded: many ties within and across the groups
    out = np.round(rng.normal(0.8, 1.0, n_out), 1)
    labels = np.r_[np.zeros(n_in), np.ones(n_out)]
    scores = np.r_[inn, out]
    assert aupr(inn, out) == pytest.approx(metrics.average_precision_score(labels, scores), abs=1e-12, rel=0)
    assert auroc(inn, out) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12, rel=0)
    fpr, tpr, _ = metrics.roc_curve(labels, scores, drop_intermediate=False)
    assert fpr_at_95_tpr(inn, out) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12, rel=0)


@pytest.mark.parametrize("fn", [aupr, auroc, fpr_at_95_tpr])
@pytest.mark.parametrize(
    "inn, out",
    [
        ([], [0.5]),
        ([0.5], []),
        ([0.5, np.nan], [0.5]),
        ([0.5], [np.inf]),
        ([[0.5]], [0.5]),  # not 1-D
    ],
)
def test_detection_bad_input(fn, inn, out):
    with pytest.raises(ValueError):
        fn(inn, out)
