"""Coarser candles from finer files: hand-computed buckets, partial ends, loading 4h from 1h."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nexlify.data.quality import load_checked_pairs, quality_notes
from nexlify.data.resample import find_candle_source, finer_timeframes, resample_candles
from nexlify.errors import DataError
from tests.helpers import shared_data_or_skip
from tests.test_paper_support import write_candles


def hourly(start: str, rows: list[tuple[float, float, float, float, float]]) -> pd.DataFrame:
    index = pd.date_range(start, periods=len(rows), freq="1h", tz="UTC", name="date")
    return pd.DataFrame(rows, index=index, columns=["open", "high", "low", "close", "volume"])


def test_finer_timeframes_tile_the_target_coarsest_first() -> None:
    assert finer_timeframes("4h") == ["1h", "15m", "5m", "1m"]
    assert finer_timeframes("1d") == ["4h", "1h", "15m", "5m", "1m"]
    assert finer_timeframes("1m") == []


def test_buckets_by_hand_partial_ends_dropped() -> None:
    # 03:00 .. 12:00: the 00:00 bucket has 1 of 4 bars (dropped), 04:00 and 08:00 are whole,
    # the 12:00 bucket has 1 bar (dropped).
    rows = [(9, 9, 9, 9, 1)]
    rows += [(10, 12, 9, 11, 1), (11, 15, 10, 14, 2), (14, 14, 8, 9, 3), (9, 10, 9, 10, 4)]
    rows += [(10, 11, 10, 11, 5), (11, 11, 7, 8, 6), (8, 9, 8, 9, 7), (9, 20, 9, 19, 8)]
    rows += [(19, 19, 19, 19, 9)]
    out, note = resample_candles(hourly("2024-01-01 03:00", rows), "1h", "4h", "X")
    assert list(out.index) == list(pd.to_datetime(["2024-01-01 04:00", "2024-01-01 08:00"],
                                                  utc=True))  # fmt: skip
    np.testing.assert_array_equal(out.to_numpy(), [[10, 15, 8, 10, 10], [10, 20, 7, 19, 26]])
    assert "4h candles resampled from 1h (2 bars; 0 partial inside" in note
    assert "2 partial at the ends dropped" in note


def test_a_gap_inside_leaves_a_partial_bucket_built_from_the_bars_there() -> None:
    frame = hourly("2024-01-01 00:00", [(1, 2, 1, 2, 1)] * 12)
    frame = frame.drop(frame.index[5])  # 05:00 missing: the 04:00 bucket has 3 bars
    out, note = resample_candles(frame, "1h", "4h")
    assert len(out) == 3 and out["volume"].tolist() == [4, 3, 4]
    assert "1 partial inside the data" in note


def test_too_short_for_one_whole_bar_is_refused() -> None:
    with pytest.raises(DataError, match="no whole 1d bar in 5 1h candles"):
        resample_candles(hourly("2024-01-01", [(1, 1, 1, 1, 1)] * 5), "1h", "1d")


def test_4h_from_1h_files_through_the_quality_check(tmp_path: Path) -> None:
    frame = hourly("2024-01-01 00:00", [(float(i), i + 1.0, i - 0.5, i + 0.5, 1.0)
                                        for i in range(1, 49)])  # fmt: skip
    write_candles(tmp_path, {"BTC/USDT": frame})
    assert find_candle_source(tmp_path, "BTC/USDT", "4h")[1] == "1h"
    frames, reports = load_checked_pairs(tmp_path, ["BTC/USDT"], "4h")
    assert len(frames["BTC/USDT"]) == 12 and frames["BTC/USDT"]["volume"].iloc[0] == 4.0
    assert any("4h candles resampled from 1h" in n for n in quality_notes(reports))
    with pytest.raises(DataError, match="looked for BTC_USDT-1m"):
        find_candle_source(tmp_path, "BTC/USDT", "1m")


def test_real_daily_bars_from_binance_hours() -> None:
    folder = shared_data_or_skip("market", "binance")
    frames, reports = load_checked_pairs(folder, ["BTC/USDT"], "1d")
    daily = frames["BTC/USDT"]
    assert daily.index[0] == pd.Timestamp("2021-05-01", tz="UTC")
    assert daily.index[-1] == pd.Timestamp("2024-12-31", tz="UTC")
    hours = load_checked_pairs(folder, ["BTC/USDT"], "1h")[0]["BTC/USDT"]
    day = hours.loc["2024-03-05"]
    assert daily.loc["2024-03-05", "high"] == day["high"].max()
    assert daily.loc["2024-03-05", "close"] == day["close"].iloc[-1]
    assert reports[0].notes and "1d candles resampled from 1h" in reports[0].notes[0]


def test_paper_replays_4h_bars_from_a_folder_of_1h_files(tmp_path: Path) -> None:
    from nexlify.commands.paper import _replay_frames

    frame = hourly("2024-01-01 00:00", [(1.0, 2.0, 0.5, 1.5, 1.0)] * 48)
    write_candles(tmp_path, {"BTC/USDT": frame})
    frames = _replay_frames([str(tmp_path)], ("BTC/USDT",), "4h")
    assert len(frames["BTC/USDT"]) == 12
    assert frames["BTC/USDT"]["volume"].tolist() == [4.0] * 12


def test_several_files_of_the_asked_timeframe_stay_an_error(tmp_path: Path) -> None:
    """Resampling stands in for a missing file, never for an ambiguous choice of exchange."""
    frame = hourly("2024-01-01 00:00", [(1.0, 2.0, 0.5, 1.5, 1.0)] * 48)
    write_candles(tmp_path / "binance", {"BTC/USDT": frame})  # 1h in one folder
    four_hours, _ = resample_candles(frame, "1h", "4h")
    for venue in ("binance", "kucoin"):  # 4h in two
        (tmp_path / venue).mkdir(exist_ok=True)
        four_hours.reset_index().to_csv(tmp_path / venue / "BTC_USDT-4h.csv", index=False)
    with pytest.raises(DataError, match="several exchange folders"):
        find_candle_source(tmp_path, "BTC/USDT", "4h")
