"""Download candles (and funding rates) from an exchange through ccxt into the local store.

The downloader takes an exchange *object* with ccxt's interface (``load_markets``, ``markets``,
``has``, ``parse_timeframe``, ``rateLimit``, ``fetch_ohlcv``, ``fetch_funding_rate_history``), so
tests pass a local stand-in and never touch the network; :func:`make_exchange` builds the real one.

How a download behaves:

- Pages: ``fetch_ohlcv(symbol, tf, since=ms, limit=n)`` is called from ``since``; the next page
  starts one bar after the last bar received. Overlapping or repeated pages are de-duplicated
  (the first copy of a bar wins). An empty page ends the download; a page with nothing new is
  asked for once more (some exchanges serve a stale page) before giving up.
- The bar still forming (open time + timeframe after "now") is never stored.
- Rate-limit and network errors (``ccxt.NetworkError`` and its subclasses ``RateLimitExceeded``,
  ``DDoSProtection``, ``RequestTimeout``) are retried with exponential back-off
  (``base_delay * 2**k`` seconds, capped at ``max_delay``) through an injectable ``sleep``.
- Incremental: with candles already stored, only bars after the last stored bar are fetched;
  stored rows are never re-downloaded or overwritten. Holes inside the stored span are fetched
  only with ``fill_holes=True`` (an exchange that has no candle there leaves the hole).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from nexlify.data.candles import candles_from_dataframe, parse_pair
from nexlify.data.store import CandleStore, missing_bar_count
from nexlify.errors import ConfigError, DataError

T = TypeVar("T")
MS = 1000
DEFAULT_SINCE = "2017-01-01"
"""Start of a first download when no ``--since`` is given (most spot histories start later)."""


class ExchangeLike(Protocol):
    """The part of a ccxt exchange the downloader uses."""

    id: str
    rateLimit: int
    has: dict[str, Any]
    markets: dict[str, Any]

    def load_markets(self) -> dict[str, Any]: ...

    def parse_timeframe(self, timeframe: str) -> int: ...

    def fetch_ohlcv(
        self, symbol: str, timeframe: str = ..., since: int | None = ..., limit: int | None = ...
    ) -> list[list[float]]: ...


class DownloadUnavailableError(DataError):
    """The exchange cannot be reached or does not offer what was asked."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of rate-limit and network errors, with exponential back-off."""

    max_retries: int = 5
    """Retries of one request before giving up."""
    base_delay: float = 1.0
    """Seconds before the first retry; doubled on each further retry."""
    max_delay: float = 60.0
    """Longest wait between two tries, seconds."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (0-based)."""
        return float(min(self.max_delay, self.base_delay * 2**attempt))


@dataclass
class DownloadResult:
    """What one pair's download did."""

    pair: str
    timeframe: str
    fetched: int = 0
    """Bars received (after de-duplication)."""
    added: int = 0
    """Bars added to the store (new times only)."""
    requests: int = 0
    retries: int = 0
    gaps: int = 0
    """Bars missing inside the stored span after the download."""
    notes: list[str] = field(default_factory=list)


def _retry_errors() -> tuple[type[BaseException], ...]:
    import ccxt

    return (ccxt.NetworkError,)  # RateLimitExceeded, DDoSProtection, RequestTimeout included


def call_with_retry(
    request: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    on_retry: Callable[[], None] | None = None,
) -> T:
    """``request()``, retrying rate-limit and network errors with exponential back-off."""
    errors = _retry_errors()
    for attempt in range(policy.max_retries + 1):
        try:
            return request()
        except errors as exc:
            if attempt == policy.max_retries:
                raise DownloadUnavailableError(
                    f"{what}: still failing after {policy.max_retries} retries "
                    f"({type(exc).__name__}: {exc}); check the network or try again later"
                ) from exc
            if on_retry is not None:
                on_retry()
            sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


def make_exchange(exchange_id: str) -> Any:
    """A ccxt exchange with its built-in rate limiter on; ConfigError for an unknown id."""
    import ccxt

    if exchange_id not in ccxt.exchanges:
        raise ConfigError(
            f"--exchange {exchange_id!r}: not an exchange ccxt knows (e.g. binance, kucoin, "
            "kraken, okx, bybit)"
        )
    return getattr(ccxt, exchange_id)({"enableRateLimit": True})


def to_ms(when: str | pd.Timestamp) -> int:
    """A date (ISO 8601, UTC when naive) as unix milliseconds."""
    ts = pd.Timestamp(when)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.timestamp() * MS)


def check_market(exchange: ExchangeLike, pair: str, what: str = "fetchOHLCV") -> None:
    """Refuse early when the exchange lacks the pair or the endpoint."""
    parse_pair(pair)
    if not exchange.has.get(what):
        raise DownloadUnavailableError(f"{exchange.id}: does not offer {what} through ccxt")
    if pair not in exchange.markets:
        raise DataError(f"{exchange.id}: has no market {pair}; check the pair's spelling")


def fetch_ohlcv_range(
    exchange: ExchangeLike,
    pair: str,
    timeframe: str,
    since_ms: int,
    until_ms: int,
    *,
    limit: int = 1000,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    result: DownloadResult | None = None,
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Closed bars with open time in ``[since_ms, until_ms)``: float64 [n, 6] ms,o,h,l,c,v."""
    policy = policy or RetryPolicy()
    result = result or DownloadResult(pair, timeframe)
    step_ms = exchange.parse_timeframe(timeframe) * MS
    rows: dict[int, list[float]] = {}
    cursor, stalls = since_ms, 0
    while cursor < until_ms:
        at = cursor

        def request(at: int = at) -> list[list[float]]:
            return exchange.fetch_ohlcv(pair, timeframe, since=at, limit=limit)

        def count_retry() -> None:
            result.retries += 1

        page = call_with_retry(
            request, f"{exchange.id} {pair} {timeframe}", policy, sleep, count_retry
        )
        result.requests += 1
        new = [r for r in page if since_ms <= int(r[0]) < until_ms and int(r[0]) not in rows]
        for r in new:
            rows[int(r[0])] = [float(x) for x in r[:6]]
        if not new:
            stalls += 1
            beyond = not page or min(int(r[0]) for r in page) >= until_ms
            if beyond or stalls > 1:
                break
            continue  # a stale repeated page: ask once more from the same bar
        stalls = 0
        last = max(int(r[0]) for r in new)
        if advance is not None:
            advance(len(new))
        cursor = max(cursor, last + step_ms)
    result.fetched += len(rows)
    if not rows:
        return np.empty((0, 6))
    return np.array([rows[k] for k in sorted(rows)], dtype=np.float64)


def rows_to_frame(rows: np.ndarray, source: str, timeframe: str) -> pd.DataFrame:
    """ccxt OHLCV rows as a validated candle frame (DataError names the exchange and row)."""
    raw = pd.DataFrame(rows, columns=["date", "open", "high", "low", "close", "volume"])
    raw["date"] = raw["date"].astype(np.int64)
    return candles_from_dataframe(raw, name=source, timeframe=timeframe)


def _holes(frame: pd.DataFrame, step_ms: int) -> list[tuple[int, int]]:
    """[start_ms, end_ms) of each run of missing bars inside the stored span."""
    ms = pd.DatetimeIndex(frame.index).as_unit("ms").asi8
    jumps = np.flatnonzero(np.diff(ms) > step_ms)
    return [(int(ms[i]) + step_ms, int(ms[i + 1])) for i in jumps]


def download_candles(
    exchange: ExchangeLike,
    store: CandleStore,
    pair: str,
    timeframe: str,
    *,
    since: str | None = None,
    until: str | None = None,
    fill_holes: bool = False,
    limit: int = 1000,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now_ms: int | None = None,
    advance: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Fetch the bars the store lacks for one pair and merge them in (stored rows are kept)."""
    check_market(exchange, pair)
    result = DownloadResult(pair, timeframe)
    step_ms = exchange.parse_timeframe(timeframe) * MS
    now = now_ms if now_ms is not None else int(time.time() * MS)
    # The bar that opened less than one timeframe ago is still forming: exclude it.
    end = min(to_ms(until) if until else now, now - step_ms + 1)
    stored = store.read(exchange.id, pair, timeframe)
    ranges: list[tuple[int, int]] = []
    if stored is not None and fill_holes:
        ranges += _holes(stored, step_ms)
    start = to_ms(since or DEFAULT_SINCE)
    if stored is not None:
        first_ms = int(stored.index[0].timestamp() * MS)
        last_ms = int(stored.index[-1].timestamp() * MS)
        if since is not None and start < first_ms:
            ranges.append((start, first_ms))  # earlier history asked for explicitly
        start = max(start, last_ms + step_ms)
    ranges.append((start, end))
    source = f"{exchange.id} {pair} {timeframe}"
    for lo, hi in ranges:
        if lo >= hi:
            continue
        rows = fetch_ohlcv_range(
            exchange, pair, timeframe, lo, hi, limit=limit, policy=policy, sleep=sleep,
            result=result, advance=advance,
        )  # fmt: skip
        if len(rows):
            result.added += store.merge(
                exchange.id, pair, timeframe, rows_to_frame(rows, source, timeframe)
            )
    final = store.read(exchange.id, pair, timeframe)
    if final is not None:
        result.gaps = missing_bar_count(pd.DatetimeIndex(final.index), timeframe)
        if result.gaps:
            result.notes.append(
                f"{result.gaps} bars missing inside the stored span (the exchange has no candle "
                "there, or run again with --fill-holes)"
            )
    return result


def download_funding(
    exchange: Any,
    store: CandleStore,
    pair: str,
    *,
    since: str | None = None,
    limit: int = 1000,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Funding-rate history of ``pair``'s perpetual into the store; returns rows added.

    ``pair`` is the swap symbol ccxt uses (``BTC/USDT:USDT``) or the spot pair, which is mapped
    to the linear perpetual ``BASE/QUOTE:QUOTE``.
    """
    spot = pair.split(":")[0]
    symbol = pair if ":" in pair else f"{pair}:{parse_pair(pair)[1]}"
    if not exchange.has.get("fetchFundingRateHistory"):
        raise DownloadUnavailableError(f"{exchange.id}: does not offer fetchFundingRateHistory")
    policy = policy or RetryPolicy()
    stored = store.read_funding(exchange.id, spot)
    cursor = to_ms(since or "2019-09-01")
    if stored is not None and len(stored):
        cursor = max(cursor, int(stored.index[-1].timestamp() * MS) + 1)
    events: dict[int, float] = {}
    while True:
        at = cursor

        def request(at: int = at) -> list[dict[str, Any]]:
            return list(exchange.fetch_funding_rate_history(symbol, since=at, limit=limit))

        page = call_with_retry(request, f"{exchange.id} {symbol} funding", policy, sleep)
        new = {int(e["timestamp"]): float(e["fundingRate"]) for e in page}
        new = {k: v for k, v in new.items() if k >= cursor and k not in events}
        if not new:
            break
        events.update(new)
        cursor = max(new) + 1
    if not events:
        return 0
    keys = sorted(events)
    index = pd.DatetimeIndex(pd.to_datetime(keys, unit="ms", utc=True), name="date")
    frame = pd.DataFrame({"funding_rate": [events[k] for k in keys]}, index=index)
    return store.merge_funding(exchange.id, spot, frame)
