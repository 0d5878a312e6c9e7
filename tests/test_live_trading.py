"""Guarded live trading against a local stand-in exchange; keys never leak; polling feed."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, ClassVar

import ccxt
import pandas as pd
import pytest
from rich.console import Console

from nexlify.cli import build_parser, main
from nexlify.commands.paper import start_paper
from nexlify.errors import ConfigError, DataError
from nexlify.live.polling import PollingFeed
from nexlify.live.secrets import KEY_ENV, SECRET_ENV, Credentials
from tests.test_paper_agreement import db_rows
from tests.test_paper_support import PAIRS, candles, save_model, write_candles

FAKE_KEY = "nxKEY-7f3a9c1e5b2d4f6a8c0e"
FAKE_SECRET = "nxSECRET-0b1d3f5a7c9e2a4c6e8f"


class StandInExchange:
    """ccxt's order and candle API over in-memory candles; the first sell fails loudly."""

    id = "standin"

    def __init__(
        self,
        config: dict[str, Any],
        rows: dict[str, list[list[float]]] | None = None,
        now_ms: int = 0,
    ) -> None:
        self.config = config
        self.rows = rows or {}
        self.now = now_ms
        self.orders: list[tuple[str, str, float, dict[str, Any]]] = []
        self.failures = {"sell": 1}
        self.network_failures = 0
        self.timeouts = 0
        self.lost_replies = 0
        self.partial_next = False
        self.partial: dict[str, float] = {}

    def milliseconds(self) -> int:
        return self.now

    def fetch_time(self) -> int:
        return self.now + 3000  # the exchange clock runs 3 s ahead of ours

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, limit: int) -> list[list[float]]:
        if self.network_failures:
            self.network_failures -= 1
            raise ccxt.NetworkError("binance GET https://api.example/klines timed out")
        # the still-open candle is served too, as real exchanges do
        rows = [r for r in self.rows[symbol] if since <= r[0] <= self.now + 3000]
        return rows[:limit]

    # no resting stop orders: protection falls back to the simulator's bar-close exits
    has: ClassVar[dict[str, bool]] = {"createStopLossOrder": False, "createTakeProfitOrder": False}

    def load_markets(self) -> dict[str, Any]:
        limits = {"amount": {"min": 1e-5}, "cost": {"min": 5.0}}
        return {p: {"base": p.split("/")[0], "spot": True, "limits": limits} for p in PAIRS}

    def amount_to_precision(self, symbol: str, amount: float) -> str:
        return f"{int(amount * 1e5) / 1e5:.5f}"

    def price_to_precision(self, symbol: str, price: float) -> str:
        return f"{price:.2f}"

    def fetch_balance(self) -> dict[str, Any]:
        held: dict[str, float] = {}
        for symbol, side, amount, _ in self.orders:
            base = symbol.split("/")[0]
            held[base] = held.get(base, 0.0) + (amount if side == "buy" else -amount)
        return {"free": {"USDT": 10_000.0}, "total": {"USDT": 10_000.0, **held}}

    def fetch_open_orders(self, symbol: str, *args: Any) -> list[dict[str, Any]]:
        return []

    def fetch_order(self, id: str | None, symbol: str, params: Any = None) -> dict[str, Any]:
        cid = (params or {}).get("clientOrderId")
        for k, (_, side, amount, p) in enumerate(self.orders):
            if p.get("clientOrderId") == cid or str(k + 1) == id:
                filled = self.partial.get(p.get("clientOrderId"), amount)
                return {
                    "id": str(k + 1),
                    "status": "closed",
                    "filled": filled,
                    "side": side,
                    "average": 100.0,
                    "fees": [{"currency": "USDT", "cost": 0.1}],
                }
        raise ccxt.OrderNotFound(f"standin order {id or cid} does not exist")

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if self.failures.get(side):
            self.failures[side] -= 1
            raise ccxt.AuthenticationError(
                f'binance {{"code":-2015,"msg":"Invalid API-key {self.config["apiKey"]}, IP, or '
                f'permissions; signature for secret {self.config["secret"]}"}}'
            )
        if self.timeouts:  # the request never reaches the exchange
            self.timeouts -= 1
            raise ccxt.RequestTimeout("standin POST /order timed out")
        self.orders.append((symbol, side, amount, dict(params or {})))
        if self.lost_replies:  # the order is placed, its reply is lost
            self.lost_replies -= 1
            raise ccxt.RequestTimeout("standin POST /order read timed out")
        if self.partial_next and side == "buy":
            self.partial_next = False
            self.partial[params["clientOrderId"]] = amount / 2  # type: ignore[index]
            return {
                "id": str(len(self.orders)),
                "status": "closed",
                "filled": amount / 2,
                "average": 100.0,
                "fees": [],
            }
        return {
            "id": str(len(self.orders)),
            "status": "closed",
            "filled": amount,
            "average": 100.0,
            "fees": [],
        }


def _live_args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    model = save_model(tmp_path / "model.pt")
    files = write_candles(tmp_path / "data", candles())
    return build_parser().parse_args(
        [
            "paper",
            "--model",
            str(model),
            "--feed",
            "replay",
            "--data",
            *files,
            "--db",
            str(tmp_path / "live.db"),
            "--no-view",
            "--log",
            str(tmp_path / "paper.log"),
            "--live",
            "--allow-no-edge",  # a hand-made model: no verdict of the no-edge gate
            *extra,
        ]
    )


def test_live_orders_mirror_the_simulator_and_keys_never_leak(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    caplog.set_level(logging.DEBUG)
    exchanges: list[StandInExchange] = []

    def factory(exchange_id: str, config: dict[str, Any]) -> StandInExchange:
        exchanges.append(StandInExchange(config))
        return exchanges[-1]

    args = _live_args(tmp_path, "--i-understand-this-trades-real-money")
    assert start_paper(args, Console(stderr=True), exchange_factory=factory) == 0
    exchange = exchanges[0]
    assert exchange.config["apiKey"] == FAKE_KEY  # keys reach the exchange object only
    db = tmp_path / "live.db"
    live = db_rows(db, "SELECT * FROM orders WHERE kind = 'live'")
    assert {o["status"] for o in live} == {"filled", "failed"}
    assert {o["role"] for o in live} == {"entry", "exit"}  # no resting orders on this venue
    said = db_rows(db, "SELECT message FROM events WHERE kind = 'protection'")
    assert "supports no resting stop orders" in said[0]["message"]
    assert len(exchange.orders) >= 4
    assert {o[0] for o in exchange.orders} <= set(PAIRS)
    sim_buys = db_rows(db, "SELECT * FROM orders WHERE kind='sim' AND side='buy'")
    assert sum(1 for o in exchange.orders if o[1] == "buy") <= len(sim_buys)
    failed = [o for o in live if o["status"] == "failed"]
    assert "***" in failed[0]["error"] and "Invalid API-key" in failed[0]["error"]
    # No log line, file, printed text or stored value holds a key or secret.
    texts = [r.getMessage() for r in caplog.records] + list(capsys.readouterr())
    texts += [str(r.exc_text or "") for r in caplog.records]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    assert (tmp_path / "paper.log").read_text().count("failed") >= 1
    for text in texts:
        assert FAKE_KEY not in text and FAKE_SECRET not in text
    assert FAKE_KEY not in repr(Credentials.from_environment())


def test_live_needs_the_confirmation_flag_and_keys_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    args = _live_args(tmp_path)
    with pytest.raises(ConfigError, match="i-understand-this-trades-real-money"):
        start_paper(args, Console(stderr=True))
    args.confirm_real_money = True
    with pytest.raises(ConfigError, match=KEY_ENV) as info:
        start_paper(args, Console(stderr=True))
    assert FAKE_SECRET not in str(info.value)
    assert main(["paper", "--model", args.model, "--live", "--db", str(tmp_path / "x.db")]) == 2
    assert not (tmp_path / "live.db").exists()


def _rows(n: int, start_ms: int) -> dict[str, list[list[float]]]:
    frames = candles(n)
    out = {}
    for pair, frame in frames.items():
        ms = pd.DatetimeIndex(frame.index).as_unit("ms").asi8
        values = frame[["open", "high", "low", "close", "volume"]].to_numpy()
        out[pair] = [
            [float(t - ms[0] + start_ms), *map(float, v)] for t, v in zip(ms, values, strict=True)
        ]
    return out


def test_polling_feed_closed_candles_backoff_skew_and_gaps() -> None:
    hour = 3_600_000
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % hour
    rows = _rows(400, t0)
    del rows["ETH/USDT"][380]  # ETH has no candle at bar 380
    exchange = StandInExchange({}, rows, now_ms=t0 + 390 * hour + 10 * 60_000)  # bar 390 open
    sleeps: list[float] = []
    feed = PollingFeed(exchange, PAIRS, "1h", history_bars=500, sleep=sleeps.append)
    assert feed.offset_ms == 3000  # measured with fetch_time
    bars = feed.initial_bars()
    assert bars[-1].time * 1000 == t0 + 389 * hour  # the open bar 390 is not delivered
    assert set(bars[380].candles) == {"BTC/USDT"}  # the missing ETH candle stays missing
    exchange.network_failures = 2
    exchange.now += hour
    more = feed.next_bars(bars[-1].time)
    assert more is not None and [b.time * 1000 for b in more] == [t0 + 390 * hour]
    assert sleeps[:2] == [1.0, 2.0] and feed.retries == 2  # exponential back-off
    exchange.network_failures = 100
    with pytest.raises(DataError, match="still failing"):
        feed.next_bars(more[-1].time)


def test_faults_timeouts_lost_replies_and_partial_fills_never_double_an_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    exchanges: list[StandInExchange] = []

    def factory(exchange_id: str, config: dict[str, Any]) -> StandInExchange:
        exchange = StandInExchange(config)
        exchange.failures = {}
        exchange.timeouts = 1  # the first order never reaches the exchange
        exchange.lost_replies = 1  # the second is placed but its reply is lost
        exchange.partial_next = True  # the third buy fills half
        exchanges.append(exchange)
        return exchange

    args = _live_args(tmp_path, "--i-understand-this-trades-real-money")
    assert start_paper(args, Console(stderr=True), exchange_factory=factory) == 0
    exchange, db = exchanges[0], tmp_path / "live.db"
    live = db_rows(db, "SELECT * FROM orders WHERE kind = 'live' ORDER BY id")
    statuses = [o["status"] for o in live]
    assert statuses[0] == "not_sent" and statuses[1] == "filled"
    ids = [o[3]["clientOrderId"] for o in exchange.orders]
    assert len(ids) == len(set(ids))  # no order sent twice
    assert live[0]["client_order_id"] not in ids  # it never reached the exchange
    assert live[1]["client_order_id"] in ids  # found by its client id after the lost reply
    half = [o for o in live if o["filled"] and o["filled"] < o["amount"]]
    assert len(half) == 1 and half[0]["side"] == "buy"
    events = db_rows(db, "SELECT kind FROM events")
    assert {"not_sent", "partial_fill"} <= {e["kind"] for e in events}
    # every pair ends flat or holding what the database says: the exit sold the half only
    sells = [
        o
        for o in live
        if o["side"] == "sell" and o["pair"] == half[0]["pair"] and o["id"] > half[0]["id"]
    ]
    assert sells and sells[0]["amount"] == pytest.approx(half[0]["filled"], abs=1e-5)


def test_polling_feed_ends_its_wait_on_a_stop_request() -> None:
    hour = 3_600_000
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % hour
    exchange = StandInExchange({}, _rows(400, t0), now_ms=t0 + 390 * hour + 10 * 60_000)
    sleeps: list[float] = []
    feed = PollingFeed(exchange, PAIRS, "1h", history_bars=500, sleep=sleeps.append, poll_s=10)
    bars = feed.initial_bars()
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(1)
        return len(sleeps) >= 3  # a stop request arrives during the third short sleep

    feed.should_stop = should_stop
    assert feed.next_bars(bars[-1].time) is None  # no new candle yet: it waited, then stopped
    assert sleeps == [10, 10, 10]  # short steps, not one long sleep until the next close
