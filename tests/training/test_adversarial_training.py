"""Adversarial training works: on Fashion-MNIST, PGD training lifts PGD robust accuracy far above the standard
recipe's, with the same model and budget; one command trains then evaluates, and a second reuses the checkpoint."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import run_cli, run_dirs

# a quarter epoch of Fashion-MNIST, then PGD-10 at eps 0.1 on 1000 test images
COMMON = ["model=small_cnn", "data=fashion_mnist", "noise=pgd_linf", "noise.eps=[0.1]", "noise.steps=10",
          "evaluation.max_samples=1000", "training.epochs=0.25"]  # fmt: skip
ADVERSARIAL = ["training=pgd_at", "training.adversarial.eps=0.1", "training.adversarial.steps=5"]


def _metric(run_dir, metric: str) -> float:
    frame = pd.read_parquet(run_dir / "metrics.parquet")
    return float(frame[frame.metric == metric].value.iloc[0])


@pytest.mark.slow
@pytest.mark.cli
def test_pgd_training_beats_standard_training_by_20_points_under_pgd(workspace, capsys):
    results, _ = workspace
    standard = run_cli("training=standard", *COMMON)
    assert standard.returncode == 0, standard.stderr[-3000:]
    adversarial = run_cli(*ADVERSARIAL, *COMMON)
    assert adversarial.returncode == 0, adversarial.stderr[-3000:]
    assert "training small_cnn with recipe 'standard+pgd_at'" in adversarial.stdout
    by_recipe = {
        ("pgd_at" if "pgd_at" in (d / "manifest.json").read_text() else "standard"): d for d in run_dirs(results)
    }
    std, adv = ({m: _metric(by_recipe[r], m) for m in ("top1", "robust_acc")} for r in ("standard", "pgd_at"))
    with capsys.disabled():
        print(f"\nstandard: clean {std['top1']:.1%} PGD {std['robust_acc']:.1%}; "
              f"pgd_at: clean {adv['top1']:.1%} PGD {adv['robust_acc']:.1%}")  # fmt: skip
    assert adv["robust_acc"] - std["robust_acc"] >= 0.20

    # a second evaluation of the same training config reuses its checkpoint
    again = run_cli(*ADVERSARIAL, *COMMON, "noise.steps=20")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing checkpoint" in again.stdout and "training small_cnn" not in again.stdout
