"""The real order path: BinanceExecutor drives python-binance's AsyncClient against the local replay exchange
on 127.0.0.1 (signed requests, MARKET fills from the real candles, exchange-side stops and OCOs)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import pytest

from l1_operational.binance_executor import BinanceExecutor, client_order_id, reason_for, summarize_fills
from l1_operational.binance_replay_server import BinanceReplayServer
from l1_operational.journal import Journal
from l2_tactical.clock import SimulatedClock
from l2_tactical.config import L2Config
from l2_tactical.errors import ConfigError
from l2_tactical.messages import ExecutionStatus, ReasonCode, Side
from tests.l1_support import BTC_1H, ETH_1H, bar_at, intent_after, utc

CFG = L2Config.default()
LIMITS = CFG.symbols
KEY = "tEstKeyAbCdEfGh0123456789vWxYz"
SECRET = "tEstSecretZyXwVu9876543210kLmN"
pytestmark = pytest.mark.timeout(60)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


@pytest.fixture(autouse=True)
def binance_env(monkeypatch):
    """Keys come from the environment only (and are test strings the local server knows)."""
    monkeypatch.setenv("BINANCE_API_KEY", KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", SECRET)


@contextlib.asynccontextmanager
async def exchange(tmp_path: Path, start: str, *, secret: str = SECRET, usdt: float = 10_000.0):
    """A local exchange at ``start`` and a TESTNET BinanceExecutor on it, journaling to SQLite."""
    async with BinanceReplayServer([BTC_1H, ETH_1H], limits=LIMITS, start=start, api_key=KEY, api_secret=SECRET,
                                   balances={"USDT": usdt}) as server:
        journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
        env = {"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": secret} if secret != SECRET else None
        executor = BinanceExecutor.from_config(CFG, mode="TESTNET", journal=journal, clock=SimulatedClock(utc(start)),
                                               rest_url=server.rest_url, env=env)
        assert urlparse(executor.base_url).hostname == "127.0.0.1"      # never a real Binance host in tests
        try:
            yield server, executor
        finally:
            await executor.close()
            journal.close()


def orders(server, otype=None):
    return [o for o in server.account.orders if otype in (None, o.type)]


def test_executor_base_urls_are_loopback_in_tests_and_binance_hosts_otherwise(tmp_path):
    async def scenario():
        async with exchange(tmp_path, "2020-03-12T10:00:00Z") as (server, executor):
            await executor.start()
            return executor.base_url, executor.client.API_URL, executor.client.API_TESTNET_URL, server.signed

    base, api, testnet_api, signed = run(scenario())
    assert urlparse(base).hostname == urlparse(api).hostname == urlparse(testnet_api).hostname == "127.0.0.1"
    assert signed and all(path.startswith("/api/v3/") for _, path, _ in signed)   # the client really went there
    journal = Journal(f"sqlite:///{tmp_path / 'hosts.sqlite'}")
    try:
        for mode, host in (("TESTNET", "testnet.binance.vision"), ("LIVE", "api.binance.com")):
            real = BinanceExecutor.from_config(CFG, mode=mode, journal=journal, clock=SimulatedClock(utc(START_A)))
            assert urlparse(real.base_url).hostname == host                   # (constructed only, never started)
    finally:
        journal.close()


START_A = "2020-03-12T10:00:00Z"  # the bar L1 trades in opens at 7,354.99, then BTC crashes to 5,550


def test_market_buy_is_filled_from_binance_fills_and_protected_by_a_stop(tmp_path):
    decided = bar_at(BTC_1H, "2020-03-12T09:00:00Z")
    intent = intent_after(decided, qty=0.01, stop_pct=0.05)

    async def scenario():
        async with exchange(tmp_path, START_A) as (server, executor):
            await executor.start()
            report = await executor.execute(intent)
            return report, server, executor.portfolio.snapshot(), executor.journal.fills()

    report, server, portfolio, fills = run(scenario())
    market, stop = orders(server, "MARKET"), orders(server, "STOP_LOSS_LIMIT")
    assert len(market) == 1 and market[0].client_id == client_order_id(intent.order_id)
    binance_fills = market[0].fills                    # what the exchange answered, folded by hand here
    assert len(binance_fills) == 2
    qty = sum(float(f["qty"]) for f in binance_fills)
    avg = sum(float(f["qty"]) * float(f["price"]) for f in binance_fills) / qty
    base_fee = sum(float(f["commission"]) for f in binance_fills)
    assert {f["commissionAsset"] for f in binance_fills} == {"BTC"}
    assert report.status is ExecutionStatus.FILLED and report.executed_qty == pytest.approx(0.01)
    assert report.avg_price == pytest.approx(avg) and avg >= server.price("BTCUSDT") == decided.close + 0.78
    assert report.fees == pytest.approx(base_fee * avg)
    assert report.slippage_bps == pytest.approx((avg - intent.price) / intent.price * 1e4) and report.slippage_bps > 0
    # the stop protects the whole net position on the exchange
    assert len(stop) == 1 and stop[0].status == "NEW" and stop[0].side == "SELL"
    assert stop[0].qty == pytest.approx(0.01 - base_fee)
    assert stop[0].stop_price == pytest.approx(round(intent.stop_loss, 2)) and stop[0].price < stop[0].stop_price
    assert server.account.locked["BTC"] == pytest.approx(stop[0].qty)
    # journal and portfolio agree with the exchange
    assert [f.order_id for f in fills] == [intent.order_id] and fills[0].qty == pytest.approx(0.01 - base_fee)
    assert portfolio["balances"]["BTC"] == pytest.approx(server.account.free["BTC"] + server.account.locked["BTC"])
    assert portfolio["balances"]["USDT"] == pytest.approx(server.account.free["USDT"])


def test_exchange_side_stop_fill_becomes_a_stop_loss_exit_on_the_next_sync(tmp_path):
    intent = intent_after(bar_at(BTC_1H, "2020-03-12T09:00:00Z"), qty=0.01, stop_pct=0.05)

    async def scenario():
        async with exchange(tmp_path, START_A) as (server, executor):
            await executor.start()
            await executor.execute(intent)
            executor.drain()
            server.advance("BTCUSDT")                      # the 10:00 bar trades down to 5,550
            exits = await executor.sync()
            return exits, server, executor.portfolio.snapshot()

    exits, server, portfolio = run(scenario())
    stop = orders(server, "STOP_LOSS_LIMIT")[0]
    assert stop.status == "FILLED"
    assert len(exits) == 1 and exits[0].reason_code is ReasonCode.STOP_LOSS_HIT and exits[0].side is Side.SELL
    assert exits[0].avg_price == pytest.approx(float(stop.fills[0]["price"]))
    assert exits[0].fees == pytest.approx(float(stop.fills[0]["commission"]))          # a sell pays in USDT
    assert portfolio["positions"] == {} and portfolio["balances"]["BTC"] == pytest.approx(0.0, abs=1e-12)
    assert portfolio["balances"]["USDT"] == pytest.approx(server.account.free["USDT"])


def test_take_profit_makes_an_oco_and_the_take_profit_leg_closes_the_position(tmp_path):
    decided = bar_at(BTC_1H, "2020-03-12T10:00:00Z")           # closes at 6,014.90 after the crash
    intent = intent_after(decided, qty=0.02, stop_pct=0.05, take_profit=6300.0)

    async def scenario():
        async with exchange(tmp_path, "2020-03-12T11:00:00Z") as (server, executor):
            await executor.start()
            await executor.execute(intent)
            legs = [(o.type, o.status, o.list_id) for o in orders(server) if o.type != "MARKET"]
            paths = [path for _, path, _ in server.signed]
            server.advance("BTCUSDT")                      # the 11:00 bar: low 5,750 > stop, high 6,466 > 6,300
            exits = await executor.sync()
            return legs, paths, exits, server

    legs, paths, exits, server = run(scenario())
    assert "/api/v3/orderList/oco" in paths
    assert sorted(legs) == [("LIMIT_MAKER", "NEW", 1), ("STOP_LOSS_LIMIT", "NEW", 1)]
    assert len(exits) == 1 and exits[0].reason_code is ReasonCode.TAKE_PROFIT_HIT
    assert exits[0].avg_price == pytest.approx(6300.0)
    assert {o.type: o.status for o in orders(server) if o.list_id == 1} == {"LIMIT_MAKER": "FILLED",
                                                                            "STOP_LOSS_LIMIT": "EXPIRED"}


def test_duplicate_order_id_is_not_placed_twice(tmp_path):
    intent = intent_after(bar_at(BTC_1H, "2020-03-12T09:00:00Z"), qty=0.01)

    async def scenario():
        async with exchange(tmp_path, START_A) as (server, executor):
            await executor.start()
            first = await executor.execute(intent)
            second = await executor.execute(intent)
            return first, second, server

    first, second, server = run(scenario())
    assert first.status is ExecutionStatus.FILLED
    assert second.status is ExecutionStatus.REJECTED and second.reason_code is ReasonCode.DUPLICATE_ORDER
    assert len(orders(server, "MARKET")) == 1


def test_an_order_binance_already_has_is_recognised_by_its_client_order_id_after_a_restart(tmp_path):
    """L1 journaled the order, Binance filled it, then L1 died before journaling the fill."""
    intent = intent_after(bar_at(BTC_1H, "2020-03-12T09:00:00Z"), qty=0.01)

    async def scenario():
        from binance import AsyncClient

        async with exchange(tmp_path, START_A) as (server, executor):
            await executor.start()
            assert executor.submit(intent) is None                  # accepted and journaled, not sent yet
            await executor.close()
            client = AsyncClient(KEY, SECRET)
            client.API_URL = server.rest_url + "/api"
            try:                                                   # "it reached Binance before the crash"
                await client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01000",
                                          newClientOrderId=client_order_id(intent.order_id))
            finally:
                await client.close_connection()
            restarted = BinanceExecutor.from_config(CFG, mode="TESTNET", journal=executor.journal,
                                                    clock=executor.clock, rest_url=server.rest_url)
            try:
                await restarted.start()
                return restarted.drain(), server, restarted.journal.fills(), restarted.pending()
            finally:
                await restarted.close()

    reports, server, fills, pending = run(scenario())
    market = orders(server, "MARKET")
    assert len(market) == 1                                           # not placed a second time
    assert [r.order_id for r in reports] == [intent.order_id] and reports[0].status is ExecutionStatus.FILLED
    avg = market[0].quote / market[0].executed
    assert reports[0].avg_price == pytest.approx(avg) and fills[0].price == pytest.approx(avg)
    assert pending == [] and [o.status for o in orders(server, "STOP_LOSS_LIMIT")] == ["NEW"]


def test_a_stop_binance_refuses_makes_l1_close_the_position_at_market(tmp_path):
    """A stop the price has already crossed would trigger at once: Binance refuses it; L1 never stays unprotected."""
    decided = bar_at(BTC_1H, "2020-03-12T11:00:00Z")       # closes 6,067.01; the next bar opens at 6,064.27
    intent = intent_after(decided, qty=0.01, stop_pct=0.0002)

    async def scenario():
        async with exchange(tmp_path, "2020-03-12T12:00:00Z") as (server, executor):
            await executor.start()
            await executor.execute(intent)
            return executor.drain(), server, executor.portfolio.snapshot()

    reports, server, portfolio = run(scenario())
    assert [r.reason_code for r in reports] == [ReasonCode.OK, ReasonCode.STOP_REFUSED]
    assert [(o.type, o.side, o.status) for o in orders(server)] == [("MARKET", "BUY", "FILLED"),
                                                                     ("MARKET", "SELL", "FILLED")]
    assert portfolio["positions"] == {}


def test_order_manager_rejections_never_reach_binance(tmp_path):
    intent = intent_after(bar_at(BTC_1H, "2020-03-12T09:00:00Z"), qty=0.2)     # 0.2 BTC > max_qty 0.05

    async def scenario():
        async with exchange(tmp_path, START_A) as (server, executor):
            await executor.start()
            return await executor.execute(intent), server

    report, server = run(scenario())
    assert report.reason_code is ReasonCode.MAX_SYMBOL_QTY and orders(server) == []


def test_bad_secret_gives_a_clear_error_without_the_secret(tmp_path):
    wrong = "wR0ngSecretWr0ngSecretWr0ng"

    async def scenario():
        async with exchange(tmp_path, START_A, secret=wrong) as (_server, executor):
            await executor.start()

    with pytest.raises(ConfigError) as err:
        run(scenario())
    text = str(err.value)
    assert "-1022" in text and "BINANCE_API_SECRET" in text and wrong not in text and SECRET not in text


@pytest.mark.parametrize(("headers", "sign_with", "code", "status"), [
    ({"X-MBX-APIKEY": KEY}, "another-secret", -1022, 400),
    ({}, SECRET, -2014, 401),
    ({"X-MBX-APIKEY": "some-other-key"}, SECRET, -2015, 401),
])
def test_replay_exchange_rejects_unsigned_or_badly_signed_requests(headers, sign_with, code, status):
    async def scenario():
        async with BinanceReplayServer([BTC_1H], limits=LIMITS, start=START_A, api_key=KEY,
                                       api_secret=SECRET) as server, aiohttp.ClientSession() as http:
            query = "timestamp=1584007200000"
            signature = hmac.new(sign_with.encode(), query.encode(), hashlib.sha256).hexdigest()
            resp = await http.get(f"{server.rest_url}/api/v3/account?{query}&signature={signature}", headers=headers)
            return resp.status, await resp.json()

    got_status, body = run(scenario())
    assert (got_status, body["code"]) == (status, code) and body["msg"]


def test_api_key_and_secret_never_reach_logs_reports_or_the_journal(tmp_path, caplog):
    intent = intent_after(bar_at(BTC_1H, "2020-03-12T09:00:00Z"), qty=0.01, stop_pct=0.05)

    async def scenario():
        async with exchange(tmp_path, START_A) as (server, executor):
            await executor.start()
            executor.client.verbose = True                    # python-binance's own request/response debug log
            logging.getLogger("l1_operational.test").warning("a careless line: key=%s secret=%s", KEY, SECRET)
            reports = [await executor.execute(intent)]
            server.advance("BTCUSDT")
            reports += await executor.sync()
            return reports, executor.summary()

    with caplog.at_level(logging.DEBUG):
        reports, summary = run(scenario())
    assert "a careless line: key=*** secret=***" in caplog.text      # the filter was on
    assert any("Response" in r.getMessage() for r in caplog.records if r.name.startswith("binance"))
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("journal.sqlite*"))
    for secret in (KEY, SECRET):
        assert secret not in caplog.text and secret not in str(summary)
        assert all(secret not in r.to_json() for r in reports)
        assert secret.encode() not in stored


def test_reason_codes_of_binance_refusals():
    assert reason_for(-2010, "Account has insufficient balance for requested action.") is \
        ReasonCode.INSUFFICIENT_BALANCE
    assert reason_for(-1013, "Filter failure: MIN_NOTIONAL") is ReasonCode.MIN_NOTIONAL
    assert reason_for(-1013, "Filter failure: NOTIONAL") is ReasonCode.MIN_NOTIONAL
    assert reason_for(-1013, "Filter failure: LOT_SIZE") is ReasonCode.INVALID_QTY
    assert reason_for(-1121, "Invalid symbol.") is ReasonCode.UNKNOWN_SYMBOL
    assert reason_for(-2010, "Market is closed.") is ReasonCode.EXCHANGE_REJECTED


def test_fills_in_another_commission_asset_are_averaged_but_not_valued():
    s = summarize_fills([{"price": "10", "qty": "3", "commission": "0.1", "commissionAsset": "BNB"},
                         {"price": "20", "qty": "1", "commission": "0.2", "commissionAsset": "USDT"}],
                        Side.SELL, "ETH", "USDT")
    assert (s.executed, s.avg_price, s.fee, s.base_delta) == (4.0, 12.5, 0.2, -4.0)


# ------------------------------------------------------------------ the L1 process


@contextlib.contextmanager
def exchange_in_thread(start: str):
    """The local exchange on its own event loop (the L1 process under test runs asyncio.run itself)."""
    import threading

    server = BinanceReplayServer([BTC_1H, ETH_1H], limits=LIMITS, start=start, api_key=KEY, api_secret=SECRET,
                                 balances={"USDT": 5_000.0})
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(server.stop())
        loop.close()


def l1_args(tmp_path, *extra):
    return ["--feed", f"replay:{BTC_1H}", "--start", "2020-03-12T06:00:00Z", "--end", "2020-03-12T09:00:00Z",
            "--bus", "memory://binance-test", "--journal", f"sqlite:///{tmp_path / 'l1.sqlite'}",
            "--metrics-csv", str(tmp_path / "metrics.csv"), "--linger", "0", *extra]


def test_l1_process_runs_testnet_mode_with_orders_to_the_local_exchange(tmp_path, monkeypatch, capsys):
    import json

    from l1_operational.cli_entry import main

    monkeypatch.setenv("BINANCE_MODE", "TESTNET")
    with exchange_in_thread(START_A) as server:
        code = main(l1_args(tmp_path, "--mode", "TESTNET", "--confirm-live", "--order-url", server.rest_url))
        signed = list(server.signed)
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["mode"] == "TESTNET" and summary["balances"]["USDT"] == 5_000.0   # the exchange's account
    assert ("GET", "/api/v3/account") in {(m, p) for m, p, _ in signed}
    assert KEY not in out + err and SECRET not in out + err


@pytest.mark.parametrize(("env_mode", "extra", "needle"), [
    (None, ["--mode", "LIVE", "--confirm-live"], "BINANCE_MODE=LIVE"),
    ("LIVE", ["--mode", "LIVE"], "--confirm-live"),
    ("LIVE", ["--mode", "TESTNET", "--confirm-live"], "BINANCE_MODE=TESTNET"),
    ("LIVE", ["--mode", "LIVE", "--confirm-live", "--order-url", "https://binance.example.com"], "--order-url"),
    ("LIVE", ["--mode", "LIVE", "--confirm-live", "--order-url", "http://api.binance.com"], "--order-url"),
])
def test_l1_process_refuses_real_order_routing_without_every_opt_in(tmp_path, monkeypatch, capsys, env_mode, extra,
                                                                     needle):
    from l1_operational.cli_entry import main

    if env_mode is None:
        monkeypatch.delenv("BINANCE_MODE", raising=False)
    else:
        monkeypatch.setenv("BINANCE_MODE", env_mode)
    code = main(l1_args(tmp_path, *extra))
    out, err = capsys.readouterr()
    assert code == ConfigError.exit_code and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err
    assert KEY not in err and SECRET not in err


def test_bus_adapter_routes_bus_orders_to_binance_and_reports_fills_and_exchange_stop_exits(tmp_path):
    import uuid

    from l1_operational.binance_executor import BinanceBusAdapter
    from l2_tactical.bus import Topic, open_bus

    decided, crash = bar_at(BTC_1H, "2020-03-12T09:00:00Z"), bar_at(BTC_1H, START_A)
    intent = intent_after(decided, qty=0.01, stop_pct=0.05)

    async def wait_for(cond, what):
        for _ in range(500):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}")

    async def scenario():
        async with exchange(tmp_path, START_A) as (server, executor):
            url, fast = f"memory://binance-{uuid.uuid4().hex[:8]}", {"retry_base_seconds": 0.01, "max_deliveries": 3}
            l1_bus = open_bus(url, prefix="b", group="l1", consumer="l1-1", clock=executor.clock, **fast)
            l2_bus = open_bus(url, prefix="b", group="l2", consumer="l2-1", clock=executor.clock, **fast)
            reports = []

            async def on_report(message):
                reports.append(message)

            adapter = BinanceBusAdapter(l1_bus, executor, heartbeat_seconds=60.0)
            await l2_bus.subscribe(Topic.L1_REPORTS, on_report, dedup=False)
            await adapter.start()
            try:
                await l2_bus.publish(Topic.L2_ORDERS, intent)
                await wait_for(lambda: reports, "the fill report")
                server.advance("BTCUSDT")                                # the exchange's stop fills...
                await adapter.on_bar(crash)                              # ...and L1 hears of it on the next bar
                await wait_for(lambda: len(reports) >= 2, "the stop exit report")
            finally:
                await adapter.stop()
                await l1_bus.close()
                await l2_bus.close()
            return reports, executor.journal.reports(unpublished_only=True)

    reports, unpublished = run(scenario())
    assert [(r.order_id == intent.order_id, r.status, r.reason_code) for r in reports] == [
        (True, ExecutionStatus.FILLED, ReasonCode.OK), (False, ExecutionStatus.FILLED, ReasonCode.STOP_LOSS_HIT)]
    assert unpublished == []


@pytest.mark.parametrize(("url", "allowed"), [
    ("http://127.0.0.1:8765", True), ("http://localhost:9000", True), ("http://[::1]:8765", True),
    ("https://api.binance.com", True), ("https://testnet.binance.vision", True),
    ("http://api.binance.com", False), ("https://binance.com.evil.example", False), ("https://10.0.0.5", False),
    ("ftp://127.0.0.1", False),
])
def test_signed_requests_only_go_to_binance_over_https_or_to_loopback(url, allowed):
    from l1_operational.live_gate import check_order_url

    if allowed:
        assert check_order_url(url) == url
    else:
        with pytest.raises(ConfigError, match="--order-url"):
            check_order_url(url)
