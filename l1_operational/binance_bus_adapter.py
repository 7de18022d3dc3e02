"""BinanceBusAdapter: the L1 bus adapter for a :class:`~l1_operational.binance_executor.BinanceExecutor`.

Everything :class:`~l1_operational.bus_adapter.L1BusAdapter` does, plus the executor's network
work: it connects (``start``) before consuming orders and closes after, and runs
:meth:`BinanceExecutor.sync_into_ready` on every order and bar so fills and protective exits are
published as they happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from l1_operational.bus_adapter import L1BusAdapter

if TYPE_CHECKING:
    from l1_operational.binance_executor import BinanceExecutor
    from l1_operational.datafeed import Bar
    from l2_tactical.messages import Message


class BinanceBusAdapter(L1BusAdapter):
    """L1BusAdapter for a BinanceExecutor: connects it on start and runs its network work on orders and bars."""

    executor: BinanceExecutor  # type: ignore[assignment]

    async def start(self) -> None:
        await self.executor.start()
        await super().start()

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            await self.executor.close()

    async def on_bar(self, bar: Bar) -> None:
        self.executor.portfolio.update_mark(bar.symbol, bar.close)
        await self.executor.sync_into_ready()
        await super().on_bar(bar)

    async def _on_order(self, message: Message) -> None:
        await super()._on_order(message)
        await self.executor.sync_into_ready()
        self._outbox.extend(self.executor.drain())
        await self.flush()
