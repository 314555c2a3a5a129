"""One process at a time per run (robustart.locking): the lock names its holder, a killed holder frees it, a second
process waits or exits with status 2, and a run marked done whose tables are missing or unreadable is redone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import robustart
from robustart import locking, parts, store
from robustart.errors import UserError
from robustart.identity import identity, run_directory
from robustart.run import lock_run, run
from tests.conftest import FAST, REPO, assert_user_error, compose_config, run_cli

#: a run without training: random weights, 16 images, clean only (seconds, in-process)
SMALL = ["model=small_cnn", "noise=clean", "data=fashion_mnist", "evaluation.max_samples=16"]
#: the shrunk quickstart cut to 7 conditions: clean, PGD at 3 budgets, contrast at 2 severities, one system noise
SHRUNK = [*FAST, "evaluation.max_samples=32", "noise.members.imagenet_c.corruptions=[contrast]",
          "noise.members.imagenet_s.decoders=[pil]", "noise.members.imagenet_s.resizers=[pil_bilinear]"]  # fmt: skip

#: holds the lock of argv[1] (run id argv[2]) until its stdin closes
HOLD = """
import sys
from robustart.locking import acquire
lock = acquire(sys.argv[1], sys.argv[2])
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def hold(run_dir: Path, run_id: str = "abc") -> subprocess.Popen:
    """Another process that holds the lock of ``run_dir`` until its stdin is closed (or it is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), run_id], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def let_go(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def holder_line(run_dir: Path, run_id: str) -> str:
    return f"run {run_id} is being evaluated by {locking.read_holder(run_dir)}"


# ---------------------------------------------------------------------------------------------------- the lock


def test_another_process_sees_the_holder_and_a_killed_holder_frees_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    try:
        with pytest.raises(locking.RunLocked) as raised:
            locking.acquire(run_dir, "abc", "exit")
        info = json.loads((run_dir / locking.LOCK_FILE).read_text())
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
        assert abs(datetime.fromisoformat(info["since"]).timestamp() - time.time()) < 120
        assert str(raised.value) == (
            f"run abc is being evaluated by process {holder.pid} on {info['host']} since {info['since']}"
        )
        assert isinstance(raised.value, UserError)
    finally:
        holder.kill()  # SIGKILL: no release, the kernel drops the lock
        holder.wait()
    assert (run_dir / locking.LOCK_FILE).is_file()  # left behind, naming the dead holder
    with locking.acquire(run_dir, "abc", "exit") as lock:
        assert lock.held and json.loads((run_dir / locking.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (run_dir / locking.LOCK_FILE).exists()  # a clean release deletes the file


def test_a_waiter_logs_the_holder_once_and_takes_the_lock_when_it_goes(tmp_path, caplog):
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    expected = holder_line(run_dir, "abc")
    timer = threading.Timer(1.0, let_go, [holder])
    timer.start()
    t = time.monotonic()
    with caplog.at_level("INFO", logger="robustart"), locking.acquire(run_dir, "abc", "wait") as lock:
        assert lock.held and time.monotonic() - t > 0.5
    timer.join()
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert waits == [f"{expected}; waiting"]


def test_forked_children_do_not_keep_the_lock(tmp_path):
    """A data-loader worker forked while the lock is held must not hold it on after its parent is killed."""
    run_dir = tmp_path / "run"
    script = (
        "import os, sys, time\nfrom robustart.locking import acquire\nlock = acquire(sys.argv[1], 'abc')\n"
        "if os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\nprint('held', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10  # the child closes its copy just after the fork: a moment later
        while True:
            try:
                lock = locking.acquire(run_dir, "abc", "exit")  # the child sleeps on, but does not hold the lock
                break
            except locking.RunLocked:
                assert time.monotonic() < deadline, "the forked child holds the lock"
                time.sleep(0.05)
        lock.release()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_if_locked_takes_wait_or_exit_and_leaves_the_run_id_alone():
    base = compose_config(SMALL)
    for value in locking.IF_LOCKED:
        cfg = compose_config([*SMALL, f"evaluation.if_locked={value}"])
        assert identity(cfg) == identity(base) and run_directory(cfg)[0] == run_directory(base)[0]
    with pytest.raises(UserError, match=r"if_locked='soon' is not valid; choose one of: wait, exit"):
        locking.check_if_locked("soon")


# ------------------------------------------------------------------------------------------- runs, in-process


def test_a_locked_run_exits_with_the_holder_and_other_ranks_never_lock(shared_workspace):
    cfg = compose_config([*SMALL, "evaluation.if_locked=exit"])
    run_id, run_dir = run_directory(cfg)
    holder = hold(run_dir, run_id)
    try:
        with pytest.raises(locking.RunLocked) as raised:
            run(cfg)
        assert str(raised.value) == holder_line(run_dir, run_id)
        from robustart.training.distributed import World

        # a rank other than 0 leaves the lock to its rank 0 (one process here: nothing to share)
        assert lock_run(run_id, run_dir, "exit", World(rank=1, size=2)) == (None, False)
    finally:
        let_go(holder)
    assert not store.is_done(run_dir)


def test_a_done_run_without_its_metrics_is_redone(shared_workspace, caplog):
    first = run(compose_config(SMALL))
    metrics = pq.read_table(first.run_dir / store.METRICS_FILE).to_pandas()
    assert run(compose_config(SMALL)).skipped
    (first.run_dir / store.METRICS_FILE).unlink()
    with caplog.at_level("WARNING", logger="robustart"):
        again = run(compose_config(SMALL))
    assert not again.skipped and store.finished(again.run_dir)
    assert f"{first.run_dir} is marked done but metrics.parquet is missing" in caplog.text
    redone = pq.read_table(again.run_dir / store.METRICS_FILE).to_pandas()
    keys = ["run_id", "noise", "metric", "condition", "n"]  # a zoo model's random weights differ from run to run
    pd.testing.assert_frame_equal(redone[keys], metrics[keys])
    assert not (again.run_dir / locking.LOCK_FILE).exists()


def test_tables_that_cannot_be_read_are_found_from_their_footers(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / store.METRICS_FILE)
    (tmp_path / store.PREDICTIONS_FILE).write_bytes((tmp_path / store.METRICS_FILE).read_bytes())
    (tmp_path / store.MANIFEST_FILE).write_text("{}")
    assert not store.finished(tmp_path)  # no done marker
    (tmp_path / store.DONE_FILE).write_text("done\n")
    assert store.table_problem(tmp_path) is None and store.finished(tmp_path)
    cut = (tmp_path / store.PREDICTIONS_FILE).read_bytes()
    (tmp_path / store.PREDICTIONS_FILE).write_bytes(cut[: len(cut) // 2])  # cut short: no footer
    assert store.table_problem(tmp_path).startswith("predictions.parquet is unreadable")
    (tmp_path / store.PREDICTIONS_FILE).write_bytes(cut)
    (tmp_path / store.MANIFEST_FILE).write_text("{not json")
    assert store.table_problem(tmp_path).startswith("manifest.json is unreadable")
    (tmp_path / store.MANIFEST_FILE).unlink()
    assert store.table_problem(tmp_path) == "manifest.json is missing" and not store.finished(tmp_path)


def test_evaluate_locks_its_run_and_redoes_a_done_run_without_tables(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    data = torch.utils.data.TensorDataset(torch.randint(0, 256, (12, 1, 4, 4), dtype=torch.uint8),
                                          torch.randint(0, 3, (12,)))  # fmt: skip
    results = tmp_path / "results"
    with pytest.raises(UserError, match="if_locked='never' is not valid; choose one of: wait, exit"):
        robustart.evaluate(net, data, "clean", results_dir=results, if_locked="never")
    first = robustart.evaluate(net, data, "clean", results_dir=results, name="tiny")
    run_id = first.manifest["run_id"]
    (first.run_dir / store.PREDICTIONS_FILE).unlink()
    holder = hold(first.run_dir, run_id)
    try:
        with pytest.raises(locking.RunLocked, match=f"run {run_id} is being evaluated by process {holder.pid} on "):
            robustart.evaluate(net, data, "clean", results_dir=results, name="tiny", if_locked="exit")
    finally:
        let_go(holder)
    again = robustart.evaluate(net, data, "clean", results_dir=results, name="tiny", if_locked="exit")
    assert not again.cached and store.finished(again.run_dir)
    pd.testing.assert_frame_equal(again.metrics, first.metrics)
    assert robustart.evaluate(net, data, "clean", results_dir=results, name="tiny").cached


# ---------------------------------------------------------------------------------------- runs, as processes


def _start(out: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(out, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "robustart", *SHRUNK, *overrides], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def _until(condition, proc: subprocess.Popen | None = None, out: Path | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode}:\n{out.read_text()[-3000:] if out else ''}")
        assert time.monotonic() < deadline, out.read_text()[-3000:] if out else "timed out"
        time.sleep(0.02)


def _committed(run_dir: Path) -> int:
    return len(list(run_dir.glob(f"{parts.PARTS_DIR}/*/rank0of1.parquet")))


def _tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return tuple(pq.read_table(run_dir / f).to_pandas() for f in (store.METRICS_FILE, store.PREDICTIONS_FILE))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shared_cache):
    """The tables of one uninterrupted run of :data:`SHRUNK`, from the command line."""
    results = tmp_path_factory.mktemp("uninterrupted")
    proc = run_cli(*SHRUNK, env={"ROBUSTART_RESULTS": str(results), "ROBUSTART_CACHE": str(shared_cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = [p for p in results.iterdir() if p.is_dir()]
    return _tables(run_dir)


@pytest.mark.slow
@pytest.mark.cli
def test_a_second_process_exits_or_waits_and_skips_the_finished_run(shared_workspace, tmp_path, uninterrupted):
    run_id, run_dir = run_directory(compose_config(SHRUNK))
    first = _start(tmp_path / "first.log")
    try:
        _until(lambda: _committed(run_dir) >= 1, first, tmp_path / "first.log")
        first.send_signal(signal.SIGSTOP)  # the holder, paused mid-run: it keeps the lock
        assert locking.read_holder(run_dir).startswith(f"process {first.pid} on ")
        message = holder_line(run_dir, run_id)

        refused = run_cli(*SHRUNK, "evaluation.if_locked=exit")
        assert_user_error(refused, message)
        assert refused.stderr.strip().splitlines()[-1] == f"error: {message}"

        waiter = _start(tmp_path / "waiter.log")
        _until(lambda: "; waiting" in (tmp_path / "waiter.log").read_text(), waiter, tmp_path / "waiter.log")
        assert f"{message}; waiting" in (tmp_path / "waiter.log").read_text()
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
        assert waiter.wait(timeout=300) == 0, (tmp_path / "waiter.log").read_text()[-3000:]
    finally:
        first.kill()
    assert f"already done: {run_dir}" in (tmp_path / "waiter.log").read_text()
    assert "evaluating small_cnn" not in (tmp_path / "waiter.log").read_text()
    assert not (run_dir / locking.LOCK_FILE).exists() and not (run_dir / parts.PARTS_DIR).exists()
    for mine, theirs in zip(_tables(run_dir), uninterrupted):
        pd.testing.assert_frame_equal(mine, theirs)


@pytest.mark.slow
@pytest.mark.cli
def test_a_killed_holder_blocks_neither_a_restart_nor_a_waiter(shared_workspace, tmp_path, uninterrupted):
    """SIGKILL mid-run: a restart takes the lock at once (even with if_locked=exit) and resumes; a process waiting
    for a holder that is killed takes the lock and resumes."""
    run_dir = run_directory(compose_config(SHRUNK))[1]
    first = _start(tmp_path / "first.log")
    _until(lambda: _committed(run_dir) >= 1, first, tmp_path / "first.log")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not store.is_done(run_dir) and (run_dir / locking.LOCK_FILE).is_file()

    second = _start(tmp_path / "second.log", "evaluation.if_locked=exit")
    _until(lambda: _committed(run_dir) >= 2, second, tmp_path / "second.log")
    second.send_signal(signal.SIGSTOP)
    waiter = _start(tmp_path / "waiter.log")
    try:
        _until(lambda: "; waiting" in (tmp_path / "waiter.log").read_text(), waiter, tmp_path / "waiter.log")
    finally:
        second.kill()
        second.wait()
    assert waiter.wait(timeout=300) == 0, (tmp_path / "waiter.log").read_text()[-3000:]
    for log in ("second.log", "waiter.log"):
        assert "resuming:" in (tmp_path / log).read_text(), log
    assert store.finished(run_dir) and not (run_dir / locking.LOCK_FILE).exists()
    for mine, theirs in zip(_tables(run_dir), uninterrupted):
        pd.testing.assert_frame_equal(mine, theirs)


@pytest.mark.slow
@pytest.mark.cli
def test_torchrun_waits_for_the_lock_on_rank_0_alone(shared_workspace, tmp_path):
    """Two gloo processes of one run while another process holds its lock: rank 0 waits for it, rank 1 waits for
    rank 0 (not for the lock, and not in a collective that times out); both finish once the lock is free."""
    run_id, run_dir = run_directory(compose_config(SMALL))
    holder = hold(run_dir, run_id)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "torchrun.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 "-m", "robustart", *SMALL], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        out = tmp_path / "torchrun.log"
        _until(lambda: "; waiting" in out.read_text() and "process 1 of 2" in out.read_text(), proc, out)
        time.sleep(2)  # rank 1 now waits for rank 0's word
        assert not list(run_dir.glob(f"{parts.PARTS_DIR}/*/*"))
        let_go(holder)
        assert proc.wait(timeout=300) == 0, out.read_text()[-3000:]
    finally:
        holder.kill()
        proc.kill()
    assert store.finished(run_dir) and out.read_text().count("; waiting") == 1
    assert "process 1 of 2 evaluates batches 1" in out.read_text()
