"""Evaluation in committed parts (robustart.parts): sharding, resume after SIGKILL, and two gloo processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from robustart import parts, store
from robustart.data import TensorDataset
from robustart.evaluation import noise_rows
from robustart.noise import create_noise
from robustart.noise.base import merge_records
from tests.conftest import FAST, REPO, run_cli, run_dirs


def test_shards_are_the_single_process_batches():
    data = TensorDataset(
        torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.zeros(10, dtype=torch.long), torch.arange(100, 110)
    )
    whole, batches = parts.shard(data, 3, 0, 1)
    assert whole is data and batches == [0, 1, 2, 3]
    r0, b0 = parts.shard(data, 3, 0, 2)
    r1, b1 = parts.shard(data, 3, 1, 2)
    assert b0 == [0, 2] and b1 == [1, 3]
    assert [int(r0[i][2]) for i in range(len(r0))] == [100, 101, 102, 106, 107, 108]
    assert [int(r1[i][2]) for i in range(len(r1))] == [103, 104, 105, 109]
    r3, b3 = parts.shard(data, 3, 4, 5)  # more processes than batches: nothing for this one
    assert len(r3) == 0 and b3 == []


def test_records_merge_by_key_and_counts_add():
    mine = {0.1: {"images": 3, "forward": 6}, "first": {1: "fgsm"}, "steps": [1]}
    theirs = {0.1: {"images": 2, "forward": 4}, 0.2: {"images": 1}, "first": {2: "pgd"}, "steps": [2]}
    merged = merge_records(mine, theirs)
    assert merged == {0.1: {"images": 5, "forward": 10}, 0.2: {"images": 1}, "first": {1: "fgsm", 2: "pgd"},
                      "steps": [1, 2]}  # fmt: skip
    assert merge_records({7: True}, {7: False}) == {7: False}  # flags are taken, not added


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()


def _run(tmp_path, noise_factory, world: int, batch_size: int = 4):
    """Every rank of ``world`` in turn in this process (a fresh noise each, as separate processes have), then
    rank 0's merge."""
    from robustart.evaluation.validity import ValidityChecks, norm_of

    torch.manual_seed(1)
    data = TensorDataset(
        torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8), torch.randint(0, 3, (10,)), torch.arange(10)
    )
    model = _model()
    for rank in range(world):
        noise = noise_factory()
        checks = ValidityChecks(lambda cond, noise=noise: norm_of(noise, cond))
        parts.run_parts(tmp_path, parts.units(noise, data), model, noise, batch_size=batch_size, num_workers=0,
                        device="cpu", checks=checks, rank=rank, world=world, bar=False)  # fmt: skip
    noise = noise_factory()
    checks = ValidityChecks(lambda cond: norm_of(noise, cond))
    merged = parts.merge_parts(tmp_path, parts.units(noise, data), noise, checks, world)
    extra = noise_rows.metric_rows(noise, merged.predictions)
    return merged.predictions, pd.DataFrame(extra), noise.report(), checks.metric_rows()


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_parts_merge_to_the_rows_and_records_of_one_process(tmp_path, world):
    """A cascade records per-sample facts and pass counts while it runs: merged from shards they are those of
    one process, and so are the per-sample rows, in the same order."""

    def wcar():
        return create_noise("wcar", attacks=["fgsm", "pgd_linf"], eps=["8/255", "32/255"], options={})

    one = _run(tmp_path / "one", wcar, 1)
    many = _run(tmp_path / "many", wcar, world)
    pd.testing.assert_frame_equal(one[0], many[0])
    pd.testing.assert_frame_equal(one[1], many[1])
    assert one[2] == many[2] and one[2]["passes"]["fgsm"]  # pass counts summed over the shards
    assert one[3] == many[3]
    assert len(one[0]) == 10 * (1 + 2)


def test_a_resumed_run_skips_committed_conditions(tmp_path):
    """Parts already committed are not evaluated again, and a part of another world size is not reused."""

    def corruptions():
        return create_noise("imagenet_c", corruptions=["gaussian_noise", "contrast"], severities=[1, 3])

    first = _run(tmp_path, corruptions, 1)[0]
    folder = tmp_path / parts.PARTS_DIR
    done = sorted(folder.glob("*/rank0of1.parquet"))
    assert len(done) == 5  # clean + 2 x 2
    stamps = {p: p.stat().st_mtime_ns for p in done}
    done[-1].unlink()  # as if killed before the last condition committed
    again = _run(tmp_path, corruptions, 1)[0]
    pd.testing.assert_frame_equal(first, again)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in done[:-1]) and done[-1].is_file()
    assert not parts.is_committed(done[0].parent, 0, 2)


# ------------------------------------------------------------------------------------------------- the real CLI

#: the FAST quickstart on 200 images: 24 conditions (clean, 3 PGD budgets, 4 corruptions x 2, 12 system noise)
RESUMABLE = [*FAST, "evaluation.max_samples=200"]


def _tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return tuple(pq.read_table(run_dir / f).to_pandas() for f in (store.PREDICTIONS_FILE, store.METRICS_FILE))


def _committed(results: Path) -> int:
    return sum(1 for _ in results.glob(f"*/{parts.PARTS_DIR}/*/rank0of1.parquet"))


@pytest.mark.slow
@pytest.mark.cli
def test_a_run_killed_with_sigkill_five_times_ends_with_the_tables_of_one_uninterrupted(tmp_path):
    """SIGKILL at random points of the evaluation, five times or more, then a run to the end: the tables equal
    an uninterrupted run's, with no missing and no duplicated rows."""
    cache = tmp_path / "cache"
    env_a = {"ROBUSTART_RESULTS": str(tmp_path / "a"), "ROBUSTART_CACHE": str(cache)}
    whole = run_cli(*RESUMABLE, env=env_a)  # also trains the checkpoint that the killed runs reuse
    assert whole.returncode == 0, whole.stderr[-3000:]
    [run_a] = run_dirs(tmp_path / "a")
    results = tmp_path / "b"
    env_b = {**os.environ, "HF_HUB_OFFLINE": "1", "ROBUSTART_RESULTS": str(results), "ROBUSTART_CACHE": str(cache)}
    rng, kills, resumed = random.Random(20261121), [], 0
    while len(kills) < 5:
        before = _committed(results)
        with open(tmp_path / f"attempt{len(kills)}.log", "w+") as log:
            proc = subprocess.Popen([sys.executable, "-m", "robustart", *RESUMABLE], cwd=REPO, env=env_b,
                                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            target = before + rng.randint(1, 4)  # kill once a few more conditions are in, a random moment later
            deadline = time.monotonic() + 300
            while proc.poll() is None and _committed(results) < target and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.6))
            finished = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log.seek(0)
            output = log.read()
        if finished:
            pytest.fail(f"the run finished before kill {len(kills) + 1}; raise the conditions:\n{output[-2000:]}")
        kills.append(_committed(results))
        resumed += "resuming:" in output
    assert resumed >= 4 and kills == sorted(kills)  # every restart picked up what the last one committed
    final = run_cli(*RESUMABLE, env=env_b)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming:" in final.stdout
    [run_b] = run_dirs(results)
    assert not (run_b / parts.PARTS_DIR).exists()  # the parts go once the run is done
    (pred_a, metrics_a), (pred_b, metrics_b) = _tables(run_a), _tables(run_b)
    pd.testing.assert_frame_equal(pred_a, pred_b)
    pd.testing.assert_frame_equal(metrics_a, metrics_b)
    assert not pred_b.duplicated(["noise", "condition", "severity", "eps", "sample_id"]).any()
    assert len(pred_b) == 200 * 24


@pytest.mark.slow
@pytest.mark.cli
def test_two_gloo_processes_give_the_per_sample_rows_of_one(tmp_path):
    """torchrun with two processes on CPU (gloo) shares out every condition's batches: the same rows, bit for
    bit, and the same metrics; the run id does not depend on the number of processes."""
    cache = tmp_path / "cache"
    one = run_cli(*RESUMABLE, env={"ROBUSTART_RESULTS": str(tmp_path / "one"), "ROBUSTART_CACHE": str(cache)})
    assert one.returncode == 0, one.stderr[-3000:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ROBUSTART_RESULTS": str(tmp_path / "two"),
           "ROBUSTART_CACHE": str(cache)}  # fmt: skip
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "robustart",
         *RESUMABLE], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "process 1 of 2 evaluates batches 1" in two.stdout + two.stderr
    [run_one], [run_two] = run_dirs(tmp_path / "one"), run_dirs(tmp_path / "two")
    assert run_one.name == run_two.name
    (pred_1, metrics_1), (pred_2, metrics_2) = _tables(run_one), _tables(run_two)
    pd.testing.assert_frame_equal(pred_1, pred_2)
    pd.testing.assert_frame_equal(metrics_1, metrics_2)


def test_progress_is_a_bar_on_a_terminal_and_lines_with_an_eta_in_logs(tmp_path, caplog, capsys):
    def corruptions():
        return create_noise("imagenet_c", corruptions=["contrast"], severities=[1, 2])

    with caplog.at_level("INFO", logger="robustart"):
        _run(tmp_path / "log", corruptions, 1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("condition ")]
    assert lines[0].startswith("condition 1/3 clean/clean: 10 images in") and "2 to go, ETA " in lines[0]
    assert lines[-1].startswith("condition 3/3 imagenet_c/contrast severity=2") and lines[-1].endswith("0 to go")

    data = TensorDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    noise = corruptions()
    parts.run_parts(tmp_path / "bar", parts.units(noise, data), _model(), noise, batch_size=4, num_workers=0,
                    device="cpu", bar=True)  # fmt: skip
    assert "[3/3] imagenet_c/contrast severity=2" in capsys.readouterr().err
