"""Golden pins: run ids and the fast quickstart's metrics table, recorded before the engine was reorganised.

A run id is a hash of everything that changes a result, so a refactor that keeps behaviour keeps every id; the
fast quickstart's metrics table is the whole pipeline's output (training, PGD, corruptions, system noise, scoring).
``PYTHONPATH=. python tests/robustart/test_golden.py`` rewrites the files; do that only for a change that is
meant to change results, and say which ids and numbers changed and why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST, compose_config, torch_threads

GOLDEN = Path(__file__).parent / "golden"
#: torch's intra-op threads the metrics golden was recorded with: a float32 sum split over another number of
#: threads rounds differently, so training on one thread (as each worker of a parallel test run does) or on a
#: 16-core machine's 16 moves a few predictions. The golden and its test pin this count.
GOLDEN_THREADS = 2

#: one override set per config group option a run id depends on: every noise, every data set, recipes, models
ID_CASES = {
    "quickstart": [],
    "quickstart_fast": FAST,
    **{f"noise_{n}": [f"noise={n}"] for n in (
        "apgd_ce", "apgd_l1", "apgd_t", "autoattack", "clean", "cw", "deepfool", "fab", "fgsm", "imagenet_c",
        "imagenet_p", "imagenet_s", "mim", "min_eps", "pgd_l2", "pgd_linf", "square", "wcar")},
    "noise_transfer": ["noise=transfer", "noise.source=small_resnet"],
    "pgd_options": ["noise=pgd_linf", "noise.eps=[1/255,4/255]", "noise.steps=7"],
    "imagenet_c_cifar": ["noise=imagenet_c", "noise.params=cifar", "noise.severities=[2,3]"],
    "train_standard": ["training=standard", "noise=clean"],
    "train_mixup_ema": ["training=[baseline_cnn,mixup,ema]", "noise=clean"],
    "train_pgd_at": ["training=[baseline_cnn,pgd_at]", "noise=clean"],
    "vit_imagenet": ["model=vit_b", "data=imagenet", "data.root=/data/val", "noise=imagenet_c"],
    "resnet50_pretrained": ["model=resnet50", "model.weights=pretrained", "data=imagenet", "data.root=/d",
                            "noise=pgd_linf"],
    "nas_subnet": ["model=nas_subnet", "model.subnet=7", "noise=clean"],
    "imagenet_a": ["model=resnet18", "data=imagenet_a", "data.root=/d", "noise=clean"],
    "imagenet_o": ["model=resnet18", "data=imagenet_o", "data.root=/d", "data.in_root=/v", "noise=clean"],
    "eval_options": ["evaluation.max_samples=100", "evaluation.batch_size=50", "seed=3", "noise=clean"],
}  # fmt: skip


def run_ids() -> dict[str, str]:
    from robustart.run import run_directory

    return {name: run_directory(compose_config(overrides))[0] for name, overrides in ID_CASES.items()}


def quickstart_metrics(results: Path) -> pd.DataFrame:
    """The fast quickstart's metrics, keyed and sorted, with the columns that describe the numbers; trained and
    evaluated on :data:`GOLDEN_THREADS` threads (the checkpoint cache must be fresh, or it was trained otherwise)."""
    from robustart.run import run

    with torch_threads(GOLDEN_THREADS):
        result = run(compose_config([*FAST, f"paths.results_dir={results}"]))
    keys = ["noise", "condition", "metric", "severity", "eps"]
    table = result.metrics[[*keys, "value", "ci_low", "ci_high", "n", "run_id", "weights"]]
    table = table.astype({"severity": "float64", "eps": "float64", "n": "float64"})
    return table.sort_values(keys, na_position="first").reset_index(drop=True)


def test_run_ids_unchanged():
    expected = json.loads((GOLDEN / "run_ids.json").read_text())
    assert run_ids() == expected


@pytest.mark.trains
def test_quickstart_metrics_unchanged(workspace):
    results, _ = workspace
    got = quickstart_metrics(results)
    expected = pd.read_csv(GOLDEN / "quickstart_fast_metrics.csv")
    keys = ["noise", "condition", "metric", "severity", "eps"]
    assert got[keys].astype(str).values.tolist() == expected[keys].astype(str).values.tolist()
    assert got["run_id"].tolist() == expected["run_id"].tolist()
    assert got["weights"].tolist() == expected["weights"].tolist()
    # Recorded on one CPU. Training and attacks run in float32, whose rounding differs with the CPU's vector
    # width (AVX2 or AVX-512) and the BLAS a release ships; that can flip the odd prediction among the 64 images,
    # i.e. move an accuracy by 1/64. Counts are exact; values may differ by at most two such flips.
    for column in ("value", "ci_low", "ci_high"):
        diff = (got[column].astype(float) - expected[column].astype(float)).abs().fillna(0)
        assert diff.max() <= 2 / 64 + 1e-9, got.loc[diff.idxmax(), keys].to_dict()
    assert (got["n"].fillna(-1) == expected["n"].fillna(-1)).all()


if __name__ == "__main__":  # rewrite the goldens
    import os
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / "run_ids.json").write_text(json.dumps(run_ids(), indent=1, sort_keys=True) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ROBUSTART_CACHE"] = str(Path(tmp) / "cache")
        quickstart_metrics(Path(tmp) / "results").to_csv(GOLDEN / "quickstart_fast_metrics.csv", index=False)
    print("goldens written to", GOLDEN, file=sys.stderr)
