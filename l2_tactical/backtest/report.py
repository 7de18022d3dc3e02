"""One self-contained HTML report of a backtest (plotly, embedded inline; no network access at all).

Charts, top to bottom: price (candles) with entries, exits, stop exits and stop levels;
equity against a benchmark (buy-and-hold); drawdown; exposure over time; hit rate per
signal source; then the metrics table (one column per strategy).

Long histories are reduced for display only: candles are merged into at most
``max_candles`` buckets (first open, highest high, lowest low, last close), and line
series keep each bucket's minimum and maximum, so no peak or trough disappears.
Fills are drawn at their exact bar and price. plotly is imported only here.
"""

from __future__ import annotations

import html
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2_tactical.backtest.metrics import TradeFill, drawdown_series

_CONFIG = {"displaylogo": False, "responsive": True, "plotlyServerURL": ""}
_PCT = {
    "total_return", "annual_return", "annual_volatility", "max_drawdown", "win_rate", "time_in_market",
}  # fmt: skip
_SKIP = {"hit_rate_per_source", "attribution", "periods_per_year"}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1f2933; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px 0; } p.sub { color: #52606d; margin: 0 0 16px 0; }
h2 { font-size: 16px; margin: 18px 0 6px 0; }
table.metrics { border-collapse: collapse; font-size: 13px; }
table.metrics th, table.metrics td { border: 1px solid #cbd2d9; padding: 3px 10px; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics thead th { background: #f0f4f8; }
"""


def _bucket_edges(n: int, max_points: int) -> np.ndarray:
    size = max(1, math.ceil(n / max(1, max_points)))
    return np.arange(0, n, size)


def minmax_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to plot: each bucket's min and max (plus both ends), in order.

    >>> minmax_indices(np.array([0.0, 5.0, 1.0, 2.0, -3.0, 4.0, 1.0, 1.5]), 4).tolist()  # 2 buckets of 4
    [0, 1, 4, 5, 7]
    """
    n = values.size
    if n <= max_points:
        return np.arange(n)
    starts = _bucket_edges(n, max(1, max_points // 2))
    v = np.where(np.isfinite(values), values, 0.0)
    lo = np.minimum.reduceat(v, starts)
    hi = np.maximum.reduceat(v, starts)
    idx = [0, n - 1]
    for k, (a, b) in enumerate(zip(starts, [*starts[1:], n], strict=True)):
        seg = v[a:b]
        idx.append(a + int(np.flatnonzero(seg == lo[k])[0]))
        idx.append(a + int(np.flatnonzero(seg == hi[k])[0]))
    return np.unique(np.asarray(idx))


def _candles(ts: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, max_candles: int) -> Any:
    import plotly.graph_objects as go

    starts = _bucket_edges(o.size, max_candles)
    ends = np.append(starts[1:], o.size) - 1
    return go.Candlestick(
        x=ts[starts], open=o[starts], high=np.maximum.reduceat(h, starts), low=np.minimum.reduceat(lo, starts),
        close=c[ends], name="price", increasing_line_color="#2f9e44", decreasing_line_color="#c92a2a",
    )  # fmt: skip


def _runs(stops: np.ndarray, ts: np.ndarray) -> tuple[list[Any], list[Any]]:
    """Stop levels as horizontal segments (one per run of equal values), broken by None."""
    xs: list[Any] = []
    ys: list[Any] = []
    finite = np.isfinite(stops)
    same = (stops[1:] == stops[:-1]) | (~finite[1:] & ~finite[:-1])
    bounds = [0, *(np.flatnonzero(~same) + 1).tolist(), stops.size]
    for a, b in itertools.pairwise(bounds):
        if finite[a]:
            xs += [ts[a], ts[b - 1], None]
            ys += [float(stops[a]), float(stops[a]), None]
    return xs, ys


def _fill_markers(fills: Sequence[TradeFill], ts: np.ndarray) -> list[Any]:
    import plotly.graph_objects as go

    groups: dict[str, tuple[list[Any], list[float], list[str]]] = {"entry": ([], [], []), "exit": ([], [], []),
                                                                    "stop exit": ([], [], [])}  # fmt: skip
    qty = 0.0
    for f in fills:
        grows = abs(qty + f.qty) > abs(qty) + 1e-12
        kind = "entry" if grows else ("stop exit" if f.reason.startswith("stop") else "exit")
        qty += f.qty
        x, y, text = groups[kind]
        x.append(ts[f.bar])
        y.append(f.price)
        text.append(f"{kind} {f.qty:+.6g} @ {f.price:.6g} ({f.source or 'n/a'}, {f.reason or 'n/a'})")
    style = {"entry": ("triangle-up", "#2f9e44"), "exit": ("triangle-down", "#1c7ed6"),
             "stop exit": ("x", "#e8590c")}  # fmt: skip
    return [
        go.Scatter(x=x, y=y, mode="markers", name=kind, hovertext=text, hoverinfo="text+x",
                   marker={"symbol": style[kind][0], "color": style[kind][1], "size": 9, "line": {"width": 1}})
        for kind, (x, y, text) in groups.items()
    ]  # fmt: skip


def _line(ts: np.ndarray, y: np.ndarray, name: str, max_points: int, **kw: Any) -> Any:
    import plotly.graph_objects as go

    idx = minmax_indices(y, max_points)
    return go.Scatter(x=ts[idx], y=y[idx], mode="lines", name=name, **kw)


def _figure(traces: list[Any], title: str, height: int, **layout: Any) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(traces)
    fig.update_layout(title=title, height=height, template="plotly_white", margin={"l": 60, "r": 20, "t": 40, "b": 30},
                      legend={"orientation": "h", "y": 1.02, "x": 0.45, "xanchor": "center", "yanchor": "bottom"},
                      **layout)  # fmt: skip
    return fig


def _hit_rate_figure(hit_rate: Mapping[str, float]) -> Any:
    import plotly.graph_objects as go

    names = [k for k, v in hit_rate.items() if v is not None and math.isfinite(v)]
    bars = go.Bar(x=names, y=[100.0 * hit_rate[k] for k in names], marker_color="#5c7cfa", width=0.5,
                  text=[f"{100.0 * hit_rate[k]:.1f}%" for k in names], textposition="outside")  # fmt: skip
    fig = _figure([bars], "Hit rate per signal source (sign of the call vs the next bar)", 320,
                  yaxis={"title": "%", "range": [0, 100]})  # fmt: skip
    fig.add_hline(y=50.0, line_dash="dash", line_color="#868e96", annotation_text="coin flip")
    if not names:
        fig.add_annotation(text="no per-source signals in this run", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")  # fmt: skip
    return fig


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "n/a")
        return f"{100.0 * v:.2f}%" if key in _PCT else f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return html.escape(str(value))


def metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """HTML table: one row per scalar metric, one column per strategy."""
    names = list(metrics)
    keys: list[str] = []
    for m in metrics.values():
        keys += [k for k, v in m.items() if k not in _SKIP and k not in keys and not isinstance(v, Mapping)]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><td>{html.escape(k.replace('_', ' '))}</td>"
        + "".join(f"<td>{_fmt(k, metrics[n].get(k, ''))}</td>" for n in names)
        + "</tr>"
        for k in keys
    )
    return f'<table class="metrics"><thead><tr><th>metric</th>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _as_array(name: str, values: Any, n: int) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected {n} values (one per bar), got shape {a.shape}")
    return a


def _timestamps(timestamps: Any) -> np.ndarray:
    import pandas as pd

    idx = pd.DatetimeIndex(timestamps)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return np.asarray(idx.to_numpy(dtype="datetime64[ns]"))


def _price_figure(
    ts: np.ndarray, ohlc: tuple[np.ndarray, ...], fills: Sequence[TradeFill], stops: np.ndarray | None, max_points: int
) -> Any:
    o, h, lo, c = ohlc
    price = [_candles(ts, o, h, lo, c, max_points // 2), *_fill_markers(fills, ts)]
    if stops is not None and np.any(np.isfinite(stops)):
        xs, ys = _runs(stops, ts)
        price.append(_line_raw(xs, ys, "stop level", {"color": "#e8590c", "dash": "dot", "width": 1.5}))
    layout = {"xaxis": {"rangeslider": {"visible": False}}, "yaxis": {"title": "price"}}
    return _figure(price, "Price with entries, exits and stops", 520, **layout)


def _equity_figures(
    ts: np.ndarray, equity: np.ndarray, benchmark: np.ndarray | None, label: str, max_points: int
) -> list[Any]:
    curves = [_line(ts, equity, "strategy", max_points, line={"color": "#1c7ed6"})]
    dd = -100.0 * drawdown_series(equity)
    dds = [_line(ts, dd, "strategy", max_points, fill="tozeroy", line={"color": "#c92a2a"})]
    if benchmark is not None:
        curves.append(_line(ts, benchmark, label, max_points, line={"color": "#868e96"}))
        dd_b = -100.0 * drawdown_series(benchmark)
        dds.append(_line(ts, dd_b, label, max_points, line={"color": "#868e96", "width": 1}))
    return [
        _figure(curves, f"Equity against {label}", 380, yaxis={"title": "equity", "type": "log"}),
        _figure(dds, "Drawdown", 260, yaxis={"title": "% below peak"}),
    ]


def build_figures(
    *,
    ts: np.ndarray,
    ohlc: tuple[np.ndarray, ...],
    equity: np.ndarray,
    benchmark: np.ndarray | None,
    benchmark_label: str,
    fills: Sequence[TradeFill],
    stops: np.ndarray | None,
    exposure: np.ndarray | None,
    hit_rate: Mapping[str, float],
    max_points: int,
) -> list[Any]:
    """The five plotly figures of the report, in page order."""
    expo = 100.0 * (exposure if exposure is not None else np.zeros(ts.size))
    expo_line = _line(ts, expo, "exposure", max_points, line={"shape": "hv", "color": "#7048e8"})
    return [
        _price_figure(ts, ohlc, fills, stops, max_points),
        *_equity_figures(ts, equity, benchmark, benchmark_label, max_points),
        _figure([expo_line], "Exposure (position value / equity)", 260, yaxis={"title": "%"}),
        _hit_rate_figure(hit_rate),
    ]


def _line_raw(xs: list[Any], ys: list[Any], name: str, line: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    return go.Scatter(x=xs, y=ys, mode="lines", name=name, line=line, connectgaps=False)


def write_report(
    path: str | os.PathLike[str],
    *,
    title: str,
    timestamps: Any,
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    equity: Any,
    metrics: Mapping[str, Mapping[str, Any]],
    benchmark_equity: Any = None,
    benchmark_label: str = "buy & hold",
    fills: Sequence[TradeFill] = (),
    stops: Any = None,
    exposure: Any = None,
    hit_rate_per_source: Mapping[str, float] | None = None,
    subtitle: str = "",
    max_points: int = 4000,
) -> Path:
    """Write the report to ``path`` (one HTML file, plotly.js inline) and return the path.

    ``metrics`` maps a strategy name to its metrics dict (e.g. :func:`~l2_tactical.backtest.metrics.summarise`);
    array arguments have one value per bar; ``fills`` mark entries and exits at their bar.
    """
    ts = _timestamps(timestamps)
    n = ts.size
    ohlc = tuple(_as_array(k, v, n) for k, v in (("open", open_), ("high", high), ("low", low), ("close", close)))
    for f in fills:
        if not 0 <= f.bar < n:
            raise ValueError(f"fills: bar {f.bar} outside the {n} bars of the report")
    figures = build_figures(
        ts=ts, ohlc=ohlc, equity=_as_array("equity", equity, n),
        benchmark=None if benchmark_equity is None else _as_array("benchmark_equity", benchmark_equity, n),
        benchmark_label=benchmark_label, fills=fills,
        stops=None if stops is None else _as_array("stops", stops, n),
        exposure=None if exposure is None else _as_array("exposure", exposure, n),
        hit_rate=hit_rate_per_source or {}, max_points=max_points,
    )  # fmt: skip
    divs = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), config=_CONFIG, div_id=f"chart-{i}")
        for i, fig in enumerate(figures)
    ]
    page = _page(title, subtitle, divs, metrics)
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _page(title: str, subtitle: str, divs: list[str], metrics: Mapping[str, Mapping[str, Any]]) -> str:
    t = html.escape(title)
    body = "\n".join(f'<section class="chart">{d}</section>' for d in divs)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{t}</title>'
        f'<style>{_STYLE}</style></head>\n<body><h1>{t}</h1><p class="sub">{html.escape(subtitle)}</p>\n'
        f"{body}\n<h2>Metrics</h2>{metrics_table(metrics)}\n</body></html>\n"
    )
