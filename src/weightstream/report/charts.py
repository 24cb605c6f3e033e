"""Plotly figures of the report, built as plotly's JSON (plain dicts) from the report's values.

A figure is the ``{"data": [...], "layout": {...}}`` that ``Plotly.newPlot`` draws. They are
written as plain dicts rather than through ``plotly.graph_objects``: validating a
``go.Figure`` costs tens of milliseconds, and a 10,000-user site has a budget of a few
milliseconds a page. ``tests/report`` loads every figure into ``go.Figure`` once, so the
dicts stay valid plotly.

The user chart (:func:`user_figure`) has two panels over one time axis:

* top: every reading as a point, one trace per verdict (its colour) with a symbol per source,
  the reason on hover; each point's ``customdata`` begins ``[reading id, stored kg]``. A value
  far outside the user's range (an invalid BMI, a pound value) is drawn at the panel's edge
  and says so on hover. The filtered weight (live, as stored) with its ±2σ band, the smoothed
  history (RTS) beside it, reset markers (one trace per outcome, a symbol per reset type) and
  the adaptation periods shaded;
* bottom: the trend per week, filtered and smoothed.

The lines over the accepted readings share one time column (``columns``, see
:func:`resolved`). Only traces drawn with markers have DOM points: :func:`marker_count` says
how many a figure draws, which the browser test compares with the page.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from weightstream.model import Verdict
from weightstream.report.data import OUTCOME_CATEGORIES, Cohort, Reading, UserReport

__all__ = [
    "VERDICT_COLOURS",
    "OUTCOME_COLOURS",
    "RESET_SYMBOLS",
    "plot_time",
    "source_symbols",
    "user_figure",
    "cohort_figures",
    "marker_count",
    "resolved",
]

Figure = dict[str, Any]

VERDICT_COLOURS: dict[str, str] = {
    str(Verdict.ACCEPTED): "#2a9d8f",
    str(Verdict.REJECTED): "#d62728",
    str(Verdict.LATE): "#9467bd",
    str(Verdict.DUPLICATE): "#7f7f7f",
    str(Verdict.INVALID): "#ff7f0e",
}
OUTCOME_COLOURS: dict[str, str] = {
    "committed": "#1d3557",
    "rolled_back": "#e63946",
    "fallback": "#f4a261",
    "recovered": "#6a4c93",
    "breaker_open": "#000000",
}
RESET_SYMBOLS: dict[str, str] = {
    "initial": "star",
    "hard": "hourglass",
    "soft": "bowtie",
}
_SYMBOLS = (
    "circle",
    "square",
    "diamond",
    "triangle-up",
    "triangle-down",
    "pentagon",
    "hexagon",
    "cross",
    "x",
    "star-triangle-up",
    "hexagram",
    "octagon",
)
_FILTERED = "#264653"
_BAND = "rgba(38, 70, 83, 0.18)"
_SMOOTHED = "#e76f51"
_ADAPT = "rgba(233, 196, 106, 0.25)"
_FONT = {"family": "system-ui, sans-serif", "size": 12}


def plot_time(when: datetime) -> str:
    """A UTC time as plotly reads a date (no zone: the axis says UTC).

    >>> from datetime import UTC
    >>> plot_time(datetime(2025, 1, 22, 13, 3, 37, tzinfo=UTC))
    '2025-01-22 13:03:37'
    """
    text = when.isoformat(" ")
    return text[:26] if when.microsecond else text[:19]


def source_symbols(sources: Iterable[str], known: Sequence[str]) -> dict[str, str]:
    """A marker symbol per source: the configured sources in their order, others by a hash.

    The same source has the same symbol on every page of a site.

    >>> source_symbols(["b", "a"], ["a", "b"])
    {'a': 'circle', 'b': 'square'}
    """
    out: dict[str, str] = {}
    for source in sorted(set(sources)):
        if source in known:
            out[source] = _SYMBOLS[known.index(source) % len(_SYMBOLS)]
        else:
            out[source] = _SYMBOLS[zlib.crc32(source.encode("utf-8")) % len(_SYMBOLS)]
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _text(value: str) -> str:
    """Text shown in a hover label, as text (plotly reads a few HTML tags in labels)."""
    return escape(value, quote=False) if "<" in value or "&" in value else value


def _note(r: Reading, clamped: bool) -> str:
    """What a point's hover adds after its weight: off the chart, offset, reset."""
    parts = []
    if r.raw:
        parts.append(f" (as written: {_text(r.raw[:120])})")
    if clamped:
        parts.append(" (drawn at the edge)")
    if r.offset_kg:
        parts.append(f", offset {r.offset_kg:+.2f} kg")
    if r.reset_type:
        parts.append(f"<br>reset {_text(r.reset_type)} ({_text(r.reset_outcome or '')})")
    return "".join(parts)


#: The hover label of a reading; ``customdata`` is
#: [id, kg or null, reason, source, note, message, weight as text].
_POINT_HOVER = (
    "<b>%s</b>: %%{customdata[2]}<br>%%{x} UTC<br>source %%{customdata[3]}<br>"
    "%%{customdata[6]}%%{customdata[4]}<br>%%{customdata[5]}<extra></extra>"
)


def _y_range(report: UserReport) -> tuple[float, float] | None:
    """The top panel's range: the filtered band and the accepted readings, with room."""
    values: list[float] = []
    for r in report.readings:
        if r.filtered_weight is not None:
            std = r.filtered_std or 0.0
            values += [r.filtered_weight - 2 * std, r.filtered_weight + 2 * std]
        if r.verdict == Verdict.ACCEPTED and r.weight_kg is not None:
            values.append(r.weight_kg)
    if not values:
        values = [r.weight_kg for r in report.readings if r.weight_kg is not None]
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max(2.0, 0.25 * (high - low))
    return round(low - pad, 3), round(high + pad, 3)


def user_figure(report: UserReport, known_sources: Sequence[str]) -> Figure:
    """The user's chart (see the module docstring)."""
    readings = [r for r in report.readings if r.time is not None]
    times = {id(r): plot_time(r.time) for r in readings if r.time is not None}
    symbols = source_symbols((r.source for r in readings), known_sources)
    y_range = _y_range(report)
    data: list[dict[str, Any]] = []
    column, lines = _line_traces(readings, times)
    data += lines[:4]
    for verdict, colour in VERDICT_COLOURS.items():
        points = [
            r
            for r in readings
            if r.verdict == verdict and (r.weight_kg is not None or y_range is not None)
        ]
        if not points:
            continue
        xs, ys, custom, syms = [], [], [], []
        for r in points:
            if r.weight_kg is None:
                assert y_range is not None
                y, clamped = y_range[0], True
            else:
                y, clamped = r.weight_kg, False
                if y_range is not None and not y_range[0] <= y <= y_range[1]:
                    y, clamped = min(max(y, y_range[0]), y_range[1]), True
            xs.append(times[id(r)])
            ys.append(y)
            custom.append(
                [
                    r.reading_id,
                    r.weight_kg,
                    r.reason,
                    _text(r.source),
                    _note(r, clamped),
                    _text(r.message[:200]),
                    "no weight" if r.weight_kg is None else f"{r.weight_kg:.2f} kg",
                ]
            )
            syms.append(symbols[r.source])
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{verdict} ({len(points)})",
                "meta": {"role": "readings", "verdict": verdict},
                "x": xs,
                "y": ys,
                "customdata": custom,
                "hovertemplate": _POINT_HOVER % verdict,
                "cliponaxis": False,
                "marker": {
                    "color": colour,
                    "symbol": syms,
                    "size": 8 if verdict == Verdict.ACCEPTED else 10,
                    "opacity": 0.85,
                    "line": {"width": 1, "color": "white"},
                },
            }
        )
    data += _reset_traces(report, y_range)
    data += lines[4:]
    shapes = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": plot_time(p.start),
            "x1": plot_time(p.end),
            "y0": 0.3,
            "y1": 1.0,
            "fillcolor": _ADAPT,
            "line": {"width": 0},
            "layer": "below",
        }
        for p in report.adaptation
    ]
    shapes += [
        {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": plot_time(m.time),
            "x1": plot_time(m.time),
            "y0": 0.3,
            "y1": 1.0,
            "line": {"width": 1, "dash": "dot", "color": OUTCOME_COLOURS[m.category]},
            "layer": "below",
        }
        for m in report.resets
    ]
    yaxis: dict[str, Any] = {"title": {"text": "kg"}, "domain": [0.3, 1.0], "zeroline": False}
    if y_range is not None:
        yaxis["range"] = [y_range[0], y_range[1]]
    return {
        "columns": {"t": column},
        "data": data,
        "layout": {
            "font": _FONT,
            "height": 640,
            "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
            "hovermode": "closest",
            "legend": {"orientation": "h", "y": 1.08, "traceorder": "normal"},
            "xaxis": {"title": {"text": "time (UTC)"}, "type": "date"},
            "yaxis": yaxis,
            "yaxis2": {
                "title": {"text": "kg/week"},
                "domain": [0.0, 0.22],
                "anchor": "x",
                "zeroline": True,
            },
            "shapes": shapes,
        },
    }


def _line_traces(readings: Sequence[Reading], times: dict[int, str]) -> tuple[list[str], list[Any]]:
    """The time column of the accepted readings, and the lines drawn over it.

    Six lines share one time axis (the band's two edges, filtered, smoothed and both trends):
    each names the column (``xcol``) instead of repeating it, and the page fills ``x`` in
    before plotting (:func:`resolved`). The filtered weights are the stored values exactly;
    the derived lines are rounded to 0.1 g.
    """
    accepted = [r for r in readings if r.filtered_weight is not None]
    if not accepted:
        return [], []
    xs = [times[id(r)] for r in accepted]
    mean = [r.filtered_weight or 0.0 for r in accepted]
    two_sd = [2 * (r.filtered_std or 0.0) for r in accepted]

    def rounded(values: Iterable[float | None]) -> list[float | None]:
        return [None if v is None else round(v, 4) for v in values]

    def line(name: str, role: str, y: list[Any], **extra: Any) -> dict[str, Any]:
        return {"type": "scatter", "mode": "lines", "name": name, "meta": {"role": role},
                "xcol": "t", "y": y, **extra}  # fmt: skip

    return xs, [
        line(
            "±2σ",
            "band",
            [round(m + s, 4) for m, s in zip(mean, two_sd, strict=True)],
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
        ),
        line(
            "filtered ±2σ",
            "band",
            [round(m - s, 4) for m, s in zip(mean, two_sd, strict=True)],
            fill="tonexty",
            fillcolor=_BAND,
            line={"width": 0},
            hoverinfo="skip",
        ),
        line(
            "filtered (live)",
            "filtered",
            mean,
            line={"color": _FILTERED, "width": 2},
            hovertemplate="filtered %{y:.2f} kg<extra></extra>",
        ),
        line(
            "smoothed (RTS)",
            "smoothed",
            rounded(r.smoothed_weight for r in accepted),
            line={"color": _SMOOTHED, "width": 2, "dash": "dash"},
            hovertemplate="smoothed %{y:.2f} kg<extra></extra>",
        ),
        line(
            "trend (live)",
            "trend",
            rounded(r.filtered_trend_kg_week for r in accepted),
            yaxis="y2",
            line={"color": _FILTERED, "width": 1.5, "shape": "hv"},
            hovertemplate="trend %{y:+.2f} kg/week<extra></extra>",
        ),
        line(
            "trend (smoothed)",
            "trend",
            rounded(r.smoothed_trend_kg_week for r in accepted),
            yaxis="y2",
            line={"color": _SMOOTHED, "width": 1.5, "dash": "dash"},
            hovertemplate="smoothed trend %{y:+.2f} kg/week<extra></extra>",
        ),
    ]


def resolved(figure: Figure) -> Figure:
    """The figure as ``Plotly.newPlot`` takes it: each ``xcol`` replaced by its column
    (what the page's script does before plotting)."""
    columns = figure.get("columns", {})
    data = []
    for trace in figure["data"]:
        trace = dict(trace)
        if "xcol" in trace:
            trace["x"] = columns[trace.pop("xcol")]
        data.append(trace)
    return {"data": data, "layout": figure["layout"]}


def _reset_traces(report: UserReport, y_range: tuple[float, float] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for category in OUTCOME_CATEGORIES:
        marks = [m for m in report.resets if m.category == category]
        if not marks:
            continue
        ys = []
        for m in marks:
            y = m.weight_kg if m.weight_kg is not None else 0.0
            if y_range is not None:
                y = min(max(y, y_range[0]), y_range[1])
            ys.append(y)
        out.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"reset {category.replace('_', ' ')} ({len(marks)})",
                "meta": {"role": "resets", "outcome": category},
                "x": [plot_time(m.time) for m in marks],
                "y": ys,
                "customdata": [[m.reading_id, m.reset_type] for m in marks],
                "hovertext": [
                    "<br>".join(
                        part
                        for part in (
                            f"<b>{escape(m.reset_type)} reset</b>: {category}",
                            escape(m.trigger),
                            escape(m.detail),
                        )
                        if part
                    )
                    for m in marks
                ],
                "hovertemplate": "%{hovertext}<extra></extra>",
                "marker": {
                    "color": OUTCOME_COLOURS[category],
                    "size": 18,
                    "symbol": [RESET_SYMBOLS.get(m.reset_type, "circle") + "-open" for m in marks],
                    "line": {"width": 2, "color": OUTCOME_COLOURS[category]},
                },
            }
        )
    return out


def marker_count(figure: Figure) -> int:
    """How many points the figure draws as markers (what the page's DOM holds)."""
    return sum(len(t["x"]) for t in figure["data"] if "markers" in t.get("mode", ""))


def _bar_layout(title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    return {
        "font": _FONT,
        "title": {"text": title},
        "height": 360,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 110},
        "yaxis": {"title": {"text": y_title}},
        **extra,
    }


def _trend_histogram(trends: Sequence[float]) -> tuple[list[float], list[int], float]:
    """Bins of 0.1 kg/week between the 1st and 99th percentiles (the tails in the end bins)."""
    if not trends:
        return [], [], 0.1
    ordered = sorted(trends)
    lo = ordered[int(0.01 * (len(ordered) - 1))]
    hi = ordered[int(0.99 * (len(ordered) - 1))]
    width = 0.1
    start = width * (lo // width)
    n = max(1, int((hi - start) // width) + 1)
    counts = [0] * n
    for t in ordered:
        i = int((t - start) // width)
        counts[min(max(i, 0), n - 1)] += 1
    centres = [round(start + (i + 0.5) * width, 3) for i in range(n)]
    return centres, counts, width


def cohort_figures(cohort: Cohort) -> dict[str, Figure]:
    """The cohort page's charts: rejection by source and by reason, resets, trends."""
    sources = [s for s, _, _ in cohort.by_source]
    rates = [round(100.0 * rej / n, 3) if n else 0.0 for _, n, rej in cohort.by_source]
    reasons = cohort.by_reason
    resets_data = []
    types = sorted({t for t, _, _ in cohort.resets})
    for category in OUTCOME_CATEGORIES:
        by_type = {t: n for t, c, n in cohort.resets if c == category}
        if by_type:
            resets_data.append(
                {
                    "type": "bar",
                    "name": category.replace("_", " "),
                    "x": types,
                    "y": [by_type.get(t, 0) for t in types],
                    "marker": {"color": OUTCOME_COLOURS[category]},
                }
            )
    centres, counts, width = _trend_histogram(cohort.trends)
    return {
        "by_source": {
            "data": [
                {
                    "type": "bar",
                    "name": "rejected %",
                    "x": sources,
                    "y": rates,
                    "text": [f"{rej} of {n}" for _, n, rej in cohort.by_source],
                    "hovertemplate": "%{x}: %{y:.2f}% (%{text})<extra></extra>",
                    "marker": {"color": VERDICT_COLOURS["rejected"]},
                }
            ],
            "layout": _bar_layout("rejection rate by source", "% of decided readings"),
        },
        "by_reason": {
            "data": [
                {
                    "type": "bar",
                    "name": verdict,
                    "x": [r for v, r, _ in reasons if v == verdict],
                    "y": [n for v, _, n in reasons if v == verdict],
                    "marker": {"color": colour},
                }
                for verdict, colour in VERDICT_COLOURS.items()
                if verdict != "accepted" and any(v == verdict for v, _, _ in reasons)
            ],
            "layout": _bar_layout("rows not accepted, by reason", "rows", barmode="stack"),
        },
        "resets": {
            "data": resets_data,
            "layout": _bar_layout("resets by type and outcome", "resets", barmode="stack"),
        },
        "trends": {
            "data": [
                {
                    "type": "bar",
                    "name": "users",
                    "x": centres,
                    "y": counts,
                    "width": width * 0.95,
                    "marker": {"color": _FILTERED},
                    "hovertemplate": "%{x:+.2f} kg/week: %{y} users<extra></extra>",
                }
            ],
            "layout": _bar_layout(
                "last trend per user", "users", xaxis={"title": {"text": "kg/week"}}
            ),
        },
    }
