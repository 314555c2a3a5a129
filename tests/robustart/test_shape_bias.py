"""Shape bias on cue-conflict images: the 16-way decision and the metrics on hand-made arrays, the stimulus reader
and its errors on folders the tests write, a run end to end in-process, the comparison and its plot, and the
published figure on the real stimuli."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from robustart import compare, cue_conflict, store
from robustart.errors import UserError
from robustart.evaluation import shape_bias
from robustart.evaluation.protocol import add_protocol
from robustart.noise import create_noise
from robustart.run import run
from tests.conftest import REPO, compose_config, render_in_chromium, run_dirs

STIMULI = REPO.parent / "shared" / "data" / "cue-conflict"
NAMES = shape_bias.categories()
# a 1000-class zoo model that is cheap at 224 px (random weights: these tests check plumbing, not the figure)
MODEL = ["model=mobilenet_v2_050", "model.weights=random", "noise=clean", "evaluation.batch_size=16"]


# ------------------------------------------------------------------------------------------ decision and metrics


def _probabilities(*hot: dict[int, float]) -> torch.Tensor:
    """One 1000-class probability row per dict of ``{class index: probability}`` (the rest spread evenly)."""
    rows = []
    for values in hot:
        row = torch.full((1000,), (1 - sum(values.values())) / (1000 - len(values)), dtype=torch.float64)
        for index, p in values.items():
            row[index] = p
        rows.append(row)
    return torch.stack(rows)


@pytest.mark.fidelity
def test_categories_and_their_imagenet_indices_follow_the_published_mapping():
    indices = shape_bias.category_indices()
    assert list(indices) == sorted(indices) and len(indices) == 16
    assert sum(len(v) for v in indices.values()) == 207
    flat = [i for v in indices.values() for i in v]
    assert len(set(flat)) == 207 and min(flat) >= 0 and max(flat) < 1000
    assert indices["airplane"] == [404] and indices["knife"] == [499] and indices["oven"] == [766]
    assert len(indices["dog"]) == 109 and len(indices["bird"]) == 49


def test_decision_is_the_category_with_the_largest_mean_probability():
    indices = shape_bias.category_indices()
    cat, dog, bird = indices["cat"], indices["dog"], indices["bird"]
    probs = _probabilities(
        {cat[0]: 0.3},  # cat's mean: about 0.3 / 6 = 0.05, far above every other category's
        {dog[0]: 0.5},  # one dog class at 0.5: its mean over 109 classes is 0.0046, below knife's 0.02
        {**{i: 0.9 / 49 for i in bird}, 404: 0.02},  # bird's mean 0.018 < airplane's 0.02 (one index)
    )
    probs[1, 499] = 0.02  # knife: one index, so its mean is 0.02
    assert [NAMES[i] for i in shape_bias.decide(probs)] == ["cat", "knife", "airplane"]
    means = shape_bias.category_probabilities(probs)
    assert means.shape == (3, 16)
    rest = 0.7 / 999  # each of the other 999 classes of the first row
    assert math.isclose(float(means[0, NAMES.index("cat")]), (0.3 + 5 * rest) / 6, rel_tol=1e-9)


def test_a_tie_goes_to_the_first_category_alphabetically():
    indices = shape_bias.category_indices()
    probs = _probabilities({indices["truck"][0]: 0.08, indices["knife"][0]: 0.01})
    probs[0, indices["truck"]] = 0.01  # truck: mean 0.01 over its 8 indices; knife: 0.01 at its one index
    probs[0, indices["airplane"]] = 0.0
    assert NAMES[int(shape_bias.decide(probs)[0])] == "knife"


def test_category_outputs_argmax_is_the_decision():
    torch.manual_seed(0)
    logits = torch.randn(32, 1000) * 3
    wrapped = shape_bias.CategoryOutputs(torch.nn.Identity())
    assert torch.equal(wrapped(logits).argmax(1), shape_bias.decide(logits.softmax(1)))


def _predictions(records) -> pd.DataFrame:
    """Per-sample rows of one clean condition from ``(shape, texture, decision)`` triples."""
    frame = pd.DataFrame(records, columns=["shape_category", "texture_category", "decision"])
    return frame.assign(noise="clean", condition="clean", severity=pd.NA, eps=np.nan)


def test_shape_bias_counts_shape_and_texture_hits_and_leaves_out_the_rest():
    records = (
        [("cat", "dog", "cat")] * 3  # shape hits
        + [("cat", "dog", "dog")] * 1  # a texture hit
        + [("cat", "bird", "knife")] * 2  # neither: out of shape bias, in the accuracies' denominators
        + [("cat", "cat", "cat")] * 5  # shape equals texture: not counted at all
        + [("dog", "cat", "cat")] * 2  # texture hits of another category
    )
    rows = shape_bias.shape_bias_rows(_predictions(records))
    overall = rows[rows["category"].isna()].set_index("metric")
    assert overall.loc["shape_bias", "value"] == pytest.approx(3 / 6) and overall.loc["shape_bias", "n"] == 6
    assert overall.loc["shape_acc", "value"] == pytest.approx(3 / 8) and overall.loc["shape_acc", "n"] == 8
    assert overall.loc["texture_acc", "value"] == pytest.approx(3 / 8)
    cat = rows[rows["category"] == "cat"].set_index("metric")
    assert cat.loc["shape_bias", "value"] == pytest.approx(3 / 4) and cat.loc["shape_acc", "n"] == 6
    dog = rows[rows["category"] == "dog"].set_index("metric")
    assert dog.loc["shape_bias", "value"] == 0 and dog.loc["texture_acc", "value"] == 1
    assert set(rows["category"].dropna()) == {"cat", "dog"}
    for r in rows.itertuples():  # every interval holds its value
        assert r.ci_low <= r.value + 1e-12 and r.value <= r.ci_high + 1e-12


def test_shape_bias_without_any_hit_is_undefined_and_says_so():
    rows = shape_bias.shape_bias_rows(_predictions([("cat", "dog", "knife")] * 4))
    bias = rows[(rows["metric"] == "shape_bias") & rows["category"].isna()].iloc[0]
    assert math.isnan(bias.value) and bias.n == 0 and math.isnan(bias.ci_low)
    acc = rows[(rows["metric"] == "shape_acc") & rows["category"].isna()].iloc[0]
    assert acc.value == 0 and acc.n == 4 and acc.ci_high > 0


def test_bootstrap_interval_is_reproducible_and_narrows_with_more_images():
    rng = np.random.default_rng(1)
    small = rng.random(50) < 0.3
    large = rng.random(2000) < 0.3
    first = shape_bias.shape_bias_interval(small, ~small)
    assert first == shape_bias.shape_bias_interval(small, ~small)
    assert first[0] < small.mean() < first[1]
    wide, narrow = first[1] - first[0], np.subtract(*shape_bias.shape_bias_interval(large, ~large)[::-1])
    assert narrow < wide / 3


# ---------------------------------------------------------------------------------------------------- the reader


def write_stimuli(root: Path, pairs) -> Path:
    """Small PNG stimuli ``<shape>/<shape><i>-<texture><j>.png`` for ``pairs`` of (shape, texture)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, (shape, texture) in enumerate(pairs, 1):
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{shape}{i}-{texture}{i + 1}.png")
    return root


PAIRS = [(s, t) for s in NAMES[:4] for t in NAMES[:4]]  # 16 stimuli of 4 categories, 4 with shape == texture


def test_reader_labels_by_shape_and_feeds_whole_images_at_the_model_size(tmp_path):
    root = write_stimuli(tmp_path / "stimuli", PAIRS)
    (root / "LICENSE").write_text("CC BY 4.0")  # files beside the category folders are not stimuli
    transform = cue_conflict.transform_for((3, 40, 40), "bicubic")
    dataset, info = cue_conflict.load_cue_conflict(str(root), tmp_path / "cache", transform)
    assert len(dataset) == 16 and info.num_classes == 1000 and list(info.class_groups) == NAMES
    image, label, _ = dataset[5]
    assert image.shape == (3, 40, 40) and NAMES[int(label)] == dataset.files[5].parent.name
    columns = dataset.sample_columns()
    assert list(columns.columns) == ["sample_id", "path", "shape_category", "texture_category"]
    assert columns["path"].iloc[5] == f"{dataset.files[5].parent.name}/{dataset.files[5].name}"
    assert "4 whose shape and texture agree are evaluated but left out of shape bias, 12 count" in info.notes[0]
    same = cue_conflict.transform_for((3, 24, 24), "bilinear")(__import__("PIL.Image").Image.open(dataset.files[0]))
    assert same.shape == (3, 24, 24)  # already the model's size: not resized, not cropped


def test_max_samples_takes_every_category_not_the_first_ones(tmp_path, workspace):
    root = write_stimuli(tmp_path / "stimuli", PAIRS)
    result = run(compose_config([*MODEL, "data=cue_conflict", f"data.root={root}", "evaluation.max_samples=8"]))
    predictions = pq.read_table(result.run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert predictions["shape_category"].value_counts().to_dict() == dict.fromkeys(NAMES[:4], 2)


BAD_FILES = {
    "bad_name": ("cat", "cat1_dog2.png"),
    "wrong_folder": ("dog", "cat1-bear2.png"),
    "unknown_texture": ("cat", "cat1-zebra2.png"),
    "stranger": ("zebra", "zebra1-cat1.png"),
}


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "data.root={root}/nowhere does not exist or is not a folder"),
        ("wnids", "has none of the 16 cue-conflict category folders"),
        ("bad_name", "cat/cat1_dog2.png is not a cue-conflict stimulus name: expected cat<i>-<texture><j>.png"),
        ("wrong_folder", "dog/cat1-bear2.png is not a cue-conflict stimulus name"),
        ("unknown_texture", "cat/cat1-zebra2.png is not a cue-conflict stimulus name"),
        ("stranger", "zebra/ is not one of the 16 categories"),
    ],
)
def test_bad_stimulus_folders_are_refused_with_one_message(layout, message, tmp_path, workspace):
    results, _ = workspace
    root = tmp_path / "stimuli"
    write_stimuli(root, PAIRS[:2])
    if layout == "wnids":
        shutil.rmtree(root)
        (root / "n01440764").mkdir(parents=True)
    elif layout == "missing":
        root = root / "nowhere"
    else:
        folder, name = BAD_FILES[layout]
        (root / folder).mkdir(exist_ok=True)
        shutil.copy(next(root.glob("*/*.png")), root / folder / name)
    with pytest.raises(UserError, match=message.format(root=tmp_path / "stimuli").replace(".", r"\.")):
        run(compose_config([*MODEL, "data=cue_conflict", f"data.root={root}"]))
    assert [p for p in run_dirs(results) if (p / store.DONE_FILE).exists()] == []


def test_a_model_without_1000_classes_is_refused(tmp_path, workspace):
    root = write_stimuli(tmp_path / "stimuli", PAIRS[:2])
    with pytest.raises(UserError, match="turns the 1000 ImageNet-1k classes into 16 category decisions, but model "
                       "mobilenet_v2_050 has 10 outputs"):  # fmt: skip
        run(compose_config([*MODEL, "model.num_classes=10", "data=cue_conflict", f"data.root={root}"]))


@pytest.mark.fidelity
def test_published_checksums_cover_the_1280_stimuli():
    sums = cue_conflict.checksums()
    assert len(sums) == 1280 and len(set(sums.values())) == 1280
    names = [cue_conflict.FILE_NAME.match(Path(p).name) for p in sums]
    assert all(names) and sum(m.group(1) == m.group(3) for m in names) == 80
    assert {Path(p).parent.name for p in sums} == set(NAMES)


@pytest.mark.fidelity
@pytest.mark.skipif(not STIMULI.is_dir(), reason="the cue-conflict stimuli are not in ../shared/data here")
def test_the_local_stimuli_match_the_published_checksums():
    sums = cue_conflict.checksums()
    on_disk = sorted(p.relative_to(STIMULI).as_posix() for p in STIMULI.glob("*/*.png"))
    assert on_disk == sorted(sums)
    for path in on_disk[::40]:  # every 40th file's bytes (all of them take a second; the names are all checked)
        assert hashlib.sha256((STIMULI / path).read_bytes()).hexdigest() == sums[path]


def test_download_checks_every_file_and_keeps_none_that_fails(tmp_path, monkeypatch):
    source = write_stimuli(tmp_path / "source", PAIRS[:3])
    files = {
        p.relative_to(source).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in source.rglob("*.png")
    }
    monkeypatch.setattr(cue_conflict, "SOURCE", source.as_uri())  # urllib reads file:// as it reads https://
    cue_conflict.download(tmp_path / "cache", files)
    assert sorted(p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*")
                  if p.is_file()) == sorted(files)  # fmt: skip
    bad = dict.fromkeys(files, "0" * 64)
    with pytest.raises(ValueError, match="does not match its sha256"):
        cue_conflict.download(tmp_path / "other", bad)
    assert not any(p.is_file() for p in (tmp_path / "other").rglob("*"))
    with pytest.raises(FileNotFoundError, match=r"cannot download the cue-conflict stimuli .*set data\.root"):
        cue_conflict.download(tmp_path / "third", {"cat/cat9-dog9.png": "0" * 64})


# ----------------------------------------------------------------------------------- end to end and comparison


def test_a_run_writes_per_sample_categories_and_the_metric_rows(tmp_path, workspace):
    root = write_stimuli(tmp_path / "stimuli", PAIRS)
    run_dir = run(compose_config([*MODEL, "data=cue_conflict", f"data.root={root}"])).run_dir
    predictions = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(predictions) == 16
    assert set(predictions["decision"]) <= set(NAMES)
    assert (predictions["decision"] == [NAMES[p] for p in predictions["pred"]]).all()
    assert (predictions["correct"] == (predictions["decision"] == predictions["shape_category"])).all()
    assert (predictions["path"].str.split("/").str[0] == predictions["shape_category"]).all()
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    shape = metrics[metrics["metric"].isin(["shape_bias", "shape_acc", "texture_acc"])]
    assert len(shape) == 3 * (1 + 4)  # overall and per each of the 4 shape categories written
    hits = predictions[predictions["shape_category"] != predictions["texture_category"]]
    overall = shape[shape["category"].isna()].set_index("metric")
    assert overall.loc["shape_acc", "n"] == 12
    expected = shape_bias.shape_counts(hits["shape_category"], hits["texture_category"], hits["decision"])
    assert overall.loc["shape_acc", "value"] == pytest.approx(expected[0] / 12)
    assert overall.loc["texture_acc", "value"] == pytest.approx(expected[1] / 12)


def write_shape_run(results: Path, model: str, family: str, records) -> Path:
    """A finished run folder whose metrics are the shape-bias rows of hand-made ``(shape, texture, decision)``
    predictions (the scoring's own rows, written as the engine writes them)."""
    rows = add_protocol(shape_bias.shape_bias_rows(_predictions(records)), create_noise("clean"), recipe="none",
                        image_side=224)  # fmt: skip
    frame = rows.assign(
        run_id=model, model=model, family=family, weights="random", weights_source="random", weights_id=None,
        params=1, data="cue_conflict", **dict.fromkeys(store.model_columns()),
    )  # fmt: skip
    for column in ["severity", *store.model_columns()]:
        frame[column] = frame[column].astype("Int64")
    folder = results / f"{model}-clean-cue_conflict-{model}"
    folder.mkdir(parents=True)
    store.write_table(frame, store.metrics_schema(), folder / store.METRICS_FILE)
    store.mark_done(folder)
    return folder


@pytest.fixture
def shape_results(tmp_path):
    """Two models on cat/dog cue conflicts: one deciding mostly by shape (3 of 4 cat, 1 of 2 dog), one by
    texture (1 of 4 cat, 0 of 2 dog)."""
    results = tmp_path / "results"
    cats, dogs = [("cat", "dog")] * 4, [("dog", "bird")] * 2
    shapely = ["cat", "cat", "cat", "dog", "dog", "bird"]
    texturey = ["cat", "dog", "dog", "dog", "bird", "bird"]
    pairs = cats + dogs
    write_shape_run(results, "shapely", "transformer", [(s, t, d) for (s, t), d in zip(pairs, shapely)])
    write_shape_run(results, "texturey", "cnn", [(s, t, d) for (s, t), d in zip(pairs, texturey)])
    return results


def test_compare_has_shape_bias_as_a_measure_and_per_category_rows_stay_apart(shape_results):
    c = compare.compare(shape_results)
    assert [m.label for m in c.measures] == ["shape_bias"]  # a default measure
    table = c.table.set_index("group")
    assert table.loc["shapely", "value"] == pytest.approx(4 / 6)  # the overall row, not a mean with categories
    assert table.loc["texturey", "value"] == pytest.approx(1 / 6)
    assert table.loc["shapely", "rank"] == 1
    chosen = compare.compare(shape_results, metrics=["shape_acc", "texture_acc"]).measures
    assert [m.label for m in chosen] == ["shape_acc", "texture_acc"]
    per_category = c.shape_categories.set_index(["group", "category"])["value"]
    assert per_category[("shapely", "cat")] == pytest.approx(3 / 4)
    assert per_category[("shapely", "dog")] == pytest.approx(1 / 2)
    assert per_category[("texturey", "dog")] == 0


@pytest.mark.browser
def test_report_shape_bias_plot_renders_in_chromium(shape_results, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (make system-deps installs it)")
    out = tmp_path / "out"
    assert compare.main([str(shape_results), "--out", str(out)]) == 0
    result = render_in_chromium(chromium, (out / "report.html").read_text(), tmp_path)
    assert "shape-bias-cue_conflict-clean-clean" in result["plots"]
    assert result["decoded"] == result["images"] == len(result["plots"])


# ---------------------------------------------------------------------------------- the published figure


@pytest.mark.slow
@pytest.mark.fidelity
@pytest.mark.skipif(not STIMULI.is_dir(), reason="the cue-conflict stimuli are not in ../shared/data here")
def test_efficientnet_lite0_shape_bias_lies_where_imagenet_cnns_do(workspace):
    result = run(compose_config(["model=efficientnet_lite0", "model.weights=pretrained", "data=cue_conflict",
                                 f"data.root={STIMULI}", "noise=clean", "evaluation.batch_size=64"]))  # fmt: skip
    predictions = pq.read_table(result.run_dir / store.PREDICTIONS_FILE).to_pandas()
    counted = predictions["shape_category"] != predictions["texture_category"]
    assert len(predictions) == 1280 and counted.sum() == 1200 and (~counted).sum() == 80
    metrics = pq.read_table(result.run_dir / store.METRICS_FILE).to_pandas()
    rows = metrics[metrics["category"].isna()].set_index("metric")
    assert rows.loc["shape_acc", "n"] == 1200
    assert 0.1 <= rows.loc["shape_bias", "value"] <= 0.4  # the spec's range for ImageNet-trained CNNs
    assert metrics["category"].nunique() == 16
