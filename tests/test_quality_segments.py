"""Long outages split a history into segments: the latest is used, the rest is named and dropped."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nexlify.data.quality import QualityPolicy, check_table, rows_before
from nexlify.errors import DataError
from nexlify.pipeline.data_choice import load_training_market
from nexlify.train.config import DataConfig
from tests.helpers import shared_data_or_skip


def candles_with_gaps(n_bars: int, gaps: dict[int, int], seed: int = 0) -> pd.DataFrame:
    """A 1h random-walk table from 2024-01-01 with ``gaps`` {first missing bar: bars missing}."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
    times = pd.date_range("2024-01-01", periods=n_bars, freq="h", tz="UTC")
    keep = np.ones(n_bars, dtype=bool)
    for first, n in gaps.items():
        keep[first : first + n] = False
    frame = pd.DataFrame(
        {"date": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": close, "high": close * 1.002,
         "low": close * 0.998, "close": close, "volume": 1.0 + rng.random(n_bars)}
    )  # fmt: skip
    return frame[keep].reset_index(drop=True)


def test_long_gap_keeps_the_later_segment_and_names_the_dropped_span() -> None:
    # bars 0..9 | 30 missing (10..39) | 40..49 | 2 missing (50, 51) | 52..59
    raw = candles_with_gaps(60, {10: 30, 50: 2})
    report, frame = check_table(raw, "t.csv", "1h")
    assert not report.failed and frame is not None
    assert frame.index[0] == pd.Timestamp("2024-01-02 16:00", tz="UTC")  # bar 40
    assert len(frame) == 18  # 40..49 and 52..59; the short gap is filled later by alignment
    (gap,) = [f for f in report.findings if f.kind == "gap"]
    assert (gap.count, gap.action) == (32, "repair")
    assert "kept the latest segment 2024-01-02 16:00 UTC .. 2024-01-03 11:00 UTC (18 bars)" in (
        gap.detail
    )
    assert "dropped 2024-01-01 00:00 UTC .. 2024-01-01 09:00 UTC (10 bars) before a 30-bar gap" in (
        gap.detail
    )


def test_several_long_gaps_drop_every_earlier_segment() -> None:
    raw = candles_with_gaps(100, {10: 25, 50: 40})  # segments 0..9, 35..49, 90..99
    report, frame = check_table(raw, "t.csv", "1h")
    assert frame is not None and len(frame) == 10 and not report.failed
    (gap,) = [f for f in report.findings if f.kind == "gap"]
    assert "2 gaps longer than 24 bars" in gap.detail
    assert "(10 bars) before a 25-bar gap; " in gap.detail
    assert "2024-01-02 11:00 UTC .. 2024-01-03 01:00 UTC (15 bars) before a 40-bar gap" in (
        gap.detail
    )


def test_gap_equal_to_the_fill_limit_is_filled_not_split() -> None:
    raw = candles_with_gaps(60, {10: 24})
    report, frame = check_table(raw, "t.csv", "1h")
    assert frame is not None and len(frame) == 36 and "split" not in report.findings[0].detail


def test_gap_fail_still_refuses_a_long_gap() -> None:
    raw = candles_with_gaps(60, {10: 30})
    report, _ = check_table(raw, "t.csv", "1h", QualityPolicy({"gap": "fail"}))
    assert report.failed and "gap: 30 (fail)" in report.failure_reason()


def test_training_market_uses_the_latest_segment_and_notes_it(tmp_path: Path) -> None:
    raw = candles_with_gaps(1200, {100: 40})  # the later segment has 1060 bars
    raw.to_csv(tmp_path / "BTC_USDT-1h.csv", index=False)
    config = DataConfig(pairs=("BTC/USDT",), data_dir=str(tmp_path))
    market = load_training_market(config, logging.getLogger("test"))
    first = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=140)
    assert market.span()[0] > first  # the warm-up is cut from the kept segment
    assert market.filled.sum() == 0  # nothing of the outage was filled
    assert any("dropped 2024-01-01 00:00 UTC .. 2024-01-05 03:00 UTC (100 bars)" in n
               for n in market.notes)  # fmt: skip
    failing = DataConfig(pairs=("BTC/USDT",), data_dir=str(tmp_path), quality=("gap=fail",))
    with pytest.raises(DataError, match=r"gap: 40 \(fail\)"):
        load_training_market(failing, logging.getLogger("test"))


def test_real_binance_history_loads_after_the_2018_outage() -> None:
    folder = shared_data_or_skip("history", "binance")
    config = DataConfig(pairs=("BTC/USDT",), data_dir=str(folder))
    market = load_training_market(config, logging.getLogger("test"))
    assert market.span()[0] > pd.Timestamp("2018-02-09 10:00", tz="UTC")
    assert any("dropped 2017-08-17 04:00 UTC .. 2018-02-08 00:00 UTC" in n for n in market.notes)


def test_rows_before_cuts_by_open_time_and_keeps_unreadable_rows() -> None:
    raw = pd.DataFrame(
        {"date": ["2024-01-01T22:00:00Z", "2024-01-01T23:00:00Z", "not a date",
                  "2024-01-02T00:00:00Z"],
         "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    )  # fmt: skip
    cut = rows_before(raw, "t.csv", pd.Timestamp("2024-01-02", tz="UTC"))
    assert list(cut["date"]) == ["2024-01-01T22:00:00Z", "2024-01-01T23:00:00Z", "not a date"]
    epoch = raw.assign(date=[1704146400, 1704150000, 1704153600, 1704153600000])  # s and ms
    cut = rows_before(epoch, "t.csv", pd.Timestamp("2024-01-02 00:00"))  # naive = UTC
    assert list(cut["date"]) == [1704146400, 1704150000]
