"""The command line, through a subprocess: help, a shrunk end-to-end run, skipping, bad input."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from robustart import store
from tests.conftest import FAST, REPO, assert_user_error, run_cli, run_dirs


@pytest.mark.cli
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


@pytest.mark.cli
def test_end_to_end_writes_results_and_skips_a_finished_run(shared_workspace):
    results, cache = shared_workspace
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
    assert set(frame["weights_source"]) == {"robustart"} and (frame["weights"].str[10:] == frame["weights_id"]).all()
    # the protocol: every attack row names its norm, steps and step size; every row its unit and interval method
    attack = frame[frame.noise == "pgd_linf"]
    assert set(attack["norm"]) == {"Linf"} and set(attack["steps"]) == {2} and set(attack["restarts"]) == {1}
    assert (attack["step_size"] == 0.25 * attack["eps"]).all() and attack["random_start"].all()
    assert set(frame.loc[frame.noise == "imagenet_c", "param_set"]) == {"cifar"}  # auto at 28 px: CIFAR-10-C's
    assert frame.loc[frame.noise != "pgd_linf", "norm"].isna().all() and set(frame["recipe"]) == {"quickstart"}
    assert set(frame["unit"]) == {"fraction"} and not frame["ci_method"].isna().any()
    assert set(frame.loc[frame.metric == "sys_std", "ci_method"]) == {"none"}
    assert set(frame.loc[frame.metric.isin(["sys_mean", "sys_worst"]), "ci_method"]) == {"bootstrap"}

    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 64 * (1 + 3 + 8 + 12)
    assert not preds.duplicated(["noise", "condition", "severity", "eps", "sample_id"]).any()
    assert set(preds["data"]) == {"fashion_mnist"} and set(preds["family"]) == {"cnn"}
    assert (
        set(preds.loc[preds.noise == "pgd_linf", "steps"]) == {2}
        and preds.loc[preds.noise == "clean", "norm"].isna().all()
    )

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


# The exit status itself: one composition error and one refusal of run(); tests/test_user_errors.py checks every
# message in-process.
@pytest.mark.cli
def test_a_composition_error_exits_2_with_one_message(workspace):
    assert_user_error(run_cli("model=resnet5"), "Could not find 'model/resnet5'", "vit_b", "small_cnn")


@pytest.mark.cli
def test_a_refused_value_exits_2_with_one_message(workspace):
    results, _ = workspace
    proc = run_cli("noise=pgd_linf", "+model.foo=1")  # refused by run() before any work (and without PyTorch)
    assert_user_error(proc, "error: ", "unknown option model.foo")
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not list(results.glob("*/done"))


@pytest.mark.slow  # 18-21 s of CLI runs
@pytest.mark.cli
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


@pytest.mark.slow  # 18-21 s of CLI runs
@pytest.mark.cli
def test_multirun_sweeps_two_runs(workspace):
    results, _ = workspace
    proc = run_cli("-m", *FAST, "evaluation.max_samples=16,32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = run_dirs(results)
    assert len(dirs) == 2 and all((d / store.DONE_FILE).is_file() for d in dirs)
