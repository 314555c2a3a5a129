"""Training that survives SIGKILL, and data parallelism: batches as a function of the step, a killed run that
resumes to the same weights, two processes under torchrun that match one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robustart import model_zoo
from robustart.data import TensorDataset
from robustart.run import UserError, run
from robustart.training import fit, load_state
from robustart.training.distributed import environment, first_host
from robustart.training.fit import StepBatches
from tests.conftest import REPO, compose_config, run_cli


def test_processes_split_each_global_batch_and_steps_are_reproducible():
    one = list(StepBatches(100, 8, seed=3, start=0, total=30))
    assert len(one) == 30 and all(len(b) == 8 for b in one)
    epoch = [i for b in one[:12] for i in b]
    assert len(epoch) == len(set(epoch))  # no sample twice in an epoch
    parts = [list(StepBatches(100, 8, seed=3, start=0, total=30, rank=r, world=2)) for r in range(2)]
    assert [a + b for a, b in zip(*parts, strict=True)] == one
    assert list(StepBatches(100, 8, seed=3, start=17, total=30)) == one[17:]
    assert list(StepBatches(100, 8, seed=4, start=0, total=30)) != one


def test_world_from_torchrun_and_slurm_variables():
    assert not environment({}).distributed
    torchrun = environment({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_PORT": "1234"})
    assert (torchrun.rank, torchrun.size, torchrun.master_port, torchrun.source) == (1, 4, 1234, "torchrun")
    slurm = environment({"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "3", "SLURM_JOB_ID": "4242",
                         "SLURM_JOB_NODELIST": "gpu[07-08,11]"})  # fmt: skip
    assert (slurm.rank, slurm.size, slurm.local_rank, slurm.master_addr) == (3, 8, 3, "gpu07")
    assert slurm.master_port == 20000 + 4242 and slurm.source == "slurm"
    assert not environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).distributed
    assert first_host("node1,node2") == "node1" and first_host("a[3]") == "a3"


def _toy(n=64):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randint(0, 255, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                         torch.randint(0, 10, (n,), generator=g))  # fmt: skip


def test_a_state_of_another_config_is_refused(tmp_path, workspace):
    state = tmp_path / "state.pt"
    fit(model_zoo.create_model("small_cnn"), _toy(), epochs=3, batch_size=16, checkpoint_every=2, state_file=state,
        state_key="someone-else")  # fmt: skip
    assert load_state(state, "someone-else")["step"] == 10
    with pytest.raises(ValueError, match="belongs to training config 'someone-else'"):
        fit(model_zoo.create_model("small_cnn"), _toy(), batch_size=16, state_file=state, state_key="mine")
    with pytest.raises(UserError, match="belongs to training config 'someone-else'"):
        run(compose_config(["training=quickstart", f"training.resume={state}", "noise=clean"]))
    with pytest.raises(UserError, match="no such training state file"):
        run(compose_config(["training=quickstart", f"training.resume={tmp_path / 'none.pt'}", "noise=clean"]))


# every source of randomness a recipe has: shuffling, RandAugment (Python's), Mixup (NumPy's), dropout and
# FGSM's random start (torch's), and an EMA on top
RANDOM_RECIPE = [
    "training=[quickstart,randaugment,mixup,dropout,fgsm_at,ema]", "training.batch_size=32",
    f"training.epochs={48 * 32 / 60_000}", "training.checkpoint_every=4", "training.adversarial.eps=0.1",
    "noise=clean", "evaluation.max_samples=64",
]  # fmt: skip


def _card(cache: Path) -> dict:
    [card] = cache.glob("checkpoints/*/checkpoint.json")
    return json.loads(card.read_text())


class _Interrupted(Exception):
    pass


class _StopAfter(torch.utils.data.Dataset):
    """The toy data, interrupting training at its ``n + 1``-th item (a crash part way through a step)."""

    def __init__(self, data, n):
        self.data, self.n, self.count = data, n, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.count += 1
        if self.count > self.n:
            raise _Interrupted
        return self.data[i]


@pytest.mark.parametrize(
    "technique",
    [{}, {"augment": "rand-m9-mstd0.5-inc1"}, {"mixup": 0.2, "cutmix": 1.0}, {"ema": 0.999},
     {"adversarial": {"method": "fgsm", "eps": 0.1}}, {"augment": "augmix-m3-w3", "augmix_jsd": True}],
)  # fmt: skip
def test_an_interrupted_fit_resumes_to_the_same_weights(technique, tmp_path):
    def weights(model):
        return torch.cat([v.flatten().float() for v in model.state_dict().values()])

    options = {"epochs": 2, "batch_size": 32, "checkpoint_every": 4, "state_key": "k", **technique}
    torch.manual_seed(0)
    straight = model_zoo.create_model("small_cnn", drop_rate=0.2)
    fit(straight, _toy(320), **options)
    state = tmp_path / "state.pt"
    torch.manual_seed(0)
    with pytest.raises(_Interrupted):
        fit(model_zoo.create_model("small_cnn", drop_rate=0.2), _StopAfter(_toy(320), 7 * 32 + 5), state_file=state,
            **options)  # fmt: skip
    torch.manual_seed(1)  # a different initialisation: the state must replace it
    resumed = model_zoo.create_model("small_cnn", drop_rate=0.2)
    metrics = fit(resumed, _toy(320), state_file=state, **options)
    assert metrics["resumed_from"] == 4 and metrics["steps"] == 20
    assert torch.equal(weights(straight), weights(resumed))


@pytest.mark.slow
@pytest.mark.cli
def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ROBUSTART_RESULTS": str(tmp_path / "results")}
    straight = run_cli(*RANDOM_RECIPE, env={"ROBUSTART_CACHE": str(tmp_path / "a"), **env})
    assert straight.returncode == 0, straight.stderr[-3000:]

    cache = tmp_path / "b"
    env_b = {**env, "ROBUSTART_CACHE": str(cache), "ROBUSTART_RESULTS": str(tmp_path / "results_b")}
    kills = []
    for _ in range(3):  # kill it three times at the first saved state it has not been killed at
        proc = subprocess.Popen([sys.executable, "-m", "robustart", *RANDOM_RECIPE], cwd=REPO, env=env_b,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            states = list(cache.glob("checkpoints/*/train_state.pt"))
            if states:
                step = _saved_step(states[0])
                if step is not None and step not in kills:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills.append(step)
                    break
            time.sleep(0.02)
        else:
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert len(kills) == 3 and kills == sorted(kills)
    resumed = run_cli(*RANDOM_RECIPE, env=env_b)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {kills[-1]}/48" in resumed.stdout or "resuming from step" in resumed.stdout
    a, b = _card(tmp_path / "a"), _card(cache)
    assert b["final_metrics"]["resumed_from"] >= kills[-1] and "resumed_from" not in a["final_metrics"]
    assert a["sha256"] == b["sha256"]  # bit-identical weights
    assert a["final_metrics"]["train_loss"] == pytest.approx(b["final_metrics"]["train_loss"], rel=1e-6)


def _saved_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:  # replaced while being read: look again
        return None


@pytest.mark.slow
@pytest.mark.cli
def test_two_processes_under_torchrun_match_one(tmp_path, capsys):
    """Same global batch over 2 gloo processes: the weights and accuracy of one process, up to float rounding
    (gradients averaged over two halves instead of summed over the whole). The model has no batch norm, whose
    statistics each process would take over its own half batch."""
    args = ["model=small_mixer", "training=quickstart", "training.batch_size=64", f"training.epochs={40 * 64 / 60_000}",
            "noise=clean", "evaluation.max_samples=1000"]  # fmt: skip
    env = {"ROBUSTART_RESULTS": str(tmp_path / "r1"), "ROBUSTART_CACHE": str(tmp_path / "c1")}
    one = run_cli(*args, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    env2 = {**os.environ, "HF_HUB_OFFLINE": "1", "ROBUSTART_RESULTS": str(tmp_path / "r2"),
            "ROBUSTART_CACHE": str(tmp_path / "c2")}  # fmt: skip
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "robustart", *args],
        cwd=REPO, env=env2, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout and "rank 0 merges them" in two.stdout
    a, b = _card(tmp_path / "c1"), _card(tmp_path / "c2")
    assert b["processes"] == 2 and a["processes"] == 1 and a["final_metrics"]["steps"] == b["final_metrics"]["steps"]
    wa = _weights(tmp_path / "c1")
    wb = _weights(tmp_path / "c2")
    assert ((wa - wb).norm() / wa.norm()).item() < 1e-3
    acc = [_top1(tmp_path / r) for r in ("r1", "r2")]
    with capsys.disabled():
        print(f"\n1 process: top1 {acc[0]:.1%}; 2 processes: top1 {acc[1]:.1%}; "
              f"weights differ by {((wa - wb).norm() / wa.norm()).item():.1e} (relative L2)")  # fmt: skip
    assert abs(acc[0] - acc[1]) <= 0.003 and min(acc) > 0.5


def _weights(cache: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    [path] = cache.glob("checkpoints/*/model.safetensors")
    state = load_file(path)
    return torch.cat([v.flatten().float() for k, v in sorted(state.items()) if "running" not in k and v.dim() > 0])


def _top1(results: Path) -> float:
    import pandas as pd

    [metrics] = results.glob("*/metrics.parquet")
    frame = pd.read_parquet(metrics)
    return float(frame[frame.metric == "top1"].value.iloc[0])
