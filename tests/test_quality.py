"""Quality checks and policies on hand-made tables, the real files, and training's refusal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nexlify.cli import main
from nexlify.data.quality import QualityPolicy, check_table, compare_exchanges
from nexlify.errors import ConfigError, DataError
from nexlify.pipeline.data_choice import load_training_market
from nexlify.train.config import DataConfig
from tests.helpers import shared_data_or_skip


def table(rows: list[tuple[str, float, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["date", "open", "high", "low", "close", "volume"])


def hour(h: int) -> str:
    return f"2024-01-01T{h:02d}:00:00Z"


GOOD = [(hour(h), 100.0, 101.0, 99.0, 100.0, 5.0) for h in range(6)]


def kinds(report: object) -> dict[str, tuple[int, str]]:
    return {f.kind: (f.count, f.action) for f in report.findings}  # type: ignore[attr-defined]


def test_clean_table_has_no_findings() -> None:
    report, frame = check_table(table(GOOD), "t.csv", "1h")
    assert report.findings == [] and not report.failed and frame is not None and len(frame) == 6


def test_gap_is_repaired_up_to_max_fill_bars_and_fails_beyond() -> None:
    rows = [r for k, r in enumerate(GOOD) if k not in (2, 3)]
    report, frame = check_table(table(rows), "t.csv", "1h")
    assert kinds(report) == {"gap": (2, "repair")}
    assert report.findings[0].where == ["2024-01-01 02:00 UTC .. 2024-01-01 03:00 UTC"]
    assert frame is not None and len(frame) == 4  # filled later by alignment, flagged
    report, frame = check_table(table(rows), "t.csv", "1h", QualityPolicy(max_fill_bars=1))
    assert not report.failed and frame is not None and len(frame) == 2  # split: latest kept
    report, _ = check_table(table(rows), "t.csv", "1h", QualityPolicy({"gap": "fail"}))
    assert report.failed


def test_ohlc_repair_drop_and_fail() -> None:
    rows = list(GOOD)
    rows[1] = (hour(1), 100.0, 99.5, 99.0, 100.0, 5.0)  # high below open/close
    report, _ = check_table(table(rows), "t.csv", "1h")
    assert report.failed and kinds(report)["ohlc"] == (1, "fail")
    report, frame = check_table(table(rows), "t.csv", "1h", QualityPolicy({"ohlc": "repair"}))
    assert frame is not None and frame["high"].iloc[1] == 100.0 and frame["low"].iloc[1] == 99.0
    report, frame = check_table(table(rows), "t.csv", "1h", QualityPolicy({"ohlc": "drop"}))
    assert frame is not None and len(frame) == 5 and kinds(report)["gap"] == (1, "repair")


def test_duplicates_and_unsorted_rows() -> None:
    rows = [GOOD[0], GOOD[2], GOOD[1], (hour(2), 200.0, 201.0, 199.0, 200.0, 1.0), *GOOD[3:]]
    policy = QualityPolicy({"duplicate": "repair", "unsorted": "repair"})
    report, frame = check_table(table(rows), "t.csv", "1h", policy)
    assert kinds(report) == {"unsorted": (1, "repair"), "duplicate": (1, "repair")}
    assert frame is not None and len(frame) == 6 and frame["close"].iloc[2] == 100.0  # first kept
    policy = QualityPolicy({"duplicate": "drop", "unsorted": "repair"})
    _, frame = check_table(table(rows), "t.csv", "1h", policy)
    assert frame is not None and len(frame) == 5


def test_invalid_rows_and_stale_zero_volume_bar() -> None:
    rows = list(GOOD)
    rows[4] = (hour(4), -1.0, 101.0, 99.0, 100.0, 5.0)
    rows[2] = (hour(2), 100.0, 100.0, 100.0, 100.0, 0.0)
    report, _ = check_table(table(rows), "t.csv", "1h")
    assert kinds(report)["invalid"] == (1, "fail") and kinds(report)["zero_volume"] == (1, "warn")
    policy = QualityPolicy({"invalid": "drop", "zero_volume": "drop"})
    report, frame = check_table(table(rows), "t.csv", "1h", policy)
    assert not report.failed and frame is not None and len(frame) == 4


def test_outlier_uses_robust_sigma() -> None:
    closes = [100.0, 100.5, 100.0, 100.5, 100.0, 130.0, 100.0, 100.5]
    rows = [(hour(h), c, c * 1.01, c * 0.99, c, 1.0) for h, c in enumerate(closes)]
    report, _ = check_table(table(rows), "t.csv", "1h")
    # |log(130/100)| = 0.262 and |log(100/130)| both exceed 10% and 12 robust sigmas
    assert kinds(report) == {"outlier": (2, "warn")}
    assert report.findings[0].where == ["2024-01-01 05:00 UTC", "2024-01-01 06:00 UTC"]


def test_cross_exchange_disagreement() -> None:
    idx = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    a = pd.DataFrame({"close": [100.0, 101.0, 102.0, 103.0]}, index=idx)
    b = pd.DataFrame({"close": [100.0, 101.0, 100.0, 103.0]}, index=idx)
    report = compare_exchanges(a, b, "a vs b")
    (finding,) = report.findings
    assert (finding.count, finding.action) == (1, "warn")  # 2% apart at 02:00
    assert "max 200.0 bps" in finding.detail
    assert compare_exchanges(a, b, "x", QualityPolicy({"cross_exchange": "fail"})).failed


def test_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data\.quality\.gap: 'drop' is invalid"):
        QualityPolicy({"gap": "drop"})
    with pytest.raises(ConfigError, match="unknown finding"):
        DataConfig(quality=("gaps=fail",))


def test_training_refuses_data_that_fails(tmp_path: Path) -> None:
    rows = [(hour(h % 24).replace("01T", f"{1 + h // 24:02d}T"), 100.0, 101.0, 99.0, 100.0, 1.0)
            for h in range(400)]  # fmt: skip
    rows[50] = (rows[50][0], 100.0, 99.0, 101.0, 100.0, 1.0)  # high below low
    table(rows).to_csv(tmp_path / "BTC_USDT-1h.csv", index=False)
    config = DataConfig(pairs=("BTC/USDT",), data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"BTC_USDT-1h\.csv: data quality check failed: ohlc: 1"):
        load_training_market(config, logging.getLogger("test"))


def test_real_files_report_the_known_gaps(tmp_path: Path) -> None:
    market = shared_data_or_skip("market")
    out = tmp_path / "q.json"
    assert main(["data", "check", "--data-dir", str(market), "--json", str(out)]) == 0
    reports = {r["source"]: r for r in json.loads(out.read_text())["reports"]}
    for coin in ("BTC", "ETH", "SOL"):
        binance = {f["kind"]: f for f in reports[f"binance/{coin}_USDT-1h.csv"]["findings"]}
        assert binance["gap"]["count"] == 7
        assert binance["gap"]["where"] == [
            "2021-08-13 02:00 UTC .. 2021-08-13 05:00 UTC",
            "2021-09-29 07:00 UTC .. 2021-09-29 08:00 UTC",
            "2023-03-24 13:00 UTC",
        ]
        assert binance["zero_volume"]["where"] == ["2023-03-24 12:00 UTC"]
        kucoin = {f["kind"] for f in reports[f"kucoin/{coin}_USDT-1h.csv"]["findings"]}
        assert "gap" not in kucoin
        cross = reports[f"{coin}/USDT 1h binance vs kucoin"]
        assert cross["rows"] == 10042 and cross["findings"][0]["count"] == 0
    assert main(["data", "check", "--data-dir", str(market), "--quality", "gap=fail"]) == 3


def test_real_data_trains_with_repaired_gaps_noted() -> None:
    folder = shared_data_or_skip("market", "binance")
    config = DataConfig(pairs=("BTC/USDT",), data_dir=str(folder))
    market = load_training_market(config, logging.getLogger("test"))
    assert any("gap: 7 (repair)" in n for n in market.notes)
    assert int(market.filled.sum()) == 7 and np.isfinite(market.features).all()


def test_zero_volume_is_reported_as_runs() -> None:
    rows = [(hour(h), 100.0, 101.0, 99.0, 100.0, 0.0 if h in (1, 2, 3, 6) else 5.0)
            for h in range(8)]  # fmt: skip
    report, frame = check_table(table(rows), "t.csv", "1h")
    (zero,) = report.findings
    assert (zero.kind, zero.count, zero.action, zero.places) == ("zero_volume", 4, "warn", 2)
    assert zero.where == ["2024-01-01 01:00 UTC .. 2024-01-01 03:00 UTC", "2024-01-01 06:00 UTC"]
    assert zero.detail == "2 runs, longest 3 bars"
    report, frame = check_table(table(rows), "t.csv", "1h", QualityPolicy({"zero_volume": "drop"}))
    assert frame is not None and len(frame) == 4 and kinds(report)["gap"] == (4, "repair")


def test_stale_prices_need_a_run_of_stale_bars() -> None:
    # 02:00 .. 08:00 repeat the 01:00 close of 100.5 (with volume): a run of 7 stale bars;
    # 10:00 .. 11:00 repeat 09:00's close too, but only 2 bars
    rows = [(hour(0), 100.0, 101.0, 99.0, 100.0, 5.0), (hour(1), 100.0, 101.0, 99.0, 100.5, 5.0)]
    rows += [(hour(h), 100.5, 100.5, 100.5, 100.5, 3.0) for h in range(2, 9)]
    rows += [(hour(9), 100.5, 102.0, 100.0, 101.0, 5.0)]
    rows += [(hour(h), 101.0, 101.0, 101.0, 101.0, 3.0) for h in (10, 11)]
    report, _ = check_table(table(rows), "t.csv", "1h")
    assert kinds(report) == {"stale": (7, "warn")}
    assert report.findings[0].where == ["2024-01-01 02:00 UTC .. 2024-01-01 08:00 UTC"]
    report, _ = check_table(table(rows), "t.csv", "1h", QualityPolicy(stale_bars=2))
    assert kinds(report) == {"stale": (9, "warn")} and report.findings[0].places == 2
    report, _ = check_table(table(rows), "t.csv", "1h", QualityPolicy({"stale": "fail"}))
    assert report.failed and "stale: 7 (fail)" in report.failure_reason()
    report, frame = check_table(table(rows), "t.csv", "1h", QualityPolicy({"stale": "drop"}))
    assert frame is not None and len(frame) == 5 and kinds(report)["gap"] == (7, "repair")
    with pytest.raises(ConfigError, match="quality_stale_bars"):
        QualityPolicy(stale_bars=1)


def test_seconds_and_milliseconds_in_one_file() -> None:
    t0 = 1_704_067_200
    units = [1000, 1, 1000, 1000, 1_000_000, 1000]  # ms, s, ms, ms, us, ms
    raw = pd.DataFrame({"timestamp": [(t0 + 3600 * k) * u for k, u in enumerate(units)],
                        "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0,
                        "volume": 5.0})  # fmt: skip
    report, frame = check_table(raw, "t.csv", "1h")
    (mix,) = report.findings
    assert (mix.kind, mix.count, mix.action) == ("ms_seconds", 2, "repair")
    assert mix.where == ["2024-01-01 01:00 UTC", "2024-01-01 04:00 UTC"]
    assert "1 in seconds, 4 in milliseconds, 1 in microseconds" in mix.detail
    assert frame is not None and len(frame) == 6
    assert frame.index[1] == pd.Timestamp("2024-01-01 01:00", tz="UTC")
    report, _ = check_table(raw, "t.csv", "1h", QualityPolicy({"ms_seconds": "fail"}))
    assert report.failed and kinds(report) == {"ms_seconds": (2, "fail")}
    one_unit, _ = check_table(raw.assign(timestamp=raw["timestamp"] * 0 + t0 * 1000
                                          + 3_600_000 * np.arange(6)), "t.csv", "1h")  # fmt: skip
    assert one_unit.findings == []


def test_volume_in_quote_units_is_found_by_hand_numbers_and_repaired() -> None:
    # close 100, bar range [99, 101]: a consistent row's quote / volume is a price in it
    rows = [(100.0, 5.0, 500.0), (100.0, 500.0, 5.0), (100.0, 500.0, 510.0),
            (100.0, 5.0, 500.0), (100.0, 5.0, 5000.0), (100.0, 5.0, 500.0)]  # fmt: skip
    frame = table([(hour(h), c, c + 1, c - 1, c, v) for h, (c, v, _) in enumerate(rows)])
    frame["Quote_Volume"] = [q for _, _, q in rows]
    report, out = check_table(frame, "t.csv", "1h")
    # row 1: columns swapped (500 USD, 5 BTC); row 2: both in USD; row 4 fits no reading
    assert kinds(report) == {"volume_units": (2, "fail")} and out is not None
    (finding,) = report.findings
    assert finding.where == ["2024-01-01 01:00 UTC .. 2024-01-01 02:00 UTC"]
    assert "on 2 rows from 2024-01-01 01:00 UTC to 2024-01-01 02:00 UTC" in finding.detail
    assert "on 1 the quote column holds the base volume" in finding.detail
    assert "1 other rows match neither unit" in finding.detail
    report, out = check_table(frame, "t.csv", "1h", QualityPolicy({"volume_units": "repair"}))
    assert not report.failed and out is not None
    assert out["volume"].tolist() == [5.0, 5.0, 5.1, 5.0, 5.0, 5.0]  # 5 as printed, 510 / 100
    consistent = frame.assign(Quote_Volume=500.0, volume=5.0)
    assert check_table(consistent, "t.csv", "1h")[0].findings == []


def test_data_check_reports_volume_units(tmp_path: Path) -> None:
    rows = [(hour(h), 100.0, 101.0, 99.0, 100.0, 5.0) for h in range(4)]
    frame = table(rows).assign(**{"Volume USD": [500.0, 500.0, 5.0, 5.0]})
    frame.loc[2:, "volume"] = 500.0  # the two newest rows hold USD in `volume`
    frame.to_csv(tmp_path / "BTC_USD-1h.csv", index=False)
    out = tmp_path / "report.json"
    assert main(["data", "check", "--data-dir", str(tmp_path), "--json", str(out)]) == 3
    (source,) = json.loads(out.read_text())["reports"]
    (finding,) = source["findings"]
    assert (finding["kind"], finding["count"], finding["action"]) == ("volume_units", 2, "fail")
    assert finding["where"] == ["2024-01-01 02:00 UTC .. 2024-01-01 03:00 UTC"]
    assert json.loads(out.read_text())["policy"]["volume_units"] == "fail"
    args = ["data", "check", "--data-dir", str(tmp_path), "--quality", "volume_units=repair"]
    assert main(args) == 0
