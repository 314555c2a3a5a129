"""The HTML report of :mod:`robustart.compare`: tables and matplotlib plots in one self-contained file.

Plots are drawn with matplotlib's Agg backend and embedded as base64 PNG, the style is inline: the file needs no
network, no other file and no script. The report opens with the leaderboard of each data set
(:mod:`robustart.compare_board`) and the measures it had to leave out, then the definitions and, per data set, the
wide table (:mod:`robustart.compare_views`). Per data set (the three with the most runs) it then shows:

- accuracy against the attack budget (``robust_acc`` over ``eps``), a panel per attack;
- accuracy against the severity (``acc`` over ``severity``), a segment per corruption and one for their mean;
- strip plots of every measure, each at one protocol (its label names it): each model a point, in columns by
  family, with each family's median;
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

from robustart.compare_views import board_header, wide_views
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
table.leaderboard td.nc { color: #a15c00; font-size: 0.85em; } table.leaderboard { font-size: 0.95em; }
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
    ]
    parts += _boards_html(c)
    parts += ["<h2>How to read</h2><ul>", *(f"<li>{_e(d)}</li>" for d in DEFINITIONS), "</ul>"]
    if c.notes:
        parts += ['<div class="note"><b>Notes</b><ul>', *(f"<li>{_e(n)}</li>" for n in c.notes), "</ul></div>"]
    views = {v.data: v for v in wide_views(c)}
    for i, data in enumerate(c.data_sets):
        parts.append(f'<h2 id="data-{_e(data)}">Data: {_e(data)}</h2>')
        if data in views:
            parts.append(_table_html(c, views[data]))
        if i < MAX_PLOT_DATA:
            parts.append(_plots_html(c, data))
        else:
            parts.append(f"<p>Plots are drawn for the {MAX_PLOT_DATA} data sets with the most runs only.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _e(text) -> str:
    return html.escape(str(text))


# ------------------------------------------------------------------------------------------------------ tables


def _boards_html(c) -> list[str]:
    """Each data set's leaderboard (one table, a row per entry), and what it had to leave out or withhold."""
    parts = []
    for data in c.data_sets:
        board = c.boards.get(data)
        if board is None or not board.columns:
            continue
        head = "".join(f"<th>{_e(h)}</th>" for h in board_header(board, c.by))
        with_family = "family" not in c.by  # as board_header: entries named by their family need no family column
        rows = [_board_row(board, k, entry, with_family) for k, entry in enumerate(board.entries, start=1)]
        parts.append(f'<h2 id="leaderboard-{_e(data)}">Leaderboard: {_e(data)}</h2>')
        robust = f"Robust accuracy at {_e(board.budget)} under the strongest attack; " if board.title != data else ""
        parts.append(
            f"<p>{robust}each cell: value, [95% interval], rank [best, worst] consistent with the intervals; n/c: "
            "measured under another protocol (see below).</p>"
        )
        body = "".join(rows[:MAX_HTML_ROWS])
        parts.append(f'<table class="compare leaderboard" data-data="{_e(data)}"><tr>{head}</tr>{body}</table>')
        if len(rows) > MAX_HTML_ROWS:
            parts.append(f"<p>The first {MAX_HTML_ROWS} of {len(rows)} entries; compare.md holds them all.</p>")
        if board.notes:
            parts += ['<ul class="note">', *(f"<li>{_e(n)}</li>" for n in board.notes), "</ul>"]
    return parts


def _board_row(board, k: int, entry: str, with_family: bool) -> str:
    """One leaderboard row: its entry and, per column, the value with its interval and rank interval, the reason
    it is withheld, or —."""
    family, runs = board.info[entry]
    tds = [f"<td>{k}</td>", f'<td class="name">{_e(entry)}</td>']
    tds += [f"<td>{_e(family)}</td>"] if with_family else []
    tds.append(f"<td>{runs}</td>")
    for col in board.columns:
        cell, m = col.cells.get(entry), col.measure
        if cell is None:
            tds.append("<td>—</td>")
        elif isinstance(cell, str):
            tds.append(f'<td class="nc">{_e(cell)}</td>')
        else:
            ci = (
                ""
                if np.isnan(cell.ci_low)
                else f' <span class="ci">[{m.show(cell.ci_low)}, {m.show(cell.ci_high)}]</span>'
            )
            rank = f'<br><span class="rank">rank [{cell.rank_best}, {cell.rank_worst}]</span>'
            tds.append(f"<td>{m.show(cell.value)}{ci}{rank}</td>")
    return f"<tr>{''.join(tds)}</tr>"


def _table_html(c, view) -> str:
    """The wide table of one data set (a column per measure and protocol), capped at :data:`MAX_HTML_ROWS`."""
    rows = [f"<tr><th>#</th>{''.join(f'<th>{_e(h)}</th>' for h in view.header)}</tr>"]
    for k, (entry, family, runs, cells) in enumerate(view.rows[:MAX_HTML_ROWS], start=1):
        tds = [f"<td>{k}</td>", f'<td class="name">{_e(entry)}</td>']
        tds += [f"<td>{_e(family)}</td>"] if view.with_family else []
        tds.append(f"<td>{runs}</td>")
        for (m, _, _), r in zip(view.columns, cells):
            if r is None:
                tds.append("<td>—</td>")
                continue
            ci = (
                ""
                if np.isnan(r["ci_low"])
                else f' <span class="ci">[{m.show(r["ci_low"])}, {m.show(r["ci_high"])}]</span>'
            )
            rank = f'<br><span class="rank">#{r["rank"]} ({r["rank_best"]}–{r["rank_worst"]})</span>'
            tds.append(f"<td>{m.show(r['value'])}{ci}{rank}</td>")
        rows.append(f"<tr>{''.join(tds)}</tr>")
    more = ""
    if len(view.rows) > MAX_HTML_ROWS:
        more = f"<p>The {MAX_HTML_ROWS} best of {len(view.rows)} groups; <code>compare.csv</code> holds them all.</p>"
    left = "".join(f"<li>{_e(n)}</li>" for n in view.left_out)
    caption = (
        "<p>Each cell: value, [95% interval], #rank (best–worst rank consistent with the intervals), a column per "
        "measure and protocol. Ordered by the first column.</p>"
    )
    table = f'<table class="compare" data-data="{_e(view.data)}">{"".join(rows)}</table>' if view.columns else ""
    return f"{caption}{table}{more}" + (f'<ul class="note">{left}</ul>' if left else "")


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

    models = c.models[c.models["data"] == data]
    panels = c.panels.get(data, [])
    measured = {m.label for m in c.measures}
    shown = [p for p in panels if p.label.split("@")[0] in measured][:MAX_STRIP_PANELS]
    if shown:
        out.append(
            _figure(
                f"strip-{data}",
                _strip_figure(models, shown),
                "Every model a point, in columns by family; the bar is the family's median. Each measure at one "
                "protocol (the label names it: the one measured for the most models).",
            )
        )
    clean = next((p for p in panels if p.metric == "top1" and p.noise == "clean"), None)
    robust = [p for p in shown if p.metric not in ("top1", "top5")]
    if clean is not None and robust:
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
        target = (robust or shown)[:1]
        figure = _nas_figure(models, subnets, target[0], clean) if target else None
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
    rows = c.shape_categories[c.shape_categories["data"] == data] if len(c.shape_categories) else None
    if rows is None or not len(rows):
        return []
    from robustart.evaluation.shape_bias import HUMAN_SHAPE_BIAS  # imports the evaluation package: only when needed

    out = []
    for (noise, condition), part in rows.groupby(["noise", "condition"], sort=False):
        measure = next((m for m in c.panels.get(data, []) if m.metric == "shape_bias" and m.noise == noise), None)
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
