"""Live trading against ccxt's real binance class, only its HTTP layer recorded.

A sandbox session places entries, rests protective stops, trails them, cancels them on exits,
reconciles at start and stops on request, with the database and the exchange's recorded state
agreeing after every bar. Bad input is refused before any order.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import ccxt
import pandas as pd
import pytest
from rich.console import Console

import nexlify.commands.paper as paper_command
from nexlify.cli import build_parser, main
from nexlify.commands.paper import CONFIRM_FLAG
from nexlify.errors import ConfigError
from nexlify.live.feeds import Bar, ReplayFeed
from nexlify.live.secrets import KEY_ENV, PASSWORD_ENV, SECRET_ENV
from nexlify.live.venue import OrderRefusedError
from tests.recorded_exchanges import (
    KUCOIN_PASSPHRASE,
    BinanceBook,
    Book,
    KucoinBook,
    RecordedHTTP,
    binance_exchange,
    kucoin_exchange,
)
from tests.test_paper_support import candles, save_model, write_candles

KEY = "nxTESTNETKEY4d2f9a7c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7"
SECRET = "nxTESTNETSECRET8b6d4f2a0c8e6b4d2f0a8c6e4b2d0f8a6c4e2b0d8f6a4c2e0b8d"


def db_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def assert_agree(db: Path, book: Book) -> None:
    """The database and the exchange's recorded state say the same thing."""
    if not db.exists() or not db_rows(db, "SELECT name FROM sqlite_master WHERE name='orders'"):
        return
    resting = {o["client_id"] for o in book.open_orders()}
    recorded = {
        r["client_order_id"]
        for r in db_rows(
            db, "SELECT client_order_id FROM orders WHERE kind='live' AND status='open'"
        )
    }
    assert resting == recorded
    held = {r["pair"]: r["amount"] for r in db_rows(db, "SELECT * FROM live_holdings")}
    baseline = {r["currency"]: r["amount"] for r in db_rows(db, "SELECT * FROM live_baseline")}
    for pair in ("BTC/USDT", "ETH/USDT"):
        base = pair.split("/")[0]
        expected = baseline.get(base, 0.0) + held.get(pair, 0.0)
        assert float(book.total(base)) == pytest.approx(expected, abs=1e-9), pair
    sent = [r["client_order_id"] for r in db_rows(db, "SELECT * FROM orders WHERE kind='live'")]
    on_exchange = [o["client_id"] for o in book.state["orders"].values()]
    assert len(on_exchange) == len(set(on_exchange))  # no order ever sent twice
    assert set(on_exchange) <= set(sent)  # the exchange has nothing the database does not know


def assert_page_agrees(db: Path, book: Book) -> None:
    """What ``nexlify paper serve`` shows (its ``/api/status`` payload) says the same as the
    database and the exchange: the same positions, the same resting orders, no key."""
    from nexlify.live.serve import read_session, status_payload

    if not db.exists() or not db_rows(db, "SELECT name FROM sqlite_master WHERE name='orders'"):
        return
    page = read_session(db, status_payload)
    shown = [o for p in page["positions"] for o in p["orders"]] + page["orders_without_position"]
    resting = {o["client_order_id"] for o in shown if o["status"] == "open"}
    assert resting == {o["client_id"] for o in book.open_orders()}
    stored = {r["pair"]: r["quantity"] for r in db_rows(db, "SELECT * FROM positions")}
    assert {p["pair"]: p["quantity"] for p in page["positions"]} == stored
    text = json.dumps(page, default=str)
    assert KEY not in text and SECRET not in text


class MarketMovingFeed(ReplayFeed):
    """Replay whose bars also move the recorded exchange: during a bar the market trades
    through its low..high (resting stops fire), and market orders after it fill at its close.
    Before each bar, the database and the exchange must agree; ``at`` runs hooks by bar."""

    book: Book
    db: Path
    hooks: ClassVar[dict[int, Any]] = {}
    check = True
    retries = 0
    """Network retries so far, as PollingFeed counts them (the broker reconciles on a rise)."""

    def next_bars(self, after: int | None) -> list[Bar] | None:
        if self.check:
            assert_agree(self.db, self.book)
            assert_page_agrees(self.db, self.book)
        bars = super().next_bars(after)
        for bar in bars or []:
            hook = self.hooks.get(self.bars.index(bar))
            if hook is not None:
                hook()
            for pair, (_, high, low, close, _) in bar.candles.items():
                symbol = self.book.market_id(pair)
                self.book.trade_through(symbol, low, high)
                self.book.set_price(symbol, close)
        return bars


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, venue: str) -> dict[str, Any]:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(PASSWORD_ENV, KUCOIN_PASSPHRASE)
    frames = candles()
    files = write_candles(tmp_path / "data", frames)
    model = save_model(tmp_path / "model.pt")
    book: Book
    if venue == "binance":
        book = BinanceBook(KEY, SECRET, balances={"USDT": "10000", "BNB": "1"})
    else:
        book = KucoinBook(KEY, SECRET, balances={"USDT": "10000", "KCS": "3"})
    db = tmp_path / "live.db"
    MarketMovingFeed.book, MarketMovingFeed.db = book, db
    MarketMovingFeed.hooks, MarketMovingFeed.check, MarketMovingFeed.retries = {}, True, 0
    monkeypatch.setattr(paper_command, "ReplayFeed", MarketMovingFeed)
    https: list[RecordedHTTP] = []

    def factory(exchange_id: str, config: dict[str, Any]) -> Any:
        assert exchange_id == venue and config["apiKey"] == KEY
        if venue == "binance":
            exchange, http = binance_exchange(book, sandbox=False)
        else:
            exchange, http = kucoin_exchange(book)
        https.append(http)
        return exchange

    # binance: its testnet (--sandbox); kucoin has none in ccxt: its live API, confirmed
    mode = ["--sandbox"] if venue == "binance" else [CONFIRM_FLAG, "--exchange", "kucoin"]

    def args(*extra: str) -> argparse.Namespace:
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
                str(db),
                "--no-view",
                "--live",
                "--allow-no-edge",  # a hand-made model: no verdict of the no-edge gate
                *mode,
                *extra,
            ]
        )

    return {
        "book": book,
        "db": db,
        "args": args,
        "factory": factory,
        "https": https,
        "frames": frames,
    }


@pytest.fixture
def live_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return _setup(tmp_path, monkeypatch, "binance")


def _run(setup: dict[str, Any], *extra: str) -> int:
    return paper_command.start_paper(
        setup["args"](*extra), Console(stderr=True), exchange_factory=setup["factory"]
    )


def test_sandbox_session_places_protects_trails_and_agrees_with_the_exchange(
    live_setup: dict[str, Any],
) -> None:
    book, db = live_setup["book"], live_setup["db"]
    assert _run(live_setup) == 0
    assert_agree(db, book)
    http = live_setup["https"][0]
    assert {host for _, host, _, _ in http.log} == {"testnet.binance.vision"}  # sandbox
    orders = db_rows(db, "SELECT * FROM orders WHERE kind='live' ORDER BY id")
    roles = [o["role"] for o in orders]
    assert roles.count("entry") >= 3 and roles.count("exit") >= 1
    stops = [o for o in orders if o["role"] == "stop_loss"]
    assert len(stops) > roles.count("entry")  # trailed by cancel/replace
    assert {o["status"] for o in stops} <= {"open", "cancelled", "filled"}
    # each entry is followed at once by its stop at the simulator's level, on the tick
    for entry in (o for o in orders if o["role"] == "entry" and o["status"] == "filled"):
        stop = next(
            o for o in stops if o["bar_time"] == entry["bar_time"] and o["pair"] == entry["pair"]
        )
        assert stop["price"] == round(stop["price"], 2) and stop["price"] < entry["price"]
        assert stop["amount"] <= entry["filled"]
    # binance locks the amount for the stop: the take-profit is refused once, said once
    events = db_rows(db, "SELECT * FROM events")
    assert sum("take-profit cannot rest" in e["message"] for e in events) == 1
    assert any(e["kind"] == "reconcile" and "agree" in e["message"] for e in events)
    # amounts on the lot step, client ids deterministic and unique
    posted = [p for m, _, path, p in http.log if m == "POST" and path == "/api/v3/order"]
    ids = [p["newClientOrderId"] for p in posted]
    assert len(ids) == len(set(ids)) and all(i.startswith("nx") for i in ids)
    assert all(len(i) <= 36 for i in ids)


def test_the_served_page_shows_what_the_database_and_the_exchange_hold(
    live_setup: dict[str, Any],
) -> None:
    """After a sandbox session, ``paper serve``'s own HTTP endpoint answers what the database
    holds and the exchange rests (checked before every bar by the feed as well)."""
    import threading
    import urllib.request

    from nexlify.live.serve import make_server

    book, db = live_setup["book"], live_setup["db"]
    assert _run(live_setup) == 0
    assert book.open_orders()  # the session ended with protected positions resting
    server = make_server(db, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"{server.url}api/status", timeout=10) as reply:
            body = reply.read().decode()
    finally:
        server.shutdown()
        thread.join(timeout=10)
    page = json.loads(body)
    shown = [o for p in page["positions"] for o in p["orders"]] + page["orders_without_position"]
    assert {o["client_order_id"] for o in shown if o["status"] == "open"} == {
        o["client_id"] for o in book.open_orders()
    }
    assert {p["pair"] for p in page["positions"]} == {
        r["pair"] for r in db_rows(db, "SELECT pair FROM positions")
    }
    assert KEY not in body and SECRET not in body


def test_stop_request_from_another_process_flattens_and_is_recorded(
    live_setup: dict[str, Any],
) -> None:
    book, db = live_setup["book"], live_setup["db"]
    holding: list[float] = []

    def stop() -> None:
        held = db_rows(db, "SELECT SUM(amount) AS a FROM live_holdings")[0]["a"] or 0.0
        if held > 0 and not holding:
            holding.append(held)
            assert main(["paper", "stop", "--db", str(db), "--flatten"]) == 0

    MarketMovingFeed.hooks = {k: stop for k in range(340, 480)}
    assert _run(live_setup) == 0
    assert holding, "the session never held a position to flatten"
    assert_agree(db, book)
    assert book.open_orders() == []
    assert all(r["amount"] == 0 for r in db_rows(db, "SELECT * FROM live_holdings"))
    dust = sum(r["amount"] for r in db_rows(db, "SELECT * FROM live_baseline"))
    assert float(book.total("BTC") + book.total("ETH")) == pytest.approx(dust)
    assert dust < 1e-3
    control = db_rows(db, "SELECT * FROM control")
    assert len(control) == 1 and control[0]["handled_at"] and "flattened" in control[0]["outcome"]
    flat = db_rows(db, "SELECT * FROM orders WHERE role='flatten'")
    assert flat and all(o["status"] == "filled" for o in flat)
    total = len(next(iter(live_setup["frames"].values())))
    cursor = db_rows(db, "SELECT * FROM feed_cursor")[0]
    assert cursor["processed_bars"] < total  # it stopped early
    # started again: the flattened positions are not bought back, the session goes on
    buys_before = len(db_rows(db, "SELECT id FROM orders WHERE role='entry'"))
    MarketMovingFeed.hooks = {}
    assert _run(live_setup) == 0
    assert_agree(db, book)
    assert db_rows(db, "SELECT * FROM feed_cursor")[0]["processed_bars"] == total
    later = db_rows(db, "SELECT * FROM orders WHERE role='entry' ORDER BY id")[buys_before:]
    assert later and all(o["bar_time"] > cursor["last_bar_time"] for o in later)


def test_reconciliation_blocks_entries_on_what_the_database_does_not_know(
    live_setup: dict[str, Any],
) -> None:
    book, db = live_setup["book"], live_setup["db"]
    assert _run(live_setup, "--max-bars", "40") == 0
    entries = len(db_rows(db, "SELECT id FROM orders WHERE role='entry'"))
    assert entries > 0
    # someone buys ETH by hand on the account while the session is down
    book.move("ETH", free=Decimal("0.5"))
    MarketMovingFeed.check = False  # they disagree now, on purpose
    assert _run(live_setup) == 0
    events = db_rows(db, "SELECT * FROM events WHERE kind='reconcile'")
    assert any("ETH" in e["message"] and "expects" in e["message"] for e in events)
    blocked = db_rows(db, "SELECT entries_blocked FROM live_state")[0]["entries_blocked"]
    assert blocked and "ETH" in blocked
    assert len(db_rows(db, "SELECT id FROM orders WHERE role='entry'")) == entries
    assert float(book.total("ETH")) >= 0.5  # never adopted, never sold


def test_a_reply_lost_in_a_timeout_is_found_by_its_client_id_not_sent_again(
    live_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    book, db = live_setup["book"], live_setup["db"]
    factory = live_setup["factory"]

    def lossy(exchange_id: str, config: dict[str, Any]) -> Any:
        exchange = factory(exchange_id, config)
        original = exchange.session.request

        def request(method: str, url: str, **kw: Any) -> Any:
            if method == "POST" and exchange.session.lose_replies == 0 and not lost:
                exchange.session.lose_replies = 1
                lost.append(url)
            return original(method, url, **kw)

        exchange.session.request = request
        return exchange

    lost: list[str] = []
    live_setup["factory"] = lossy
    assert _run(live_setup) == 0
    assert lost
    first = db_rows(db, "SELECT * FROM orders WHERE kind='live' ORDER BY id")[0]
    assert first["status"] == "filled" and first["exchange_order_id"]
    assert_agree(db, book)


def test_bad_input_is_refused_before_any_order(
    live_setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = live_setup["book"]
    # a venue without the pair
    book.info["symbols"] = [s for s in book.info["symbols"] if s["symbol"] != "ETHUSDT"]
    book.symbols.pop("ETHUSDT")
    with pytest.raises(ConfigError, match="binance has no market ETH/USDT"):
        _run(live_setup)
    assert not live_setup["db"].exists()
    # an amount below the minimum: the model's 5% of 10000 is 500 USDT, minimum set to 1000
    info = BinanceBook(KEY, SECRET).info
    for s in info["symbols"]:
        for f in s["filters"]:
            if f["filterType"] == "NOTIONAL":
                f["minNotional"] = "1000.00000000"
    book.info, book.symbols = info, {s["symbol"]: s for s in info["symbols"]}
    with pytest.raises(OrderRefusedError, match=r"BTC/USDT.*minimum cost 1000"):
        _run(live_setup)
    assert [p for m, _, p, _ in live_setup["https"][-1].log if m == "POST"] == []
    # an exchange without a sandbox
    live_setup["factory"] = lambda eid, config: ccxt.bitstamp(config)
    with pytest.raises(ConfigError, match="bitstamp has no sandbox"):
        _run(live_setup)
    # keys missing
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=KEY_ENV):
        _run(live_setup)
    # a model of other pairs / timeframe
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(ConfigError, match="the model trades"):
        _run(live_setup, "--pairs", "SOL/USDT")
    with pytest.raises(ConfigError, match="the model uses 1h"):
        _run(live_setup, "--timeframe", "4h")


def test_sigterm_writes_a_stop_request_the_loop_honours(live_setup: dict[str, Any]) -> None:
    import os
    import signal

    db = live_setup["db"]
    MarketMovingFeed.hooks = {150: lambda: os.kill(os.getpid(), signal.SIGTERM)}
    before = signal.getsignal(signal.SIGTERM)
    assert _run(live_setup) == 0
    assert signal.getsignal(signal.SIGTERM) == before  # restored
    control = db_rows(db, "SELECT * FROM control")
    assert [c["source"] for c in control] == ["SIGTERM"] and control[0]["handled_at"]
    processed = db_rows(db, "SELECT processed_bars FROM feed_cursor")[0]["processed_bars"]
    assert processed == 150  # bar 150 arrived with the request: left for the next start
    assert_agree(db, live_setup["book"])


def test_paper_stop_needs_a_session(tmp_path: Path) -> None:
    assert main(["paper", "stop", "--db", str(tmp_path / "none.db")]) == 3


def test_old_session_databases_are_migrated_without_losing_rows(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE session (id INTEGER PRIMARY KEY, created_at TEXT, model_path TEXT, "
        "model_sha256 TEXT, pairs TEXT, timeframe TEXT, feed TEXT, mode TEXT, market_config "
        "TEXT, start_time INTEGER, gap_cooldown INTEGER, schema_version INTEGER);"
        "INSERT INTO session VALUES (1, 'x', 'm', 'h', '[]', '1h', 'poll', 'live', '{}', 0, "
        "24, 1);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
        "bar_time INTEGER NOT NULL, pair TEXT NOT NULL, side TEXT NOT NULL, amount REAL NOT "
        "NULL, price REAL, status TEXT NOT NULL, client_order_id TEXT UNIQUE, "
        "exchange_order_id TEXT, filled REAL, error TEXT, created_at TEXT NOT NULL, "
        "updated_at TEXT NOT NULL);"
        "INSERT INTO orders (kind, bar_time, pair, side, amount, status, created_at, "
        "updated_at) VALUES ('live', 1, 'BTC/USDT', 'buy', 0.1, 'filled', 'a', 'b');"
    )
    conn.commit()
    conn.close()
    from nexlify.live.store import SCHEMA_VERSION, SessionStore

    store = SessionStore(db)
    assert store.rows("SELECT pair, role FROM orders") == [{"pair": "BTC/USDT", "role": None}]
    assert store.session() is not None
    assert store.rows("SELECT schema_version FROM session")[0]["schema_version"] == SCHEMA_VERSION
    store.close()


def test_trailing_levels_are_the_simulators(tmp_path: Path) -> None:
    from nexlify.config import RiskConfig
    from nexlify.live.protect import protective_levels

    risk = RiskConfig(stop_loss=0.02, take_profit=0.05, trailing_stop=0.03)
    # entry 100, high 101: stop = max(98, 97.97) = 98; high 110: max(98, 106.7) = 106.7
    assert protective_levels({"entry_price": 100.0, "high_water": 101.0}, risk) == {
        "stop_loss": pytest.approx(98.0),
        "take_profit": pytest.approx(105.0),
    }
    levels = protective_levels({"entry_price": 100.0, "high_water": 110.0}, risk)
    assert levels["stop_loss"] == pytest.approx(106.7)
    off = RiskConfig(stop_loss=0.0, take_profit=0.0, trailing_stop=0.0)
    assert protective_levels({"entry_price": 100.0, "high_water": 110.0}, off) == {}


def test_client_order_ids_are_deterministic_and_fit_the_venues() -> None:
    from nexlify.live.orders import ROLE_CODES, OrderDesk

    desk = OrderDesk.__new__(OrderDesk)
    desk.tag = "a1b2c3"
    cid = desk.client_id(1_733_011_200, "BTC/USDT", "stop_loss")
    assert (
        cid
        == "nxa1b2c3-1733011200-BTC-sl"
        == desk.client_id(1_733_011_200, "BTC/USDT", "stop_loss")
    )
    longest = desk.client_id(1_733_011_200, "1000SATSXYZ/USDT", "take_profit")
    assert len(longest) <= 36 and set(ROLE_CODES) >= {"entry", "exit", "flatten"}
    assert pd.Series([cid]).str.fullmatch(r"[A-Za-z0-9-]+").all()


def test_kucoin_session_rests_stop_and_take_profit_and_agrees_with_the_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KuCoin does not freeze coins for stop orders: both protective orders rest, ccxt reaches
    them with trigger=True; fees come in USDT, so the whole amount bought is held."""
    setup = _setup(tmp_path, monkeypatch, "kucoin")
    book, db = setup["book"], setup["db"]
    assert _run(setup) == 0
    assert_agree(db, book)
    http = setup["https"][0]
    assert {host for _, host, _, _ in http.log} == {"api.kucoin.com"}
    orders = db_rows(db, "SELECT * FROM orders WHERE kind='live' ORDER BY id")
    roles = [o["role"] for o in orders]
    assert roles.count("entry") >= 3 and "take_profit" in roles and "stop_loss" in roles
    entries = [o for o in orders if o["role"] == "entry" and o["status"] == "filled"]
    for entry in entries:
        tp = next(
            o
            for o in orders
            if o["role"] == "take_profit"
            and o["bar_time"] == entry["bar_time"]
            and o["pair"] == entry["pair"]
        )
        assert tp["amount"] == entry["filled"] and tp["price"] > entry["price"]
    assert not [o for o in orders if o["status"] == "failed"]
    stop_orders = [p for m, _, path, p in http.log if m == "POST" and path.endswith("stop-order")]
    assert len(stop_orders) == roles.count("stop_loss") + roles.count("take_profit")
    # --sandbox is refused for kucoin: ccxt knows no testnet for it
    monkeypatch.setattr(paper_command, "ReplayFeed", ReplayFeed)
    with pytest.raises(ConfigError, match="kucoin has no sandbox"):
        _run(setup, "--sandbox")


def test_a_stop_requested_while_no_session_runs_is_carried_out_at_the_next_start(
    live_setup: dict[str, Any],
) -> None:
    book, db = live_setup["book"], live_setup["db"]
    assert _run(live_setup, "--max-bars", "60") == 0
    held = {r["pair"]: r["amount"] for r in db_rows(db, "SELECT * FROM live_holdings")}
    assert any(a > 0 for a in held.values()) or book.open_orders() == []
    posts = len([1 for m, _, _, _ in live_setup["https"][-1].log if m == "POST"])
    assert main(["paper", "stop", "--db", str(db), "--flatten"]) == 0
    cursor = db_rows(db, "SELECT * FROM feed_cursor")[0]
    assert _run(live_setup) == 0
    assert db_rows(db, "SELECT * FROM feed_cursor")[0] == cursor  # no bar processed
    http = live_setup["https"][-1]
    # the only orders sent: the flatten's market sells (no entry, no protection)
    posted = [p for m, _, path, p in http.log if m == "POST"]
    assert all(p["newClientOrderId"].endswith("-f") for p in posted)
    assert posts >= 1
    assert book.open_orders() == []
    assert all(r["amount"] == 0 for r in db_rows(db, "SELECT * FROM live_holdings"))
    assert db_rows(db, "SELECT handled_at FROM control")[0]["handled_at"]


def test_a_protective_order_gone_missing_blocks_entries_and_is_put_back(
    live_setup: dict[str, Any],
) -> None:
    book, db = live_setup["book"], live_setup["db"]
    for _ in range(14):  # run until a stop rests on the exchange
        assert _run(live_setup, "--max-bars", "10") == 0
        if book.open_orders():
            break
    stop = book.open_orders()[0]
    stop["status"] = "cancelled"  # someone cancels it by hand on the exchange
    book.move(stop["base"], free=Decimal(stop["qty"]), locked=-Decimal(stop["qty"]))
    MarketMovingFeed.check = False
    entries = len(db_rows(db, "SELECT id FROM orders WHERE role='entry'"))
    assert _run(live_setup, "--max-bars", "40") == 0
    events = db_rows(db, "SELECT message FROM events WHERE kind='reconcile'")
    assert any(stop["client_id"] in e["message"] and "missing" in e["message"] for e in events)
    assert db_rows(db, "SELECT entries_blocked FROM live_state")[0]["entries_blocked"]
    row = db_rows(db, "SELECT status FROM orders WHERE client_order_id=?", (stop["client_id"],))
    assert row[0]["status"] == "missing"
    # while blocked: no new entry, and the position got its protection back at once
    assert len(db_rows(db, "SELECT id FROM orders WHERE role='entry'")) == entries
    again = db_rows(
        db,
        "SELECT * FROM orders WHERE role='stop_loss' AND id > "
        "(SELECT id FROM orders WHERE client_order_id=?)",
        (stop["client_id"],),
    )
    assert (
        again
        and again[0]["pair"]
        == db_rows(db, "SELECT pair FROM orders WHERE client_order_id=?", (stop["client_id"],))[0][
            "pair"
        ]
    )
    assert_agree(db, book)
    # a start whose reconciliation is clean lifts the block; entries resume
    MarketMovingFeed.check = True
    assert _run(live_setup) == 0
    assert db_rows(db, "SELECT entries_blocked FROM live_state")[0]["entries_blocked"] is None
    assert len(db_rows(db, "SELECT id FROM orders WHERE role='entry'")) > entries


def test_a_reconnect_reconciles_and_finds_what_changed_meanwhile(
    live_setup: dict[str, Any],
) -> None:
    book, db = live_setup["book"], live_setup["db"]

    def reconnect() -> None:
        MarketMovingFeed.check = False
        book.move("BTC", free=Decimal("0.01"))  # bought by hand while the feed was down
        MarketMovingFeed.retries += 1  # the feed retried and got through

    MarketMovingFeed.hooks = {400: reconnect}
    assert _run(live_setup) == 0
    events = db_rows(db, "SELECT * FROM events WHERE kind='reconcile' ORDER BY id")
    assert [e["message"].split(":")[0] for e in events] == ["start", "reconnect"]
    assert "BTC" in events[1]["message"] and events[1]["level"] == "error"
    blocked = db_rows(db, "SELECT entries_blocked FROM live_state")[0]["entries_blocked"]
    assert blocked.startswith("reconnect reconciliation")
    last_entry = db_rows(db, "SELECT MAX(bar_time) AS t FROM orders WHERE role='entry'")[0]["t"]
    reconnect_bar = ReplayFeed(live_setup["frames"], "1h").bars[400].time
    assert last_entry < reconnect_bar  # no entry after the surprise


def test_an_entry_below_the_minimum_is_refused_once_and_never_sent(
    live_setup: dict[str, Any],
) -> None:
    """The start check passes (the largest position, 500 USDT, is above a 100 USDT minimum),
    but Kelly-sized entries of about 50 USDT are refused before sending, once per position."""
    book, db = live_setup["book"], live_setup["db"]
    for symbol in book.info["symbols"]:
        for f in symbol["filters"]:
            if f["filterType"] == "NOTIONAL":
                f["minNotional"] = "100.00000000"
    assert _run(live_setup) == 0
    refused = db_rows(db, "SELECT * FROM orders WHERE status = 'refused'")
    assert refused and all(r["role"] == "entry" for r in refused)
    assert all(
        "below the minimum cost 100" in r["error"] and r["pair"] in r["error"] for r in refused
    )
    sim_buys = db_rows(db, "SELECT * FROM orders WHERE kind='sim' AND side='buy'")
    assert len(refused) < len(sim_buys)  # once per position, not once per bar
    events = db_rows(db, "SELECT * FROM events WHERE kind = 'order_refused'")
    assert len(events) == len(refused)
    posted = [p for m, _, path, p in live_setup["https"][0].log if m == "POST"]
    floor = {"BTCUSDT": 20_000, "ETHUSDT": 1_500}  # below the synthetic prices' lows
    assert all(float(p["quantity"]) * floor[p["symbol"]] >= 100 for p in posted)  # none small
    assert not [r for r in db_rows(db, "SELECT * FROM orders") if "NOTIONAL" in (r["error"] or "")]
    assert not db_rows(db, "SELECT * FROM orders WHERE status = 'failed' AND role = 'entry'")
    assert_agree(db, book)


class ProcessDied(BaseException):
    """Stands for SIGKILL at one exact point: nothing after it runs, no handler catches it."""


def test_death_right_after_an_order_reached_the_exchange_is_recovered_not_resent(
    live_setup: dict[str, Any],
) -> None:
    """The order row is committed as pending, the exchange executes the order, the process
    dies before reading the reply. The next start finds the order by its client id."""
    book, db = live_setup["book"], live_setup["db"]
    factory = live_setup["factory"]
    died: list[str] = []

    def dying(exchange_id: str, config: dict[str, Any]) -> Any:
        exchange = factory(exchange_id, config)
        original = exchange.session.request

        def request(method: str, url: str, **kw: Any) -> Any:
            reply = original(method, url, **kw)
            if method == "POST" and not died:
                died.append(url)
                raise ProcessDied
            return reply

        exchange.session.request = request
        return exchange

    live_setup["factory"] = dying
    with pytest.raises(ProcessDied):
        _run(live_setup)
    pending = db_rows(db, "SELECT * FROM orders WHERE status = 'pending'")
    assert len(pending) == 1 and len(book.state["orders"]) == 1  # sent, reply never read
    live_setup["factory"] = factory
    assert _run(live_setup) == 0
    row = db_rows(
        db, "SELECT * FROM orders WHERE client_order_id = ?", (pending[0]["client_order_id"],)
    )[0]
    assert row["status"] == "filled" and row["filled"] > 0
    events = db_rows(db, "SELECT * FROM events WHERE kind = 'recovered'")
    assert len(events) == 1 and pending[0]["client_order_id"] in events[0]["message"]
    assert_agree(db, book)  # includes: that client id is on the exchange once
