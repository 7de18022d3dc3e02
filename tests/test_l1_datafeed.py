"""ReplayFeed over the bundled candles: closed bars only, merged in time, paced at N x real time."""

from __future__ import annotations

import asyncio
import gzip

import pandas as pd
import pytest

from l1_operational.datafeed import ReplayFeed, read_candle_arrays
from l2_tactical.errors import DataError
from tests.l1_support import BTC_1H, BTC_1M, ETH_1M, utc


def collect(feed):
    async def go():
        return [b async for b in feed]
    return asyncio.run(go())


def test_replay_feed_drops_the_possibly_forming_last_1m_bar():
    got = collect(ReplayFeed([BTC_1M], start="2025-08-18T18:20:00Z"))
    tail = pd.read_csv(BTC_1M).tail(2)["timestamp"].tolist()     # ..., 18:26, 18:27 (last, maybe forming)
    assert got[-1].open_time == utc(tail[0]) and utc(tail[1]) not in [b.open_time for b in got]
    assert len(collect(ReplayFeed([BTC_1M], start="2025-08-18T18:20:00Z", drop_last=False))) == len(got) + 1


def test_replay_feed_keeps_the_last_1h_bar_which_is_closed():
    got = collect(ReplayFeed([BTC_1H], start="2025-08-31T20:00:00Z"))
    assert got[-1].open_time == utc("2025-08-31T23:00:00Z")


def test_replay_feed_merges_symbols_in_time_order_with_real_prices():
    got = collect(ReplayFeed([BTC_1M, ETH_1M], start="2025-07-01T00:00:00Z", end="2025-07-01T00:05:00Z"))
    assert [b.symbol for b in got] == ["BTCUSDT", "ETHUSDT"] * 5
    df = pd.read_csv(ETH_1M, index_col="timestamp").loc["2025-07-01T00:00:00Z":"2025-07-01T00:04:00Z"]
    assert [b.close for b in got if b.symbol == "ETHUSDT"] == df["close"].tolist()


def test_replay_feed_paces_bars_at_speed_times_real_time():
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    feed = ReplayFeed([BTC_1M, ETH_1M], speed=600, start="2025-07-01T00:00:00Z", limit=6, sleep=fake_sleep)
    collect(feed)
    assert waits == [pytest.approx(0.1)] * 2            # 60 s bars at 600x; BTC/ETH of one minute: no wait


def test_replay_feed_rejects_bad_input_with_the_file_and_row(tmp_path):
    bad = tmp_path / "BTCUSDT-1h.csv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("timestamp,open,high,low,close,volume\n2020-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
                 "2020-01-01T00:00:00Z,1,2,0.5,1.5,10\n")
    with pytest.raises(DataError, match=r"row 2.*ascending"):
        read_candle_arrays(bad)
    with pytest.raises(DataError, match="file name"):
        read_candle_arrays(tmp_path / "prices.csv")
    with pytest.raises(ValueError, match="speed"):
        ReplayFeed([BTC_1H], speed=-1)


def test_replay_feed_keeps_an_absolute_schedule_so_processing_time_does_not_drift():
    """60 s bars at 600x are due every 0.1 s; a consumer that works 0.03 s per bar still gets bar k at 0.1 k,
    and one that fell 0.25 s behind gets the bars already due at once (no waiting) until it is back on time."""
    now = {"t": 100.0}
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now["t"] += seconds

    async def consume(work: list[float]) -> list[float]:
        got = []
        feed = ReplayFeed([BTC_1M], speed=600, start="2025-07-01T00:00:00Z", limit=len(work), sleep=fake_sleep,
                          monotonic=lambda: now["t"])
        async for _bar in feed:
            got.append(round(now["t"] - 100.0, 9))
            now["t"] += work[len(got) - 1]
        return got

    yielded = asyncio.run(consume([0.03] * 6))
    assert yielded == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert waits == [pytest.approx(0.07)] * 5
    now["t"], waits[:] = 100.0, []
    yielded = asyncio.run(consume([0.25, 0.0, 0.0, 0.0, 0.0]))
    assert yielded == pytest.approx([0.0, 0.25, 0.25, 0.3, 0.4])           # late: bars 1, 2 at once; then on time
