"""The engine: one evaluation in plain values, the same for the command line and :func:`robustart.evaluate`.

A :class:`Job` holds a model (an ``nn.Module`` taking RGB floats in [0, 1], with its ``metadata``), clean data,
a noise and the evaluation options; :func:`evaluate` runs its conditions (committed part by part under the run
folder, sharded over processes, resumable), scores them (:mod:`robustart.evaluation.scoring`) and writes the
results store. Nothing here reads a Hydra config.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustart import store
from robustart.errors import UserError

log = logging.getLogger("robustart")


@dataclass
class Job:
    """One evaluation: what to evaluate, how, and where its results go.

    Attributes:
        run_id, run_dir: the run's identity hash and its folder (parts, tables, ``done``).
        model: takes ``float32`` RGB in [0, 1] and carries a ``metadata`` (:class:`robustart.model_zoo.ModelMetadata`).
        weights: how the results name the weights (``random``, ``timm:<tag>``, ``robustart:<hash>``...).
        data: a dataset of ``(image, label, sample_id)``, or ``{Condition: dataset}`` for data carrying its noise.
        data_info: what the manifest records about the data (:class:`robustart.data.DatasetInfo`).
        data_name: the ``data`` column of the results.
        noise: a :class:`robustart.noise.Noise` (or a sequence noise).
        config, identity: what the manifest records as the run's settings and what its id hashes.
    """

    run_id: str
    run_dir: Path
    model: Any
    weights: str
    data: Any
    data_info: Any
    data_name: str
    noise: Any
    device: Any
    batch_size: int = 128
    num_workers: int = 0
    amp: str | None = None
    channels_last: bool = False
    config: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)
    seeds: dict = field(default_factory=dict)
    checkpoint: dict | None = None
    #: the training recipe's label (``baseline_cnn+mixup``), ``none`` for weights robustart did not train here
    recipe: str = "none"
    notes: list[str] = field(default_factory=list)
    #: metrics of the run that normalises sequence metrics (nmfp, mt5d)
    sequence_baseline: Any = None
    rank: int = 0
    world: int = 1


@dataclass
class Tables:
    """A finished run's tables: ``metrics`` and ``predictions`` (pandas), the manifest, and ImageNet-P's frames."""

    metrics: Any
    predictions: Any
    manifest: dict
    frames: Any = None


def evaluate(job: Job, timings: dict | None = None, t_start: float | None = None) -> Tables | None:
    """Evaluate, score and write ``job``; ``None`` on a process other than rank 0, whose parts rank 0 merges."""
    from robustart import data as datasets
    from robustart import parts as committed
    from robustart.evaluation.evaluator import CLEAN
    from robustart.evaluation.noise_rows import sample_columns
    from robustart.evaluation.precision import with_precision
    from robustart.evaluation.protocol import add_protocol
    from robustart.evaluation.scoring import score
    from robustart.evaluation.shift import MaskedOutputs
    from robustart.evaluation.validity import ValidityChecks, norm_of
    from robustart.training import distributed

    timings = {} if timings is None else timings
    t_start = time.monotonic() if t_start is None else t_start
    meta = job.model.metadata
    if job.weights == "random":
        msg = f"model {meta.name} has RANDOM weights: its numbers measure an untrained network"
        job.notes.append(msg)
        log.warning(msg)

    counter = datasets.SkipCounter()
    model = job.model if job.data_info.class_mask is None else MaskedOutputs(job.model, job.data_info.class_mask)
    groups = job.data_info.class_groups
    if groups is not None:  # a 1000-class model seen as a few categories (cue-conflict's 16-way decision)
        from robustart.evaluation.shape_bias import CategoryOutputs

        model = CategoryOutputs(model, list(groups.values()))
    model = with_precision(model, job.amp, job.channels_last)  # attacks and scoring alike
    t = time.monotonic()
    checks = None
    work = committed.units(job.noise, job.data)  # condition by condition, each committed as it finishes
    if isinstance(job.data, dict):  # data that carries its conditions: one dataset each, no clean pass
        conditions = [u.condition for u in work]
        log.info("evaluating %s on %s: %d conditions (a dataset each), %d images on %s", meta.name,
                 job.data_name, len(conditions), sum(len(u.dataset) for u in work), job.device)  # fmt: skip
    else:
        conditions = [u.condition for u in work if u.condition != CLEAN]
        log.info("evaluating %s on %s/%s (%d samples) x %d noise conditions + clean on %s", meta.name,
                 job.data_name, job.data_info.split, job.data_info.num_samples, len(conditions),
                 job.device)  # fmt: skip
        if any(c.eps is not None for c in conditions):
            checks = ValidityChecks(lambda cond: norm_of(job.noise, cond))
    if job.world > 1:  # batches shared out over the processes
        log.info("process %d of %d evaluates batches %d, %d + %d, ... of each condition", job.rank, job.world,
                 job.rank, job.rank, job.world)  # fmt: skip
    try:
        committed.run_parts(job.run_dir, work, model, job.noise, batch_size=job.batch_size,
                            num_workers=job.num_workers, device=job.device, checks=checks, rank=job.rank,
                            world=job.world)  # fmt: skip
    except datasets.VideoError as err:  # a released ImageNet-P video that cannot be decoded
        raise UserError(str(err).strip().splitlines()[-1].removeprefix("robustart.data.VideoError: ")) from None
    if job.world > 1:
        distributed.barrier()
        distributed.shutdown()
        if job.rank != 0:
            log.info("rank %d: its parts are committed; rank 0 merges them", job.rank)
            return None
    merged = committed.merge_parts(job.run_dir, work, job.noise, checks, job.world)
    predictions, frames, counter.skipped = merged.predictions, merged.frames, counter.skipped + merged.skipped
    timings["eval_parts_s"] = merged.seconds
    timings["eval_s"] = time.monotonic() - t
    if counter.skipped:
        msg = f"{counter.skipped} unreadable image(s) were skipped"
        job.notes.append(msg)
        log.warning(msg)

    source, weights_id = store.split_weights(job.weights)
    run_cols = {"run_id": job.run_id, "model": meta.name, "weights": job.weights, "weights_source": source,
                "weights_id": weights_id}  # fmt: skip
    protocol = {"noise": job.noise, "recipe": job.recipe, "image_side": meta.input_size[-1]}
    predictions = join_sample_columns(predictions, sample_columns(job.noise)).assign(**run_cols)
    predictions = join_data_columns(predictions, job.data, groups)
    predictions = add_protocol(predictions, **protocol).assign(data=job.data_name, family=meta.family)
    if frames is not None:
        frames = frames.assign(**run_cols)
    metrics = score(predictions, job.noise, job.data_name, checks=checks, frames=frames,
                    sequence_baseline=job.sequence_baseline)  # fmt: skip
    if checks is not None:
        for line in checks.warnings():
            log.warning("validity check %s", line)
    metrics = add_protocol(metrics, **protocol).assign(**run_cols, **model_columns(meta), data=job.data_name)
    timings["total_s"] = time.monotonic() - t_start
    manifest = _manifest(job, conditions, counter.skipped, checks, timings)
    write(job.run_dir, metrics, predictions, manifest, frames)
    return Tables(metrics, predictions, manifest, frames)


def write(run_dir: Path, metrics, predictions, manifest: dict, frames=None) -> None:
    """The write stage: the tables, then the manifest, then ``done`` (last), then the committed parts go."""
    from robustart import parts as committed

    store.write_table(predictions, store.predictions_schema(), run_dir / store.PREDICTIONS_FILE)
    if frames is not None:
        store.write_table(frames, store.frames_schema(), run_dir / store.FRAMES_FILE)
    store.write_table(metrics, store.metrics_schema(), run_dir / store.METRICS_FILE)
    store.write_json(manifest, run_dir / store.MANIFEST_FILE)
    store.mark_done(run_dir)
    committed.clear(run_dir)


def _manifest(job: Job, conditions, skipped: int, checks, timings: dict) -> dict:
    from robustart.environment import device_description, git_commit, library_versions

    return {
        "schema_version": store.SCHEMA_VERSION,
        "run_id": job.run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": job.config,
        "identity": job.identity,
        "git_commit": git_commit(),
        "versions": library_versions(),
        "device": device_description(job.device),
        "seeds": job.seeds,
        "model": {**job.model.metadata.as_dict(), "weights": job.weights},
        "checkpoint": job.checkpoint,
        "data": {**vars(job.data_info), "skipped_unreadable": skipped},
        "noise_conditions": [str(c) for c in conditions],
        "noise_report": _noise_report(job.noise),
        "validity_warnings": checks.warnings() if checks is not None else None,
        "notes": job.notes,
        "timings": timings,
    }


def model_columns(meta) -> dict:
    """The metadata columns every metrics row carries (see :func:`robustart.store.model_columns`)."""
    genes = meta.genes or {}
    columns = {"family": meta.family, "params": meta.params, "flops": meta.flops, "input_size": meta.input_size[-1]}
    columns["subnet"] = genes.get("subnet")
    columns.update({name: genes.get(name.removeprefix("nas_")) for name in store.model_columns() if name[:4] == "nas_"})
    return columns


def _noise_report(noise) -> dict:
    """A noise's JSON-able facts for the manifest (sequence noises have none)."""
    report = getattr(noise, "report", None)
    return (report() if report is not None else None) or {}


def join_data_columns(predictions, data, groups: dict | None = None):
    """``predictions`` with what the data knows of each sample (a dataset's ``sample_columns()``: its file's
    ``path``, cue-conflict's categories), joined on ``sample_id``; and, for data scored as categories, each
    row's ``decision`` (the category its prediction names)."""
    datasets = data.values() if isinstance(data, dict) else [data]
    tables = [d.sample_columns() for d in datasets if hasattr(d, "sample_columns")]
    if tables:
        import pandas as pd

        table = pd.concat(tables, ignore_index=True).drop_duplicates("sample_id")
        predictions = predictions.drop(columns=[c for c in table if c != "sample_id"]).merge(
            table, on="sample_id", how="left", validate="many_to_one"
        )
    if groups is not None:
        names = list(groups)
        predictions["decision"] = [names[p] for p in predictions["pred"]]
    return predictions


def join_sample_columns(predictions, extra):
    """``predictions`` with a noise's extra per-sample columns joined on; every column of
    ``store.predictions_schema`` the noise did not fill is null."""
    import pandas as pd

    keys = ["noise", "condition", "eps", "sample_id"]
    if extra is not None and len(extra):
        predictions = predictions.merge(extra, on=keys, how="left", validate="many_to_one")
    for name in store.predictions_schema().names:
        if name not in predictions and name not in ("run_id", "model", "weights"):
            predictions[name] = pd.NA
    return predictions
