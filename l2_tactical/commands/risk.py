"""``l2 risk``: L2's stored risk state (what survives a restart) and the operator's kill-switch reset.

* ``l2 risk show --state FILE``: the stored trading state, equity and peak, the UTC day's
  figures, the positions L2 tracks and the last events (state changes, resets).
* ``l2 risk reset --state FILE``: clear a stored kill switch (HALTED -> ACTIVE, the equity peak
  restarts at the stored equity; the reset is logged and written to the file's events). Do it
  while that L2 is stopped: a running L2 rewrites its own state at its next change.

``l2 paper`` keeps its state next to the L1 journal it trades on (``runs/paper-<run>-l2state.sqlite``
for ``runs/paper-<run>.sqlite``; ``--role l2``: ``runs/l2-state-<prefix>.sqlite``; ``--state``
chooses the file) and prints its path in the summary; ``l2 paper --reset-kill-switch`` resets it
before the run starts.

Exit codes: 0 shown / kill switch reset or not engaged (nothing changed; the line says which),
2 usage, 4 no state file there, or one that cannot be read (the message names the file).
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from l2_tactical.risk_store import RiskStore, StoredRisk

log = logging.getLogger("l2_tactical.risk")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("risk", help="show L2's stored risk state; reset a persisted kill switch",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("show", "reset"), help="show the stored state, or reset the kill switch")
    p.add_argument("--state", required=True, metavar="FILE", help="L2's risk state file (see above)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = RiskStore.existing(args.state)
    try:
        if args.action == "show":
            print(describe(store))
            return 0
        print(reset_line(store, "l2 risk reset"))
        return 0
    finally:
        store.close()


def reset_line(store: RiskStore, who: str) -> str:
    """Reset the store's kill switch; the confirmation line (also when it was not engaged)."""
    before = store.reset_kill_switch(who)
    if before is None:
        stored = store.load()
        state = stored.trading_state.value if stored is not None else "nothing stored yet"
        return f"kill switch not engaged in {store.name} (trading state: {state}); nothing changed"
    return (f"kill switch reset in {store.name}: trading HALTED -> ACTIVE, equity peak {before.peak_equity:,.2f} "
            f"-> {before.equity:,.2f} (the next start measures drawdown from there)")


def describe(store: RiskStore) -> str:
    stored = store.load()
    if stored is None:
        return f"{store.name}: nothing stored yet"
    lines = [f"{store.name} (saved {stored.saved_at.isoformat() if stored.saved_at else '?'})", *_state_lines(stored)]
    lines += [f"  {h.symbol}: qty {h.qty:.10g} @ {h.entry_price:,.2f}, {h.bars_held} bars held, opened by "
              f"{h.origin}, entry equity {h.entry_equity:,.2f}" for h in stored.held] or ["  no open position"]
    lines += ["events:", *(f"  {at}  {event}" for at, event in store.events())]
    return "\n".join(lines)


def _state_lines(s: StoredRisk) -> list[str]:
    dd = max(0.0, 1.0 - s.equity / s.peak_equity) if s.peak_equity > 0 else 0.0
    return [f"trading state {s.trading_state.value}  equity {s.equity:,.2f}  peak {s.peak_equity:,.2f}  "
            f"drawdown {dd:.2%}",
            f"day {s.day.isoformat()}: start equity {s.day_start_equity:,.2f}, trades {s.trades_today}, "
            f"daily loss limit {'hit' if s.daily_loss_hit else 'not hit'}",
            "positions L2 tracks:"]


def paper_state_path(state: str | None, journal_url: str | None, prefix: str, runs: Path) -> Path | None:
    """Where ``l2 paper`` keeps L2's risk state: ``state`` (``none``: no store), else next to an SQLite
    journal L2 knows (the state belongs to the account it guards; none for an in-memory journal),
    else per stream prefix.

    >>> paper_state_path(None, "sqlite:///runs/paper-1.sqlite", "l2", Path("runs")).as_posix()
    'runs/paper-1-l2state.sqlite'
    >>> paper_state_path(None, None, "l2:prod", Path("runs")).as_posix()
    'runs/l2-state-l2_prod.sqlite'
    """
    if state:
        return None if state.lower() == "none" else Path(state)
    if journal_url == "sqlite://":
        return None  # an account in memory does not outlive the run: nor does its risk state
    if journal_url and journal_url.startswith("sqlite:///"):
        journal = Path(journal_url.removeprefix("sqlite:///"))
        return journal.with_name(journal.stem + "-l2state.sqlite")
    return runs / f"l2-state-{re.sub(r'[^A-Za-z0-9_.-]+', '_', prefix)}.sqlite"


def open_paper_store(path: Path | None, *, reset: bool) -> RiskStore | None:
    """The store ``l2 paper`` runs with (``reset``: its kill switch cleared first, the line printed)."""
    if path is None:
        if reset:
            log.warning("--reset-kill-switch with --state none: there is no stored state to reset")
        return None
    store = RiskStore(path)
    if reset:
        print(reset_line(store, "l2 paper --reset-kill-switch"), flush=True)
    return store
