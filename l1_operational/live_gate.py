"""Safety around real exchange access: the explicit opt-in for TESTNET/LIVE, and secret redaction in logs.

* PAPER is the default. TESTNET or LIVE is granted only when BOTH the environment says so
  (``BINANCE_MODE=TESTNET`` / ``BINANCE_MODE=LIVE``) AND the caller passes the confirmation
  flag (``--confirm-live``). Anything else is a :class:`ConfigError` naming what is missing.
* Signed requests (they carry the API key) only go to Binance's own hosts over https or to a
  loopback exchange (the local replay server): :func:`check_order_url`.
* API keys come from the environment only (``BINANCE_API_KEY``, ``BINANCE_API_SECRET``) and
  are never logged: :class:`RedactingFilter` replaces them (and any ``signature=``/API-key
  header value) in every log record with ``***``.

This module reads the environment on purpose: it is the adapter that holds the secrets.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlparse

from l2_tactical.errors import ConfigError

MODES = ("PAPER", "TESTNET", "LIVE")
SECRET_VARS = ("BINANCE_API_KEY", "BINANCE_API_SECRET")
_PATTERNS = (re.compile(r"(signature=)[0-9a-fA-F]+"), re.compile(r"(X-MBX-APIKEY['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"))


def resolve_mode(requested: str, *, confirm: bool, env: Mapping[str, str] | None = None) -> str:
    """The mode to run in; real-exchange modes need the environment AND the confirmation flag.

    >>> resolve_mode("PAPER", confirm=False, env={})
    'PAPER'
    >>> resolve_mode("LIVE", confirm=True, env={"BINANCE_MODE": "PAPER"})
    Traceback (most recent call last):
    ...
    l2_tactical.errors.ConfigError: mode LIVE needs BINANCE_MODE=LIVE in the environment (it is 'PAPER')
    """
    env = os.environ if env is None else env
    mode = requested.upper()
    if mode not in MODES:
        raise ConfigError(f"l1.mode={requested!r}: not one of {MODES}")
    if mode == "PAPER":
        return mode
    if env.get("BINANCE_MODE", "PAPER").upper() != mode:
        raise ConfigError(f"mode {mode} needs BINANCE_MODE={mode} in the environment "
                          f"(it is {env.get('BINANCE_MODE', 'PAPER')!r})")
    if not confirm:
        raise ConfigError(f"mode {mode} needs the explicit confirmation flag --confirm-live")
    missing = [v for v in SECRET_VARS if not env.get(v)]
    if missing:
        raise ConfigError(f"mode {mode} needs {', '.join(missing)} in the environment")
    return mode


BINANCE_DOMAINS = ("binance.com", "binance.vision")


def check_order_url(url: str) -> str:
    """``url`` if signed requests may go there: https on a Binance domain, or http(s) on loopback.

    >>> check_order_url("http://127.0.0.1:8765")
    'http://127.0.0.1:8765'
    >>> check_order_url("http://api.binance.com")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    l2_tactical.errors.ConfigError: --order-url='http://api.binance.com': the API key may only go to https://...
    """
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    binance = parsed.scheme == "https" and any(host == d or host.endswith("." + d) for d in BINANCE_DOMAINS)
    if not (binance or (loopback and parsed.scheme in ("http", "https"))):
        raise ConfigError(f"--order-url={url!r}: the API key may only go to https://*.binance.com / *.binance.vision "
                          "or to a loopback address")
    return url


def api_credentials(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(key, secret) from the environment; never from files, arguments or config."""
    env = os.environ if env is None else env
    return env.get("BINANCE_API_KEY", ""), env.get("BINANCE_API_SECRET", "")


class RedactingFilter(logging.Filter):
    """Replace secrets in a log record's final message with ``***`` (message args included)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        for pattern in _PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def install_redaction(env: Mapping[str, str] | None = None, *, logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach a RedactingFilter for the environment's secrets to every handler of ``logger`` (root)."""
    env = os.environ if env is None else env
    filt = RedactingFilter(env.get(v, "") for v in SECRET_VARS)
    target = logger or logging.getLogger()
    for handler in target.handlers:
        handler.addFilter(filt)
    target.addFilter(filt)
    return filt
