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
in-memory SQLite journal (:mod:`l2_tactical.backtest.setup`). What is recorded per bar is in
:mod:`l2_tactical.backtest.recording`; the events come from :mod:`l2_tactical.backtest.plan`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from l2_tactical.backtest.plan import EventPlan, plan_events
from l2_tactical.backtest.recording import Recorder, RecordingGenerator, ReportTap
from l2_tactical.backtest.results import BacktestResult, SymbolTrace, run_metrics
from l2_tactical.backtest.setup import (
    ExecutorFactory,
    FrozenClock,
    PaperAccount,
    clamp_start,
    config_for_symbols,
    config_with_models,
    default_warmup,
    paper_executor_factory,
)
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.data.bar import Bar
from l2_tactical.data.candle_checks import TIMEFRAMES
from l2_tactical.errors import DataError
from l2_tactical.messages import SignalSource, StrategicDecision
from l2_tactical.tactical_loop import TacticalLoop, drive_bar

__all__ = [
    "BacktestResult",
    "Backtester",
    "Bar",
    "EventPlan",
    "ExecutorFactory",
    "FrozenClock",
    "PaperAccount",
    "SymbolTrace",
    "config_for_symbols",
    "config_with_models",
    "default_warmup",
    "paper_executor_factory",
    "plan_events",
    "run_metrics",
]


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


_UTC = timezone.utc


def _rows_as_lists(arrays: tuple[Any, ...], rows: Any) -> tuple[list[Any], ...]:
    """Each array as a Python list, converted only over ``rows``' span (the rest stays None: never read)."""
    if rows.size == 0:
        return tuple([] for _ in arrays)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    return tuple([None] * lo + a[lo:hi].tolist() for a in arrays)


class _Run:
    """The state of one backtest run."""

    def __init__(self, bt: Backtester, config: L2Config, generator: Any, plan: EventPlan, symbols: tuple[str, ...],
                 timeframe: str, notes: list[str]) -> None:
        self.bt, self.config, self.plan, self.symbols, self.tf, self.notes = bt, config, plan, symbols, timeframe, notes
        self._bar_length = timedelta(seconds=TIMEFRAMES[timeframe])
        k0, r0 = plan.order[0]
        first = datetime.fromtimestamp(int(plan.arrays[int(k0)][0][int(r0)]) // 1_000_000_000, tz=_UTC)
        self.clock = SimulatedClock(first)
        self.rec = RecordingGenerator(generator)
        self.specialists = tuple(generator.ensemble.names)
        self.unavailable = dict(generator.ensemble.unavailable)
        self.loop = TacticalLoop(config, self.rec, clock=self.clock, timeframe=timeframe,
                                 trade_sources=bt.trade_sources, allow_short=bt.allow_short)
        if bt.decision is not None:
            self.loop.on_decision(bt.decision)
        self.executor = bt.executor_factory(config, self.clock)
        self.tap = ReportTap(self.executor)
        # per event: its timeline column; per symbol: the bars as Python lists (no numpy scalar per bar)
        self._columns = plan.columns()
        self._bars = tuple(_rows_as_lists(arrays, plan.order[plan.order[:, 0] == k, 1])
                           for k, arrays in enumerate(plan.arrays))
        self.record = Recorder(symbols, plan.timeline.size, self.specialists, allow_short=bt.allow_short)

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
        opened = datetime.fromtimestamp(ts[row] // 1_000_000_000, tz=_UTC)
        bar = Bar(symbol=symbol, interval=self.tf, open_time=opened, open=o[row], high=h[row], low=lo[row],
                  close=c[row], volume=v[row])
        now = opened + self._bar_length  # the bar's close_time
        self.clock.set(now)
        tap, record = self.tap, self.record
        tap.reports.clear()
        decision = drive_bar(self.loop, tap, bar, now)
        trace = record.traces[symbol]
        record.prices(trace, t, bar)
        record.orders_of(decision)
        portfolio = self.executor.portfolio
        record.fills(tap.reports, t, portfolio)
        record.calls(trace, t, self.rec.last)
        record.account(t, portfolio, self.loop.state.positions)

    def _result(self, seconds: float, events: int) -> BacktestResult:
        r = self.record
        metrics = run_metrics(r.equity, self.tf, list(r.traces.values()), r.exposure)
        return BacktestResult(
            symbols=self.symbols, timeframe=self.tf, timestamps=self.plan.timeline.astype("datetime64[ns]"),
            equity=r.equity, exposure=r.exposure, traces=r.traces, orders=tuple(r.orders),
            reports=tuple(r.reports), metrics=metrics, loop_stats=self.loop.stats,
            executor_summary=self.executor.summary(), unavailable=self.unavailable, seconds=seconds,
            bars_processed=events, notes=tuple(self.notes))
