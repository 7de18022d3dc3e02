"""``l2 signals --data FILE --symbol BTCUSDT [--regime trending] [--last N]``: seed 000's example.

Loads the candles (validated), builds a :class:`~l2_tactical.signal_generator.SignalGenerator`
from the configuration (specialists from ``ensemble.models`` through the safe loader; a missing
or refused model is reported and the generator carries on without it) and prints, for the last
``N`` bars (default 1: the seed's ``generate_signals`` on the whole file), every signal that
passed the filters, in the seed's format. ``--json`` prints the signals as JSON lines instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from l2_tactical.commands.common import load_config
from l2_tactical.config import PACKAGE_ROOT
from l2_tactical.errors import ConfigError, L2Error

_INTERNAL_ERROR_EXIT = 70


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``signals`` command to the ``l2`` parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "signals", help="generate tactical signals for the last bar(s) of a candle file",
        description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, metavar="FILE", help="candle file (CSV, CSV.gz, parquet)")
    p.add_argument("--symbol", help="symbol (default: from the file name)")
    p.add_argument("--regime", choices=("trending", "ranging", "volatile"), help="L3's regime")
    p.add_argument("--strength", type=float, default=1.0, help="L3's regime strength in [0, 1] (default 1)")
    p.add_argument("--preferred", default="", metavar="SYM[,SYM]", help="L3's preferred assets")
    p.add_argument("--last", type=int, default=1, metavar="N", help="decide the last N bars (default 1)")
    p.add_argument("--models", type=Path, default=PACKAGE_ROOT, metavar="ROOT",
                   help="folder the ensemble.models paths are relative to (default: the repository)")
    p.add_argument("--json", action="store_true", help="one JSON signal per line on stdout")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except L2Error as exc:
        print(f"l2 signals: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # the CLI never prints a traceback
        print(f"l2 signals: internal error ({type(exc).__name__}: {exc})", file=sys.stderr)
        return _INTERNAL_ERROR_EXIT


def _run(args: argparse.Namespace) -> int:
    from l2_tactical.data.candles import load_candles
    from l2_tactical.finrl_models.ensemble_manager import EnsembleManager
    from l2_tactical.signal_generator import SignalGenerator

    if args.last < 1:
        raise ConfigError(f"--last={args.last}: must be >= 1")
    if not 0.0 <= args.strength <= 1.0:
        raise ConfigError(f"--strength={args.strength}: must be in [0, 1]")
    config = load_config(args)
    candles = load_candles(args.data)
    symbol = args.symbol or candles.symbol
    ensemble = EnsembleManager.from_config(config, root=args.models)
    gen = SignalGenerator(config, ensemble=ensemble, timeframe=candles.timeframe)
    regime = None
    if args.regime:
        preferred = [s.strip() for s in args.preferred.split(",") if s.strip()]
        regime = {"regime": args.regime, "strength": args.strength, **({"preferred_assets": preferred}
                                                                        if preferred else {})}
    if not args.json:
        _print_models(ensemble, candles.timeframe, gen)
    decisions = _decide(gen, candles.frame, symbol, regime, args.last)
    for d in decisions:
        _print_decision(d, args.json)
    return 0


def _decide(gen: Any, frame: Any, symbol: str, regime: Any, last: int) -> list[Any]:
    if last <= 200:
        return list(gen.decisions(frame, symbol, regime, last=last))
    from tqdm import tqdm

    bar = tqdm(total=None, unit="bar", desc="deciding", file=sys.stderr)
    try:
        def tick(remaining: int) -> None:
            if bar.total is None:
                bar.total = remaining + 1
            bar.update(1)

        return list(gen.decisions(frame, symbol, regime, last=last, progress=tick))
    finally:
        bar.close()


def _print_models(ensemble: Any, timeframe: str, gen: Any) -> None:
    plan = gen._plan(timeframe)
    for name in ensemble.names:
        spec = ensemble.specialists[name]
        if spec is None:
            print(f"specialist {name}: unavailable ({ensemble.unavailable[name]})")
        elif name in plan.excluded:
            print(f"specialist {name}: unavailable on {timeframe} bars ({plan.excluded[name]})")
        else:
            print(f"specialist {name}: {spec.algorithm}, {len(spec.feature_names)} features x {spec.window} bars "
                  f"({spec.backend} inference)")


def _print_decision(d: Any, as_json: bool) -> None:
    if as_json:
        for s in d.signals:
            print(s.to_json())
        return
    when = d.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"\n{d.symbol} bar closing {when}: composite exposure {d.exposure:+.3f}, confidence {d.confidence:.2f}"
          f"{'' if d.ensemble else ' (no specialist: technical + pattern only)'}")
    for signal in d.signals:  # seed 000's printout
        print(f"Signal: {signal.direction.value} {signal.symbol}")
        print(f"Strength: {signal.strength:.2f}, Confidence: {signal.confidence:.2f}")
        print(f"Source: {signal.source.value}")
        print(f"Metadata: {json.dumps(dict(signal.metadata), sort_keys=True, default=str)}")
    if not d.signals:
        print("no signal passed the filters")
    for reason in d.reasons:
        print(f"  - {reason}")
