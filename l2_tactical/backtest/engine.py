"""Event-driven backtest on the live code path: the TacticalLoop of ``l2 paper`` against L1's paper executor.

Per bar, in time order over all symbols (ties in the order the candle files were given), the
engine sets a :class:`~l2_tactical.clock.SimulatedClock` to the bar's close and runs
:func:`l2_tactical.tactical_loop.drive_bar` — the canonical bar order that ``l2 paper --bus
memory`` follows through the bus:

1. L1 (the paper executor) processes the bar: orders decided at the previous close fill at
   this bar's OPEN through :mod:`l2_tactical.execution` (fees, spread, slippage); stops and
   take-profits are checked inside the bar;
2. L2 hears those reports, then decides at the bar's close (features, 3 specialists,
   ensemble, technical + pattern sources, composite, sizer, risk controls) -> OrderIntents;
3. L1 validates the intents (reason codes) and queues them for the next bar of the symbol.

Nothing is vectorised around the pipeline and nothing looks ahead: a decision at bar t can
only fill at bar t+1's open. The bars before ``start`` (``warmup_bars`` of them) warm up each
symbol through :meth:`TacticalLoop.warm_up`, exactly as ``l2 paper`` does: features, the
specialists' windows and the sizer's history are ready at the first evaluated bar, and no
signal, order or statistic comes out of them.

The L1 executor is injected (``executor_factory``); the default is L1's PaperExecutor over an
in-memory SQLite journal, resolved through the ``l2_tactical.l1`` entry points that ``l2 paper``
uses (or the objects they name), so ``l2_tactical`` never imports ``l1_operational``.
Recorded per bar: portfolio equity and exposure at the close, the active (L2-trailed) stop,
every fill as a :class:`~l2_tactical.backtest.metrics.TradeFill`, each source's and each
specialist's call (signed target exposure), and each specialist's contribution (its effective
ensemble weight x its target exposure, negative parts dropped in spot mode).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from l2_tactical.backtest.metrics import TradeFill
from l2_tactical.backtest.results import BacktestResult, SymbolTrace, run_metrics
from l2_tactical.clock import Clock, SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.data.bar import Bar
from l2_tactical.errors import ConfigError, DataError
from l2_tactical.messages import (
    ExecutionReport,
    ExecutionStatus,
    OrderIntent,
    ReasonCode,
    Side,
    SignalSource,
    StrategicDecision,
)
from l2_tactical.tactical_loop import TacticalLoop, drive_bar

__all__ = [
    "BacktestResult",
    "Backtester",
    "Bar",
    "FrozenClock",
    "SymbolTrace",
    "config_for_symbols",
    "config_with_models",
    "default_warmup",
    "paper_executor_factory",
    "plan_events",
    "run_metrics",
]

L1_GROUP = "l2_tactical.l1"  # the entry points ``l2 paper`` resolves L1 through (pyproject.toml)
L1_DEFAULTS = {"journal": "l1_operational.journal:Journal", "paper_executor": "l1_operational.executor:PaperExecutor"}


class PaperAccount(Protocol):
    """What the engine needs from L1 (``l1_operational.executor.PaperExecutor`` fits)."""

    portfolio: Any

    def on_bar(self, bar: Any) -> Sequence[ExecutionReport]: ...

    def submit(self, intent: OrderIntent) -> ExecutionReport | None: ...

    def summary(self) -> dict[str, Any]: ...


ExecutorFactory = Callable[[L2Config, Clock], PaperAccount]


def load_l1_part(name: str) -> Any:
    """L1's ``journal`` / ``paper_executor`` class: the ``l2_tactical.l1`` entry point when installed, else
    the object that entry point names (so ``l2_tactical`` never imports ``l1_operational``)."""
    from importlib.metadata import EntryPoint, entry_points

    found = {e.name: e for e in entry_points(group=L1_GROUP)}
    return (found.get(name) or EntryPoint(name=name, value=L1_DEFAULTS[name], group=L1_GROUP)).load()


def paper_executor_factory(journal_url: str = "sqlite://") -> ExecutorFactory:
    """L1's PaperExecutor over a fresh journal at ``journal_url`` (default: in-memory SQLite)."""

    def make(config: L2Config, clock: Clock) -> PaperAccount:
        journal = load_l1_part("journal")(journal_url)
        return load_l1_part("paper_executor").from_config(config, journal=journal, clock=clock)  # type: ignore[no-any-return]

    return make


def config_with_models(config: L2Config, models_dir: str | Path | None) -> L2Config:
    """``config`` with every ``ensemble.models.<name>.path`` moved into ``models_dir`` (same file name)."""
    if models_dir is None:
        return config
    folder = Path(models_dir)
    if not folder.is_dir():
        raise ConfigError(f"--models {folder}: not a folder")
    return config.with_overrides({f"ensemble.models.{n}.path": str((folder / Path(m.path).name).resolve())
                                  for n, m in config.ensemble.models.items()})


def derived_lot_step(price: float) -> float:
    """A lot step for a symbol without configured limits: about 1/10 of a 10-USDT order.

    >>> derived_lot_step(60000.0), derived_lot_step(150.0)
    (1e-05, 0.001)
    """
    return float(10.0 ** (math.floor(math.log10(10.0 / price)) - 1))


def config_for_symbols(config: L2Config, prices: Mapping[str, float]) -> tuple[L2Config, list[str]]:
    """Add exchange limits for symbols the config does not know, derived from a reference price
    (lot step from the price, BTC's notional and exposure caps); returns the config and notes."""
    missing = {s: p for s, p in prices.items() if s not in config.symbols}
    if not missing:
        return config, []
    symbols = {s: dataclasses.asdict(v) for s, v in config.symbols.items()}
    template = dict(next(iter(symbols.values()))) if symbols else {"min_notional": 10.0, "max_notional": 50_000.0,
                                                                  "max_exposure": 0.2}
    notes = []
    for symbol, price in missing.items():
        lot = derived_lot_step(price)
        max_qty = max(lot, round(3000.0 / price / lot) * lot)
        symbols[symbol] = {**template, "lot_step": lot, "min_qty": lot, "max_qty": max_qty}
        notes.append(f"symbols.{symbol}: not configured; using lot_step={lot:g}, max_qty={max_qty:g}, "
                     f"max_exposure={symbols[symbol]['max_exposure']:g} (add it to your config to choose)")
    return config.with_overrides({"symbols": symbols}), notes


# ----------------------------------------------------------------------- recording


class _RecordingGenerator:
    """Passes everything through to the signal generator and keeps its last decision."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.last = inner, None

    def on_bar(self, symbol: str, candle: Any, regime_context: Any = None, position: Any = None) -> Any:
        self.last = self.inner.on_bar(symbol, candle, regime_context=regime_context, position=position)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _ReportTap:
    """Passes everything through to L1 and keeps the reports of the current bar."""

    def __init__(self, inner: PaperAccount) -> None:
        self.inner = inner
        self.reports: list[ExecutionReport] = []

    def on_bar(self, bar: Any) -> Sequence[ExecutionReport]:
        out = self.inner.on_bar(bar)
        self.reports.extend(out)
        return out

    def submit(self, intent: OrderIntent) -> ExecutionReport | None:
        out = self.inner.submit(intent)
        if out is not None:
            self.reports.append(out)
        return out


# ------------------------------------------------------------------------- the data


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """The events of a run: (symbol index, row) in time order, the timeline, each symbol's warm-up frame."""

    arrays: tuple[tuple[np.ndarray, ...], ...]  # per symbol: ts_ns, open, high, low, close, volume
    order: np.ndarray  # (n_events, 2) symbol index, row
    timeline: np.ndarray  # int64 ns, evaluated bar open times
    warmup: tuple[Any, ...]  # per symbol: the frame of the bars before the first evaluated one
    history: tuple[Any, ...] = ()  # per symbol: the warm-up bars followed by the evaluated ones


def _bounds_ns(value: Any) -> int | None:
    if value is None:
        return None
    import pandas as pd

    ts = pd.Timestamp(value)
    return int((ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).value)


def plan_events(candles: Sequence[Any], start: Any = None, end: Any = None, warmup_bars: int = 0) -> _Plan:
    """Events of ``candles`` with ``start <= open time < end``; up to ``warmup_bars`` earlier bars per symbol
    make its warm-up frame (for :meth:`TacticalLoop.warm_up`, as ``l2 paper`` warms up)."""
    lo_ns, hi_ns = _bounds_ns(start), _bounds_ns(end)
    arrays, keys, warm, history = [], [], [], []
    for k, c in enumerate(candles):
        f = c.frame
        ts = np.asarray(c.timestamps_ns, dtype=np.int64)
        arrays.append((ts, *(f[name].to_numpy(dtype=np.float64) for name in ("open", "high", "low", "close",
                                                                                "volume"))))
        lo = 0 if lo_ns is None else int(np.searchsorted(ts, lo_ns, side="left"))
        hi = ts.size if hi_ns is None else int(np.searchsorted(ts, hi_ns, side="left"))
        if hi <= lo:
            raise DataError(f"{c.symbol}: no bar between {start or 'the first bar'} and {end or 'the last bar'}",
                            file=getattr(c, "source", None))
        rows = np.arange(lo, hi)
        keys.append(np.stack([ts[rows], np.full(rows.size, k), rows], axis=1))
        warm.append(f.iloc[max(0, lo - warmup_bars):lo])
        history.append(f.iloc[max(0, lo - warmup_bars):hi])
    ev = np.concatenate(keys)
    ev = ev[np.lexsort((ev[:, 1], ev[:, 0]))]
    return _Plan(tuple(arrays), ev[:, 1:3].copy(), np.unique(ev[:, 0]), tuple(warm), tuple(history))


def _bar(plan: _Plan, symbol: str, timeframe: str, k: int, row: int) -> Bar:
    ts, o, h, lo, c, v = plan.arrays[k]
    when = datetime.fromtimestamp(int(ts[row]) // 1_000_000_000, tz=timezone.utc)
    return Bar(symbol=symbol, interval=timeframe, open_time=when, open=float(o[row]), high=float(h[row]),
               low=float(lo[row]), close=float(c[row]), volume=float(v[row]))


def clamp_start(candles: Sequence[Any], start: Any, warmup: int) -> tuple[Any, list[str]]:
    """``start`` moved forward, if needed, so that every symbol has ``warmup`` bars before it (with a note)."""
    import pandas as pd

    start = pd.Timestamp(start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    earliest = max(c.frame.index[min(warmup, len(c) - 1)] for c in candles)
    if start >= earliest:
        return start, []
    return earliest, [f"start {start:%Y-%m-%d %H:%M} moved to {earliest:%Y-%m-%d %H:%M}: the first {warmup} "
                      "bars of each file only warm up the features and specialists"]


def default_warmup(config: L2Config, timeframe: str, windows: Sequence[int] = ()) -> int:
    """Bars before ``start`` the pipeline needs: the full FeatureSet's lookback plus the longest
    specialist window, and at least the sizer's correlation window."""
    from l2_tactical.data.features import feature_set

    lookback = int(feature_set("full", timeframe).lookback_bars) + max(windows, default=0)
    return max(lookback, int(config.position_sizing.correlation_window)) + 1


# ------------------------------------------------------------------------ the engine


class Backtester:
    """Runs candles through TacticalLoop + L1 paper executor (see the module docstring).

    ``ensemble``: an :class:`~l2_tactical.finrl_models.ensemble_manager.EnsembleManager` to share
    between runs (default: load ``config.ensemble.models`` once per run, through the safe loader).
    ``trade_sources``: which signals become orders (the composite, as in ``l2 paper``; a
    specialist alone is traded as ``AI_MODEL`` with a one-model ensemble).
    """

    def __init__(self, config: L2Config, *, ensemble: Any = None, executor_factory: ExecutorFactory | None = None,
                 trade_sources: Sequence[SignalSource] = (SignalSource.COMPOSITE,), allow_short: bool = False,
                 decision: StrategicDecision | None = None, progress: bool = False, label: str = "backtest",
                 on_progress: Callable[[int], None] | None = None, precompute_features: bool = True) -> None:
        self.config, self.ensemble, self.on_progress = config, ensemble, on_progress
        self.precompute_features = precompute_features
        self.executor_factory = executor_factory or paper_executor_factory()
        self.trade_sources, self.allow_short = tuple(trade_sources), allow_short
        self.decision, self.progress, self.label = decision, progress, label

    def run(self, candles: Sequence[Any], *, start: Any = None, end: Any = None,
            warmup_bars: int | None = None) -> BacktestResult:
        """Backtest ``candles`` (one :class:`~l2_tactical.data.candles.Candles` per symbol, one timeframe)
        on ``[start, end)``; ``warmup_bars`` default: :func:`default_warmup` (only used when ``start`` is set)."""
        if not candles:
            raise DataError("backtest: no candles given")
        timeframes = sorted({c.timeframe for c in candles})
        if len(timeframes) != 1:
            raise DataError(f"backtest: all files must share one timeframe, got {timeframes}")
        symbols = tuple(c.symbol for c in candles)
        if len(set(symbols)) != len(symbols):
            raise DataError(f"backtest: a symbol was given twice ({', '.join(symbols)})")
        tf = timeframes[0]
        config, notes = config_for_symbols(self.config, {c.symbol: float(c.frame["close"].median()) for c in candles})
        generator = self._generator(config, tf)
        if warmup_bars is None:
            warmup_bars = default_warmup(config, tf, [s.window for s in generator.ensemble.available])
        if start is not None:
            start, moved = clamp_start(candles, start, warmup_bars)
            notes.extend(moved)
        plan = plan_events(candles, start, end, warmup_bars)
        return _Run(self, config, generator, plan, symbols, tf, notes).execute()

    def _generator(self, config: L2Config, timeframe: str) -> Any:
        from l2_tactical.signal_generator import SignalGenerator

        return SignalGenerator(config, ensemble=self.ensemble, clock=FrozenClock(), timeframe=timeframe)


class FrozenClock:
    """The generator's clock in a backtest: model timeouts and the prediction cache never depend on wall time
    (a specialist's answer is never discarded as late, so a run is reproducible on any machine)."""

    _T0 = datetime(1970, 1, 1, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self._T0

    def monotonic(self) -> float:
        return 0.0


class _Run:
    """The state of one backtest run."""

    def __init__(self, bt: Backtester, config: L2Config, generator: Any, plan: _Plan, symbols: tuple[str, ...],
                 timeframe: str, notes: list[str]) -> None:
        self.bt, self.config, self.plan, self.symbols, self.tf, self.notes = bt, config, plan, symbols, timeframe, notes
        k0, r0 = plan.order[0]
        self.clock = SimulatedClock(_bar(plan, symbols[k0], timeframe, int(k0), int(r0)).open_time)
        self.rec = _RecordingGenerator(generator)
        self.specialists = tuple(generator.ensemble.names)
        self.unavailable = dict(generator.ensemble.unavailable)
        self.loop = TacticalLoop(config, self.rec, clock=self.clock, timeframe=timeframe,
                                 trade_sources=bt.trade_sources, allow_short=bt.allow_short)
        if bt.decision is not None:
            self.loop.on_decision(bt.decision)
        self.executor = bt.executor_factory(config, self.clock)
        self.tap = _ReportTap(self.executor)
        n = plan.timeline.size
        # per event: its timeline column; per symbol: the bars as Python lists (no numpy scalar per bar)
        ev_ts = np.empty(plan.order.shape[0], dtype=np.int64)
        for k, arrays in enumerate(plan.arrays):
            mine = plan.order[:, 0] == k
            ev_ts[mine] = arrays[0][plan.order[mine, 1]]
        self._columns = np.searchsorted(plan.timeline, ev_ts).tolist()
        self._bars = tuple(tuple(a.tolist() for a in arrays) for arrays in plan.arrays)
        self.traces = {s: SymbolTrace.empty(s, n, self.specialists) for s in symbols}
        self.equity, self.exposure = np.zeros(n), np.zeros(n)
        self.orders: list[OrderIntent] = []
        self.reports: list[ExecutionReport] = []
        self.order_meta: dict[str, tuple[str, str]] = {}
        self.opened_by: dict[str, str] = {}

    def execute(self) -> BacktestResult:
        from tqdm import tqdm

        plan, loop = self.plan, self.loop
        precomputed = self._precompute()
        for symbol, frame in zip(self.symbols, plan.warmup, strict=True):
            if len(frame):
                loop.warm_up(symbol, frame)
        started = time.perf_counter()
        events = plan.order.shape[0]
        with tqdm(total=events, unit="bar", desc=self.bt.label, file=sys.stderr, disable=not self.bt.progress,
                  mininterval=1.0, smoothing=0.05) as bar_progress:
            for i, (k, row) in enumerate(plan.order.tolist()):
                self._step(k, row, self._columns[i])
                if i % 256 == 255:
                    bar_progress.update(256)
                    if self.bt.on_progress is not None:
                        self.bt.on_progress(256)
            bar_progress.update(events % 256)
            if self.bt.on_progress is not None:
                self.bt.on_progress(events % 256)
        seconds = time.perf_counter() - started + precomputed
        return self._result(seconds, events)

    def _precompute(self) -> float:
        """Batch features for each symbol's warm-up + evaluated bars, read row by row by the generator
        (:meth:`SignalGenerator.precompute`); the seconds it took (counted in the run's time)."""
        build = getattr(self.rec.inner, "precompute", None)
        if not self.bt.precompute_features or not callable(build):
            return 0.0
        started = time.perf_counter()
        for symbol, frame in zip(self.symbols, self.plan.history, strict=True):
            try:
                build(symbol, frame)
            except DataError as exc:  # too short for a batch build: the updater warms up bar by bar
                self.notes.append(f"{symbol}: features updated bar by bar ({exc})")
        return time.perf_counter() - started

    def _step(self, k: int, row: int, t: int) -> None:
        symbol = self.symbols[k]
        ts, o, h, lo, c, v = self._bars[k]
        bar = Bar(symbol=symbol, interval=self.tf, open_time=datetime.fromtimestamp(ts[row] // 1_000_000_000,
                                                                                   tz=timezone.utc),
                  open=o[row], high=h[row], low=lo[row], close=c[row], volume=v[row])
        now = bar.close_time
        self.clock.set(now)
        self.tap.reports.clear()
        decision = drive_bar(self.loop, self.tap, bar, now)
        trace = self.traces[symbol]
        trace.open[t], trace.high[t], trace.low[t], trace.close[t] = bar.open, bar.high, bar.low, bar.close
        self._remember_orders(decision)
        self._record_fills(t)
        self._record_calls(trace, t)
        self._record_account(t)

    def _remember_orders(self, decision: Any) -> None:
        calls = {s.signal_id: s for s in (*decision.signals, *decision.exits)}
        for order in decision.orders:
            signal = calls.get(order.signal_id)
            source = signal.source.value if signal is not None else "unknown"
            reason = str(signal.metadata.get("reason", "")) if signal is not None else ""
            self.order_meta[order.order_id] = (source, reason or ("close" if order.reduce_only else "signal"))
            self.orders.append(order)

    def _record_fills(self, t: int) -> None:
        for report in self.tap.reports:
            self.reports.append(report)
            if report.status is not ExecutionStatus.FILLED or report.executed_qty <= 0:
                continue
            sign = 1.0 if report.side is Side.BUY else -1.0
            meta = self.order_meta.get(report.order_id)
            if meta is None:  # an L1 stop-loss / take-profit exit
                meta = (self.opened_by.get(report.symbol, "unknown"), report.reason_code.value)
            elif sign > 0 and report.reason_code is ReasonCode.OK:
                self.opened_by.setdefault(report.symbol, meta[0])
            self.traces[report.symbol].fills.append(TradeFill(bar=t, qty=sign * report.executed_qty,
                                                              price=report.avg_price, fee=report.fees,
                                                              source=meta[0], reason=meta[1]))
            if self.executor.portfolio.position(report.symbol) is None:
                self.opened_by.pop(report.symbol, None)

    def _record_calls(self, trace: SymbolTrace, t: int) -> None:
        d = self.rec.last
        for s in getattr(d, "signals", ()):
            trace.signals[s.source.value][t] = s.exposure
        ens = getattr(d, "ensemble", None)
        if ens is None:
            return
        for v in ens.votes:
            if v.answered and v.name in trace.contributions:
                trace.signals[v.name][t] = v.exposure
                held = v.exposure if self.bt.allow_short else max(0.0, v.exposure)
                trace.contributions[v.name][t] = v.weight * held

    def _record_account(self, t: int) -> None:
        portfolio = self.executor.portfolio
        equity = float(portfolio.equity())
        self.equity[t] = equity
        gross = 0.0
        for symbol, trace in self.traces.items():
            mark = portfolio.mark(symbol)
            x = portfolio.base_qty(symbol) * mark / equity if mark is not None and equity > 0 else 0.0
            trace.exposure[t] = x
            gross += abs(x)
            pos = self.loop.state.positions.get(symbol)
            trace.stops[t] = pos.stop_loss if pos is not None and pos.stop_loss is not None else np.nan
        self.exposure[t] = gross

    def _result(self, seconds: float, events: int) -> BacktestResult:
        metrics = run_metrics(self.equity, self.tf, list(self.traces.values()), self.exposure)
        return BacktestResult(
            symbols=self.symbols, timeframe=self.tf, timestamps=self.plan.timeline.astype("datetime64[ns]"),
            equity=self.equity, exposure=self.exposure, traces=self.traces, orders=tuple(self.orders),
            reports=tuple(self.reports), metrics=metrics, loop_stats=self.loop.stats,
            executor_summary=self.executor.summary(), unavailable=self.unavailable, seconds=seconds,
            bars_processed=events, notes=tuple(self.notes))
