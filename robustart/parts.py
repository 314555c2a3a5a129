"""Evaluation in committed parts: condition by condition, shared out over processes, merged once.

A long run (50 000 images x 95 corruption cells x a few attacks) gets preempted, killed, or spread over
GPUs. So the run evaluates one condition at a time (clean first, then each corruption x severity, attack x
eps, decoder x resizer), and each process commits what it evaluated of a condition as a *part* under
``<run>/parts/``, written atomically. A re-run of the same command skips the conditions whose parts are all
there and starts at the first unfinished one.

Under ``W`` processes (torchrun, or a Slurm step with ``W`` tasks), process ``r`` takes batches
``r, r + W, r + 2W, ...`` of every condition. Those are exactly the batches one process would form, so
the per-sample rows are the same, bit for bit, whatever ``W``. What a noise or the validity checks record
while they run (a cascade's first breaker, an attack's pass counts) travels with each part
(:meth:`robustart.noise.Noise.take_state`). Rank 0 waits for every part, then merges them in condition and batch
order; the run then writes its tables as before, marks itself done and deletes the parts.

Parts written by another number of processes are not reused (the batches would be shared out differently).
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustart.evaluation.evaluator import CLEAN, evaluate_condition
from robustart.evaluation.progress import Progress
from robustart.noise import Condition

log = logging.getLogger("robustart")

PARTS_DIR = "parts"


@dataclass
class Unit:
    """One committed piece of work: a condition over a dataset (through the noise, or as the data carries it)."""

    index: int
    condition: Condition
    dataset: Any
    through_noise: bool

    @property
    def folder(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(self.condition)).strip("_")
        return f"{self.index:03d}-{slug}"[:120]


def units(noise, eval_data) -> list[Unit]:
    """The run's conditions in evaluation order: clean then every noise condition on one dataset, or one
    condition per dataset for data that carries its noise (released ImageNet-C, system noise's re-decoded files)."""
    if isinstance(eval_data, dict):
        return [Unit(i, cond, data, False) for i, (cond, data) in enumerate(eval_data.items())]
    return [Unit(i, cond, eval_data, True) for i, cond in enumerate([CLEAN, *noise.conditions()])]


def shard(dataset, batch_size: int, rank: int, world: int):
    """``(dataset for this process, its batches' global indices)``: batches ``rank, rank + world, ...`` of the
    single-process batching, as one dataset that batches the same way."""
    batches = math.ceil(len(dataset) / batch_size)
    mine = list(range(rank, batches, world))
    if world == 1:
        return dataset, mine
    rows = [i for b in mine for i in range(b * batch_size, min((b + 1) * batch_size, len(dataset)))]
    return torch.utils.data.Subset(dataset, rows), mine


def _part_files(folder: Path, rank: int, world: int) -> tuple[Path, Path]:
    stem = f"rank{rank}of{world}"
    return folder / f"{stem}.state.pt", folder / f"{stem}.parquet"


def is_committed(folder: Path, rank: int, world: int) -> bool:
    """A part is committed once its predictions file exists (written after its state)."""
    state, rows = _part_files(folder, rank, world)
    return rows.is_file() and state.is_file()


# ----------------------------------------------------------------------------------------- state (de)serialising


def _encode(value):
    """Recorded noise state as what ``torch.load(weights_only=True)`` reads back: conditions as tagged tuples,
    NumPy arrays as tensors."""
    if isinstance(value, Condition):
        return ("__condition__", value.noise, value.name, value.severity, value.eps)
    if isinstance(value, np.ndarray):
        return ("__array__", torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, dict):
        return {_encode(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_encode(v) for v in value)
    return value


def _decode(value):
    if isinstance(value, tuple) and value and value[0] == "__condition__":
        return Condition(*value[1:])
    if isinstance(value, tuple) and value and value[0] == "__array__":
        return value[1].numpy()
    if isinstance(value, dict):
        return {_decode(k): _decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode(v) for v in value)
    return value


# -------------------------------------------------------------------------------------------------- run and merge


def run_parts(
    run_dir: Path,
    work: list[Unit],
    model,
    noise,
    *,
    batch_size: int,
    num_workers: int,
    device,
    checks=None,
    rank: int = 0,
    world: int = 1,
    bar: bool | None = None,
) -> None:
    """Evaluate this process's share of every unit not yet committed, committing each as it finishes."""
    from robustart import data as datasets
    from robustart.store import atomic_write

    parts = Path(run_dir) / PARTS_DIR
    todo = [u for u in work if not is_committed(parts / u.folder, rank, world)]
    if len(todo) < len(work):
        log.info("resuming: %d of %d conditions already committed in %s", len(work) - len(todo), len(work), parts)
    progress = Progress(len(work), len(work) - len(todo), bar=bar)
    for unit in todo:
        data, batch_ids = shard(unit.dataset, batch_size, rank, world)
        counter = datasets.SkipCounter()
        seen_ids: list[np.ndarray] = []  # the sample ids of each batch read, in order

        def counted(batches, seen_ids=seen_ids):
            for batch in batches:
                seen_ids.append(np.asarray(batch[2]))
                yield batch

        progress.start(unit.condition, len(data))
        t = time.monotonic()
        batches = counted(datasets.iterate(data, batch_size, num_workers, counter))
        frame = evaluate_condition(model, batches, unit.condition, noise, applied=unit.through_noise, device=device,
                                   checks=checks, on_batch=progress.step)  # fmt: skip
        if frame is None:
            frame = pd.DataFrame({"batch": pd.Series([], dtype="int64")})
        else:
            frame["batch"] = _batch_column(frame, seen_ids, batch_ids)
        state = {
            "condition": _encode(unit.condition),
            "noise": _encode(noise.take_state()) if unit.through_noise and hasattr(noise, "take_state") else None,
            "checks": _encode(checks.take_state()) if checks is not None else [],
            "skipped": counter.skipped,
            "seconds": time.monotonic() - t,
        }
        folder = parts / unit.folder
        folder.mkdir(parents=True, exist_ok=True)
        state_file, rows_file = _part_files(folder, rank, world)
        atomic_write(state_file, lambda tmp, state=state: torch.save(state, tmp))
        atomic_write(rows_file, lambda tmp, frame=frame: frame.to_parquet(tmp, index=False))
        progress.finish()


def _batch_column(frame: pd.DataFrame, seen_ids: list[np.ndarray], batch_ids: list[int]) -> np.ndarray:
    """The global batch index of each row: a row per sample, or per frame of a sample's sequence."""
    sizes = [len(ids) for ids in seen_ids]
    which = np.repeat(np.asarray(batch_ids[: len(sizes)], dtype=np.int64), sizes)
    if len(frame) == len(which):  # one row per sample, in batch order
        return which
    return pd.Series(which, index=np.concatenate(seen_ids)).reindex(frame["sample_id"].to_numpy()).to_numpy()


@dataclass
class Merged:
    predictions: pd.DataFrame
    skipped: int
    seconds: float  # evaluation time summed over parts and processes
    #: per-frame rows of sequence conditions (ImageNet-P), ``None`` for other noises
    frames: pd.DataFrame | None = None


def merge_parts(run_dir: Path, work: list[Unit], noise, checks=None, world: int = 1) -> Merged:
    """Every unit's parts from ``world`` processes, in condition then batch order (the single-process order);
    the recorded noise and check states are added to ``noise`` and ``checks``."""
    parts = Path(run_dir) / PARTS_DIR
    rows, frames, skipped, seconds = [], [], 0, 0.0
    for unit in work:
        pieces = []
        for rank in range(world):
            state_file, rows_file = _part_files(parts / unit.folder, rank, world)
            if not rows_file.is_file():
                raise RuntimeError(f"part {rows_file} is missing: a process did not finish {unit.condition}")
            state = _decode(torch.load(state_file, weights_only=True))
            if state["condition"] != unit.condition:
                raise RuntimeError(f"part {state_file} holds {state['condition']}, expected {unit.condition}")
            if state["noise"] is not None:
                noise.merge_state(state["noise"])
            if checks is not None:
                checks.merge_state(state["checks"])
            if not unit.through_noise or unit.index == 0:  # units through the noise re-read clean's images
                skipped += state["skipped"]
            seconds += state["seconds"]
            piece = pd.read_parquet(rows_file)
            if len(piece):
                pieces.append(piece)
        if pieces:
            merged = pd.concat(pieces, ignore_index=True).sort_values("batch", kind="stable").drop(columns="batch")
            (frames if "frame" in merged else rows).append(merged)
    if not rows and not frames:
        raise ValueError("no samples were evaluated: the dataset is empty")
    predictions = pd.concat(rows, ignore_index=True) if rows else _no_predictions()
    return Merged(predictions, skipped, seconds, pd.concat(frames, ignore_index=True) if frames else None)


def _no_predictions() -> pd.DataFrame:
    """The per-sample table of a run without a clean pass over its own images (released ImageNet-P videos)."""
    from robustart.evaluation.evaluator import _Rows

    return pd.DataFrame(columns=["noise", "condition", "severity", "eps", *_Rows.COLUMNS])


def clear(run_dir: Path) -> None:
    """Delete the parts once the run's tables are written and it is marked done."""
    shutil.rmtree(Path(run_dir) / PARTS_DIR, ignore_errors=True)
