"""System noise (ImageNet-S): decoders and resizers on real JPEG photographs, the swapped-in preprocessing
against the model's own, in-memory round trips, the metric rows, and the command line on a folder of real
ImageNet JPEGs with a pretrained model."""

from __future__ import annotations

import io
import json
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from robustart import store
from robustart.data import eval_transform, imagenet_wnid_index
from robustart.evaluation.system import bootstrap_spread, flip_rate, spread, system_rows
from robustart.noise import create_noise
from robustart.noise.system import DECODERS, RESIZERS, Pipeline, SystemNoise, codecs, reference_resizer
from robustart.noise.system.resize import resample_round_trip
from tests.conftest import assert_user_error, run_cli, run_dirs, write_photo_folder


def _photos() -> list[Image.Image]:
    """scikit-image's photographs, landscape, portrait and square, and one with odd sides."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    images = [Image.fromarray(p) for p in photos]
    images.append(images[1].crop((3, 0, 304, 213)).transpose(Image.Transpose.TRANSPOSE))  # 213 x 301, portrait
    return images


def _jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **{"quality": 90, **options})
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- the pipeline


@pytest.mark.fidelity
@pytest.mark.parametrize(("crop_pct", "interpolation"), [(0.875, "bicubic"), (0.9, "bilinear"), (1.0, "bicubic")])
def test_reference_combination_is_the_model_preprocessing_pixel_for_pixel(crop_pct, interpolation):
    """PIL decoding with the model's own filter gives exactly the tensors of the model's preprocessing
    (torchvision's Resize / CenterCrop / ToTensor on the PIL image), for every aspect ratio."""
    reference = eval_transform((3, 224, 224), crop_pct, interpolation)
    pipeline = Pipeline("pil", reference_resizer(interpolation), 224, crop_pct)
    for photo in _photos():
        data = _jpeg(photo)
        expected = reference(Image.open(io.BytesIO(data)).convert("RGB"))
        got = pipeline(data)
        assert got.shape == expected.shape == (3, 224, 224)
        assert torch.equal(got, expected), photo.size


def test_every_combination_makes_a_model_input():
    data = _jpeg(_photos()[4])
    for decoder in DECODERS:
        for resizer in RESIZERS:
            for square in (False, True):
                x = Pipeline(decoder, resizer, 224, 0.875, square=square)(data)
                assert x.shape == (3, 224, 224) and x.dtype == torch.float32, (decoder, resizer)
                assert x.min() >= 0 and x.max() <= 1


def test_square_resize_distorts_and_shorter_side_resize_does_not():
    """RobustART's variant squeezes a portrait photo into a square before the crop; the model's keeps its shape."""
    data = _jpeg(_photos()[4])  # 213 x 301
    kept = Pipeline("pil", "pil_bilinear", 224, 0.875)(data)
    squeezed = Pipeline("pil", "pil_bilinear", 224, 0.875, square=True)(data)
    assert not torch.equal(kept, squeezed)


def test_decoders_differ_where_they_should():
    """FFmpeg's decoder and YUV conversion differ from libjpeg-turbo's, most where chroma is subsampled;
    OpenCV applies EXIF orientation and converts CMYK differently from Pillow."""
    photo = _photos()[0]

    def gap(decoder, data):
        return np.abs(codecs.decode(decoder, data).astype(int) - codecs.decode("pil", data).astype(int)).mean()

    subsampled, full = _jpeg(photo, subsampling="4:2:0"), _jpeg(photo, subsampling="4:4:4")
    assert gap("ffmpeg", subsampled) > 0.2
    assert gap("ffmpeg", subsampled) > 2 * gap("ffmpeg", full)

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    rotated = _jpeg(photo.crop((0, 0, 300, 200)), exif=exif)
    assert codecs.decode("pil", rotated).shape == (200, 300, 3)
    assert codecs.decode("opencv", rotated).shape == (300, 200, 3)

    cmyk = _jpeg(photo.convert("CMYK"))
    assert gap("opencv", cmyk) > 0.2


def test_resizers_differ():
    data = _jpeg(_photos()[1])
    pairs = [("pil_nearest", "pil_bicubic"), ("opencv_nearest", "opencv_cubic"), ("torch_bilinear", "torch_bicubic"),
             ("torch_bilinear", "torch_bilinear_aa"), ("pil_bilinear", "opencv_linear")]  # fmt: skip
    for a, b in pairs:
        x, y = (Pipeline("pil", r, 224, 0.875)(data) for r in (a, b))
        assert (x - y).abs().mean() > 0.5 / 255, (a, b)


def test_undecodable_bytes_are_a_decode_error():
    for decoder in DECODERS:
        with pytest.raises(codecs.DecodeError):
            codecs.decode(decoder, b"\xff\xd8\xff\xe0 not really a jpeg")


def test_missing_pyav_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(ImportError, match=r"robustart\[system\]"):
        create_noise("imagenet_s", decoders=["pil", "ffmpeg"])
    create_noise("imagenet_s", decoders=["pil", "opencv", "torchvision"])  # the others need nothing extra


def test_bad_names_and_values_are_value_errors():
    for options, message in (
        ({"decoders": ["libjpeg"]}, "unknown decoder 'libjpeg'"),
        ({"resizers": ["pil_cubic"]}, "unknown resizer 'pil_cubic'"),
        ({"resizers": ["pil_nearest", "pil_nearest"]}, "twice"),
        ({"decoders": []}, "at least one decoder"),
        ({"crop_pct": 1.5}, "crop_pct must be in (0, 1]"),
        ({"codec": "webp"}, "unknown codec 'webp'"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
            create_noise("imagenet_s", **options)


# ---------------------------------------------------------------------------------------------- in memory


def _fashion(n: int = 8) -> torch.Tensor:
    from robustart.data import load_fashion_mnist

    dataset, _ = load_fashion_mnist(None, Path.home() / ".cache" / "robustart", "test")
    return torch.stack([dataset[i][0] for i in range(n)])


def test_png_round_trips_are_lossless_and_jpeg_ones_differ_by_library():
    x = _fashion()
    pixels = x.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for decoder in DECODERS:
        for image in pixels:
            assert np.array_equal(codecs.round_trip(decoder, image, "png"), image), decoder
    jpeg = {d: np.stack([codecs.round_trip(d, image, "jpeg") for image in pixels]) for d in DECODERS}
    assert not np.array_equal(jpeg["pil"], pixels)
    assert not np.array_equal(jpeg["pil"], jpeg["opencv"])  # quality 75 vs 95 by default
    assert not np.array_equal(jpeg["pil"], jpeg["ffmpeg"])


def test_in_memory_conditions_keep_shape_range_and_geometry():
    x = _fashion()
    noise = create_noise("imagenet_s", codec="png")
    ids = torch.arange(len(x))
    for cond in noise.conditions():
        y = noise.apply(x, None, ids, cond)
        assert y.shape == x.shape and y.dtype == x.dtype and y.min() >= 0 and y.max() <= 1
        assert torch.equal(y, noise.apply(x.clone(), None, ids, cond))  # deterministic, batch cache or not
        # resampled 28 -> 32 -> 28 px: close to the image (no zoom), though not equal; OpenCV's nearest
        # neighbour samples floor(x * scale), without the half-pixel offset, so it drops and doubles rows
        assert (y - x).abs().mean() < (0.2 if "opencv_nearest" in cond.name else 0.06), cond
    # PIL's nearest neighbour, up and down again, gives the pixels back: the geometry is unchanged
    image = x[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert torch.equal(resample_round_trip([image], "pil_nearest", 32)[0], x[0])
    assert not torch.equal(resample_round_trip([image], "opencv_nearest", 32)[0], x[0])


def test_in_memory_rgb_images_and_non_square_ones():
    rgb = torch.rand(2, 3, 32, 32)
    noise = create_noise("imagenet_s", decoders=["opencv"], resizers=["opencv_area"])
    assert noise.apply(rgb, None, None, noise.conditions()[0]).shape == rgb.shape
    with pytest.raises(ValueError, match="square"):
        noise.apply(torch.rand(2, 3, 32, 40), None, None, noise.conditions()[0])


# ---------------------------------------------------------------------------------------------- metrics


def _grid_predictions() -> pd.DataFrame:
    """Four samples, a reference and two combinations with known accuracies and flips."""
    rows = []
    clean_pred, labels = [0, 1, 2, 3], [0, 1, 2, 0]
    grid = {"pil/pil_nearest": [0, 1, 2, 3], "opencv/opencv_area": [0, 2, 2, 0]}
    for noise, cond, preds in [("clean", "clean", clean_pred)] + [("imagenet_s", c, p) for c, p in grid.items()]:
        for i, (p, y) in enumerate(zip(preds, labels, strict=True)):
            rows.append(dict(noise=noise, condition=cond, sample_id=i, label=y, pred=p, correct=p == y))
    return pd.DataFrame(rows)


def test_system_rows_by_hand():
    rows = system_rows(_grid_predictions()).set_index(["metric", "condition"], drop=False)
    flips = rows[rows.metric == "flip_rate"].set_index("condition")["value"].to_dict()
    assert flips == {"pil/pil_nearest": 0.0, "opencv/opencv_area": 0.5}  # samples 1 and 3 change
    by_metric = rows.set_index("metric")
    # accuracies 3/4 and 3/4 ... (pil: 0,1,2 right; opencv: 0,2,3 right)
    assert by_metric.loc["sys_mean", "value"] == pytest.approx(0.75)
    assert by_metric.loc["sys_std", "value"] == pytest.approx(0.0)
    assert by_metric.loc["sys_worst", "value"] == pytest.approx(0.75)
    assert by_metric.loc["sys_mean", "n"] == 4


def test_spread_is_the_population_std_and_the_worst():
    mean, std, worst = spread([0.7, 0.8, 0.9])
    assert mean == pytest.approx(0.8) and std == pytest.approx(np.std([0.7, 0.8, 0.9])) and worst == 0.7
    assert std < np.std([0.7, 0.8, 0.9], ddof=1)
    assert flip_rate([1, 2, 3, 4], [1, 2, 0, 0]).value == 0.5


def test_bootstrap_intervals_cover_the_values_and_shrink_with_more_samples():
    rng = np.random.default_rng(0)
    small = rng.random((200, 5)) < np.array([0.6, 0.7, 0.8, 0.75, 0.65])
    large = rng.random((5000, 5)) < np.array([0.6, 0.7, 0.8, 0.75, 0.65])
    for correct in (small, large):
        ci = bootstrap_spread(correct)
        acc = correct.mean(axis=0)
        assert ci["mean"][0] <= acc.mean() <= ci["mean"][1]
        assert ci["worst"][0] <= acc.min() + 1e-9 and acc.min() - 0.1 <= ci["worst"][1]
    width = {
        k: bootstrap_spread(c)["mean"][1] - bootstrap_spread(c)["mean"][0] for k, c in (("s", small), ("l", large))
    }
    assert width["l"] < width["s"] / 3


# ---------------------------------------------------------------------------------------------- command line


def _imagenet_folder(root: Path, n: int) -> None:
    """foolbox's labelled ImageNet val JPEGs, plus scikit-image photographs of other aspect ratios."""
    folder = Path(find_spec("foolbox").submodule_search_locations[0]) / "data"
    wnids = {i: w for w, i in imagenet_wnid_index().items()}
    for path in sorted(folder.glob("imagenet_*.jpg"))[:n]:
        label = int(path.stem.rsplit("_", 1)[1])
        (root / wnids[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / wnids[label] / path.name)
    write_photo_folder(root, per_class=1)


def _run_tables(results: Path, name: str):
    [run_dir] = [d for d in run_dirs(results) if f"-{name}-" in d.name]
    tables = [pq.read_table(run_dir / f).to_pandas() for f in (store.PREDICTIONS_FILE, store.METRICS_FILE)]
    return (*tables, json.loads((run_dir / store.MANIFEST_FILE).read_text()))


_MODEL = ["model=efficientnet_lite0", "model.weights=pretrained", "data=imagenet", "data.num_workers=2"]


@pytest.mark.slow  # CLI runs over real JPEGs, about 40 s on 2 cores
@pytest.mark.cli
def test_imagenet_s_on_a_folder_of_real_jpegs(workspace, tmp_path):
    """Every decoder with four resizers (one the model's own, bicubic) on real ImageNet JPEGs: the rows, the
    library versions, and the reference pipeline reproducing the clean run's accuracy exactly."""
    results, _ = workspace
    root = tmp_path / "val"
    _imagenet_folder(root, 6)
    resizers = ["pil_bicubic", "pil_nearest", "opencv_area", "torch_bilinear"]
    proc = run_cli(*_MODEL, f"data.root={root}", "noise=imagenet_s", f"noise.resizers=[{','.join(resizers)}]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imagenet_s" in proc.stdout and "sys_mean" in proc.stdout
    preds, metrics, manifest = _run_tables(results, "imagenet_s")
    names = {f"{d}/{r}" for d in DECODERS for r in resizers}
    assert set(preds.loc[preds.noise == "imagenet_s", "condition"]) == names
    for metric in ("acc", "flip_rate"):
        assert set(metrics.loc[metrics.metric == metric, "condition"]) == names
    acc = metrics[metrics.metric == "acc"].set_index("condition")["value"]
    by_metric = metrics[metrics.noise == "imagenet_s"].set_index("metric")
    assert by_metric.loc["sys_mean", "value"] == pytest.approx(acc.mean())
    assert by_metric.loc["sys_std", "value"] == pytest.approx(np.std(acc.to_numpy()))
    # the worst combination's accuracy, an aggregate without a condition of its own (runs whose worst differ compare)
    assert by_metric.loc["sys_worst", "value"] == acc.min() and pd.isna(by_metric.loc["sys_worst", "condition"])

    # PIL with the model's bicubic filter is the model's preprocessing: the same prediction for every image
    clean = preds[preds.noise == "clean"].set_index("sample_id")
    same = preds[preds.condition == "pil/pil_bicubic"].set_index("sample_id").loc[clean.index]
    assert (same["pred"] == clean["pred"]).all() and np.allclose(same["confidence"], clean["confidence"])
    assert metrics.loc[metrics.condition == "pil/pil_bicubic"].set_index("metric").loc["flip_rate", "value"] == 0

    report = manifest["noise_report"]["decoders"]
    assert set(report) == set(DECODERS)
    assert report["pil"]["Pillow"] and report["opencv"]["OpenCV"] and report["ffmpeg"]["PyAV"]
    assert "libjpeg_turbo" in report["torchvision"]

    plain = run_cli(*_MODEL, f"data.root={root}", "noise=clean")
    assert plain.returncode == 0, plain.stderr[-3000:]
    _, clean_metrics, _ = _run_tables(results, "clean")
    top1 = metrics[metrics.metric == "top1"]["value"].item()
    assert clean_metrics[clean_metrics.metric == "top1"]["value"].item() == top1
    assert top1 >= 5 / 10  # the six labelled ImageNet images are mostly right (the four others are not ImageNet)


@pytest.mark.slow
@pytest.mark.cli
def test_full_grid_on_real_jpegs_in_workers(workspace, tmp_path):
    """All 4 x 15 combinations, decoded in two loader workers, square resize (RobustART's variant)."""
    results, _ = workspace
    root = tmp_path / "val"
    _imagenet_folder(root, 4)
    proc = run_cli(*_MODEL, f"data.root={root}", "noise=imagenet_s", "noise.square=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds, metrics, _ = _run_tables(results, "imagenet_s")
    assert preds.loc[preds.noise == "imagenet_s", "condition"].nunique() == len(DECODERS) * len(RESIZERS) == 60
    assert len(metrics[metrics.metric == "flip_rate"]) == 60
    assert preds.groupby("condition")["sample_id"].apply(sorted).map(tuple).nunique() == 1  # every image everywhere


@pytest.mark.slow  # 18-21 s of CLI runs: keeps the fast set under 10 minutes
@pytest.mark.cli
def test_bad_system_noise_input_exits_2(workspace, tmp_path):
    results, _ = workspace
    root = write_photo_folder(tmp_path / "val", per_class=1)
    data = ["model=efficientnet_lite0", "data=imagenet", f"data.root={root}"]
    assert_user_error(run_cli(*data, "noise=imagenet_s", "noise.decoders=[pil,libjpeg]"), "unknown decoder 'libjpeg'",
                       "valid decoders: pil, opencv, torchvision, ffmpeg", results=results)  # fmt: skip
    suite = ["noise=quickstart", "noise.members.pgd_linf.steps=1"]
    assert_user_error(run_cli(*data, *suite), "cannot be a member of a suite", results=results)
    assert_user_error(
        run_cli("data=imagenet_c", f"data.root={root}", "noise=imagenet_s"), "use it with noise=imagenet_c"
    )


@pytest.mark.cli
@pytest.mark.slow  # a command line in a subprocess (its Python path hides PyAV)
def test_missing_pyav_exits_2_naming_the_extra(workspace, tmp_path):
    """A Python path on which ``import av`` fails, as on an install without the extra."""
    blocker = tmp_path / "noav"
    blocker.mkdir()
    (blocker / "av.py").write_text("raise ImportError('No module named av')\n")
    proc = run_cli("noise=imagenet_s", "noise.decoders=[ffmpeg]", "evaluation.max_samples=8",
                   env={"PYTHONPATH": str(blocker)})  # fmt: skip
    assert_user_error(proc, 'pip install "robustart[system]"', "ffmpeg")


def test_system_noise_class_is_the_registered_one():
    assert isinstance(create_noise("imagenet_s"), SystemNoise)
    assert [c.name for c in create_noise("imagenet_s").conditions()][:2] == ["pil/pil_nearest", "pil/pil_bilinear"]
