"""What a backtest is set up with: L1's paper executor, the configuration for the symbols, the warm-up.

* :func:`paper_executor_factory`: L1's PaperExecutor over a fresh journal, resolved through the
  ``l2_tactical.l1`` entry points that ``l2 paper`` uses (or the objects they name), so
  ``l2_tactical`` never imports ``l1_operational``;
* :func:`config_with_models`, :func:`config_for_symbols`: the models folder, exchange limits
  for symbols the configuration does not know;
* :func:`default_warmup`, :func:`clamp_start`: how many bars before ``start`` warm up the
  pipeline, and a ``start`` moved so that every symbol has them;
* :class:`FrozenClock`: the signal generator's clock (no wall time in a backtest).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from l2_tactical.clock import Clock
from l2_tactical.config import L2Config
from l2_tactical.errors import ConfigError
from l2_tactical.messages import ExecutionReport, OrderIntent

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


class FrozenClock:
    """The generator's clock in a backtest: model timeouts and the prediction cache never depend on wall time
    (a specialist's answer is never discarded as late, so a run is reproducible on any machine)."""

    _T0 = datetime(1970, 1, 1, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self._T0

    def monotonic(self) -> float:
        return 0.0
