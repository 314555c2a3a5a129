"""Throughput of system noise: images/s of every decoder and every resizer, then of whole combinations
decoded in DataLoader workers, against the model's own preprocessing (Pillow + torchvision transforms)
in the same run.

The images are real photographs (scikit-image's samples) at ImageNet's typical size (longer side 500 px),
stored as JPEG quality 90 with 4:2:0 chroma subsampling, like most ImageNet val files.

    python benchmarks/system_noise.py [--images 64] [--repeats 3] [--workers 2] [--size 224]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def jpeg_photos(n: int) -> list[bytes]:
    """``n`` JPEG files of scikit-image's photographs, longer side 500 px, cycled with small crops."""
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    files = []
    for i in range(n):
        image = Image.fromarray(sources[i % len(sources)])
        scale = 500 / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        shift = i // len(sources)
        image = image.crop((shift, shift, image.width, image.height))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=90)
        files.append(out.getvalue())
    return files


def per_second(count: int, repeats: int, fn) -> float:
    """Items per second of ``fn`` (which processes ``count`` items): the best of ``repeats`` calls."""
    fn()  # warm-up: imports, first-call set-up
    best = min(_timed(fn) for _ in range(repeats))
    return count / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def loader_rate(dataset, workers: int, repeats: int, batch: int = 32) -> float:
    """Images/s of reading ``dataset`` through a DataLoader with ``workers`` worker processes."""

    def read() -> None:
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers, persistent_workers=False)
        for _ in loader:
            pass

    return per_second(len(dataset), repeats, read)


def main() -> None:
    from robustart.data import ImageFolderDataset, eval_transform
    from robustart.noise.system import DECODERS, RESIZERS, Pipeline, codecs, reference_resizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the whole-pipeline part")
    parser.add_argument("--size", type=int, default=224, help="model input size (crop_pct 0.875, bicubic)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker: one image per process at a time

    files = jpeg_photos(args.images)
    print(f"{args.images} JPEG photographs, {sum(map(len, files)) / len(files) / 1024:.0f} KiB each on average; "
          f"1 thread per process; {args.size} px model input")  # fmt: skip
    print("\ndecoder        images/s   library")
    decoded = None
    for decoder in DECODERS:
        rate = per_second(len(files), args.repeats, lambda d=decoder: [codecs.decode(d, f) for f in files])
        versions = codecs.versions(decoder)
        print(f"{decoder:<14}{rate:9.1f}   " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        if decoder == "pil":
            decoded = [codecs.decode("pil", f) for f in files]

    print("\nresizer (+ centre crop)   images/s")
    for resizer in RESIZERS:
        pipeline = Pipeline("pil", resizer, args.size, 0.875)
        rate = per_second(len(decoded), args.repeats, lambda p=pipeline: [p.preprocess(x) for x in decoded])
        print(f"{resizer:<26}{rate:9.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, data in enumerate(files):
            paths.append(Path(tmp) / f"{i:05d}.JPEG")
            paths[-1].write_bytes(data)
        labels = [0] * len(paths)
        reference = ImageFolderDataset(paths, labels, eval_transform((3, args.size, args.size), 0.875, "bicubic"))
        base = loader_rate(reference, args.workers, args.repeats)
        print(f"\nwhole pipeline in {args.workers} DataLoader workers   images/s   vs the model's own preprocessing")
        print(f"{'reference (Pillow + torchvision transforms)':<46}{base:9.1f}     1.00")
        combos = [(d, reference_resizer("bicubic")) for d in DECODERS] + [
            ("pil", r) for r in ("opencv_area", "torch_bicubic_aa")
        ]
        for decoder, resizer in combos:
            rate = loader_rate(reference.raw(Pipeline(decoder, resizer, args.size, 0.875)), args.workers, args.repeats)
            print(f"{decoder + '/' + resizer:<46}{rate:9.1f}     {rate / base:.2f}")


if __name__ == "__main__":
    main()
