"""ImageNet-A, -O, -R, -Sketch and V2 through the command line, on small folders of real images that the
tests write: their layouts, class mappings and 200-class output masks, their metric rows, and bad input."""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from robustart import store
from robustart.data import class_mask, imagenet_wnid_index, shift_wnids
from robustart.run import run
from tests.conftest import assert_user_error, compose_config, run_cli, run_dirs, write_photo_folder


def _foolbox_imagenet() -> list[tuple[Path, int]]:
    folder = Path(find_spec("foolbox").submodule_search_locations[0]) / "data"
    return [(p, int(p.stem.rsplit("_", 1)[1])) for p in sorted(folder.glob("imagenet_*.jpg"))]


def _wnid_of(index: int) -> str:
    return next(w for w, i in imagenet_wnid_index().items() if i == index)


def _labelled_folder(root: Path, classes: list[int]) -> int:
    """foolbox's labelled ImageNet samples of ``classes`` as ``<root>/<wnid>/<file>``; returns how many."""
    n = 0
    for path, label in _foolbox_imagenet():
        if label in classes:
            dest = root / _wnid_of(label) / f"{n:03d}_{path.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
            n += 1
    return n


def _tables(results: Path):
    [run_dir] = run_dirs(results)
    return (
        pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas(),
        pq.read_table(run_dir / store.METRICS_FILE).to_pandas(),
    )


@pytest.mark.fidelity
def test_class_lists_are_the_published_ones():
    for name in ("imagenet_a", "imagenet_o", "imagenet_r"):
        wnids = shift_wnids(name)
        assert len(wnids) == len(set(wnids)) == 200 and wnids == sorted(wnids)
        mask = class_mask(name)
        assert mask == sorted(mask) and len(set(mask)) == 200 and mask[0] >= 0 and mask[-1] < 1000
    # first and last columns of the published index lists (natural-adv-examples, imagenet-r)
    assert class_mask("imagenet_a")[:6] == [6, 11, 13, 15, 17, 22] and class_mask("imagenet_a")[-2:] == [987, 988]
    assert class_mask("imagenet_o")[:6] == [1, 51, 70, 79, 89, 90] and class_mask("imagenet_o")[-2:] == [988, 996]
    assert shift_wnids("imagenet_r")[:2] == ["n01443537", "n01484850"] and shift_wnids("imagenet_r")[-1] == "n12267677"
    assert len(set(shift_wnids("imagenet_a")) & set(shift_wnids("imagenet_o"))) == 59  # as documented


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
@pytest.mark.cli
def test_masked_sets_score_a_trained_model_in_their_200_classes(workspace, tmp_path, name):
    """A real ImageNet model on real ImageNet photos of the set's classes: a wrong mask or label mapping
    would score near 0; the right ones keep the model's accuracy."""
    results, _ = workspace
    root = tmp_path / name
    n = _labelled_folder(root, class_mask(name))
    assert n >= 6
    proc = run_cli("model=efficientnet_lite0", "model.weights=pretrained", "noise=clean", f"data={name}",
                   f"data.root={root}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds, metrics = _tables(results)
    assert len(preds) == n and preds["label"].between(0, 199).all() and preds["pred"].between(0, 199).all()
    assert [shift_wnids(name)[i] for i in preds["label"]] == [p.parent.name for p in sorted(root.glob("*/*.jpg"))]
    top1 = metrics[metrics.metric == "top1"]["value"].item()
    assert top1 >= (n - 1) / n, top1
    expected = {"top1", "top5"} | ({"calib_rms", "aurra"} if name == "imagenet_a" else set())
    assert set(metrics["metric"]) == expected
    if name == "imagenet_a":
        aurra = metrics[metrics.metric == "aurra"]["value"].item()
        assert 0 <= aurra <= 1 and metrics[metrics.metric == "calib_rms"]["value"].item() == 0  # < 200 samples


@pytest.mark.slow
@pytest.mark.cli
def test_imagenet_o_detection_rows_on_real_images(workspace, tmp_path):
    """In-distribution: ImageNet photos of ImageNet-O's classes from a val folder (other classes there are
    ignored); out-of-distribution: other real photographs in ImageNet-O's layout."""
    results, _ = workspace
    val = tmp_path / "val"
    n_in = _labelled_folder(val, class_mask("imagenet_o"))
    write_photo_folder(val, wnids=("n01440764",), per_class=2)  # not an ImageNet-O class: not used
    ood = write_photo_folder(tmp_path / "imagenet-o", wnids=tuple(shift_wnids("imagenet_o")[:2]), per_class=2)
    base = ["model=efficientnet_lite0", "model.weights=pretrained", "data=imagenet_o", f"data.root={ood}"]
    proc = run_cli(*base, "noise=clean", f"data.in_root={val}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds, metrics = _tables(results)
    assert (preds["noise"] == "clean").sum() == n_in and (preds["noise"] == "ood").sum() == 4
    rows = metrics.set_index("metric")["value"]
    assert {"aupr", "auroc", "fpr95", "top1"} <= set(rows.index) and "acc" not in rows.index
    assert all(0 <= rows[m] <= 1 for m in ("aupr", "auroc", "fpr95"))
    assert (metrics[metrics.metric == "aupr"]["n"] == n_in + 4).all()

    assert_user_error(run_cli(*base, "noise=imagenet_c"), "use noise=clean")
    assert_user_error(run_cli(*base, "noise=clean"), "data.in_root=/path/to/imagenet/val")


@pytest.mark.slow  # 18-21 s of CLI runs: keeps the fast set under 10 minutes
@pytest.mark.cli
def test_folders_outside_the_200_classes_and_wrong_models_are_refused(workspace, tmp_path):
    results, _ = workspace
    root = write_photo_folder(tmp_path / "imagenet-a", wnids=("n01440764",))  # tench: not an ImageNet-A class
    assert_user_error(
        run_cli("model=resnet18", "model.weights=random", "noise=clean", "data=imagenet_a", f"data.root={root}"),
        "outside the 200 classes of imagenet_a",
        results=results,
    )
    good = write_photo_folder(tmp_path / "imagenet-r", wnids=tuple(shift_wnids("imagenet_r")[:1]))
    assert_user_error(
        run_cli(
            "model=resnet18",
            "model.weights=random",
            "model.num_classes=10",
            "noise=clean",
            "data=imagenet_r",
            f"data.root={good}",
        ),
        "use a 1000-class ImageNet model",
        results=results,
    )


@pytest.mark.slow  # 18-21 s of CLI runs: keeps the fast set under 10 minutes
@pytest.mark.cli
def test_imagenetv2_folders_are_class_indices_read_numerically(workspace, tmp_path):
    results, _ = workspace
    # as strings "10" < "2" < "999"; as class indices 2 < 10 < 999
    root = write_photo_folder(tmp_path / "imagenetv2", wnids=("10", "2", "999"), per_class=1)
    proc = run_cli("model=resnet18", "model.weights=random", "noise=clean", "data=imagenetv2", f"data.root={root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds, metrics = _tables(results)
    assert preds.sort_values("sample_id")["label"].tolist() == [2, 10, 999]
    assert set(metrics["metric"]) == {"top1", "top5"}
    (root / "n01440764").mkdir()
    assert_user_error(
        run_cli(
            "model=resnet18",
            "model.weights=random",
            "noise=clean",
            "data=imagenetv2",
            f"data.root={root}",
            "evaluation.max_samples=2",
        ),
        "class indices 0..999",
    )


def test_imagenet_sketch_reads_wnid_folders_of_the_1000_classes(workspace, tmp_path):
    results, _ = workspace
    root = write_photo_folder(tmp_path / "sketch")
    run(compose_config(["model=resnet18", "model.weights=random", "noise=clean", "data=imagenet_sketch",
                        f"data.root={root}", "data.num_workers=0"]))  # fmt: skip
    preds, _ = _tables(results)
    assert set(preds["label"]) == {0, 281}


def test_fashion_mnist_ood_detection_is_measured_on_real_data(fashion_subset_model):
    """The small-scale pair: a CNN trained on Fashion-MNIST is less confident on patches of photographs than
    on Fashion-MNIST's test images, so detection by max softmax probability beats chance."""
    import torch

    from robustart.data import photo_patches
    from robustart.evaluation.metrics import aupr, auroc, fpr_at_95_tpr

    model, x, _ = fashion_subset_model
    patches = photo_patches(len(x))
    assert patches.images.shape == (len(x), 1, 28, 28) and patches.images.float().std() > 10
    ood = torch.stack([patches[i][0] for i in range(len(patches))])
    with torch.inference_mode():
        inside, outside = (model(v).softmax(1).amax(1).numpy() for v in (x, ood))
    assert auroc(-inside, -outside) > 0.6
    assert aupr(-inside, -outside) > 0.6 and fpr_at_95_tpr(-inside, -outside) < 1


@pytest.mark.slow
@pytest.mark.cli
def test_fashion_mnist_ood_through_the_cli(workspace):
    results, _ = workspace
    base = ["experiment=quickstart", "data=fashion_mnist_ood", "training.epochs=0.02", "evaluation.max_samples=64"]
    proc = run_cli(*base, "noise=clean")
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds, metrics = _tables(results)
    assert (preds["noise"] == "clean").sum() == 64 and (preds["noise"] == "ood").sum() == 64
    assert {"top1", "aupr", "auroc", "fpr95"} <= set(metrics["metric"])
    assert_user_error(run_cli(*base), "use noise=clean")
