"""``python -m robustart.compare`` keeps rows measured differently apart: the tidy ``compare.csv`` and
:func:`robustart.compare.table` (one row per group x measure x protocol; runs pool only as true replicates), old
schema versions read with nulls, unreadable runs skipped and counted, and the leaderboard at the standard budget.

Results folders are written with :func:`robustart.store.write_table` through the helpers of
``tests/conftest.py``, their protocol columns filled as a real run fills them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robustart import compare, store
from robustart.evaluation.metrics import wilson_interval
from tests.conftest import assert_compare_error, metric_row, metric_rows, pgd, run_compare, write_run, zoo_of_runs


def _pgd_run(results, model, steps, counts, *, run_id=None, recipe="none", noise="pgd_linf", **kw):
    """A run of ``model``: clean top-1 and one attack (``noise``) with ``steps`` at 2/255 and 8/255."""
    rows = [metric_row("clean", "top1", "clean", 180)]
    for eps, k in zip((2 / 255, 8 / 255), counts):
        rows.append(metric_row(noise, "robust_acc", noise, k, eps=eps, **pgd(steps, eps)))
    return write_run(results, model, "cnn", rows, run_id=run_id, recipe=recipe, **kw)


# ------------------------------------------------------------------------------------------- the tidy table


def test_runs_differing_in_steps_stay_apart_one_row_per_budget_and_steps(tmp_path):
    results = tmp_path / "results"
    _pgd_run(results, "resnet", 1, (150, 120), run_id="a" * 10)  # PGD-1
    _pgd_run(results, "resnet", 3, (130, 60), run_id="b" * 10)  # PGD-3, same model and budgets

    tidy = compare.table(results, metrics="robust_acc")
    assert len(tidy) == 4 and (tidy["runs"] == 1).all() and set(tidy["model"]) == {"resnet"}
    got = {(round(r.eps * 255), r.steps): r.value for r in tidy.itertuples()}
    assert got == {(2, 1): 0.75, (8, 1): 0.6, (2, 3): 0.65, (8, 3): 0.3}  # each run's own value, nothing averaged
    low, high = wilson_interval(60, 200)  # one run: its own interval, not narrowed as if replicates
    row = tidy[(tidy["steps"] == 3) & np.isclose(tidy["eps"], 8 / 255)].iloc[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert set(tidy["norm"]) == {"Linf"} and set(tidy["unit"]) == {"fraction"}

    assert compare.main([str(results), "--metrics", "robust_acc"]) == 0
    csv = pd.read_csv(results / "compare.csv")
    assert len(csv) == 4 and (csv["runs"] == 1).all()
    assert sorted(zip(csv["eps"].round(6), csv["steps"])) == sorted(zip(tidy["eps"].round(6), tidy["steps"]))
    assert list(csv.columns) == list(tidy.columns)
    c = compare.compare(results, metrics=["robust_acc"])
    assert any("steps: 1, 3" in note and "never pooled" in note for note in c.notes)  # the reader is told
    markdown = compare.format_markdown(c)
    for heading in ("robust_acc@2/255 steps=1 %", "robust_acc@8/255 steps=3 %"):
        assert heading in markdown


def test_true_replicates_pool_and_other_recipes_do_not(tmp_path):
    results = tmp_path / "results"
    _pgd_run(results, "resnet", 10, (150, 120), run_id="a" * 10)
    _pgd_run(results, "resnet", 10, (140, 100), run_id="b" * 10)  # another seed: the same protocol
    _pgd_run(results, "resnet", 10, (100, 90), run_id="c" * 10, recipe="pgd_at")  # trained otherwise

    tidy = compare.table(results, metrics=["top1", "pgd_linf:robust_acc"])
    pooled = tidy[(tidy["recipe"] == "none") & np.isclose(tidy["eps"], 8 / 255)].iloc[0]
    assert pooled["runs"] == 2 and pooled["value"] == pytest.approx((120 + 100) / 400)
    v = np.array([120, 100]) / 200
    s = np.array([np.subtract(*wilson_interval(k, 200)[::-1]) / (2 * compare.Z95) for k in (120, 100)])
    half = compare.Z95 * math.sqrt(v.var(ddof=1) / 2 + (s**2).sum() / 4)
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx((v.mean() - half, v.mean() + half))
    other = tidy[(tidy["recipe"] == "pgd_at") & np.isclose(tidy["eps"], 8 / 255)].iloc[0]
    assert other["runs"] == 1 and other["value"] == pytest.approx(90 / 200)
    assert len(tidy[tidy["measure"] == "top1"]) == 2  # two entries: resnet [none] (2 runs) and resnet [pgd_at]
    # the two entries rank together (recipes describe models, not measurements)
    ranks = tidy[np.isclose(tidy["eps"], 8 / 255)].set_index("recipe")["rank"].to_dict()
    assert ranks == {"none": 1, "pgd_at": 2}
    by_recipe = compare.table(results, by="recipe", metrics="top1")
    assert list(by_recipe.columns[:4]) == ["data", "measure", "recipe", "family"]
    # the two runs of one checkpoint report one clean top-1 on the same images: one measurement, counted once
    assert by_recipe.set_index("recipe")["runs"].to_dict() == {"none": 1, "pgd_at": 1}


def test_one_measurement_repeated_by_several_runs_counts_once(tmp_path):
    results = tmp_path / "results"
    _pgd_run(results, "resnet", 10, (150, 120), run_id="a" * 10)  # the clean pass of one checkpoint, made by
    _pgd_run(results, "resnet", 10, (150, 120), run_id="b" * 10, noise="fgsm")  # each noise's run
    _pgd_run(results, "vit", 10, (150, 120), run_id="c" * 10)  # two checkpoints that score alike: replicates
    _pgd_run(results, "vit", 10, (150, 120), run_id="d" * 10, weights="robustart:fedcba987654")
    top1 = compare.table(results, metrics="top1").set_index("model")
    low, high = wilson_interval(180, 200)
    assert top1.loc["resnet", "runs"] == 1 and (top1.loc["resnet", "ci_low"], top1.loc["resnet", "ci_high"]) == (
        pytest.approx(low), pytest.approx(high))  # fmt: skip
    assert top1.loc["vit", "runs"] == 2 and top1.loc["vit", "ci_high"] - top1.loc["vit", "ci_low"] < high - low


def test_a_run_on_fewer_samples_of_one_model_gives_way_to_the_run_on_the_most(tmp_path):
    """An AutoAttack run on the first 200 images beside runs on 1,000 of the same checkpoint and data: its clean
    pass measured a part of theirs, so the entry's clean top-1 is theirs, not a pool of the two as replicates."""
    results = tmp_path / "results"
    for noise, protocol, run_id in (("pgd_linf", pgd(10, 2 / 255), "a" * 10), ("fgsm", {"norm": "Linf"}, "b" * 10)):
        rows = [metric_row("clean", "top1", "clean", 536, n=1000)]  # each noise's run makes the same clean pass
        rows.append(metric_row(noise, "robust_acc", noise, 174, n=1000, eps=2 / 255, **protocol))
        write_run(results, "vit", "transformer", rows, run_id=run_id)
    subset = [metric_row("clean", "top1", "clean", 90, n=200),
              metric_row("autoattack", "robust_acc", "autoattack", 0, n=200, eps=8 / 255, norm="Linf")]  # fmt: skip
    write_run(results, "vit", "transformer", subset, run_id="c" * 10)
    other = [metric_row("clean", "top1", "clean", 520, n=1000)]  # another checkpoint on 1,000 images: a replicate
    write_run(results, "vit", "transformer", other, run_id="d" * 10, weights="robustart:fedcba987654")
    write_run(results, "cnn", "cnn", subset, run_id="e" * 10)  # a model with only the subset run keeps it

    top1 = compare.table(results, metrics="top1").set_index("model")
    v = np.array([536, 520]) / 1000
    s = np.array([np.subtract(*wilson_interval(k, 1000)[::-1]) / (2 * compare.Z95) for k in (536, 520)])
    half = compare.Z95 * math.sqrt(v.var(ddof=1) / 2 + (s**2).sum() / 4)
    assert top1.loc["vit", "runs"] == 2 and top1.loc["vit", "value"] == pytest.approx(v.mean())
    assert (top1.loc["vit", "ci_low"], top1.loc["vit", "ci_high"]) == pytest.approx((v.mean() - half, v.mean() + half))
    assert top1.loc["cnn", "runs"] == 1 and top1.loc["cnn", "value"] == pytest.approx(90 / 200)
    robust = compare.table(results, metrics="robust_acc").set_index(["model", "noise"])["value"]
    assert robust[("vit", "autoattack")] == 0 and robust[("vit", "pgd_linf")] == pytest.approx(0.174)
    # the leaderboard's clean column is the same pooled value
    board = compare.compare(results).boards["fashion_mnist"]
    clean = next(col for col in board.columns if col.measure.metric == "top1")
    assert clean.cells["vit"].value == pytest.approx(v.mean())


def test_a_leaderboard_by_family_shows_the_family_once(tmp_path):
    results = tmp_path / "results"
    _board_run(results, "wrn", 180, 110, 100, 0.71, 0.02)
    _board_run(results, "resnet", 176, 60, 50, 0.65, 0.05)
    assert compare.main([str(results), "--by", "family"]) == 0
    header, rows = _markdown_board((results / "compare.md").read_text(), "cifar10")
    assert header[:4] == ["#", "family", "runs", "clean top-1 %"] and rows["cnn"][:3] == ["1", "cnn", "2"]
    report = (results / "report.html").read_text()
    assert report.count("<th>family</th>") == 2  # the leaderboard's and the wide table's first column, once each
    terminal = compare.format_terminal(compare.compare(results, by=["family"]))
    assert all(line.split().count("family") <= 1 for line in terminal.splitlines())


def test_old_schema_runs_compare_with_nulls(tmp_path):
    results = tmp_path / "results"
    rows = metric_rows(160, [150, 120, 60], [150, 110, 140, 70])
    curve = [metric_row("pgd_linf", "robust_acc_vs_steps", "pgd_linf", 100, eps=8 / 255, severity=s) for s in (1, 5)]
    for version, model in ((1, "alexnet"), (2, "vgg"), (3, "resnet")):
        folder = write_run(results, model, "cnn", rows + (curve if version == 3 else []), version=version)
        assert "steps" not in pq.read_schema(folder / store.METRICS_FILE).names
    write_run(results, "vit", "transformer", rows)  # schema 4

    tidy = compare.table(results, metrics=["top1", "robust_acc", "robust_acc_vs_steps"])
    robust = tidy[tidy["measure"] == "robust_acc"]
    old = robust[robust["model"] != "vit"]
    assert old["norm"].isna().all() and old["steps"].isna().all() and (old["unit"] == "fraction").all()
    assert (robust[robust["model"] == "vit"]["steps"] == 10).all()
    # the three old runs share a (null) protocol, the new one has its own: ranks compare like with like
    at8 = robust[np.isclose(robust["eps"], 8 / 255)]
    assert at8.set_index("model")["rank_worst"].to_dict()["vit"] == 1 and len(at8) == 4
    # old accuracy-vs-steps rows kept their step count in severity: read as steps
    curve = tidy[tidy["measure"] == "robust_acc_vs_steps"]
    assert sorted(curve["steps"]) == [1, 5] and curve["severity"].isna().all()
    c = compare.compare(results)
    assert c.loaded.versions == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert any("schema 1-3: the protocol columns" in note for note in c.notes)


# ---------------------------------------------------------------------------------------- unreadable runs


def _corrupt_data_page(path) -> None:
    """Overwrite the ``value`` column chunk's page header: the footer still reads, the scan does not."""
    column = pq.ParquetFile(path).metadata.row_group(0)
    index = [column.column(i).path_in_schema for i in range(column.num_columns)].index("value")
    chunk = column.column(index)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + 2 : start + chunk.total_compressed_size - 2] = b"\xab" * (chunk.total_compressed_size - 4)
    path.write_bytes(bytes(data))


def test_unreadable_runs_are_skipped_and_reported(tmp_path):
    results = tmp_path / "results"
    zoo_of_runs(results)
    garbage = write_run(results, "garbage", "cnn", metric_rows(100, [90, 80, 70], [1, 2, 3, 4]))
    (garbage / store.METRICS_FILE).write_bytes(b"not parquet at all")
    truncated = write_run(results, "truncated", "cnn", metric_rows(101, [90, 80, 70], [1, 2, 3, 4]))
    path = truncated / store.METRICS_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    missing = write_run(results, "missing", "cnn", metric_rows(102, [90, 80, 70], [1, 2, 3, 4]))
    (missing / store.METRICS_FILE).unlink()

    proc = run_compare(results)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("skipped 3 unreadable runs: ") and len(proc.stderr.strip().splitlines()) == 1
    for folder in (garbage, truncated, missing):
        assert str(folder / store.METRICS_FILE) in proc.stderr
    assert "metrics.parquet is missing" in proc.stderr and "5 finished runs" in proc.stdout
    assert set(pd.read_csv(results / "compare.csv")["model"]) == {"small_resnet", "cifar_resnet18", "small_vit",
                                                                  "small_mixer"}  # fmt: skip
    for name in ("compare.md", "report.html"):
        text = (results / name).read_text()
        assert "skipped 3 unreadable runs" in text and "truncated-quickstart" in text

    # a file whose footer reads but whose data does not: found when the one scan fails, then left out
    _corrupt_data_page(next(results.glob("small_mixer-*")) / store.METRICS_FILE)
    # a file whose values are text: its schema cannot join the others'
    odd = write_run(results, "odd", "cnn", metric_rows(103, [90, 80, 70], [1, 2, 3, 4]))
    frame = pq.read_table(odd / store.METRICS_FILE).to_pandas()
    pq.write_table(pa.Table.from_pandas(frame.assign(value=frame["value"].astype(str))), odd / store.METRICS_FILE)
    c = compare.compare(results)
    reasons = {path.parent.name.split("-")[0]: reason for path, reason in c.loaded.skipped}
    assert set(reasons) == {"garbage", "truncated", "missing", "small_mixer", "odd"}
    assert "types do not match" in reasons["odd"] and reasons["missing"] == "metrics.parquet is missing"
    assert set(c.table["group"]) == {"small_resnet", "cifar_resnet18", "small_vit"}
    assert c.loaded.runs["model"].tolist() == ["cifar_resnet18", "small_resnet", "small_vit", "small_vit"]


@pytest.mark.cli
def test_only_unreadable_runs_exit_2_with_one_message(tmp_path):
    results = tmp_path / "results"
    one = write_run(results, "a", "cnn", metric_rows(100, [90, 80, 70], [1, 2, 3, 4]))
    (one / store.METRICS_FILE).write_bytes(b"")
    two = write_run(results, "b", "cnn", metric_rows(101, [90, 80, 70], [1, 2, 3, 4]))
    (two / store.METRICS_FILE).unlink()
    proc = run_compare(results, "--out", tmp_path / "out")
    assert_compare_error(proc, "no readable run in")
    assert "2 finished run(s) could not be read" in proc.stderr and "metrics.parquet is missing" in proc.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- the leaderboard


def _board_run(results, model, top1, pgd_k, aa_k, mean_acc, sys_std, *, steps=10, data="cifar10", input_size=32):
    """A CIFAR run: clean top-1, PGD-Linf and AutoAttack at 8/255 (``aa_k`` None: no AutoAttack) and 2/255,
    ImageNet-C's mean_acc and mCE and ImageNet-S's sys_mean and sys_std."""
    rows = [metric_row("clean", "top1", "clean", top1)]
    for eps in (2 / 255, 8 / 255):
        scale = 1.0 if eps > 3 / 255 else 1.5
        rows.append(metric_row("pgd_linf", "robust_acc", "pgd_linf", min(int(pgd_k * scale), top1), eps=eps,
                         **pgd(steps, eps)))  # fmt: skip
        if aa_k is not None:
            rows.append(metric_row("autoattack", "robust_acc", "autoattack", min(int(aa_k * scale), top1), eps=eps,
                             norm="Linf"))  # fmt: skip
    rows += [
        metric_row("imagenet_c", "mean_acc", None, value=mean_acc, param_set="cifar"),
        metric_row("imagenet_c", "mce", None, value=100 - 100 * mean_acc, param_set="cifar"),
        metric_row("imagenet_s", "sys_mean", None, top1 - 8),
        metric_row("imagenet_s", "sys_std", None, value=sys_std),
    ]
    rows[-4].update(ci_low=mean_acc - 0.02, ci_high=mean_acc + 0.02, ci_method="bootstrap")
    return write_run(results, model, "cnn", rows, data=data, input_size=input_size)


def _markdown_board(text: str, data: str) -> tuple[list[str], dict]:
    """The header and the rows (by model) of the leaderboard of ``data`` in compare.md."""
    block = text.split(f"## Leaderboard: {data}")[1].split("\n## ")[0]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    return split[0], {row[1]: row for row in split[2:]}


def test_leaderboard_columns_values_and_ranks(tmp_path):
    results = tmp_path / "results"
    _board_run(results, "wrn", 180, 110, 100, 0.71, 0.02)
    _board_run(results, "resnet", 176, 60, 50, 0.65, 0.05)
    assert compare.main([str(results)]) == 0
    header, rows = _markdown_board((results / "compare.md").read_text(), "cifar10")
    assert header == ["#", "model", "family", "runs", "clean top-1 %", "robust acc. % @8/255 Linf (autoattack)",
                      "mean corruption acc. % (mean_acc)", "mCE (mce) (lower is better)", "sys_mean %",
                      "sys_std % (lower is better)"]  # fmt: skip
    low, high = wilson_interval(100, 200)
    assert rows["wrn"][:4] == ["1", "wrn", "cnn", "1"] and rows["resnet"][0] == "2"  # sorted by robust accuracy
    assert rows["wrn"][5] == f"50.0 [{100 * low:.1f}, {100 * high:.1f}] rank [1, 1]"  # AutoAttack, not PGD (55.0)
    assert rows["resnet"][5].startswith("25.0 [") and rows["resnet"][5].endswith("rank [2, 2]")
    assert rows["wrn"][6] == "71.0 [69.0, 73.0] rank [1, 1]" and rows["resnet"][7] == "35 rank [1, 2]"
    assert rows["wrn"][9] == "2.0 rank [1, 2]" and rows["resnet"][4].endswith("rank [1, 2]")
    report = (results / "report.html").read_text()
    assert report.index('class="compare leaderboard"') < report.index("How to read")
    assert "robust acc. % @8/255 Linf (autoattack)" in report

    # --budget picks another budget; the strongest attack there is still AutoAttack
    assert compare.main([str(results), "--budget", "2/255", "--out", str(tmp_path / "b")]) == 0
    header, rows = _markdown_board((tmp_path / "b" / "compare.md").read_text(), "cifar10")
    assert header[5] == "robust acc. % @2/255 Linf (autoattack)" and rows["wrn"][5].startswith("75.0 [")
    proc = run_compare(results, "--budget", "eight", "--out", tmp_path / "c")
    assert_compare_error(proc, "--budget 'eight'")


def test_leaderboard_withholds_what_was_measured_otherwise(tmp_path):
    results = tmp_path / "results"
    _board_run(results, "wrn", 180, 110, 100, 0.71, 0.02)
    _board_run(results, "resnet", 176, 60, 50, 0.65, 0.05)
    _board_run(results, "vgg", 170, 70, None, 0.6, 0.04, steps=20)  # PGD-20 only, no AutoAttack
    c = compare.compare(results)
    board = c.boards["cifar10"]
    robust = next(col for col in board.columns if col.measure.metric == "robust_acc")
    assert robust.cells["vgg"] == "n/c: pgd_linf steps=20" and robust.cells["wrn"].rank_worst == 1
    assert board.entries == ["wrn", "resnet", "vgg"]  # filled cells first
    assert any("withheld for vgg" in n and "pgd_linf steps=20 vs autoattack" in n for n in board.notes)

    # two models, each attacked otherwise and neither with AutoAttack: the column is left out, with the reason
    other = tmp_path / "other"
    _board_run(other, "wrn", 180, 110, None, 0.71, 0.02, steps=10)
    _board_run(other, "vgg", 170, 70, None, 0.6, 0.04, steps=20)
    assert compare.main([str(other)]) == 0
    text = (other / "compare.md").read_text()
    header, _ = _markdown_board(text, "cifar10")
    assert not any(h.startswith("robust acc.") for h in header) and header[4] == "clean top-1 %"
    assert ("robust accuracy at 8/255 Linf left out on cifar10: models were attacked with different attacks/steps "
            "(pgd_linf steps=10 vs pgd_linf steps=20)") in text  # fmt: skip

    # ImageNet-sized data: 4/255 by default, and nothing at 4/255 here
    imagenet = tmp_path / "imagenet"
    _board_run(imagenet, "wrn", 180, 110, 100, 0.71, 0.02, data="imagenet", input_size=224)
    c = compare.compare(imagenet)
    assert c.boards["imagenet"].budget == "4/255 Linf"
    assert any("no attack at that budget" in n for n in c.boards["imagenet"].notes)


def test_leaderboard_of_the_quickstart_zoo(tmp_path):
    results = tmp_path / "results"
    zoo_of_runs(results)
    c = compare.compare(results)
    board = c.boards["fashion_mnist"]
    titles = [col.title for col in board.columns]
    assert titles[:2] == ["clean top-1 %", "robust acc. % @8/255 Linf (pgd_linf steps=10)"]
    robust = board.columns[1].cells
    assert robust["small_vit"].runs == 2 and robust["small_vit"].value == pytest.approx((90 + 80) / 400)
    assert board.entries[0] == "small_vit"  # the most robust at 8/255 first, whatever its clean accuracy
    lines = compare.format_terminal(c).splitlines()
    assert any(line.startswith("leaderboard fashion_mnist") for line in lines)
