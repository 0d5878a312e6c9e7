"""Polling feed: closed candles from an exchange through ccxt's public ``fetch_ohlcv``.

Takes an exchange *object* with ccxt's interface (``fetch_ohlcv(symbol, timeframe, since,
limit)``, ``milliseconds()``, optionally ``fetch_time()``), so tests pass a local stand-in.

- Only closed candles: a candle is closed when a later candle of the pair exists, or when the
  exchange clock is past its close by ``grace_s``. The exchange clock is the local clock plus
  an offset measured with ``fetch_time()`` at start (skew above 1 s is logged), so a local clock
  running ahead cannot make a still-open candle look closed.
- Missed candles: each poll asks from the bar after the cursor, so bars missed while the
  process was down or asleep are fetched (in pages of ``page_limit``). A bar the exchange does
  not have for any pair is a gap: the trader logs it and protects positions (see ``trader``).
- A bar is delivered once every pair has it (or has a later one: that pair has a gap there).
- Network and rate-limit errors are retried with exponential back-off through an injectable
  ``sleep`` (``ccxt.NetworkError`` and subclasses); after ``max_retries`` a DataError stops the
  session, which continues exactly where it stopped when started again. ``retries`` counts
  them, so live trading can reconcile the account after a reconnect.
- Waiting for the next candle is done in steps of at most ``poll_s``, asking ``should_stop``
  between them: a stop request (``nexlify paper stop``, SIGTERM) ends the wait (``None``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from nexlify.config import timeframe_seconds
from nexlify.errors import DataError
from nexlify.live.feeds import Bar

MS = 1000


def _network_errors() -> tuple[type[BaseException], ...]:
    try:
        import ccxt
    except ImportError:  # pragma: no cover - ccxt is a dependency
        return (ConnectionError, TimeoutError)
    return (ccxt.NetworkError, ConnectionError, TimeoutError)


class PollingFeed:
    """Closed candles of several pairs from a ccxt-like exchange."""

    name = "poll"

    def __init__(
        self,
        exchange: Any,
        pairs: Sequence[str],
        timeframe: str,
        *,
        history_bars: int = 1000,
        grace_s: float = 5.0,
        poll_s: float | None = None,
        page_limit: int = 500,
        max_retries: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
    ) -> None:
        self.exchange = exchange
        self.pairs = tuple(pairs)
        self.timeframe = timeframe
        self.step_ms = timeframe_seconds(timeframe) * MS
        self.history_bars = history_bars
        self.grace_ms = int(grace_s * MS)
        self.poll_s = poll_s if poll_s is not None else min(10.0, self.step_ms / MS / 10)
        self.page_limit = page_limit
        self.max_retries, self.base_delay, self.max_delay = max_retries, base_delay, max_delay
        self.sleep = sleep
        self.log = logger or logging.getLogger("nexlify.paper.feed")
        self.offset_ms = 0
        self.retries = 0
        self.should_stop: Callable[[], bool] = lambda: False
        self._errors = _network_errors()
        self.measure_clock_skew()

    # ---- clock -------------------------------------------------------------------------------
    def measure_clock_skew(self) -> None:
        """Exchange time minus local time, from ``fetch_time()`` when the exchange has it."""
        fetch_time = getattr(self.exchange, "fetch_time", None)
        if fetch_time is None:
            return
        before = int(self.exchange.milliseconds())
        server = self._retry(lambda: fetch_time(), "fetch_time")
        after = int(self.exchange.milliseconds())
        if server is None:
            return
        self.offset_ms = int(server) - (before + after) // 2
        if abs(self.offset_ms) > MS:
            self.log.warning(
                "local clock is %+.1f s off the exchange clock; using the exchange's",
                -self.offset_ms / MS,
            )

    def now_ms(self) -> int:
        return int(self.exchange.milliseconds()) + self.offset_ms

    # ---- requests ----------------------------------------------------------------------------
    def _retry(self, request: Callable[[], Any], what: str) -> Any:
        for attempt in range(self.max_retries + 1):
            try:
                return request()
            except self._errors as exc:
                if attempt == self.max_retries:
                    raise DataError(
                        f"{what}: still failing after {self.max_retries} retries "
                        f"({type(exc).__name__}); check the network and start "
                        "again: the session continues where it stopped"
                    ) from None
                delay = min(self.max_delay, self.base_delay * 2**attempt)
                self.retries += 1
                self.log.warning(
                    "%s failed (%s); retrying in %.0f s", what, type(exc).__name__, delay
                )
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _fetch(self, pair: str, since: int) -> list[list[float]]:
        return list(
            self._retry(
                lambda: self.exchange.fetch_ohlcv(pair, self.timeframe, since, self.page_limit),
                f"fetch_ohlcv {pair} {self.timeframe}",
            )
            or []
        )

    def _closed_rows(self, pair: str, since_ms: int) -> list[list[float]]:
        """Closed candles of ``pair`` from ``since_ms`` (all pages)."""
        rows: list[list[float]] = []
        since = since_ms
        while True:
            page = self._fetch(pair, since)
            fresh = [r for r in page if int(r[0]) >= since and (not rows or r[0] > rows[-1][0])]
            rows += fresh
            if len(page) < self.page_limit or not fresh:
                break
            since = int(fresh[-1][0]) + self.step_ms
        now = self.now_ms()
        if rows and int(rows[-1][0]) + self.step_ms + self.grace_ms > now:
            rows.pop()  # still open (or too close to its close to trust the clocks)
        return rows

    def _bars(self, since_ms: int) -> list[Bar]:
        per_pair = {p: self._closed_rows(p, since_ms) for p in self.pairs}
        if any(not rows for rows in per_pair.values()):
            return []
        complete_until = min(int(rows[-1][0]) for rows in per_pair.values())
        by_time: dict[int, dict[str, tuple[float, float, float, float, float]]] = {}
        for pair, rows in per_pair.items():
            for r in rows:
                if int(r[0]) <= complete_until:
                    o, h, lo, c, v = (float(x) for x in r[1:6])
                    by_time.setdefault(int(r[0]) // MS, {})[pair] = (o, h, lo, c, v)
        return [Bar(t, by_time[t]) for t in sorted(by_time)]

    # ---- Feed protocol -------------------------------------------------------------------------
    def initial_bars(self) -> list[Bar]:
        since = self.now_ms() - (self.history_bars + 1) * self.step_ms
        bars = self._bars(since - since % self.step_ms)
        if not bars:
            name = getattr(self.exchange, "id", "exchange")
            raise DataError(
                f"{name}: no closed {self.timeframe} candles for "
                f"{', '.join(self.pairs)}; check the pairs and timeframe"
            )
        return bars

    def next_bars(self, after: int | None) -> list[Bar] | None:
        if after is None:
            return self.initial_bars()
        while not self.should_stop():
            bars = [b for b in self._bars((after * MS) + self.step_ms) if b.time > after]
            if bars:
                return bars
            next_close = (after * MS) + 2 * self.step_ms + self.grace_ms
            wait = min(3600.0, max(self.poll_s, (next_close - self.now_ms()) / MS))
            while wait > 0 and not self.should_stop():
                self.sleep(min(wait, self.poll_s))  # short steps: a stop request ends the wait
                wait -= self.poll_s
        return None
