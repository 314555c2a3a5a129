"""``python -m robustart.compare``: reading run folders (old schemas too), grouping, rank intervals, the outputs,
errors, and the HTML report in headless Chromium.

Most results folders are built with :func:`robustart.store.write_table` from metric rows shaped like the
evaluators' (Wilson intervals from :func:`evaluation.metrics.wilson_interval`); one real tiny run of the command
line joins them in the end-to-end test.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from robustart import compare, store
from robustart.evaluation.metrics import wilson_interval
from robustart.run import run
from tests.conftest import (
    FAST,
    assert_compare_error,
    compose_config,
    metric_rows,
    render_in_chromium,
    run_compare,
    write_run,
    zoo_of_runs,
)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_cache):
    """One real run, in-process as the command line runs it, shrunk to seconds (small CNN, 64 samples); its
    model comes from the session's shared cache."""
    results = tmp_path_factory.mktemp("real") / "results"
    return run(compose_config([*FAST, f"paths.results_dir={results}", f"paths.cache_dir={shared_cache}"])).run_dir


# ---------------------------------------------------------------------------------------------------- the CLI


def test_cli_end_to_end_with_a_real_run(real_run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(real_run, results / real_run.name)
    zoo_of_runs(results)
    write_run(results, "vit_t", "transformer", metric_rows(100, [50, 40, 30], [1, 2, 3, 4]), done=False)  # unfinished
    (results / ".sweeps").mkdir()

    proc = run_compare(results)
    assert proc.returncode == 0, proc.stderr
    assert "6 finished runs" in proc.stdout and "1 unfinished folder(s) ignored" in proc.stdout
    assert "data fashion_mnist: 5 groups" in proc.stdout and "leaderboard fashion_mnist" in proc.stdout
    for heading in ("top1 %", "robust_acc@8/255 steps=10 %", "robust_acc@8/255 steps=2 %", "ar@2/255 steps=10 %",
                    "sys_mean %"):  # fmt: skip
        assert heading in proc.stdout  # the default measures the runs hold, a column per budget and step count
    # ImageNet-C's corruption x severity cells are too many for the table: said, and never averaged
    assert "imagenet_c:acc on fashion_mnist: 8 protocols" in proc.stdout
    for name in compare.OUTPUT_FILES:
        assert (results / name).is_file()
    assert not list(results.glob(".*.tmp"))

    table = pd.read_csv(results / "compare.csv")
    assert list(table.columns[:5]) == ["data", "measure", "model", "family", "noise"]
    assert list(table.columns[-7:]) == ["runs", "value", "ci_low", "ci_high", "rank", "rank_best", "rank_worst"]
    assert sorted(table["model"].unique()) == ["cifar_resnet18", "small_cnn", "small_mixer", "small_resnet",
                                               "small_vit"]  # fmt: skip
    real = table[table["model"] == "small_cnn"]
    metrics = pq.read_table(real_run / store.METRICS_FILE).to_pandas()
    clean = metrics[metrics["metric"] == "top1"].iloc[0]
    top1 = real[real["measure"] == "top1"].iloc[0]
    assert top1["value"] == pytest.approx(clean["value"]) and top1["ci_low"] == pytest.approx(clean["ci_low"])
    # each budget its own row with the run's own value and interval: never a mean over budgets
    robust = metrics[metrics["metric"] == "robust_acc"].sort_values("eps")
    rows = real[real["measure"] == "robust_acc"].sort_values("eps")
    assert rows["eps"].tolist() == pytest.approx(robust["eps"].tolist()) and (rows["runs"] == 1).all()
    assert rows["value"].tolist() == pytest.approx(robust["value"].tolist())
    assert rows["ci_high"].tolist() == pytest.approx(robust["ci_high"].tolist())
    assert rows["steps"].tolist() == robust["steps"].tolist() and set(rows["norm"]) == {"Linf"}
    vit = table[(table["model"] == "small_vit") & (table["measure"] == "top1")].iloc[0]
    assert vit["runs"] == 2 and vit["value"] == pytest.approx((150 + 154) / 400)
    top = table[table["measure"] == "top1"]
    assert top["rank"].tolist() == sorted(top["rank"])  # best first
    assert set(table["family"]) == {"cnn", "transformer", "mlp"}

    markdown = (results / "compare.md").read_text()
    assert markdown.index("## Leaderboard: fashion_mnist") < markdown.index("## data: fashion_mnist")
    assert "| # | model | family | runs | clean top-1 % | robust acc. % @8/255 Linf (pgd_linf steps=10" in markdown
    # the real run was attacked with 2 PGD steps, the others with 10: its leaderboard cell is withheld, and said
    assert "n/c: pgd_linf steps=2" in markdown and "withheld for small_cnn" in markdown
    assert "| model | family | runs | top1 % |" in markdown and "small_mixer" in markdown
    assert "rank interval" in markdown
    report = (results / "report.html").read_text()
    assert report.count('<table class="compare"') == 1 and report.count('<table class="compare leaderboard"') == 1
    assert report.index("Leaderboard: fashion_mnist") < report.index("How to read")
    assert {"attack-fashion_mnist", "corruption-fashion_mnist", "strip-fashion_mnist", "scatter-fashion_mnist"} <= set(
        re.findall(r'data-plot="([^"]+)"', report)
    )
    assert "No NAS subnet rows" in report  # said, not silently dropped
    assert "http://" not in report and "https://" not in report  # self-contained


def test_old_schema_files_read_with_missing_columns_as_null(tmp_path):
    results = tmp_path / "results"
    # the v1 run sorts first: its schema must not decide the dataset's
    write_run(results, "alexnet", "cnn", metric_rows(120, [90, 60, 20], [110, 60, 100, 40]), version=1, run_id="0" * 10)
    write_run(results, "nas_subnet", "nas", metric_rows(150, [140, 110, 50], [150, 110, 140, 70]), subnet=56440825,
              version=2)  # fmt: skip
    write_run(results, "small_vit", "transformer", metric_rows(150, [145, 130, 90], [148, 130, 140, 100]))
    old = next(results.glob("alexnet-*")) / store.METRICS_FILE
    assert (
        "flops" not in pq.read_schema(old).names and pq.read_schema(old).metadata[b"robustart_schema_version"] == b"1"
    )

    c = compare.compare(results)
    assert c.loaded.versions == {"1": 1, "2": 1, str(store.SCHEMA_VERSION): 1}
    runs = c.loaded.runs.set_index("model")
    assert pd.isna(runs.loc["alexnet", "flops"]) and pd.isna(runs.loc["alexnet", "nas_resolution"])
    assert runs.loc["nas_subnet", "subnet"] == 56440825 and runs.loc["nas_subnet", "nas_resolution"] > 0
    assert runs.loc["small_vit", "flops"] == 10_000_000 and pd.isna(runs.loc["small_vit", "nas_resolution"])
    assert set(c.table["group"]) == {"alexnet", "nas_subnet#56440825", "small_vit"}
    assert any("schema 1" in note for note in c.notes)
    info = c.model_info.set_index("group")
    assert pd.isna(info.loc["alexnet", "flops"]) and info.loc["nas_subnet#56440825", "nas_total_kernel"] > 0

    assert compare.main([str(results), "--by", "family", "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert sorted(table["family"].unique()) == ["cnn", "nas", "transformer"]


def test_group_by_family_means_runs_and_combines_intervals(tmp_path):
    results = tmp_path / "results"
    zoo_of_runs(results)
    c = compare.compare(results, by=["family"], metrics=["top1", "sys_std"])
    assert [m.label for m in c.measures] == ["top1", "sys_std"]
    top1 = c.table[c.table["measure"] == "top1"].set_index("group")
    assert top1["runs"].to_dict() == {"cnn": 2, "transformer": 2, "mlp": 1}  # same protocol: replicates pool
    assert top1.loc["cnn", "value"] == pytest.approx((170 + 176) / 400)
    # two runs: mean +- 1.96 sqrt(var(v) / 2 + (s1^2 + s2^2) / 4), s_i the runs' standard errors
    v = np.array([170, 176]) / 200
    s = np.array([np.subtract(*wilson_interval(k, 200)[::-1]) / (2 * compare.Z95) for k in (170, 176)])
    half = compare.Z95 * math.sqrt(v.var(ddof=1) / 2 + (s**2).sum() / 4)
    assert top1.loc["cnn", "ci_low"] == pytest.approx(v.mean() - half)
    assert top1.loc["cnn", "ci_high"] == pytest.approx(v.mean() + half)
    # one run: that run's own Wilson interval
    assert (top1.loc["mlp", "ci_low"], top1.loc["mlp", "ci_high"]) == pytest.approx(wilson_interval(140, 200))
    # a value stored without an interval: one run has none, two runs keep only their spread (identical here)
    spread = c.table[c.table["measure"] == "sys_std"].set_index("group")
    assert math.isnan(spread.loc["mlp", "ci_low"]) and spread.loc["cnn", "ci_low"] == pytest.approx(0.03)
    assert spread.loc["mlp", "rank_best"] == 1 and spread.loc["mlp", "rank_worst"] == 3

    groups = c.groups.set_index("group")
    assert groups.loc["transformer", "runs"] == 2 and groups.loc["cnn", "family"] == "cnn"
    with pytest.raises(compare.CompareError, match="unknown --by column 'famly'"):
        compare.compare(results, by=["famly"])
    by_two = compare.compare(results, by=["family", "model"])
    assert "cnn / small_resnet" in set(by_two.table["group"])


# ------------------------------------------------------------------------------------------------------ ranks


def test_rank_intervals_on_a_hand_checkable_example():
    # A: 0.90 [0.85, 0.95], B: 0.80 [0.75, 0.88], C: 0.50 [0.45, 0.55]. A and B overlap (B's upper bound 0.88 is
    # above A's lower bound 0.85), C lies below both: A and B rank 1-2 either way, C is certainly third.
    rank, best, worst = compare.rank_intervals([0.9, 0.8, 0.5], [0.85, 0.75, 0.45], [0.95, 0.88, 0.55])
    assert rank.tolist() == [1, 2, 3] and best.tolist() == [1, 1, 3] and worst.tolist() == [2, 2, 3]
    # lower is better (an error rate): the same intervals mirrored
    rank, best, worst = compare.rank_intervals([0.9, 0.8, 0.5], [0.85, 0.75, 0.45], [0.95, 0.88, 0.55], False)
    assert rank.tolist() == [3, 2, 1] and best.tolist() == [2, 2, 1] and worst.tolist() == [3, 3, 1]
    # D has no interval: it may lie anywhere, so it widens every other rank interval by one and spans 1-4
    rank, best, worst = compare.rank_intervals([0.9, 0.8, 0.5, 0.7], [0.85, 0.75, 0.45, np.nan],
                                               [0.95, 0.88, 0.55, np.nan])  # fmt: skip
    assert rank.tolist() == [1, 2, 4, 3] and best.tolist() == [1, 1, 3, 1] and worst.tolist() == [3, 3, 4, 4]
    # ties share the better rank; intervals that share a bound overlap (C could tie A and B at 0.4)
    rank, best, worst = compare.rank_intervals([0.5, 0.5, 0.3], [0.4, 0.4, 0.2], [0.6, 0.6, 0.4])
    assert rank.tolist() == [1, 1, 3] and best.tolist() == [1, 1, 1] and worst.tolist() == [2, 2, 3]


def test_rank_intervals_from_stored_wilson_intervals(tmp_path):
    results = tmp_path / "results"
    # top-1 of 200: A 180 [0.851, 0.935], B 172 [0.806, 0.902], C 150 [0.686, 0.805], D 146 [0.664, 0.787]
    for model, k in {"a": 180, "b": 172, "c": 150, "d": 146}.items():
        write_run(results, model, "cnn", metric_rows(k, [k - 20, k - 40, k - 60], [k, k, k, k]))
    assert wilson_interval(180, 200) == pytest.approx((0.851, 0.935), abs=1e-3)
    assert wilson_interval(150, 200) == pytest.approx((0.686, 0.805), abs=1e-3)
    assert compare.main([str(results), "--metrics", "top1"]) == 0
    table = pd.read_csv(results / "compare.csv").set_index("model")
    assert set(table["measure"]) == {"top1"}
    ranks = table[["rank", "rank_best", "rank_worst"]].T.to_dict("list")
    # a and b overlap (0.902 > 0.851), b and c do not (0.805 < 0.806), c and d overlap
    assert ranks == {"a": [1, 1, 2], "b": [2, 1, 2], "c": [3, 3, 4], "d": [4, 3, 4]}
    assert "#2 (1-2)" in (results / "compare.md").read_text()


# ----------------------------------------------------------------------------------------------------- errors


@pytest.mark.cli
def test_bad_input_exits_2_with_one_message_and_no_output(tmp_path, capsys):
    assert_compare_error(run_compare(tmp_path / "nowhere"), "does not exist")

    results = tmp_path / "results"
    write_run(results, "small_vit", "transformer", metric_rows(150, [145, 130, 90], [148, 130, 140, 100]), done=False)
    out = tmp_path / "out"
    cases = {
        "no finished run": [str(results)],
        "unknown metric 'top3'": [],
        "unknown --by column 'architecture'": ["--by", "architecture"],
    }
    zoo_of_runs(tmp_path / "zoo")
    for fragment, args in cases.items():
        argv = args if args and args[0] == str(results) else [str(tmp_path / "zoo"), *args]
        if fragment.startswith("unknown metric"):
            argv += ["--metrics", "top1,top3"]
        code = compare.main([*argv, "--out", str(out)])
        captured = capsys.readouterr()
        assert_compare_error(subprocess.CompletedProcess(argv, code, captured.out, captured.err), fragment)
        assert not out.exists()
    proc = run_compare(tmp_path / "zoo", "--metrics", "x")
    assert_compare_error(proc, "the runs hold acc, ar, robust_acc, sys_mean, sys_std, top1, top5")


def test_outputs_are_all_or_nothing(tmp_path, monkeypatch):
    results = tmp_path / "results"
    zoo_of_runs(results)
    c = compare.compare(results)

    def broken(_):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr("robustart.report.render", broken)
    with pytest.raises(RuntimeError):
        compare.write_outputs(c, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # everything is rendered before the first file is written
    monkeypatch.undo()
    written = compare.write_outputs(c, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)


# ----------------------------------------------------------------------------------------------------- report


@pytest.mark.browser
def test_report_renders_every_table_and_plot_in_chromium(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (make system-deps installs it)")
    results = tmp_path / "results"
    zoo_of_runs(results, subnets=True)
    assert compare.main([str(results)]) == 0
    report = (results / "report.html").read_text()
    assert "<script" not in report and 'src="http' not in report  # static and self-contained
    result = render_in_chromium(chromium, report, tmp_path)
    plots = ["attack", "corruption", "strip", "scatter", "nas"]
    assert result["plots"] == [f"{p}-fashion_mnist" for p in plots]
    assert result["images"] == len(plots) and result["decoded"] == len(plots)
    # the leaderboard and the data set's table, each a header and 4 models and 3 subnets
    assert result["tables"] == 2 and result["rows"] == 2 * (1 + 7)
    assert report.index('<table class="compare leaderboard"') < report.index('<table class="compare" ')
