"""``l2 risk``: L2's stored risk state (what survives a restart) and the operator's kill-switch reset.

* ``l2 risk show --state FILE``: the stored trading state, equity and peak, the UTC day's
  figures, the positions L2 tracks and the last events (state changes, resets). Opens the file
  read-only (also while an L2 runs on it).
* ``l2 risk reset --state FILE``: clear a stored kill switch (HALTED -> ACTIVE, the equity peak
  restarts at the stored equity; the reset is logged and written to the file's events). Refused
  while an L2 runs on that file: a running L2 holds the file's lock (``FILE.lock``) until it stops.

``l2 paper`` keeps its state with the account it guards, the L1 journal: next to an SQLite journal
(``runs/paper-<run>-l2state.sqlite`` for ``runs/paper-<run>.sqlite``); for another journal
(PostgreSQL, ...) in ``runs/l2-state-<scheme>-<key>.sqlite`` under the working directory, ``<key>``
being 12 hex digits of the SHA-256 of the journal URL without user, password or password-like
query parameters (a rotated password keeps the file; no secret is in the name); without a journal
L2 knows (``--role l2``) per stream prefix, ``runs/l2-state-<prefix>.sqlite``; ``--state`` chooses
the file. It logs the file's absolute path at start and prints it in the summary;
``l2 paper --reset-kill-switch`` resets it before the run starts. A second L2 on the same file
is refused (exit 4).

Exit codes: 0 shown / kill switch reset or not engaged (nothing changed; the line says which),
2 usage, 4 no state file there, one that is empty, not an L2 risk state store or cannot be read,
or (reset) one in use by a running L2 (the message names the file and says which).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from l2_tactical.errors import ConfigError
from l2_tactical.risk_store import RiskStore, StoredRisk

log = logging.getLogger("l2_tactical.risk")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("risk", help="show L2's stored risk state; reset a persisted kill switch",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("show", "reset"), help="show the stored state, or reset the kill switch")
    p.add_argument("--state", required=True, metavar="FILE", help="L2's risk state file (see above)")
    p.set_defaults(func=run)


def add_state_arguments(p: argparse.ArgumentParser) -> None:
    """``l2 paper``'s ``--state`` and ``--reset-kill-switch``."""
    p.add_argument("--state", metavar="FILE", help="L2's risk state file, kept across restarts, one L2 per file "
                   "(default: with the L1 journal: <journal>-l2state.sqlite next to an SQLite one, runs/l2-state-"
                   "<scheme>-<hash of the URL without credentials>.sqlite for another; --role l2: "
                   "runs/l2-state-<prefix>.sqlite; none: no store; `l2 risk --help`)")
    p.add_argument("--reset-kill-switch", action="store_true",
                   help="clear a kill switch (HALTED) kept in the risk state file before starting (logged)")


def run(args: argparse.Namespace) -> int:
    store = RiskStore.existing(args.state, writable=args.action == "reset")
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


_SECRET = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)   # query parameters never hashed nor shown
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306}


def paper_state_path(state: str | None, journal_url: str | None, prefix: str, runs: Path) -> Path | None:
    """Where ``l2 paper`` keeps L2's risk state: ``state`` (``none``: no store), else with the journal
    L2 knows (the state belongs to the account it guards; see the module docstring; none for an
    in-memory journal), else per stream prefix. Never named after a per-run prefix when the journal
    outlives the run.

    >>> paper_state_path(None, "sqlite:///runs/paper-1.sqlite", "l2", Path("runs")).as_posix()
    'runs/paper-1-l2state.sqlite'
    >>> paper_state_path(None, None, "l2:prod", Path("runs")).as_posix()
    'runs/l2-state-l2_prod.sqlite'
    >>> a = paper_state_path(None, "postgresql://l2:s3cret@db.local/acct", "l2-run1", Path("runs"))
    >>> a == paper_state_path(None, "postgresql+psycopg2://l2:rotated@DB.local:5432/acct", "l2-run2", Path("runs"))
    True
    >>> a.name.startswith("l2-state-postgresql-") and "s3cret" not in str(a)
    True
    """
    if state:
        return None if state.lower() == "none" else Path(state)
    if not journal_url:
        return runs / f"l2-state-{re.sub(r'[^A-Za-z0-9_.-]+', '_', prefix)}.sqlite"
    url = urlsplit(journal_url)
    scheme = url.scheme.partition("+")[0].lower()
    if scheme == "sqlite":
        file = journal_url.partition("://")[2].removeprefix("/").partition("?")[0]
        if file in ("", ":memory:"):
            return None  # an account in memory does not outlive the run: nor does its risk state
        journal = Path(file)
        return journal.with_name(journal.stem + "-l2state.sqlite")
    try:
        key = hashlib.sha256(_journal_identity(journal_url).encode()).hexdigest()[:12]
    except ValueError as exc:  # e.g. a port that is not a number
        raise ConfigError(f"--journal {redact_url(journal_url)}: {exc}") from None
    return runs / f"l2-state-{re.sub(r'[^a-z0-9]+', '_', scheme) or 'journal'}-{key}.sqlite"


def _journal_identity(journal_url: str) -> str:
    """The journal's database without credentials: base scheme, host, port (the default made explicit),
    path and the query without password-like parameters."""
    url = urlsplit(journal_url)
    scheme = url.scheme.partition("+")[0].lower()
    port = url.port or _DEFAULT_PORTS.get(scheme) or ""
    query = sorted((k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if not _SECRET.search(k))
    return urlunsplit((scheme, f"{(url.hostname or '').lower()}:{port}", url.path, urlencode(query), ""))


def redact_url(url: str) -> str:
    """``url`` with its password and password-like query parameters shown as ``***`` (for summaries).

    >>> redact_url("postgresql://l2:s3cret@db:5432/acct?sslmode=require&password=x")
    'postgresql://l2:***@db:5432/acct?sslmode=require&password=***'
    >>> redact_url("sqlite:///runs/paper-1.sqlite")
    'sqlite:///runs/paper-1.sqlite'
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(_SECRET.search(k) for k, _ in query):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = [(k, "***" if _SECRET.search(k) else v) for k, v in query]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), parts.fragment))


def open_paper_store(path: Path | None, *, reset: bool) -> RiskStore | None:
    """The store ``l2 paper`` runs with (``reset``: its kill switch cleared first, the line printed)."""
    if path is None:
        if reset:
            log.warning("--reset-kill-switch with --state none: there is no stored state to reset")
        return None
    store = RiskStore(path)
    log.info("L2 risk state: %s (%s)", store.name, "nothing stored yet: L2 starts fresh" if store.load() is None
             else "restored when L1's account is adopted")
    if reset:
        print(reset_line(store, "l2 paper --reset-kill-switch"), flush=True)
    return store
