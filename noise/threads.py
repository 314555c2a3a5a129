"""A small shared thread pool for per-image CPU work that releases the GIL (torch ops, Pillow, numba).

The reference implementations work one image at a time on one core; running independent images on
``torch.get_num_threads()`` threads is how the CPU paths here use every core without changing any
image's result (each task touches only its own image and its own generator).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@functools.lru_cache(maxsize=1)
def _pool_of(pid: int) -> ThreadPoolExecutor | None:
    """The pool of process ``pid``, with ``torch.get_num_threads()`` workers; ``None`` with one thread.

    Keyed by process id: a forked child (a data-loader worker) has none of its parent's threads, so
    it gets a pool of its own.
    """
    workers = torch.get_num_threads()
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="robustart-cpu") if workers > 1 else None


def _pool() -> ThreadPoolExecutor | None:
    return _pool_of(os.getpid())


def cpu_map(fn: Callable[[T], R], items: Iterable[T], parallel: bool = True) -> list[R]:
    """``[fn(item) for item in items]``, on the shared pool when ``parallel`` and there are 2+ threads and items.

    Exceptions propagate as from the plain loop. Results keep the order of ``items``.
    """
    items = list(items)
    pool = _pool() if parallel and len(items) > 1 else None
    if pool is None:
        return [fn(item) for item in items]
    # autograd and inference modes are thread-local: give the workers the caller's, so that tensors
    # made under torch.inference_mode() can be written in place there
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def task(item: T) -> R:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(item)

    return list(pool.map(task, items))
