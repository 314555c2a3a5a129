"""Robustness across a NAS search space: train one weight-sharing supernet, then measure many subnets.

The RobustART question for architectures found by search: among subnets of one space that share their
weights, how much do clean and adversarial accuracy vary, and which genes go with robustness?

1. Train ``nas_supernet`` on Fashion-MNIST with the sandwich rule and in-place distillation
   (:func:`robustart.training.supernet.fit_supernet`), on the CPU.
2. Take ``--subnets`` ids from ``model_zoo.nas.sample(n, seed)`` plus the smallest and the largest subnet.
3. For each: cut it from the supernet (:func:`robustart.model_zoo.nas.extract_subnet`), re-estimate its batch-norm
   statistics on ``--bn-batches`` training batches (:func:`robustart.model_zoo.nas.recalibrate_bn`), then measure
   clean accuracy and robust accuracy under an L-inf attack (torchattacks FGSM, or PGD) on the first
   ``--samples`` test images.
4. Print one row per subnet, then the spread of both accuracies across subnets, the largest against the
   smallest, and the Spearman correlations of robust accuracy with resolution, last-stage depth and total
   kernel size.

    python benchmarks/nas_study.py [--epochs 0.2] [--subnets 50] [--samples 1000] [--attack fgsm|pgd]
                                   [--eps 0.1] [--steps 5] [--bn-batches 5] [--seed 0] [--csv rows.csv]

With the defaults, training takes about 5 minutes on 2 CPU cores and the evaluation about 5 s per subnet.
FGSM is the default because after this short training PGD-5 at eps 0.1 leaves every subnet at 0-2% (no
spread to correlate with genes; ``--attack pgd --eps 0.03`` is a stronger alternative, about 20 s per subnet).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchattacks

from robustart import model_zoo
from robustart.data import TensorDataset, load_fashion_mnist
from robustart.model_zoo import NormalizedModel, nas
from robustart.training.supernet import fit_supernet


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    training = parser.add_argument_group("supernet training")
    training.add_argument("--train-samples", type=int, default=60000, help="first N Fashion-MNIST training images")
    training.add_argument("--epochs", type=float, default=0.2, help="passes over those images")
    training.add_argument("--batch-size", type=int, default=64)
    training.add_argument("--lr", type=float, default=0.2, help="peak SGD learning rate (cosine schedule)")
    training.add_argument("--num-random", type=int, default=2, help="random subnets per step (sandwich rule)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--subnets", type=int, default=50, help="sampled subnets (plus smallest and largest)")
    evaluation.add_argument("--samples", type=int, default=1000, help="first N test images")
    evaluation.add_argument("--attack", choices=("fgsm", "pgd"), default="fgsm")
    evaluation.add_argument("--eps", type=float, default=0.1, help="L-inf budget (images in [0, 1])")
    evaluation.add_argument("--steps", type=int, default=5, help="PGD steps (step size 2.5 * eps / steps)")
    evaluation.add_argument("--bn-batches", type=int, default=5, help="training batches that re-estimate batch norm")
    evaluation.add_argument("--batch-size-eval", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows to this CSV file")
    return parser.parse_args(argv)


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = pd.Series(x, dtype=float).rank().to_numpy(), pd.Series(y, dtype=float).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    with torch.no_grad():
        correct = sum(
            (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
            for i in range(0, len(images), batch_size)
        )
    return correct / len(images)


def robust_accuracy(model, images, labels, args) -> float:
    """Accuracy on adversarial images made by torchattacks against ``model`` (which takes [0, 1] images)."""
    if args.attack == "pgd":
        attack = torchattacks.PGD(model, eps=args.eps, alpha=2.5 * args.eps / args.steps, steps=args.steps)
    else:
        attack = torchattacks.FGSM(model, eps=args.eps)
    torch.manual_seed(args.seed)  # PGD's random start
    adversarial = torch.cat(
        [
            attack(images[i : i + args.batch_size_eval], labels[i : i + args.batch_size_eval])
            for i in range(0, len(images), args.batch_size_eval)
        ]
    )
    return accuracy(model, adversarial, labels, args.batch_size_eval)


def evaluate_subnet(supernet, subnet_id, calibration, images, labels, args) -> dict:
    genes = nas.decode(subnet_id)
    meta = model_zoo.get_metadata("nas_subnet", subnet=subnet_id)
    model = NormalizedModel(nas.extract_subnet(supernet, genes), meta).to(memory_format=torch.channels_last)
    nas.recalibrate_bn(model, calibration)
    row = {"subnet": subnet_id, **meta.genes, "params": meta.params, "flops": meta.flops}
    row["clean_acc"] = accuracy(model, images, labels, args.batch_size_eval)
    row["robust_acc"] = robust_accuracy(model, images, labels, args)
    row["genes"] = genes
    return row


def format_row(row: dict) -> str:
    g = row["genes"]
    joined = {key: "-".join(str(v) for v in getattr(g, key)) for key in ("depth", "kernel", "expand")}
    widths = "-".join(str(row[f"width_{i}"]) for i in range(1, nas.NUM_STAGES + 1))
    return (
        f"{row['subnet']:>10}  {row['resolution']:>3}  {joined['depth']:<9}  {joined['kernel']:<9}  "
        f"{joined['expand']:<9}  {widths:<14}  {row['params'] / 1e3:>6.0f}k  {row['flops'] / 1e6:>6.1f}M  "
        f"{row['clean_acc']:>6.1%}  {row['robust_acc']:>6.1%}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(os.path.expanduser(os.environ.get("ROBUSTART_CACHE", "~/.cache/robustart")))
    train, _ = load_fashion_mnist(None, cache, "train")
    test, _ = load_fashion_mnist(None, cache, "test")
    train = train.subset(args.train_samples)
    t_start = time.monotonic()

    torch.manual_seed(args.seed)
    model = model_zoo.create_model("nas_supernet")
    print(f"training nas_supernet on {len(train)} Fashion-MNIST images for {args.epochs} epochs ...", flush=True)
    metrics = fit_supernet(
        model, train, num_random=args.num_random, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        warmup_epochs=min(0.05, args.epochs / 10), seed=args.seed, progress=lambda m: print("  " + m, flush=True),
    )  # fmt: skip
    train_s = time.monotonic() - t_start
    print(f"trained in {train_s:.0f} s: largest subnet's train accuracy {metrics['train_acc']:.1%} (last epoch)\n")

    images = test.images[: args.samples].float().div(255)
    labels = test.labels[: args.samples]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    n_cal = args.bn_batches * args.batch_size
    cal = TensorDataset(train.images[order[:n_cal]], train.labels[order[:n_cal]])
    calibration = [cal.images[i : i + args.batch_size].float().div(255) for i in range(0, n_cal, args.batch_size)]

    ids = [nas.smallest_id(), nas.largest_id()]
    ids += [i for i in nas.sample(args.subnets, seed=args.seed) if i not in ids]
    attack = f"PGD-{args.steps}" if args.attack == "pgd" else "FGSM"
    print(f"{len(ids)} subnets, {len(images)} test images, {attack} L-inf eps {args.eps}, batch norm re-estimated on "
          f"{n_cal} training images\n")  # fmt: skip
    header = (
        f"{'subnet':>10}  {'res':>3}  {'depth':<9}  {'kernel':<9}  {'expand':<9}  {'width':<14}  "
        f"{'params':>7}  {'flops':>7}  {'clean':>6}  {'robust':>6}"
    )
    print(header + "\n" + "-" * len(header), flush=True)
    rows, t_eval = [], time.monotonic()
    for subnet_id in ids:
        rows.append(evaluate_subnet(model.net, subnet_id, calibration, images, labels, args))
        print(format_row(rows[-1]), flush=True)
    eval_s = time.monotonic() - t_eval

    table = pd.DataFrame(rows).drop(columns="genes")
    clean, robust = table["clean_acc"], table["robust_acc"]
    smallest, largest = rows[0], rows[1]
    print(
        f"\nclean accuracy : min {clean.min():.1%}  max {clean.max():.1%}  std {statistics.pstdev(clean):.2%}  "
        f"(over {len(rows)} subnets)"
    )
    print(f"robust accuracy: min {robust.min():.1%}  max {robust.max():.1%}  std {statistics.pstdev(robust):.2%}")
    print(
        f"largest vs smallest: clean {largest['clean_acc']:.1%} vs {smallest['clean_acc']:.1%}, "
        f"robust {largest['robust_acc']:.1%} vs {smallest['robust_acc']:.1%}, "
        f"FLOPs {largest['flops'] / 1e6:.1f}M vs {smallest['flops'] / 1e6:.1f}M"
    )
    for gene in ("resolution", "last_depth", "total_kernel", "total_depth", "flops"):
        print(
            f"Spearman(robust acc, {gene:<12}) = {spearman(robust, table[gene]):+.2f}   "
            f"(clean acc: {spearman(clean, table[gene]):+.2f})"
        )
    print(f"\ntraining {train_s:.0f} s, evaluation {eval_s:.0f} s ({eval_s / len(rows):.1f} s per subnet)")
    if args.csv is not None:
        table.to_csv(args.csv, index=False)
        print(f"rows written to {args.csv}")


if __name__ == "__main__":
    main()
