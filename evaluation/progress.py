"""The one progress reporter of an evaluation: condition by condition, a bar with its ETA on a terminal; in logs
(CI, Slurm), a line at most every ``every`` seconds inside a long condition and one when it ends, with the ETA
of what is left."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("robustart")


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Reports the conditions of one evaluation as they run.

    Args:
        total: conditions in the evaluation; ``already``: how many of them are done (a resumed run).
        bar: a tqdm bar per condition (default: when stderr is a terminal).
        every: seconds between log lines inside a condition.
        report: where log lines go (default: the ``robustart`` logger at INFO; ``None``: nowhere).
    """

    def __init__(self, total: int, already: int = 0, *, bar: bool | None = None, every: float = 30.0,
                 report: Callable[[str], None] | None = log.info) -> None:  # fmt: skip
        self.total, self.done, self.every, self.report = total, already, every, report
        self.bar = sys.stderr.isatty() if bar is None else bar
        self.times: list[float] = []
        self.tqdm = None

    def start(self, condition, samples: int | None) -> None:
        self.condition, self.samples, self.seen = condition, samples, 0
        self.t0 = self.last = time.monotonic()
        if self.bar:
            from tqdm import tqdm

            desc = f"[{self.done + 1}/{self.total}] {condition}"
            self.tqdm = tqdm(total=samples, unit="img", leave=False, desc=desc)

    def step(self, n: int) -> None:
        self.seen += n
        if self.tqdm is not None:
            self.tqdm.update(n)
            return
        now = time.monotonic()
        if self.report is not None and now - self.last >= self.every and (self.samples or 0) > self.seen:
            self.last = now
            rate = self.seen / (now - self.t0)
            eta = duration((self.samples - self.seen) / max(rate, 1e-9))
            self.report(f"  {self.condition}: {self.seen}/{self.samples} images ({rate:.1f}/s), condition ETA {eta}")

    def finish(self) -> None:
        took = time.monotonic() - self.t0
        if self.tqdm is not None:
            self.tqdm.close()
            self.tqdm = None
        self.done += 1
        self.times.append(took)
        left = self.total - self.done
        eta = f", ETA {duration(left * sum(self.times) / len(self.times))}" if left else ""
        if self.report is not None:
            self.report(f"condition {self.done}/{self.total} {self.condition}: {self.seen} images in {took:.1f} s; "
                        f"{left} to go{eta}")  # fmt: skip
