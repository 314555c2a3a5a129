"""The colour CPU-scale family study (``experiment=family_comparison_cifar``), shrunk to seconds: its own sweep's
jobs on the JPEG copy of CIFAR-10, a few training steps and a few images, then the tidy comparison over them."""

from __future__ import annotations

import numpy as np
import pytest

from robustart import compare
from robustart.run import run
from tests.conftest import REPO, compose_config, sweep_jobs

CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg"
#: what makes each of the study's noises small; the rest of each job is the study's own
SHRINK = {
    "cifar_family": ["noise.members.pgd_linf.steps=2", "noise.members.imagenet_c.corruptions=[fog,contrast]",
                     "noise.members.imagenet_c.severities=[1,5]"],
    "imagenet_s": ["noise.decoders=[pil,opencv]", "noise.resizers=[pil_bilinear]"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.trains
@pytest.mark.skipif(not CIFAR.is_dir(), reason="the JPEG copy of CIFAR-10 is not in ../shared/data here")
def test_shrunk_family_comparison_cifar_sweeps_and_compares(shared_workspace):
    results, _ = shared_workspace
    small = ["training.epochs=0.01", f"data.root={CIFAR}", f"paths.results_dir={results}"]
    jobs = sweep_jobs("family_comparison_cifar", ("model=small_cnn,nas_subnet_smallest",))
    assert len(jobs) == 4  # 2 models x 2 noises
    for job in jobs:
        noise = next(o.split("=", 1)[1] for o in job if o.startswith("noise="))
        run(compose_config([*job, *small, "evaluation.max_samples=20", *SHRINK[noise]]))
    autoattack = ["model=small_cnn", "noise=autoattack", "noise.eps=[8/255]", "evaluation.max_samples=10"]
    run(compose_config(["experiment=family_comparison_cifar", *small, *autoattack]))  # reuses small_cnn's checkpoint

    tidy = compare.table(results)
    robust = compare.table(results, metrics=["robust_acc"])  # every attack's (the default shows one per metric)
    pgd = robust[robust["noise"] == "pgd_linf"]
    assert len(pgd) == 4 and (pgd["runs"] == 1).all() and set(pgd["steps"]) == {2}  # per model and budget
    assert sorted(np.round(pgd["eps"] * 255).unique()) == [2, 8] and set(pgd["norm"]) == {"Linf"}
    assert set(robust.loc[robust["noise"] == "autoattack", "model"]) == {"small_cnn"}
    assert set(tidy["recipe"]) == {"adamw_cosine"} and set(tidy["data"]) == {"cifar10"}
    corruption = tidy[(tidy["noise"] == "imagenet_c") & (tidy["measure"].str.endswith("acc"))]
    assert set(corruption["param_set"]) == {"cifar"}  # CIFAR-10-C's parameters for 32 px images
    assert {"sys_mean", "top1"} <= {m.rsplit(":", 1)[-1] for m in tidy["measure"]}
    families = tidy.drop_duplicates("model").set_index("model")["family"].to_dict()
    assert families == {"small_cnn": "cnn", "nas_subnet#0": "nas"}
