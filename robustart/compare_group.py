"""Grouping and ranking for :mod:`robustart.compare`: the measures to show, each group's value with its 95%
interval, ranks and rank intervals, and :func:`compare`, which turns a results folder into a
:class:`robustart.comparison.Comparison` (definitions in :mod:`robustart.compare`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from robustart import store
from robustart.compare_load import load
from robustart.comparison import NONE, CompareError, Comparison, Loaded, Measure

Z95 = 1.959963984540054
#: metrics shown when --metrics is not given, those the runs hold, in this order, one noise each (see
#: :func:`select_measures`; ``acc`` of a noise that also reports ``sys_mean`` is left out: ``sys_mean`` is its mean)
DEFAULT_METRICS = ("top1", "robust_acc", "ar", "acc", "mce", "sys_mean", "mfp", "nmfp", "aupr", "shape_bias")
#: which noise a default measure comes from when several report its metric in as many runs: the worst case over
#: attacks first, then the standard attack and benchmarks
PREFERRED_NOISES = ("clean", "wcar", "autoattack", "pgd_linf", "imagenet_c", "imagenet_s", "imagenet_p")


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
        _curves(loaded.category_rows, runs, labels, groups, "category"),
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
