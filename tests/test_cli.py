"""The command line, through a subprocess: help, a shrunk end-to-end run, skipping, bad input."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from robustart import store
from robustart.noise.natural import CORRUPTIONS
from tests.conftest import FAST, REPO, run_cli, run_dirs, write_photo_folder


def test_help_lists_groups_and_options():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for line in ["model: ", "noise: ", "data: ", "training: ", "evaluation: ", "experiment: ", "logger: "]:
        assert line in proc.stdout
    assert "vit_b" in proc.stdout and "imagenet_c" in proc.stdout and "quickstart" in proc.stdout
    launchers = sorted(p.stem for p in (REPO / "conf" / "hydra" / "launcher").glob("*.yaml"))
    assert f"hydra/launcher: {', '.join(['basic', *launchers])}" in proc.stdout
    proc = run_cli("--hydra-help")
    assert proc.returncode == 0 and "hydra/launcher: basic, local, slurm" in proc.stdout


def test_end_to_end_writes_results_and_skips_a_finished_run(workspace):
    results, cache = workspace
    proc = run_cli(*FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    for name in (store.METRICS_FILE, store.PREDICTIONS_FILE, store.MANIFEST_FILE, store.DONE_FILE):
        assert (run_dir / name).is_file()
    assert "robust_acc" in proc.stdout and "gaussian_noise" in proc.stdout

    metrics = pq.read_table(run_dir / store.METRICS_FILE)
    assert metrics.schema.metadata[b"robustart_schema_version"] == str(store.SCHEMA_VERSION).encode()
    frame = metrics.to_pandas()
    system = {"flip_rate", "sys_mean", "sys_std", "sys_worst"}
    assert set(frame["metric"]) == {"top1", "top5", "robust_acc", "ar", "acc", *system}
    interval = frame[frame.metric != "sys_std"]  # a spread, not a proportion: no interval
    assert frame[frame.metric == "sys_std"]["ci_low"].isna().all()
    assert (interval["ci_low"] <= interval["value"]).all() and (interval["value"] <= interval["ci_high"]).all()
    assert len(frame[frame.metric == "acc"]) == 4 * 2 + 3 * 4 and len(frame[frame.metric == "robust_acc"]) == 3
    assert set(frame["family"]) == {"cnn"} and frame["weights"].str.startswith("robustart:").all()

    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 64 * (1 + 3 + 8 + 12)
    assert not preds.duplicated(["noise", "condition", "severity", "eps", "sample_id"]).any()

    manifest = json.loads((run_dir / store.MANIFEST_FILE).read_text())
    assert manifest["checkpoint"]["sha256"] and manifest["versions"]["torch"] and manifest["versions"]["timm"]
    assert manifest["data"]["num_samples"] == 64 and manifest["data"]["skipped_unreadable"] == 0
    assert list(cache.glob("checkpoints/*/model.safetensors"))

    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    again = run_cli(*FAST)
    assert again.returncode == 0 and "already done" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before

    # a different evaluation reuses the cached checkpoint instead of training again
    third = run_cli(*FAST, "evaluation.max_samples=32")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "reusing checkpoint" in third.stdout and "training small_cnn" not in third.stdout


def _assert_user_error(proc, *fragments, results=None):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    text = proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in text, text[-2000:]
    if results is not None:
        assert not list(results.glob("*/done"))


def test_unknown_names_list_the_valid_ones(workspace):
    _assert_user_error(run_cli("model=resnet5"), "Could not find 'model/resnet5'", "vit_b", "small_cnn")
    _assert_user_error(run_cli("noise=imagenet_x"), "Could not find 'noise/imagenet_x'", "pgd_linf")
    _assert_user_error(run_cli("data=cifar"), "Could not find 'data/cifar'", "fashion_mnist")


def test_unknown_model_name_set_directly(workspace):
    _assert_user_error(run_cli(*FAST, "model.name=resnet5"), "unknown model 'resnet5'", "small_cnn")


def test_misspelt_key_and_wrong_type(workspace):
    _assert_user_error(run_cli(*FAST, "evaluation.max_sample=3"), "max_sample")
    _assert_user_error(run_cli(*FAST, "noise.members.pgd_linf.stepz=3"), "stepz")
    _assert_user_error(run_cli(*FAST, "evaluation.batch_size=big"), "batch_size")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("noise.members.imagenet_c.severities=[0,1]", "severity must be an integer in 1..5"),
        ("noise.members.imagenet_c.severities=[6]", "severity must be an integer in 1..5"),
        ("noise.members.pgd_linf.eps=[-2/255]", "eps must be a finite number >= 0"),
        ("evaluation.max_samples=0", "max_samples must be a positive number"),
        ("noise.members.imagenet_c.corruptions=[fogg]", "unknown corruption 'fogg'"),
    ],
)
def test_bad_values(workspace, override, message):
    results, _ = workspace
    _assert_user_error(run_cli(*FAST, override), message, results=results)


def test_bad_values_on_single_noises(workspace):
    results, _ = workspace
    _assert_user_error(run_cli("noise=pgd_linf", "noise.eps=[-1]"), "eps must be", results=results)
    _assert_user_error(run_cli("noise=imagenet_c", "noise.severities=[7]"), "severity", results=results)


@pytest.mark.slow  # seven CLI runs, about 50 s on 2 cores
def test_imagenet_root_missing_empty_or_wrong_layout(workspace, tmp_path):
    results, _ = workspace
    card = ["model=vit_b", "noise=imagenet_c", "data=imagenet"]
    _assert_user_error(run_cli(*card), "data.root=/path/to/imagenet/val", results=results)
    _assert_user_error(run_cli(*card, f"data.root={tmp_path / 'nope'}"), "does not exist", results=results)
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_user_error(run_cli(*card, f"data.root={empty}"), "has no class folders", results=results)
    wrong = tmp_path / "wrong"
    (wrong / "cats").mkdir(parents=True)
    _assert_user_error(run_cli(*card, f"data.root={wrong}"), "not ImageNet-1k wnids", results=results)
    no_images = tmp_path / "no_images"
    (no_images / "n01440764").mkdir(parents=True)
    _assert_user_error(run_cli(*card, f"data.root={no_images}"), "no images", results=results)


def test_card_command_offline_without_weights_fails_fast(workspace, tmp_path):
    results, _ = workspace
    root = write_photo_folder(tmp_path / "val")
    proc = run_cli("model=vit_b", "noise=imagenet_c", "data=imagenet", f"data.root={root}")
    _assert_user_error(proc, "model.weights=", "HF_HUB_OFFLINE", results=results)


def test_fashion_mnist_root_without_files(workspace, tmp_path):
    _assert_user_error(run_cli(*FAST, f"data.root={tmp_path}"), "lacks the Fashion-MNIST files")


def _small_cnn_weights(path, num_classes=10):
    from robustart.model_zoo import create_model

    net = create_model("small_cnn", num_classes=num_classes).net
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.mark.slow
def test_checkpoint_missing_bad_sha_or_wrong_classes(workspace, tmp_path):
    results, _ = workspace
    base = ["model=small_cnn", "noise=clean", "data=fashion_mnist", "evaluation.max_samples=16"]
    _assert_user_error(
        run_cli(*base, f"model.weights={tmp_path / 'missing.safetensors'}"), "not found", results=results
    )
    good = _small_cnn_weights(tmp_path / "ten.safetensors")
    proc = run_cli(*base, f"model.weights={good}", "model.sha256=" + "0" * 64)
    _assert_user_error(proc, "sha256", results=results)
    five = _small_cnn_weights(tmp_path / "five.safetensors", num_classes=5)
    _assert_user_error(run_cli(*base, f"model.weights={five}"), "has 5 classes but the model has 10", results=results)
    torch.save({"not": "weights"}, tmp_path / "junk.pt")
    _assert_user_error(run_cli(*base, f"model.weights={tmp_path / 'junk.pt'}"), "state dict", results=results)

    ok = run_cli(*base, f"model.weights={good}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    [run_dir] = run_dirs(results)
    assert (run_dir / store.DONE_FILE).is_file()


def test_random_weights_are_announced(workspace):
    results, _ = workspace
    proc = run_cli("model=small_cnn", "noise=clean", "data=fashion_mnist", "evaluation.max_samples=16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RANDOM weights" in proc.stdout
    [run_dir] = run_dirs(results)
    frame = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    assert (frame["weights"] == "random").all()
    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 16 and (preds["weights"] == "random").all()
    assert "RANDOM" in json.loads((run_dir / store.MANIFEST_FILE).read_text())["notes"][0]


@pytest.mark.slow
def test_card_command_on_real_photos_with_an_unreadable_file(workspace, tmp_path):
    results, _ = workspace
    root = write_photo_folder(tmp_path / "val")
    (root / "n01440764" / "ILSVRC2012_val_00000099.JPEG").write_bytes(b"this is not a jpeg")
    proc = run_cli(
        "model=vit_b",
        "noise=imagenet_c",
        "data=imagenet",
        f"data.root={root}",
        "model.weights=random",
        "noise.corruptions=[gaussian_noise,contrast]",
        "noise.severities=[1,5]",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unreadable" in proc.stdout + proc.stderr
    [run_dir] = run_dirs(results)
    manifest = json.loads((run_dir / store.MANIFEST_FILE).read_text())
    assert manifest["data"]["skipped_unreadable"] == 1 and manifest["data"]["num_samples"] == 5
    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 4 * (1 + 4)
    assert set(preds["label"]) == {0, 281}  # n01440764 (tench) and n02123045 (tabby) in ImageNet-1k order


@pytest.mark.slow  # 18-21 s of CLI runs: keeps the fast set under 10 minutes
def test_wandb_logger_offline(workspace):
    results, _ = workspace
    proc = run_cli("model=small_cnn", "noise=fgsm", "data=fashion_mnist", "evaluation.max_samples=16", "logger=wandb")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [run_dir] = run_dirs(results)
    [offline] = list((run_dir / "wandb").glob("offline-run-*"))  # one offline run
    [records] = offline.glob("run-*.wandb")  # offline, config and logged values sit in wandb's record file
    assert b"max_samples" in records.read_bytes() and b"clean/clean/top1" in records.read_bytes()
    [table] = (offline / "files" / "media" / "table").glob("metrics_*.table.json")
    assert "robust_acc" in table.read_text()  # the whole metrics table
    assert list((offline / "files" / "media" / "images").glob("accuracy_by_condition_*.png"))  # the figure
    _assert_user_error(run_cli(*FAST, "logger.name=tensorboard"), "unknown logger 'tensorboard'")


@pytest.mark.slow  # 18-21 s of CLI runs: keeps the fast set under 10 minutes
def test_multirun_sweeps_two_runs(workspace):
    results, _ = workspace
    proc = run_cli("-m", *FAST, "evaluation.max_samples=16,32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = run_dirs(results)
    assert len(dirs) == 2 and all((d / store.DONE_FILE).is_file() for d in dirs)


@pytest.mark.slow
def test_all_corruptions_on_imagenet_layout_write_the_mce_rows(workspace, tmp_path):
    results, _ = workspace
    root = write_photo_folder(tmp_path / "val", per_class=1)
    proc = run_cli("model=resnet18", "model.weights=random", "noise=imagenet_c", "data=imagenet", f"data.root={root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    acc = metrics[metrics.metric == "acc"]
    assert len(acc) == 19 * 5 and set(acc["condition"]) == set(CORRUPTIONS)
    assert len(metrics[metrics.metric == "ce"]) == 19
    for metric in ("mce", "relative_mce", "mce_unnormalized"):
        assert len(metrics[metrics.metric == metric]) == 1, metric


def _released_folder(root, corruptions=("contrast", "fog"), severities=(1, 3)):
    """An ImageNet-C layout of real photographs (224 px JPEG q85 crops), as the released files are."""
    from PIL import Image

    photos = write_photo_folder(root.parent / "photos")
    for c in corruptions:
        for s in severities:
            for src in photos.glob("*/*.JPEG"):
                dest = root / c / str(s) / src.parent.name / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(src) as img:
                    img.convert("RGB").resize((224, 224)).save(dest, quality=85)
    return root


@pytest.mark.slow  # four CLI runs over a released-layout folder, about 40 s on 2 cores
def test_released_imagenet_c_folder(workspace, tmp_path):
    results, _ = workspace
    root = _released_folder(tmp_path / "ImageNet-C")
    base = ["model=resnet18", "model.weights=random", "noise=imagenet_c", "data=imagenet_c", f"data.root={root}"]
    proc = run_cli(*base, "noise.severities=[1,3]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 2 * 2 * 4 and set(preds["condition"]) == {"contrast", "fog"}
    # an image keeps its sample id in every condition, so conditions join per sample
    assert preds.groupby("sample_id").size().eq(4).all() and preds["sample_id"].nunique() == 4
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    assert set(metrics["metric"]) == {"acc"} and set(metrics["severity"]) == {1, 3}

    _assert_user_error(run_cli(*base), "lacks", "noise.severities")  # severities 2, 4, 5 are not there
    _assert_user_error(run_cli(*base[:2], "noise=clean", *base[3:]), "use it with noise=imagenet_c")
    _assert_user_error(run_cli(*base[:3], "data=imagenet_c"), "data.root=/path/to/ImageNet-C")
