"""The matplotlib figures of :mod:`robustart.report`: accuracy against attack budget and corruption severity,
strip plots per family, clean against robust accuracy, and the NAS genes against robustness (with Spearman's rho).

Figures use fixed layouts (matplotlib's automatic ones cost seconds) and stay bounded whatever the number of
runs: beyond :data:`MAX_LINES` groups a curve shows each family's median and 10-90% band.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: groups drawn as their own lines in a curve panel; beyond this, family medians with 10-90% bands
MAX_LINES = 10
MAX_ATTACK_PANELS = 6
MAX_CORRUPTION_PANELS = 20
#: points with error bars in the clean-vs-robust scatter (beyond, points only)
MAX_ERROR_BARS = 60
FAMILY_COLORS = {"cnn": "#1f77b4", "transformer": "#ff7f0e", "mlp": "#2ca02c", "nas": "#d62728"}
FAMILY_MARKERS = {"cnn": "o", "transformer": "s", "mlp": "^", "nas": "D"}
#: the NAS genes plotted against robustness (those that vary): RobustART's three, and the FLOPs they imply
GENES = ("nas_resolution", "nas_total_kernel", "nas_last_depth", "flops")
#: inches below the panels kept for the legend (the figure grows when the legend needs more)
LEGEND_SPACE = 0.5


def _new_figure(panels: int, columns: int, size=(3.4, 2.6), legend: bool = False, sharey: bool = False):
    """A figure of ``panels`` axes in rows of ``columns``, with fixed margins (inches) around each panel and,
    with ``legend``, room for a legend below (a fixed layout: matplotlib's automatic layouts cost seconds)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = min(columns, panels)
    rows = -(-panels // columns)
    bottom = 0.55 + (LEGEND_SPACE if legend else 0.0)
    width, height = size[0] * columns, size[1] * rows + bottom
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, columns, squeeze=False, sharey=sharey).ravel()
    fig.subplots_adjust(
        left=0.7 / width,
        right=1 - 0.15 / width,
        bottom=bottom / height,
        top=1 - 0.3 / height,
        wspace=0.3 if sharey else 0.45,
        hspace=0.75 * 2.6 / size[1],
    )
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(4))
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _panels(frame: pd.DataFrame, limit: int) -> list[tuple[str, pd.DataFrame]]:
    """``(title, rows)`` per (noise, condition), those with the most groups first, at most ``limit``; a condition
    named after its noise (``pgd_linf (Linf steps=10)``) is the title by itself."""
    own = np.array([c.startswith(n) for c, n in zip(frame["condition"], frame["noise"])], dtype=bool)
    keyed = frame.assign(_panel=np.where(own, frame["condition"], frame["noise"] + ": " + frame["condition"]))
    counts = keyed.groupby("_panel", sort=False)["group"].nunique().sort_values(ascending=False, kind="stable")
    return [(name, keyed[keyed["_panel"] == name]) for name in counts.index[:limit]]


def _draw_curves(ax, rows: pd.DataFrame, x: str, styles: dict) -> None:
    """One line per group, or (more than :data:`MAX_LINES` groups) each family's median and 10-90% band."""
    if rows["group"].nunique() <= MAX_LINES:
        for group, g in rows.groupby("group", sort=False):
            g = g.sort_values(x)
            color, marker = styles[group]
            ax.plot(g[x], 100 * g["value"], color=color, marker=marker, markersize=3, linewidth=1.2, label=group)
        return
    bands = rows.groupby(["family", x])["value"].quantile([0.1, 0.5, 0.9]).unstack()
    for family, q in bands.groupby(level="family", sort=True):
        q = q.droplevel("family").sort_index()
        xs, color = q.index.to_numpy(float), FAMILY_COLORS.get(family, "#7f7f7f")
        ax.fill(np.r_[xs, xs[::-1]], 100 * np.r_[q[0.1], q[0.9][::-1]], color=color, alpha=0.2, linewidth=0)
        ax.plot(
            xs,
            100 * q[0.5],
            color=color,
            marker=FAMILY_MARKERS.get(family, "o"),
            markersize=3,
            label=f"{family} (median, 10-90%)",
        )


def _styles(frame: pd.DataFrame) -> dict:
    """A colour per group (tab10) and a marker per family, for groups drawn as lines."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    firsts = frame.drop_duplicates("group")
    return {
        g: (palette[i % 10], FAMILY_MARKERS.get(f, "o"))
        for i, (g, f) in enumerate(zip(firsts["group"], firsts["family"]))
    }


def _legend(fig, axes) -> None:
    """The panels' labelled artists as one legend below them, in as many columns as the figure's width holds;
    the figure grows taller (the panels keep their size) when the legend needs more than :data:`LEGEND_SPACE`."""
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # groups missing from the first panel
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if not handles:
        return
    width, height = fig.get_size_inches()
    columns = max(1, min(len(labels), int(width // (0.45 + 0.07 * max(map(len, labels))))))
    extra = max(0.0, 0.2 * -(-len(labels) // columns) + 0.1 - LEGEND_SPACE)
    if extra:
        fig.set_size_inches(width, height + extra)
        for ax in fig.axes:
            x0, y0, w, h = ax.get_position().bounds
            ax.set_position((x0, (y0 * height + extra) / (height + extra), w, h * height / (height + extra)))
    legend = fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    for handle in legend.legend_handles:  # crowded points are drawn faint; their legend entries are not
        handle.set_alpha(1)


def _attack_figure(frame: pd.DataFrame):
    panels = _panels(frame, MAX_ATTACK_PANELS)
    fig, axes = _new_figure(len(panels), 3, legend=True)
    styles = _styles(frame)
    for ax, (title, rows) in zip(axes, panels):
        eps = np.sort(rows["eps"].unique())
        per_255 = np.all(np.abs(eps * 510 - np.round(eps * 510)) < 1e-6) and eps.max() <= 64 / 255
        rows = rows.assign(eps=rows["eps"] * 255) if per_255 else rows
        _draw_curves(ax, rows, "eps", styles)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("eps (/255)" if per_255 else "eps", fontsize=8)
        ax.set_ylabel("accuracy %", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return fig


def _corruption_figure(frame: pd.DataFrame):
    """Accuracy against severity for every corruption in one wide axes: a segment per corruption (their mean
    first), severities left to right within it; a line per group, or each family's median and 10-90% band."""
    from matplotlib.collections import PolyCollection

    mean = frame.groupby(["group", "family", "severity"], sort=False)["value"].mean().reset_index()
    frame = pd.concat([mean.assign(condition="mean"), frame[[*mean.columns, "condition"]]])
    conditions = list(dict.fromkeys(frame["condition"]))[:MAX_CORRUPTION_PANELS]
    frame = frame[frame["condition"].isin(conditions)]
    severities = sorted(frame["severity"].unique())
    width = len(severities) + 1  # a gap between segments
    slot = {c: i * width for i, c in enumerate(conditions)}
    position = {s: j for j, s in enumerate(severities)}
    frame = frame.assign(x=frame["condition"].map(slot) + frame["severity"].map(position))

    fig, (ax,) = _new_figure(1, 1, size=(min(max(0.55 * width * len(conditions), 6), 16), 3.4), legend=True)
    many = frame["group"].nunique() > MAX_LINES
    if many:
        lines = frame.groupby(["family", "condition", "x"], sort=False)["value"].quantile([0.1, 0.5, 0.9]).unstack()
        lines = lines.rename(columns={0.5: "value"}).reset_index()
        key, styles = (
            "family",
            {f: (FAMILY_COLORS.get(f, "#7f7f7f"), FAMILY_MARKERS.get(f, "o")) for f in frame["family"].unique()},
        )
    else:
        lines, key, styles = frame, "group", _styles(frame)
    for name, g in lines.groupby(key, sort=False):
        color, marker = styles[name]
        xs, ys, polys = [], [], []
        for _, seg in g.sort_values("x").groupby("condition", sort=False):
            xs += [*seg["x"], np.nan]
            ys += [*(100 * seg["value"]), np.nan]
            if many:
                polys.append(np.c_[np.r_[seg["x"], seg["x"][::-1]], 100 * np.r_[seg[0.1], seg[0.9][::-1]]])
        label = f"{name} (median, 10-90%)" if many else name
        ax.plot(xs, ys, color=color, marker=marker, markersize=2.5, linewidth=1.1, label=label)
        if polys:
            ax.add_collection(PolyCollection(polys, facecolors=color, alpha=0.2, linewidths=0))
    centres = [slot[c] + (len(severities) - 1) / 2 for c in conditions]
    ax.set_xticks(centres, conditions, rotation=35, ha="right", fontsize=7)
    ax.vlines(
        [slot[c] - 1 for c in conditions[1:]], 0, 1, transform=ax.get_xaxis_transform(), color="#ccc", linewidth=0.8
    )
    ax.set_xlim(-0.5, slot[conditions[-1]] + len(severities) - 0.5)
    ax.set_ylabel("accuracy %", fontsize=8)
    ax.set_xlabel(f"severity {severities[0]} to {severities[-1]} within each corruption", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.15)
    _legend(fig, [ax])
    return fig


def _scale(m, values):
    return 100 * values if m.percent else values


def _strip_figure(models: pd.DataFrame, measures) -> object:
    """Strip plots of the model-level values: the percent measures side by side in one axes, each other
    measure (its own unit) in its own; within a measure, a column of points per family and its median."""
    percent = [m for m in measures if m.percent]
    panels = ([percent] if percent else []) + [[m] for m in measures if not m.percent]
    widths = [max(1.0, 0.9 * len(p)) for p in panels]
    fig = _grid_figure(widths, height=2.9)
    families = sorted(models["family"].dropna().unique())
    step = 0.8 / max(len(families), 1)
    rng = np.random.default_rng(0)
    values = {key: g["value"].to_numpy() for key, g in models.groupby(["measure", "family"], sort=False)}
    for ax, panel in zip(fig.axes, panels):
        medians = []
        for i, family in enumerate(families):  # one scatter per family and panel: matplotlib calls are slow
            xs, ys = [], []
            for j, m in enumerate(panel):
                v = _scale(m, values.get((m.label, family), np.empty(0)))
                x = j - 0.4 + step * (i + 0.5)
                xs.append(x + rng.uniform(-0.3, 0.3, len(v)) * step)
                ys.append(v)
                if len(v):
                    medians.append((np.median(v), x))
            n = sum(len(y) for y in ys)
            if n:
                ax.scatter(
                    np.concatenate(xs),
                    np.concatenate(ys),
                    s=8,
                    color=FAMILY_COLORS.get(family, "#7f7f7f"),
                    alpha=max(0.15, min(0.8, 30 * len(panel) / n)),
                    linewidths=0,
                    label=family,
                )
        if medians:
            y, x = np.array(medians).T
            ax.hlines(y, x - 0.45 * step, x + 0.45 * step, color="black", linewidth=1.2)
        ax.set_xticks(range(len(panel)), [m.label for m in panel], fontsize=8, rotation=20 if len(panel) > 3 else 0)
        ax.set_xlim(-0.5, len(panel) - 0.5)
        ax.set_ylabel("%" if panel[0].percent else panel[0].heading, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    _legend(fig, fig.axes)
    return fig


def _grid_figure(widths: list[float], height: float):
    """A figure with one row of axes of the given widths (inches), fixed margins and room for a legend below."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    left, gap, right, bottom = 0.7, 0.75, 0.2, 0.55 + LEGEND_SPACE
    total = left + sum(widths) + gap * (len(widths) - 1) + right
    fig = Figure(figsize=(total, height))
    x = left
    for w in widths:
        ax = fig.add_axes((x / total, bottom / height, w / total, 1 - (bottom + 0.25) / height))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        x += w + gap
    return fig


def _scatter_figure(models: pd.DataFrame, clean, robust) -> object:
    fig, axes = _new_figure(len(robust), 3, size=(3.6, 3.0), legend=True)
    x_rows = models[models["measure"] == clean.label]
    for ax, m in zip(axes, robust):
        both = x_rows.merge(models[models["measure"] == m.label], on=["data", "group"], suffixes=("_x", "_y"))
        for family, g in both.groupby("family_x", sort=True):
            color = FAMILY_COLORS.get(family, "#7f7f7f")
            x, y = _scale(clean, g["value_x"]), _scale(m, g["value_y"])
            if len(both) <= MAX_ERROR_BARS:
                xerr = np.abs(np.vstack([x - _scale(clean, g["ci_low_x"]), _scale(clean, g["ci_high_x"]) - x]))
                yerr = np.abs(np.vstack([y - _scale(m, g["ci_low_y"]), _scale(m, g["ci_high_y"]) - y]))
                ax.errorbar(
                    x,
                    y,
                    xerr=np.nan_to_num(xerr),
                    yerr=np.nan_to_num(yerr),
                    fmt="none",
                    ecolor=color,
                    alpha=0.4,
                    linewidth=0.8,
                )
            ax.scatter(
                x,
                y,
                s=14,
                color=color,
                marker=FAMILY_MARKERS.get(family, "o"),
                label=family,
                alpha=0.8 if len(both) <= 200 else 0.4,
                linewidths=0,
            )
        if clean.percent and m.percent and m.higher_is_better:  # the diagonal: robust = clean
            ends = [max(ax.get_xlim()[0], ax.get_ylim()[0]), min(ax.get_xlim()[1], ax.get_ylim()[1])]
            ax.plot(ends, ends, color="#999", linewidth=0.8, linestyle="--", scalex=False, scaley=False)
        ax.set_xlabel(clean.heading, fontsize=8)
        ax.set_ylabel(m.heading, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return fig


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than 3 points or a constant side."""
    frame = pd.DataFrame({"x": np.asarray(x, float), "y": np.asarray(y, float)}).dropna()
    if len(frame) < 3 or frame["x"].nunique() < 2 or frame["y"].nunique() < 2:
        return float("nan")
    return float(frame["x"].rank().corr(frame["y"].rank()))


def _nas_figure(models: pd.DataFrame, subnets: pd.DataFrame, robust, clean):
    """Each gene that varies against the robust measure, a point per subnet; each panel's title gives
    Spearman's rho with the robust measure and (when there are clean rows) with clean top-1."""
    genes = [g for g in GENES if g in subnets and subnets[g].nunique() > 1]
    if not genes:
        return None
    fig, axes = _new_figure(len(genes), len(genes), size=(2.9, 2.6), sharey=True)
    frame = subnets.set_index("group")
    for m, name in ((robust, "value"), (clean, "clean")):
        if m is not None:
            frame = frame.join(models[models["measure"] == m.label].set_index("group")["value"].rename(name))
    frame = frame[frame["value"].notna()]
    for ax, gene in zip(axes, genes):
        x = frame[gene].astype(float)
        ax.scatter(x, _scale(robust, frame["value"]), s=12, color=FAMILY_COLORS["nas"], alpha=0.6, linewidths=0)
        title = f"rho {spearman(x, frame['value']):+.2f}"
        if "clean" in frame:
            title += f" (clean {spearman(x, frame['clean']):+.2f})"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(gene.removeprefix("nas_"), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(robust.heading, fontsize=8)
    return fig


#: models drawn with their own marker in the shape-bias plot (beyond, the plot shows the first ones by shape bias)
MAX_SHAPE_MODELS = 12
_MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")


def _shape_bias_figure(categories: pd.DataFrame, overall: pd.DataFrame, human: float):
    """model-vs-human's shape-bias plot: a row per shape category, shape bias on a 0-1 axis (texture decisions on
    the left, shape on the right), a marker per model coloured by its family, each model's overall shape bias as
    a vertical line in its colour, and the human figure as a dashed line.

    Args:
        categories: ``group``, ``family``, ``category``, ``value`` (one noise condition).
        overall: ``group``, ``value``: each model's overall shape bias (may be empty).
        human: the human reference.
    """
    order = overall.set_index("group")["value"].reindex(categories["group"].unique())
    groups = list(order.sort_values(ascending=False, na_position="last").index[:MAX_SHAPE_MODELS])
    names = sorted(categories["category"].unique(), reverse=True)  # alphabetical from the top
    fig, axes = _new_figure(1, 1, size=(5.0, 0.28 * len(names) + 0.9), legend=True)
    ax = axes[0]
    ys = {name: i for i, name in enumerate(names)}
    for k, group in enumerate(groups):
        rows = categories[categories["group"] == group]
        family = rows["family"].iloc[0]
        color = FAMILY_COLORS.get(family, "#7f7f7f")
        ax.scatter(rows["value"], rows["category"].map(ys), s=22, color=color, marker=_MODEL_MARKERS[k % 12],
                   alpha=0.85, linewidths=0, label=f"{group} ({family})")  # fmt: skip
        if not np.isnan(order.get(group, np.nan)):
            ax.axvline(order[group], color=color, linewidth=0.8, alpha=0.6)
    ax.axvline(human, color="#444", linestyle="--", linewidth=1.0, label=f"humans ({human:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("shape bias: share of shape decisions (0 = texture, 1 = shape)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    _legend(fig, axes)
    return fig
