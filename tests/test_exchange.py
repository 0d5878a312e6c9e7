"""Downloader against a local stand-in exchange (ccxt's contract, no network)."""

from __future__ import annotations

from typing import Any

import ccxt
import numpy as np
import pandas as pd
import pytest

from nexlify.data.exchange import (
    DownloadUnavailableError,
    RetryPolicy,
    download_candles,
    download_funding,
    fetch_ohlcv_range,
    make_exchange,
    to_ms,
)
from nexlify.data.store import CandleStore
from nexlify.errors import ConfigError, DataError

H = 3_600_000
T0 = to_ms("2024-01-01")


def bar(k: int) -> list[float]:
    """Bar k hours after T0 with close 100 + k."""
    c = 100.0 + k
    return [float(T0 + k * H), c, c + 1, c - 1, c, 10.0]


class StandInExchange:
    """ccxt-like exchange serving ``n_bars`` hourly bars from T0, with optional faults."""

    id = "standin"
    rateLimit = 0

    def __init__(
        self,
        n_bars: int,
        page: int = 3,
        missing: tuple[int, ...] = (),
        fail_first: int = 0,
        overlap: int = 0,
        repeat_page: bool = False,
    ) -> None:
        self.bars = [bar(k) for k in range(n_bars) if k not in missing]
        self.page = page
        self.fail_first = fail_first
        self.overlap = overlap
        self.repeat_page = repeat_page
        self.calls: list[int] = []
        self.has: dict[str, Any] = {"fetchOHLCV": True, "fetchFundingRateHistory": True}
        self.markets: dict[str, Any] = {"BTC/USDT": {}, "BTC/USDT:USDT": {}}

    def load_markets(self) -> dict[str, Any]:
        return self.markets

    def parse_timeframe(self, timeframe: str) -> int:
        return {"1h": 3600}[timeframe]

    def fetch_ohlcv(
        self, symbol: str, timeframe: str = "1h", since: int | None = None, limit: int | None = None
    ) -> list[list[float]]:
        self.calls.append(int(since or 0))
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ccxt.RateLimitExceeded("429 too many requests")
        if self.repeat_page and len(self.calls) == 2:
            since = self.calls[0]  # the exchange ignores `since` once: same page again
        start = (since or 0) - self.overlap * H
        rows = [b for b in self.bars if b[0] >= start]
        return [list(r) for r in rows[: min(limit or self.page, self.page)]]

    def fetch_funding_rate_history(
        self, symbol: str, since: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        events = [
            {"symbol": symbol, "timestamp": T0 + k * 8 * H, "fundingRate": 0.0001 * (k + 1)}
            for k in range(5)
        ]
        return [e for e in events if e["timestamp"] >= (since or 0)][:2]


def now_after(n_bars: int) -> int:
    """'Now' such that bars 0 .. n_bars-1 are closed and bar n_bars is still forming."""
    return T0 + n_bars * H + H // 2


def closes(store: CandleStore) -> list[float]:
    frame = store.read("standin", "BTC/USDT", "1h")
    assert frame is not None
    return frame["close"].tolist()


def test_pagination_fetches_every_closed_bar(tmp_path: Any) -> None:
    ex = StandInExchange(n_bars=8, page=3)
    store = CandleStore(tmp_path)
    res = download_candles(
        ex, store, "BTC/USDT", "1h", since="2024-01-01", now_ms=now_after(7), sleep=lambda s: None
    )
    # bar 7 opened 30 minutes before "now": still forming, not stored
    assert closes(store) == [100.0 + k for k in range(7)]
    assert res.added == 7 and res.gaps == 0
    assert ex.calls == [T0, T0 + 3 * H, T0 + 6 * H]  # third page ends the range
    assert store.candle_path("standin", "BTC/USDT", "1h").name == "BTC_USDT-1h.parquet"


def test_rate_limit_is_retried_with_exponential_backoff(tmp_path: Any) -> None:
    ex = StandInExchange(n_bars=4, page=10, fail_first=2)
    waits: list[float] = []
    res = download_candles(
        ex, CandleStore(tmp_path), "BTC/USDT", "1h", since="2024-01-01", now_ms=now_after(4),
        sleep=waits.append, policy=RetryPolicy(max_retries=3, base_delay=0.5),
    )  # fmt: skip
    assert waits == [0.5, 1.0]
    assert res.retries == 2 and res.added == 4


def test_retries_exhausted_raise_unavailable(tmp_path: Any) -> None:
    ex = StandInExchange(n_bars=4, fail_first=10)
    with pytest.raises(DownloadUnavailableError, match="still failing after 2 retries"):
        download_candles(
            ex, CandleStore(tmp_path), "BTC/USDT", "1h", since="2024-01-01",
            now_ms=now_after(4), sleep=lambda s: None, policy=RetryPolicy(max_retries=2),
        )  # fmt: skip


def test_missing_candle_is_left_as_a_gap_and_reported(tmp_path: Any) -> None:
    ex = StandInExchange(n_bars=6, page=10, missing=(2,))
    store = CandleStore(tmp_path)
    res = download_candles(
        ex, store, "BTC/USDT", "1h", since="2024-01-01", now_ms=now_after(6), sleep=lambda s: None
    )
    assert closes(store) == [100.0, 101.0, 103.0, 104.0, 105.0]  # never invented
    assert res.gaps == 1 and "1 bars missing" in res.notes[0]


@pytest.mark.parametrize("fault", [{"overlap": 2}, {"repeat_page": True}])
def test_overlapping_or_repeated_pages_are_deduplicated(tmp_path: Any, fault: Any) -> None:
    ex = StandInExchange(n_bars=7, page=3, **fault)
    rows = fetch_ohlcv_range(ex, "BTC/USDT", "1h", T0, T0 + 7 * H, sleep=lambda s: None)
    assert rows[:, 0].tolist() == [T0 + k * H for k in range(7)]
    assert rows[:, 4].tolist() == [100.0 + k for k in range(7)]


def test_incremental_update_fetches_only_after_the_last_stored_bar(tmp_path: Any) -> None:
    store = CandleStore(tmp_path)
    ex = StandInExchange(n_bars=4, page=10)
    download_candles(
        ex, store, "BTC/USDT", "1h", since="2024-01-01", now_ms=now_after(4), sleep=lambda s: None
    )
    # the exchange now reports different prices for old bars: stored rows must stay
    later = StandInExchange(n_bars=6, page=10)
    later.bars = [[b[0], b[1] * 2, b[2] * 2, b[3] * 2, b[4] * 2, b[5]] for b in later.bars]
    res = download_candles(
        later, store, "BTC/USDT", "1h", now_ms=now_after(6), sleep=lambda s: None
    )
    assert later.calls == [T0 + 4 * H]
    assert res.added == 2
    assert closes(store) == [100.0, 101.0, 102.0, 103.0, 208.0, 210.0]


def test_fill_holes_only_when_asked(tmp_path: Any) -> None:
    store = CandleStore(tmp_path)
    gappy = StandInExchange(n_bars=5, page=10, missing=(1, 2))
    download_candles(
        gappy, store, "BTC/USDT", "1h", since="2024-01-01", now_ms=now_after(5),
        sleep=lambda s: None,
    )  # fmt: skip
    full = StandInExchange(n_bars=5, page=10)
    download_candles(full, store, "BTC/USDT", "1h", now_ms=now_after(5), sleep=lambda s: None)
    assert len(closes(store)) == 3 and full.calls == []
    res = download_candles(
        full, store, "BTC/USDT", "1h", now_ms=now_after(5), sleep=lambda s: None, fill_holes=True
    )
    assert full.calls == [T0 + H]
    assert closes(store) == [100.0, 101.0, 102.0, 103.0, 104.0] and res.gaps == 0


def test_unknown_market_and_bad_rows_are_refused(tmp_path: Any) -> None:
    ex = StandInExchange(n_bars=3)
    with pytest.raises(DataError, match="no market ETH/USDT"):
        download_candles(ex, CandleStore(tmp_path), "ETH/USDT", "1h", now_ms=now_after(3))
    ex.bars[1][2] = 50.0  # high below low
    with pytest.raises(DataError, match="standin BTC/USDT 1h row 2"):
        download_candles(
            ex, CandleStore(tmp_path), "BTC/USDT", "1h", since="2024-01-01",
            now_ms=now_after(3), sleep=lambda s: None,
        )  # fmt: skip


def test_funding_history_is_paged_and_stored_beside_the_candles(tmp_path: Any) -> None:
    store = CandleStore(tmp_path)
    added = download_funding(StandInExchange(1), store, "BTC/USDT", since="2024-01-01")
    frame = store.read_funding("standin", "BTC/USDT")
    assert added == 5 and frame is not None
    assert np.allclose(frame["funding_rate"], [0.0001, 0.0002, 0.0003, 0.0004, 0.0005])
    assert frame.index[1] == pd.Timestamp("2024-01-01 08:00", tz="UTC")
    assert store.funding_path("standin", "BTC/USDT").name == "BTC_USDT-funding.parquet"
    assert download_funding(StandInExchange(1), store, "BTC/USDT") == 0


def test_unknown_exchange_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an exchange ccxt knows"):
        make_exchange("no_such_exchange")
