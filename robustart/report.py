"""The HTML report of :mod:`robustart.compare`: tables and matplotlib plots in one self-contained file.

Plots are drawn with matplotlib's Agg backend and embedded as base64 PNG, the style is inline: the file needs no
network, no other file and no script. Per data set (the three with the most runs) the report shows:

- accuracy against the attack budget (``robust_acc`` over ``eps``), a panel per attack;
- accuracy against the severity (``acc`` over ``severity``), a segment per corruption and one for their mean;
- strip plots of every measure: each model a point, in columns by family, with each family's median;
- clean against robust accuracy, a point per model coloured by family;
- for NAS subnets, their genes (input resolution, total kernel size, last-stage depth) and FLOPs against
  the first robust measure, with Spearman's rho (and clean top-1's); without subnet rows the report says so.

Plots stay bounded whatever the number of runs: with more than
:data:`robustart.report_figures.MAX_LINES` groups a curve panel draws each family's median with its 10-90% band
instead of one line per group, and panels are capped. The figures are drawn in :mod:`robustart.report_figures`;
this module lays out the page.
"""

from __future__ import annotations

import base64
import html
import io
import time

import numpy as np
import pandas as pd

from robustart.comparison import DEFINITIONS, summary_line
from robustart.report_figures import (
    _attack_figure,
    _corruption_figure,
    _nas_figure,
    _scatter_figure,
    _shape_bias_figure,
    _strip_figure,
)

MAX_STRIP_PANELS = 9
MAX_SCATTER_PANELS = 2
MAX_HTML_ROWS = 200
MAX_PLOT_DATA = 3
DPI = 80

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table.compare { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
table.compare th, table.compare td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
table.compare th { background: #f3f3f3; position: sticky; top: 0; }
table.compare td.name { text-align: left; font-family: monospace; }
.ci { color: #777; font-size: 0.85em; } .rank { color: #333; font-size: 0.85em; white-space: nowrap; }
figure.plot { margin: 1em 0; } figure.plot img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } .note { background: #fff8e1; padding: 0.5em; }
"""


def render(c) -> str:
    """The report of a :class:`robustart.comparison.Comparison` as one HTML document."""
    import matplotlib

    matplotlib.use("Agg")

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>robustart comparison</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>robustart comparison</h1>",
        f"<p>{_e(summary_line(c))}; grouped by <code>{_e('+'.join(c.by))}</code>; measures "
        f"{', '.join(f'<code>{_e(m.label)}</code>' for m in c.measures)}. Written {_e(time.strftime('%Y-%m-%d %H:%M'))}"
        ".</p>",
        "<h2>How to read</h2><ul>",
        *(f"<li>{_e(d)}</li>" for d in DEFINITIONS),
        "</ul>",
    ]
    if c.notes:
        parts += ['<div class="note"><b>Notes</b><ul>', *(f"<li>{_e(n)}</li>" for n in c.notes), "</ul></div>"]
    data_sets = c.data_sets
    for i, data in enumerate(data_sets):
        parts.append(f'<h2 id="data-{_e(data)}">Data: {_e(data)}</h2>')
        parts.append(_table_html(c, data))
        if i < MAX_PLOT_DATA:
            parts.append(_plots_html(c, data))
        else:
            parts.append(f"<p>Plots are drawn for the {MAX_PLOT_DATA} data sets with the most runs only.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _e(text) -> str:
    return html.escape(str(text))


# ------------------------------------------------------------------------------------------------------ tables


def _table_html(c, data: str) -> str:
    """The groups of one data set, best first on the first measure, capped at :data:`MAX_HTML_ROWS`."""
    part = c.table[c.table["data"] == data]
    info = c.groups[c.groups["data"] == data]
    family, runs = dict(zip(info["group"], info["family"])), dict(zip(info["group"], info["runs"]))
    present = set(part["measure"].unique())
    measures = [m for m in c.measures if m.label in present]
    groups = list(dict.fromkeys(part["group"]))
    cells = {(r.group, r.measure): r for r in part.itertuples(index=False)}
    with_family = "family" not in c.by
    head = ["#", "+".join(c.by), *(["family"] if with_family else []), "runs", *(m.heading for m in measures)]
    rows = [f"<tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}</tr>"]
    for k, g in enumerate(groups[:MAX_HTML_ROWS], start=1):
        tds = [f"<td>{k}</td>", f'<td class="name">{_e(g)}</td>']
        tds += [f"<td>{_e(family[g])}</td>"] if with_family else []
        tds.append(f"<td>{runs[g]}</td>")
        for m in measures:
            r = cells.get((g, m.label))
            if r is None:
                tds.append("<td>—</td>")
                continue
            ci = "" if np.isnan(r.ci_low) else f' <span class="ci">[{m.show(r.ci_low)}, {m.show(r.ci_high)}]</span>'
            rank = f'<br><span class="rank">#{r.rank} ({r.rank_best}–{r.rank_worst})</span>'
            tds.append(f"<td>{m.show(r.value)}{ci}{rank}</td>")
        rows.append(f"<tr>{''.join(tds)}</tr>")
    more = ""
    if len(groups) > MAX_HTML_ROWS:
        more = f"<p>The {MAX_HTML_ROWS} best of {len(groups)} groups; <code>compare.csv</code> holds them all.</p>"
    caption = (
        "<p>Each cell: value, [95% interval], #rank (best–worst rank consistent with the intervals). "
        "Ordered by the first measure.</p>"
    )
    return f'{caption}<table class="compare" data-data="{_e(data)}">{"".join(rows)}</table>{more}'


# ------------------------------------------------------------------------------------------------------- plots


def _plots_html(c, data: str) -> str:
    out = [
        _figure_or_note(f"attack-{data}", c.attack_curves[c.attack_curves["data"] == data], _attack_figure,
                        "Accuracy (robust_acc) against the attack budget, a panel per attack.",
                        "No attack rows (<code>robust_acc</code> with an <code>eps</code>): no accuracy-vs-eps plot."),
        _figure_or_note(f"corruption-{data}", c.corruption_curves[c.corruption_curves["data"] == data],
                        _corruption_figure,
                        "Accuracy against the corruption severity: a segment per corruption (their mean first).",
                        "No corruption rows (<code>acc</code> with a severity): no accuracy-vs-severity plot."),
    ]  # fmt: skip

    models = c.models[c.models["data"] == data].merge(
        c.model_info[c.model_info["data"] == data][["group", "family"]], on="group", how="left"
    )
    present = set(models["measure"].unique())
    measures = [m for m in c.measures if m.label in present][:MAX_STRIP_PANELS]
    if measures:
        out.append(
            _figure(
                f"strip-{data}",
                _strip_figure(models, measures),
                "Every model a point, in columns by family; the bar is the family's median.",
            )
        )
    clean = next((m for m in c.plot_measures if m.metric == "top1" and m.noise == "clean"), None)
    robust = [m for m in c.measures if m.metric not in ("top1", "top5") and m.label in present]
    if clean is not None and clean.label in present and robust:
        out.append(
            _figure(
                f"scatter-{data}",
                _scatter_figure(models, clean, robust[:MAX_SCATTER_PANELS]),
                "Clean top-1 against robust measures, a point per model coloured by family.",
            )
        )
    else:
        out.append("<p>The clean-vs-robust scatter needs clean <code>top1</code> rows and one robust measure.</p>")

    out += _shape_bias_html(c, data)
    info = c.model_info[c.model_info["data"] == data]
    subnets = info[info["subnet"].notna()] if "subnet" in info else info.iloc[:0]
    if len(subnets):
        target = (robust or [m for m in c.measures if m.label in present])[:1]
        figure = (
            _nas_figure(models, subnets, target[0], clean if clean is not None and clean.label in present else None)
            if target
            else None
        )
        if figure is None:
            out.append(f"<p>{len(subnets)} NAS subnet(s), but no gene varies or no measure to plot against.</p>")
        else:
            caption = (
                f"NAS genes against {target[0].label} over {len(subnets)} subnets; each title gives Spearman's "
                "rho (and clean top-1's)."
            )
            out.append(_figure(f"nas-{data}", figure, caption))
    else:
        out.append(
            '<p class="nas-none">No NAS subnet rows on this data set (the <code>subnet</code> column is empty for '
            "every run; schema-1 runs carry no genes), so there is no genes-vs-robustness plot.</p>"
        )
    return "\n".join(out)


def _shape_bias_html(c, data: str) -> list[str]:
    """The shape-bias plot of each noise condition of cue-conflict runs (none for other data)."""
    from robustart.evaluation.shape_bias import HUMAN_SHAPE_BIAS

    rows = c.shape_categories[c.shape_categories["data"] == data] if len(c.shape_categories) else None
    if rows is None or not len(rows):
        return []
    out = []
    for (noise, condition), part in rows.groupby(["noise", "condition"], sort=False):
        measure = next((m for m in c.plot_measures if m.metric == "shape_bias" and m.noise == noise), None)
        models = c.models[(c.models["data"] == data) & (c.models["measure"] == getattr(measure, "label", None))]
        where = noise if condition == noise else f"{noise}: {condition}"
        caption = (
            f"Shape bias per shape category ({where}): a marker per model coloured by family, each model's overall "
            f"shape bias as a vertical line, humans (Geirhos et al. 2019) dashed."
        )
        figure = _shape_bias_figure(part, models[["group", "value"]], HUMAN_SHAPE_BIAS)
        out.append(_figure(f"shape-bias-{data}-{noise}-{condition}", figure, caption))
    return out


def _figure_or_note(name: str, rows: pd.DataFrame, draw, caption: str, missing: str) -> str:
    """The figure ``draw(rows)`` with its caption, or a note saying why there is none when ``rows`` is empty."""
    return _figure(name, draw(rows), caption) if len(rows) else f"<p>{missing}</p>"


def _figure(name: str, fig, caption: str) -> str:
    """A matplotlib figure as an embedded PNG with its caption."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure class="plot" data-plot="{_e(name)}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )
