"""Throughput of the ImageNet-C engine against the reference implementation, in one run.

For each corruption and severity: images/s of ``noise.natural.corrupt`` on a batch of real 224 x 224
photographs versus ``imagecorruptions-imaug`` (the reference, one image at a time, as it works) on the
same images, and their ratio. Then the throughput of evaluating a model under on-the-fly corruptions
as a fraction of the bare model's inference throughput (same model, batch and machine).

    python benchmarks/corruptions.py [--batch 16] [--repeats 3] [--corruptions a,b] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch


def photos(n: int, size: int = 224) -> np.ndarray:
    """``n`` real photographs (scikit-image's samples, cycled and shifted), ``size`` px, uint8 HWC."""
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    out = []
    for i in range(n):
        image = Image.fromarray(sources[i % len(sources)])
        w, h = image.size
        scale = 256 / min(w, h)
        image = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        left = (image.size[0] - size) // 2 + (i // len(sources)) * 4
        top = (image.size[1] - size) // 2
        out.append(np.asarray(image.crop((left, top, left + size, top + size))))
    return np.stack(out)


def best_of(repeats: int, fn, min_time: float = 0.1) -> float:
    """Seconds per call of ``fn``: the best of ``repeats`` measurements, each of enough calls to last at
    least ``min_time`` s (as ``timeit`` does), so that fast conditions are not timed on one short call."""
    start = time.perf_counter()
    fn()
    calls = max(1, math.ceil(min_time / max(time.perf_counter() - start, 1e-9)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corruptions", default=None, help="comma-separated names (default: all implemented)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="resnet18", help="zoo model for the evaluation-throughput part")
    args = parser.parse_args()

    from imagecorruptions import corrupt as reference

    from robustart.noise.natural import BENCHMARK_CORRUPTIONS, CORRUPTIONS, corrupt

    names = args.corruptions.split(",") if args.corruptions else list(CORRUPTIONS)
    images = photos(args.batch)
    # a standard (NCHW-contiguous) batch, as a data loader delivers it
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous().to(args.device)
    ids = list(range(args.batch))
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch} x 224 px")
    print(f"{'corruption':<18}{'sev':>4}{'ours img/s':>12}{'reference img/s':>17}{'ratio':>8}")
    total_ours = total_ref = 0.0
    bench_ours = bench_ref = 0.0
    for name in names:
        for severity in range(1, 6):

            def ours(name=name, severity=severity):
                corrupt(x, name, severity, seed=0, sample_ids=ids)
                if x.is_cuda:
                    torch.cuda.synchronize()

            def ref(name=name, severity=severity):
                for image in images:
                    reference(image, corruption_name=name, severity=severity)

            ours()  # warm-up (kernel caches, first-call allocation; the reference's numba compilation)
            reference(images[0], corruption_name=name, severity=severity)
            t_ours, t_ref = best_of(args.repeats, ours), best_of(max(1, args.repeats - 1), ref)
            total_ours, total_ref = total_ours + t_ours, total_ref + t_ref
            if name in BENCHMARK_CORRUPTIONS:
                bench_ours, bench_ref = bench_ours + t_ours, bench_ref + t_ref
            print(
                f"{name:<18}{severity:>4}{args.batch / t_ours:>12.1f}{args.batch / t_ref:>17.1f}{t_ref / t_ours:>8.2f}"
            )
    print(f"{'all listed':<22}{args.batch * 5 * len(names) / total_ours:>12.1f}"
          f"{args.batch * 5 * len(names) / total_ref:>17.1f}{total_ref / total_ours:>8.2f}")  # fmt: skip
    if bench_ours:
        n = sum(name in BENCHMARK_CORRUPTIONS for name in names)
        print(f"{'benchmark ones':<22}{args.batch * 5 * n / bench_ours:>12.1f}"
              f"{args.batch * 5 * n / bench_ref:>17.1f}{bench_ref / bench_ours:>8.2f}")  # fmt: skip

    # evaluation throughput under on-the-fly corruption vs the bare model
    from robustart import model_zoo

    model = model_zoo.create_model(args.model).to(args.device).eval()

    def bare():
        with torch.inference_mode():
            model(x)
        if x.is_cuda:
            torch.cuda.synchronize()

    def corrupted():
        with torch.inference_mode():
            for name in names:
                model(corrupt(x, name, 3, seed=0, sample_ids=ids))
        if x.is_cuda:
            torch.cuda.synchronize()

    bare()
    t_bare = best_of(args.repeats, bare)
    t_corrupted = best_of(args.repeats, corrupted) / len(names)
    print(f"\n{args.model}: bare {args.batch / t_bare:.1f} img/s, with on-the-fly corruption "
          f"{args.batch / t_corrupted:.1f} img/s ({t_bare / t_corrupted:.0%} of bare)")  # fmt: skip


if __name__ == "__main__":
    main()
