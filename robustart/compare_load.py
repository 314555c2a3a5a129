"""Reading the finished runs of a results folder for :mod:`robustart.compare`: one pyarrow dataset over every
run's ``metrics.parquet`` (older schema versions included), the per-run means of each measure and the rows behind
the curves.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from robustart import store
from robustart.comparison import NONE, CompareError, Loaded

#: per-row columns read from every file (the run's own columns come from the files' statistics)
ROW_COLUMNS = ("noise", "metric", "condition", "severity", "eps", "category", "value", "ci_low", "ci_high")
#: per-run columns: constant within a run's file
RUN_COLUMNS = ("run_id", "model", "family", "weights", "data", "params", "flops", "input_size", "subnet")
#: every column the comparison needs and its type where no file has it
_CORE_TYPES = {
    **dict.fromkeys(
        ("run_id", "model", "family", "weights", "data", "noise", "metric", "condition", "category"), "string"
    ),
    **dict.fromkeys(("params", "flops", "input_size", "subnet", "severity", "n"), "int64"),
    **dict.fromkeys(("eps", "value", "ci_low", "ci_high"), "float64"),
}


# ----------------------------------------------------------------------------------------------------- loading


def finished_runs(results: Path) -> tuple[list[Path], int]:
    """The finished run folders of ``results`` (with ``done`` and a metrics file), sorted by name, and how many
    other folders were left out (unfinished runs). Folders whose name starts with ``.`` are not runs."""
    if not results.is_dir():
        raise CompareError(f"results folder {results} does not exist (give the folder that holds the run folders)")
    finished, unfinished = [], 0
    with os.scandir(results) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            folder = Path(entry.path)
            if (folder / store.DONE_FILE).is_file() and (folder / store.METRICS_FILE).is_file():
                finished.append(folder)
            else:
                unfinished += 1
    if not finished:
        raise CompareError(
            f"no finished run in {results} ({unfinished} folder(s) without a '{store.DONE_FILE}' marker); "
            "run python -m robustart first, or point at the folder that holds the run folders"
        )
    return sorted(finished), unfinished


def load(results: Path) -> Loaded:
    """Read every finished run of ``results`` through one pyarrow dataset.

    The dataset's schema is the union of the files' schemas (types promoted where they differ) plus every
    column the comparison needs, so a column a file lacks reads as null. Each file's footer is read once: its
    statistics give the run's constant columns (model, family, params, genes...) without decoding them, and the
    scan reuses it for the per-row columns.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    folders, unfinished = finished_runs(results)
    filesystem = pafs.LocalFileSystem()
    fmt = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False))
    fragments = [fmt.make_fragment(str(f / store.METRICS_FILE), filesystem=filesystem) for f in folders]
    schemas: dict[tuple, pa.Schema] = {}
    versions: Counter = Counter()
    try:
        for fragment in fragments:
            fragment.ensure_complete_metadata()
            schema = fragment.physical_schema
            version = (schema.metadata or {}).get(b"robustart_schema_version", b"?").decode()
            versions[version] += 1
            schemas.setdefault((version, tuple(schema.names)), schema)
    except (OSError, pa.ArrowException) as err:
        raise CompareError(
            f"cannot read {fragment.path}: {err} (remove its run folder's 'done' marker to skip it)"
        ) from None
    try:
        schema = pa.unify_schemas(list(schemas.values()), promote_options="permissive").remove_metadata()
    except pa.ArrowException as err:
        raise CompareError(f"the metrics files of {results} have incompatible schemas: {err}") from None
    missing = [pa.field(name, type_) for name, type_ in _CORE_TYPES.items() if name not in schema.names]
    schema = pa.schema([*schema, *missing])
    genes = [name for name in schema.names if name.startswith("nas_")]
    runs = _run_columns(fragments, [*RUN_COLUMNS, *genes])

    dataset = ds.FileSystemDataset(fragments, schema, fmt, filesystem)
    try:
        table = dataset.to_table(columns=[*ROW_COLUMNS, "__fragment_index"])  # the run: its file's position
    except (OSError, pa.ArrowException) as err:
        raise CompareError(f"cannot read the metrics of {results}: {err}") from None
    table = table.rename_columns([*ROW_COLUMNS, "run"])
    # a run's value of a measure averages its overall rows; per-category rows (shape bias) are read apart
    category_rows = _select(table, "shape_bias", "category", ["run", "noise", "condition", "category", "value"])
    per_run = (
        table.filter(pc.is_null(table["category"]))
        .group_by(["run", "noise", "metric"])
        .aggregate(
            [
                ("value", "mean"),
                ("ci_low", "mean"),
                ("ci_high", "mean"),
                ("value", "count"),
                ("ci_low", "count"),
                ([], "count_all"),
            ]
        )
        .to_pandas()
        .rename(
            columns={
                "value_mean": "value",
                "ci_low_mean": "ci_low",
                "ci_high_mean": "ci_high",
                "count_all": "rows",
                "value_count": "with_value",
                "ci_low_count": "with_ci",
            }
        )
    )
    per_run = per_run[per_run["with_value"] > 0].dropna(subset=["noise", "metric"])
    partial = per_run["with_ci"] < per_run["rows"]  # some rows have no interval: the mean of the others is not one
    per_run.loc[partial, ["ci_low", "ci_high"]] = np.nan
    attack_rows = _select(table, "robust_acc", "eps", ["run", "noise", "condition", "eps", "value"])
    corruption_rows = _select(table, "acc", "severity", ["run", "noise", "condition", "severity", "value"])
    return Loaded(
        folders,
        runs,
        per_run.drop(columns=["with_value", "with_ci"]),
        attack_rows,
        corruption_rows,
        table.num_rows,
        versions,
        unfinished,
        genes,
        category_rows,
    )


def _select(table, metric: str, column: str, columns: list[str]) -> pd.DataFrame:
    """The rows of ``metric`` where ``column`` is set, as a frame of ``columns``."""
    import pyarrow.compute as pc

    mask = pc.and_(pc.equal(table["metric"], metric), pc.is_valid(table[column]))
    frame = table.select(columns).filter(mask).to_pandas()
    return frame[frame["value"].notna()]


def _run_columns(fragments, columns: list[str]) -> pd.DataFrame:
    """One row per run with ``columns``, from each file's column statistics: a run's file holds one run, so these
    columns are constant (min equals max) and need not be decoded. A column the file lacks (an older schema) is
    null; one whose statistics are missing or not constant is read from the file (its first non-null value).
    The ``nas_*`` genes are looked at only for NAS subnets (a ``subnet`` id): they are null for other models."""
    rows = []
    for fragment in fragments:
        meta = fragment.metadata
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        index = {name: i for i, name in enumerate(fragment.physical_schema.names)}
        row = dict.fromkeys(columns)
        unread = []
        for name in columns:
            if name not in index or (name.startswith("nas_") and row["subnet"] is None and "subnet" not in unread):
                continue
            stats = [g.column(index[name]).statistics for g in groups]
            if any(s is None or (s.null_count < g.num_rows and not s.has_min_max) for s, g in zip(stats, groups)):
                unread.append(name)
                continue
            values = {(s.min, s.max) for s in stats if s.has_min_max}
            if len(values) > 1 or any(low != high for low, high in values):
                unread.append(name)
            elif values:
                row[name] = values.pop()[0]
        if unread:
            table = fragment.to_table(columns=unread)
            for name in unread:
                valid = table[name].drop_null()
                row[name] = valid[0].as_py() if len(valid) else None
        rows.append(row)
    runs = pd.DataFrame(rows, columns=columns)
    for name in columns:
        if name in ("params", "flops", "input_size", "subnet") or name.startswith("nas_"):
            runs[name] = pd.to_numeric(runs[name]).astype("Int64")
        else:
            runs[name] = runs[name].astype(object).where(runs[name].notna(), None)
    for name in ("data", "family", "model"):
        runs[name] = runs[name].fillna(NONE)
    subnet = runs["subnet"].astype("string")
    runs["model_label"] = runs["model"].where(subnet.isna(), runs["model"] + "#" + subnet.fillna(""))
    return runs
