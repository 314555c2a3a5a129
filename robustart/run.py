"""One configured run, as named stages: identity -> skip if done -> lock -> plan and validate -> train? -> evaluate
-> score -> write -> unlock.

``run(cfg)`` is the task that ``python -m robustart`` calls; tests call it with a composed config. This module
and the stages it calls for the config (:mod:`robustart.identity`, :mod:`robustart.plan`,
:mod:`robustart.loading`, :mod:`robustart.training_stage`) are the only ones that read a Hydra config; the
evaluation itself is :func:`robustart.engine.evaluate`, on plain values, which :func:`robustart.evaluate` calls
too. Errors a user can cause are :class:`~robustart.errors.UserError`, found before any work. One process at a time
evaluates a run: the others wait for it or exit (``evaluation.if_locked``, :mod:`robustart.locking`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robustart import store
from robustart.errors import UserError
from robustart.identity import build_noise, identity, noise_options, recipe_label, run_directory
from robustart.plan import Plan, check_training, prepare, resolve_device, validate_config

__all__ = ["Plan", "RunResult", "UserError", "build_noise", "check_training", "execute", "identity", "noise_options",
           "prepare", "recipe_label", "run", "run_directory"]  # fmt: skip

log = logging.getLogger("robustart")


@dataclass
class RunResult:
    run_dir: Path
    skipped: bool
    metrics: Any = None  # pandas DataFrame when the run was executed


def run(cfg: DictConfig) -> RunResult:
    """Run one configured evaluation (training first if ``cfg.training`` is set); skip it if done. The run's lock is
    held from after the done-check until its tables and ``done`` are written."""
    t_start = time.monotonic()
    validate_config(cfg)
    run_id, run_dir = run_directory(cfg)
    if store.finished(run_dir):
        return _already_done(run_dir)
    store.check_writable(run_dir.parent, "paths.results_dir")
    world = join_world(cfg)
    lock, done_meanwhile = lock_run(run_id, run_dir, cfg.evaluation.get("if_locked", "wait"), world)
    if done_meanwhile:
        return _already_done(run_dir)
    try:
        plan = prepare(cfg, run_id, run_dir)
        plan.world = world
        return execute(plan, t_start)
    finally:
        if lock is not None:
            lock.release()


def _already_done(run_dir: Path) -> RunResult:
    print(f"already done: {run_dir} (delete its 'done' file to run again)")
    return RunResult(run_dir, skipped=True)


def lock_run(run_id: str, run_dir: Path, if_locked: str, world=None):
    """Take the run's lock (:mod:`robustart.locking`): ``(lock, finished)``, where ``finished`` says that the process
    this one waited for finished the run (skip it). Under several processes only rank 0 takes it (``lock`` is
    ``None`` on the others) and shares what it found with them. Raises :class:`~robustart.locking.RunLocked` on every
    process when another holds the lock and ``if_locked`` is ``exit``."""
    from robustart import locking

    lock, found = None, "go"
    if world is None or world.rank == 0:
        try:
            lock = locking.acquire(run_dir, run_id, if_locked)
        except locking.RunLocked as err:
            found = str(err)
        else:
            if store.finished(run_dir, warn=False):  # by the process this one waited for
                lock.release()
                lock, found = None, "done"
            else:
                store.unmark_done(run_dir)  # a marker over missing or unreadable tables: the run is redone
    if world is not None:
        from robustart.training import distributed

        found = distributed.share(found)
        if found != "go":
            distributed.shutdown()
    if found not in ("go", "done"):
        raise locking.RunLocked(found)
    return lock, found == "done"


def execute(plan: Plan, t_start: float) -> RunResult:
    """Train if the plan asks for it, evaluate through the engine, log and print the summary."""
    from robustart import engine, tracking
    from robustart.summary import format_summary
    from robustart.training_stage import cut_subnet, share_checkpoint, train

    cfg, timings = plan.cfg, {}
    rank, size = (plan.world.rank, plan.world.size) if plan.world is not None else (0, 1)
    logger = tracking.start_logger(cfg, plan.run_dir) if rank == 0 else None
    if cfg.training is not None and plan.checkpoint is None:
        train(plan, timings, logger)
        if size > 1:
            share_checkpoint(plan)
    if plan.checkpoint is not None and "train_s" not in timings:
        log.info("reusing checkpoint %s (sha256 %s...)", plan.checkpoint["path"], plan.checkpoint["sha256"][:12])
    if plan.trained_entry not in (None, cfg.model.name):  # a subnet, cut from its supernet
        cut_subnet(plan, timings)
    meta = plan.model.metadata
    weights = f"robustart:{plan.checkpoint['config_hash']}" if plan.checkpoint else meta.weights
    job = engine.Job(
        run_id=plan.run_id, run_dir=plan.run_dir, model=plan.model, weights=weights, data=plan.eval_data,
        data_info=plan.data_info, data_name=cfg.data.name, noise=plan.noise, device=plan.device,
        batch_size=cfg.evaluation.batch_size, num_workers=cfg.data.num_workers, amp=cfg.evaluation.amp,
        channels_last=cfg.evaluation.channels_last, config=OmegaConf.to_container(cfg, resolve=True),
        identity=identity(cfg), seeds={"run": cfg.seed, "training": cfg.training.seed if cfg.training else None},
        checkpoint=plan.checkpoint, notes=plan.notes, sequence_baseline=plan.baseline, rank=rank, world=size,
        recipe=recipe_label(cfg.training) if cfg.training is not None else "none",
    )  # fmt: skip
    tables = engine.evaluate(job, timings, t_start)
    if tables is None:  # another process merges and writes
        return RunResult(plan.run_dir, skipped=True)
    if logger is not None:
        tracking.log_results(logger, tables.metrics)

    header = (
        f"robustart run {plan.run_id}: {meta.name} ({meta.family}, {meta.params:,} params, {meta.flops / 1e6:,.1f} "
        f"MFLOPs, weights {weights}) on {cfg.data.name}/{cfg.data.split}, {plan.data_info.num_samples} samples"
    )
    if meta.genes:
        header += "\nsubnet " + ", ".join(f"{k} {v}" for k, v in meta.genes.items())
    notes = "".join(f"\nNOTE: {n}" for n in plan.notes)
    summary = format_summary(tables.metrics)
    print(f"\n{header}{notes}\n\n{summary}\n\nresults: {plan.run_dir}  ({timings['total_s']:.1f} s)")
    return RunResult(plan.run_dir, skipped=False, metrics=tables.metrics)


def join_world(cfg: DictConfig):
    """Under torchrun or a multi-task Slurm step, join the other processes; ``None`` for one process.

    Processes train together (data-parallel; rank 0 writes the checkpoint) and share out the evaluation's
    batches (:mod:`robustart.parts`); rank 0 merges the results and writes the tables."""
    from robustart.training import distributed

    world = distributed.environment()
    if not world.distributed:
        return None
    log.info("process %d of %d (%s)", world.rank, world.size, world.source)
    distributed.init(world, resolve_device(cfg.evaluation.device, world.local_rank))
    return world
