"""L1 portfolio: spot balances (BTC, ETH, USDT, ...), protected positions, equity at marks.

The portfolio changes in exactly one way: :meth:`Portfolio.apply_fill`. Start-up and
restart run the same code path: a fresh :class:`Portfolio` with the initial balances,
then every journaled fill replayed through ``apply_fill`` in journal order
(:func:`l1_operational.journal.Journal.rebuild_portfolio`). So the portfolio after a
restart is the portfolio before it, by construction.

Spot only: a position is a non-negative base-asset balance; a sell never makes it
negative (the order manager rejects that with ``INSUFFICIENT_BALANCE``).

>>> p = Portfolio({"USDT": 1000.0}, quote_asset="USDT")
>>> p.apply_fill(FillRecord(fill_id="f1", order_id="o1", symbol="BTCUSDT", qty=0.01, price=50000.0,
...                         fee=0.5, kind="market", bar_time=_EPOCH, stop_loss=49000.0))
>>> p.balance("USDT"), p.balance("BTC")
(499.5, 0.01)
>>> p.equity({"BTCUSDT": 51000.0})
1009.5
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from l2_tactical.messages import AccountPosition, AccountSnapshot

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DUST = 1e-12  # a base balance below this is treated as zero (float residue of buy/sell round trips)

FILL_KINDS = ("market", "stop_loss", "take_profit")


def base_asset(symbol: str, quote_asset: str) -> str:
    """``BTCUSDT`` -> ``BTC`` for quote ``USDT``; a clear error otherwise.

    >>> base_asset("ETHUSDT", "USDT")
    'ETH'
    """
    if not symbol.endswith(quote_asset) or len(symbol) <= len(quote_asset):
        raise ValueError(f"symbol={symbol!r}: does not end with the quote asset {quote_asset!r}")
    return symbol[: -len(quote_asset)]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FillRecord:
    """One fill as the journal stores it; ``qty`` is signed (+ bought, - sold)."""

    fill_id: str
    order_id: str
    symbol: str
    qty: float
    price: float
    fee: float
    kind: str
    bar_time: datetime
    reference: float = 0.0
    stop_loss: float | None = None
    take_profit: float | None = None
    correlation_id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FILL_KINDS:
            raise ValueError(f"FillRecord.kind={self.kind!r}: not one of {FILL_KINDS}")
        for name in ("qty", "price", "fee"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"FillRecord.{name}={v!r}: must be a finite number")
        if self.qty == 0 or self.price <= 0 or self.fee < 0:
            raise ValueError(f"FillRecord {self.fill_id}: qty={self.qty}, price={self.price}, fee={self.fee} "
                             "need qty != 0, price > 0, fee >= 0")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """An open long with its protective levels; ``since`` is the bar it was (last) bought on."""

    symbol: str
    qty: float
    avg_price: float
    stop_loss: float | None
    take_profit: float | None
    order_id: str
    correlation_id: str
    since: datetime


class Portfolio:
    """Balances per asset, open positions per symbol, last marks per symbol."""

    def __init__(self, initial_balances: Mapping[str, float], *, quote_asset: str = "USDT") -> None:
        for asset, amount in initial_balances.items():
            if not math.isfinite(amount) or amount < 0:
                raise ValueError(f"initial_balances[{asset!r}]={amount!r}: must be a finite number >= 0")
        self.quote_asset = quote_asset
        self.initial_balances = dict(initial_balances)
        self._balances: dict[str, float] = {quote_asset: 0.0, **initial_balances}
        self._positions: dict[str, Position] = {}
        self.marks: dict[str, float] = {}
        self.fees_paid = 0.0
        self.fill_count = 0

    # ------------------------------------------------------------------ reads
    def balance(self, asset: str) -> float:
        return self._balances.get(asset, 0.0)

    @property
    def balances(self) -> dict[str, float]:
        return dict(self._balances)

    @property
    def positions(self) -> dict[str, Position]:
        return dict(self._positions)

    def position(self, symbol: str) -> Position | None:
        return self._positions.get(symbol)

    def base_qty(self, symbol: str) -> float:
        return self.balance(base_asset(symbol, self.quote_asset))

    def mark(self, symbol: str) -> float | None:
        return self.marks.get(symbol)

    def equity(self, marks: Mapping[str, float] | None = None) -> float:
        """Quote balance plus every base balance valued at its mark (``marks`` over ``self.marks``).

        A base balance with no known mark is valued at its position's average price.
        """
        prices = {**self.marks, **(marks or {})}
        total = self.balance(self.quote_asset)
        for asset, amount in self._balances.items():
            if asset == self.quote_asset or amount == 0:
                continue
            symbol = asset + self.quote_asset
            price = prices.get(symbol)
            if price is None:
                pos = self._positions.get(symbol)
                price = pos.avg_price if pos else 0.0
            total += amount * price
        return total

    def exposure(self, symbol: str, marks: Mapping[str, float] | None = None) -> float:
        """Value of the symbol's base balance as a fraction of equity (0 when equity <= 0)."""
        prices = {**self.marks, **(marks or {})}
        eq = self.equity(prices)
        price = prices.get(symbol, 0.0)
        return self.base_qty(symbol) * price / eq if eq > 0 else 0.0

    # ----------------------------------------------------------------- writes
    def update_mark(self, symbol: str, price: float) -> None:
        self.marks[symbol] = price

    def apply_fill(self, fill: FillRecord) -> None:
        """The one state transition: balances move by the fill, the position follows the base balance."""
        base = base_asset(fill.symbol, self.quote_asset)
        self._balances[self.quote_asset] = self.balance(self.quote_asset) - fill.qty * fill.price - fill.fee
        new_qty = self.balance(base) + fill.qty
        self._balances[base] = 0.0 if abs(new_qty) < DUST else new_qty
        self.fees_paid += fill.fee
        self.fill_count += 1
        self._update_position(fill, self._balances[base])

    def _update_position(self, fill: FillRecord, new_qty: float) -> None:
        old = self._positions.get(fill.symbol)
        if new_qty <= 0:
            self._positions.pop(fill.symbol, None)
            return
        if fill.qty > 0:
            old_qty = old.qty if old else 0.0
            old_cost = old.avg_price * old_qty if old else 0.0
            avg = (old_cost + fill.qty * fill.price) / (old_qty + fill.qty)
            self._positions[fill.symbol] = Position(
                symbol=fill.symbol, qty=new_qty, avg_price=avg, stop_loss=fill.stop_loss,
                take_profit=fill.take_profit, order_id=fill.order_id,
                correlation_id=fill.correlation_id, since=fill.bar_time)
        elif old is not None:  # a partial sell keeps the levels and the average price
            self._positions[fill.symbol] = dataclasses.replace(old, qty=new_qty)

    # -------------------------------------------------------------- snapshots
    def snapshot(self) -> dict[str, Any]:
        """Plain, comparable state (balances, positions, fees); marks are excluded (they are market data)."""
        return {
            "balances": {k: v for k, v in sorted(self._balances.items())},
            "positions": {s: dataclasses.asdict(p) for s, p in sorted(self._positions.items())},
            "fees_paid": self.fees_paid,
            "fill_count": self.fill_count,
        }

    def account_snapshot(self, *, sender: str, timestamp: datetime, reports: int, recent_report_ids: Sequence[str],
                         sequence: int = 0) -> AccountSnapshot:
        """The book as the message L2 rebuilds its account from: quote cash, each open position with its
        protective levels, the bar it was bought on and its last mark. ``reports`` / ``recent_report_ids``:
        how many ExecutionReports (and the ids of the last) this state reflects; the caller knows them.

        >>> p = Portfolio({"USDT": 1000.0}, quote_asset="USDT")
        >>> snap = p.account_snapshot(sender="l1", timestamp=_EPOCH, reports=0, recent_report_ids=())
        >>> snap.cash, snap.positions, snap.last_report_id
        (1000.0, (), '')
        """
        positions = tuple(
            AccountPosition(symbol=s, qty=p.qty, avg_price=p.avg_price, stop_loss=p.stop_loss,
                            take_profit=p.take_profit, opened_at=p.since, mark=self.marks.get(s))
            for s, p in sorted(self._positions.items()))
        return AccountSnapshot(sender=sender, timestamp=timestamp, quote_asset=self.quote_asset,
                               cash=self.balance(self.quote_asset), positions=positions, reports=reports,
                               recent_report_ids=tuple(recent_report_ids), sequence=sequence)
