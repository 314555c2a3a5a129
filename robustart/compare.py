"""Compare finished runs: ``python -m robustart.compare RESULTS_DIR [--by family] [--metrics ...] [--budget 8/255]
[--out DIR]``, or :func:`table` from Python.

Every finished run folder of ``RESULTS_DIR`` (one holding the ``done`` marker; folders starting with ``.`` are not
runs) is read through one :mod:`pyarrow.dataset`. Files of older schema versions are read as they are: a column
a file lacks (schema 1 has no ``flops``, ``input_size``, ``subnet`` or ``nas_*``; schemas 1-3 no protocol columns
or ``unit``) is null for its rows, and a null ``unit`` is read as percent for CE and mCE, count for ``warning_*``
metrics and fraction otherwise. A finished run whose ``metrics.parquet`` cannot be read (missing, truncated,
garbage) is skipped and named on stderr and in the outputs; only when no run is readable does the command fail.
The comparison is printed and written to ``compare.csv``, ``compare.md`` and a self-contained ``report.html``
(tables and matplotlib plots embedded as PNG) in ``--out`` (default ``RESULTS_DIR``).

Definitions (the report repeats them):

- A **measure** is a metric under one noise (``top1``, ``robust_acc``, ``imagenet_c:acc``); it is named by the
  metric alone unless several noises report that metric. ``--metrics`` takes metric names (every noise that has
  the metric) or ``noise:metric``.
- A **protocol** is what a row was measured under: ``noise``, ``condition``, ``severity``, ``eps``,
  ``category``, ``norm``, ``steps``, ``restarts``, ``step_size``, ``random_start``, ``targeted``, ``param_set``,
  ``source_model``, ``recipe`` and ``unit``. ``compare.csv`` (and :func:`table`) is tidy: one row per data set x
  group x measure x protocol. Nothing is averaged over conditions, severities or budgets; the only aggregates
  over conditions are the metrics that define one (``mce``, ``mean_acc``, ``sys_mean``, ``sys_std``...).
- A **group** is one value of ``--by`` (default ``model``, where a NAS subnet counts as its own model, named
  ``nas_subnet#<id>``) within one data set; where its runs were trained with several recipes, each recipe is its own
  entry (``<group> [<recipe>]``). Runs pool into one row only when every protocol column agrees (true replicates:
  other seeds, other samples); the same value and interval in two runs of one entry (the clean pass each noise's run
  of one checkpoint repeats) is one measurement and counts once, and of the runs of one checkpoint on one data set
  only those over the most samples (``n``) count (``max_samples`` takes the first images: a run on fewer measured a
  part of theirs again). The row's value is the mean over its runs. With one
  run, its interval is that run's stored one (Wilson or bootstrap; none for CE, mCE, ``sys_std``...). With ``k >=
  2`` runs of values ``v_i`` and standard errors ``s_i = (ci_high - ci_low) / 3.92``, it is ``mean(v) +- 1.96 *
  sqrt(var(v) / k + sum(s_i^2) / k^2)`` (``var`` with ``ddof=1``; a run without an interval adds no ``s_i``), so
  both the spread between runs and each run's sampling error count; bounds are clipped to [0, 1] for proportions.
- **Rank** 1 is the best group among those of one data set measured under the same measure and protocol (the
  highest value, or the lowest for error-like metrics such as ``mce`` or ``flip_rate``; ties share the better
  rank; groups of different recipes rank together). The **rank interval** ``[best, worst]`` is the range of
  ranks the group could take if every group's true value may lie anywhere in its 95% interval:
  ``best = 1 + #{other groups whose lower bound is above this group's upper bound}`` and
  ``worst = 1 + #{other groups whose upper bound is above this group's lower bound}`` (for higher-is-better
  measures; mirrored otherwise). A group without an interval may lie anywhere, so it is never certainly better
  or worse than another.
- The **leaderboard** of each data set (first in ``compare.md`` and ``report.html``) is described in
  :mod:`robustart.compare_board`: clean top-1, robust accuracy under the strongest attack at the standard budget
  (``--budget``), mean corruption accuracy, mCE, system-noise mean and spread and shape bias, each column filled
  only where its rows share one protocol.

Errors a user can cause (a missing folder, no finished or readable run, an unknown metric or ``--by`` column, a
bad ``--budget``) print one line on stderr and exit with status 2; the output files are written only when
everything succeeded, each under a temporary name renamed into place.

Layout: the command, the text outputs and the writing are here; :mod:`robustart.comparison` holds the shared
definitions and data classes, :mod:`robustart.compare_load` reads the runs, :mod:`robustart.compare_pool` pools
and ranks, :mod:`robustart.compare_group` assembles the comparison, :mod:`robustart.compare_board` the
leaderboards and :mod:`robustart.compare_views` the readable tables.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from robustart.compare_board import parse_budget
from robustart.compare_group import (
    DEFAULT_METRICS,
    PREFERRED_NOISES,
    compare,
    measures_of,
    run_level_columns,
    select_measures,
)
from robustart.compare_load import ROW_COLUMNS, RUN_COLUMNS, finished_runs, load
from robustart.compare_pool import Z95, rank_intervals
from robustart.compare_views import aligned, board_text, markdown_table, text_rows, wide_views
from robustart.comparison import (
    DEFINITIONS,
    LOWER_IS_BETTER,
    NONE,
    PROPORTIONS,
    PROTOCOL,
    CompareError,
    Comparison,
    Loaded,
    Measure,
    skipped_line,
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
    "PROTOCOL",
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
    "load",
    "main",
    "measures_of",
    "parse_args",
    "parse_budget",
    "rank_intervals",
    "run_level_columns",
    "select_measures",
    "summary_line",
    "table",
    "tidy_table",
    "write_outputs",
]

OUTPUT_FILES = ("compare.csv", "compare.md", "report.html")
#: rows of each data set's table printed on the terminal (the files hold every group)
TERMINAL_ROWS = 25
#: the values, intervals and ranks of a tidy row
VALUE_COLUMNS = ("runs", "value", "ci_low", "ci_high", "rank", "rank_best", "rank_worst")


# ------------------------------------------------------------------------------------------------------ output


def tidy_table(c: Comparison) -> pd.DataFrame:
    """The tidy comparison (``compare.csv``): one row per data set x group x measure x protocol with ``data``,
    ``measure``, the ``--by`` columns (``model``: its label, ``nas_subnet#<id>`` for a subnet), ``family``
    (unless grouped by it), the protocol columns (:data:`PROTOCOL`; ``recipe`` among the ``--by`` columns when
    grouped by it), ``runs``, ``value``, ``ci_low``,
    ``ci_high``, ``rank``, ``rank_best`` and ``rank_worst``. Values in their stored units (``unit``)."""
    by = [b for b in c.by if b != "data"]
    by = by + (["family"] if "family" not in by else [])
    frame = c.table[["data", "measure", *by, *(p for p in PROTOCOL if p not in by), *VALUE_COLUMNS]].copy()
    for column in ("severity", "steps", "restarts", "runs", "rank", "rank_best", "rank_worst"):
        frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    for column in ("random_start", "targeted"):
        frame[column] = frame[column].astype("boolean")
    return frame.reset_index(drop=True)


def table(results_dir, by="model", metrics=None, budget=None) -> pd.DataFrame:
    """The tidy comparison of the finished runs of ``results_dir`` (the frame ``compare.csv`` holds, see
    :func:`tidy_table`), grouped by ``by`` (a column name, comma-separated names or a list) on ``metrics``
    (names or ``noise:metric``; default: the usual ones present)."""
    by = _split(by) if isinstance(by, str) else list(by)
    metrics = _split(metrics) if isinstance(metrics, str) else metrics
    return tidy_table(compare(Path(results_dir), by, metrics, budget))


def _boards(c: Comparison):
    for data in c.data_sets:
        board = c.boards.get(data)
        if board is not None and board.columns:
            yield board


def format_terminal(c: Comparison, max_rows: int = TERMINAL_ROWS) -> str:
    """The comparison as terminal tables: per data set its leaderboard and the best ``max_rows`` groups."""
    lines = [
        f"robustart compare: {summary_line(c)}",
        "cells: value [95% interval] #rank (best-worst rank consistent with the intervals)",
    ]
    boards = {b.data: b for b in _boards(c)}
    for view in wide_views(c):
        board = boards.get(view.data)
        if board is not None:
            header, rows = board_text(board, c.by)
            lines += ["", f"leaderboard {board.title}:"]
            lines += aligned(header, rows[:max_rows])
        rows = text_rows(view)
        shown = rows[:max_rows]
        lines += ["", f"data {view.data}: {len(rows)} groups"]
        lines += aligned(view.header, shown) if view.columns else []
        if len(rows) > len(shown):
            lines.append(f"... {len(rows) - len(shown)} more groups in compare.csv")
        lines += [f"  ({n})" for n in view.left_out]
    lines += [f"NOTE: {n}" for b in boards.values() for n in b.notes]
    lines += [f"NOTE: {n}" for n in c.notes]
    return "\n".join(lines)


def format_markdown(c: Comparison) -> str:
    """The comparison as Markdown: a summary, the leaderboards, the definitions, one table per data set, the
    notes."""
    lines = ["# robustart comparison", "", summary_line(c) + ".", ""]
    for board in _boards(c):
        header, rows = board_text(board, c.by)
        lines += [f"## Leaderboard: {board.title}", ""]
        lines += [*markdown_table(header, rows, len(header) - len(board.columns)), ""]
        lines += [f"- {n}" for n in board.notes] + ([""] if board.notes else [])
    lines += ["## How to read", ""] + [f"- {d}" for d in DEFINITIONS] + [""]
    for view in wide_views(c):
        lines += [f"## data: {view.data} ({len(view.rows)} groups)", ""]
        if view.columns:
            lines += [*markdown_table(view.header, text_rows(view), len(view.header) - len(view.columns)), ""]
        lines += [f"- {n}" for n in view.left_out] + ([""] if view.left_out else [])
    if c.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in c.notes), ""]
    return "\n".join(lines)


def write_outputs(c: Comparison, out: Path) -> list[Path]:
    """Render ``compare.csv``, ``compare.md`` and ``report.html`` in memory, then write each under a temporary
    name in ``out`` and rename them into place (all or none: on an error the temporary files are removed)."""
    from robustart import report

    contents = {
        "compare.csv": tidy_table(c).to_csv(index=False),
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
        description="Compare finished robustart runs: a leaderboard and a table per data set by model or family, "
        "one row per measure and protocol, with 95%% intervals and rank intervals, written as compare.csv (tidy), "
        "compare.md and a self-contained report.html.",
    )
    parser.add_argument("results", type=Path, help="the results folder (ROBUSTART_RESULTS) holding run folders")
    parser.add_argument(
        "--by",
        default="model",
        help="group by these run columns, comma-separated (default: model; e.g. family, or model,weights)",
    )
    parser.add_argument("--metrics", help="comma-separated metrics (or noise:metric), default: the usual ones present")
    parser.add_argument(
        "--budget",
        help="the leaderboard's attack budget, e.g. 8/255 or L2:0.5 (default: 8/255 Linf for CIFAR-sized data, "
        "4/255 Linf for ImageNet-sized data)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: the results folder)")
    parser.add_argument("--rows", type=int, default=TERMINAL_ROWS, help="groups printed per data set (default 25)")
    return parser.parse_args(argv)


def _split(text: str | None) -> list[str] | None:
    """``"a, b"`` as ``["a", "b"]``; ``None`` for nothing."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 for a problem with the input)."""
    args = parse_args(argv)
    out = args.out or args.results
    try:
        comparison = compare(args.results, _split(args.by), _split(args.metrics), args.budget)
        if comparison.loaded.skipped:
            print(skipped_line(comparison.loaded.skipped), file=sys.stderr)
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
