"""Webhook notifications of a running session (``nexlify paper --notify URL``).

Entries, closed trades, stops, feed gaps, retrains and errors are posted as JSON to a URL. The
notifier follows the session *database*, not the trading loop: a background thread reads the rows
committed since it started (``orders``, ``trades``, ``events``) every ``poll_s`` seconds into a
small bounded queue and posts them. So the loop never waits for a webhook, a bar that was
rolled back is never announced, and no hook into the trader is needed.

Each post is tried ``attempts`` times with doubling back-off (1, 2, 4 s); a 4xx other than
408/429 is not retried. A notification that cannot be delivered is logged and recorded as a
``notify`` warning event; it never stops the session. The URL's path, query and user info (where
webhook services keep their secret) are masked in every log line and event. Delivery is at most
once: what is still queued when the session ends gets ``close_timeout_s`` to go out.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from nexlify.errors import InterruptedRunError
from nexlify.live.secrets import Credentials
from nexlify.live.store import utc_now

STOP_REASONS = ("stop", "trail", "limit")
"""Trade exit reasons that are a risk rule closing the position (stop-loss, trailing stop,
daily loss limit), announced as ``stop``; the other exits are ``trade``."""
NOTIFY_EVENT = "notify"
RETRY_STATUSES = (408, 429)


@dataclass(frozen=True)
class NotifySettings:
    """Where and how notifications are posted."""

    url: str
    """The webhook (http or https)."""
    poll_s: float = 2.0
    """How often the session database is read for new rows."""
    attempts: int = 4
    """Tries per notification (the first and three retries)."""
    first_backoff_s: float = 1.0
    """Wait before the first retry; doubled before each next one."""
    timeout_s: float = 10.0
    """Per request."""
    queue_size: int = 256
    """Notifications held at once; the database is read no further until there is room."""
    close_timeout_s: float = 15.0
    """How long the end of the session waits for the last notifications."""


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` and ``/***`` in place of a path, query or user info."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment or parts.username
    return shown + ("/***" if hidden else "/")


def webhook_url(value: str) -> str:
    """argparse type of ``--notify``: an http(s) URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{redact_url(value)}: give an http:// or https:// webhook URL with a host"
        )
    return value


def _iso(t: int | None) -> str | None:
    return None if t is None else pd.Timestamp(int(t), unit="s", tz="UTC").isoformat()


def trade_notice(trade: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, level, text) of a closed trade."""
    kind = "stop" if trade["reason"] in STOP_REASONS else "trade"
    text = (f"{trade['pair']} closed ({trade['reason']}): {trade['pnl']:+.2f} "
            f"({trade['return'] * 100:+.2f}%) at {trade['exit_price']:.6g}")  # fmt: skip
    return kind, "warning" if kind == "stop" else "info", text


def entry_notice(order: dict[str, Any]) -> tuple[str, str, str]:
    price = order["price"] or 0.0
    return "entry", "info", f"{order['pair']} bought {order['amount']:.6g} at {price:.6g}"


def event_notice(event: dict[str, Any]) -> tuple[str, str, str] | None:
    """Gaps, retrains (swapped, kept or discarded) and errors are announced; other events
    (restarts, held-back buys) are not."""
    if event["kind"] == NOTIFY_EVENT:
        return None
    if event["kind"] in ("gap", "retrain"):
        return event["kind"], event["level"], event["message"]
    if event["level"] == "error":
        return "error", "error", f"{event['kind']}: {event['message']}"
    return None


class SessionNotifier:
    """Follows one session database and posts what it commits; see the module docstring."""

    def __init__(
        self,
        db: Path,
        settings: NotifySettings,
        logger: logging.Logger | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.log = logger or logging.getLogger("nexlify.paper")
        self.extra_redact = redact
        self.pending: queue.Queue[dict[str, Any]] = queue.Queue(settings.queue_size)
        self.after = {"orders": 0, "trades": 0, "events": 0}
        self.delivered = 0
        self.failed = 0
        self.stopping = threading.Event()
        self.deadline = float("inf")
        self.thread = threading.Thread(target=self._run, name="nexlify-notify", daemon=True)
        self.session: dict[str, Any] = {}
        self.ending = ("session_end", "info", "session ended")

    # ---- the session's side (never blocks) ------------------------------------------------
    def start(self) -> SessionNotifier:
        """Announce only what is committed from now on; start the delivery thread."""
        conn = self._connect()
        try:
            for table in self.after:
                last = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()
                self.after[table] = int(last[0])
            row = conn.execute("SELECT mode, pairs FROM session WHERE id = 1").fetchone()
        finally:
            conn.close()
        self.session = {"mode": row[0], "pairs": json.loads(row[1])} if row else {}
        self._enqueue("session_start", "info", "session started; notifications follow", None, {})
        self.thread.start()
        return self

    def close(self, error: BaseException | None = None) -> None:
        """Announce the end (and its error), then wait at most ``close_timeout_s`` for delivery."""
        if error is None or isinstance(error, KeyboardInterrupt | InterruptedRunError):
            self.ending = ("session_end", "info", "session ended")
        else:
            self.ending = ("error", "error", f"session stopped: {error}")
        self.deadline = time.monotonic() + self.settings.close_timeout_s
        self.stopping.set()
        self.thread.join(self.settings.close_timeout_s + 1.0)
        left = self.pending.qsize()
        if left or self.thread.is_alive():
            self.log.warning("%d notification(s) not sent before the end", max(left, 1))

    # ---- the delivery thread --------------------------------------------------------------
    def _run(self) -> None:
        while not self.stopping.is_set():
            self._step()
            self.stopping.wait(self.settings.poll_s)
        while self._step() and time.monotonic() < self.deadline:
            pass  # what the last bars committed, before the end notice
        self._enqueue(*self.ending, None, {})
        self._deliver_queued()

    def _step(self) -> bool:
        """Read new rows and post them; True when there were rows to read."""
        try:
            read = self._collect()
            self._deliver_queued()
            return read > 0
        except Exception as exc:  # a notifier must never take the session down
            self.log.warning("notifications: %s", self._redact(repr(exc)))
            return False

    def _connect(self) -> sqlite3.Connection:
        uri = f"{self.db.resolve().as_uri()}?mode=rw"  # never creates the file
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)

    def _collect(self) -> int:
        """Queue the rows committed since the last read (no more than the queue has room for);
        the number of rows read."""
        room = self.settings.queue_size - self.pending.qsize()
        if room <= 0:
            return 0
        read = 0
        conn = self._connect()
        conn.row_factory = sqlite3.Row
        try:
            for table, notice in (("orders", entry_notice), ("trades", trade_notice)):
                sql = f"SELECT * FROM {table} WHERE id > ? ORDER BY id LIMIT ?"
                for row in map(dict, conn.execute(sql, (self.after[table], room))):
                    self.after[table], read = row["id"], read + 1
                    if table == "orders" and (row["kind"], row["side"]) != ("sim", "buy"):
                        continue
                    bar_time = row.get("bar_time", row.get("exit_time"))  # trades: the exit
                    room -= self._enqueue(*notice(row), bar_time, row)
            sql = "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?"
            for row in map(dict, conn.execute(sql, (self.after["events"], max(room, 0)))):
                self.after["events"], read = row["id"], read + 1
                said = event_notice(row)
                if said is not None:
                    self._enqueue(*said, row["bar_time"], row)
        finally:
            conn.close()
        return read

    def _enqueue(
        self, kind: str, level: str, text: str, bar_time: int | None, details: dict[str, Any]
    ) -> int:
        payload = {
            "source": "nexlify",
            "session": self.db.name,
            **self.session,
            "kind": kind,
            "level": level,
            "at": utc_now(),
            "bar_time": _iso(bar_time),
            "text": f"nexlify {self.db.name}: {text}",
            "details": {k: v for k, v in details.items() if k != "id"},
        }
        try:
            self.pending.put_nowait(payload)
        except queue.Full:
            self.log.warning("notification queue full: %s not sent", kind)
            return 0
        return 1

    def _deliver_queued(self) -> None:
        while True:
            try:
                payload = self.pending.get_nowait()
            except queue.Empty:
                return
            if time.monotonic() > self.deadline:
                self.pending.put_nowait(payload)  # counted as not sent by close()
                return
            self._deliver(payload)

    def _deliver(self, payload: dict[str, Any]) -> None:
        body = self._redact(json.dumps(payload, default=str)).encode()
        wait = self.settings.first_backoff_s
        reason = ""
        for attempt in range(1, self.settings.attempts + 1):
            retry, reason = self._post(body)
            if not reason:
                self.delivered += 1
                return
            if not retry or attempt == self.settings.attempts:
                break
            if time.monotonic() + wait > self.deadline:
                reason += "; the session was ending"
                break
            time.sleep(wait)
            wait *= 2
        self.failed += 1
        self._record_failure(payload["kind"], attempt, reason)

    def _post(self, body: bytes) -> tuple[bool, str]:
        """One POST: (worth retrying, failure reason or "")."""
        request = urllib.request.Request(
            self.settings.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "nexlify-notify"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                response.read()
            return False, ""
        except urllib.error.HTTPError as exc:
            retry = exc.code >= 500 or exc.code in RETRY_STATUSES
            return retry, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return True, str(getattr(exc, "reason", exc))

    def _record_failure(self, kind: str, attempts: int, reason: str) -> None:
        message = self._redact(
            f"webhook {redact_url(self.settings.url)}: {kind} notification not delivered "
            f"after {attempts} attempt(s) ({reason})"
        )
        self.log.warning("%s", message)
        try:
            conn = self._connect()
            try:
                conn.execute(
                    "INSERT INTO events (at, bar_time, level, kind, message) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (utc_now(), None, "warning", NOTIFY_EVENT, message),
                )
            finally:
                conn.close()
        except sqlite3.Error as exc:
            self.log.warning("could not record the failed notification: %s", exc)

    def _redact(self, text: str) -> str:
        text = text.replace(self.settings.url, redact_url(self.settings.url))
        parts = urlsplit(self.settings.url)
        for secret in (parts.path, parts.query, parts.username, parts.password):
            if secret and secret != "/":
                text = text.replace(secret, "***")
        return self.extra_redact(text) if self.extra_redact else text


def start_notifier(
    url: str | None,
    db: str | Path,
    logger: logging.Logger | None = None,
    credentials: Credentials | None = None,
) -> SessionNotifier | None:
    """A started notifier for the session in ``db`` (None without a URL); live keys are masked
    in whatever it sends or logs."""
    if not url:
        return None
    redact = credentials.redact if credentials is not None else None
    return SessionNotifier(Path(db), NotifySettings(url), logger, redact).start()


def close_notifier(notifier: SessionNotifier | None) -> None:
    """Call from the session's ``finally``: announces the end, or the error it is ending with."""
    if notifier is not None:
        notifier.close(sys.exception())
