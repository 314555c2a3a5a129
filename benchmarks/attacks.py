"""The platform's overhead over calling pyautoattack directly: same model, images, attack and seeds, in one run.

Model: the zoo's ``cifar_resnet18`` with the CIFAR-10 weights pyautoattack ships. Images: the 20 labelled
CIFAR-10 test images foolbox ships. Each repeat times

- **direct**: pyautoattack's own classes called directly (``APGDAttack(...).perturb`` or
  ``AutoAttack(...).run_standard_evaluation``), then one forward pass to score the adversarial images;
- **platform**: a robustart run of the same attack through ``robustart.evaluate`` (the engine behind the command
  line: the registered noise, clean pass, attack, scoring, per-sample rows, metrics, Parquet files, manifest
  and ``done`` marker), on the same images held in memory.

The two alternate (their order swaps every repeat) so that drifting machine load hits both alike; the
table gives every repeat and the medians; the overhead is the median of the paired ratios. Both must find
the same robust accuracy.

    python benchmarks/attacks.py [--attack apgd_ce|autoattack] [--steps 100] [--samples 20] [--repeats 3]
                                 [--threads N]

Wall time is the target; CPU time (of this process) is printed beside it because it is less disturbed by
other work on a shared machine. On a busy machine, ``--threads 1`` steadies both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustart import model_zoo
from robustart.noise.adversarial import parse_eps


def cifar10_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (at most 20) of foolbox's labelled CIFAR-10 test images: uint8 NCHW and labels."""
    folder = Path(find_spec("foolbox").submodule_search_locations[0]) / "data"
    files = sorted(p for p in folder.iterdir() if p.name.startswith("cifar10_"))[:n]
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    labels = [int(p.stem.rsplit("_", 1)[1]) for p in files]  # names end in the label
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


def run_direct(model, x: torch.Tensor, y: torch.Tensor, args) -> int:
    """pyautoattack called directly; returns the number of images still classified correctly."""
    if args.attack == "autoattack":
        from pyautoattack import AutoAttack

        attack = AutoAttack(model, eps=args.budget, norm="Linf", version="standard", seed=args.seed, device=x.device)
        attack.verbose = False
        adv, _ = attack.run_standard_evaluation(x, y, batch_size=len(x))
    else:
        from pyautoattack.autopgd_base import APGDAttack

        attack = APGDAttack(model, n_iter=args.steps, norm="Linf", n_restarts=1, eps=args.budget, seed=args.seed,
                            loss="ce", device=x.device)  # fmt: skip
        adv = attack.perturb(x, y)
    with torch.no_grad():
        return int((model(adv).argmax(1) == y).sum())


def run_platform(model, images: torch.Tensor, labels: torch.Tensor, args, folder: Path) -> int:
    """The same attack as a robustart run (``robustart.evaluate``: the engine the command line uses, writing a
    run folder); returns the number of images still classified correctly, read from the run's metrics."""
    import robustart

    options = {"eps": [args.eps], "seed": args.seed, **({"steps": args.steps} if args.attack != "autoattack" else {})}
    data = torch.utils.data.TensorDataset(images, labels)
    with contextlib.redirect_stdout(io.StringIO()):
        results = robustart.evaluate(model, data, {args.attack: options}, results_dir=folder, batch_size=len(images),
                                     device="cpu", data_name="cifar10_foolbox")  # fmt: skip
    row = results.metrics.query("metric == 'robust_acc'").iloc[0]
    return round(row["value"] * row["n"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", choices=["apgd_ce", "autoattack"], default="apgd_ce")
    parser.add_argument("--steps", type=int, default=100, help="APGD-CE iterations (AutoAttack: its own 100)")
    parser.add_argument("--eps", default="8/255", help="Linf budget, a number or a fraction")
    parser.add_argument("--samples", type=int, default=20, help="images (foolbox ships 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    args.budget = parse_eps(args.eps)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = model_zoo.create_model("cifar_resnet18", weights="pretrained").eval()
    images, labels = cifar10_images(args.samples)
    x = images.float() / 255
    with torch.no_grad():
        clean = int((model(x).argmax(1) == labels).sum())  # also warms up the kernels
    what = f"{args.attack} ({args.steps} steps)" if args.attack == "apgd_ce" else "autoattack (standard)"
    print(f"{what}, Linf eps {args.eps}, cifar_resnet18, {len(x)} foolbox CIFAR-10 images "
          f"({clean} correct when clean), cpu, torch threads {torch.get_num_threads()}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tiny = argparse.Namespace(**{**vars(args), "steps": 1})  # imports and first-call set-up, untimed
        run_direct(model, x[:2], labels[:2], tiny)
        run_platform(model, images[:2], labels[:2], tiny, Path(tmp) / "warm-up")
        print(f"{'repeat':<8}{'first':<10}{'direct s':>10}{'platform s':>12}{'ratio':>8}"
              f"{'direct cpu s':>15}{'platform cpu s':>16}{'ratio':>8}")  # fmt: skip
        wall, cpu, robust = {"direct": [], "platform": []}, {"direct": [], "platform": []}, set()
        for r in range(args.repeats):
            order = ["direct", "platform"] if r % 2 == 0 else ["platform", "direct"]
            for which in order:
                start, start_cpu = time.perf_counter(), time.process_time()
                if which == "direct":
                    robust.add(("direct", run_direct(model, x, labels, args)))
                else:
                    robust.add(("platform", run_platform(model, images, labels, args, Path(tmp) / f"r{r}")))
                wall[which].append(time.perf_counter() - start)
                cpu[which].append(time.process_time() - start_cpu)
            print(f"{r + 1:<8}{order[0]:<10}{_cells(wall, cpu, -1)}")
    print(f"{'median':<18}{_cells(wall, cpu, None)}")
    ratios = [p / d for d, p in zip(wall["direct"], wall["platform"], strict=True)]
    best = min(wall["platform"]) / min(wall["direct"])
    print(f"platform overhead over calling pyautoattack directly: {statistics.median(ratios) - 1:+.1%} of the wall "
          f"time (median of {len(ratios)} paired repeats; best against best: {best - 1:+.1%})")  # fmt: skip
    print("robust (correct after the attack): " + ", ".join(f"{k} {v}/{len(x)}" for k, v in sorted(robust)))
    if len({v for _, v in robust}) != 1:
        raise SystemExit("the platform and the direct call disagree on robust accuracy")


def _cells(wall: dict, cpu: dict, index: int | None) -> str:
    """Wall and CPU seconds of both paths with their ratios: of repeat ``index``, or the medians (``None``)."""
    pick = statistics.median if index is None else (lambda times: times[index])
    wd, wp, cd, cp = (pick(t[k]) for t in (wall, cpu) for k in ("direct", "platform"))
    return f"{wd:>10.2f}{wp:>12.2f}{wp / wd:>8.3f}{cd:>15.2f}{cp:>16.2f}{cp / cd:>8.3f}"


if __name__ == "__main__":
    main()
