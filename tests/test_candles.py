"""Candle files: parsing, validation messages, file lookup and alignment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nexlify.data.align import AlignedCandles, align_candles
from nexlify.data.candles import (
    candle_frame,
    candles_from_dataframe,
    find_candle_file,
    load_pairs,
    pair_to_stem,
    parse_pair,
    read_candles,
)
from nexlify.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
T0 = 1_619_827_200  # 2021-05-01 00:00 UTC
HOUR = 3600


def raw_rows(n: int = 24) -> pd.DataFrame:
    """A valid hourly table as a file would hold it (ISO dates), object dtype for tampering."""
    dates = pd.date_range("2021-05-01", periods=n, freq="h", tz="UTC")
    df = pd.DataFrame(
        {
            "date": dates.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": 100.0,
            "high": 102.0,
            "low": 99.0,
            "close": 101.0,
            "volume": 5.0,
        }
    )
    return df.astype(object)


def frame(start: int, n: int, step: int = HOUR, price: float = 100.0) -> pd.DataFrame:
    """Canonical candle frame with rising closes, n bars from unix second ``start``."""
    close = price + np.arange(n, dtype=np.float64)
    ohlcv = np.stack([close - 0.5, close + 1.0, close - 1.0, close, np.full(n, 2.0)], axis=1)
    return candle_frame(start + step * np.arange(n, dtype=np.int64), ohlcv)


def write_csv(tmp_path: Path, df: pd.DataFrame, name: str = "BTC_USDT-1h.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _set(rows: int | list[int], col: str, value: Any) -> Callable[[pd.DataFrame], None]:
    def mutate(df: pd.DataFrame) -> None:
        df.loc[np.atleast_1d(rows), col] = value

    return mutate


def _swap_rows(df: pd.DataFrame) -> None:
    df.loc[[4, 5]] = df.loc[[5, 4]].to_numpy()


def _duplicate(df: pd.DataFrame) -> None:
    df.loc[[5], "date"] = df.loc[[4], "date"].to_numpy()


BAD_CASES = [
    # (id, mutation, row in the message, text of the problem)
    ("high<low", _set([16, 17, 18], "high", 95.0), 17, "high 95.0 < low 99.0 (3 rows"),
    ("text price", _set(3, "close", "abc"), 4, "close is not a finite number: 'abc'"),
    ("nan price", _set(7, "open", np.nan), 8, "open is not a finite number: empty cell"),
    ("zero price", _set(2, "low", 0.0), 3, "low 0.0 is not positive"),
    ("negative price", _set(2, "open", -5.0), 3, "open -5.0 is not positive"),
    ("negative volume", _set(9, "volume", -1.0), 10, "volume -1.0 is negative"),
    ("high<close", _set(5, "high", 100.5), 6, "high 100.5 is below max(open 100.0, close 101.0)"),
    ("low>open", _set(5, "low", 100.5), 6, "low 100.5 is above min(open 100.0, close 101.0)"),
    ("bad date", _set(3, "date", "garbage"), 4, "date 'garbage' is not a valid timestamp"),
    ("unsorted", _swap_rows, 6, "earlier than the previous row's 2021-05-01 05:00 UTC"),
    ("duplicate", _duplicate, 6, "duplicate timestamp (same as row 5)"),
]


@pytest.mark.parametrize(
    ("mutate", "row", "problem"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_malformed_file_names_file_row_and_problem(
    tmp_path: Path, mutate: Callable[[pd.DataFrame], None], row: int, problem: str
) -> None:
    df = raw_rows()
    mutate(df)
    path = write_csv(tmp_path, df)
    with pytest.raises(DataError) as err:
        read_candles(path)
    msg = str(err.value)
    assert "BTC_USDT-1h.csv" in msg
    assert f"row {row}" in msg
    assert problem in msg


def test_message_has_timestamp_and_count(tmp_path: Path) -> None:
    df = raw_rows()
    _set([16, 17, 18], "high", 95.0)(df)
    with pytest.raises(DataError, match=r"row 17 \(2021-05-01 16:00 UTC\): high 95.0 < low"):
        read_candles(write_csv(tmp_path, df))
    with pytest.raises(DataError, match=r"\(3 rows with this problem\)"):
        read_candles(write_csv(tmp_path, df))


def test_earliest_problem_is_reported_and_others_listed(tmp_path: Path) -> None:
    df = raw_rows()
    df.loc[10, "volume"] = -2.0
    df.loc[4, "close"] = "x"
    with pytest.raises(DataError) as err:
        read_candles(write_csv(tmp_path, df))
    msg = str(err.value)
    assert "row 5 " in msg and "close is not a finite number" in msg
    assert "negative volume (1 row, first row 11)" in msg


def test_off_grid_timestamps_error_only_with_timeframe(tmp_path: Path) -> None:
    path = write_csv(tmp_path, raw_rows())
    assert len(read_candles(path, "1h")) == 24
    with pytest.raises(DataError, match=r"row 2 \(2021-05-01 01:00 UTC\): not on the 14400 s grid"):
        read_candles(path, "4h")


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path, raw_rows().drop(columns=["volume", "date"]))
    with pytest.raises(DataError) as err:
        read_candles(path)
    msg = str(err.value)
    assert "BTC_USDT-1h.csv" in msg and "missing required column(s): volume, date" in msg


def test_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        read_candles(write_csv(tmp_path, raw_rows().iloc[:0]))
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(DataError, match=r"blank\.csv: empty file"):
        read_candles(blank)
    with pytest.raises(DataError, match="no such candle file"):
        read_candles(tmp_path / "nope.csv")


def test_result_is_canonical(tmp_path: Path) -> None:
    df = raw_rows()
    df["trades"] = 7  # extra columns are ignored
    out = read_candles(write_csv(tmp_path, df), "1h")
    assert list(out.columns) == ["open", "high", "low", "close", "volume"]
    assert all(out.dtypes == np.float64)
    assert isinstance(out.index, pd.DatetimeIndex)
    assert str(out.index.tz) == "UTC" and out.index.name == "date"
    assert out.index.is_monotonic_increasing and out.index.is_unique
    assert out.index[0] == pd.Timestamp("2021-05-01", tz="UTC")


@pytest.mark.parametrize(("column", "scale"), [("timestamp", 1), ("Open_Time", 1000)])
def test_epoch_seconds_and_milliseconds(tmp_path: Path, column: str, scale: int) -> None:
    df = raw_rows().drop(columns="date")
    df.insert(0, column, (T0 + HOUR * np.arange(24)) * scale)
    df.columns = [c.upper() if c == "close" else c for c in df.columns]  # any case
    out = read_candles(write_csv(tmp_path, df), "1h")
    assert out.index[0] == pd.Timestamp("2021-05-01 00:00", tz="UTC")
    assert out.index[-1] == pd.Timestamp("2021-05-01 23:00", tz="UTC")


def test_iso_dates_with_z_offset_and_naive(tmp_path: Path) -> None:
    df = raw_rows(3)
    df["date"] = ["2021-05-01T00:00:00Z", "2021-05-01T03:00:00+02:00", "2021-05-01 02:00:00"]
    out = read_candles(write_csv(tmp_path, df), "1h")
    expected = pd.date_range("2021-05-01", periods=3, freq="h", tz="UTC", name="date")
    assert out.index.equals(expected)


def test_freqtrade_feather_round_trip(tmp_path: Path) -> None:
    original = frame(T0, 50)
    path = tmp_path / "ETH_USDT-1h.feather"
    original.reset_index().to_feather(path)  # freqtrade layout: a tz-aware date column
    pd.testing.assert_frame_equal(read_candles(path, "1h"), original)


def test_parquet_and_gzip_csv_round_trip(tmp_path: Path) -> None:
    original = frame(T0, 50)
    original.to_parquet(tmp_path / "a.parquet")  # dates stored as the index
    pd.testing.assert_frame_equal(read_candles(tmp_path / "a.parquet"), original)
    original.reset_index().to_csv(tmp_path / "a.csv.gz", index=False)
    pd.testing.assert_frame_equal(read_candles(tmp_path / "a.csv.gz"), original)


def test_candles_from_dataframe_index_or_column() -> None:
    original = frame(T0, 10)
    pd.testing.assert_frame_equal(candles_from_dataframe(original), original)
    pd.testing.assert_frame_equal(candles_from_dataframe(original.reset_index()), original)
    bad = original.copy()
    bad.iloc[3, 1] = 1.0  # high
    with pytest.raises(DataError, match=r"my frame row 4 \(2021-05-01 03:00 UTC\): high 1.0"):
        candles_from_dataframe(bad, "my frame")


def test_pair_names() -> None:
    assert pair_to_stem("BTC/USDT", "1h") == "BTC_USDT-1h"
    assert parse_pair("SOL/USDT") == ("SOL", "USDT")
    for bad in ("BTCUSDT", "btc/usdt", "BTC/USDT/X", "BTC-USDT", ""):
        with pytest.raises(ConfigError, match="pair"):
            parse_pair(bad)
    with pytest.raises(ConfigError, match="timeframe"):
        pair_to_stem("BTC/USDT", "2h")


def test_find_candle_file(tmp_path: Path) -> None:
    (tmp_path / "binance").mkdir()
    frame(T0, 5).reset_index().to_csv(tmp_path / "binance" / "BTC_USDT-1h.csv", index=False)
    assert find_candle_file(tmp_path, "BTC/USDT", "1h") == tmp_path / "binance/BTC_USDT-1h.csv"
    frame(T0, 5).to_parquet(tmp_path / "BTC_USDT-1h.parquet")
    assert find_candle_file(tmp_path, "BTC/USDT", "1h") == tmp_path / "BTC_USDT-1h.parquet"

    (tmp_path / "kucoin").mkdir()
    frame(T0, 5).reset_index().to_csv(tmp_path / "kucoin" / "ETH_USDT-1h.csv", index=False)
    frame(T0, 5).reset_index().to_csv(tmp_path / "binance" / "ETH_USDT-1h.csv", index=False)
    with pytest.raises(DataError, match="several exchange folders") as err:
        find_candle_file(tmp_path, "ETH/USDT", "1h")
    assert "binance" in str(err.value) and "kucoin" in str(err.value)

    with pytest.raises(DataError) as err:
        find_candle_file(tmp_path, "SOL/USDT", "1h")
    msg = str(err.value)
    assert "SOL_USDT-1h.csv" in msg and "SOL_USDT-1h.feather" in msg  # what was looked for
    assert "BTC_USDT-1h.parquet" in msg and "binance/" in msg  # what the directory has


def test_load_pairs(tmp_path: Path) -> None:
    for stem in ("BTC_USDT-1h", "ETH_USDT-1h"):
        frame(T0, 5).reset_index().to_csv(tmp_path / f"{stem}.csv", index=False)
    frames = load_pairs(tmp_path, ["ETH/USDT", "BTC/USDT"], "1h")
    assert list(frames) == ["ETH/USDT", "BTC/USDT"]
    with pytest.raises(ConfigError):
        load_pairs(tmp_path, [], "1h")
    with pytest.raises(ConfigError, match="more than once"):
        load_pairs(tmp_path, ["BTC/USDT", "BTC/USDT"], "1h")


def test_align_fills_gap_flat_and_notes_it() -> None:
    full = frame(T0, 10)
    gappy = frame(T0, 10, price=50.0).drop(index=full.index[[3, 4]])
    out = align_candles({"BTC/USDT": full, "ETH/USDT": gappy}, "1h")
    assert isinstance(out, AlignedCandles)
    assert out.pairs == ("BTC/USDT", "ETH/USDT")
    assert out.time.dtype == np.int64 and out.ohlcv.dtype == np.float64
    assert out.ohlcv.shape == (10, 2, 5) and out.filled.shape == (10, 2)
    np.testing.assert_array_equal(out.time, T0 + HOUR * np.arange(10))
    assert out.filled[:, 0].sum() == 0
    np.testing.assert_array_equal(np.flatnonzero(out.filled[:, 1]), [3, 4])
    prev_close = 52.0  # close of bar 2
    np.testing.assert_array_equal(out.ohlcv[3:5, 1, :4], np.full((2, 4), prev_close))
    np.testing.assert_array_equal(out.ohlcv[3:5, 1, 4], [0.0, 0.0])
    np.testing.assert_array_equal(out.ohlcv[5, 1], gappy.iloc[3].to_numpy())  # bar 5 untouched
    note = next(n for n in out.notes if n.startswith("ETH/USDT"))
    assert "2 missing bars filled flat at the previous close" in note
    assert "longest gap 2 bars at 2021-05-01 03:00 UTC" in note


def test_align_trims_to_common_span_and_carries_close_into_leading_gap() -> None:
    early = frame(T0, 10).drop(index=frame(T0, 10).index[2])  # lacks the span's first bar
    late = frame(T0 + 2 * HOUR, 10, price=10.0)
    out = align_candles({"A/USDT": early, "B/USDT": late}, "1h")
    np.testing.assert_array_equal(out.time, T0 + HOUR * np.arange(2, 10))
    assert out.filled[0, 0] and out.filled.sum() == 1
    np.testing.assert_array_equal(out.ohlcv[0, 0, :4], np.full(4, 101.0))  # A's close at bar 1
    assert any("A/USDT: trimmed 2 bars before and 0 bars after" in n for n in out.notes)
    assert any("B/USDT: trimmed 0 bars before and 2 bars after" in n for n in out.notes)


def test_align_errors() -> None:
    with pytest.raises(DataError, match="no common period") as err:
        align_candles({"A/USDT": frame(T0, 5), "B/USDT": frame(T0 + 10 * HOUR, 5)}, "1h")
    assert "A/USDT" in str(err.value) and "B/USDT" in str(err.value)
    with pytest.raises(DataError, match="not on the 4h grid"):
        align_candles({"A/USDT": frame(T0, 5)}, "4h")
    with pytest.raises(DataError):
        align_candles({}, "1h")


def test_real_binance_files_align() -> None:
    data_dir = SHARED_DATA / "market" / "binance"
    if not data_dir.is_dir():
        pytest.skip(f"shared market data not present at {data_dir}")
    pairs = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    frames = load_pairs(data_dir, pairs, "1h")
    assert {len(f) for f in frames.values()} == {32_177}
    out = align_candles(frames, "1h")
    assert out.n_bars == 32_184  # 2021-05-01 00:00 .. 2024-12-31 23:00, hourly
    assert out.time[0] == T0
    # The data README mentions ETH/SOL; BTC misses the same 7 bars (exchange downtime).
    np.testing.assert_array_equal(out.filled.sum(axis=0), [7, 7, 7])
    assert (out.filled == out.filled[:, :1]).all()
    for pair in pairs:
        assert any(n.startswith(f"{pair}: 7 missing bars") and "in 3 gaps" in n for n in out.notes)
    filled = out.ohlcv[out.filled[:, 0], 0]
    assert (filled[:, 4] == 0).all() and (filled[:, 1] == filled[:, 2]).all()
    with pytest.raises(DataError, match="several exchange folders"):
        find_candle_file(SHARED_DATA / "market", "BTC/USDT", "1h")
