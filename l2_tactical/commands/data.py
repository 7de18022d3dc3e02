"""``l2 data check FILE...``: validate candle files and report gaps and defects.

Exit status: 0 when every file is usable, otherwise the highest error exit code
(4, :attr:`DataError.exit_code`, for an unusable, missing or unreadable file).
Each unusable file gets exactly one line on stderr; there is never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pandas as pd

from l2_tactical.data.candles import CandleReport, check_candles
from l2_tactical.errors import L2Error

_INTERNAL_ERROR_EXIT = 1
_SHOWN_GAPS = 5
_SHOWN_ZERO_VOLUME = 10


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``data`` command (with its ``check`` subcommand) to the ``l2`` parser."""
    data: argparse.ArgumentParser = subparsers.add_parser("data", help="inspect and validate candle files")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate candle files; report rows, span, gaps, zero-volume bars",
        description="Validate candle files (CSV, CSV.gz, parquet) and report gaps and defects.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="candle file(s) to check")
    check.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    check.set_defaults(func=run)
    return data


def run(args: argparse.Namespace) -> int:
    """Check every file in ``args.files``; return the process exit status."""
    status = 0
    results: list[dict[str, object]] = []
    for path in args.files:
        try:
            report = check_candles(path)
        except L2Error as exc:
            status = max(status, exc.exit_code)
            results.append(_report_error(path, str(exc)))
            continue
        except Exception as exc:  # the CLI must never print a traceback, even on a bug
            status = max(status, _INTERNAL_ERROR_EXIT)
            results.append(_report_error(path, f"{path}: internal error ({type(exc).__name__}: {exc})"))
            continue
        results.append(report.to_dict())
        if not args.json:
            print(format_report(report))
    if args.json:
        print(json.dumps(results, indent=2))
    return status


def _report_error(path: str, message: str) -> dict[str, object]:
    line = " ".join(message.split())
    print(f"error: {line}", file=sys.stderr)
    return {"path": path, "ok": False, "error": line}


def format_report(report: CandleReport) -> str:
    """Human-readable, several-line summary of one usable file."""
    lines = [
        f"{report.path}: OK",
        f"  symbol {report.symbol}, timeframe {report.timeframe}, {report.rows} rows",
        f"  first bar {_iso(report.first)}, last bar {_iso(report.last)}",
        f"  gaps: {len(report.gaps)} ({report.missing_bars} missing bars)",
    ]
    for gap in report.largest_gaps(_SHOWN_GAPS):
        lines.append(f"    {_iso(gap.before)} -> {_iso(gap.after)}: {gap.missing} missing")
    if len(report.gaps) > _SHOWN_GAPS:
        lines.append(f"    ... and {len(report.gaps) - _SHOWN_GAPS} smaller gaps")
    zero = [_iso(t) for t in report.zero_volume]
    shown = ", ".join(zero[:_SHOWN_ZERO_VOLUME]) + (", ..." if len(zero) > _SHOWN_ZERO_VOLUME else "")
    lines.append(f"  zero-volume bars: {len(zero)}" + (f" ({shown})" if zero else ""))
    lines.append("  defects: " + ("; ".join(report.defects) if report.defects else "none"))
    return "\n".join(lines)


def _iso(ts: pd.Timestamp) -> str:
    return str(ts.strftime("%Y-%m-%dT%H:%M:%SZ"))


def main(argv: list[str] | None = None) -> int:
    """Run ``data check`` standalone: ``python -m l2_tactical.commands.data check FILE...``."""
    parser = argparse.ArgumentParser(prog="l2")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
