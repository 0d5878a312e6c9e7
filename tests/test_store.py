"""The Parquet store: layout, merge without overwriting, listing, import and the pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from nexlify.cli import main
from nexlify.data.store import CandleStore
from nexlify.pipeline.data_choice import load_training_market
from nexlify.train.config import DataConfig


def candles(start: str, closes: list[float]) -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(closes), freq="h", tz="UTC", name="date")
    c = pd.Series(closes, index=idx) * 10
    return pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1.0})


def test_layout_and_merge_keeps_stored_rows(tmp_path: Path) -> None:
    store = CandleStore(tmp_path)
    assert store.merge("binance", "BTC/USDT", "1h", candles("2024-01-01", [1.0, 2.0, 3.0])) == 3
    assert (
        store.candle_path("binance", "BTC/USDT", "1h") == tmp_path / "binance/BTC_USDT-1h.parquet"
    )
    added = store.merge("binance", "BTC/USDT", "1h", candles("2024-01-01 02:00", [30.0, 4.0]))
    frame = store.read("binance", "BTC/USDT", "1h")
    assert added == 1 and frame is not None
    assert frame["close"].tolist() == [10.0, 20.0, 30.0, 40.0]  # 02:00 kept as stored
    assert not list((tmp_path / "binance").glob(".*.tmp"))  # atomic writes leave no temp file


def test_entries_count_gaps_and_list_command(tmp_path: Path) -> None:
    store = CandleStore(tmp_path)
    frame = candles("2024-01-01", [1.0, 2.0, 3.0, 4.0, 5.0]).drop(
        pd.Timestamp("2024-01-01 02:00", tz="UTC")
    )
    store.write("kucoin", "ETH/USDT", "1h", frame)
    (entry,) = store.entries()
    assert (entry.exchange, entry.pair, entry.timeframe, entry.rows, entry.gaps) == (
        "kucoin", "ETH/USDT", "1h", 4, 1,
    )  # fmt: skip
    out = tmp_path / "list.json"
    assert main(["data", "list", "--store-dir", str(tmp_path), "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["gaps"] == 1


def test_import_command_and_training_from_the_store(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    closes = [100.0 + (k % 7) for k in range(24 * 30)]
    candles("2024-01-01", closes).to_csv(src / "BTC_USDT-1h.csv")
    store_dir = tmp_path / "store"
    args = ["data", "import", str(src / "BTC_USDT-1h.csv"), "--exchange", "binance",
            "--store-dir", str(store_dir)]  # fmt: skip
    assert main(args) == 0
    assert main(args) == 0  # re-import adds nothing and overwrites nothing
    assert (store_dir / "binance" / "BTC_USDT-1h.parquet").is_file()
    config = DataConfig(pairs=("BTC/USDT",), store_dir=str(store_dir), source="store")
    market = load_training_market(config, logging.getLogger("test"))
    assert market.source.endswith("binance") and market.n_pairs == 1


def test_import_refuses_a_failing_file(tmp_path: Path, capsys: object) -> None:
    bad = tmp_path / "BTC_USDT-1h.csv"
    frame = candles("2024-01-01", [1.0, 2.0, 3.0])
    frame.iloc[1, frame.columns.get_loc("high")] = 5.0
    frame.to_csv(bad)
    code = main(["data", "import", str(bad), "--exchange", "x", "--store-dir", str(tmp_path / "s")])
    assert code == 3
    assert not (tmp_path / "s" / "x").exists()
