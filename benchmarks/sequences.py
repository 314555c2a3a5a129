"""Memory and speed of an ImageNet-P evaluation as the number of sequences grows.

Each size runs in a fresh process (peak resident memory is per process): Fashion-MNIST test images, a small
CNN, ImageNet-P sequences generated on the fly and scored ``chunk`` frames at a time. Peak memory should not
grow with the number of sequences (only the per-frame rows do, a few dozen bytes per frame).

    python benchmarks/sequences.py [--sizes 64,256,1024] [--perturbations gaussian_noise,rotate] [--chunk 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from robustart import model_zoo
from robustart.evaluation import evaluate_sequences
from robustart.noise import create_noise
from robustart.data import iterate, load_fashion_mnist
from pathlib import Path

n, names, chunk, batch = int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
data, _ = load_fashion_mnist(None, Path.home() / ".cache" / "robustart", "test")
data = data.subset(n)
noise = create_noise("imagenet_p", perturbations=names, chunk=chunk)
torch.manual_seed(0)
model = model_zoo.create_model("small_cnn", weights="random")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()

class Batches:  # read anew for every condition, as a run does, so memory does not hold the data set twice
    def __iter__(self):
        return iterate(data, batch)

frames = evaluate_sequences(model, Batches(), noise)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "frames": len(frames), "seconds": seconds, "rss_before_mb": before / 1024,
                  "peak_mb": peak / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,256,1024")
    parser.add_argument("--perturbations", default="gaussian_noise,rotate")
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(f"{'sequences':>10}{'frames':>10}{'seconds':>10}{'frames/s':>10}{'RSS before MB':>15}{'peak RSS MB':>13}")
    for n in (int(s) for s in args.sizes.split(",")):
        argv = [sys.executable, "-c", CHILD, str(n), args.perturbations, str(args.chunk), str(args.batch)]
        out = json.loads(
            subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )
        print(f"{out['n']:>10}{out['frames']:>10}{out['seconds']:>10.1f}{out['frames'] / out['seconds']:>10.0f}"
              f"{out['rss_before_mb']:>15.0f}{out['peak_mb']:>13.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
