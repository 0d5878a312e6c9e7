"""Where a MarketData comes from: candle files, a DataFrame, or the built-in synthetic market."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from nexlify.config import timeframe_seconds
from nexlify.data.features import FeatureConfig
from nexlify.data.market_data import MarketData, build_market_data
from nexlify.errors import DataError

DEFAULT_PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
SYNTHETIC_DAYS = 730
"""Length of the default synthetic market: two years, so that 90 validation days stay unseen."""


def synthetic_market(
    pairs: Sequence[str] = DEFAULT_PAIRS,
    timeframe: str = "1h",
    seed: int = 0,
    days: float = SYNTHETIC_DAYS,
    features: FeatureConfig | None = None,
) -> MarketData:
    """The built-in synthetic market (same seed, same market); ``features``: the feature set."""
    from nexlify.data.synthetic import generate_synthetic_candles

    n_bars = int(days * 86400 // timeframe_seconds(timeframe))
    frames = generate_synthetic_candles(list(pairs), timeframe=timeframe, n_bars=n_bars, seed=seed)
    return build_market_data(
        frames, timeframe, source="synthetic", extra_notes=(f"seed {seed}",), features=features
    )


def market_from_files(
    data_dir: str | Path,
    pairs: Sequence[str],
    timeframe: str,
    features: FeatureConfig | None = None,
) -> MarketData:
    """Candle files ``<BASE>_<QUOTE>-<tf>.{parquet,feather,csv}`` for every pair in ``data_dir``."""
    from nexlify.data.candles import load_pairs

    path = Path(data_dir)
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist or is not a directory")
    frames = load_pairs(path, list(pairs), timeframe)
    return build_market_data(frames, timeframe, source=f"files:{path}", features=features)


def market_from_frame(
    frame: pd.DataFrame, pair: str = "BTC/USDT", timeframe: str = "1h", name: str = "<DataFrame>"
) -> MarketData:
    """One pair's candles from a DataFrame (``date`` column or DatetimeIndex, OHLCV columns)."""
    from nexlify.data.candles import candles_from_dataframe

    candles = candles_from_dataframe(frame, name=name, timeframe=timeframe)
    return build_market_data({pair: candles}, timeframe, source=f"dataframe:{name}")


def market_from_file(path: str | Path, pair: str, timeframe: str) -> MarketData:
    """One pair's candles from a single CSV, Parquet or feather file."""
    from nexlify.data.candles import read_candles

    candles = read_candles(path, timeframe=timeframe)
    return build_market_data({pair: candles}, timeframe, source=f"file:{path}")


def resolve_market(
    data: MarketData | pd.DataFrame | str | Path | None,
    pairs: Sequence[str] | None = None,
    timeframe: str = "1h",
    seed: int = 0,
) -> MarketData:
    """Turn any supported data argument into a MarketData.

    ``None`` -> synthetic market; a DataFrame -> one pair; a file path -> one pair; a directory ->
    one file per pair; a MarketData is returned as it is.
    """
    if isinstance(data, MarketData):
        return data
    if data is None:
        return synthetic_market(pairs or DEFAULT_PAIRS, timeframe, seed)
    if isinstance(data, pd.DataFrame):
        return market_from_frame(data, (pairs or DEFAULT_PAIRS)[0], timeframe)
    path = Path(data)
    if path.is_dir():
        return market_from_files(path, pairs or DEFAULT_PAIRS, timeframe)
    if path.is_file():
        return market_from_file(path, (pairs or DEFAULT_PAIRS)[0], timeframe)
    raise DataError(f"data: {str(path)!r} is neither a file nor a directory")
