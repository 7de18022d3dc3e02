"""Real-exchange access needs BINANCE_MODE and --confirm-live; secrets never reach the logs."""

from __future__ import annotations

import logging

import pytest

from l1_operational.cli_entry import main
from l1_operational.live_gate import RedactingFilter, install_redaction, resolve_mode
from l2_tactical.errors import ConfigError

KEYS = {"BINANCE_API_KEY": "k3yABCDEFGHIJ0123456789", "BINANCE_API_SECRET": "s3cretZYXWVUT9876543210"}


@pytest.mark.parametrize("mode", ["TESTNET", "LIVE"])
def test_live_gate_needs_environment_and_confirmation(mode):
    with pytest.raises(ConfigError, match=f"BINANCE_MODE={mode}"):
        resolve_mode(mode, confirm=True, env=KEYS)
    with pytest.raises(ConfigError, match="--confirm-live"):
        resolve_mode(mode, confirm=False, env={**KEYS, "BINANCE_MODE": mode})
    with pytest.raises(ConfigError, match="BINANCE_API_KEY"):
        resolve_mode(mode, confirm=True, env={"BINANCE_MODE": mode})
    assert resolve_mode(mode, confirm=True, env={**KEYS, "BINANCE_MODE": mode}) == mode


def test_live_gate_defaults_to_paper_and_rejects_unknown_modes():
    assert resolve_mode("paper", confirm=False, env={"BINANCE_MODE": "LIVE"}) == "PAPER"
    with pytest.raises(ConfigError, match="not one of"):
        resolve_mode("YOLO", confirm=True, env={})


def test_redacting_filter_hides_keys_signatures_and_headers(caplog):
    logger = logging.getLogger("l1.test.redaction")
    filt = RedactingFilter(KEYS.values())
    logger.addFilter(filt)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("headers %s", {"X-MBX-APIKEY": KEYS["BINANCE_API_KEY"]})
            logger.info("GET /api/v3/order?symbol=BTCUSDT&signature=%s", "ab12cd34ef")
            logger.info("secret in text: %s", KEYS["BINANCE_API_SECRET"])
    finally:
        logger.removeFilter(filt)
    text = caplog.text
    assert KEYS["BINANCE_API_KEY"] not in text and KEYS["BINANCE_API_SECRET"] not in text
    assert "ab12cd34ef" not in text and text.count("***") == 3


def test_install_redaction_reads_the_secrets_from_the_environment(monkeypatch):
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    logger = logging.getLogger("l1.test.install")
    filt = install_redaction(logger=logger)
    try:
        assert filt.redact(f"key={KEYS['BINANCE_API_KEY']}") == "key=***"
    finally:
        logger.removeFilter(filt)


def test_l1_process_refuses_live_mode_without_opt_in(monkeypatch, capsys):
    monkeypatch.delenv("BINANCE_MODE", raising=False)
    code = main(["--feed", "replay:data/BTCUSDT-1h.csv.gz", "--mode", "LIVE", "--bus", "memory://gate"])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code and "BINANCE_MODE=LIVE" in err and "Traceback" not in err
