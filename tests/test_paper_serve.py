"""``nexlify paper serve``: the JSON endpoints against a hand-made session, the token and host
rules, read-only access while a session writes, no key in any response, and the page rendered
by a real headless Chromium (charts drawn, tables filled by the page's own refresh)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexlify.cli import main
from nexlify.errors import ConfigError, DataError
from nexlify.live.secrets import KEY_ENV, PASSWORD_ENV, SECRET_ENV
from nexlify.live.serve import (
    ReadOnlySessionStore,
    WatchServer,
    make_server,
    read_session,
    status_payload,
)
from nexlify.live.serve_page import REFRESH_SECONDS
from nexlify.live.store import SessionStore

HOUR = 3600
T0 = 1_718_236_800  # 2024-06-13 00:00 UTC
EQUITY = [10_000.0, 10_100.0, 9_900.0, 9_800.0]
"""Day start 10 000, limit 5%: today's PnL -200 of a -500 limit = 40% used; the drawdown at
the last bar is 9 800 / 10 100 - 1 = -2.970297%."""
PLANTED = "PLANTEDkey-7f3a9c1e55d0"
PLANTED_SECRET = "PLANTEDsecret-0b8e44aa91"
TOKEN = "watch-token-5d2c"


def make_session_db(path: Path) -> Path:
    """A live session after four bars: one BTC position with a resting stop, an unconfirmed ETH
    order, two closed trades, a gap and an exchange error that echoed the API key."""
    store = SessionStore(path)
    store.create_session(
        model_path="runs/final_model.pt",
        model_sha256="0" * 64,
        pairs=["BTC/USDT", "ETH/USDT"],
        timeframe="1h",
        feed="poll",
        mode="live",
        market_config={"risk": {"daily_loss_limit": 0.05}, "apiKey": PLANTED},
        start_time=T0,
        gap_cooldown=24,
    )
    with store.transaction() as c:
        for k, equity in enumerate(EQUITY):
            account = {"equity": equity, "cash": equity - 600.0, "day_start_equity": 10_000.0,
                       "locked": False, "open_positions": 1}  # fmt: skip
            store.add_equity(c, T0 + k * HOUR, account)
        store.add_candles(c, "BTC/USDT", [(T0 + 3 * HOUR, 61_000.0, 61_500.0, 60_900.0,
                                           61_200.0, 12.0)])  # fmt: skip
        store.set_positions(c, [{"pair": "BTC/USDT", "quantity": 0.01, "entry_price": 60_000.0,
                                 "entry_time": T0 + HOUR, "high_water": 61_500.0}])  # fmt: skip
        order = {"bar_time": T0 + HOUR, "pair": "BTC/USDT", "amount": 0.01}
        store.add_order(c, kind="sim", side="buy", price=60_000.0, status="filled", **order)
        store.add_order(c, kind="live", side="buy", price=60_000.0, status="filled",
                        client_order_id="cid-entry", **order)  # fmt: skip
        store.add_order(c, kind="live", side="sell", price=57_000.0, status="open",
                        client_order_id="cid-stop", **order)  # fmt: skip
        store.add_order(c, kind="live", side="buy", bar_time=T0 + 2 * HOUR, pair="ETH/USDT",
                        amount=0.5, status="unconfirmed", client_order_id="cid-eth")  # fmt: skip
        trade = {"entry_price": 3_000.0, "quantity": 0.2, "fees": 1.2}
        store.add_trades(c, [
            {"pair": "ETH/USDT", "entry_time": T0, "exit_time": T0 + HOUR, "exit_price": 3_060.0,
             "pnl": 10.8, "return": 0.02, "reason": "take", **trade},
            {"pair": "ETH/USDT", "entry_time": T0 + HOUR, "exit_time": T0 + 2 * HOUR,
             "exit_price": 2_970.0, "pnl": -7.2, "return": -0.01, "reason": "stop", **trade},
        ])  # fmt: skip
        store.set_cursor(c, T0 + 3 * HOUR, 4)
    store.add_event("gap", "feed gap: 1 bar(s) missing from 2024-06-13T02:00", "warning", T0)
    store.add_event("order_failed", f"exchange said: bad apiKey {PLANTED}", "error", T0 + HOUR)
    add_live_state(store)
    store.close()
    return path


def add_live_state(store: SessionStore) -> None:
    """Order roles, the reconciliation's block and a stop request, as live mode writes them
    (the tables and column are made here where this store's schema lacks them)."""
    c = store.conn
    if "role" not in [row[1] for row in c.execute("PRAGMA table_info(orders)")]:
        c.execute("ALTER TABLE orders ADD COLUMN role TEXT")
    c.execute("UPDATE orders SET role = 'entry' WHERE kind = 'live'")
    c.execute("UPDATE orders SET role = 'stop_loss' WHERE client_order_id = 'cid-stop'")
    c.execute("CREATE TABLE IF NOT EXISTS live_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
              "entries_blocked TEXT, updated_at TEXT NOT NULL)")  # fmt: skip
    c.execute("INSERT INTO live_state VALUES (1, 'ETH/USDT order cid-eth unconfirmed', 'x')")
    c.execute("CREATE TABLE IF NOT EXISTS control (id INTEGER PRIMARY KEY AUTOINCREMENT, "
              "requested_at TEXT NOT NULL, source TEXT NOT NULL, flatten INTEGER NOT NULL, "
              "handled_at TEXT, outcome TEXT)")  # fmt: skip
    c.execute("INSERT INTO control (requested_at, source, flatten) "
              "VALUES ('2024-06-13T03:30:00+00:00', 'cli', 1)")  # fmt: skip


@pytest.fixture()
def session_db(tmp_path: Path) -> Path:
    return make_session_db(tmp_path / "live.db")


class Served:
    """A running server in a thread, stopped by the fixture."""

    def __init__(self, server: WatchServer) -> None:
        self.server = server
        self.url = server.url
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture()
def serve() -> Iterator[Any]:
    running: list[Served] = []

    def start(db: Path, host: str = "127.0.0.1", token: str | None = None) -> Served:
        running.append(Served(make_server(db, host, 0, token)))
        return running[-1]

    yield start
    for served in running:
        served.stop()


def decode(values: Any) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array ``{"dtype", "bdata"}``."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


# ---- the JSON endpoints ---------------------------------------------------------------------
def test_status_endpoint_shows_the_session(session_db: Path, serve: Any) -> None:
    status = serve(session_db).json("api/status")
    assert status["mode"] == "live" and status["pairs"] == ["BTC/USDT", "ETH/USDT"]
    assert status["equity"] == 9_800.0 and status["processed_bars"] == 4
    assert status["today_pnl"] == pytest.approx(-200.0)
    assert status["today_limit"] == pytest.approx(-500.0)
    assert status["limit_used_pct"] == pytest.approx(40.0)
    (position,) = status["positions"]
    assert position["pair"] == "BTC/USDT"
    assert position["unrealised_pct"] == pytest.approx(2.0)  # 61 200 / 60 000 - 1
    # the resting stop is the position's; filled and simulated orders are not resting
    assert [o["client_order_id"] for o in position["orders"]] == ["cid-stop"]
    assert [o["client_order_id"] for o in status["orders_without_position"]] == ["cid-eth"]
    assert [t["reason"] for t in status["recent_trades"]] == ["stop", "take"]
    assert [e["kind"] for e in status["events"]] == ["order_failed", "gap"]
    assert status["warnings"] == 2
    assert status["db"] == "live.db"  # the name, not the machine's folders
    assert status["entries_blocked"] == "ETH/USDT order cid-eth unconfirmed"
    assert status["stop_requested"]["flatten"] == 1


def test_alerts_of_a_session_without_live_tables(session_db: Path) -> None:
    conn = sqlite3.connect(session_db)
    conn.executescript("DROP TABLE live_state; DROP TABLE control;")
    conn.close()
    payload = read_session(session_db, status_payload)
    assert payload["entries_blocked"] is None and payload["stop_requested"] is None


def test_curves_endpoint_gives_equity_and_drawdown(session_db: Path, serve: Any) -> None:
    curves = serve(session_db).json("api/curves")
    equity = curves["equity"]["data"][0]
    drawdown = curves["drawdown"]["data"][0]
    np.testing.assert_allclose(decode(equity["y"]), EQUITY)
    expected = [0.0, 0.0, (9_900 / 10_100 - 1) * 100, (9_800 / 10_100 - 1) * 100]
    np.testing.assert_allclose(decode(drawdown["y"]), expected)
    assert decode(drawdown["y"])[-1] == pytest.approx(-2.970297, abs=1e-6)
    assert curves["last_bar"] == T0 + 3 * HOUR
    assert str(equity["x"][0]).startswith("2024-06-13")


def test_curves_before_the_first_traded_bar(tmp_path: Path, serve: Any) -> None:
    store = SessionStore(tmp_path / "new.db")
    store.create_session(model_path="m.pt", model_sha256="0", pairs=["BTC/USDT"], timeframe="1h",
                         feed="replay", mode="paper", market_config={}, start_time=None,
                         gap_cooldown=24)  # fmt: skip
    store.close()
    served = serve(tmp_path / "new.db")
    assert served.json("api/curves") == {"equity": None, "drawdown": None, "last_bar": None}
    status = served.json("api/status")
    assert "equity" not in status and "limit_used_pct" not in status
    assert status["warmup"]["have"] == 0  # the page shows "warming up (have of need bars)"


def test_page_refreshes_from_the_api_and_serves_plotly_locally(
    session_db: Path, serve: Any
) -> None:
    served = serve(session_db)
    status, page = served.get("")
    text = page.decode()
    assert status == 200 and "<h2>Open positions</h2>" in text
    assert f"const REFRESH_MS = {int(REFRESH_SECONDS * 1000)};" in text
    assert "setInterval(refresh, REFRESH_MS)" in text and "getJson('api/status')" in text
    assert "cdn" not in text.lower() and "https://" not in text  # nothing from the network
    status, plotly_js = served.get("static/plotly.min.js")
    assert status == 200 and b"plotly.js" in plotly_js[:2000] and len(plotly_js) > 1_000_000
    assert served.get("nothing-here")[0] == 404


def test_status_follows_the_session_as_it_writes(session_db: Path, serve: Any) -> None:
    """A new bar shows on the next refresh; a bar in an uncommitted transaction never shows
    (and does not block the reader)."""
    served = serve(session_db)
    assert served.json("api/status")["last_bar"] == T0 + 3 * HOUR
    writer = SessionStore(session_db)
    account = {"equity": 9_700.0, "cash": 9_100.0, "day_start_equity": 10_000.0, "locked": False,
               "open_positions": 1}  # fmt: skip
    with writer.transaction() as c:
        writer.add_equity(c, T0 + 4 * HOUR, account)
        writer.set_cursor(c, T0 + 4 * HOUR, 1)
        during = served.json("api/status")  # the writer holds the write lock meanwhile
        assert during["last_bar"] == T0 + 3 * HOUR and during["equity"] == 9_800.0
    after = served.json("api/status")
    assert after["last_bar"] == T0 + 4 * HOUR and after["equity"] == 9_700.0
    assert after["limit_used_pct"] == pytest.approx(60.0)  # -300 of -500
    assert served.json("api/curves")["last_bar"] == T0 + 4 * HOUR
    writer.close()


def test_the_watcher_cannot_write(session_db: Path) -> None:
    store = ReadOnlySessionStore(session_db)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.conn.execute("DELETE FROM trades")
    store.close()
    assert len(read_session(session_db, lambda s: s.rows("SELECT * FROM trades"))) == 2


def test_a_locked_database_is_retried_then_reported(tmp_path: Path, serve: Any) -> None:
    """Rollback-journal mode (where a writer does block readers): retried while locked, a clear
    error after the last try, and the read goes through once the lock is released."""
    db = make_session_db(tmp_path / "journal.db")
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    served = serve(db)
    conn.execute("BEGIN EXCLUSIVE")
    count = "SELECT COUNT(*) AS n FROM trades"
    with pytest.raises(DataError, match="locked through 3 tries"):
        read_session(db, lambda s: s.rows(count), attempts=3, first_wait_s=0.01)
    status, body = served.get("api/curves")
    assert status == 503 and "locked" in json.loads(body)["error"]
    threading.Timer(0.3, lambda: conn.execute("COMMIT")).start()
    rows = read_session(db, lambda s: s.rows(count), attempts=6, first_wait_s=0.1)
    assert rows == [{"n": 2}]
    conn.close()


def test_status_payload_matches_paper_status_json(session_db: Path) -> None:
    """The page and ``nexlify paper status --json`` read the same numbers."""
    payload = read_session(session_db, status_payload)
    store = SessionStore(session_db)
    from nexlify.live.status import status_snapshot

    snap = status_snapshot(store)
    store.close()
    for key in ("equity", "today_pnl", "today_limit", "trades_total", "locked", "return_pct"):
        assert payload[key] == snap[key], key


def test_the_command_serves_until_ctrl_c(session_db: Path) -> None:
    """``nexlify paper serve --port 0`` prints where it listens, answers, and ends with exit 0
    on Ctrl-C."""
    command = [sys.executable, "-c", "from nexlify.cli import run; run()", "paper", "serve",
               "--db", str(session_db), "--port", "0"]  # fmt: skip

    # Ctrl-C's default action, whatever this process inherited: a test run started in the
    # background of a shell without job control ignores SIGINT, and so would the server
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)  # fmt: skip
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"watching .*live\.db at http://127\.0\.0\.1:(\d+)/", line)
        assert found, line
        url = f"http://127.0.0.1:{found.group(1)}/api/status"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read())["equity"] == 9_800.0
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)  # drains stderr: a full pipe would block its exit
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---- access rules ---------------------------------------------------------------------------
def test_other_bind_without_token_is_refused_at_start(session_db: Path) -> None:
    with pytest.raises(ConfigError, match=r"--host 0\.0\.0\.0: serving beyond this machine needs"):
        make_server(session_db, "0.0.0.0", 0)
    with pytest.raises(ConfigError, match="--token"):
        make_server(session_db, "example.org", 0)
    with pytest.raises(ConfigError, match="empty token"):
        make_server(session_db, "127.0.0.1", 0, token="")
    assert main(["paper", "serve", "--db", str(session_db), "--host", "0.0.0.0"]) == 2
    assert main(["paper", "serve", "--db", str(session_db.with_name("missing.db"))]) == 3


def test_a_file_that_is_not_a_session_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(DataError, match=r"junk\.db"):
        make_server(junk)


def test_token_is_required_on_every_route(session_db: Path, serve: Any) -> None:
    served = serve(session_db, token=TOKEN)  # a token given applies on loopback too
    for path in ("", "api/status", "api/curves", "static/plotly.min.js", "nothing-here"):
        assert served.get(path)[0] == 403, path
        assert served.get(f"{path}?token=wrong-{TOKEN}")[0] == 403, path
        assert served.get(path, {"Authorization": "Bearer nope"})[0] == 403, path
    assert served.get(f"api/status?token={TOKEN}")[0] == 200
    assert served.get("api/curves", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert served.get(f"?token={TOKEN}")[0] == 200


def test_ipv6_loopback_needs_no_token(session_db: Path, serve: Any) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        served = serve(session_db, host="::1")
    except ConfigError as exc:
        pytest.skip(f"cannot listen on ::1 here: {exc}")
    assert served.url.startswith("http://[::1]:")
    assert served.json("api/status")["equity"] == 9_800.0


def test_foreign_host_header_is_refused_without_token(session_db: Path, serve: Any) -> None:
    """DNS rebinding: a page on another site that resolves its name to 127.0.0.1."""
    served = serve(session_db)
    assert served.get("api/status", {"Host": "evil.example:8765"})[0] == 403
    assert served.get("api/status", {"Host": "localhost:8765"})[0] == 200


def test_no_key_in_any_response(
    session_db: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys planted in the environment, the session's config and an event message never come
    back, on any route, with or without the token."""
    monkeypatch.setenv(KEY_ENV, PLANTED)
    monkeypatch.setenv(SECRET_ENV, PLANTED_SECRET)
    monkeypatch.setenv(PASSWORD_ENV, "PLANTEDpass-9911")
    served = serve(session_db, token=TOKEN)
    bodies = []
    for path in ("", "api/status", "api/curves", "static/plotly.min.js", "nothing-here"):
        bodies.append(served.get(path)[1])
        bodies.append(served.get(f"{path}?token={TOKEN}")[1])
    text = b"\n".join(bodies)
    assert b"PLANTED" not in text
    assert b"bad apiKey ***" in text  # the event was there, masked


# ---- the page in a real browser -------------------------------------------------------------
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]  # fmt: skip


def test_page_renders_in_headless_chromium(session_db: Path, serve: Any, tmp_path: Path) -> None:
    """The page fetches its data, draws both charts and fills its tables; the screenshot shows
    the curves (plotly's line colour) where a blank page would show none."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (scripts/test.sh installs Debian's chromium)")
    served = serve(session_db, token=TOKEN)
    url = f"{served.url}?token={TOKEN}"
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
              "--virtual-time-budget=8000", "--run-all-compositor-stages-before-draw"]  # fmt: skip
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    page = dom.stdout
    assert len(re.findall(r'class="main-svg"', page)) >= 4  # two plotly charts drawn
    assert "9,800.00" in page and "40% of the daily loss limit used" in page
    assert "<td>BTC/USDT</td>" in page and "stop_loss sell 0.010000 @ 57,000.0000 (open)" in page
    assert "New entries blocked: ETH/USDT order cid-eth unconfirmed" in page
    assert "Stop requested at 2024-06-13T03:30:00+00:00 (flatten positions)" in page
    assert "cid-eth" in page and "<td>take</td>" in page and "<td>stop</td>" in page
    assert "feed gap: 1 bar(s) missing" in page and "bad apiKey" in page
    assert "2024-06-13 01:00" in page  # the position's entry time, formatted by the page
    banner = re.search(r'<p id="banner">([^<]*)</p>', page)
    assert banner is not None and banner.group(1) == ""  # no refresh error shown
    assert re.search(r'<span id="updated">updated \d\d:\d\d:\d\d UTC</span>', page)
    errors = [line for line in dom.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]  # fmt: skip
    assert not errors, errors
    shot = tmp_path / "watch.png"
    subprocess.run([*common, "--window-size=1280,1800", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    image = pytest.importorskip("PIL.Image")
    pixels = np.asarray(image.open(shot).convert("RGB")).astype(int)
    line = np.abs(pixels - np.array([99, 110, 250])).sum(axis=2) < 60  # plotly's first colour
    rows = np.nonzero(line.any(axis=1))[0]
    assert line.sum() > 300, "no curve drawn"
    bands = 1 + int((np.diff(rows) > 40).sum())  # runs of rows with the colour, 40 px apart
    assert bands >= 2, "the equity and the drawdown charts should both show a curve"
