"""One pair on several exchanges on one grid: crafted frames and the real Binance/KuCoin files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nexlify.data.align import align_venues
from nexlify.data.candles import read_candles
from nexlify.errors import DataError
from tests.helpers import shared_data_or_skip


def frame(start: str, closes: list[float], drop: tuple[int, ...] = ()) -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(closes), freq="h", tz="UTC", name="date")
    c = np.asarray(closes)
    out = pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 2.0}, idx)
    return out.drop(idx[list(drop)])


def test_common_span_and_flat_fills_are_flagged() -> None:
    venues = {
        "binance": frame("2024-01-01 00:00", [10.0, 11.0, 12.0, 13.0, 14.0]),
        "kucoin": frame("2024-01-01 01:00", [21.0, 22.0, 23.0, 24.0, 25.0], drop=(1, 2)),
    }
    aligned = align_venues(venues, "1h")
    assert aligned.venues == ("binance", "kucoin") and aligned.n_bars == 4
    assert aligned.ohlcv.shape == (4, 2, 5) and aligned.ohlcv.dtype == np.float64
    assert aligned.time[0] == pd.Timestamp("2024-01-01 01:00", tz="UTC").timestamp()
    assert aligned.filled[:, 0].tolist() == [False] * 4
    assert aligned.filled[:, 1].tolist() == [False, True, True, False]
    # KuCoin's 02:00 and 03:00 are filled flat at its 01:00 close (21) with volume 0
    assert aligned.ohlcv[1:3, 1].tolist() == [[21.0, 21.0, 21.0, 21.0, 0.0]] * 2
    assert aligned.ohlcv[:, 0, 3].tolist() == [11.0, 12.0, 13.0, 14.0]
    assert aligned.shared().tolist() == [True, False, False, True]
    assert any("trimmed 1 bars before and 0 after" in n for n in aligned.notes)
    assert any(n.startswith("kucoin: 2 missing bars filled flat") for n in aligned.notes)


def test_disjoint_venues_are_an_error() -> None:
    with pytest.raises(DataError, match="have no common period"):
        align_venues({"a": frame("2024-01-01", [1.0, 2.0]), "b": frame("2024-02-01", [1.0])}, "1h")


def test_binance_and_kucoin_btc_overlap() -> None:
    market = shared_data_or_skip("market")
    frames = {
        ex: read_candles(market / ex / "BTC_USDT-1h.csv", "1h") for ex in ("binance", "kucoin")
    }
    aligned = align_venues(frames, "1h")
    assert aligned.n_bars == 10_042
    assert aligned.time[0] == pd.Timestamp("2023-11-09 14:00", tz="UTC").timestamp()
    assert aligned.time[-1] == pd.Timestamp("2024-12-31 23:00", tz="UTC").timestamp()
    assert not aligned.filled.any()
    close = aligned.ohlcv[:, :, 3]
    assert np.median(np.abs(close[:, 0] / close[:, 1] - 1)) < 1e-3
