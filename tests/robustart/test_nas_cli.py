"""NAS subnets through the command line: a supernet trained once, subnets cut from it with their genes as columns."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from robustart import store
from robustart.model_zoo import nas
from tests.conftest import run_cli, run_dirs

# a supernet trained for a few steps; FGSM at one eps on 64 test images
SUPERNET = [
    "model=nas_subnet",
    "training=supernet",
    "training.epochs=0.001",
    "training.batch_size=32",
    "data=fashion_mnist",
    "noise=fgsm",
    "noise.eps=[0.1]",
    "evaluation.max_samples=64",
    "evaluation.batch_size=32",
    "model.bn_batches=2",
]


@pytest.mark.slow  # two CLI runs that train and cut subnets, about a minute on 2 cores
@pytest.mark.cli
def test_supernet_is_trained_once_and_each_subnet_is_cut_from_it(workspace):
    results, cache = workspace
    small, large = nas.smallest_id(), nas.largest_id()
    first = run_cli(*SUPERNET, f"model.subnet={small}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "supernet: each step trains the largest, the smallest and 2 random subnets" in first.stdout
    [checkpoint] = cache.glob("checkpoints/nas_supernet-fashion_mnist-supernet-*")
    card = json.loads((checkpoint / "checkpoint.json").read_text())
    assert card["entry"] == "nas_supernet" and "subnet" not in card["model"]

    second = run_cli(*SUPERNET, f"model.subnet={large}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing checkpoint" in second.stdout and "supernet: each step" not in second.stdout
    assert f"subnet {large} cut from nas_supernet" in second.stdout

    frames = {}
    for run_dir in run_dirs(results):
        metrics = pq.read_table(run_dir / store.METRICS_FILE).to_pandas()
        [subnet] = set(metrics["subnet"])
        frames[subnet] = metrics
        manifest = json.loads((run_dir / store.MANIFEST_FILE).read_text())
        assert manifest["model"]["genes"]["subnet"] == subnet
        assert manifest["checkpoint"]["config_hash"] == card["config_hash"]
    assert set(frames) == {small, large}
    for subnet, metrics in frames.items():
        genes = nas.decode(subnet).as_dict(28)
        assert (metrics["family"] == "nas").all() and metrics["weights"].eq(f"robustart:{card['config_hash']}").all()
        for gene, value in genes.items():
            assert (metrics[f"nas_{gene}"] == value).all(), gene
        assert (metrics["input_size"] == genes["resolution"]).all()
    assert frames[small]["flops"].iloc[0] < frames[large]["flops"].iloc[0]
    assert frames[small]["params"].iloc[0] < frames[large]["params"].iloc[0]
