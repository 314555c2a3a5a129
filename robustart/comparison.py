"""What a comparison of runs is, shared by :mod:`robustart.compare` and :mod:`robustart.report`.

The measures (a metric under one noise, and which way is better), the protocol columns that keep rows measured
differently apart, the runs as :func:`robustart.compare_load.load` reads them, the comparison
:func:`robustart.compare_group.compare` builds, and the summary line and definitions every output repeats.
Imports neither the command nor the report.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from robustart import store
from robustart.errors import UserError

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
        "mean_acc",
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
        "shape_bias",
        "shape_acc",
        "texture_acc",
    }
)
#: metrics stored in percent (as ImageNet-C publishes them): the unit of their rows when a file does not say
PERCENT_METRICS = frozenset({"ce", "mce", "relative_mce", "mce_unnormalized"})
NONE = "(none)"

#: the protocol columns of the tidy comparison, in its order: what a row was measured under. Runs pool into one
#: row of the comparison only where every one of them agrees. ``recipe`` is the model's (constant within a run)
PROTOCOL = ("noise", "condition", "severity", "eps", "category", *store.PROTOCOL_COLUMNS, "unit")
#: the protocol columns read from each metric row (``recipe`` is read once per run)
ROW_PROTOCOL = tuple(c for c in PROTOCOL if c != "recipe")
#: column types of the protocol where no file has the column (older schema versions)
PROTOCOL_TYPES = {
    **dict.fromkeys(
        ("noise", "condition", "category", "norm", "param_set", "source_model", "recipe", "unit"), "string"
    ),
    **dict.fromkeys(("severity", "steps", "restarts"), "int64"),
    **dict.fromkeys(("eps", "step_size"), "float64"),
    **dict.fromkeys(("random_start", "targeted"), "bool"),
}


class CompareError(UserError):
    """A problem with the user's input to a comparison: reported as one line on stderr with exit status 2."""


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


def default_unit(metric: str) -> str:
    """The unit of a row whose file does not say (schema 1-3): percent for CE and mCE, count for warnings,
    fraction otherwise."""
    if metric in PERCENT_METRICS:
        return "percent"
    return "count" if metric.startswith("warning_") else "fraction"


def format_eps(eps: float) -> str:
    """A budget as users write it: ``8/255`` where it is a multiple of 1/1020, else ``0.5``."""
    k = eps * 255
    if 0 < k <= 255 and abs(k * 4 - round(k * 4)) < 1e-6:
        return f"{round(k * 4) / 4:g}/255"
    return f"{eps:g}"


def distinct(values: pd.Series) -> int:
    """How many different values ``values`` holds, a missing value (None, NaN, NA) counting as one."""
    return int(values.dropna().nunique()) + int(values.isna().any())


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA


def describe(row, columns) -> str:
    """The protocol values of ``row`` (a mapping) in ``columns`` as a short text: ``contrast s5``, ``8/255 Linf
    steps=10``; absent values are left out."""
    parts = []
    for column in columns:
        value = row.get(column)
        if not _present(value):
            continue
        if column == "severity":
            parts.append(f"s{int(value)}")
        elif column == "eps":
            parts.append(format_eps(float(value)))
        elif column in ("steps", "restarts"):
            parts.append(f"{column}={int(value)}")
        elif column == "step_size":
            parts.append(f"step={format_eps(float(value))}")
        elif column == "random_start":
            parts.append("random start" if value else "no random start")
        elif column == "targeted":
            parts.append("targeted" if value else "untargeted")
        elif column == "param_set":
            parts.append(f"{value} params")
        elif column == "source_model":
            parts.append(f"from {value}")
        elif column == "recipe":
            parts.append(f"recipe {value}")
        else:
            parts.append(str(value))
    return " ".join(parts)


@dataclass
class Loaded:
    """What :func:`load` read: one row per run, the per-run rows of every measure and the rows behind the curves."""

    folders: list[Path]
    runs: pd.DataFrame  # index: run number (position in folders); columns RUN_COLUMNS + nas_*, model_label
    rows: object  # pyarrow Table: run, metric, ROW_PROTOCOL, value, ci_low, ci_high (overall rows: no category)
    pairs: pd.DataFrame  # noise, metric, runs: every measure the runs hold and in how many runs
    attack_rows: pd.DataFrame  # run, noise, condition, eps, norm, steps, value (metric robust_acc)
    corruption_rows: pd.DataFrame  # run, noise, condition, severity, param_set, value (metric acc with a severity)
    num_rows: int
    versions: Counter
    unfinished: int
    genes: list[str]
    #: run, noise, condition, category, value: shape bias per shape category (cue-conflict runs)
    category_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: (metrics file, reason) of each finished run that could not be read and was left out
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class Comparison:
    """The comparison of a results folder: the tidy table, the leaderboards, curves and notes, ready to print and
    plot. An *entry* is a group, split by training recipe where its runs have several (``<group> [<recipe>]``)."""

    results: Path
    by: list[str]
    measures: list[Measure]
    table: pd.DataFrame  # tidy: data, group, entry, family, measure, PROTOCOL, pid, runs, value, ci, ranks
    groups: pd.DataFrame  # one row per (data, entry): data, group, entry, family, runs, recipe, the --by columns
    models: pd.DataFrame  # data, group (model entry), measure (a panel's label), value, ci_low, ci_high: plots
    panels: dict  # data -> [Measure]: the measures the plots show, each at one protocol (its label says which)
    model_info: pd.DataFrame  # one row per (data, model entry): family, subnet, flops, nas_* genes
    attack_curves: pd.DataFrame  # data, group, family, noise, condition, eps, value
    corruption_curves: pd.DataFrame  # data, group, family, noise, condition, severity, value
    loaded: Loaded
    boards: dict = field(default_factory=dict)  # data -> robustart.compare_board.Board
    notes: list[str] = field(default_factory=list)
    #: data, group, family, noise, condition, category, value: shape bias per category (the report's plot)
    shape_categories: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def data_sets(self) -> list[str]:
        """The data sets, the one with the most runs first."""
        counts = self.loaded.runs["data"].value_counts()
        return sorted(counts.index, key=lambda d: (-counts[d], d))


def summary_line(c: Comparison) -> str:
    """How many runs and rows were compared, and what was left out."""
    loaded = c.loaded
    text = f"{len(loaded.folders):,} finished runs ({loaded.num_rows:,} metric rows) in {c.results}"
    if loaded.unfinished:
        text += f"; {loaded.unfinished} unfinished folder(s) ignored"
    if loaded.skipped:
        text += f"; {skipped_line(loaded.skipped, limit=3)}"
    return text


def skipped_line(skipped: list[tuple[Path, str]], limit: int = 10) -> str:
    """``skipped 1 unreadable run: <path>: <reason>`` (``runs`` and ``; ``-separated for several)."""
    listed = "; ".join(f"{path}: {reason}" for path, reason in skipped[:limit])
    more = f"; and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"skipped {len(skipped)} unreadable run{'s' if len(skipped) > 1 else ''}: {listed}{more}"


DEFINITIONS = [
    "Each row of compare.csv is one group (--by) x measure x protocol: runs pool into a row only when every "
    "protocol column agrees (noise, condition, severity, eps, category, norm, steps, restarts, step_size, "
    "random_start, targeted, param_set, source_model, recipe, unit). Nothing is averaged over conditions, "
    "severities or budgets: the only aggregates are the metrics that define one (mce, mean_acc, sys_mean, ...).",
    "A group's value is the mean over its runs; with one run its interval is the run's stored Wilson/bootstrap "
    "interval, with k >= 2 runs it is mean +- 1.96 sqrt(var(v)/k + sum(s_i^2)/k^2), s_i = (ci_high - ci_low)/3.92 "
    "of run i.",
    "Rank 1 is the best group among those measured under the same data, measure and protocol (the training "
    "recipe aside: it describes the models, which rank together). The rank interval "
    "(best-worst) is the range of ranks consistent with the 95% intervals: best = 1 + #groups whose lower bound "
    "is above this group's upper bound, worst = 1 + #groups whose upper bound is above this group's lower bound "
    "(mirrored where lower is better). A group without an interval is never certainly better or worse.",
    "Units: values are fractions (proportions shown in percent), except CE and mCE, stored in percent, and "
    "warning counts (the unit column says which).",
]
