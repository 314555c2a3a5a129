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

Layout: the command, the text outputs and the writing are here; :mod:`robustart.comparison` holds the measures
and the comparison's data classes (shared with :mod:`robustart.report`), :mod:`robustart.compare_load` reads the
runs and :mod:`robustart.compare_group` groups and ranks them. Their names are re-exported here.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd

from robustart.compare_group import (
    DEFAULT_METRICS,
    PREFERRED_NOISES,
    Z95,
    compare,
    group_values,
    measures_of,
    rank_intervals,
    run_level_columns,
    select_measures,
)
from robustart.compare_load import ROW_COLUMNS, RUN_COLUMNS, finished_runs, load
from robustart.comparison import (
    DEFINITIONS,
    LOWER_IS_BETTER,
    NONE,
    PROPORTIONS,
    CompareError,
    Comparison,
    Loaded,
    Measure,
    summary_line,
)
from robustart.errors import USER_ERROR

__all__ = [
    "DEFAULT_METRICS",
    "DEFINITIONS",
    "LOWER_IS_BETTER",
    "NONE",
    "OUTPUT_FILES",
    "PREFERRED_NOISES",
    "PROPORTIONS",
    "ROW_COLUMNS",
    "RUN_COLUMNS",
    "TERMINAL_ROWS",
    "USER_ERROR",
    "Z95",
    "CompareError",
    "Comparison",
    "Loaded",
    "Measure",
    "compare",
    "finished_runs",
    "format_markdown",
    "format_terminal",
    "group_values",
    "load",
    "main",
    "measures_of",
    "parse_args",
    "rank_intervals",
    "run_level_columns",
    "select_measures",
    "summary_line",
    "wide_table",
    "write_outputs",
]

OUTPUT_FILES = ("compare.csv", "compare.md", "report.html")
#: rows of each data set's table printed on the terminal (the files hold every group)
TERMINAL_ROWS = 25


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
