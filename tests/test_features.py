"""Market features: no look-ahead, hand-checked indicators, flat bars, config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nexlify.config import TIMEFRAMES
from nexlify.data.features import (
    FEATURE_WARMUP,
    FeatureConfig,
    _raw_features,
    _wilder_rsi,
    compute_market_features,
    feature_config_for,
    feature_names,
    feature_warmup,
)
from nexlify.errors import ConfigError, DataError

# Small windows so hand-made series of a few bars get past the warm-up:
# lookback = max(2, 2, 3, 3, 1 + 2, 3 - 1, 2 - 1) = 3; warm-up = 3 + 2 - 1 = 4.
TINY = FeatureConfig(
    return_horizons=(1, 2),
    vol_window=2,
    long_vol_window=3,
    rsi_period=3,
    macd=(1, 2, 1),
    bollinger_window=3,
    volume_window=2,
    norm_window=4,
    norm_min_periods=2,
)


def random_walk_ohlcv(n_bars: int, n_pairs: int, seed: int = 0) -> np.ndarray:
    """Geometric random walk candles with consistent OHLC and log-normal volume."""
    rng = np.random.default_rng(seed)
    log_close = np.log(100.0) + np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_pairs)), axis=0)
    close = np.exp(log_close)
    open_ = np.empty_like(close)
    open_[0] = close[0]
    open_[1:] = close[:-1]
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.003, close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.003, close.shape)))
    volume = rng.lognormal(5.0, 1.0, close.shape)
    return np.stack([open_, high, low, close, volume], axis=-1)


def candles_from_closes(closes: list[float], volume: float = 1.0) -> np.ndarray:
    """One pair; open = close, high/low 1% around the close."""
    c = np.asarray(closes, dtype=np.float64)
    return np.stack([c, c * 1.01, c * 0.99, c, np.full_like(c, volume)], axis=-1)[:, None, :]


def column(names: tuple[str, ...], prefix: str) -> int:
    return next(i for i, n in enumerate(names) if n.startswith(prefix))


# --- shape, names, warm-up ------------------------------------------------------------------


def test_shape_dtype_names_and_warmup() -> None:
    ohlcv = random_walk_ohlcv(1200, 3)
    feats, names = compute_market_features(ohlcv)
    assert feats.dtype == np.float32
    assert feats.shape == (1200, 3, len(names))
    assert names == feature_names()
    assert names == (
        "ret_1",
        "ret_4",
        "ret_24",
        "ret_72",
        "vol_24",
        "vol_ratio_24_168",
        "rsi_14",
        "macd_hist",
        "bb_pctb",
        "volume_z_24",
        "bar_range",
        "close_pos",
    )
    # default lookback is the 168-bar long volatility; the normaliser needs 168 more values
    assert FEATURE_WARMUP == feature_warmup() == 168 + 168 - 1
    assert np.isnan(feats[:FEATURE_WARMUP]).all()
    assert np.isfinite(feats[FEATURE_WARMUP:]).all()
    assert np.abs(feats[FEATURE_WARMUP:]).max() <= 5.0


def test_warmup_is_constant_for_short_inputs() -> None:
    for n_bars in (0, 1, 10, FEATURE_WARMUP, FEATURE_WARMUP + 1):
        feats, _ = compute_market_features(random_walk_ohlcv(max(n_bars, 1), 2)[:n_bars])
        assert feats.shape[0] == n_bars
        assert np.isnan(feats[:FEATURE_WARMUP]).all()
        assert np.isfinite(feats[FEATURE_WARMUP:]).all()


# --- no look-ahead --------------------------------------------------------------------------


def test_no_look_ahead_prefix_equality() -> None:
    """Rows < k are bit-for-bit the same whether or not bars >= k exist."""
    ohlcv = random_walk_ohlcv(3000, 3, seed=7)
    full, _ = compute_market_features(ohlcv)
    for k in (1, 50, FEATURE_WARMUP, FEATURE_WARMUP + 1, 500, 721, 1500, 2999):
        prefix, _ = compute_market_features(ohlcv[:k])
        np.testing.assert_array_equal(prefix, full[:k], strict=True)


def test_no_look_ahead_when_future_bars_change() -> None:
    """Replacing every bar after t (a crash, a spike) leaves rows <= t unchanged."""
    ohlcv = random_walk_ohlcv(1500, 2, seed=3)
    base, _ = compute_market_features(ohlcv)
    t = 1000
    changed = ohlcv.copy()
    changed[t + 1 :, :, :4] *= 0.5
    changed[t + 1 :, :, 4] *= 10.0
    other, _ = compute_market_features(changed)
    np.testing.assert_array_equal(other[: t + 1], base[: t + 1])
    assert not np.array_equal(other[t + 1 :], base[t + 1 :])


# A long-memory set with short windows, so a few thousand bars cover its warm-up several times.
SHORT_LONG_MEMORY = FeatureConfig(long_return_horizons=(100, 300), ma_windows=(50, 400),
                                  drawdown_window=200)  # fmt: skip


def test_long_memory_features_are_prefix_stable() -> None:
    """Rows < k of the long-memory features are bit-for-bit the same without bars >= k."""
    ohlcv = random_walk_ohlcv(2500, 2, seed=9)
    warmup = feature_warmup(SHORT_LONG_MEMORY)
    assert warmup == 399 + 168 - 1
    full, names = compute_market_features(ohlcv, config=SHORT_LONG_MEMORY)
    assert names[-5:] == ("ret_100", "ret_300", "ma_dist_50", "ma_dist_400", "drawdown_200")
    assert np.isnan(full[:warmup]).all() and np.isfinite(full[warmup:]).all()
    for k in (1, warmup, warmup + 1, 1000, 1401, 2499):
        prefix, _ = compute_market_features(ohlcv[:k], config=SHORT_LONG_MEMORY)
        np.testing.assert_array_equal(prefix, full[:k], strict=True)
    changed = ohlcv.copy()
    changed[1801:, :, :4] *= 0.4  # a crash after bar 1800 changes nothing up to it
    other, _ = compute_market_features(changed, config=SHORT_LONG_MEMORY)
    np.testing.assert_array_equal(other[:1801], full[:1801])
    assert not np.array_equal(other[1801:, :, -3:], full[1801:, :, -3:])


def test_long_memory_leaves_the_default_features_as_they_were() -> None:
    """The long-memory columns are appended: the default ones keep their names and values
    (bit for bit once both warm-ups are over), and long_memory=False is the default set."""
    for timeframe in TIMEFRAMES:
        assert feature_config_for(timeframe, False) == FeatureConfig()
    ohlcv = random_walk_ohlcv(1500, 2, seed=1)
    base, base_names = compute_market_features(ohlcv)
    longer, names = compute_market_features(ohlcv, config=SHORT_LONG_MEMORY)
    assert names[: len(base_names)] == base_names == feature_names()
    warmup = feature_warmup(SHORT_LONG_MEMORY)
    np.testing.assert_array_equal(longer[warmup:, :, : len(base_names)], base[warmup:])
    assert FEATURE_WARMUP == 335


# --- hand-checked indicators ----------------------------------------------------------------


def test_log_returns_by_hand() -> None:
    ohlcv = candles_from_closes([100.0, 110.0, 99.0, 99.0, 108.9])
    raw = _raw_features(ohlcv, TINY)
    a, b = math.log(1.1), math.log(0.9)
    # ret_1: log(110/100), log(99/110), log(99/99), log(108.9/99)
    np.testing.assert_allclose(raw[0][1:, 0], [a, b, 0.0, a], rtol=1e-12, atol=1e-15)
    # ret_2: log(99/100), log(99/110), log(108.9/99)
    np.testing.assert_allclose(raw[1][2:, 0], [math.log(0.99), b, a], rtol=1e-12)
    assert np.isnan(raw[0][0, 0]) and np.isnan(raw[1][:2, 0]).all()

    # After the warm-up (row 4) ret_1 is divided by the RMS of ret_1 over bars 1..4:
    # sqrt((a^2 + b^2 + 0 + a^2) / 4) -> a / that = 1.114207535856182
    feats, names = compute_market_features(ohlcv, config=TINY)
    assert feature_warmup(TINY) == 4
    assert np.isnan(feats[:4]).all()
    assert feats[4, 0, names.index("ret_1")] == pytest.approx(1.114207535856182, rel=1e-6)


def test_wilder_rsi_by_hand() -> None:
    # changes:     +1, -0.5, +1, -0.5, +1     (period 3)
    close = np.array([[10.0], [11.0], [10.5], [11.5], [11.0], [12.0]])
    rsi = _wilder_rsi(close, 3)
    # t=3 seed: G = (1 + 0 + 1)/3 = 2/3, L = (0 + 0.5 + 0)/3 = 1/6
    #   RSI = 100 - 100/(1 + G/L) = 100 - 100/5 = 80  -> (80 - 50)/50 = 0.6
    # t=4: G = (2/3*2 + 0)/3 = 4/9, L = (1/6*2 + 0.5)/3 = 5/18
    #   RSI = 100*G/(G+L) = 100*8/13 = 61.538 -> (G-L)/(G+L) = 3/13
    # t=5: G = (4/9*2 + 1)/3 = 17/27, L = (5/18*2 + 0)/3 = 5/27
    #   RSI = 100*17/22 = 77.27 -> 12/22 = 6/11
    assert np.isnan(rsi[:3]).all()
    np.testing.assert_allclose(rsi[3:, 0], [0.6, 3 / 13, 6 / 11], rtol=1e-12)

    # RSI is not renormalised: the output column holds the same values (as float32)
    feats, names = compute_market_features(candles_from_closes(close[:, 0].tolist()), config=TINY)
    np.testing.assert_allclose(feats[4:, 0, names.index("rsi_3")], [3 / 13, 6 / 11], rtol=1e-6)


def test_wilder_rsi_matches_reference_loop() -> None:
    rng = np.random.default_rng(11)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 300)))
    period = 14
    change = np.diff(close)
    gain, loss = np.maximum(change, 0.0), np.maximum(-change, 0.0)
    avg_gain, avg_loss = gain[:period].mean(), loss[:period].mean()
    expected = [100.0 - 100.0 / (1.0 + avg_gain / avg_loss)]
    for g, lo in zip(gain[period:], loss[period:], strict=True):
        avg_gain = (avg_gain * (period - 1) + g) / period
        avg_loss = (avg_loss * (period - 1) + lo) / period
        expected.append(100.0 - 100.0 / (1.0 + avg_gain / avg_loss))
    rsi = _wilder_rsi(close[:, None], period)[:, 0]
    np.testing.assert_allclose(rsi[period:], (np.array(expected) - 50.0) / 50.0, rtol=1e-9)


def test_bollinger_pctb_by_hand() -> None:
    ohlcv = candles_from_closes([10.0, 11.0, 12.0, 12.0, 9.0, 9.0])
    raw = _raw_features(ohlcv, TINY)
    pctb = raw[feature_names(TINY).index("bb_pctb")][:, 0]

    def centred_pctb(window: list[float], close: float) -> float:
        mean = sum(window) / len(window)
        std = math.sqrt(sum((x - mean) ** 2 for x in window) / len(window))  # population std
        lower, upper = mean - 2.0 * std, mean + 2.0 * std
        return (close - lower) / (upper - lower) - 0.5

    # t=2: [10, 11, 12] mean 11, std sqrt(2/3) -> (12 - 11)/(4*0.8165) = 0.30619
    # t=3: [11, 12, 12] mean 11.667, std 0.4714 -> 0.17678
    # t=4: [12, 12, 9]  mean 11, std sqrt(2) -> (9 - 11)/(4*1.41421) = -0.35355
    # t=5: [12, 9, 9]   mean 10, std sqrt(2) -> (9 - 10)/(4*1.41421) = -0.17678
    assert np.isnan(pctb[:2]).all()
    np.testing.assert_allclose(
        pctb[2:],
        [0.30618621784789724, 0.1767766952966369, -0.35355339059327373, -0.1767766952966369],
        rtol=1e-9,
    )
    assert pctb[2] == pytest.approx(centred_pctb([10.0, 11.0, 12.0], 12.0), rel=1e-12)
    assert pctb[4] == pytest.approx(centred_pctb([12.0, 12.0, 9.0], 9.0), rel=1e-12)


def test_bar_range_and_close_position_by_hand() -> None:
    # open, high, low, close, volume
    bars = np.array([[10, 12, 8, 11, 5], [11, 11, 11, 11, 0], [11, 11.5, 10, 10, 3]], float)
    raw = _raw_features(bars[:, None, :], TINY)
    names = feature_names(TINY)
    bar_range = raw[names.index("bar_range")][:, 0]
    close_pos = raw[names.index("close_pos")][:, 0]
    # (12 - 8)/11, flat bar 0, (11.5 - 10)/10
    np.testing.assert_allclose(bar_range, [4 / 11, 0.0, 0.15])
    # (11 - 8)/(12 - 8) - 0.5 = 0.25; high == low -> 0; (10 - 10)/1.5 - 0.5 = -0.5
    np.testing.assert_allclose(close_pos, [0.25, 0.0, -0.5])


# --- flat bars, clipping ----------------------------------------------------------------------


def insert_flat_bars(ohlcv: np.ndarray, at: int, length: int) -> np.ndarray:
    """Forward-filled candles: volume 0 and O=H=L=C = the previous close."""
    last_close = ohlcv[at - 1, :, 3]
    flat = np.zeros((length, ohlcv.shape[1], 5))
    flat[:, :, :4] = last_close[None, :, None]
    return np.concatenate([ohlcv[:at], flat, ohlcv[at:]], axis=0)


def test_flat_bars_give_finite_features() -> None:
    ohlcv = random_walk_ohlcv(3000, 2, seed=5)
    ohlcv = insert_flat_bars(ohlcv, 2500, 5)
    ohlcv = insert_flat_bars(ohlcv, 1000, 900)  # longer than the normaliser window
    ohlcv = insert_flat_bars(ohlcv, 10, 30)  # inside the warm-up
    feats, _ = compute_market_features(ohlcv)
    assert np.isfinite(feats[FEATURE_WARMUP:]).all()
    assert np.abs(feats[FEATURE_WARMUP:]).max() <= 5.0


def test_entirely_flat_market_gives_zero_features() -> None:
    ohlcv = np.zeros((FEATURE_WARMUP + 50, 2, 5))
    ohlcv[:, :, :4] = 250.0
    feats, _ = compute_market_features(ohlcv)
    np.testing.assert_array_equal(feats[FEATURE_WARMUP:], 0.0)


def test_extreme_move_is_clipped() -> None:
    ohlcv = random_walk_ohlcv(1000, 1, seed=2)
    ohlcv[800:, 0, :4] *= 3.0  # +110% log return in one bar
    ohlcv[800, 0, 0] = ohlcv[799, 0, 3]
    ohlcv[800, 0, 2] = ohlcv[799, 0, 3]
    feats, names = compute_market_features(ohlcv, config=FeatureConfig(clip=4.0))
    assert feats[800, 0, names.index("ret_1")] == pytest.approx(4.0)
    assert np.nanmax(np.abs(feats)) <= 4.0


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("return_horizons", ()),
        ("return_horizons", (1, 0)),
        ("return_horizons", (4, 4)),
        ("vol_window", 1),
        ("long_vol_window", 24),
        ("rsi_period", 0),
        ("macd", (26, 12, 9)),
        ("macd", (12, 26)),
        ("bollinger_window", 1),
        ("bollinger_std", 0.0),
        ("bollinger_std", float("nan")),
        ("volume_window", 1.5),
        ("norm_window", 1),
        ("norm_min_periods", 1000),
        ("clip", -1.0),
        ("long_return_horizons", (24,)),  # already a return horizon: two "ret_24" columns
        ("long_return_horizons", (0,)),
        ("long_return_horizons", [168]),
        ("ma_windows", (1,)),
        ("ma_windows", (50, 50)),
        ("drawdown_window", -1),
        ("drawdown_window", 2.5),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"features.{field}"):
        FeatureConfig(**{field: value})  # type: ignore[arg-type]


def test_bad_ohlcv_raises_data_error() -> None:
    good = random_walk_ohlcv(50, 1)
    with pytest.raises(DataError, match="shape"):
        compute_market_features(good[:, :, :4])
    nan = good.copy()
    nan[10, 0, 3] = np.nan
    with pytest.raises(DataError, match="bar 10"):
        compute_market_features(nan)
    zero = good.copy()
    zero[5, 0, 2] = 0.0
    with pytest.raises(DataError, match="prices"):
        compute_market_features(zero)
    negative_volume = good.copy()
    negative_volume[5, 0, 4] = -1.0
    with pytest.raises(DataError, match="volume"):
        compute_market_features(negative_volume)
