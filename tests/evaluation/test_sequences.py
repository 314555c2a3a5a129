"""ImageNet-P evaluation: per-frame scoring in chunks, the fp / t5d / mfp / nmfp / mt5d rows, the released
video reader (on mp4 files the tests write with OpenCV) and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from robustart import store
from robustart.evaluation.metrics import flip_probability, top5_distance
from robustart.evaluation.sequences import TEST_PERTURBATIONS, _pseudo_logits, score_chunks, sequence_rows
from robustart.noise.natural.perturbations import num_frames
from robustart.noise.natural.sequences import chunked
from tests.conftest import assert_user_error, run_cli, run_dirs


def test_top5_classes_give_the_same_top5_distance_as_the_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 11, 30))
    logits[:, 1::2] += logits[:, :-1:2] * 3  # neighbouring frames alike: top 5 partly shared
    top5 = torch.from_numpy(logits).topk(5, dim=2).indices.numpy()
    for noise in (True, False):
        for difficulty in (1, 2, 3):
            expected = top5_distance(logits, noise=noise, difficulty=difficulty)
            assert top5_distance(_pseudo_logits(top5), noise=noise, difficulty=difficulty) == pytest.approx(expected)


def test_scoring_in_chunks_equals_scoring_whole_sequences():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 12))
    videos = torch.rand(4, 31, 3, 8, 8)
    whole_pred, whole_top5 = score_chunks(model, [(0, videos)], torch.device("cpu"))
    pred, top5 = score_chunks(model, chunked(videos, 4), torch.device("cpu"))
    assert np.array_equal(pred, whole_pred) and np.array_equal(top5, whole_top5) and pred.shape == (4, 31)
    logits = model(videos.reshape(-1, 3, 8, 8)).reshape(4, 31, 12)
    assert np.array_equal(pred, logits.argmax(-1).numpy())
    with pytest.raises(ValueError, match="contiguous"):
        score_chunks(model, [(0, videos[:, :4]), (5, videos[:, 5:])], torch.device("cpu"))


def _frames_table(preds: dict[str, np.ndarray], rng) -> pd.DataFrame:
    parts = []
    for name, pred in preds.items():
        videos, frames = pred.shape
        top5 = np.stack([pred, *(rng.integers(0, 50, size=(4, videos, frames)) + 100)], axis=-1)
        parts.append(pd.DataFrame({
            "noise": "imagenet_p", "condition": name, "severity": 1,
            "sample_id": np.repeat(np.arange(videos), frames), "label": 0,
            "frame": np.tile(np.arange(frames), videos), "pred": pred.reshape(-1),
            **{f"top5_{k + 1}": top5[..., k].reshape(-1) for k in range(5)},
        }))  # fmt: skip
    return pd.concat(parts, ignore_index=True).sample(frac=1, random_state=0)  # row order must not matter


def test_sequence_rows_fp_t5d_mfp_and_baseline_normalisation():
    rng = np.random.default_rng(1)
    preds = {p: rng.integers(0, 3, size=(6, 41 if p == "translate" else 31)) for p in TEST_PERTURBATIONS}
    frames = _frames_table(preds, rng)
    rows = sequence_rows(frames)
    fp = rows[rows.metric == "fp"].set_index("condition")["value"]
    for name, pred in preds.items():
        assert fp[name] == pytest.approx(flip_probability(pred, noise="noise" in name))
    assert set(rows[rows.metric == "t5d"]["condition"]) == set(TEST_PERTURBATIONS)
    mfp = rows[rows.metric == "mfp"]["value"].item()
    assert mfp == pytest.approx(np.mean([fp[p] for p in TEST_PERTURBATIONS]))
    # a baseline twice as unstable halves the normalised numbers
    baseline = rows.copy()
    baseline.loc[baseline.metric.isin(["fp", "t5d"]), "value"] *= 2
    normalised = sequence_rows(frames, baseline).set_index("metric")["value"]
    assert normalised["nmfp"] == pytest.approx(0.5) and normalised["mt5d"] == pytest.approx(0.5)
    # without all ten test perturbations there is no mean
    assert "mfp" not in set(sequence_rows(frames[frames.condition != "tilt"])["metric"])
    with pytest.raises(ValueError, match="baseline run has no fp/t5d rows"):
        sequence_rows(frames, baseline[baseline.condition != "rotate"])


def _write_video(path: Path, frames: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 1, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def _released_p(root: Path, wnids=("n01440764", "n02123045"), frames=None) -> Path:
    """An ImageNet-P layout: 224 px videos of a real photograph, shifting (translate) or noisy."""
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((300, 300)))
    rng = np.random.default_rng(0)
    for k, wnid in enumerate(wnids):
        shifted = np.stack([photo[38:262, 18 + i + k : 242 + i + k] for i in range(frames or 41)])
        _write_video(root / "translate" / wnid / f"ILSVRC2012_val_{k:08d}.mp4", shifted)
        clean = photo[38:262, 38:262].astype(float)
        noisy = [clean] + [clean + rng.normal(0, 0.03 * 255, clean.shape) for _ in range((frames or 31) - 1)]
        _write_video(
            root / "gaussian_noise" / wnid / f"ILSVRC2012_val_{k:08d}.mp4", np.clip(noisy, 0, 255).astype(np.uint8)
        )
    return root


@pytest.mark.slow
@pytest.mark.cli
def test_released_imagenet_p_videos_through_the_cli(workspace, tmp_path):
    results, _ = workspace
    root = _released_p(tmp_path / "ImageNet-P")
    base = ["model=resnet18", "model.weights=random", "noise=imagenet_p", "data=imagenet_p", f"data.root={root}",
            "noise.perturbations=[translate,gaussian_noise]", "noise.chunk=16"]  # fmt: skip
    proc = run_cli(*base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    frames = pq.read_table(run_dir / store.FRAMES_FILE).to_pandas()
    assert len(frames) == 2 * 41 + 2 * 31
    assert frames.groupby("condition")["frame"].max().to_dict() == {"translate": 40, "gaussian_noise": 30}
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    assert set(metrics["metric"]) == {"fp", "t5d"}
    fp = metrics[metrics.metric == "fp"].set_index("condition")["value"]
    for name, group in frames.groupby("condition"):
        pred = np.stack([g.sort_values("frame")["pred"].to_numpy() for _, g in group.groupby("sample_id")])
        assert fp[name] == pytest.approx(flip_probability(pred, noise=name == "gaussian_noise"))
    manifest = json.loads((run_dir / store.MANIFEST_FILE).read_text())
    assert len(manifest["noise_conditions"]) == 2

    assert_user_error(run_cli(*base[:2], "noise=clean", *base[3:5]), "use it with noise=imagenet_p")
    assert_user_error(run_cli(*base, "noise.perturbations=[rotate]"), "lacks the folder(s) ['rotate']")
    assert_user_error(run_cli(*base, "noise.perturbations=[twist]"), "unknown perturbation(s) ['twist']")
    assert_user_error(run_cli(*base, "noise.baseline_run=nope"), "noise.baseline_run=nope")
    short = _released_p(tmp_path / "short", frames=30)
    assert_user_error(run_cli(*base[:4], f"data.root={short}", *base[5:]), "has 30 frames; its perturbation has")


@pytest.mark.slow
@pytest.mark.cli
def test_imagenet_p_on_the_fly_on_fashion_mnist_with_a_baseline_run(workspace):
    """The small-scale P benchmark: sequences generated from Fashion-MNIST for a trained CNN; a second run
    normalises by the first (as a baseline model's run would)."""
    results, _ = workspace
    base = ["experiment=quickstart", "noise=imagenet_p", "training.epochs=0.02", "evaluation.max_samples=8"]
    proc = run_cli(*base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [first] = run_dirs(results)
    frames = pq.read_table(first / store.FRAMES_FILE).to_pandas()
    # 28 px images get CIFAR-10-P's schedules (auto): 21 motion-blur and 16 translate frames
    assert len(frames) == 8 * sum(num_frames(p, "cifar") for p in TEST_PERTURBATIONS) == 8 * (8 * 31 + 21 + 16)
    assert set(frames["condition"]) == set(TEST_PERTURBATIONS)
    # frame 0 of a noise sequence is the clean image: its prediction is the clean one
    preds = pq.read_table(first / store.PREDICTIONS_FILE).to_pandas().set_index("sample_id")["pred"]
    frame0 = frames[(frames.condition == "gaussian_noise") & (frames.frame == 0)].set_index("sample_id")["pred"]
    assert frame0.sort_index().tolist() == preds.sort_index().tolist()
    metrics = pq.read_table(first / store.METRICS_FILE).to_pandas()
    assert {"top1", "fp", "t5d", "mfp"} <= set(metrics["metric"])

    proc = run_cli(*base, "noise.seed=1", f"noise.baseline_run={first.name.rsplit('-', 1)[1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [second] = [d for d in run_dirs(results) if d != first]
    mine = pq.read_table(second / store.METRICS_FILE).to_pandas()
    fp = mine[mine.metric == "fp"].set_index("condition")["value"]
    base_fp = metrics[metrics.metric == "fp"].set_index("condition")["value"]
    nmfp = mine[mine.metric == "nmfp"]["value"].item()
    if (base_fp > 0).all():
        assert nmfp == pytest.approx(np.mean([fp[p] / base_fp[p] for p in TEST_PERTURBATIONS]))
    else:  # a baseline that never flips on some perturbation cannot normalise
        assert np.isnan(nmfp)
    assert {"nmfp", "mt5d"} <= set(mine["metric"])


@pytest.mark.fidelity
@pytest.mark.slow
@pytest.mark.cli
def test_imagenet_p_on_imagenet_photos_follows_the_resize_then_crop_protocol(workspace, tmp_path):
    """On ImageNet data the frames are made from the 256 px resize and centre-cropped to the model's 224."""
    from tests.conftest import write_photo_folder

    results, _ = workspace
    root = write_photo_folder(tmp_path / "val", per_class=2)
    proc = run_cli("model=efficientnet_lite0", "model.weights=pretrained", "noise=imagenet_p", "data=imagenet",
                   f"data.root={root}", "noise.perturbations=[rotate]", "noise.chunk=31")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    frames = pq.read_table(run_dir / store.FRAMES_FILE).to_pandas()
    assert len(frames) == 4 * 31
    # frame 15 (no rotation) of the 256 px image, cropped, is the model's usual 224 px input
    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas().set_index("sample_id")["pred"]
    still = frames[frames.frame == 15].set_index("sample_id")["pred"]
    assert still.sort_index().tolist() == preds.sort_index().tolist()
