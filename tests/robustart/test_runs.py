"""Whole runs in-process (``run(compose_config(...))``, as the command line runs them): random weights announced,
ImageNet folders with an unreadable file, every corruption's mCE rows, and the released ImageNet-C layout."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from robustart import store
from robustart.noise.natural import BENCHMARK_CORRUPTIONS, CORRUPTIONS
from robustart.run import run
from tests.conftest import compose_config, run_dirs, write_photo_folder, write_released_imagenet_c


def test_random_weights_are_announced(workspace, capsys):
    results, _ = workspace
    run(compose_config(["model=small_cnn", "noise=clean", "data=fashion_mnist", "evaluation.max_samples=16"]))
    assert "RANDOM weights" in capsys.readouterr().out
    [run_dir] = run_dirs(results)
    frame = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    assert (frame["weights"] == "random").all()
    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 16 and (preds["weights"] == "random").all()
    assert "RANDOM" in json.loads((run_dir / store.MANIFEST_FILE).read_text())["notes"][0]


@pytest.mark.slow
def test_card_command_on_real_photos_with_an_unreadable_file(workspace, tmp_path, caplog):
    results, _ = workspace
    root = write_photo_folder(tmp_path / "val")
    (root / "n01440764" / "ILSVRC2012_val_00000099.JPEG").write_bytes(b"this is not a jpeg")
    run(
        compose_config(
            [
                "model=vit_b",
                "noise=imagenet_c",
                "data=imagenet",
                f"data.root={root}",
                "model.weights=random",
                "noise.corruptions=[gaussian_noise,contrast]",
                "noise.severities=[1,5]",
            ]
        )
    )  # fmt: skip  (the data loader's 4 workers decode)
    assert "1 unreadable image(s) were skipped" in caplog.text
    [run_dir] = run_dirs(results)
    manifest = json.loads((run_dir / store.MANIFEST_FILE).read_text())
    assert manifest["data"]["skipped_unreadable"] == 1 and manifest["data"]["num_samples"] == 5
    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 4 * (1 + 4)
    assert set(preds["label"]) == {0, 281}  # n01440764 (tench) and n02123045 (tabby) in ImageNet-1k order
    assert preds["path"].str.fullmatch(r"n0\d{7}/ILSVRC2012_val_\d{8}\.JPEG").all()


@pytest.mark.slow
def test_all_corruptions_on_imagenet_layout_write_the_mce_rows(workspace, tmp_path):
    root = write_photo_folder(tmp_path / "val", per_class=1)
    result = run(compose_config(["model=resnet18", "model.weights=random", "noise=imagenet_c", "data=imagenet",
                                 f"data.root={root}"]))  # fmt: skip
    metrics = pq.read_table(result.run_dir / store.METRICS_FILE).to_pandas()
    acc = metrics[metrics.metric == "acc"]
    assert len(acc) == 19 * 5 and set(acc["condition"]) == set(CORRUPTIONS)
    assert len(metrics[metrics.metric == "ce"]) == 19
    for metric in ("mce", "relative_mce", "mce_unnormalized", "mean_acc"):
        assert len(metrics[metrics.metric == metric]) == 1, metric
    benchmark = acc[acc.condition.isin(BENCHMARK_CORRUPTIONS)]["value"]
    assert metrics.loc[metrics.metric == "mean_acc", "value"].item() == pytest.approx(benchmark.mean())
    assert set(metrics.loc[metrics.metric.isin(["mce", "ce"]), "unit"]) == {"percent"}


def test_released_imagenet_c_folder(workspace, tmp_path):
    root = write_released_imagenet_c(tmp_path / "ImageNet-C", write_photo_folder(tmp_path / "photos"))
    result = run(compose_config(["model=resnet18", "model.weights=random", "noise=imagenet_c", "data=imagenet_c",
                                 f"data.root={root}", "noise.severities=[1,3]"]))  # fmt: skip
    preds = pq.read_table(result.run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 2 * 2 * 4 and set(preds["condition"]) == {"contrast", "fog"}
    # an image keeps its sample id in every condition, so conditions join per sample
    assert preds.groupby("sample_id").size().eq(4).all() and preds["sample_id"].nunique() == 4
    metrics = pq.read_table(result.run_dir / store.METRICS_FILE).to_pandas()
    assert set(metrics["metric"]) == {"acc"} and set(metrics["severity"]) == {1, 3}
