"""Webhook notifications (``nexlify paper --notify URL``), posted to a local HTTP server on
127.0.0.1 that answers as told and stops by itself after a bounded number of requests."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nexlify.cli import main
from nexlify.live.notify import (
    NotifySettings,
    SessionNotifier,
    close_notifier,
    redact_url,
    trade_notice,
    webhook_url,
)
from nexlify.live.secrets import Credentials
from nexlify.live.store import SessionStore
from tests.test_paper_serve import HOUR, T0, make_session_db

SECRET_PATH = "/services/T0SECRET/B0SECRET/xyzWEBHOOKsecret"
MAX_REQUESTS = 400
"""The receiver stops after this many requests (or 60 s), whatever the notifier does."""


class Receiver:
    """A webhook on 127.0.0.1: records each POST body, answers the next status of ``replies``
    (200 once they are used up)."""

    def __init__(self, replies: list[int] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.replies = list(replies or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.replies.pop(0) if receiver.replies else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 60.0
        handled = 0
        while not self.done.is_set() and handled < MAX_REQUESTS and time.monotonic() < deadline:
            before = len(self.bodies)
            self.server.handle_request()
            handled += len(self.bodies) - before
        self.server.server_close()

    def kinds(self) -> list[str]:
        return [b["kind"] for b in self.bodies]

    def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.bodies) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)


@pytest.fixture()
def receivers() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(replies: list[int] | None = None) -> Receiver:
        made.append(Receiver(replies))
        return made[-1]

    yield make
    for receiver in made:
        receiver.stop()


def fast(url: str, **overrides: Any) -> NotifySettings:
    values = {"poll_s": 0.05, "first_backoff_s": 0.01, "timeout_s": 2.0, "close_timeout_s": 10.0}
    return NotifySettings(url, **{**values, **overrides})


def trade(pair: str, exit_time: int, reason: str, pnl: float, ret: float) -> dict[str, Any]:
    return {"pair": pair, "entry_time": exit_time - HOUR, "exit_time": exit_time,
            "entry_price": 100.0, "exit_price": 100.0 * (1 + ret), "quantity": 1.0, "pnl": pnl,
            "return": ret, "fees": 0.2, "reason": reason}  # fmt: skip


def write_bar(db: Path, k: int, trades: list[dict[str, Any]], events: list[tuple[str, str]],
              buy: str | None = None) -> None:  # fmt: skip
    """One bar's transaction as the trader writes it (trades, orders, events together)."""
    store = SessionStore(db)
    with store.transaction() as c:
        store.add_trades(c, trades)
        if buy is not None:
            store.add_order(c, kind="sim", bar_time=T0 + k * HOUR, pair=buy, side="buy",
                            amount=0.5, price=200.0, status="filled", filled=0.5)  # fmt: skip
            store.add_order(c, kind="live", bar_time=T0 + k * HOUR, pair=buy, side="buy",
                            amount=0.5, status="pending", client_order_id=f"c{k}")  # fmt: skip
        for kind, level in events:
            store.add_event(kind, f"{kind} at bar {k}", level, T0 + k * HOUR, c)
    store.close()


def test_redact_url_hides_the_secret_parts() -> None:
    assert redact_url("https://hooks.slack.com" + SECRET_PATH) == "https://hooks.slack.com/***"
    assert redact_url("http://u:pw@127.0.0.1:9000/h?token=abc") == "http://127.0.0.1:9000/***"
    assert redact_url("https://example.org?key=1") == "https://example.org/***"
    assert redact_url("https://example.org/") == "https://example.org/"


def test_webhook_url_must_be_http_with_a_host() -> None:
    assert webhook_url("https://example.org/hook") == "https://example.org/hook"
    for bad in ("ftp://example.org/x", "example.org/hook", "https:///nohost"):
        with pytest.raises(argparse.ArgumentTypeError, match="http:// or https://"):
            webhook_url(bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["paper", "--notify", "ftp://x/y", "--model", "m.pt"])
    assert exit_info.value.code == 2


def test_trade_notice_by_hand() -> None:
    kind, level, text = trade_notice(trade("BTC/USDT", T0, "stop", -0.62, -0.0125))
    assert (kind, level) == ("stop", "warning")
    assert text == "BTC/USDT closed (stop): -0.62 (-1.25%) at 98.75"
    assert trade_notice(trade("BTC/USDT", T0, "take", 1.75, 0.0175))[0] == "trade"
    assert trade_notice(trade("BTC/USDT", T0, "trail", 0.1, 0.001))[0] == "stop"


def test_committed_rows_are_announced_once_in_order(tmp_path: Path, receivers: Any) -> None:
    """Entries, trades, stops, gaps and errors committed after the start are posted; rows from
    before the start, live orders, other events and a rolled-back bar are not."""
    db = make_session_db(tmp_path / "s.db")
    receiver = receivers()
    notifier = SessionNotifier(db, fast(receiver.url)).start()
    write_bar(
        db,
        4,
        [trade("ETH/USDT", T0 + 4 * HOUR, "take", 1.75, 0.0175)],
        [("gap", "warning"), ("protect", "warning"), ("restart", "info")],
        buy="BTC/USDT",
    )
    write_bar(db, 5, [trade("BTC/USDT", T0 + 5 * HOUR, "stop", -0.62, -0.0125)],
              [("order_failed", "error")])  # fmt: skip
    store = SessionStore(db)
    with pytest.raises(RuntimeError), store.transaction() as c:
        store.add_trades(c, [trade("BTC/USDT", T0 + 6 * HOUR, "signal", 9.0, 0.09)])
        raise RuntimeError("the bar failed: rolled back")
    store.close()
    receiver.wait_for(6)
    notifier.close()
    kinds = receiver.kinds()
    assert kinds[0] == "session_start" and kinds[-1] == "session_end"
    # in order within each table; a poll reads orders, then trades, then events
    assert sorted(kinds[1:-1]) == ["entry", "error", "gap", "stop", "trade"]
    by_kind = {b["kind"]: b for b in receiver.bodies}
    entry, take, stop, gap, error = (by_kind[k] for k in ("entry", "trade", "stop", "gap", "error"))
    assert entry["text"] == "nexlify s.db: BTC/USDT bought 0.5 at 200"
    assert take["details"]["reason"] == "take" and take["level"] == "info"
    assert stop["text"] == "nexlify s.db: BTC/USDT closed (stop): -0.62 (-1.25%) at 98.75"
    assert stop["bar_time"] == "2024-06-13T05:00:00+00:00"  # a trade's exit bar
    assert gap["bar_time"] == "2024-06-13T04:00:00+00:00" and gap["level"] == "warning"
    assert error["text"] == "nexlify s.db: order_failed: order_failed at bar 5"
    assert all(b["mode"] == "live" and b["session"] == "s.db" for b in receiver.bodies)
    assert notifier.delivered == 7 and notifier.failed == 0


def test_server_errors_are_retried_with_backoff(tmp_path: Path, receivers: Any) -> None:
    db = make_session_db(tmp_path / "s.db")
    receiver = receivers([500, 503])  # the start notice fails twice, then goes through
    notifier = SessionNotifier(db, fast(receiver.url)).start()
    receiver.wait_for(3)
    notifier.close()
    assert receiver.kinds() == ["session_start"] * 3 + ["session_end"]
    assert notifier.delivered == 2 and notifier.failed == 0


def test_undeliverable_is_an_event_never_a_crash(
    tmp_path: Path, receivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Bounded tries (4 for a 500, 1 for a 404); the failure is logged and stored as an event,
    the URL's secret part masked in both."""
    db = make_session_db(tmp_path / "s.db")
    receiver = receivers([500, 500, 500, 500, 404])
    caplog.set_level(logging.WARNING, logger="nexlify.paper")
    notifier = SessionNotifier(db, fast(receiver.url, attempts=4)).start()
    receiver.wait_for(4)
    notifier.close()
    assert receiver.kinds() == ["session_start"] * 4 + ["session_end"]  # 404: no retry
    assert notifier.delivered == 0 and notifier.failed == 2
    store = SessionStore(db)
    events = store.rows("SELECT * FROM events WHERE kind = 'notify' ORDER BY id")
    store.close()
    port = receiver.url.split(":")[2].split("/")[0]
    assert [e["message"] for e in events] == [
        f"webhook http://127.0.0.1:{port}/***: session_start notification not delivered after "
        "4 attempt(s) (HTTP 500)",
        f"webhook http://127.0.0.1:{port}/***: session_end notification not delivered after "
        "1 attempt(s) (HTTP 404)",
    ]
    assert "SECRET" not in caplog.text and "not delivered" in caplog.text


def test_unreachable_webhook_does_not_hold_the_session(tmp_path: Path) -> None:
    db = make_session_db(tmp_path / "s.db")
    closed_port = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed_port.server_address[1]}{SECRET_PATH}"
    closed_port.server_close()
    notifier = SessionNotifier(db, fast(url, attempts=2)).start()
    write_bar(db, 4, [trade("ETH/USDT", T0 + 4 * HOUR, "stop", -1.0, -0.01)], [])
    notifier.close()
    assert not notifier.thread.is_alive()
    assert notifier.delivered == 0 and notifier.failed == 3  # start, the stop, the end


def test_a_small_queue_loses_nothing(tmp_path: Path, receivers: Any) -> None:
    """The database is read no further while the queue is full, and the end of the session
    drains what the last bars committed before its end notice: every trade still goes out."""
    db = make_session_db(tmp_path / "s.db")
    receiver = receivers()
    notifier = SessionNotifier(db, fast(receiver.url, queue_size=2, poll_s=30.0)).start()
    closes = [trade("ETH/USDT", T0 + (4 + k) * HOUR, "signal", float(k), 0.01) for k in range(12)]
    write_bar(db, 4, closes, [])
    notifier.close()  # the thread is asleep for 30 s: only the final drain reads these
    pnls = [b["details"]["pnl"] for b in receiver.bodies if b["kind"] == "trade"]
    assert pnls == [float(k) for k in range(12)]
    assert receiver.kinds()[-1] == "session_end"


def test_the_session_error_is_announced_with_keys_masked(tmp_path: Path, receivers: Any) -> None:
    db = make_session_db(tmp_path / "s.db")
    receiver = receivers()
    credentials = Credentials("PLANTEDkey-abc123", "PLANTEDsecret-def456")
    notifier = SessionNotifier(db, fast(receiver.url), redact=credentials.redact).start()
    try:
        try:
            raise ConnectionError("exchange echoed apiKey=PLANTEDkey-abc123")
        finally:
            close_notifier(notifier)
    except ConnectionError:
        pass
    assert receiver.kinds() == ["session_start", "error"]
    assert receiver.bodies[1]["text"] == "nexlify s.db: session stopped: exchange echoed apiKey=***"
    assert receiver.bodies[1]["level"] == "error"


def test_paper_run_posts_to_the_webhook(tmp_path: Path, receivers: Any) -> None:
    """``nexlify paper --notify URL``: the replay's trades reach the webhook, start to end."""
    from tests.test_paper_support import candles, save_model, write_candles

    model = save_model(tmp_path / "model.pt")
    files = write_candles(tmp_path / "data", candles())
    db = tmp_path / "paper.db"
    receiver = receivers()
    code = main(["paper", "--model", str(model), "--feed", "replay", "--data", *files, "--db",
                 str(db), "--no-view", "--notify", receiver.url])  # fmt: skip
    assert code == 0
    store = SessionStore(db)
    n_trades = store.rows("SELECT COUNT(*) AS n FROM trades")[0]["n"]
    store.close()
    kinds = receiver.kinds()
    assert kinds[0] == "session_start" and kinds[-1] == "session_end"
    assert n_trades > 0 and kinds.count("trade") + kinds.count("stop") == n_trades
