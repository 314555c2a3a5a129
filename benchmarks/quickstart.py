"""Wall-clock of the embedded default (``python -m robustart``) against its targets, with a profile of the cold run.

Three runs in fresh folders: cold (nothing cached: trains, then evaluates), warm (checkpoint cached, new results
folder: evaluates only) and finished (same results folder: skipped). Each is one subprocess, timed from start to
exit, so interpreter start-up and imports count. The cold and warm runs' clean top-1 is read from their results.
With ``--profile`` the cold run is profiled (``python -m cProfile``) in an extra fresh folder and the functions
with the most cumulative and own time are printed.

    python benchmarks/quickstart.py [--repeat 1] [--profile] [--top 15]

Targets (on 2 CPU cores): cold <= 120 s, warm <= 40 s, skipped <= 2 s; clean top-1 above 85%.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"cold": 120.0, "warm": 40.0, "skipped": 2.0}
MIN_TOP1 = 0.85


def timed(env: dict[str, str], prefix: tuple[str, ...] = ()) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *prefix, "-m", "robustart"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"robustart failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def clean_top1(results: Path) -> float:
    import pandas as pd

    [metrics] = results.glob("*/metrics.parquet")
    frame = pd.read_parquet(metrics)
    return float(frame[(frame["noise"] == "clean") & (frame["metric"] == "top1")]["value"].iloc[0])


def profile(top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ROBUSTART_CACHE": str(Path(tmp, "cache")), "ROBUSTART_RESULTS": str(Path(tmp, "r")),
               "HF_HUB_OFFLINE": "1"}  # fmt: skip
        out = Path(tmp, "cold.prof")
        seconds = timed(env, ("-m", "cProfile", "-o", str(out)))
        stats = pstats.Stats(str(out))
        print(f"\nprofile of a cold run ({seconds:.1f} s under cProfile), the project's top {top} by cumulative time:")
        stats.sort_stats("cumulative").print_stats(r"/(robustart|training|evaluation|noise|model_zoo)/", top)
        print(f"top {top} by own time:")
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of the cold/warm/skipped triple")
    parser.add_argument("--profile", action="store_true", help="also profile a cold run and print its top items")
    parser.add_argument("--top", type=int, default=15, help="profile lines to print")
    args = parser.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")
    print(f"{'case':<10}{'seconds':>10}{'target':>10}{'ratio':>8}{'top1':>8}")
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            base = {**os.environ, "ROBUSTART_CACHE": str(Path(tmp, "cache")), "HF_HUB_OFFLINE": "1"}
            times = {
                "cold": timed({**base, "ROBUSTART_RESULTS": str(Path(tmp, "r1"))}),
                "warm": timed({**base, "ROBUSTART_RESULTS": str(Path(tmp, "r2"))}),
                "skipped": timed({**base, "ROBUSTART_RESULTS": str(Path(tmp, "r2"))}),
            }
            top1 = {"cold": clean_top1(Path(tmp, "r1")), "warm": clean_top1(Path(tmp, "r2"))}
        for case, seconds in times.items():
            accuracy = f"{100 * top1[case]:7.1f}%" if case in top1 else ""
            print(f"{case:<10}{seconds:>10.1f}{TARGETS[case]:>10.0f}{seconds / TARGETS[case]:>8.2f}{accuracy}")
        if min(top1.values()) <= MIN_TOP1:
            print(f"clean top-1 {100 * min(top1.values()):.1f}% is not above {100 * MIN_TOP1:.0f}%")
    if args.profile:
        profile(args.top)


if __name__ == "__main__":
    main()
