"""``nexlify paper serve``: a small local web page to watch a paper or live session run.

The server only reads the session database, opened read-only (``mode=ro``) in one short read
transaction per request, so it never delays the trading loop that writes it; a ``database is
locked`` answer is retried a few times with back-off before the page shows the error.

Access: bound to 127.0.0.1 by default. Any other address needs ``--token``, and every request
must then carry it (``?token=`` or ``Authorization: Bearer``), compared in constant time. Without
a token the server also checks the ``Host`` header, so a web page on another site cannot read it
through DNS rebinding. Responses never hold API keys: the database holds none, and the key,
secret and password found in the environment are masked in every response all the same.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
from rich.console import Console

from nexlify.errors import ConfigError, DataError
from nexlify.live.secrets import KEY_ENV, MASK, PASSWORD_ENV, SECRET_ENV
from nexlify.live.serve_page import REFRESH_SECONDS, watch_page_html
from nexlify.live.status import status_snapshot
from nexlify.live.store import SessionStore, utc_now

T = TypeVar("T")
log = logging.getLogger("nexlify.serve")

RECENT_TRADES = 20
RECENT_EVENTS = 50
READ_ATTEMPTS = 5
"""Tries of one read when SQLite answers busy/locked (waits 0.05, 0.1, 0.2, 0.4 s between)."""
FIRST_RETRY_WAIT_S = 0.05
DONE_ORDER_STATUSES = ("filled", "failed", "cancelled", "canceled", "closed", "rejected", "expired")
"""Order states that no longer rest on the exchange; anything else is shown as open."""
LOOPBACK_NAMES = ("localhost",)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'",
}


class ReadOnlySessionStore(SessionStore):
    """A session database opened read-only: the watcher can never change or lock it for writing."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 0.5) -> None:
        self.path = Path(path)
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout_s)
        self.conn.row_factory = sqlite3.Row


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def read_session(
    db: Path,
    read: Callable[[SessionStore], T],
    attempts: int = READ_ATTEMPTS,
    first_wait_s: float = FIRST_RETRY_WAIT_S,
) -> T:
    """``read(store)`` inside one read transaction (a consistent snapshot), retried when busy."""
    for attempt in range(attempts):
        try:
            store = ReadOnlySessionStore(db)
            try:
                store.conn.execute("BEGIN")
                try:
                    return read(store)
                finally:
                    store.conn.execute("ROLLBACK")
            finally:
                store.close()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise DataError(f"{db}: cannot read the session database ({exc})") from exc
            if attempt == attempts - 1:
                raise DataError(
                    f"{db}: the database stayed locked through {attempts} tries ({exc})"
                ) from exc
            time.sleep(first_wait_s * 2**attempt)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{db}: not a readable session database ({exc})") from exc
    raise AssertionError("unreachable")


def open_orders(store: SessionStore) -> list[dict[str, Any]]:
    """Exchange orders still resting or unconfirmed (not the simulator's own fills)."""
    marks = ", ".join("?" for _ in DONE_ORDER_STATUSES)
    return store.rows(
        f"SELECT * FROM orders WHERE kind != 'sim' AND status NOT IN ({marks}) ORDER BY id",
        DONE_ORDER_STATUSES,
    )


def _rows_if_table(store: SessionStore, table: str, sql: str) -> list[dict[str, Any]]:
    """``sql``'s rows, or none where the table is absent (a session of an older schema, which
    this read-only reader cannot migrate)."""
    found = store.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return store.rows(sql) if found else []


def live_alerts(store: SessionStore) -> dict[str, Any]:
    """Why new entries are blocked (live reconciliation), and a stop request not yet handled."""
    blocked = _rows_if_table(store, "live_state", "SELECT entries_blocked FROM live_state")
    stops = _rows_if_table(
        store, "control", "SELECT * FROM control WHERE handled_at IS NULL ORDER BY id DESC LIMIT 1"
    )
    return {
        "entries_blocked": blocked[0]["entries_blocked"] if blocked else None,
        "stop_requested": stops[0] if stops else None,
    }


def status_payload(store: SessionStore) -> dict[str, Any]:
    """What ``api/status`` answers: the status snapshot, positions with their resting orders,
    orders with no position (to check by hand), more events, and the share of today's limit."""
    snap = status_snapshot(store, recent=RECENT_TRADES)
    orders = open_orders(store)
    held = {p["pair"] for p in snap["positions"]}
    for position in snap["positions"]:
        position["orders"] = [o for o in orders if o["pair"] == position["pair"]]
    snap["orders_without_position"] = [o for o in orders if o["pair"] not in held]
    snap["events"] = store.rows("SELECT * FROM events ORDER BY id DESC LIMIT ?", (RECENT_EVENTS,))
    snap["warnings"] = sum(e["level"] in ("warning", "error") for e in snap["events"])
    if "today_pnl" in snap:
        loss = max(0.0, -snap["today_pnl"])
        limit = -snap["today_limit"]
        snap["limit_used_pct"] = loss / limit * 100.0 if limit > 0 else 0.0
    snap.update(live_alerts(store))
    snap["db"] = store.path.name  # the name only: the page need not show the machine's folders
    snap["served_at"] = utc_now()
    return snap


def curves_payload(store: SessionStore) -> dict[str, Any]:
    """What ``api/curves`` answers: the equity and drawdown figures (plotly JSON), or None
    while the session has not traded a bar."""
    from nexlify.live.session_report import session_equity_figures

    rows = store.rows("SELECT bar_time, equity FROM equity ORDER BY bar_time")
    if not rows:
        return {"equity": None, "drawdown": None, "last_bar": None}
    values = np.array([row["equity"] for row in rows], dtype=np.float64)
    curve, drawdown = session_equity_figures([row["bar_time"] for row in rows], values)
    return {
        "equity": json.loads(curve.to_json()),
        "drawdown": json.loads(drawdown.to_json()),
        "last_bar": rows[-1]["bar_time"],
    }


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def environment_secrets(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The exchange credentials in the environment, longest first (masked in every response)."""
    env = dict(os.environ) if environ is None else environ
    values = {env.get(name, "") for name in (KEY_ENV, SECRET_ENV, PASSWORD_ENV)}
    return tuple(sorted((v for v in values if v), key=len, reverse=True))


class WatchServer(ThreadingHTTPServer):
    """The HTTP server of one session database (one thread per request)."""

    daemon_threads = True

    def __init__(self, db: Path, host: str, port: int, token: str | None) -> None:
        self.db = db
        self.token = token
        self.secrets = environment_secrets()
        self.page = self.redact(watch_page_html(db.name, REFRESH_SECONDS)).encode()
        import plotly.offline

        self.plotly_js = plotly.offline.get_plotlyjs().encode()
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), WatchHandler)

    @property
    def url(self) -> str:
        address, port = self.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def token_ok(self, given: str | None) -> bool:
        if self.token is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


class WatchHandler(BaseHTTPRequestHandler):
    """Routes: ``/`` (the page), ``/api/status``, ``/api/curves``, ``/static/plotly.min.js``."""

    server: WatchServer
    server_version = "nexlify-watch"
    sys_version = ""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._allowed(url.query):
            return
        if url.path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.page)
        elif url.path == "/static/plotly.min.js":
            self._send(HTTPStatus.OK, "text/javascript; charset=utf-8", self.server.plotly_js)
        elif url.path == "/api/status":
            self._send_json(status_payload)
        elif url.path == "/api/curves":
            self._send_json(curves_payload)
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "no such page")

    def _allowed(self, query: str) -> bool:
        server = self.server
        if server.token is None and not self._host_header_ok():
            self._send_error(HTTPStatus.FORBIDDEN, "Host header not allowed (loopback only)")
            return False
        given = parse_qs(query).get("token", [None])[0]
        bearer = self.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = bearer[len("Bearer ") :]
        if not server.token_ok(given):
            self._send_error(HTTPStatus.FORBIDDEN, "a valid token is required (?token=)")
            return False
        return True

    def _host_header_ok(self) -> bool:
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        return is_loopback(host)

    def _send_json(self, build: Callable[[SessionStore], dict[str, Any]]) -> None:
        try:
            payload = read_session(self.server.db, build)
        except DataError as exc:
            log.warning("%s", exc)
            self._send_error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
            return
        body = self.server.redact(json.dumps(payload, default=str))
        self._send(HTTPStatus.OK, "application/json", body.encode())

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        body = self.server.redact(json.dumps({"error": message}))
        self._send(status, "application/json", body.encode())

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # the request line may carry ?token=: log the path only, at debug level
        log.debug("%s %s", self.command, urlsplit(self.path).path)


def make_server(db: str | Path, host: str = "127.0.0.1", port: int = 8765,
                token: str | None = None) -> WatchServer:  # fmt: skip
    """A server for the session database ``db`` (not started: call ``serve_forever``)."""
    path = Path(db)
    if not path.is_file():
        raise DataError(f"{path}: no such session database")
    if token is not None and not token:
        raise ConfigError("--token: an empty token protects nothing; give a long random one")
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host}: serving beyond this machine needs --token (every request must then "
            "carry it); or keep the default --host 127.0.0.1"
        )
    read_session(path, lambda store: store.session())  # a clear error now, not on each request
    try:
        return WatchServer(path, host, port, token)
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc})") from exc


def start_serve(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify paper serve``: serve until Ctrl-C."""
    server = make_server(args.db, args.host, args.port, args.token)
    hint = " (add ?token=<your token> to the address)" if args.token else ""
    console.print(  # one line, never wrapped: the address is copied from it
        f"watching {args.db} at {server.url}{hint}; Ctrl-C stops", highlight=False, soft_wrap=True
    )
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()
    return 0
