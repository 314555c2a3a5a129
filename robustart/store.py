"""The results store: one folder per run with metrics, predictions, a manifest and a ``done`` marker.

Every file is written to a temporary name and renamed into place, and ``done`` is written last, so a
run folder is either complete (``done`` present) or ignored and redone. A ``done`` marker over tables that are
missing or unreadable (a file deleted or cut short by hand, a full disk) is reported and redone too (:func:`finished`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robustart.noise.options import NOISE_PROTOCOL

log = logging.getLogger("robustart")

#: where datasets, checkpoints and weights are cached unless ``ROBUSTART_CACHE`` says otherwise
DEFAULT_CACHE_DIR = "~/.cache/robustart"

#: 2 added the model's ``flops``, ``input_size``, ``subnet`` and NAS gene (``nas_*``) columns to ``metrics``.
#: 3 added ``category`` to ``metrics`` and ``path``, ``shape_category``, ``texture_category`` and ``decision`` to
#: ``predictions`` (nullable; a file of an older version reads them as null).
#: 4 added the protocol columns (:data:`PROTOCOL_COLUMNS`) and ``weights_source``/``weights_id`` to both tables,
#: ``unit`` and ``ci_method`` to ``metrics`` and ``data``/``family`` to ``predictions``; accuracy against attack
#: iterations keeps its step count in ``steps``, no longer in ``severity``.
SCHEMA_VERSION = 4
METRICS_FILE = "metrics.parquet"
PREDICTIONS_FILE = "predictions.parquet"
FRAMES_FILE = "frames.parquet"
MANIFEST_FILE = "manifest.json"
DONE_FILE = "done"


def model_columns() -> list[str]:
    """The model metadata columns of ``metrics.parquet`` after ``family``, ``weights`` and ``params``:
    ``flops``, ``input_size`` (px), and for NAS subnets their ``subnet`` id and genes (``nas_<gene>``,
    null for hand-designed models), so that tables group by family and robustness can be read against genes."""
    from robustart.model_zoo.nas import GENE_NAMES

    return ["flops", "input_size", "subnet", *(f"nas_{g}" for g in GENE_NAMES)]


#: what a row was measured under, beyond its noise, condition, severity and eps (null where it does not apply): the
#: budget's ``norm`` (Linf, L2, L1), an attack's ``steps`` (iterations; queries for Square), ``restarts``,
#: ``step_size`` (absolute, in the norm's units), ``random_start`` and ``targeted``; a corruption's parameter set
#: ``param_set`` (imagenet, cifar, tiny); a transfer attack's ``source_model``; and the training ``recipe`` of the
#: model (``baseline_cnn+mixup``, ``none`` for weights robustart did not train). ``param_set`` stands for what
#: the design calls ``params``, a name ``metrics.parquet`` already gives the model's parameter count.
PROTOCOL_COLUMNS = (*NOISE_PROTOCOL, "recipe")
#: the unit of each metric's values (``unit``): fraction (accuracies, rates, shape bias), percent (CE and mCE, as
#: ImageNet-C publishes them), count (validity warnings, attack passes) or score (other magnitudes)
UNITS = ("fraction", "percent", "count", "score")
#: how a row's interval was computed (``ci_method``): wilson (a proportion), bootstrap (over images), none
CI_METHODS = ("wilson", "bootstrap", "none")


def _protocol_fields(pa) -> list:
    types = {"steps": pa.int64(), "restarts": pa.int64(), "step_size": pa.float64(), "random_start": pa.bool_(),
             "targeted": pa.bool_()}  # fmt: skip
    return [(name, types.get(name, pa.string())) for name in PROTOCOL_COLUMNS]


def _weights_fields(pa) -> list:
    """``weights`` as the run names it (``pretrained``, ``robustart:<hash>``, a file), and split: its
    ``weights_source`` (random, pretrained, robustart, file, timm) and ``weights_id`` (the hash, tag or path)."""
    return [("weights", pa.string()), ("weights_source", pa.string()), ("weights_id", pa.string())]


def split_weights(weights: str | None) -> tuple[str | None, str | None]:
    """``(weights_source, weights_id)`` of a run's ``weights`` string: ``robustart:ab12`` -> ``(robustart, ab12)``,
    ``pretrained`` -> ``(pretrained, None)``, a path -> ``(file, path)``."""
    if weights is None:
        return None, None
    if weights in ("random", "pretrained"):
        return weights, None
    source, sep, rest = weights.partition(":")
    if sep and source.isidentifier() and len(source) > 1:  # not a Windows drive letter
        return source, rest
    return "file", weights


def metrics_schema():
    """Arrow schema of ``metrics.parquet``: one row per (run, metric, condition)."""
    import pyarrow as pa

    fields = [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("family", pa.string()),
        *_weights_fields(pa),
        ("params", pa.int64()),
        *((name, pa.int64()) for name in model_columns()),
        ("data", pa.string()),
        ("noise", pa.string()),
        ("metric", pa.string()),
        ("condition", pa.string()),
        ("severity", pa.int64()),
        ("eps", pa.float64()),
        # shape bias (data=cue_conflict): the shape category of a per-category row; null for overall rows
        ("category", pa.string()),
        *_protocol_fields(pa),
        ("value", pa.float64()),
        ("n", pa.int64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("unit", pa.string()),
        ("ci_method", pa.string()),
    ]
    return pa.schema(fields, metadata={"robustart_schema_version": str(SCHEMA_VERSION), "table": "metrics"})


def _row_identity(pa) -> list:
    """The leading fields of the per-sample tables: which run, model and weights, under which condition."""
    return [
        ("run_id", pa.string()),
        ("model", pa.string()),
        *_weights_fields(pa),
        ("noise", pa.string()),
        ("condition", pa.string()),
        ("severity", pa.int64()),
    ]


def predictions_schema():
    """Arrow schema of ``predictions.parquet``: one row per (condition, sample)."""
    import pyarrow as pa

    fields = [
        *_row_identity(pa),
        ("eps", pa.float64()),
        *_protocol_fields(pa),
        ("data", pa.string()),
        ("family", pa.string()),
        ("sample_id", pa.int64()),
        ("label", pa.int64()),
        ("pred", pa.int64()),
        ("correct", pa.bool_()),
        ("correct_top5", pa.bool_()),
        ("confidence", pa.float32()),
        ("margin", pa.float32()),
        # minimal-budget noises (cw, deepfool, min_eps): the sample's smallest perturbation found to change its
        # prediction (0: misclassified clean; NaN: never changed); null for every other noise
        ("min_eps", pa.float64()),
        # file data: the image's path relative to the data root (null for in-memory data)
        ("path", pa.string()),
        # cue-conflict data: the image's shape and texture categories and the model's 16-way decision
        ("shape_category", pa.string()),
        ("texture_category", pa.string()),
        ("decision", pa.string()),
    ]
    return pa.schema(fields, metadata={"robustart_schema_version": str(SCHEMA_VERSION), "table": "predictions"})


def frames_schema():
    """Arrow schema of ``frames.parquet`` (sequence noises such as ImageNet-P): one row per (condition, video,
    frame) with the frame's prediction and its five highest classes, best first (``top5_1`` .. ``top5_5``)."""
    import pyarrow as pa

    fields = [
        *_row_identity(pa),
        ("sample_id", pa.int64()),
        ("label", pa.int64()),
        ("frame", pa.int64()),
        ("pred", pa.int64()),
        *((f"top5_{k}", pa.int64()) for k in range(1, 6)),
    ]
    return pa.schema(fields, metadata={"robustart_schema_version": str(SCHEMA_VERSION), "table": "frames"})


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """:func:`training.checkpoint.atomic_write`, imported on use so that the done-check stays free of torch."""
    from robustart.training.checkpoint import atomic_write as write_atomically

    write_atomically(path, write)


def write_table(frame, schema, path: Path) -> None:
    """Write a pandas frame as Parquet under ``schema`` (columns selected and cast; missing ones fail)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_json(data: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=False, default=str)))


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE_FILE).is_file()


def table_problem(run_dir: Path) -> str | None:
    """Why the tables of a run folder cannot be read back (a missing file, a manifest that is not JSON, a Parquet
    file whose footer pyarrow cannot read); ``None`` when they can. Cheap: only the Parquet footers are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    for name in (METRICS_FILE, PREDICTIONS_FILE, MANIFEST_FILE):
        if not (run_dir / name).is_file():
            return f"{name} is missing"
    try:
        json.loads((run_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as err:
        return f"{MANIFEST_FILE} is unreadable ({err})"
    for name in (METRICS_FILE, PREDICTIONS_FILE, FRAMES_FILE):
        path = run_dir / name
        if name == FRAMES_FILE and not path.exists():  # only sequence noises (ImageNet-P) write frames
            continue
        try:
            pq.read_schema(path)
        except (OSError, ValueError, pa.ArrowException) as err:
            return f"{name} is unreadable ({err})"
    return None


def finished(run_dir: Path, warn: bool = True) -> bool:
    """Whether ``run_dir`` holds a finished run, to skip: its ``done`` marker and readable tables
    (:func:`table_problem`). A marker over missing or unreadable tables is reported (``warn``) and the run is redone:
    its caller removes the marker (:func:`unmark_done`) once it holds the run's lock (:mod:`robustart.locking`)."""
    if not is_done(run_dir):
        return False
    problem = table_problem(run_dir)
    if problem is None:
        return True
    if warn:
        log.warning("%s is marked done but %s: running it again", run_dir, problem)
    return False


def unmark_done(run_dir: Path) -> None:
    """Remove a stale ``done`` marker (see :func:`finished`) before the run is redone."""
    (Path(run_dir) / DONE_FILE).unlink(missing_ok=True)


def mark_done(run_dir: Path) -> None:
    atomic_write(Path(run_dir) / DONE_FILE, lambda tmp: Path(tmp).write_text("done\n"))


def find_run(results_dir: Path | str, name: str, option: str) -> Path:
    """The folder of the finished run ``name``: a run folder, or a run id under ``results_dir``. ``option`` is the
    setting that named it (``noise.source``, ``noise.baseline_run``), for the error messages."""
    from robustart.errors import UserError

    folder = Path(name).expanduser()
    if not folder.is_dir():
        results = Path(results_dir).expanduser()
        matches = sorted(results.glob(f"*-{name}")) if results.is_dir() else []
        if len(matches) != 1:
            raise UserError(f"{option}={name}: no run folder or run id of that name in {results}")
        folder = matches[0]
    if not is_done(folder):
        raise UserError(f"{option}={name}: {folder} is not a finished run (no 'done' file)")
    return folder


def read_run(run_dir: Path) -> tuple[Any, Any, dict]:
    """``(metrics, predictions, manifest)`` of a finished run, as pandas frames and a dict."""
    import pandas as pd

    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / MANIFEST_FILE).read_text())
    return pd.read_parquet(run_dir / METRICS_FILE), pd.read_parquet(run_dir / PREDICTIONS_FILE), manifest


def check_writable(folder: Path | str, option: str) -> None:
    """Refuse an output folder that cannot be created or written (``option`` names the setting), before any work."""
    import tempfile

    from robustart.errors import UserError

    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserError(f"{option}={folder} cannot be written ({reason}); choose a writable folder") from None
