"""Importing users' files: generic CSV, freqtrade json/json.gz and CryptoDataDownload CSVs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nexlify.cli import main
from nexlify.data.importers import detect_format, import_candles
from nexlify.data.quality import QualityPolicy
from nexlify.data.store import CandleStore
from nexlify.errors import ConfigError, DataError

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC, in seconds
H = 3600


def cdd_file(path: Path, symbol: str = "BTC/USDT") -> Path:
    """Six hourly bars newest-first, a title line, unix in ms except two rows in seconds."""
    lines = ["https://www.CryptoDataDownload.com",
             "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount"]  # fmt: skip
    for k in reversed(range(6)):
        unix = (T0 + k * H) * (1 if k in (1, 4) else 1000)
        day = pd.Timestamp(T0 + k * H, unit="s").strftime("%Y-%m-%d %H:%M:%S")
        p = 100.0 + k
        lines.append(f"{unix},{day},{symbol},{p},{p + 2},{p - 1},{p + 1},{k + 1}.5,{p * 10},7")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cryptodatadownload_is_normalised(tmp_path: Path) -> None:
    path = cdd_file(tmp_path / "Binance_BTCUSDT_1h.csv", symbol="BTCUSDT")
    assert detect_format(path) == "cryptodatadownload"
    result = import_candles(path)  # pair from the symbol, timeframe from the spacing
    assert (result.pair, result.timeframe, result.format) == (
        "BTC/USDT",
        "1h",
        "cryptodatadownload",
    )
    frame = result.frame
    assert frame is not None and frame.index.is_monotonic_increasing
    assert frame.index[0] == pd.Timestamp(T0, unit="s", tz="UTC") and len(frame) == 6
    assert frame["volume"].tolist() == [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]  # base volume, oldest first
    assert frame["close"].tolist() == [101.0, 102.0, 103.0, 104.0, 105.0, 106.0]
    (mix,) = result.report.findings
    assert (mix.kind, mix.count, mix.action) == ("ms_seconds", 2, "repair")
    assert mix.where == ["2024-01-01 01:00 UTC", "2024-01-01 04:00 UTC"]
    assert "title line skipped" in result.notes


def test_cryptodatadownload_through_the_cli(tmp_path: Path) -> None:
    path = cdd_file(tmp_path / "cdd.csv")
    store = tmp_path / "store"
    args = ["data", "import", str(path), "--exchange", "binance", "--store-dir", str(store)]
    assert main(args) == 0
    frame = CandleStore(store).read("binance", "BTC/USDT", "1h")
    assert frame is not None and len(frame) == 6 and frame["volume"].iloc[0] == 1.5
    assert main([*args, "--quality", "ms_seconds=fail"]) == 3
    assert main([*args, "--pair", "ETH/USDT"]) == 3  # the symbol says BTC/USDT


def test_cryptodatadownload_errors_name_file_and_line(tmp_path: Path) -> None:
    path = cdd_file(tmp_path / "cdd.csv")
    text = path.read_text().splitlines()
    text[4] = "soon" + text[4][text[4].index(",") :]
    path.write_text("\n".join(text))
    with pytest.raises(DataError, match=r"cdd\.csv line 5 \(data row 3\): unix 'soon' is not"):
        import_candles(path)
    path.write_text(cdd_file(path).read_text().replace("Volume BTC", "Volume XRP"))
    with pytest.raises(DataError, match=r"cdd\.csv: no 'Volume BTC' column for the base"):
        import_candles(path)


def freqtrade_rows() -> list[list[float]]:
    return [[(T0 + k * H) * 1000, 10.0 + k, 12.0 + k, 9.0 + k, 11.0 + k, 1.0 + k] for k in range(5)]


def test_freqtrade_json_and_json_gz(tmp_path: Path) -> None:
    plain = tmp_path / "ETH_USDT-1h.json"
    plain.write_text(json.dumps(freqtrade_rows()))
    packed = tmp_path / "SOL_USDT-1h.json.gz"
    with gzip.open(packed, "wt") as handle:
        json.dump(freqtrade_rows(), handle)
    for path, pair in ((plain, "ETH/USDT"), (packed, "SOL/USDT")):
        assert detect_format(path) == "freqtrade-json"
        result = import_candles(path)
        assert (result.pair, result.timeframe, result.report.findings) == (pair, "1h", [])
        assert result.frame is not None and result.frame["close"].tolist() == [11, 12, 13, 14, 15]
    store = tmp_path / "store"
    assert main(["data", "import", str(packed), "--exchange", "kraken",
                 "--store-dir", str(store)]) == 0  # fmt: skip
    assert CandleStore(store).read("kraken", "SOL/USDT", "1h") is not None


def test_freqtrade_json_errors_name_the_row(tmp_path: Path) -> None:
    rows: list[list[float]] = freqtrade_rows()
    rows[3] = rows[3][:5]
    path = tmp_path / "BTC_USDT-1h.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"BTC_USDT-1h\.json row 4: 5 values .* expected 6"):
        import_candles(path)
    path.write_text("[[1, 2,")
    with pytest.raises(DataError, match=r"BTC_USDT-1h\.json: not valid JSON at line 1"):
        import_candles(path)


def generic_csv(path: Path, order: list[int]) -> Path:
    idx = pd.date_range("2024-01-01", periods=len(order), freq="h", tz="UTC")
    c = np.arange(len(order), dtype=float) + 100.0
    frame = pd.DataFrame({"date": idx, "open": c, "high": c + 1, "low": c - 1, "close": c,
                          "volume": 1.0})  # fmt: skip
    frame.iloc[order].to_csv(path, index=False)
    return path


def test_generic_csv_unsorted_is_reported_not_silently_sorted(tmp_path: Path) -> None:
    path = generic_csv(tmp_path / "BTC_USDT-1h.csv", [0, 2, 1, 3, 4])
    assert detect_format(path) == "csv"
    result = import_candles(path)
    assert result.frame is None and result.report.findings[0].kind == "unsorted"
    reason = result.failure_reason()
    assert "unsorted: 1 (fail) at 2024-01-01 01:00 UTC" in reason
    assert "row 3 (2024-01-01 01:00 UTC): time is earlier than the previous row's" in reason
    repaired = import_candles(path, policy=QualityPolicy({"unsorted": "repair"}))
    assert repaired.frame is not None and repaired.frame.index.is_monotonic_increasing


def test_generic_csv_needs_a_pair_and_names_bad_rows(tmp_path: Path) -> None:
    path = generic_csv(tmp_path / "candles.csv", [0, 1, 2, 3])
    with pytest.raises(ConfigError, match=r"candles\.csv: cannot tell the pair"):
        import_candles(path)
    result = import_candles(path, pair="BTC/USDT")
    assert (result.pair, result.timeframe) == ("BTC/USDT", "1h")
    frame = pd.read_csv(path)
    frame.loc[2, "open"] = -5.0
    frame.to_csv(path, index=False)
    result = import_candles(path, pair="BTC/USDT", timeframe="1h")
    assert result.frame is None
    assert "candles.csv row 3 (2024-01-01 02:00 UTC): open -5.0 is not positive" in (
        result.failure_reason()
    )


def mixed_units_file(path: Path) -> Path:
    """A public hourly BTC/USD CSV's shape: no title line, newest first, ``volume`` in BTC on
    the five newest rows and in USD on the three oldest, whose ``Volume USD`` holds the BTC."""
    lines = ["unix,date,symbol,open,high,low,close,volume,Volume USD"]
    t0 = 1_574_064_000  # 2019-11-18 08:00 UTC
    for k in reversed(range(8)):
        close = 8400.0 + 10 * k
        base = 100.0 + k
        volume, quote = (base * close, base) if k < 3 else (base, round(base * close, 2))
        day = pd.Timestamp(t0 + k * H, unit="s").strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{t0 + k * H},{day},BTC/USD,{close - 5},{close + 20},{close - 20},"
                     f"{close},{volume},{quote}")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mixed_volume_units_fail_with_their_span_and_repair_to_base(tmp_path: Path) -> None:
    path = mixed_units_file(tmp_path / "Bitstamp_BTCUSD_1h.csv")
    sorted_ok = {"unsorted": "repair"}
    result = import_candles(path, fmt="csv", pair="BTC/USD", policy=QualityPolicy(sorted_ok))
    assert result.frame is None and result.report.failed
    reason = result.failure_reason()
    assert "volume_units: 3 (fail) at 2019-11-18 08:00 UTC .. 2019-11-18 10:00 UTC" in reason
    assert "volume in quote units on 3 rows from 2019-11-18 08:00 UTC to 2019-11-18 10:00" in reason
    repaired = QualityPolicy({**sorted_ok, "volume_units": "repair"})
    result = import_candles(path, fmt="csv", pair="BTC/USD", policy=repaired)
    assert result.frame is not None
    assert result.frame["volume"].tolist() == [100.0 + k for k in range(8)]  # all in BTC


def test_mixed_volume_units_through_the_cli(tmp_path: Path) -> None:
    path = mixed_units_file(tmp_path / "prices.csv")
    store = tmp_path / "store"
    args = ["data", "import", str(path), "--exchange", "bitstamp", "--store-dir", str(store),
            "--format", "csv", "--pair", "BTC/USD", "--quality", "unsorted=repair"]  # fmt: skip
    assert main(args) == 3
    assert main([*args, "volume_units=repair"]) == 0
    frame = CandleStore(store).read("bitstamp", "BTC/USD", "1h")
    assert frame is not None and frame["volume"].max() == 107.0


def test_misdetected_format_names_the_formats_and_the_forcing_flag(tmp_path: Path) -> None:
    path = mixed_units_file(tmp_path / "prices.csv")
    assert detect_format(path) == "cryptodatadownload"  # the 'unix' column
    with pytest.raises(DataError) as info:
        import_candles(path)
    message = str(info.value)
    assert "no 'Volume BTC' column" in message  # what went wrong, then what to do
    assert "detected as cryptodatadownload from a 'unix' column" in message
    assert "formats considered: csv, cryptodatadownload, freqtrade-json" in message
    assert "--format csv" in message
    with pytest.raises(DataError, match="no 'Volume BTC'") as forced:
        import_candles(path, fmt="cryptodatadownload")
    assert "--format" not in str(forced.value)  # forced: no detection to blame
