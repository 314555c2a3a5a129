"""The attack wrappers' checks of their settings: budgets, norms and step counts (issue: bad input exits 2)."""

from __future__ import annotations

import pytest

from robustart.noise import create_noise
from tests.conftest import run_cli


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("pgd_linf", {"eps": ["-1/255"]}, "eps must be a finite number >= 0"),
        ("pgd_linf", {"eps": ["8"]}, "Linf eps must be at most 1"),
        ("autoattack", {"eps": ["2"]}, "Linf eps must be at most 1"),
        ("apgd_ce", {"norm": "L3"}, "does not support norm 'L3'; supported: Linf, L2, L1"),
        ("square", {"norm": "L1"}, "does not support norm 'L1'; supported: Linf, L2"),
        ("pgd_l2", {"steps": 0}, "steps must be > 0"),
        ("mim", {"step_size": "0"}, "step_size must be > 0"),
        ("fab", {"restarts": 0}, "restarts must be > 0"),
        ("autoattack", {"version": "fast"}, "version must be standard, plus or rand"),
    ],
)
def test_bad_attack_settings_are_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_noise(name, **options)


def test_l2_and_l1_budgets_may_exceed_one():
    assert create_noise("pgd_l2").eps == [0.5, 2.0, 8.0]
    assert create_noise("apgd_l1").eps == [100.0, 400.0, 1600.0]


@pytest.mark.slow
@pytest.mark.cli
def test_autoattack_runs_from_the_cli_on_the_quickstart_model(workspace):
    import pyarrow.parquet as pq

    from robustart import store
    from tests.conftest import run_dirs

    results, _ = workspace
    proc = run_cli("experiment=quickstart", "training.epochs=0.05", "evaluation.max_samples=8", "noise=autoattack",
                   'noise.eps=["8/255"]')  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(results)
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas().set_index("metric")["value"]
    assert {"top1", "robust_acc", "ar"} <= set(metrics.index)
    assert metrics["robust_acc"] <= metrics["top1"]
