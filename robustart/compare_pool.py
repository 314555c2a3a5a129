"""Pooling and ranking for :mod:`robustart.compare`: which rows were measured the same way (a protocol id over
the metric and every protocol column), the entries runs belong to, runs pooled into one value per entry and
protocol with its 95% interval, and ranks with rank intervals (definitions in :mod:`robustart.compare`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustart.comparison import LOWER_IS_BETTER, NONE, PROPORTIONS, ROW_PROTOCOL

Z95 = 1.959963984540054
#: float protocol columns are compared at this many decimals (8/255 written two ways is one budget)
_DECIMALS = 12


def codes(frame: pd.DataFrame, columns) -> np.ndarray:
    """One integer per row such that two rows share it exactly when they agree on every one of ``columns`` (a
    null equals a null; floats compared at 12 decimals). Linear in the rows."""
    code = np.zeros(len(frame), dtype=np.int64)
    for column in columns:
        values = frame[column]
        if values.dtype.kind == "f":
            values = values.round(_DECIMALS)
        part, uniques = pd.factorize(values, use_na_sentinel=False)
        code, _ = pd.factorize(code * (len(uniques) + 1) + part)
    return code.astype(np.int64)


def protocol_ids(rows) -> np.ndarray:
    """Each row's protocol id (``rows``: a pyarrow table): the same for rows of one metric measured under the same
    noise, condition, severity, budget and every other protocol column (a null equals a null; recipe aside: it is
    the model's, see :func:`entry_labels`)."""
    import pyarrow.compute as pc

    code = np.zeros(rows.num_rows, dtype=np.int64)
    for column in ("metric", *ROW_PROTOCOL):
        encoded = pc.dictionary_encode(rows[column], null_encoding="encode").combine_chunks()
        part = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        code, _ = pd.factorize(code * (len(encoded.dictionary) + 1) + part)
    return code.astype(np.int64)


def group_labels(runs: pd.DataFrame, by: list[str]) -> pd.Series:
    """Each run's group name: its ``by`` values joined by `` / `` (``model`` names a subnet ``nas_subnet#<id>``)."""
    parts = []
    for column in by:
        values = runs["model_label"] if column == "model" else runs[column]
        parts.append(values.astype("string").fillna(NONE))
    label = parts[0]
    for part in parts[1:]:
        label = label + " / " + part
    return label.astype(object)


def entry_labels(runs: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Each run's entry: its group, or ``<group> [<recipe>]`` where the group's runs on its data set were trained
    with several recipes (models trained differently are never pooled; they stay apart as entries)."""
    recipe = runs["recipe"].astype("string").fillna(NONE)
    frame = pd.DataFrame({"data": runs["data"].to_numpy(), "group": labels.to_numpy(), "recipe": recipe.to_numpy()})
    several = frame.groupby(["data", "group"], sort=False)["recipe"].transform("nunique").to_numpy() > 1
    entries = labels.to_numpy(dtype=object).copy()
    entries[several] = [f"{g} [{r}]" for g, r in zip(frame["group"][several], frame["recipe"][several])]
    return pd.Series(entries, index=labels.index, dtype=object)


def pool(rows, entry_of_run: np.ndarray, model_of_run: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (entry, protocol) of ``rows`` (a pyarrow table: ``run``, ``metric``, the row protocol,
    ``value``, ``ci_low``, ``ci_high`` and optionally ``n``): ``entry`` (code, from ``entry_of_run[run]``), ``pid``,
    the metric and protocol, ``runs``, ``value`` (the mean over the entry's runs) and its 95% interval.

    A run with several rows of one protocol (not written by robustart, but possible) counts once: the mean of its
    rows and of their bounds. Runs that ``model_of_run`` gives the same code (the same model, weights and data)
    measure one model on one data set, so they are not replicates of one another: under one protocol only the
    runs over the most samples (``n``) count (a run with a smaller ``max_samples`` measured a part of what
    they measured over all of it), and of those, runs with the same value and bounds are one measurement made
    twice (each noise's run repeats the clean pass) and count once. One run: its interval.
    ``k >= 2`` runs of values ``v_i`` and standard errors
    ``s_i = (ci_high - ci_low) / 3.92``: ``mean(v) +- 1.96 sqrt(var(v) / k + sum(s_i^2) / k^2)``; a run without an
    interval adds no ``s_i``; proportions clipped to [0, 1].
    """
    columns = ["entry", "pid", "metric", *ROW_PROTOCOL, "runs", "value", "ci_low", "ci_high"]
    if rows.num_rows == 0:
        return pd.DataFrame(columns=columns)
    pid = protocol_ids(rows)
    width = int(pid.max()) + 1
    run = rows["run"].to_numpy().astype(np.int64)
    keys, first, inverse, counts = np.unique(run * width + pid, return_index=True, return_inverse=True,
                                             return_counts=True)  # fmt: skip
    value, low, high = (rows[c].to_numpy().astype(float) for c in ("value", "ci_low", "ci_high"))
    if len(keys) < len(run):  # duplicates within a run: their mean
        value = np.bincount(inverse, weights=value) / counts
        lacking = np.bincount(inverse, weights=np.isnan(low)) > 0
        low = np.where(lacking, np.nan, np.bincount(inverse, weights=np.nan_to_num(low)) / counts)
        high = np.where(lacking, np.nan, np.bincount(inverse, weights=np.nan_to_num(high)) / counts)
        rows, pid, run = rows.take(first), pid[first], run[first]
    entry = np.asarray(entry_of_run, dtype=np.int64)[run]
    # one measurement repeated in several runs (the clean pass of one checkpoint on the same images, made again by
    # each noise's run) is not a replicate: identical values and bounds of one model under one protocol count once,
    # and a model's measurement on fewer of the same data's samples gives way to the one on the most
    model = np.asarray(model_of_run, dtype=np.int64)[run] if model_of_run is not None else run
    repeated = pd.DataFrame({"key": entry * width + pid, "model": model, "value": value, "low": low, "high": high})
    dropped = repeated.duplicated().to_numpy().copy()
    if "n" in rows.column_names:
        n = rows.column("n").to_pandas().to_numpy(dtype=float)
        most = pd.Series(n).groupby([repeated["key"], repeated["model"]]).transform("max").to_numpy()
        dropped |= n < most  # a NaN (no n written) is never less: kept
    if dropped.any():
        keep = np.flatnonzero(~dropped)
        rows, pid, run, entry, value, low, high = (rows.take(keep), pid[keep], run[keep], entry[keep], value[keep],
                                                   low[keep], high[keep])  # fmt: skip
    keys, first, inverse, k = np.unique(entry * width + pid, return_index=True, return_inverse=True,
                                        return_counts=True)  # fmt: skip
    mean = np.bincount(inverse, weights=value) / k
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.bincount(inverse, weights=(value - mean[inverse]) ** 2) / (k - 1)
        se2 = np.bincount(inverse, weights=np.nan_to_num(((high - low) / (2 * Z95)) ** 2))
        half = Z95 * np.sqrt(var / k + se2 / k**2)
    several = k > 1
    out = rows.take(first).select(["metric", *ROW_PROTOCOL]).to_pandas()
    out.insert(0, "pid", pid[first])
    out.insert(0, "entry", entry[first])
    out["runs"], out["value"] = k, mean
    out["ci_low"] = np.where(several, mean - half, low[first])
    out["ci_high"] = np.where(several, mean + half, high[first])
    clip = several & out["metric"].isin(PROPORTIONS).to_numpy()
    out.loc[clip, "ci_low"] = out.loc[clip, "ci_low"].clip(lower=0)
    out.loc[clip, "ci_high"] = out.loc[clip, "ci_high"].clip(upper=1)
    return out[columns]


def rank_within(pooled: pd.DataFrame, data_of_entry: np.ndarray) -> pd.DataFrame:
    """``pooled`` with ``rank``, ``rank_best`` and ``rank_worst`` among the entries of one data set measured
    under one protocol (see :func:`rank_intervals`)."""
    n = len(pooled)
    rank, best, worst = (np.zeros(n, dtype=np.int64) for _ in range(3))
    if n:
        pid = pooled["pid"].to_numpy(np.int64)
        key = np.asarray(data_of_entry, dtype=np.int64)[pooled["entry"].to_numpy(np.int64)] * (pid.max() + 1) + pid
        order = np.argsort(key, kind="stable")
        cuts = np.flatnonzero(np.diff(key[order])) + 1
        value, low, high = (pooled[c].to_numpy(float) for c in ("value", "ci_low", "ci_high"))
        lower_better = pooled["metric"].isin(LOWER_IS_BETTER).to_numpy()
        for idx in np.split(order, cuts):
            rank[idx], best[idx], worst[idx] = rank_intervals(value[idx], low[idx], high[idx], not lower_better[idx[0]])
    return pooled.assign(rank=rank, rank_best=best, rank_worst=worst)


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
