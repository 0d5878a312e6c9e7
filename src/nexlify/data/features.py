"""Per-pair market features computed without look-ahead.

The agent decides after bar t closes, so the feature row of bar t may use bars ``<= t`` only.
Every building block here is *prefix-stable*: computing on ``ohlcv[:k]`` gives bit-for-bit the
same rows ``< k`` as computing on the whole array (elementwise numpy, pandas ``rolling`` and
``ewm(adjust=False)``, all of which run forward from the first bar). ``tests/test_features.py``
checks this with exact equality.

Pipeline, per pair:

1. raw indicators (log returns, realised volatility, RSI, MACD, Bollinger %B, volume z-score,
   bar range, close position) and, when configured, the long-memory ones (log returns over
   days, log distance to long simple moving averages, drawdown from the running high) and the
   cross-pair ones (a pair's log return over days less the equal-weight mean of every pair's,
   and its rank among the pairs); see :func:`feature_config_for`;
2. normalisation with past-only statistics over ``norm_window`` bars (including bar t):
   zero-centred features are divided by their rolling root-mean-square, positive ones
   (volatility, volatility ratio, bar range) are rolling z-scored, bounded or already
   standardised ones (RSI, %B, close position, volume z-score) are left as they are;
3. clip to ``[-clip, clip]``; the first :func:`feature_warmup` rows are NaN.

Divisions by a spread that is zero (flat, filled bars: volume 0 and O=H=L=C) yield 0, never
NaN or inf.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nexlify.config import timeframe_seconds
from nexlify.errors import ConfigError, DataError

__all__ = [
    "CROSS_PAIR_DAYS",
    "FEATURE_WARMUP",
    "LONG_MEMORY_DAYS",
    "FeatureConfig",
    "compute_market_features",
    "feature_config_for",
    "feature_config_from_dict",
    "feature_config_to_dict",
    "feature_names",
    "feature_warmup",
    "raw_market_features",
]

_EPS = 1e-12
"""A spread (std, RMS, volatility) at or below this counts as zero: the ratio is set to 0."""
_REL_EPS = 1e-10
"""A Bollinger std below this fraction of the mean price counts as zero (flat prices)."""


@dataclass(frozen=True)
class FeatureConfig:
    """Windows and normalisation of the per-pair market features (lengths in bars)."""

    return_horizons: tuple[int, ...] = (1, 4, 24, 72)
    """Horizons of the log-return features ``log(close_t / close_{t-h})``."""
    vol_window: int = 24
    """Window of the realised volatility (sample std of 1-bar log returns)."""
    long_vol_window: int = 168
    """Window of the long volatility that the realised volatility is divided by."""
    rsi_period: int = 14
    """Period of Wilder's RSI (seeded with the simple mean of the first period)."""
    macd: tuple[int, int, int] = (12, 26, 9)
    """MACD fast EMA span, slow EMA span and signal EMA span."""
    bollinger_window: int = 20
    """Window of the Bollinger band mean and (population) standard deviation."""
    bollinger_std: float = 2.0
    """Bollinger band half-width in standard deviations."""
    volume_window: int = 24
    """Window of the volume z-score, taken on ``log(1 + volume)``."""
    norm_window: int = 720
    """Window of the past-only rolling normaliser (includes the current bar)."""
    norm_min_periods: int = 168
    """Observations the normaliser needs before it emits a value."""
    clip: float = 5.0
    """Every feature is clipped to ``[-clip, clip]`` after normalisation."""
    long_return_horizons: tuple[int, ...] = ()
    """Long-memory horizons of more ``ret_<h>`` log-return features (empty = none)."""
    ma_windows: tuple[int, ...] = ()
    """Windows of ``ma_dist_<w>`` = ``log(close / SMA_w(close))`` (empty = none)."""
    drawdown_window: int = 0
    """Window of ``drawdown_<w>`` = ``log(close / max(high over w bars))`` (0 = none)."""
    cross_pair_horizons: tuple[int, ...] = ()
    """Horizons (bars) of the cross-pair features, per pair: ``xs_ret_<h>``, its log return over
    h less the mean over the pairs, and ``xs_rank_<h>``, its rank by that return scaled to
    [-0.5, 0.5] (empty = none; needs at least two pairs)."""

    def __post_init__(self) -> None:
        horizons = self.return_horizons
        if (
            not isinstance(horizons, tuple)
            or not horizons
            or not all(_is_int(h) and h >= 1 for h in horizons)
            or len(set(horizons)) != len(horizons)
        ):
            _bad("return_horizons", horizons, "a non-empty tuple of distinct integers >= 1")
        _check_int("vol_window", self.vol_window, 2)
        _check_int("long_vol_window", self.long_vol_window, 2)
        if self.long_vol_window <= self.vol_window:
            _bad("long_vol_window", self.long_vol_window, "must be greater than vol_window")
        _check_int("rsi_period", self.rsi_period, 1)
        macd = self.macd
        if (
            not isinstance(macd, tuple)
            or len(macd) != 3
            or not all(_is_int(x) and x >= 1 for x in macd)
            or macd[0] >= macd[1]
        ):
            _bad("macd", macd, "a tuple (fast, slow, signal) of integers >= 1 with fast < slow")
        _check_int("bollinger_window", self.bollinger_window, 2)
        if not _is_finite_positive(self.bollinger_std):
            _bad("bollinger_std", self.bollinger_std, "a finite number > 0")
        _check_int("volume_window", self.volume_window, 2)
        _check_int("norm_window", self.norm_window, 2)
        _check_int("norm_min_periods", self.norm_min_periods, 2)
        if self.norm_min_periods > self.norm_window:
            _bad("norm_min_periods", self.norm_min_periods, "must not exceed norm_window")
        if not _is_finite_positive(self.clip):
            _bad("clip", self.clip, "a finite number > 0")
        self._check_long_memory()

    def _check_long_memory(self) -> None:
        longs = self.long_return_horizons
        if not _distinct_ints(longs, 1) or set(longs) & set(self.return_horizons):
            _bad("long_return_horizons", longs,
                 "a tuple of distinct integers >= 1, none of them in return_horizons")  # fmt: skip
        if not _distinct_ints(self.ma_windows, 2):
            _bad("ma_windows", self.ma_windows, "a tuple of distinct integers >= 2")
        if not _is_int(self.drawdown_window) or int(self.drawdown_window) < 0:
            _bad("drawdown_window", self.drawdown_window, "an integer >= 0 (0 = none)")
        if not _distinct_ints(self.cross_pair_horizons, 1):
            _bad("cross_pair_horizons", self.cross_pair_horizons,
                 "a tuple of distinct integers >= 1")  # fmt: skip


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_finite_positive(x: object) -> bool:
    return (
        isinstance(x, (int, float, np.floating))
        and not isinstance(x, bool)
        and math.isfinite(float(x))
        and float(x) > 0.0
    )


def _distinct_ints(values: object, minimum: int) -> bool:
    return (
        isinstance(values, tuple)
        and all(_is_int(v) and v >= minimum for v in values)
        and len(set(values)) == len(values)
    )


def _bad(name: str, value: object, rule: str) -> None:
    raise ConfigError(f"features.{name}: {value!r} is invalid ({rule})")


def _check_int(name: str, value: object, minimum: int) -> None:
    if not _is_int(value) or int(value) < minimum:  # type: ignore[call-overload]
        _bad(name, value, f"an integer >= {minimum}")


def feature_names(config: FeatureConfig | None = None) -> tuple[str, ...]:
    """Names of the feature columns, in the order of the last axis of the feature array."""
    cfg = config or FeatureConfig()
    return (
        *(f"ret_{h}" for h in cfg.return_horizons),
        f"vol_{cfg.vol_window}",
        f"vol_ratio_{cfg.vol_window}_{cfg.long_vol_window}",
        f"rsi_{cfg.rsi_period}",
        "macd_hist",
        "bb_pctb",
        f"volume_z_{cfg.volume_window}",
        "bar_range",
        "close_pos",
        *(f"ret_{h}" for h in cfg.long_return_horizons),
        *(f"ma_dist_{w}" for w in cfg.ma_windows),
        *((f"drawdown_{cfg.drawdown_window}",) if cfg.drawdown_window else ()),
        *(f"{kind}_{h}" for h in cfg.cross_pair_horizons for kind in ("xs_ret", "xs_rank")),
    )


def _raw_lookback(cfg: FeatureConfig) -> int:
    """Index of the first bar at which every raw indicator is defined (and EMAs have settled)."""
    _fast, slow, signal = cfg.macd
    return max(
        max(cfg.return_horizons),
        cfg.vol_window,
        cfg.long_vol_window,
        cfg.rsi_period,
        slow + signal,
        cfg.bollinger_window - 1,
        cfg.volume_window - 1,
        max(cfg.long_return_horizons, default=0),
        max(cfg.ma_windows, default=1) - 1,
        cfg.drawdown_window - 1,
        max(cfg.cross_pair_horizons, default=0),
    )


def feature_warmup(config: FeatureConfig | None = None) -> int:
    """Number of leading bars whose feature rows are NaN (same for every input length)."""
    cfg = config or FeatureConfig()
    return _raw_lookback(cfg) + cfg.norm_min_periods - 1


FEATURE_WARMUP: int = feature_warmup()
"""Leading NaN rows with the default :class:`FeatureConfig` (168 + 168 - 1 = 335)."""

LONG_MEMORY_DAYS: dict[str, tuple[int, ...]] = {
    "returns": (7, 30),
    "moving_averages": (50, 200),
    "drawdown": (90,),
}
"""Windows of the long-memory features in days (``data.long_memory``), whatever the timeframe."""

CROSS_PAIR_DAYS: tuple[int, ...] = (1, 7, 30)
"""Horizons of the cross-pair features in days (``data.cross_pair``), whatever the timeframe."""


def feature_config_for(
    timeframe: str, long_memory: bool, cross_pair: bool = False
) -> FeatureConfig:
    """The feature set of a run: the default one, plus the long-memory and the cross-pair
    features when asked.

    Their windows are given in days (:data:`LONG_MEMORY_DAYS`, :data:`CROSS_PAIR_DAYS`) and
    turned into bars of ``timeframe`` (1h: 24 bars a day, 4h: 6, 1d: 1), so a 4h model looks as
    far back in time as a 1h one. The 200-day average makes the warm-up long: 4966 bars at 1h.
    """
    config = FeatureConfig()
    if not long_memory and not cross_pair:
        return config
    seconds = timeframe_seconds(timeframe)
    if 86400 % seconds:
        option = "long_memory" if long_memory else "cross_pair"
        raise ConfigError(
            f"data.{option}: the timeframe {timeframe!r} does not divide a day; "
            "long-memory and cross-pair windows are whole days"
        )
    per_day = 86400 // seconds
    if long_memory:
        days = LONG_MEMORY_DAYS
        config = dataclasses.replace(
            config,
            long_return_horizons=tuple(d * per_day for d in days["returns"]),
            ma_windows=tuple(d * per_day for d in days["moving_averages"]),
            drawdown_window=days["drawdown"][0] * per_day,
        )
    if cross_pair:
        horizons = tuple(d * per_day for d in CROSS_PAIR_DAYS)
        config = dataclasses.replace(config, cross_pair_horizons=horizons)
    return config


def feature_config_to_dict(config: FeatureConfig) -> dict[str, Any]:
    """JSON-friendly form (tuples become lists), e.g. for a checkpoint's ``extra``."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def feature_config_from_dict(values: Mapping[str, Any]) -> FeatureConfig:
    """Inverse of :func:`feature_config_to_dict`; unknown keys are refused by name."""
    known = {f.name for f in dataclasses.fields(FeatureConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"features: unknown setting(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return FeatureConfig(**kwargs)


# --- building blocks (all [T, P] float64, prefix-stable) ------------------------------------


def _safe_div(num: np.ndarray, den: np.ndarray, floor: np.ndarray | float = _EPS) -> np.ndarray:
    """``num / den`` where ``den > floor``, else 0; NaN in either input stays NaN."""
    ok = den > floor
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    out[np.isnan(num) | np.isnan(den)] = np.nan
    return out


def _lagged_diff(x: np.ndarray, lag: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    if lag < x.shape[0]:
        out[lag:] = x[lag:] - x[:-lag]
    return out


def _rolling_mean(x: np.ndarray, window: int, min_periods: int | None = None) -> np.ndarray:
    frame = pd.DataFrame(x)
    return frame.rolling(window, min_periods=min_periods or window).mean().to_numpy()


def _rolling_std(
    x: np.ndarray, window: int, ddof: int, min_periods: int | None = None
) -> np.ndarray:
    frame = pd.DataFrame(x)
    rolled = frame.rolling(window, min_periods=min_periods or window).std(ddof=ddof)
    return rolled.to_numpy()


def _ema(x: np.ndarray, *, span: float | None = None, alpha: float | None = None) -> np.ndarray:
    """Recursive EMA ``y_t = (1 - a) y_{t-1} + a x_t`` seeded at the first non-NaN value."""
    return pd.DataFrame(x).ewm(span=span, alpha=alpha, adjust=False).mean().to_numpy()


def _wilder_rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's RSI scaled to [-1, 1]: ``(rsi - 50) / 50 = (G - L) / (G + L)``; 0 when flat.

    G and L are the smoothed average gain and loss: the simple mean of the first ``period``
    changes (bars 1..period), then ``avg_t = (avg_{t-1} (period - 1) + x_t) / period``.
    """
    change = _lagged_diff(close, 1)
    gain = np.maximum(change, 0.0)
    loss = np.maximum(-change, 0.0)
    if close.shape[0] <= period:
        return np.full_like(close, np.nan)
    smoothed = []
    for series in (gain, loss):
        seeded = series.copy()
        seeded[:period] = np.nan
        seeded[period] = series[1 : period + 1].mean(axis=0)
        smoothed.append(_ema(seeded, alpha=1.0 / period))
    avg_gain, avg_loss = smoothed
    return _safe_div(avg_gain - avg_loss, avg_gain + avg_loss)


def _raw_features(ohlcv: np.ndarray, cfg: FeatureConfig) -> list[np.ndarray]:
    high, low, close, volume = (ohlcv[..., i] for i in (1, 2, 3, 4))
    log_close = np.log(close)
    features = [_lagged_diff(log_close, h) for h in cfg.return_horizons]

    ret_1 = _lagged_diff(log_close, 1)
    vol = _rolling_std(ret_1, cfg.vol_window, ddof=1)
    long_vol = _rolling_std(ret_1, cfg.long_vol_window, ddof=1)
    features += [vol, _safe_div(vol, long_vol)]

    features.append(_wilder_rsi(close, cfg.rsi_period))

    fast, slow, signal = cfg.macd
    macd_line = _ema(close, span=fast) - _ema(close, span=slow)
    macd_hist = macd_line - _ema(macd_line, span=signal)
    features.append(macd_hist / close)

    mean = _rolling_mean(close, cfg.bollinger_window)
    std = _rolling_std(close, cfg.bollinger_window, ddof=0)
    # %B - 0.5 = (close - lower) / (upper - lower) - 0.5 = (close - mean) / (2 k std)
    features.append(_safe_div(close - mean, 2.0 * cfg.bollinger_std * std, _REL_EPS * mean))

    log_volume = np.log1p(volume)
    v_mean = _rolling_mean(log_volume, cfg.volume_window)
    v_std = _rolling_std(log_volume, cfg.volume_window, ddof=0)
    features.append(_safe_div(log_volume - v_mean, v_std))

    bar_span = high - low
    features.append(bar_span / close)
    features.append(_safe_div(close - low, bar_span, 0.0) - 0.5 * (bar_span > 0.0))
    return (
        features
        + _long_memory_features(high, close, log_close, cfg)
        + _cross_pair_features(log_close, cfg)
    )


def _long_memory_features(
    high: np.ndarray, close: np.ndarray, log_close: np.ndarray, cfg: FeatureConfig
) -> list[np.ndarray]:
    """Long log returns, log distance to simple moving averages, drawdown from the high."""
    features = [_lagged_diff(log_close, h) for h in cfg.long_return_horizons]
    features += [log_close - np.log(_rolling_mean(close, w)) for w in cfg.ma_windows]
    if cfg.drawdown_window:
        w = cfg.drawdown_window
        running_high = pd.DataFrame(high).rolling(w, min_periods=w).max().to_numpy()
        features.append(log_close - np.log(running_high))
    return features


def _cross_pair_features(log_close: np.ndarray, cfg: FeatureConfig) -> list[np.ndarray]:
    """Per horizon: each pair's log return less the equal-weight mean over the pairs (relative
    strength), then its rank by that return among the pairs, scaled to [-0.5, 0.5] (ties share
    the mean rank). Both use bar t of every pair only, so they stay prefix-stable."""
    features: list[np.ndarray] = []
    if not cfg.cross_pair_horizons:
        return features
    n_pairs = log_close.shape[1]
    if n_pairs < 2:
        raise ConfigError(
            f"features.cross_pair_horizons: cross-pair features compare pairs; got {n_pairs} "
            "pair, give at least two"
        )
    for h in cfg.cross_pair_horizons:
        returns = _lagged_diff(log_close, h)
        features.append(returns - returns.mean(axis=1, keepdims=True))
        rank = pd.DataFrame(returns).rank(axis=1, method="average").to_numpy()
        features.append((rank - 1.0) / (n_pairs - 1) - 0.5)
    return features


def raw_market_features(ohlcv: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Every feature before normalisation and clipping, by name (float64 [T, P], NaN where a
    window is not full yet): what the normaliser sees, for checks by hand."""
    arr = _validate_ohlcv(ohlcv)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = _raw_features(arr, config)
    return dict(zip(feature_names(config), raw, strict=True))


def _normalise_scale(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Divide by the rolling root-mean-square (keeps the sign and zero of a centred feature)."""
    mean_square = _rolling_mean(x * x, cfg.norm_window, cfg.norm_min_periods)
    return _safe_div(x, np.sqrt(np.maximum(mean_square, 0.0)))


def _normalise_zscore(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    mean = _rolling_mean(x, cfg.norm_window, cfg.norm_min_periods)
    std = _rolling_std(x, cfg.norm_window, ddof=0, min_periods=cfg.norm_min_periods)
    return _safe_div(x - mean, std)


def _long_windows(cfg: FeatureConfig) -> list[int]:
    """The window (bars) of each long-memory feature, in column order."""
    drawdown = [cfg.drawdown_window] if cfg.drawdown_window else []
    return [*cfg.long_return_horizons, *cfg.ma_windows, *drawdown]


def _normalise_vol(x: np.ndarray, close: np.ndarray, window: int, cfg: FeatureConfig) -> np.ndarray:
    """Divide by ``sigma * sqrt(window)``, sigma the past-only std of 1-bar log returns over
    ``long_vol_window``: a slow, one-signed feature keeps its level (its own rolling RMS would
    flatten a long drawdown or a bear market's distance below its average to about +-1)."""
    one_bar = _lagged_diff(np.log(close), 1)
    sigma = _rolling_std(one_bar, cfg.long_vol_window, ddof=1)
    return _safe_div(x, sigma * math.sqrt(window))


def _normalisers(cfg: FeatureConfig) -> list[str]:
    """How each feature column is normalised: 'scale', 'zscore', 'vol' or 'none'."""
    n_returns = len(cfg.return_horizons)
    n_long = len(cfg.long_return_horizons) + len(cfg.ma_windows) + (cfg.drawdown_window > 0)
    # cross-pair: relative strength is zero-centred (its RMS keeps sign and zero), rank bounded
    cross = ["scale", "none"] * len(cfg.cross_pair_horizons)
    return (
        ["scale"] * n_returns
        + [
            "zscore",  # realised volatility
            "zscore",  # volatility ratio
            "none",  # RSI, already in [-1, 1]
            "scale",  # MACD histogram / close
            "none",  # Bollinger %B - 0.5, already in band units
            "none",  # volume z-score, already standardised
            "zscore",  # bar range
            "none",  # close position, in [-0.5, 0.5]
        ]
        + ["vol"] * n_long  # long memory: log ratios in units of a random walk's move
        + cross
    )


def _validate_ohlcv(ohlcv: np.ndarray) -> np.ndarray:
    arr = np.asarray(ohlcv, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 5:
        raise DataError(
            f"features: expected OHLCV of shape [T, P, 5] (open, high, low, close, volume), "
            f"got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(
            f"features: non-finite value at bar {bad[0]}, pair {bad[1]}, column {bad[2]}; "
            "fill or drop missing candles first (see data quality checks)"
        )
    if (arr[..., :4] <= 0.0).any():
        raise DataError("features: prices must be > 0; run the data quality checks first")
    if (arr[..., 4] < 0.0).any():
        raise DataError("features: volume must be >= 0; run the data quality checks first")
    if (arr[..., 1] < arr[..., 2]).any():
        raise DataError("features: high below low in some bar; run the data quality checks first")
    return arr


def compute_market_features(
    ohlcv: np.ndarray, *, config: FeatureConfig | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Features of every pair at every bar, using only bars up to and including that bar.

    Args:
        ohlcv: float array [T, P, 5] of open, high, low, close, volume for P pairs.
        config: windows and normalisation; defaults to :class:`FeatureConfig()`.

    Returns:
        ``(features, names)``: float32 [T, P, F] with rows ``< feature_warmup(config)`` NaN and
        every later value finite and within ``[-clip, clip]``; ``names`` has length F.

    Raises:
        DataError: wrong shape, non-finite values, non-positive prices, negative volume or
            high below low.
    """
    cfg = config or FeatureConfig()
    arr = _validate_ohlcv(ohlcv)
    n_bars, n_pairs, _ = arr.shape
    names = feature_names(cfg)
    out = np.empty((n_bars, n_pairs, len(names)), dtype=np.float64)
    if n_bars == 0:
        return out.astype(np.float32), names
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = _raw_features(arr, cfg)
        long_windows = iter(_long_windows(cfg))
        for j, (x, how) in enumerate(zip(raw, _normalisers(cfg), strict=True)):
            if how == "scale":
                x = _normalise_scale(x, cfg)
            elif how == "zscore":
                x = _normalise_zscore(x, cfg)
            elif how == "vol":
                x = _normalise_vol(x, arr[..., 3], next(long_windows), cfg)
            out[:, :, j] = x
    np.clip(out, -cfg.clip, cfg.clip, out=out)
    out[: feature_warmup(cfg)] = np.nan
    return out.astype(np.float32), names
