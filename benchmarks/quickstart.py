"""Wall-clock of the embedded default (``python -m robustart``) against its targets.

Three runs in fresh folders: cold (nothing cached: trains, then evaluates), warm (checkpoint cached,
new results folder: evaluates only) and finished (same results folder: skipped). Each is one
subprocess, timed from start to exit, so interpreter start-up and imports count.

    python benchmarks/quickstart.py [--repeat 1]

Targets (on 2 CPU cores): cold <= 180 s, warm <= 60 s, skipped <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"cold": 180.0, "warm": 60.0, "skipped": 2.0}


def timed(env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "robustart"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"robustart failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of the cold/warm/skipped triple")
    args = parser.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")
    print(f"{'case':<10}{'seconds':>10}{'target':>10}{'ratio':>8}")
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            base = {**os.environ, "ROBUSTART_CACHE": str(Path(tmp, "cache")), "HF_HUB_OFFLINE": "1"}
            times = {
                "cold": timed({**base, "ROBUSTART_RESULTS": str(Path(tmp, "r1"))}),
                "warm": timed({**base, "ROBUSTART_RESULTS": str(Path(tmp, "r2"))}),
                "skipped": timed({**base, "ROBUSTART_RESULTS": str(Path(tmp, "r2"))}),
            }
        for case, seconds in times.items():
            print(f"{case:<10}{seconds:>10.1f}{TARGETS[case]:>10.0f}{seconds / TARGETS[case]:>8.2f}")


if __name__ == "__main__":
    main()
