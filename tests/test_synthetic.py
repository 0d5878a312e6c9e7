"""Synthetic market: determinism, valid candles and the stylised facts it promises."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest

from nexlify.config import bars_per_year
from nexlify.data.candles import candles_from_dataframe
from nexlify.data.synthetic import (
    REGIMES,
    SyntheticMarket,
    generate_synthetic_candles,
    pair_profile,
    simulate_synthetic_market,
    synthetic_trend_candles,
)
from nexlify.errors import ConfigError

PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


@cache
def market(timeframe: str = "1h", n_bars: int = 30_000, seed: int = 0) -> SyntheticMarket:
    return simulate_synthetic_market(list(PAIRS), timeframe, n_bars, seed)


def log_returns(candles: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.DataFrame({p: np.log(df["close"]).diff() for p, df in candles.items()}).dropna()


def test_same_seed_same_candles_different_seed_different() -> None:
    a = generate_synthetic_candles(PAIRS, "1h", 500, seed=3)
    b = generate_synthetic_candles(PAIRS, "1h", 500, seed=3)
    c = generate_synthetic_candles(PAIRS, "1h", 500, seed=4)
    for pair in PAIRS:
        pd.testing.assert_frame_equal(a[pair], b[pair])
        assert not np.allclose(a[pair]["close"], c[pair]["close"])


def test_adding_a_pair_does_not_change_the_others() -> None:
    alone = generate_synthetic_candles(["ETH/USDT"], "1h", 300, seed=1)
    together = generate_synthetic_candles(["BTC/USDT", "ETH/USDT"], "1h", 300, seed=1)
    pd.testing.assert_frame_equal(alone["ETH/USDT"], together["ETH/USDT"])


@pytest.mark.parametrize("timeframe", ["1m", "1h", "1d"])
def test_candles_are_canonical_and_ohlc_consistent(timeframe: str) -> None:
    candles = generate_synthetic_candles(PAIRS, timeframe, 2_000, seed=0, start="2022-01-01")
    assert list(candles) == list(PAIRS)
    for pair, df in candles.items():
        # The file validator accepts it unchanged (grid, order, positivity, OHLC envelope).
        pd.testing.assert_frame_equal(candles_from_dataframe(df, pair, timeframe), df)
        o, h, lo, c, v = (df[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
        assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
        assert (h > lo).mean() > 0.99  # real excursions, not flat bars
        np.testing.assert_array_equal(o[1:], c[:-1])  # next open = previous close
        assert (v > 0).all()
        assert df.index[0] == pd.Timestamp("2022-01-01", tz="UTC")


def test_start_prices_are_plausible() -> None:
    candles = generate_synthetic_candles([*PAIRS, "XYZ/USDT"], "1h", 10)
    assert 25_000 < candles["BTC/USDT"]["open"].iloc[0] < 35_000
    assert 1_500 < candles["ETH/USDT"]["open"].iloc[0] < 2_500
    assert 30 < candles["SOL/USDT"]["open"].iloc[0] < 70
    assert 1 <= candles["XYZ/USDT"]["open"].iloc[0] <= 100
    assert pair_profile("XYZ/USDT") == pair_profile("XYZ/USDT")  # from the name, not hash()


def test_pairs_are_correlated() -> None:
    corr = log_returns(market().candles).corr().to_numpy()  # BTC, ETH, SOL
    assert 0.6 < corr[0, 1] < 0.9
    assert 0.5 < corr[1, 2] < 0.85


def test_fat_tails_and_volatility_clustering() -> None:
    r = log_returns(market().candles)["BTC/USDT"].to_numpy()
    z = (r - r.mean()) / r.std()
    assert np.mean(z**4) > 3.5  # kurtosis (3 for a normal distribution)
    a = np.abs(r)
    assert np.corrcoef(a[1:], a[:-1])[0, 1] > 0.1


@pytest.mark.parametrize("timeframe", ["1h", "1d"])
def test_annual_volatility_is_btc_like(timeframe: str) -> None:
    n_bars = 30_000 if timeframe == "1h" else 1_500
    r = log_returns(market(timeframe, n_bars).candles)["BTC/USDT"]
    annual_vol = float(r.std()) * np.sqrt(bars_per_year(timeframe))
    assert 0.45 < annual_vol < 0.95


def test_regimes_switch_and_drive_the_drift() -> None:
    m = market("1h", 60_000)
    assert set(np.unique(m.regimes)) == set(range(len(REGIMES)))
    r = log_returns(m.candles).mean(axis=1).to_numpy()  # equal-weight market return
    regime = m.regimes[1:]
    bull, bear = REGIMES.index("bull"), REGIMES.index("bear")
    assert r[regime == bull].mean() > 0 > r[regime == bear].mean()
    monthly = pd.Series(r).rolling(24 * 30).mean().dropna()
    assert monthly.max() > 0 > monthly.min()
    # Spells last weeks, not hours.
    spells = np.count_nonzero(np.diff(m.regimes)) + 1
    assert 60_000 / spells > 24 * 7


def test_trend_market_goes_up_or_down() -> None:
    n = 1_000
    up = synthetic_trend_candles(["BTC/USDT", "ETH/USDT"], "1h", n, drift_per_bar=0.001)
    down = synthetic_trend_candles(["BTC/USDT"], "1h", n, drift_per_bar=-0.001)
    for df in up.values():
        pd.testing.assert_frame_equal(candles_from_dataframe(df, timeframe="1h"), df)
        growth = np.log(df["close"].iloc[-1] / df["open"].iloc[0])
        assert 0.8 < growth < 1.2  # 1000 bars * 0.001
        assert (df["close"] > df["open"]).mean() > 0.6
    assert down["BTC/USDT"]["close"].iloc[-1] < 0.5 * down["BTC/USDT"]["open"].iloc[0]


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="pair"):
        generate_synthetic_candles(["btcusdt"], "1h", 10)
    with pytest.raises(ConfigError, match="more than once"):
        generate_synthetic_candles(["BTC/USDT", "BTC/USDT"], "1h", 10)
    with pytest.raises(ConfigError, match="n_bars"):
        generate_synthetic_candles(["BTC/USDT"], "1h", 1)
    with pytest.raises(ConfigError, match="timeframe"):
        generate_synthetic_candles(["BTC/USDT"], "3h", 10)
    with pytest.raises(ConfigError, match="start"):
        generate_synthetic_candles(["BTC/USDT"], "1h", 10, start="2022-01-01 00:30")
    with pytest.raises(ConfigError, match="noise"):
        synthetic_trend_candles(["BTC/USDT"], noise=-1.0)
