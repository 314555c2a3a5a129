"""One's own class folders (``data=folder``), CIFAR-10/100 in its two layouts (``data=cifar10``) and the released
CIFAR-10-C arrays (``data=cifar10_c``), run in-process through ``run(cfg)`` on files the tests write: foolbox's 20
CIFAR-10 test images (file names carry the label) and, where present, the shared JPEG copy of CIFAR-10."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustart import store
from robustart.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from robustart.errors import UserError
from robustart.run import run
from tests.conftest import REPO, compose_config, run_dirs, write_photo_folder

CIFAR_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpeg"
RESNET = ["model=cifar_resnet18", "model.weights=pretrained", "data.num_workers=0"]


def foolbox_cifar10() -> tuple[np.ndarray, list[int]]:
    """foolbox's 20 CIFAR-10 test images (uint8 NHWC) and their labels (the last field of each file name)."""
    from importlib.util import find_spec

    from PIL import Image

    package = Path(find_spec("foolbox").submodule_search_locations[0])  # its data, without importing it
    files = sorted((package / "data").glob("cifar10_*.png"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return images, [int(f.stem.split("_")[-1]) for f in files]


def write_class_folders(root: Path, images: np.ndarray, labels: list[int]) -> list[str]:
    """``root/<class>/<index>.png`` for each image; returns each image's path relative to ``root``."""
    from PIL import Image

    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / CIFAR10_CLASSES[label] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(path.relative_to(root).as_posix())
    return paths


def write_torchvision_cifar10(root: Path, images: np.ndarray, labels: list[int]) -> Path:
    """``root/cifar-10-batches-py/`` with ``test_batch`` and ``batches.meta`` in the official pickled format."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    pixels = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # channels first, rows of 3072
    batch = {"batch_label": "testing batch 1 of 1", "labels": list(labels), "data": pixels,
             "filenames": [f"{i}.png" for i in range(len(labels))]}  # fmt: skip
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10000, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def resnet_predictions(images: np.ndarray) -> torch.Tensor:
    """The packaged CIFAR-10 ResNet-18 run directly on uint8 NHWC images: softmax probabilities."""
    from robustart import model_zoo

    model = model_zoo.create_model("cifar_resnet18", weights="pretrained").eval()
    with torch.no_grad():
        return model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).softmax(1)


def tables(result) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``(metrics, predictions, manifest)`` of a finished run."""
    assert store.is_done(result.run_dir)
    return store.read_run(result.run_dir)


# ------------------------------------------------------------------------------------------------ data=folder


def folder_training(root: Path, train: Path) -> list[str]:
    """A small CNN trained briefly on ``train``'s class folders and evaluated on ``root``'s."""
    return ["model=small_cnn", "training=standard", "training.epochs=1", "training.batch_size=8", "data=folder",
            f"data.root={root}", f"data.train_root={train}", "data.num_workers=0", "noise=clean"]  # fmt: skip


@pytest.mark.trains
def test_folder_trains_a_zoo_model_and_names_each_file(tmp_path, workspace):
    images, labels = foolbox_cifar10()
    root, train = tmp_path / "photos", tmp_path / "train"
    paths = write_class_folders(root, images, labels)
    write_class_folders(train, images, labels)
    (root / "notes.txt").write_text("not an image: files beside the class folders are ignored")
    (root / "cat" / "broken.png").write_bytes(b"not a png")  # evaluating: skipped and counted
    (train / "cat" / "broken.png").write_bytes(b"not a png")  # training: a fixed batch cannot drop it
    with pytest.raises(UserError, match=r"unreadable training image .*train/cat/broken\.png"):
        run(compose_config(folder_training(root, train)))
    (train / "cat" / "broken.png").unlink()
    result = run(compose_config(folder_training(root, train)))
    _, predictions, manifest = tables(result)
    classes = sorted({CIFAR10_CLASSES[k] for k in labels})  # 8 of the 10 classes, labelled in sorted order
    assert manifest["data"]["classes"] == classes and manifest["data"]["num_classes"] == 8
    assert manifest["data"]["skipped_unreadable"] == 1 and manifest["model"]["num_classes"] == 8
    assert manifest["model"]["in_chans"] == 3
    by_path = predictions.set_index("path")
    assert sorted(by_path.index) == sorted(paths)
    expected = {p: classes.index(CIFAR10_CLASSES[k]) for p, k in zip(paths, labels)}
    assert {p: int(by_path.loc[p, "label"]) for p in paths} == expected


@pytest.mark.trains
def test_max_samples_on_folder_data_is_class_balanced(tmp_path, workspace):
    images, labels = foolbox_cifar10()
    root, train = tmp_path / "photos", tmp_path / "train"
    write_class_folders(root, images, labels)
    write_class_folders(train, images, labels)
    result = run(compose_config([*folder_training(root, train), "evaluation.max_samples=8"]))
    _, predictions, manifest = tables(result)
    assert sorted(predictions["label"]) == list(range(8))  # one image of each of the 8 classes, not the first 8
    assert manifest["data"]["num_samples"] == 8


def test_every_file_dataset_names_its_files_relative_to_its_root(tmp_path):
    from robustart.data import load_imagenet_folder, load_shift_folder, shift_wnids
    from robustart.folders import load_imagenet_c_folder

    val = write_photo_folder(tmp_path / "val", per_class=2)
    dataset, _ = load_imagenet_folder(str(val), "val", transform=None)
    expected = ["n01440764/ILSVRC2012_val_00000001.JPEG", "n01440764/ILSVRC2012_val_00000002.JPEG",
                "n02123045/ILSVRC2012_val_00000003.JPEG", "n02123045/ILSVRC2012_val_00000004.JPEG"]  # fmt: skip
    assert dataset.sample_columns()["path"].tolist() == expected
    assert dataset.take([3, 1]).sample_columns().to_dict("list") == {"sample_id": [3, 1], "path": expected[3:0:-2]}
    assert dataset.raw(pipeline=None).subset(2).sample_columns()["path"].tolist() == [expected[0], expected[2]]

    released = tmp_path / "imagenet-c"
    for severity in (1, 2):
        write_photo_folder(released / "fog" / str(severity), per_class=1)
    conditions, _ = load_imagenet_c_folder(str(released), ["fog"], [1, 2], transform=None)
    columns = [d.sample_columns() for d in conditions.values()]
    assert columns[0].equals(columns[1])  # relative to each severity folder: the same path in every condition

    wnid = shift_wnids("imagenet_o")[0]
    write_photo_folder(tmp_path / "o", wnids=(wnid,))
    write_photo_folder(tmp_path / "in", wnids=(wnid,), per_class=3)
    sets, _ = load_shift_folder("imagenet_o", str(tmp_path / "o"), None, str(tmp_path / "in"))
    ids = [d.sample_columns()["sample_id"].tolist() for d in sets.values()]
    assert ids == [[0, 1, 2], [3, 4]]  # unique over both sets, so each row joins its own file


# ------------------------------------------------------------------------------------------------ data=cifar10


@pytest.mark.fidelity
@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason=f"the shared JPEG copy of CIFAR-10 is not at {CIFAR_JPEG}")
def test_cifar10_class_folders_of_the_jpeg_copy(workspace):
    result = run(compose_config([*RESNET, "data=cifar10", f"data.root={CIFAR_JPEG}", "noise=clean",
                                 "evaluation.max_samples=200"]))  # fmt: skip
    metrics, predictions, manifest = tables(result)
    top1 = metrics.query("metric == 'top1'")["value"].item()
    assert top1 > 0.7, top1
    assert sorted(predictions["label"].value_counts().to_dict().items()) == [(k, 20) for k in range(10)]
    first = predictions.sort_values("sample_id").iloc[0]
    assert first["path"] == "test/airplane/0000.jpg" and first["label"] == 0
    assert manifest["data"]["classes"] == list(CIFAR10_CLASSES) and any("JPEG" in n for n in manifest["data"]["notes"])


def test_cifar10_torchvision_layout_and_class_folders_give_the_same_predictions(tmp_path, workspace):
    images, labels = foolbox_cifar10()
    write_torchvision_cifar10(tmp_path / "tv", images, labels)
    paths = write_class_folders(tmp_path / "folders" / "test", images, labels)
    probs = resnet_predictions(images)

    result = run(compose_config([*RESNET, "data=cifar10", f"data.root={tmp_path / 'tv'}", "noise=clean"]))
    _, predictions, manifest = tables(result)
    predictions = predictions.sort_values("sample_id")
    assert predictions["label"].tolist() == labels and predictions["path"].isna().all()
    assert predictions["pred"].tolist() == probs.argmax(1).tolist() == labels  # 20/20, as published
    assert np.allclose(predictions["confidence"], probs.max(1).values.numpy(), atol=1e-5)
    assert any("NOT the official files" in n for n in manifest["data"]["notes"])

    result = run(compose_config([*RESNET, "data=cifar10", f"data.root={tmp_path / 'folders'}", "noise=clean"]))
    _, from_folders, _ = tables(result)
    from_folders = from_folders.set_index("path").loc[[f"test/{p}" for p in paths]]
    assert from_folders["pred"].tolist() == labels and from_folders["label"].tolist() == labels
    assert np.allclose(from_folders["confidence"], predictions["confidence"], atol=1e-6)


def test_cifar100_classes_are_its_fine_labels_in_order():
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))
    assert CIFAR100_CLASSES[:3] == ("apple", "aquarium_fish", "baby") and CIFAR100_CLASSES[-1] == "worm"
    assert CIFAR100_CLASSES[39] == "keyboard" and CIFAR100_CLASSES[58] == "pickup_truck"


# ------------------------------------------------------------------------------------------------ data=cifar10_c


def write_cifar10_c(root: Path, corruptions, images: np.ndarray, labels: list[int]) -> Path:
    """The released layout: ``<corruption>.npy`` (5 x N images, severity s darkened by s x 10 %) and
    ``labels.npy`` (the N labels repeated for each severity)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in corruptions:
        levels = [(images * (1 - s / 10)).astype(np.uint8) for s in range(1, 6)]
        np.save(root / f"{name}.npy", np.concatenate(levels))
    np.save(root / "labels.npy", np.tile(np.asarray(labels, dtype=np.int64), 5))
    return root


#: a module cheap enough that a run of 75 conditions costs little more than the engine's own work
TINY = """
from torch import nn


def build(classes=10):
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, classes))
"""


def test_cifar10_c_gives_the_corruption_rows_unnormalised(tmp_path, workspace, monkeypatch):
    from robustart.evaluation.scoring import ALEXNET_NORMALISED
    from robustart.noise.natural.params import BENCHMARK_CORRUPTIONS

    (tmp_path / "tinymodule.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    images, labels = foolbox_cifar10()
    root = write_cifar10_c(tmp_path / "CIFAR-10-C", BENCHMARK_CORRUPTIONS, images[:4], labels[:4])
    result = run(compose_config(["model=custom", "model.target=tinymodule:build", "model.input_size=[3,32,32]",
                                 "data=cifar10_c", f"data.root={root}", "data.num_workers=0",
                                 "noise=imagenet_c"]))  # fmt: skip
    metrics, predictions, manifest = tables(result)
    acc = metrics.query("metric == 'acc'")
    assert len(acc) == 75 and set(acc["n"]) == {4} and set(acc["severity"]) == {1, 2, 3, 4, 5}
    assert set(acc["condition"]) == set(BENCHMARK_CORRUPTIONS) and set(acc["noise"]) == {"imagenet_c"}
    assert "cifar10_c" not in ALEXNET_NORMALISED and "cifar10" not in ALEXNET_NORMALISED
    assert not {"ce", "mce", "relative_mce", "top1"} & set(metrics["metric"])  # no AlexNet errors off ImageNet
    mce = metrics.query("metric == 'mce_unnormalized'")["value"].item()
    assert mce == pytest.approx(100 * (1 - acc["value"]).mean())
    ids = predictions.groupby(["condition", "severity"])["sample_id"].apply(lambda v: tuple(sorted(v)))
    assert set(ids) == {(0, 1, 2, 3)} and predictions["path"].isna().all()
    assert manifest["data"]["classes"] == list(CIFAR10_CLASSES) and manifest["data"]["num_samples"] == 4


def test_cifar10_c_max_samples_is_class_balanced_with_the_same_ids_in_every_condition(tmp_path, workspace):
    images, labels = foolbox_cifar10()
    images, labels = images[[0, 8, 1, 2]], [3, 3, 8, 8]  # two cats, two ships
    root = write_cifar10_c(tmp_path / "CIFAR-10-C", ["gaussian_noise", "fog"], images, labels)
    result = run(compose_config([*RESNET, "data=cifar10_c", f"data.root={root}", "noise=imagenet_c",
                                 "noise.corruptions=[fog]", "noise.severities=[1,5]",
                                 "evaluation.max_samples=2"]))  # fmt: skip
    _, predictions, _ = tables(result)
    assert len(predictions) == 4 and set(predictions["condition"]) == {"fog"}
    assert predictions.groupby("severity")["sample_id"].apply(sorted).tolist() == [[0, 2], [0, 2]]
    fog5 = predictions.query("severity == 5").sort_values("sample_id")
    probs = resnet_predictions((images[[0, 2]] * 0.5).astype(np.uint8))  # severity 5: darkened by half
    assert fog5["label"].tolist() == [3, 8] and fog5["pred"].tolist() == probs.argmax(1).tolist()
    assert np.allclose(fog5["confidence"], probs.max(1).values.numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------------------ bad input


def _bad_batch(folder: Path) -> None:
    import os

    class Payload:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    (folder / "cifar-10-batches-py").mkdir(parents=True)
    (folder / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Payload()}))


def _layouts(tmp: Path) -> dict[str, Path]:
    """Folders that are wrong in one way each."""
    from PIL import Image

    made = {name: tmp / name for name in ("loose", "empty_class", "cifar_other", "cifar_names", "bad_pickle", "c_shape",
                                          "c_nolabels", "good")}  # fmt: skip
    for path in made.values():
        path.mkdir()
    Image.new("RGB", (8, 8)).save(made["loose"] / "a.png")
    (made["empty_class"] / "cat").mkdir()
    (made["empty_class"] / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(made["empty_class"] / "dog" / "a.png")
    Image.new("RGB", (8, 8)).save(made["good"] / "a.png")
    (made["good"] / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(made["good"] / "cat" / "a.png")
    (made["cifar_other"] / "images").mkdir()
    (made["cifar_names"] / "test" / "Airplane").mkdir(parents=True)
    _bad_batch(made["bad_pickle"])
    np.save(made["c_shape"] / "fog.npy", np.zeros((10, 32, 32), np.uint8))
    np.save(made["c_shape"] / "labels.npy", np.zeros(10, np.int64))
    np.save(made["c_nolabels"] / "fog.npy", np.zeros((10, 32, 32, 3), np.uint8))
    return made


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=folder"], "data=folder needs its images: set data.root=DIR"),
        (["data=folder", "data.root=TMP/nowhere"], "data.root=TMP/nowhere does not exist or is not a folder"),
        (["data=folder", "data.root=TMP/loose"], "data.root=TMP/loose has no class folders; expected <class>/<image>"),
        (["data=folder", "data.root=TMP/empty_class"], "1 class folder(s) hold no images (e.g. ['cat'])"),
        (
            [
                "data=folder",
                "data.root=TMP/good",
                "data.train_root=TMP/empty_class",
                "model=small_cnn",
                "training=standard",
            ],
            "data.train_root=TMP/empty_class: 1 class folder(s) hold no images",
        ),
        (["data=folder", "data.root=TMP/good", "model=small_cnn", "training=standard"], "reads data.train_root=DIR"),
        (["data=cifar10", "data.root=TMP/cifar_other"], "holds neither CIFAR-10 layout: class folders test/<class>/"),
        (
            ["data=cifar10", "data.root=TMP/cifar_names"],
            "1 folder(s) that are not CIFAR-10 classes (e.g. ['Airplane'])",
        ),
        (["data=cifar10", "data.root=TMP/cifar_names", "data.split=val"], "has the splits train and test"),
        (["data=cifar10", "data.root=TMP/bad_pickle"], "test_batch is not a CIFAR-10 batch file: posix.system is no"),
        (
            ["data=cifar10_c", "data.root=TMP/c_shape", "noise=imagenet_c", "noise.corruptions=[fog,frost]"],
            "data.root=TMP/c_shape lacks frost.npy of the released CIFAR-10-C (present corruptions: fog)",
        ),
        (["data=cifar10_c", "data.root=TMP/c_nolabels", "noise=imagenet_c"], "lacks labels.npy of the released"),
        (["data=cifar10_c", "data.root=TMP/c_shape", "noise=imagenet_c"], "fog.npy holds uint8 of shape (10, 32, 32)"),
        (["data=cifar10_c", "data.root=TMP/c_shape", "noise=clean"], "use it with noise=imagenet_c"),
        (["data=cifar10_c", "data.root=TMP/c_shape", "noise=imagenet_c", "training=standard"], "train on data=cifar10"),
        (["data=cifar10"], "data.root is not set and downloading https://www.cs.toronto.edu/~kriz/cifar-10-python"),
    ],
)
def test_bad_data_is_one_user_error_before_work(overrides, message, tmp_path, workspace, monkeypatch):
    import urllib.error

    from torchvision.datasets import cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    _layouts(tmp_path)
    results, _ = workspace
    overrides = [o.replace("TMP", str(tmp_path)) for o in overrides]
    with pytest.raises(UserError, match=re.escape(message.replace("TMP", str(tmp_path)))):
        run(compose_config(["model=cifar_resnet18", "model.weights=random", "noise=clean", *overrides]))
    assert run_dirs(results) == []
