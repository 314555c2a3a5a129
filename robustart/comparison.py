"""What a comparison of runs is, shared by :mod:`robustart.compare` and :mod:`robustart.report`.

The measures (a metric under one noise, and which way is better), the runs as :func:`robustart.compare_load.load`
reads them, the grouped comparison :func:`robustart.compare_group.compare` builds, and the summary line and
definitions every output repeats. Imports neither the command nor the report.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

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
NONE = "(none)"


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
    #: run, noise, condition, category, value: shape bias per shape category (cue-conflict runs)
    category_rows: pd.DataFrame = field(default_factory=pd.DataFrame)


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
    return text


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
