"""The readable views of a comparison, shared by the terminal, ``compare.md`` and ``report.html``: per data set
the leaderboard (:mod:`robustart.compare_board`) and a wide table with one column per measure and protocol
(``robust_acc@8/255``), its cells ``value [95% interval] #rank (best-worst)``. The tidy table stays the source:
a measure measured under more than :data:`MAX_VARIANTS` protocols on a data set (ImageNet-C's 75 corruption x
severity cells) is left out of the wide table with a line saying so; ``compare.csv`` holds every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from robustart.comparison import PROTOCOL, Measure, describe, distinct

#: protocols of one measure shown as columns of a data set's wide table (more: left out, see compare.csv)
MAX_VARIANTS = 6


def variant_labels(part: pd.DataFrame, label: str) -> dict:
    """``{pid: column label}`` for the protocols of one measure on one data set (tidy rows ``part``): the label,
    then ``@`` and the budget (always) and the protocol columns whose values differ between the protocols:
    ``robust_acc@8/255``, ``robust_acc@8/255 steps=3``, ``imagenet_c:acc@contrast s5`` (a step size that is the
    same share of every budget is not named; ``steps=?``: a protocol column the row's file did not record)."""
    protocols = part.drop_duplicates("pid")
    varying = {c for c in PROTOCOL if c not in ("noise", "recipe") and distinct(protocols[c]) > 1}
    # a step size that scales with the budget (eps / 4 at every eps) says nothing the budget does not
    relative = (protocols["step_size"].astype(float) / protocols["eps"].astype(float)).round(9)
    if "step_size" in varying and "eps" in varying and distinct(relative) == 1:
        varying.discard("step_size")
    columns = [c for c in PROTOCOL if c == "eps" or c in varying]
    out = {}
    for row in protocols.to_dict("records"):
        unknown = [f"{c}=?" for c in columns if c in varying and pd.isna(row[c])]  # older files: not recorded
        text = " ".join([describe(row, columns), *unknown]).strip()
        out[row["pid"]] = f"{label}@{text}" if text else label
    return out


@dataclass
class WideView:
    """One data set's wide table: ``header`` (entry, family unless grouped by it, runs, the columns), ``columns``
    (measure, pid, label) and ``rows`` (entry, family, runs, the tidy row of each column or ``None``)."""

    data: str
    header: list
    columns: list
    rows: list
    with_family: bool
    left_out: list = field(default_factory=list)


def wide_views(c) -> list[WideView]:
    """The wide table of each data set of the comparison ``c``, entries ordered by rank on the first column
    (built once per comparison: the terminal, compare.md and report.html share them)."""
    cached = c.__dict__.get("_wide_views")
    if cached is None:
        cached = c.__dict__["_wide_views"] = _wide_views(c)
    return cached


def _wide_views(c) -> list[WideView]:
    views = []
    for data in c.data_sets:
        part = c.table[c.table["data"] == data]
        if part.empty:
            continue
        columns, left_out = [], []
        for m in c.measures:
            rows = part[part["measure"] == m.label]
            if rows.empty:
                continue
            labels = variant_labels(rows, m.label)
            if len(labels) > MAX_VARIANTS:
                left_out.append(
                    f"{m.label} on {data}: {len(labels)} protocols (conditions, severities or budgets), each its own "
                    "row of compare.csv; too many for this table and never averaged"
                )
                continue
            columns += [(m, pid, name) for pid, name in labels.items()]
        shown = part[part["pid"].isin({pid for _, pid, _ in columns})]
        cells = {(r["entry"], r["pid"]): r for r in shown.to_dict("records")}
        info = c.groups[c.groups["data"] == data].set_index("entry")
        entries = list(dict.fromkeys(part["entry"]))
        if columns:
            first = columns[0][1]
            entries.sort(key=lambda e: (cells[(e, first)]["rank"] if (e, first) in cells else math.inf, e))
        with_family = "family" not in c.by
        header = ["+".join(c.by), *(["family"] if with_family else []), "runs"]
        header += [_heading(m, name) for m, _, name in columns]
        rows = [(e, info.at[e, "family"], int(info.at[e, "runs"]), [cells.get((e, pid)) for _, pid, _ in columns])
                for e in entries]  # fmt: skip
        views.append(WideView(data, header, columns, rows, with_family, left_out))
    return views


def _heading(m: Measure, name: str) -> str:
    return Measure(m.noise, m.metric, name).heading


def cell_text(m: Measure, r) -> str:
    """``76.1 [75.8, 76.4] #2 (1-4)``: value, interval, rank and rank interval of a tidy row (``None``: —)."""
    if r is None:
        return "—"
    interval = "" if _missing(r["ci_low"]) else f" [{m.show(r['ci_low'])}, {m.show(r['ci_high'])}]"
    return f"{m.show(r['value'])}{interval} #{r['rank']} ({r['rank_best']}-{r['rank_worst']})"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def text_rows(view: WideView) -> list[list[str]]:
    """The rows of ``view`` as text cells."""
    return [
        [entry, *([family] if view.with_family else []), str(runs),
         *(cell_text(m, r) for (m, _, _), r in zip(view.columns, cells))]
        for entry, family, runs, cells in view.rows
    ]  # fmt: skip


def board_header(board, by: list[str]) -> list[str]:
    """A leaderboard's column names: rank, the entry (named by the ``by`` columns), its family unless the entries
    are named by their family already (``--by family``), runs, then the board's measures."""
    return ["#", "+".join(by), *(["family"] if "family" not in by else []), "runs", *(c.title for c in board.columns)]


def board_text(board, by: list[str]) -> tuple[list[str], list[list[str]]]:
    """A leaderboard's header (:func:`board_header`) and rows as text: ``value [95% interval] rank [best,
    worst]``, the reason a value is withheld (``n/c: ...``), or — where the entry has no such row."""
    with_family = "family" not in by
    header = board_header(board, by)
    rows = []
    for k, entry in enumerate(board.entries, start=1):
        family, runs = board.info[entry]
        cells = []
        for col in board.columns:
            cell = col.cells.get(entry)
            if cell is None:
                cells.append("—")
            elif isinstance(cell, str):
                cells.append(cell)
            else:
                m = col.measure
                interval = "" if _missing(cell.ci_low) else f" [{m.show(cell.ci_low)}, {m.show(cell.ci_high)}]"
                cells.append(f"{m.show(cell.value)}{interval} rank [{cell.rank_best}, {cell.rank_worst}]")
        rows.append([str(k), entry, *([family] if with_family else []), str(runs), *cells])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    """A Markdown table; columns from ``numeric_from`` on are right-aligned."""
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |"]
    lines.append("|" + "---|" * numeric_from + "---:|" * (len(header) - numeric_from))
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in rows]
    return lines


def aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    """A plain-text table: columns padded to their widest cell."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *rows]]
