"""A readable terminal summary of a run's metrics table."""

from __future__ import annotations

import math

import pandas as pd


def format_eps(eps: float) -> str:
    """``0.0078...`` -> ``"2/255"`` when eps is a multiple of 1/510, else the plain number."""
    scaled = eps * 255
    if abs(scaled * 2 - round(scaled * 2)) < 1e-6:
        return f"{scaled:g}/255"
    return f"{eps:.4g}"


def _pct(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{100 * value:5.1f}% [{100 * low:4.1f}, {100 * high:5.1f}]"


#: metrics with their own layout; any other metric is listed as ``condition metric value``
_TABLED = {"top1", "top5", "acc", "robust_acc", "ar", "flip_rate"}
#: cue-conflict's rows: one table per condition, overall then per shape category
_SHAPE = ("shape_bias", "shape_acc", "texture_acc")


def _others(group: pd.DataFrame) -> list[str]:
    """One line per metric row outside the tables (calibration, detection, sequence metrics, mCE...)."""
    lines = []
    for r in group[~group["metric"].isin(_TABLED | set(_CURVES) | set(_SHAPE))].itertuples():
        where = "" if pd.isna(r.condition) or r.condition == r.noise else r.condition
        level = "" if pd.isna(r.severity) else f"difficulty/severity {int(r.severity)}"
        if not pd.isna(r.eps):  # per-budget attack metrics (transfer_asr...)
            level = f"eps {format_eps(r.eps)}"
        where = f"{where} " if len(where) >= 18 else where
        lines.append(f"  {where:<18}{r.metric:<18}{r.value:10.4f}   {level}".rstrip())
    return lines + _curve_lines(group) + _shape_lines(group)


def _shape_lines(group: pd.DataFrame) -> list[str]:
    """Shape bias, shape and texture accuracy per condition: the overall row, then each shape category's."""
    rows = group[group["metric"].isin(_SHAPE)]
    lines = []
    for (cond, severity, eps), g in rows.groupby(["condition", "severity", "eps"], sort=False, dropna=False):
        where = "" if cond == g["noise"].iloc[0] else f" {cond}"
        where += "" if pd.isna(severity) else f" severity {int(severity)}"
        where += "" if pd.isna(eps) else f" eps {format_eps(eps)}"
        lines.append(f"  shape bias{where}: {'':<10} {'shape_bias [95% CI]':<24} {'shape_acc':>9} {'texture_acc':>12}")
        table = g.assign(category=g["category"].fillna("(all)")).pivot_table(
            index="category", columns="metric", values=["value", "ci_low", "ci_high"], sort=False, dropna=False
        )
        for category in ["(all)", *sorted(c for c in table.index if c != "(all)")]:
            r = table.loc[category]
            bias = _pct(r[("value", "shape_bias")], r[("ci_low", "shape_bias")], r[("ci_high", "shape_bias")])
            lines.append(f"    {category:<20} {bias:<24} {100 * r[('value', 'shape_acc')]:8.1f}% "
                         f"{100 * r[('value', 'texture_acc')]:11.1f}%")  # fmt: skip
    return lines


#: robustness curves (:mod:`robustart.evaluation.curves`) and the column holding their x value: one line per curve
_CURVES = {"robust_acc_vs_eps": "eps", "robust_acc_vs_steps": "steps"}


def _curve_lines(group: pd.DataFrame) -> list[str]:
    """One line per robustness curve: its number of points and its two ends (the points are in metrics.parquet)."""
    curves = group[group["metric"].isin(_CURVES)]
    budget = curves["eps"].where(curves["metric"] != "robust_acc_vs_eps")  # a steps curve per attack budget
    lines = []
    for (cond, metric, eps), g in curves.groupby(["condition", "metric", budget], sort=False, dropna=False):
        g = g.sort_values(_CURVES[metric])
        where = "" if cond == g["noise"].iloc[0] else cond
        if metric == "robust_acc_vs_eps":
            ends = [f"{100 * r.value:.1f}% at eps {format_eps(r.eps)}" for r in (g.iloc[0], g.iloc[-1])]
            label = ""
        else:
            ends = [f"{100 * r.value:.1f}% after {int(r.steps)} steps" for r in (g.iloc[0], g.iloc[-1])]
            label = f"eps {format_eps(eps)}: "
        lines.append(f"  {where:<18}{metric:<20} {label}{len(g)} points, {ends[0]} -> {ends[1]}")
    return lines


def _system_table(noise: str, group: pd.DataFrame) -> list[str]:
    """Accuracy (and flip rate against the reference preprocessing) per resizer (rows) and decoder (columns)."""
    cells = group.assign(
        decoder=group["condition"].str.split("/").str[0], resizer=group["condition"].str.split("/").str[1]
    )
    acc = cells[cells["metric"] == "acc"].pivot_table(index="resizer", columns="decoder", values="value", sort=False)
    flips = cells[cells["metric"] == "flip_rate"].pivot_table(
        index="resizer", columns="decoder", values="value", sort=False
    )
    header = "".join(f"{d:>13}" for d in acc.columns)
    lines = [f"{noise:<28}{header}   (acc % / flip rate %)"]
    for resizer, row in acc.iterrows():
        line = "".join(f"{100 * v:7.1f} /{100 * flips.loc[resizer, d]:4.1f}" for d, v in row.items())
        lines.append(f"  {resizer:<26}{line}")
    return lines


def format_summary(metrics: pd.DataFrame) -> str:
    """Clean accuracy, then one block per noise: attacks by eps, corruptions by severity, then the other
    metrics (calibration, out-of-distribution detection, sequence stability, mCE) one per line."""
    lines: list[str] = []
    clean = metrics[metrics["noise"] == "clean"].set_index("metric")
    for metric in ("top1", "top5"):
        if metric in clean.index:
            r = clean.loc[metric]
            lines.append(f"clean       {metric:<10} {_pct(r.value, r.ci_low, r.ci_high)}   (n={int(r.n)})")
    lines += _others(metrics[metrics["noise"] == "clean"])
    for noise, group in metrics[metrics["noise"] != "clean"].groupby("noise", sort=False):
        lines.append("")
        others = _others(group)
        group = group[group["metric"].isin(_TABLED)]
        if not len(group):
            lines += [noise, *others]
            continue
        if (group["metric"] == "flip_rate").any():  # system noise: decoders x resizers
            lines += _system_table(noise, group)
        elif group["eps"].notna().any():
            lines.append(f"{noise:<11} {'eps':<9} {'robust_acc [95% CI]':<24} ar (clean-correct) [95% CI]")
            for (cond, eps), g in group.groupby(["condition", "eps"], sort=False):
                by = g.set_index("metric")
                ra, ar = by.loc["robust_acc"], by.loc["ar"]
                label = "" if cond == noise else cond
                lines.append(
                    f"{label:<11} {format_eps(eps):<9} {_pct(ra.value, ra.ci_low, ra.ci_high):<24} "
                    f"{_pct(ar.value, ar.ci_low, ar.ci_high)}"
                )
        elif group["severity"].isna().all():  # attacks without a budget (cw, deepfool, min_eps)
            lines.append(f"{noise:<28}never broken [95% CI]")
            for r in group.itertuples():
                lines.append(f"  {r.condition:<26}{_pct(r.value, r.ci_low, r.ci_high)}")
        else:
            table = group.pivot_table(index="condition", columns="severity", values="value", sort=False)
            table = table.reindex(columns=sorted(table.columns))
            header = "".join(f"{'sev ' + str(int(s)):>9}" for s in table.columns)
            lines.append(f"{noise:<28}{header}    mean   (acc %)")
            for cond, row in table.iterrows():
                cells = "".join(f"{100 * v:9.1f}" for v in row)
                lines.append(f"  {cond:<26}{cells}  {100 * row.mean():6.1f}")
        lines += others
    return "\n".join(lines)
