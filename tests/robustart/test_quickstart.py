"""The embedded default, exactly as the README runs it: real Fashion-MNIST, trained, real numbers."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from robustart import store
from tests.conftest import run_cli, run_dirs


@pytest.mark.slow
@pytest.mark.cli
def test_quickstart_default_run(workspace):
    results, _ = workspace
    proc = run_cli()
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    top1 = metrics[(metrics.metric == "top1")]["value"].item()
    assert top1 > 0.80, f"clean top1 {top1:.3f}"
    pgd = metrics[metrics.metric == "robust_acc"].sort_values("eps")["value"].to_list()
    assert len(pgd) == 3 and pgd[0] >= pgd[1] >= pgd[2]
    acc = metrics[(metrics.metric == "acc") & (metrics.noise == "imagenet_c")]
    assert set(acc["condition"]) == {"gaussian_noise", "shot_noise", "impulse_noise", "contrast"}
    assert sorted(set(acc["severity"])) == [1, 2, 3, 4, 5]
    system = metrics[metrics.noise == "imagenet_s"]  # the small-scale system-noise column
    assert len(system[system.metric == "acc"]) == len(system[system.metric == "flip_rate"]) == 12
    assert {"sys_mean", "sys_std", "sys_worst"} <= set(system["metric"])
    assert system[system.metric == "sys_worst"]["value"].item() <= system[system.metric == "sys_mean"]["value"].item()
    assert "top1" in proc.stdout and "robust_acc" in proc.stdout

    again = run_cli()
    assert again.returncode == 0 and "already done" in again.stdout
