"""The kill switch: stop requests written to the session database, noticed by the running session.

``nexlify paper stop --db PATH [--flatten]`` (another process) and SIGTERM (this one) write a row
to the ``control`` table. The running session checks it before each feed request and while
waiting for the next candle (:class:`StoppableFeed`), ends its loop, optionally flattens the live
account (protective orders cancelled first, then market sells) and marks the request handled
with what it did. A request left unhandled (no session was running) is honoured at the next
start, before any bar is processed or order sent.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from nexlify.live.feeds import Bar, Feed
from nexlify.live.store import SessionStore, utc_now


def request_stop(store: SessionStore, flatten: bool, source: str) -> int:
    """Record a stop request; returns its id."""
    with store.transaction() as c:
        cur = c.execute(
            "INSERT INTO control (requested_at, source, flatten) VALUES (?, ?, ?)",
            (utc_now(), source, int(flatten)),
        )
        store.add_event(
            "stop_requested",
            f"stop requested by {source}" + (" (flatten positions)" if flatten else ""),
            "warning",
            None,
            c,
        )
    return int(cur.lastrowid or 0)


def pending_stop(store: SessionStore) -> dict[str, Any] | None:
    """The oldest unhandled stop request, with ``flatten`` true if any pending one asks it."""
    rows = store.rows("SELECT * FROM control WHERE handled_at IS NULL ORDER BY id")
    if not rows:
        return None
    first = dict(rows[0])
    first["flatten"] = any(r["flatten"] for r in rows)
    return first


def mark_stop_handled(store: SessionStore, outcome: str) -> None:
    """Close every pending request with ``outcome`` and record the stop as an event."""
    with store.transaction() as c:
        c.execute(
            "UPDATE control SET handled_at = ?, outcome = ? WHERE handled_at IS NULL",
            (utc_now(), outcome),
        )
        store.add_event("stopped", f"session stopped: {outcome}", "warning", None, c)


class StopSignal:
    """Set by the SIGTERM handler; the loop turns it into a stop request (the handler itself
    must not write: it may run while the main connection holds the write lock)."""

    def __init__(self) -> None:
        self.received = False

    def install(self, log: logging.Logger) -> Callable[[], None]:
        """Catch SIGTERM; returns a function that restores the previous handler."""
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            log.warning("SIGTERM: the session stops at its next loop")
            self.received = True

        signal.signal(signal.SIGTERM, on_sigterm)

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)

        return restore


class StoppableFeed:
    """A feed that ends (``None``) once a stop request is pending in the session database."""

    def __init__(self, feed: Feed, store: SessionStore, sigterm: StopSignal | None = None) -> None:
        self.feed = feed
        self.store = store
        self.sigterm = sigterm or StopSignal()
        self.name = feed.name

    def stop_requested(self) -> bool:
        if self.sigterm.received and pending_stop(self.store) is None:
            request_stop(self.store, flatten=False, source="SIGTERM")
        return pending_stop(self.store) is not None

    def initial_bars(self) -> list[Bar]:
        return self.feed.initial_bars()

    def next_bars(self, after: int | None) -> list[Bar] | None:
        if self.stop_requested():
            return None
        bars = self.feed.next_bars(after)
        # a stop that came while waiting wins: the bar stays unprocessed (the cursor did not
        # move), so a later start takes it again
        return None if self.stop_requested() else bars
