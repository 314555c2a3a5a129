"""Reading the finished runs of a results folder for :mod:`robustart.compare`: one pyarrow dataset over every
run's ``metrics.parquet`` (older schema versions included), the runs' own columns, the metric rows with their
protocol and the rows behind the curves. A finished run whose metrics file cannot be read is left out and
listed (:attr:`robustart.comparison.Loaded.skipped`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd

from robustart import store
from robustart.comparison import NONE, PERCENT_METRICS, PROTOCOL_TYPES, ROW_PROTOCOL, CompareError, Loaded

#: per-row columns read from every file (the run's own columns come from the files' statistics)
ROW_COLUMNS = ("metric", *ROW_PROTOCOL, "value", "ci_low", "ci_high", "n")
#: per-run columns: constant within a run's file
RUN_COLUMNS = ("run_id", "model", "family", "weights", "weights_source", "weights_id", "recipe", "data", "params",
               "flops", "input_size", "subnet")  # fmt: skip
_INTEGER_RUN_COLUMNS = ("params", "flops", "input_size", "subnet")
#: every column the comparison needs and its type where no file has it
_CORE_TYPES = {
    **dict.fromkeys(
        ("run_id", "model", "family", "weights", "weights_source", "weights_id", "data", "metric"), "string"
    ),
    **dict.fromkeys(("params", "flops", "input_size", "subnet", "n"), "int64"),
    **dict.fromkeys(("value", "ci_low", "ci_high"), "float64"),
    **PROTOCOL_TYPES,
}


# ----------------------------------------------------------------------------------------------------- loading


def finished_runs(results: Path) -> tuple[list[Path], int, list[tuple[Path, str]]]:
    """The finished run folders of ``results`` (those with ``done``) that hold a metrics file, sorted by name; how
    many other folders were left out (unfinished runs); and ``(metrics file, reason)`` of the finished runs without
    a metrics file. Folders whose name starts with ``.`` are not runs."""
    if not results.is_dir():
        raise CompareError(f"results folder {results} does not exist (give the folder that holds the run folders)")
    finished, missing, unfinished = [], [], 0
    with os.scandir(results) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            folder = Path(entry.path)
            if not (folder / store.DONE_FILE).is_file():
                unfinished += 1
            elif (folder / store.METRICS_FILE).is_file():
                finished.append(folder)
            else:
                missing.append((folder / store.METRICS_FILE, f"{store.METRICS_FILE} is missing"))
    if not finished and not missing:
        raise CompareError(
            f"no finished run in {results} ({unfinished} folder(s) without a '{store.DONE_FILE}' marker); "
            "run python -m robustart first, or point at the folder that holds the run folders"
        )
    return sorted(finished), unfinished, sorted(missing)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def load(results: Path) -> Loaded:
    """Read every finished run of ``results`` through one pyarrow dataset.

    The dataset's schema is the union of the files' schemas (types promoted where they differ) plus every
    column the comparison needs, so a column a file lacks reads as null. Each file's footer is read once: its
    statistics give the run's constant columns (model, family, recipe, params, genes...) without decoding them,
    and the scan reuses it for the per-row columns. A file whose footer cannot be read is left out there; the
    scan runs once over all files and only when it fails are the files scanned one by one to find and leave out
    the unreadable ones, so readable results cost nothing extra.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    folders, unfinished, skipped = finished_runs(results)
    filesystem = pafs.LocalFileSystem()
    fmt = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False))
    readable, fragments = [], []
    for folder in folders:
        try:
            fragment = fmt.make_fragment(str(folder / store.METRICS_FILE), filesystem=filesystem)
            fragment.ensure_complete_metadata()
        except (OSError, pa.ArrowException) as err:
            skipped.append((folder / store.METRICS_FILE, _reason(err)))
            continue
        readable.append(folder)
        fragments.append(fragment)

    def drop(index: int, err, *more: list) -> None:
        skipped.append((readable[index] / store.METRICS_FILE, err if isinstance(err, str) else _reason(err)))
        for items in (readable, fragments, *more):
            del items[index]

    schema = _unified(fragments, lambda i, reason: drop(i, reason)) if fragments else None
    if not fragments:
        raise CompareError(f"no readable run in {results}: {_skipped_text(skipped)}")
    missing = [pa.field(name, type_) for name, type_ in _CORE_TYPES.items() if name not in schema.names]
    schema = pa.schema([*schema, *missing])
    genes = [name for name in schema.names if name.startswith("nas_")]

    run_rows = []
    for fragment in list(fragments):
        try:
            run_rows.append(_run_row(fragment, [*RUN_COLUMNS, *genes]))
        except (OSError, pa.ArrowException) as err:
            drop(fragments.index(fragment), err)
    table = _scan(ds, fmt, filesystem, schema, fragments)
    if table is None:  # some file's data is unreadable: find it, leave it out, scan the others
        for fragment in list(fragments):
            try:
                fragment.to_table(schema=schema, columns=list(ROW_COLUMNS))
            except (OSError, pa.ArrowException) as err:
                drop(fragments.index(fragment), err, run_rows)
        table = _scan(ds, fmt, filesystem, schema, fragments) if fragments else None
        if table is None and fragments:
            raise CompareError(f"cannot read the metrics of {results}") from None
    if not fragments:
        raise CompareError(f"no readable run in {results}: {_skipped_text(skipped)}")
    versions = Counter(_version(f.physical_schema) for f in fragments)
    runs = _runs_frame(run_rows, [*RUN_COLUMNS, *genes])
    return _loaded(table, readable, runs, versions, unfinished, genes, skipped)


def _unified(fragments: list, drop):
    """The union of the files' schemas (types promoted where they differ, without metadata). Where they cannot be
    unified, the schemas most files share are kept and each file of a schema that does not fit is dropped
    (``drop(index, reason)``)."""
    import pyarrow as pa

    kinds: dict[tuple, list[int]] = {}
    for i, fragment in enumerate(fragments):
        schema = fragment.physical_schema
        kinds.setdefault((_version(schema), tuple(schema.names), tuple(map(str, schema.types))), []).append(i)
    first = {key: fragments[ids[0]].physical_schema for key, ids in kinds.items()}
    try:
        return pa.unify_schemas(list(first.values()), promote_options="permissive").remove_metadata()
    except pa.ArrowException:
        pass
    kept, bad = [], []
    for key in sorted(kinds, key=lambda k: -len(kinds[k])):
        try:
            pa.unify_schemas([*kept, first[key]], promote_options="permissive")
            kept.append(first[key])
        except pa.ArrowException as err:
            bad += [(i, f"its columns' types do not match the other runs' ({_reason(err)})") for i in kinds[key]]
    for i, reason in sorted(bad, reverse=True):  # from the end: the indices before stay valid
        drop(i, reason)
    return pa.unify_schemas(kept, promote_options="permissive").remove_metadata()


def _version(schema) -> str:
    return (schema.metadata or {}).get(b"robustart_schema_version", b"?").decode()


def _skipped_text(skipped: list[tuple[Path, str]]) -> str:
    first = "; ".join(f"{path}: {reason}" for path, reason in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f"{len(skipped)} finished run(s) could not be read ({first}{more})"


def _scan(ds, fmt, filesystem, schema, fragments):
    """Every file's per-row columns and ``run`` (its file's position), or ``None`` when some file's data fails."""
    import pyarrow as pa

    dataset = ds.FileSystemDataset(fragments, schema, fmt, filesystem)
    try:
        table = dataset.to_table(columns=[*ROW_COLUMNS, "__fragment_index"])
    except (OSError, pa.ArrowException):
        return None
    return table.rename_columns([*ROW_COLUMNS, "run"])


def _loaded(table, folders, runs, versions, unfinished, genes, skipped) -> Loaded:
    """The :class:`Loaded` of the scanned rows: step counts of older accuracy-vs-steps rows moved from
    ``severity`` to ``steps``, units filled where older files lack them, and the rows split by use."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table.combine_chunks()  # one chunk, not one per file: every kernel below pays its overhead once
    metric = table["metric"]
    old_steps = pc.and_(pc.equal(metric, "robust_acc_vs_steps"), pc.is_null(table["steps"]))
    if pc.any(old_steps).as_py():  # schema 1-3 kept the step count of these curves in severity
        severity = table["severity"]
        table = table.set_column(
            table.schema.get_field_index("steps"), "steps", pc.if_else(old_steps, severity, table["steps"])
        )
        table = table.set_column(
            table.schema.get_field_index("severity"),
            "severity",
            pc.if_else(old_steps, pa.scalar(None, severity.type), severity),
        )
    if table["unit"].null_count:
        default = pc.if_else(
            pc.is_in(metric, pa.array(sorted(PERCENT_METRICS))),
            "percent",
            pc.if_else(pc.starts_with(metric, "warning_"), "count", "fraction"),
        )
        table = table.set_column(
            table.schema.get_field_index("unit"), "unit", pc.coalesce(table["unit"], default.cast(table["unit"].type))
        )
    valid = pc.and_(pc.is_valid(table["value"]), pc.and_(pc.is_valid(table["noise"]), pc.is_valid(metric)))
    overall = table.filter(pc.and_(valid, pc.is_null(table["category"])))
    counts = overall.group_by(["noise", "metric"]).aggregate([("run", "count_distinct")]).to_pandas()
    pairs = counts.rename(columns={"run_count_distinct": "runs"})[["noise", "metric", "runs"]]
    return Loaded(
        folders,
        runs,
        overall.select(["run", *ROW_COLUMNS]),
        pairs,
        _select(overall, "robust_acc", "eps", ["run", "noise", "condition", "eps", "norm", "steps", "value"]),
        _select(overall, "acc", "severity", ["run", "noise", "condition", "severity", "param_set", "value"]),
        table.num_rows,
        versions,
        unfinished,
        genes,
        _select(table, "shape_bias", "category", ["run", "noise", "condition", "category", "value"]),
        skipped,
    )


def _select(table, metric: str, column: str, columns: list[str]) -> pd.DataFrame:
    """The rows of ``metric`` where ``column`` is set, as a frame of ``columns``."""
    import pyarrow.compute as pc

    mask = pc.and_(pc.equal(table["metric"], metric), pc.is_valid(table[column]))
    frame = table.select(columns).filter(mask).to_pandas()
    return frame[frame["value"].notna()].reset_index(drop=True)


def _run_row(fragment, columns: list[str]) -> dict:
    """One run's ``columns`` from its file's column statistics: a run's file holds one run, so these columns are
    constant (min equals max) and need not be decoded. A column the file lacks (an older schema) is null; one whose
    statistics are missing or not constant is read from the file (its first non-null value). The ``nas_*`` genes
    are looked at only for NAS subnets (a ``subnet`` id): they are null for other models."""
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
    return row


def _runs_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """One row per run: ``columns``, with ``model_label`` (``nas_subnet#<id>`` for a subnet)."""
    runs = pd.DataFrame(rows, columns=columns)
    for name in columns:
        if name in _INTEGER_RUN_COLUMNS or name.startswith("nas_"):
            runs[name] = pd.to_numeric(runs[name]).astype("Int64")
        else:
            runs[name] = runs[name].astype(object).where(runs[name].notna(), None)
    for name in ("data", "family", "model"):
        runs[name] = runs[name].fillna(NONE)
    subnet = runs["subnet"].astype("string")
    runs["model_label"] = runs["model"].where(subnet.isna(), runs["model"] + "#" + subnet.fillna(""))
    return runs
