"""Compare finished runs: ``python -m robustart.compare RESULTS_DIR [--by family] [--metrics ...] [--out DIR]``.

Every finished run folder of ``RESULTS_DIR`` (one holding the ``done`` marker; folders starting with ``.`` are not
runs) is read through one :mod:`pyarrow.dataset`. Files of older schema versions are read as they are: a column
a file lacks (schema 1 has no ``flops``, ``input_size``, ``subnet`` or ``nas_*``) is null for its rows. The
comparison is printed as a table and written to ``compare.csv``, ``compare.md`` and a self-contained
``report.html`` (tables and matplotlib plots embedded as PNG) in ``--out`` (default ``RESULTS_DIR``).

Definitions (the report repeats them):

- A **measure** is a metric under one noise (``top1``, ``robust_acc``, ``imagenet_c:acc``); it is named by the
  metric alone unless several noises report that metric. ``--metrics`` takes metric names (every noise that has
  the metric) or ``noise:metric``.
- A **run's value** of a measure is the mean of its rows (over conditions, severities and budgets), and its 95%
  interval the mean of the rows' stored bounds (Wilson or bootstrap intervals; exact for one row, conservative
  for a mean over several). Rows stored without an interval (CE, mCE, ``sys_std``, sequence and detection
  metrics) give the run no interval.
- A **group** is one value of ``--by`` (default ``model``, where a NAS subnet counts as its own model, named
  ``nas_subnet#<id>``) within one data set. Its value is the mean over its runs. With one run, its interval is
  that run's. With ``k >= 2`` runs of values ``v_i`` and standard errors ``s_i = (ci_high - ci_low) / 3.92``, it
  is ``mean(v) +- 1.96 * sqrt(var(v) / k + sum(s_i^2) / k^2)`` (``var`` with ``ddof=1``; a run without an
  interval adds no ``s_i``), so both the spread between runs and each run's sampling error count; bounds are
  clipped to [0, 1] for proportions.
- **Rank** 1 is the best group of a data set (the highest value, or the lowest for error-like metrics such as
  ``mce`` or ``flip_rate``; ties share the better rank). The **rank interval** ``[best, worst]`` is the range of
  ranks the group could take if every group's true value may lie anywhere in its 95% interval:
  ``best = 1 + #{other groups whose lower bound is above this group's upper bound}`` and
  ``worst = 1 + #{other groups whose upper bound is above this group's lower bound}`` (for higher-is-better
  measures; mirrored otherwise). A group without an interval may lie anywhere, so it is never certainly better
  or worse than another.

Errors a user can cause (a missing folder, no finished run, an unknown metric or ``--by`` column) print one line
on stderr and exit with status 2; the output files are written only when everything succeeded, each under a
temporary name renamed into place.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from robustart import store

USER_ERROR = 2
Z95 = 1.959963984540054
OUTPUT_FILES = ("compare.csv", "compare.md", "report.html")
#: rows of each data set's table printed on the terminal (the files hold every group)
TERMINAL_ROWS = 25

#: metrics where a lower value is better: errors, flip rates, spreads, detection false positives
LOWER_IS_BETTER = frozenset(
    {
        "ce",
        "mce",
        "relative_mce",
        "mce_unnormalized",
        "fp",
        "mfp",
        "nmfp",
        "t5d",
        "mt5d",
        "calib_rms",
        "fpr95",
        "flip_rate",
        "sys_std",
        "transfer_asr",
    }
)
#: metrics that are shares in [0, 1], shown in percent
PROPORTIONS = frozenset(
    {
        "top1",
        "top5",
        "robust_acc",
        "ar",
        "wcar",
        "acc",
        "sys_mean",
        "sys_worst",
        "sys_std",
        "flip_rate",
        "fp",
        "mfp",
        "aupr",
        "auroc",
        "fpr95",
        "calib_rms",
        "aurra",
        "transfer_asr",
        "broken_first",
        "robust_acc_vs_eps",
        "robust_acc_vs_steps",
    }
)
#: metrics shown when --metrics is not given, those the runs hold, in this order, one noise each (see
#: :func:`select_measures`; ``acc`` of a noise that also reports ``sys_mean`` is left out: ``sys_mean`` is its mean)
DEFAULT_METRICS = ("top1", "robust_acc", "ar", "acc", "mce", "sys_mean", "mfp", "nmfp", "aupr")
#: which noise a default measure comes from when several report its metric in as many runs: the worst case over
#: attacks first, then the standard attack and benchmarks
PREFERRED_NOISES = ("clean", "wcar", "autoattack", "pgd_linf", "imagenet_c", "imagenet_s", "imagenet_p")
#: per-row columns read from every file (the run's own columns come from the files' statistics)
ROW_COLUMNS = ("noise", "metric", "condition", "severity", "eps", "value", "ci_low", "ci_high")
#: per-run columns: constant within a run's file
RUN_COLUMNS = ("run_id", "model", "family", "weights", "data", "params", "flops", "input_size", "subnet")
#: every column the comparison needs and its type where no file has it
_CORE_TYPES = {
    **dict.fromkeys(("run_id", "model", "family", "weights", "data", "noise", "metric", "condition"), "string"),
    **dict.fromkeys(("params", "flops", "input_size", "subnet", "severity", "n"), "int64"),
    **dict.fromkeys(("eps", "value", "ci_low", "ci_high"), "float64"),
}
NONE = "(none)"


class CompareError(Exception):
    """A problem with the user's input: reported as one line on stderr with exit status 2."""


@dataclass(frozen=True)
class Measure:
    """A metric under one noise, and how the comparison names, orders and shows it."""

    noise: str
    metric: str
    label: str

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @property
    def percent(self) -> bool:
        return self.metric in PROPORTIONS

    def show(self, value: float) -> str:
        """``value`` as the tables print it: percent with one decimal for proportions, else 4 significant digits."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return f"{100 * value:.1f}" if self.percent else f"{value:.4g}"

    @property
    def heading(self) -> str:
        arrow = "" if self.higher_is_better else " (lower is better)"
        return f"{self.label} %{arrow}" if self.percent else f"{self.label}{arrow}"


@dataclass
class Loaded:
    """What :func:`load` read: one row per run, per-run measure values and the rows behind the curves."""

    folders: list[Path]
    runs: pd.DataFrame  # index: run number (position in folders); columns RUN_COLUMNS + nas_*, model_label
    per_run: pd.DataFrame  # run, noise, metric, value, ci_low, ci_high, rows
    attack_rows: pd.DataFrame  # run, noise, condition, eps, value (metric robust_acc)
    corruption_rows: pd.DataFrame  # run, noise, condition, severity, value (metric acc with a severity)
    num_rows: int
    versions: Counter
    unfinished: int
    genes: list[str]


@dataclass
class Comparison:
    """The comparison of a results folder: group and model tables, curves and notes, ready to print and plot."""

    results: Path
    by: list[str]
    measures: list[Measure]
    plot_measures: list[Measure]  # measures, plus clean top-1 for the scatter
    table: pd.DataFrame  # long: data, group, family, runs, measure, value, ci_low, ci_high, rank, rank_best, rank_worst
    groups: pd.DataFrame  # one row per (data, group): data, group, family, runs, and the --by columns
    models: pd.DataFrame  # long, as table but grouped per model (the points of the strip, scatter and NAS plots)
    model_info: pd.DataFrame  # one row per (data, model group): family, subnet, flops, nas_* genes
    attack_curves: pd.DataFrame  # data, group, family, noise, condition, eps, value
    corruption_curves: pd.DataFrame  # data, group, family, noise, condition, severity, value
    loaded: Loaded
    notes: list[str] = field(default_factory=list)

    @property
    def data_sets(self) -> list[str]:
        """The data sets, the one with the most runs first."""
        counts = self.loaded.runs["data"].value_counts()
        return sorted(counts.index, key=lambda d: (-counts[d], d))


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
    per_run = (
        table.group_by(["run", "noise", "metric"])
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


# ---------------------------------------------------------------------------------------------- the comparison


def measures_of(per_run: pd.DataFrame) -> list[Measure]:
    """Every (noise, metric) pair the runs hold, named by the metric unless several noises report it."""
    pairs = per_run[["noise", "metric"]].drop_duplicates()
    noises_per_metric = pairs.groupby("metric")["noise"].nunique()
    return [
        Measure(noise, metric, metric if noises_per_metric[metric] == 1 else f"{noise}:{metric}")
        for noise, metric in sorted(pairs.itertuples(index=False, name=None), key=lambda p: (p[1], p[0]))
    ]


def select_measures(available: list[Measure], requested: list[str] | None, runs_per: dict | None = None):
    """The measures named by ``requested`` (metric names, every noise that has them, or ``noise:metric``), or
    by default one measure per metric of :data:`DEFAULT_METRICS` that the runs hold: the noise with the most
    runs (``runs_per[(noise, metric)]``), ties broken by :data:`PREFERRED_NOISES`, then by name."""
    if not requested:
        runs_per = runs_per or {}
        noises_with_sys = {m.noise for m in available if m.metric == "sys_mean"}
        chosen = []
        for metric in DEFAULT_METRICS:
            found = [
                m for m in available if m.metric == metric and not (metric == "acc" and m.noise in noises_with_sys)
            ]
            if found:
                rank = {n: i for i, n in enumerate(PREFERRED_NOISES)}
                chosen.append(
                    min(
                        found,
                        key=lambda m: (-runs_per.get((m.noise, m.metric), 0), rank.get(m.noise, len(rank)), m.noise),
                    )
                )
        return chosen or available[:6]
    chosen = []
    for name in requested:
        found = [m for m in available if name in (m.label, f"{m.noise}:{m.metric}")] if ":" in name else []
        found = found or [m for m in available if m.metric == name]
        if not found:
            names = ", ".join(sorted({m.metric for m in available}))
            raise CompareError(
                f"unknown metric {name!r}: the runs hold {names} (name one, or noise:metric for one noise's rows)"
            )
        chosen += [m for m in found if m not in chosen]
    return chosen


def run_level_columns(loaded: Loaded) -> list[str]:
    """The columns ``--by`` accepts: those constant within a run."""
    return [c for c in loaded.runs.columns if c != "model_label"]


def _group_labels(runs: pd.DataFrame, by: list[str]) -> pd.Series:
    """Each run's group name: its ``by`` values joined by `` / `` (``model`` names a subnet ``nas_subnet#<id>``)."""
    parts = []
    for column in by:
        values = runs["model_label"] if column == "model" else runs[column]
        parts.append(values.astype("string").fillna(NONE))
    label = parts[0]
    for part in parts[1:]:
        label = label + " / " + part
    return label.astype(object)


def group_values(per_run: pd.DataFrame, labels: pd.Series, runs: pd.DataFrame, measures: list[Measure]):
    """Per (data, group, measure): runs, value, 95% interval and rank interval (see the module docstring)."""
    keep = pd.Series(False, index=per_run.index)
    names = {}
    for m in measures:
        hit = (per_run["noise"] == m.noise) & (per_run["metric"] == m.metric)
        keep |= hit
        names[(m.noise, m.metric)] = m.label
    frame = per_run[keep].copy()
    frame["measure"] = [names[k] for k in zip(frame["noise"], frame["metric"])]
    frame["data"] = runs["data"].to_numpy()[frame["run"].to_numpy()]
    frame["group"] = labels.to_numpy()[frame["run"].to_numpy()]
    frame["se2"] = ((frame["ci_high"] - frame["ci_low"]) / (2 * Z95)) ** 2
    frame["all_ci"] = frame["ci_low"].notna()
    agg = (
        frame.groupby(["data", "group", "measure"], sort=False)
        .agg(
            runs=("value", "size"),
            value=("value", "mean"),
            var=("value", "var"),
            se2=("se2", "sum"),
            ci_low=("ci_low", "first"),
            ci_high=("ci_high", "first"),
            all_ci=("all_ci", "all"),
            rows=("rows", "mean"),
        )
        .reset_index()
    )
    several = agg["runs"] > 1
    half = Z95 * np.sqrt(agg["var"] / agg["runs"] + agg["se2"] / agg["runs"] ** 2)
    agg.loc[several, "ci_low"] = (agg["value"] - half)[several]
    agg.loc[several, "ci_high"] = (agg["value"] + half)[several]
    agg.loc[~several & ~agg["all_ci"], ["ci_low", "ci_high"]] = np.nan
    percent = agg["measure"].map({m.label: m.percent for m in measures})
    agg.loc[percent & several, "ci_low"] = agg.loc[percent & several, "ci_low"].clip(lower=0)
    agg.loc[percent & several, "ci_high"] = agg.loc[percent & several, "ci_high"].clip(upper=1)
    parts = []
    for (_, label), g in agg.groupby(["data", "measure"], sort=False):
        m = next(m for m in measures if m.label == label)
        rank, best, worst = rank_intervals(g["value"], g["ci_low"], g["ci_high"], m.higher_is_better)
        parts.append(g.assign(rank=rank, rank_best=best, rank_worst=worst))
    out = pd.concat(parts, ignore_index=True) if parts else agg.assign(rank=[], rank_best=[], rank_worst=[])
    return out.drop(columns=["var", "se2", "all_ci"])


def rank_intervals(value, low, high, higher_is_better: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranks (1 = best) and rank intervals of groups with values and 95% intervals ``[low, high]``.

    ``rank = 1 + #{others with a better value}``; ``best = 1 + #{others whose interval lies wholly above this
    one's}`` (lower bound above this upper bound); ``worst = 1 + #{others whose upper bound is above this lower
    bound}``: the best and worst ranks consistent with the intervals. A missing bound is unbounded. For
    lower-is-better measures everything is mirrored. O(n log n).

    >>> rank_intervals([0.9, 0.8, 0.5], [0.85, 0.75, 0.45], [0.95, 0.88, 0.55])
    (array([1, 2, 3]), array([1, 1, 3]), array([2, 2, 3]))
    """
    v, lo, hi = (np.asarray(a, dtype=float) for a in (value, low, high))
    if not higher_is_better:
        v, lo, hi = -v, -hi, -lo
    lo = np.minimum(np.where(np.isnan(lo), -np.inf, lo), v)
    hi = np.maximum(np.where(np.isnan(hi), np.inf, hi), v)
    n = len(v)
    rank = 1 + n - np.searchsorted(np.sort(v), v, side="right")
    best = 1 + n - np.searchsorted(np.sort(lo), hi, side="right")
    worst = 1 + n - np.searchsorted(np.sort(hi), lo, side="right") - (hi > lo)
    return rank.astype(int), best.astype(int), worst.astype(int)


def compare(results: Path, by: list[str] | None = None, metrics: list[str] | None = None) -> Comparison:
    """Load ``results`` and compare its runs grouped by ``by`` (default ``["model"]``) on ``metrics``."""
    results = Path(results)
    by = list(by or ["model"])
    loaded = load(results)
    allowed = run_level_columns(loaded)
    for column in by:
        if column not in allowed:
            raise CompareError(f"unknown --by column {column!r}: choose from {', '.join(allowed)}")
    available = measures_of(loaded.per_run)
    runs_per = loaded.per_run.groupby(["noise", "metric"]).size().to_dict()
    measures = select_measures(available, metrics, runs_per)
    # the clean-vs-robust scatter needs clean top-1 even when the tables leave it out
    plot_measures = measures + [m for m in available if (m.noise, m.metric) == ("clean", "top1") and m not in measures]
    runs = loaded.runs
    labels = _group_labels(runs, by)
    table = group_values(loaded.per_run, labels, runs, measures)
    model_labels = _group_labels(runs, ["model"])
    same = by == ["model"] and plot_measures == measures
    models = table if same else group_values(loaded.per_run, model_labels, runs, plot_measures)

    raw = [col for b in by for col in (["model", "subnet"] if b == "model" else [b]) if col != "data"]
    groups = _group_info(runs.assign(group=labels), raw)
    model_info = _group_info(runs.assign(group=model_labels), ["subnet", "flops", *loaded.genes])
    table = _order(table, measures)
    notes = _notes(loaded, table, measures)
    return Comparison(
        results,
        by,
        measures,
        plot_measures,
        table,
        groups,
        models,
        model_info,
        _curves(loaded.attack_rows, runs, labels, groups, "eps"),
        _curves(loaded.corruption_rows, runs, labels, groups, "severity"),
        loaded,
        notes,
    )


def _group_info(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per (data, group): its family (or families), its number of runs and ``columns`` (first value)."""
    grouped = runs.groupby(["data", "group"], sort=False)
    families = grouped["family"]
    info = pd.DataFrame({"family": families.first(), "runs": families.size()})
    mixed = families.nunique() > 1
    if mixed.any():  # a group across families (--by weights...): name them all
        info.loc[mixed, "family"] = families.agg(lambda f: ",".join(sorted(set(f))))[mixed]
    extra = [c for c in dict.fromkeys(columns) if c not in ("family", "group")]
    if extra:
        info = info.join(grouped[extra].first())
    return info.reset_index()


def _order(table: pd.DataFrame, measures: list[Measure]) -> pd.DataFrame:
    """``table`` with groups ordered within each data set by their rank on the first measure that ranks them."""
    first = table[["data", "group", "measure", "rank"]].pivot_table(
        index=["data", "group"], columns="measure", values="rank", aggfunc="first"
    )
    order_cols = [m.label for m in measures if m.label in first.columns]
    key = first[order_cols].fillna(np.inf).reset_index()
    key = key.sort_values(["data", *order_cols, "group"]).reset_index(drop=True)
    key["order"] = np.arange(len(key))
    table = table.merge(key[["data", "group", "order"]], on=["data", "group"])
    table["column"] = table["measure"].map({m.label: i for i, m in enumerate(measures)})
    return table.sort_values(["order", "column"]).drop(columns=["order", "column"]).reset_index(drop=True)


def _curves(rows: pd.DataFrame, runs: pd.DataFrame, labels: pd.Series, groups: pd.DataFrame, x: str):
    """Mean value per (data, group, noise, condition, x) over the group's runs, with the group's family."""
    columns = ["data", "group", "family", "noise", "condition", x, "value"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    index = rows["run"].to_numpy()
    frame = rows.assign(data=runs["data"].to_numpy()[index], group=labels.to_numpy()[index])
    frame["condition"] = frame["condition"].fillna(frame["noise"])
    curves = frame.groupby(["data", "group", "noise", "condition", x], sort=False)["value"].mean().reset_index()
    return curves.merge(groups[["data", "group", "family"]], on=["data", "group"])[columns]


def _notes(loaded: Loaded, table: pd.DataFrame, measures: list[Measure]) -> list[str]:
    """Warnings for the reader: measures averaged over different numbers of rows, older schema versions."""
    notes = []
    spread = table.groupby(["data", "measure"])["rows"].agg(["min", "max"])
    for (data, label), r in spread[spread["min"] != spread["max"]].iterrows():
        notes.append(
            f"{label} on {data}: runs average different numbers of rows ({r['min']:g} to {r['max']:g} conditions, "
            "severities or budgets), so their values compare only where the conditions match (see the plots)"
        )
    old = {v: k for v, k in loaded.versions.items() if v != str(store.SCHEMA_VERSION)}
    if old:
        listed = ", ".join(f"{k} in schema {v}" for v, k in sorted(old.items()))
        notes.append(f"older runs ({listed}) lack some columns, read as empty (for schema 1: FLOPs, subnet, genes)")
    return notes


# ------------------------------------------------------------------------------------------------------ output


def wide_table(c: Comparison) -> pd.DataFrame:
    """One row per (data, group): the group's columns, then per measure its value, interval, rank and rank
    interval (``<measure>``, ``<measure>_ci_low``, ``<measure>_ci_high``, ``<measure>_rank``,
    ``<measure>_rank_best``, ``<measure>_rank_worst``, ``<measure>_runs``). Values in their stored units."""
    order = c.table.drop_duplicates(["data", "group"])[["data", "group"]]
    wide = order.merge(c.groups, on=["data", "group"], how="left")
    for m in c.measures:
        part = c.table[c.table["measure"] == m.label].set_index(["data", "group"])
        cols = {
            "value": m.label,
            "ci_low": f"{m.label}_ci_low",
            "ci_high": f"{m.label}_ci_high",
            "rank": f"{m.label}_rank",
            "rank_best": f"{m.label}_rank_best",
            "rank_worst": f"{m.label}_rank_worst",
            "runs": f"{m.label}_runs",
        }
        wide = wide.join(part[list(cols)].rename(columns=cols), on=["data", "group"])
    for column in wide.columns:
        if column.endswith(("_rank", "_rank_best", "_rank_worst", "_runs")):
            wide[column] = wide[column].astype("Int64")
    return wide


def _cell(m: Measure, r) -> str:
    """``76.1 [75.8, 76.4] 2 (1-4)``: value, interval, rank and rank interval."""
    if r is None:
        return "—"
    interval = "" if math.isnan(r.ci_low) else f" [{m.show(r.ci_low)}, {m.show(r.ci_high)}]"
    return f"{m.show(r.value)}{interval} #{r.rank} ({r.rank_best}-{r.rank_worst})"


def _rows_by_data(c: Comparison):
    """Per data set: its measures, the table header and its rows (group, family unless grouped by family, runs,
    a cell per measure), best first."""
    with_family = "family" not in c.by
    for data in c.data_sets:
        part = c.table[c.table["data"] == data]
        if part.empty:
            continue
        info = c.groups[c.groups["data"] == data]
        family, runs = dict(zip(info["group"], info["family"])), dict(zip(info["group"], info["runs"]))
        cells = {(r.group, r.measure): r for r in part.itertuples(index=False)}
        present = set(part["measure"].unique())
        measures = [m for m in c.measures if m.label in present]
        header = ["+".join(c.by), *(["family"] if with_family else []), "runs", *(m.heading for m in measures)]
        rows = [
            [
                g,
                *([family[g]] if with_family else []),
                str(runs[g]),
                *(_cell(m, cells.get((g, m.label))) for m in measures),
            ]
            for g in dict.fromkeys(part["group"])
        ]
        yield data, measures, header, rows


def summary_line(c: Comparison) -> str:
    """How many runs and rows were compared, and what was left out."""
    loaded = c.loaded
    text = f"{len(loaded.folders):,} finished runs ({loaded.num_rows:,} metric rows) in {c.results}"
    if loaded.unfinished:
        text += f"; {loaded.unfinished} unfinished folder(s) ignored"
    return text


def format_terminal(c: Comparison, max_rows: int = TERMINAL_ROWS) -> str:
    """The comparison as terminal tables: per data set, the best ``max_rows`` groups."""
    lines = [
        f"robustart compare: {summary_line(c)}",
        "cells: value [95% interval] #rank (best-worst rank consistent with the intervals)",
    ]
    for data, _, header, rows in _rows_by_data(c):
        shown = rows[:max_rows]
        widths = [max(len(row[i]) for row in [header, *shown]) for i in range(len(header))]
        lines += ["", f"data {data}: {len(rows)} groups"]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *shown]]
        if len(rows) > len(shown):
            lines.append(f"... {len(rows) - len(shown)} more groups in compare.csv")
    lines += [f"NOTE: {n}" for n in c.notes]
    return "\n".join(lines)


DEFINITIONS = [
    "A run's value of a measure is the mean of its rows (conditions, severities, budgets); its 95% interval is "
    "the mean of the rows' stored Wilson/bootstrap bounds.",
    "A group's value is the mean over its runs; with one run its interval is the run's, with k >= 2 runs it is "
    "mean +- 1.96 sqrt(var(v)/k + sum(s_i^2)/k^2), s_i = (ci_high - ci_low)/3.92 of run i.",
    "Rank 1 is the best group of a data set. The rank interval (best-worst) is the range of ranks consistent "
    "with the 95% intervals: best = 1 + #groups whose lower bound is above this group's upper bound, worst = 1 + "
    "#groups whose upper bound is above this group's lower bound (mirrored where lower is better). A group "
    "without an interval is never certainly better or worse.",
]


def format_markdown(c: Comparison) -> str:
    """The comparison as Markdown: a summary, the definitions, one table per data set, the notes."""
    lines = ["# robustart comparison", "", summary_line(c) + ".", ""]
    lines += [f"- {d}" for d in DEFINITIONS] + [""]
    for data, measures, header, rows in _rows_by_data(c):
        lines += [f"## data: {data} ({len(rows)} groups)", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * (len(header) - len(measures)) + "---:|" * len(measures))
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in rows]
        lines.append("")
    if c.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in c.notes), ""]
    return "\n".join(lines)


def write_outputs(c: Comparison, out: Path) -> list[Path]:
    """Render ``compare.csv``, ``compare.md`` and ``report.html`` in memory, then write each under a temporary
    name in ``out`` and rename them into place (all or none: on an error the temporary files are removed)."""
    from robustart import report

    contents = {
        "compare.csv": wide_table(c).to_csv(index=False),
        "compare.md": format_markdown(c),
        "report.html": report.render(c),
    }
    out.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for name, text in contents.items():
            temps[name] = out / f".{name}.{os.getpid()}.tmp"
            temps[name].write_text(text, encoding="utf-8")
        for name, tmp in temps.items():
            os.replace(tmp, out / name)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return [out / name for name in contents]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m robustart.compare",
        description="Compare finished robustart runs: a table by model or family with 95%% intervals and rank "
        "intervals, written as compare.csv, compare.md and a self-contained report.html.",
    )
    parser.add_argument("results", type=Path, help="the results folder (ROBUSTART_RESULTS) holding run folders")
    parser.add_argument(
        "--by",
        default="model",
        help="group by these run columns, comma-separated (default: model; e.g. family, or model,weights)",
    )
    parser.add_argument("--metrics", help="comma-separated metrics (or noise:metric), default: the usual ones present")
    parser.add_argument("--out", type=Path, help="output folder (default: the results folder)")
    parser.add_argument("--rows", type=int, default=TERMINAL_ROWS, help="groups printed per data set (default 25)")
    return parser.parse_args(argv)


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 for a problem with the input)."""
    args = parse_args(argv)
    out = args.out or args.results
    try:
        comparison = compare(args.results, _split(args.by), _split(args.metrics))
        written = write_outputs(comparison, out)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    except OSError as err:
        print(f"error: cannot write the comparison to {out}: {err}", file=sys.stderr)
        return USER_ERROR
    try:
        print(format_terminal(comparison, args.rows))
        print(f"\nwrote {', '.join(p.name for p in written)} to {out}")
    except BrokenPipeError:  # the reader stopped early (| head): the files are written, nothing else to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
