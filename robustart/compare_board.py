"""The leaderboard of :mod:`robustart.compare`: per data set, one row per entry (a group, split by recipe) and one
column per headline measure, RobustBench-style, each cell a value with its 95% interval and rank interval.

Columns, each filled only where its rows were measured the same way:

- clean top-1 (``clean:top1``);
- robust accuracy at the data's standard budget (8/255 Linf for CIFAR-sized data: ``cifar10``, ``cifar100``,
  ``fashion_mnist`` or input size <= 64 px; 4/255 Linf otherwise; ``--budget`` sets another) under each entry's
  strongest attack: AutoAttack where the entry was attacked with it, else the attack with the lowest robust
  accuracy. The column takes the protocol (attack, steps, restarts, step size...) that is the strongest for the
  most entries (ties: AutoAttack, then the lower mean accuracy); an entry without a row of that protocol is
  withheld ("n/c") with its own strongest attack named. When no protocol is the strongest for two entries, the
  column is left out with a note;
- mean corruption accuracy (``mean_acc``), mCE (``mce``, else ``mce_unnormalized``), the system-noise mean and
  spread (``sys_mean``, ``sys_std``) and shape bias: the protocol most entries share fills the column, entries
  measured otherwise are withheld.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from robustart.compare_pool import codes, pool, rank_intervals
from robustart.comparison import PROTOCOL, ROW_PROTOCOL, CompareError, Measure, describe, format_eps

#: data sets of CIFAR-sized images (besides any whose input size is at most 64 px)
CIFAR_SIZED = frozenset({"cifar10", "cifar100", "fashion_mnist"})
CIFAR_BUDGET, IMAGENET_BUDGET = (8 / 255, "Linf"), (4 / 255, "Linf")
NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
#: the metrics the leaderboard reads
METRICS = ("top1", "robust_acc", "mean_acc", "mce", "mce_unnormalized", "sys_mean", "sys_std", "shape_bias")
#: what an attack is described by in a column title
_ATTACK = ("noise", "steps", "source_model")


@dataclass
class Cell:
    value: float
    ci_low: float
    ci_high: float
    runs: int
    rank_best: int = 0
    rank_worst: int = 0


@dataclass
class Column:
    """One leaderboard column: its title, how its values show (``measure``), and per entry a :class:`Cell` or the
    reason its value is withheld."""

    title: str
    measure: Measure
    cells: dict = field(default_factory=dict)


@dataclass
class Board:
    data: str
    budget: str
    entries: list  # best first
    info: dict  # entry -> (family, runs)
    columns: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def title(self) -> str:
        """``cifar10 (robust accuracy at 8/255 Linf)``: the data set, and the budget where there is such a column."""
        robust = any(col.measure.metric == "robust_acc" for col in self.columns)
        return f"{self.data} (robust accuracy at {self.budget})" if robust else self.data


def parse_budget(text: str | None) -> tuple[float, str] | None:
    """``8/255`` (Linf), ``0.03``, ``L2:0.5``: the budget and norm of ``--budget``."""
    if not text:
        return None
    norm, _, amount = text.rpartition(":")
    norm = NORMS.get(norm.strip().lower()) if norm else "Linf"
    try:
        num, _, den = amount.partition("/")
        eps = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        eps = math.nan
    if norm is None or not eps > 0:
        raise CompareError(f"--budget {text!r}: give a budget such as 8/255, 0.03 or L2:0.5 (norm Linf, L2 or L1)")
    return eps, norm


def standard_budget(data: str, input_sizes) -> tuple[float, str]:
    """8/255 Linf for CIFAR-sized data (by name or input size <= 64 px), else 4/255 Linf."""
    sizes = [int(s) for s in input_sizes if not pd.isna(s)]
    small = data in CIFAR_SIZED or (bool(sizes) and max(sizes) <= 64)
    return CIFAR_BUDGET if small else IMAGENET_BUDGET


def board_rows(rows, budgets: list[float]):
    """The metric rows (a pyarrow table of :attr:`Loaded.rows`) the leaderboards read: their metrics, attacks only
    at the budgets in use."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = rows.filter(pc.is_in(rows["metric"], pa.array(METRICS, pa.string())))
    eps = rows["eps"]
    at_budget = pa.array(np.zeros(rows.num_rows, dtype=bool))
    for b in set(budgets):
        at_budget = pc.or_(at_budget, pc.less_equal(pc.abs(pc.subtract(eps, b)), 1e-9 * b))
    keep = pc.if_else(pc.equal(rows["metric"], "robust_acc"), pc.fill_null(at_budget, False), pc.is_null(eps))
    return rows.filter(keep)


def boards(rows, runs: pd.DataFrame, entries: pd.Series, info: pd.DataFrame, budget,
           attacks: pd.DataFrame) -> dict:  # fmt: skip
    """``{data: Board}`` from the leaderboard's rows (:func:`board_rows`) of ``runs`` grouped into ``entries``;
    ``info``: one row per (data, entry) with ``family`` and ``runs``; ``budget``: ``(eps, norm)`` or ``None`` for
    each data set's standard budget; ``attacks``: the runs' attack rows (``run``, ``eps``, ``norm``), to say which
    budgets there are when none is the leaderboard's."""
    data_of_attack = runs["data"].to_numpy()[attacks["run"].to_numpy()] if len(attacks) else np.array([])
    data_of_run = runs["data"].to_numpy(dtype=object)
    key = pd.Series(data_of_run, dtype=object) + "\x1f" + pd.Series(entries.to_numpy(dtype=object), dtype=object)
    entry_codes, keys = pd.factorize(key)
    pooled = pool(rows, entry_codes, codes(runs, ["model_label", "weights", "data"]))
    split = [k.split("\x1f", 1) for k in keys]
    pooled["data"] = [split[e][0] for e in pooled["entry"]]
    pooled["entry"] = [split[e][1] for e in pooled["entry"]]
    out = {}
    for data, part in info.groupby("data", sort=False):
        eps, norm = budget or standard_budget(data, runs.loc[runs["data"] == data, "input_size"])
        here = attacks[data_of_attack == data] if len(attacks) else attacks
        present = sorted({(e, n) for e, n in zip(here.get("eps", []), _norm_of(here) if len(here) else [])})
        texts = [f"{format_eps(e)} {n}" for e, n in present]
        out[data] = _board(data, pooled[pooled["data"] == data], part, eps, norm, list(dict.fromkeys(texts)))
    return out


def _board(data: str, pooled: pd.DataFrame, info: pd.DataFrame, eps: float, norm: str, present) -> Board:
    board = Board(data, f"{format_eps(eps)} {norm}", [], {e: (f, r) for e, f, r in
                  zip(info["entry"], info["family"], info["runs"])})  # fmt: skip
    metric = pooled["metric"]
    mce = "mce" if (metric == "mce").any() else "mce_unnormalized"
    specs = [
        ("clean top-1", "top1", pooled[(metric == "top1") & (pooled["noise"] == "clean")]),
        ("robust", "robust_acc", pooled[metric == "robust_acc"]),
        ("mean corruption acc. (mean_acc)", "mean_acc", pooled[metric == "mean_acc"]),
        (f"mCE ({mce})", mce, pooled[metric == mce]),
        ("sys_mean", "sys_mean", pooled[metric == "sys_mean"]),
        ("sys_std", "sys_std", pooled[metric == "sys_std"]),
        ("shape bias", "shape_bias", pooled[metric == "shape_bias"]),
    ]
    for title, name, rows in specs:
        if name == "robust_acc":
            column = _robust(board, rows, eps, norm, present)
        else:
            column = _column(board, title, Measure("", name, name), rows) if len(rows) else None
        if column is not None:
            board.columns.append(column)
    robust = next((c for c in board.columns if c.measure.metric == "robust_acc"), None)
    top1 = next((c for c in board.columns if c.measure.metric == "top1"), None)

    def order(entry):
        keys = []
        for column in (robust, top1):
            cell = column.cells.get(entry) if column is not None else None
            keys.append(-cell.value if isinstance(cell, Cell) else math.inf)
        return (*keys, entry)

    board.entries = sorted(board.info, key=order)
    return board


def _choice(per_entry: pd.DataFrame) -> int:
    """The protocol id most entries have in ``per_entry`` (ties: AutoAttack, then the lower mean, then the id)."""
    stats = per_entry.groupby("pid").agg(n=("entry", "nunique"), mean=("value", "mean"), noise=("noise", "first"))
    stats["aa"] = stats["noise"] != "autoattack"
    return int(stats.sort_values(["n", "aa", "mean"], ascending=[False, True, True], kind="stable").index[0])


def attack_text(row) -> str:
    """An attack as the leaderboard names it: its noise, steps, restarts (beyond one), source model and
    ``targeted``: ``pgd_linf steps=10``, ``autoattack``."""
    text = describe({k: row.get(k) for k in _ATTACK}, _ATTACK)
    restarts = row.get("restarts")
    if not pd.isna(restarts) and int(restarts) > 1:
        text += f" restarts={int(restarts)}"
    return text + (" targeted" if row.get("targeted") is True else "")


def _protocol_text(row, reference) -> str:
    """``row``'s protocol where it differs from ``reference``'s: its attack, or its noise and differing columns."""
    if attack_text(row) != attack_text(reference):
        return attack_text(row)
    columns = [c for c in ROW_PROTOCOL if c not in ("noise", "condition") and not _same(row.get(c), reference.get(c))]
    if not _same(row.get("condition"), reference.get("condition")):
        columns.insert(0, "condition")
    unknown = [f"{c}=?" for c in columns if pd.isna(row.get(c))]  # not recorded (older files)
    return " ".join([describe(row, ["noise", *columns]), *unknown])


def _difference(a, b) -> str:
    """``pgd_linf steps=10 vs pgd_linf steps=20``: two protocols by what tells them apart."""
    return f"{_protocol_text(a, b)} vs {_protocol_text(b, a)}"


def _same(x, y) -> bool:
    if pd.isna(x) and pd.isna(y):
        return True
    if pd.isna(x) or pd.isna(y):
        return False
    return math.isclose(x, y, rel_tol=1e-9) if isinstance(x, float) and isinstance(y, float) else x == y


def _fill(column: Column, chosen: pd.DataFrame, higher: bool) -> None:
    _, best, worst = rank_intervals(chosen["value"], chosen["ci_low"], chosen["ci_high"], higher)
    for r, b, w in zip(chosen.itertuples(index=False), best, worst):
        column.cells[r.entry] = Cell(r.value, r.ci_low, r.ci_high, int(r.runs), int(b), int(w))


def _column(board: Board, title: str, measure: Measure, rows: pd.DataFrame) -> Column | None:
    """A column filled from the protocol most entries share; entries measured otherwise are withheld."""
    pid = _choice(rows)
    chosen = rows[rows["pid"] == pid]
    protocol = chosen.iloc[0].to_dict()
    if measure.percent:
        title = f"{title} %" if "(" not in title else title.replace(" (", " % (", 1)
    column = Column(title + ("" if measure.higher_is_better else " (lower is better)"), measure)
    _fill(column, chosen, measure.higher_is_better)
    others = rows[~rows["entry"].isin(chosen["entry"])].drop_duplicates("entry")
    _withhold(board, column, others, protocol, measure.metric, "measured under another protocol")
    return column


def _withhold(board, column, rows: pd.DataFrame, protocol: dict, what: str, how: str, tail: str = "") -> None:
    """Mark ``rows``' entries not comparable (``n/c``) in ``column``, with a note saying why."""
    for r in rows.to_dict("records"):
        column.cells[r["entry"]] = f"n/c: {_protocol_text(r, protocol)}"
    if len(rows):
        difference = _difference(rows.iloc[0].to_dict(), protocol)
        board.notes.append(f"{what} on {board.data}: withheld for {_names(rows['entry'])}: {how} ({difference}){tail}")


def _names(entries, limit: int = 5) -> str:
    """``a, b, c`` (the first ``limit``, then how many more)."""
    entries = list(entries)
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more


def _norm_of(frame: pd.DataFrame) -> pd.Series:
    """Each attack row's norm; where older files did not record it, read from the attack's name."""
    name = frame["noise"].astype(str).str.lower()
    guessed = np.where(name.str.contains("l2"), "L2", np.where(name.str.contains("l1"), "L1", "Linf"))
    return frame["norm"].astype(object).where(frame["norm"].notna(), pd.Series(guessed, index=frame.index))


def _robust(board: Board, rows: pd.DataFrame, eps: float, norm: str, present: list[str]):
    """The robust-accuracy column at the budget (see the module docstring), or ``None`` with a note; ``present``:
    the budgets the data set's runs were attacked at."""
    what = f"robust accuracy at {board.budget}"
    at = rows[np.isclose(rows["eps"].astype(float), eps, rtol=1e-6, atol=1e-12)] if len(rows) else rows
    at = at[_norm_of(at) == norm] if len(at) else at
    if at.empty:
        if present:
            board.notes.append(f"{what} left out on {board.data}: no attack at that budget (the runs were attacked "
                               f"at {', '.join(present)}; --budget chooses another)")  # fmt: skip
        return None
    aa = at["noise"] == "autoattack"
    has_aa = aa.groupby(at["entry"]).transform("any")
    candidates = at[aa | ~has_aa]
    strongest = candidates.loc[candidates.groupby("entry")["value"].idxmin()]
    pid = _choice(strongest)
    chosen = at[at["pid"] == pid]
    protocol = chosen.iloc[0].to_dict()
    if len(strongest) >= 2 and (strongest["pid"] == pid).sum() < 2:
        kinds = sorted(strongest.drop_duplicates("pid").to_dict("records"), key=attack_text)
        board.notes.append(
            f"{what} left out on {board.data}: models were attacked with different attacks/steps "
            f"({_difference(kinds[0], kinds[1])})"
        )
        return None
    attack = attack_text(protocol)
    column = Column(f"robust acc. % @{board.budget} ({attack})", Measure(protocol["noise"], "robust_acc", "robust_acc"))
    _fill(column, chosen, True)
    withheld = strongest[~strongest["entry"].isin(chosen["entry"])]
    _withhold(board, column, withheld, protocol, what, "attacked with another attack/protocol",
              f", not comparable with the column's {attack}")  # fmt: skip
    return column


__all__ = ["PROTOCOL", "Board", "Cell", "Column", "board_rows", "boards", "parse_budget", "standard_budget"]
