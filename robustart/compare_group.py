"""Grouping for :mod:`robustart.compare`: the measures to show, the tidy table (one row per group x measure x
protocol, pooled and ranked by :mod:`robustart.compare_pool`), the panels and curves the report plots, the
leaderboards (:mod:`robustart.compare_board`) and the notes, assembled by :func:`compare` into a
:class:`robustart.comparison.Comparison` (definitions in :mod:`robustart.compare`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from robustart import store
from robustart.compare_board import METRICS as BOARD_METRICS
from robustart.compare_board import board_rows, boards, parse_budget, standard_budget
from robustart.compare_load import load
from robustart.compare_pool import Z95, codes, entry_labels, group_labels, pool, rank_intervals, rank_within
from robustart.compare_views import variant_labels
from robustart.comparison import PROTOCOL, ROW_PROTOCOL, CompareError, Comparison, Loaded, Measure, describe, distinct

__all__ = ["DEFAULT_METRICS", "PREFERRED_NOISES", "Z95", "compare", "measures_of", "rank_intervals",
           "run_level_columns", "select_measures"]  # fmt: skip

#: metrics shown when --metrics is not given, those the runs hold, in this order, one noise each (see
#: :func:`select_measures`; ``acc`` of a noise that also reports ``mean_acc`` or ``sys_mean`` is left out: those
#: are its published summaries, and ``acc`` stays in compare.csv with ``--metrics acc``)
DEFAULT_METRICS = ("top1", "robust_acc", "ar", "mean_acc", "acc", "mce", "sys_mean", "mfp", "nmfp", "aupr",
                   "shape_bias")  # fmt: skip
#: which noise a default measure comes from when several report its metric in as many runs: the worst case over
#: attacks first, then the standard attack and benchmarks
PREFERRED_NOISES = ("clean", "wcar", "autoattack", "pgd_linf", "imagenet_c", "imagenet_s", "imagenet_p")
#: protocol columns beyond the condition, severity and budget: runs that differ in them are kept apart (a note)
_SPLITTING = tuple(c for c in ROW_PROTOCOL if c not in ("noise", "condition", "severity", "eps", "category"))
_MAX_SPLIT_NOTES = 8


# ---------------------------------------------------------------------------------------------- the measures


def measures_of(pairs: pd.DataFrame) -> list[Measure]:
    """Every (noise, metric) pair the runs hold, named by the metric unless several noises report it."""
    pairs = pairs[["noise", "metric"]].drop_duplicates()
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
        summarised = {m.noise for m in available if m.metric in ("sys_mean", "mean_acc")}
        rank = {n: i for i, n in enumerate(PREFERRED_NOISES)}
        chosen = []
        for metric in DEFAULT_METRICS:
            found = [m for m in available if m.metric == metric and not (metric == "acc" and m.noise in summarised)]
            if found:
                chosen.append(min(found, key=lambda m: (-runs_per.get((m.noise, m.metric), 0),
                                                        rank.get(m.noise, len(rank)), m.noise)))  # fmt: skip
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


# ------------------------------------------------------------------------------------------- the tidy table


def _rows_of(rows, metrics: set[str]):
    """The rows of ``metrics`` (one pass over the table: the tables and leaderboards read only those)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return rows.filter(pc.is_in(rows["metric"], pa.array(sorted(metrics), pa.string())))


def _measure_rows(rows, measures: list[Measure]):
    """The rows (a pyarrow table of :attr:`Loaded.rows`) of ``measures``: one pass over the metric names, then
    the noises on what is left."""
    import pyarrow as pa
    import pyarrow.compute as pc

    metrics = list(dict.fromkeys(m.metric for m in measures))
    rows = rows.filter(pc.is_in(rows["metric"], pa.array(metrics, pa.string())))
    mask = pa.array(np.zeros(rows.num_rows, dtype=bool))
    for metric in metrics:
        noises = [m.noise for m in measures if m.metric == metric]
        hit = pc.and_(pc.equal(rows["metric"], metric), pc.is_in(rows["noise"], pa.array(noises, pa.string())))
        mask = pc.or_(mask, hit)
    return rows.filter(mask)


def _entries_info(runs: pd.DataFrame, labels: pd.Series, entries: pd.Series, by: list[str], extra=()) -> pd.DataFrame:
    """One row per (data, entry): its group, family (families joined where a group spans several), number of
    runs, recipe, its ``--by`` values (``model``: its label) and ``extra`` columns (first values)."""
    frame = runs.assign(group=labels.to_numpy(), entry=entries.to_numpy(), model=runs["model_label"])
    grouped = frame.groupby(["data", "entry"], sort=False)
    families = grouped["family"]
    info = pd.DataFrame({"group": grouped["group"].first(), "family": families.first(), "runs": families.size()})
    mixed = families.nunique() > 1
    if mixed.any():  # a group across families (--by weights...): name them all
        info.loc[mixed, "family"] = families.agg(lambda f: ",".join(sorted(set(f))))[mixed]
    columns = [c for c in dict.fromkeys(["recipe", *by, *extra]) if c not in ("data", "family", "group", "entry")]
    return info.join(grouped[columns].first()).reset_index()


def _tidy(loaded: Loaded, rows, labels, entries, measures: list[Measure], by: list[str], data_order: list[str]):
    """The tidy table of ``measures`` (from ``rows``, a pyarrow table of :attr:`Loaded.rows` holding at least their
    metrics) and the entries' info (see :class:`robustart.comparison.Comparison`)."""
    runs = loaded.runs
    info = _entries_info(runs, labels, entries, by)
    key = runs["data"].astype(object) + "\x1f" + entries.astype(object)
    entry_codes, keys = pd.factorize(key)
    pooled = pool(_measure_rows(rows, measures), entry_codes, codes(runs, ["model_label", "weights", "data"]))
    split = np.array([k.split("\x1f", 1) for k in keys], dtype=object).reshape(-1, 2)
    data_codes, _ = pd.factorize(split[:, 0])
    pooled = rank_within(pooled, data_codes)
    code = pooled["entry"].to_numpy(np.int64)
    pooled["data"], pooled["entry"] = split[code, 0], split[code, 1]
    labels_of = {(m.noise, m.metric): m.label for m in measures}
    pooled["measure"] = [labels_of[k] for k in zip(pooled["noise"], pooled["metric"])]
    table = pooled.merge(info.drop(columns="runs"), on=["data", "entry"], how="left")
    table = _order(table, measures, data_order)
    by_columns = [c for c in by if c not in ("data", "family", "recipe")]
    first = ["data", "group", "entry", "family", "measure", "metric", *by_columns, "pid", *PROTOCOL]
    return table[[*first, "runs", "value", "ci_low", "ci_high", "rank", "rank_best", "rank_worst"]], info


def _order(table: pd.DataFrame, measures: list[Measure], data_order: list[str]) -> pd.DataFrame:
    """``table`` sorted by data set (most runs first), measure, protocol, then rank (best first) and name."""
    if table.empty:
        return table
    protocols = table.drop_duplicates("pid")[["pid", *[c for c in PROTOCOL if c != "recipe"]]].copy()
    for column in protocols.columns[1:]:
        values = protocols[column]
        protocols[column] = (
            values.astype(float).fillna(-np.inf) if values.dtype.kind in "fiu" else values.astype(str).where(
                values.notna(), "")
        )  # fmt: skip
    protocols = protocols.sort_values(list(protocols.columns[1:]), kind="stable")
    position = {pid: i for i, pid in enumerate(protocols["pid"])}
    keys = pd.DataFrame(
        {
            "d": table["data"].map({d: i for i, d in enumerate(data_order)}),
            "m": table["measure"].map({m.label: i for i, m in enumerate(measures)}),
            "p": table["pid"].map(position),
            "r": table["rank"],
            "e": table["entry"].astype(str),
        }
    )
    order = keys.sort_values(["d", "m", "p", "r", "e"], kind="stable").index
    return table.loc[order].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- the compare


def compare(results: Path, by: list[str] | None = None, metrics: list[str] | None = None,
            budget: str | tuple | None = None) -> Comparison:  # fmt: skip
    """Load ``results`` and compare its runs grouped by ``by`` (default ``["model"]``) on ``metrics``; the
    leaderboards' robust accuracy at ``budget`` (``"8/255"``, ``"L2:0.5"``; default: each data set's standard)."""
    results = Path(results)
    by = list(by or ["model"])
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    loaded = load(results)
    allowed = run_level_columns(loaded)
    for column in by:
        if column not in allowed:
            raise CompareError(f"unknown --by column {column!r}: choose from {', '.join(allowed)}")
    available = measures_of(loaded.pairs)
    runs_per = {(n, m): k for n, m, k in loaded.pairs[["noise", "metric", "runs"]].itertuples(index=False)}
    measures = select_measures(available, metrics, runs_per)
    runs = loaded.runs
    counts = runs["data"].value_counts()
    data_order = sorted(counts.index, key=lambda d: (-counts[d], d))
    labels = group_labels(runs, by)
    entries = entry_labels(runs, labels)
    # the plots show models: clean top-1 for the scatter even when the tables leave it out
    clean = [m for m in available if (m.noise, m.metric) == ("clean", "top1") and m not in measures]
    rows = _rows_of(loaded.rows, {m.metric for m in measures + clean} | set(BOARD_METRICS))
    table, groups = _tidy(loaded, rows, labels, entries, measures, by, data_order)
    model_labels = group_labels(runs, ["model"])
    model_entries = entry_labels(runs, model_labels)
    models = table
    if by != ["model"] or clean:
        models, _ = _tidy(loaded, rows, model_labels, model_entries, measures + clean, ["model"], data_order)
    budgets = {d: budget or standard_budget(d, runs.loc[runs["data"] == d, "input_size"]) for d in data_order}
    panels, model_rows = _panels(models, measures + clean, budgets)
    model_info = _entries_info(runs, model_labels, model_entries, [], ["subnet", "flops", *loaded.genes])
    model_info = model_info.assign(group=model_info["entry"])
    frame = board_rows(rows, sorted({eps for eps, _ in budgets.values()}))
    notes = _notes(loaded, table)
    boards_ = boards(frame, runs, entries, groups, budget, loaded.attack_rows)
    return Comparison(
        results=results,
        by=by,
        measures=measures,
        table=table,
        groups=groups,
        models=model_rows,
        panels=panels,
        model_info=model_info,
        attack_curves=_curves(_attack_rows(loaded.attack_rows), runs, model_entries, model_info, "eps"),
        corruption_curves=_curves(
            _corruption_rows(loaded.corruption_rows, runs), runs, model_entries, model_info, "severity"
        ),
        loaded=loaded,
        boards=boards_,
        notes=notes,
        shape_categories=_curves(loaded.category_rows, runs, model_entries, model_info, "category"),
    )


def _panels(models: pd.DataFrame, measures: list[Measure], budgets: dict) -> tuple[dict, pd.DataFrame]:
    """Per data set the measures the plots show, each at one protocol: the one measured for the most models
    (ties: the budget nearest the data's standard one, then the first); and the models' rows of those panels
    (``group``: the model entry, ``measure``: the panel's label)."""
    panels, parts = {}, []
    for (data, label), part in models.groupby(["data", "measure"], sort=False):
        m = next(m for m in measures if m.label == label)
        names = variant_labels(part, label)
        coverage = part.groupby("pid", sort=False)["entry"].nunique()
        target = budgets.get(data, (np.nan,))[0]
        eps = part.drop_duplicates("pid").set_index("pid")["eps"].astype(float)
        distance = (np.log(eps / target).abs() if target == target else eps * 0).fillna(0)
        order = pd.DataFrame({"n": -coverage, "d": distance.reindex(coverage.index), "i": range(len(coverage))})
        pid = order.sort_values(["n", "d", "i"]).index[0]
        panel = Measure(m.noise, m.metric, names[pid])
        panels.setdefault(data, []).append(panel)
        parts.append(part[part["pid"] == pid].assign(measure=panel.label, group=lambda f: f["entry"]))
    order = {m.label: i for i, m in enumerate(measures)}
    for data in panels:
        panels[data].sort(key=lambda p: order.get(p.label.split("@")[0], len(order)))
    columns = ["data", "group", "family", "measure", "value", "ci_low", "ci_high", "runs"]
    return panels, (pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns))


# ------------------------------------------------------------------------------------------ curves and notes


def _attack_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Attack rows with their norm and steps in the panel's name (two step counts are two panels)."""
    if rows.empty:
        return rows
    kinds = rows[["norm", "steps"]].drop_duplicates()
    names = {(n, s): describe({"norm": n, "steps": s}, ("norm", "steps")) for n, s in kinds.itertuples(index=False)}
    key = pd.MultiIndex.from_frame(rows[["norm", "steps"]])
    suffix = pd.Series(pd.Index(list(names)).get_indexer(key), index=rows.index).map(dict(enumerate(names.values())))
    condition = rows["condition"].fillna(rows["noise"]).astype(str)
    return rows.assign(condition=condition.where(suffix == "", condition + " (" + suffix + ")"))


def _corruption_rows(rows: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Corruption rows; where a data set's runs used several parameter sets, each corruption per set."""
    if rows.empty:
        return rows
    data = runs["data"].to_numpy()[rows["run"].to_numpy()]
    sets = rows.assign(data=data).groupby("data")["param_set"].transform(distinct)
    several = (sets > 1) & rows["param_set"].notna()
    return rows.assign(condition=rows["condition"].where(~several, rows["condition"] + " (" +
                                                         rows["param_set"].astype(str) + ")"))  # fmt: skip


def _curves(rows: pd.DataFrame, runs: pd.DataFrame, entries: pd.Series, info: pd.DataFrame, x: str):
    """Mean value per (data, entry, noise, condition, x) over the entry's runs, with the entry's family."""
    columns = ["data", "group", "family", "noise", "condition", x, "value"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    index = rows["run"].to_numpy()
    frame = rows.assign(data=runs["data"].to_numpy()[index], group=entries.to_numpy()[index])
    frame["condition"] = frame["condition"].fillna(frame["noise"])
    curves = frame.groupby(["data", "group", "noise", "condition", x], sort=False)["value"].mean().reset_index()
    return curves.merge(info[["data", "entry", "family"]].rename(columns={"entry": "group"}), on=["data", "group"])[
        columns
    ]


def _values(column: pd.Series) -> list[str]:
    """The distinct values of ``column`` as text, whole numbers without a decimal point."""
    values = column.dropna().unique()
    return sorted(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in values)


def _notes(loaded: Loaded, table: pd.DataFrame) -> list[str]:
    """Warnings for the reader: runs kept apart by their protocol, older schema versions, skipped runs."""
    from robustart.compare_pool import codes

    notes = []
    if len(table):
        base = codes(table, ["data", "entry", "noise", "metric", "condition", "severity", "eps", "category"])
        kinds = pd.Series(table["pid"].to_numpy()).groupby(base).transform("nunique").to_numpy()
        split = table[kinds > 1]
        for (data, measure), part in split.groupby(["data", "measure"], sort=False):
            varying = [c for c in _SPLITTING if distinct(part[c]) > 1]
            values = "; ".join(f"{c}: {', '.join(_values(part[c]))}" for c in varying)
            entries = sorted(part["entry"].unique())
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            notes.append(f"{measure} on {data}: runs of {shown} were measured under different protocols ({values}); "
                         "each protocol is its own row, never pooled or averaged")  # fmt: skip
        if len(notes) > _MAX_SPLIT_NOTES:
            notes = [*notes[:_MAX_SPLIT_NOTES], f"... and {len(notes) - _MAX_SPLIT_NOTES} more such measures"]
    old = {v: k for v, k in loaded.versions.items() if v != str(store.SCHEMA_VERSION)}
    if old:
        listed = ", ".join(f"{k} in schema {v}" for v, k in sorted(old.items()))
        notes.append(
            f"older runs ({listed}) lack some columns, read as empty (schema 1: FLOPs, subnet, genes; schema 1-3: "
            "the protocol columns and unit): they pool only with runs that lack them too"
        )
    if loaded.skipped:
        from robustart.comparison import skipped_line

        notes.append(skipped_line(loaded.skipped, limit=20))
    return notes
