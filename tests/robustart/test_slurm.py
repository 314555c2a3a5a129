"""Sweeps on a real (one-node, localhost) Slurm cluster through hydra-submitit-launcher.

Needs root and Debian's slurm-wlm and munge (``make system-deps``); skipped elsewhere. The cluster is
started once for this module (tests/robustart/slurm_cluster.py) and stopped when the module's tests are done,
pass or fail. Run with ``python -m pytest -m slurm``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from robustart import store
from tests.conftest import run_cli, run_dirs
from tests.robustart.slurm_cluster import PARTITION, LocalSlurm, free_port, missing_requirements

# a real cluster and real runs, about 70 s on 2 cores: heavy enough for the slow set too
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# A run of a few seconds: random weights, no noise, a handful of Fashion-MNIST test images.
CHEAP = ["model=small_cnn", "model.weights=random", "data=fashion_mnist", "noise=clean"]


def launcher(**overrides) -> list[str]:
    """``hydra/launcher=slurm`` sized for the test node (2 CPUs, no GPU), plus ``overrides``."""
    params = {
        "partition": PARTITION,
        "gpus_per_node": 0,
        "tasks_per_node": 1,
        "cpus_per_task": 1,
        "mem_gb": 1,
        "timeout_min": 10,
        "array_parallelism": 2,
        **overrides,
    }
    return ["hydra/launcher=slurm", *(f"hydra.launcher.{k}={v}" for k, v in params.items())]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(f"no local Slurm cluster: {reason}")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()  # stops what it started if it fails
    try:
        yield cluster
    finally:
        cluster.stop()


def diagnostics(proc, sweep_dir: Path, cluster: LocalSlurm) -> str:
    """Everything a failed CI run needs: the launcher's output, each job's submitit logs, the daemon logs."""
    parts = []
    for name in ("stdout", "stderr"):
        text = getattr(proc, name, None) or ""
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        parts += [f"==> robustart {name} (python -m robustart -m ...) <==", text[-4000:]]
    for log in sorted((sweep_dir / ".submitit").glob("*/*")):
        if log.suffix in (".out", ".err", ".sh"):
            parts += [f"==> {log.relative_to(sweep_dir)} <==", log.read_text(errors="replace")[-3000:]]
    parts.append(cluster.logs(tail=40))
    return "\n".join(parts)


def run_on_slurm(cluster: LocalSlurm, sweep_dir: Path, *args: str, env: dict | None = None, timeout: float = 240):
    try:
        proc = run_cli("-m", *args, f"hydra.sweep.dir={sweep_dir}", env={**cluster.env, **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the sweep did not finish within {timeout:.0f} s\n{diagnostics(exc, sweep_dir, cluster)}")
    assert proc.returncode == 0, diagnostics(proc, sweep_dir, cluster)
    return proc


def test_sweep_runs_as_two_slurm_jobs(slurm, workspace, tmp_path):
    results, _ = workspace
    sweep_dir = tmp_path / "sweep"
    proc = run_on_slurm(slurm, sweep_dir, *CHEAP, "evaluation.max_samples=16,32", *launcher())
    why = diagnostics(proc, sweep_dir, slurm)

    dirs = run_dirs(results)
    assert len(dirs) == 2, why
    assert all((d / store.DONE_FILE).is_file() for d in dirs), why
    counts = set()
    for d in dirs:
        metrics = pq.read_table(d / store.METRICS_FILE).to_pandas()
        assert {"top1", "top5"} <= set(metrics["metric"]), why
        counts |= set(metrics["n"])
    assert counts == {16, 32}, why  # one job per swept value

    # both ran as tasks of one Slurm job array, and Slurm saw them complete
    slurm.wait_for_jobs()
    job_logs = sorted((sweep_dir / ".submitit").glob("*_*/*_0_log.out"))
    assert len(job_logs) == 2, why
    assert all("Job completed successfully" in log.read_text() for log in job_logs), why
    jobcomp = (slurm.log_dir / "jobcomp.txt").read_text()
    assert jobcomp.count("JobState=COMPLETED") >= 2, why


def test_one_run_as_two_slurm_tasks(slurm, workspace, tmp_path):
    """``tasks_per_node=2``: one job, two tasks, the two ranks of one run (training/distributed.py reads
    SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID), training data-parallel through gloo."""
    if slurm.hardware["CPUs"] < 2:
        pytest.skip("two tasks of one CPU each need a node with 2 CPUs")
    results, _ = workspace
    sweep_dir = tmp_path / "sweep"
    # 5 training steps; 4 evaluation batches, for ranks that evaluate a share each
    args = [
        *CHEAP,
        "training=quickstart",
        "training.epochs=0.01",
        "evaluation.max_samples=32",
        "evaluation.batch_size=8",
    ]
    # MASTER_PORT (read before the port derived from the job id) keeps the rendezvous off ports in use
    proc = run_on_slurm(slurm, sweep_dir, *args, *launcher(tasks_per_node=2), env={"MASTER_PORT": str(free_port())})
    why = diagnostics(proc, sweep_dir, slurm)

    dirs = run_dirs(results)
    assert len(dirs) == 1, why
    run_dir = dirs[0]
    assert (run_dir / store.DONE_FILE).is_file(), why
    metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
    assert set(metrics.loc[metrics["metric"] == "top1", "n"]) == {32}, why
    preds = pq.read_table(run_dir / store.PREDICTIONS_FILE).to_pandas()
    assert len(preds) == 32 and preds["sample_id"].nunique() == 32, why  # every image once
    manifest = json.loads((run_dir / store.MANIFEST_FILE).read_text())
    assert manifest["checkpoint"]["processes"] == 2, why  # trained by both ranks

    # one Slurm job whose two tasks each logged their own rank
    [job_dir] = [d for d in (sweep_dir / ".submitit").iterdir() if d.is_dir()]
    for rank in (0, 1):
        log = (job_dir / f"{job_dir.name}_{rank}_log.out").read_text()
        assert f"process {rank} of 2 (slurm)" in log, why
