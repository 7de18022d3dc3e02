"""Seed 000's usage example, as written there, on the bundled real candles with the shipped models.

    python examples/seed000_usage.py                      # the last bar of data/BTCUSDT-1h.csv.gz
    python examples/seed000_usage.py --until 2025-08-19T13:00

``generate_signals`` returns the signals of the LAST closed bar of ``market_data``; on many bars
no signal passes the quality filters and the list is empty (``l2 signals --last N`` shows why,
bar by bar). ``--until`` cuts the history there, as a live caller would see it at that time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from l2_tactical import L2Config, SignalGenerator

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "data" / "BTCUSDT-1h.csv.gz"))
    parser.add_argument("--until", help="last bar open time to include (UTC, e.g. 2025-08-19T13:00)")
    args = parser.parse_args()

    config = L2Config.from_file(ROOT / "config" / "l2_config.yaml")
    signal_gen = SignalGenerator(config)
    market_data = pd.read_csv(args.data, parse_dates=["timestamp"], index_col="timestamp")
    if args.until:
        market_data = market_data.loc[: pd.Timestamp(args.until, tz="UTC")]
    regime_context = {"regime": "trending", "strength": 0.8, "preferred_assets": ["BTCUSDT", "ETHUSDT"]}
    signals = signal_gen.generate_signals(market_data=market_data, symbol="BTCUSDT", regime_context=regime_context)
    print(f"{len(signals)} signal(s) for the bar opening {market_data.index[-1]:%Y-%m-%d %H:%M} UTC")
    for signal in signals:
        print(f"Signal: {signal.direction.value} {signal.symbol}")
        print(f"Strength: {signal.strength:.2f}, Confidence: {signal.confidence:.2f}")
        print(f"Source: {signal.source.value}")
        print(f"Metadata: {dict(signal.metadata)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
