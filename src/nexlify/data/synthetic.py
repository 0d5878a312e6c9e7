"""Built-in synthetic market: seeded, correlated, crypto-like candles for any pairs and timeframe.

Used when there is no network and no local data (training then says so loudly), and by tests.

Model, on log prices, for pair i at bar t of length ``dt`` years::

    r[t, i] = mu[k_t] * m_i * dt  +  sigma[t, i] * (w[t, i] + jump[t, i])
    sigma[t, i] = s_i * g[k_t] * season(t) * sqrt(dt * h[t, i] / (1 + jump variance))

- Regimes ``k_t``: bull / bear / sideways, a Markov chain shared by all pairs. A spell lasts a
  geometric number of bars with a mean of 8 / 5 / 6 weeks whatever the timeframe, then moves to
  another regime (``_TRANSITIONS``). Each regime has an annual log drift ``mu`` (+150% / -150% /
  0 for a pair with 60% volatility; ``m_i = s_i / 0.6``, so alts rise and fall harder) and a
  volatility multiplier ``g`` (1.0 / 1.3 / 0.8).
- Shocks ``w = b_i z_market + sqrt(1 - b_i^2) z_i``: a market factor plus idiosyncratic noise,
  both Student-t with 4 degrees of freedom (fat tails) scaled to unit variance and clipped at
  12. Log returns of two pairs correlate about ``b_i b_j`` (BTC/ETH ~0.8, ETH/SOL ~0.7).
- Volatility clustering: ``h`` is a GARCH(1,1) recursion on the shocks,
  ``h_t = omega + h_{t-1} (a min(w_{t-1}^2, 16) + b)`` with E[h] = 1, persistence
  ``exp(-bar / 10 days)`` and ``a ~ sqrt(1 - persistence)`` (the diffusion limit), so clusters
  look alike in calendar time at 1m, 1h and 1d. The recursion runs in numba.
- Seasonality: volatility peaks around the US session (15:00 UTC) and drops at weekends.
- Jumps: Poisson, market-wide (3 a year, hitting each pair in proportion to ``b_i``) and per
  pair (3 a year), each of 3 to 6 bar sigmas with a random sign. The diffusion is scaled down by
  the jumps' share of the variance, so annual volatility (BTC ~65%) is the same at any timeframe.
- Intrabar path: each bar is a 16-step Brownian bridge from open to close (with 1.25x the bar's
  sigma, as real ranges are wider); high and low are the extremes of that path, so
  high >= max(open, close) and low <= min(open, close) by construction. The next bar opens at
  this bar's close (crypto trades around the clock).
- Volume (base currency): lognormal around a per-pair quote volume, higher when the shock is
  large and when volatility is high.

Per-pair profile (start price, volatility ``s_i``, market loading ``b_i``, quote volume) comes
from the base asset's name only: known assets get plausible values (BTC ~30000, ETH ~2000,
SOL ~50), others are drawn from a generator seeded with a CRC32 of the name (not Python's salted
``hash``). Randomness: the market factor and regimes come from ``default_rng(seed)``, each pair's
own noise from ``default_rng([seed, crc32(pair)])``, so the same seed gives the same candles and
adding a pair does not change the others. No global RNG is touched.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from nexlify.config import timeframe_seconds
from nexlify.data.candles import candle_frame, parse_pair
from nexlify.errors import ConfigError

REGIMES: tuple[str, ...] = ("bull", "bear", "sideways")
"""Names of the market regimes, indexed by the codes in ``SyntheticMarket.regimes``."""

_YEAR_S = 365.0 * 86400.0
_REGIME_WEEKS = np.array([8.0, 5.0, 6.0])
_REGIME_DRIFT = np.array([1.5, -1.5, 0.0])  # annual log drift of a pair with 60% volatility
_REGIME_VOL = np.array([1.0, 1.3, 0.8])  # mean square ~1 over the regimes' time shares
_TRANSITIONS = np.array([[0.0, 0.4, 0.6], [0.4, 0.0, 0.6], [0.55, 0.45, 0.0]])
_T_DF = 4.0
_SHOCK_CLIP = 12.0
_VOL_MEMORY_S = 10 * 86400.0
_VOL_OF_VOL = 0.45
_GARCH_FEED_CAP = 16.0  # a 12-sigma shock should not multiply the variance by 20
_GARCH_FEED_MEAN = 0.914  # E[min(w^2, 16)] for the scaled, clipped Student-t(4) shocks
_GARCH_H_CAP = 25.0
_DAILY_SWING = 0.3
_WEEKEND_VOL = 0.75
_JUMPS_PER_YEAR = (3.0, 3.0)  # market-wide, per pair
_N_SUB = 16
_INTRABAR_VOL = 1.25  # real high-low ranges are wider than a 16-step bridge of the bar sigma
_VOL_REF = 0.6
# base asset: (start price, annual volatility, market loading, quote volume per hour in USD)
_KNOWN_ASSETS: dict[str, tuple[float, float, float, float]] = {
    "BTC": (30_000.0, 0.65, 0.92, 7e7),
    "ETH": (2_000.0, 0.80, 0.90, 3.5e7),
    "SOL": (50.0, 1.10, 0.80, 9e6),
    "BNB": (300.0, 0.75, 0.82, 6e6),
}


@dataclass(frozen=True)
class PairProfile:
    """Static character of a synthetic pair, derived from its base asset's name."""

    start_price: float
    """Price of the first bar's open, in quote currency."""
    annual_vol: float
    """Annualised volatility of log returns before regimes and jumps (0.6 = 60%)."""
    market_loading: float
    """Weight of the common market factor in the shocks, in (0, 1)."""
    quote_volume_per_hour: float
    """Typical traded value per hour, in quote currency."""


@dataclass(frozen=True, eq=False)
class SyntheticMarket:
    """Synthetic candles together with the regime path that generated them."""

    candles: dict[str, pd.DataFrame]
    """Candle frames by pair (see :mod:`nexlify.data.candles`)."""
    regimes: np.ndarray
    """int8 [T]: regime code per bar, an index into ``REGIMES``."""


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def pair_profile(pair: str) -> PairProfile:
    """Start price, volatility, market loading and volume level of a synthetic pair."""
    base, _ = parse_pair(pair)
    if base in _KNOWN_ASSETS:
        return PairProfile(*_KNOWN_ASSETS[base])
    rng = np.random.default_rng(_stable_id(base))
    return PairProfile(
        start_price=float(np.exp(rng.uniform(np.log(1.0), np.log(100.0)))),
        annual_vol=float(rng.uniform(0.8, 1.2)),
        market_loading=float(rng.uniform(0.70, 0.82)),
        quote_volume_per_hour=float(10.0 ** rng.uniform(5.0, 6.5)),
    )


@njit(cache=True)
def _garch_variance(w: np.ndarray, alpha: float, beta: float, omega: float) -> np.ndarray:
    """GARCH(1,1) variance multiplier h [T, P] driven by unit-variance shocks w [T, P]."""
    n, p = w.shape
    h = np.empty((n, p))
    h[0, :] = 1.0
    for t in range(1, n):
        for i in range(p):
            feed = min(w[t - 1, i] ** 2, _GARCH_FEED_CAP)
            h[t, i] = min(omega + h[t - 1, i] * (alpha * feed + beta), _GARCH_H_CAP)
    return h


def _garch_params(bar_s: int) -> tuple[float, float, float]:
    """(alpha, beta, omega) for a bar of ``bar_s`` seconds.

    Persistence ``exp(-bar / memory)`` and ``alpha ~ sqrt(1 - persistence)`` (Nelson's diffusion
    limit) give volatility clusters of the same size and duration in calendar time at any
    timeframe. ``omega`` makes E[h] = 1 given the capped feed.
    """
    persistence = float(np.exp(-bar_s / _VOL_MEMORY_S))
    alpha = _VOL_OF_VOL * float(np.sqrt(1.0 - persistence))
    return alpha, persistence - alpha * _GARCH_FEED_MEAN, 1.0 - persistence


def _student_t(rng: np.random.Generator, size: int) -> np.ndarray:
    z = rng.standard_t(_T_DF, size) / np.sqrt(_T_DF / (_T_DF - 2.0))
    return np.clip(z, -_SHOCK_CLIP, _SHOCK_CLIP)


def _jumps(rng: np.random.Generator, per_year: float, dt: float, size: int) -> np.ndarray:
    """Jump size per bar in bar sigmas (0 on most bars)."""
    count = rng.poisson(per_year * dt, size)
    return count * rng.choice([-1.0, 1.0], size) * rng.uniform(3.0, 6.0, size)


def _simulate_regimes(rng: np.random.Generator, n_bars: int, bar_s: int) -> np.ndarray:
    """Markov chain of regime codes [T]; a loop over spells (a few dozen), not bars."""
    out = np.empty(n_bars, dtype=np.int8)
    state, t = int(rng.integers(len(REGIMES))), 0
    while t < n_bars:
        mean_bars = max(1.0, _REGIME_WEEKS[state] * 7 * 86400 / bar_s)
        length = int(rng.geometric(1.0 / mean_bars))
        out[t : t + length] = state
        t += length
        state = int(rng.choice(len(REGIMES), p=_TRANSITIONS[state]))
    return out


def _bar_extremes(
    rng: np.random.Generator, r: np.ndarray, sigma: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(max, min) of a Brownian bridge from 0 to r with variance sigma^2 per bar, both [T]."""
    scale = _INTRABAR_VOL * sigma / np.sqrt(_N_SUB)
    steps = rng.standard_normal((r.size, _N_SUB)) * scale[:, None]
    walk = np.cumsum(steps, axis=1)
    frac = np.arange(1, _N_SUB + 1) / _N_SUB
    bridge = walk - frac * walk[:, -1:] + frac * r[:, None]
    return np.maximum(bridge.max(axis=1), 0.0), np.minimum(bridge.min(axis=1), 0.0)


def _seasonality(time: np.ndarray, bar_s: int) -> np.ndarray:
    """Volatility multiplier by time of week [T], mean square 1: busiest around the US session
    (15:00 UTC), quieter at weekends. Hour-of-day only applies to bars shorter than a day."""

    def profile(t: np.ndarray) -> np.ndarray:
        hour = (t % 86400) / 3600.0 + bar_s / 7200.0  # middle of the bar
        daily = 1.0 + _DAILY_SWING * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
        weekday = (t // 86400 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        return np.where(bar_s < 86400, daily, 1.0) * np.where(weekday >= 5, _WEEKEND_VOL, 1.0)

    week = profile(np.arange(0, 7 * 86400, bar_s, dtype=np.int64))
    return profile(time) / np.sqrt(np.mean(week**2))


def _bar_times(start: str, bar_s: int, n_bars: int) -> np.ndarray:
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    first = int(ts.timestamp())
    if first % bar_s:
        raise ConfigError(f"start: {start!r} is not on the {bar_s} s grid of the timeframe")
    return first + bar_s * np.arange(n_bars, dtype=np.int64)


def _check_args(pairs: Sequence[str], n_bars: int, seed: int) -> None:
    if isinstance(pairs, str) or not pairs:
        raise ConfigError(f"pairs: {pairs!r} is invalid (give one or more pairs like BTC/USDT)")
    for pair in pairs:
        parse_pair(pair)
    if len(set(pairs)) != len(pairs):
        raise ConfigError(f"pairs: {list(pairs)} lists a pair more than once")
    if int(n_bars) < 2:
        raise ConfigError(f"n_bars: {n_bars!r} is invalid (at least 2 bars)")
    if int(seed) < 0:
        raise ConfigError(f"seed: {seed!r} is invalid (a non-negative integer)")


def _assemble(
    log_open: float, r: np.ndarray, up: np.ndarray, down: np.ndarray, volume_quote: np.ndarray
) -> np.ndarray:
    """OHLCV [T, 5] from the first log open, log returns and intrabar excursions (all [T])."""
    log_close = log_open + np.cumsum(r)
    close = np.exp(log_close)
    open_ = np.empty_like(close)
    open_[0] = np.exp(log_open)
    open_[1:] = close[:-1]
    high = np.maximum(np.exp(log_close - r + up), np.maximum(open_, close))
    low = np.minimum(np.exp(log_close - r + down), np.minimum(open_, close))
    return np.stack([open_, high, low, close, volume_quote / close], axis=1)


def simulate_synthetic_market(
    pairs: Sequence[str],
    timeframe: str = "1h",
    n_bars: int = 17520,
    seed: int = 0,
    start: str = "2022-01-01",
) -> SyntheticMarket:
    """Synthetic candles for ``pairs`` plus the regime path (see the module docstring)."""
    _check_args(pairs, n_bars, seed)
    bar_s = timeframe_seconds(timeframe)
    n = int(n_bars)
    time = _bar_times(start, bar_s, n)
    dt = bar_s / _YEAR_S
    market = np.random.default_rng(seed)
    regimes = _simulate_regimes(market, n, bar_s)
    z_market = _student_t(market, n)
    market_jump = _jumps(market, _JUMPS_PER_YEAR[0], dt, n)
    profiles = [pair_profile(p) for p in pairs]
    rngs = [np.random.default_rng([int(seed), _stable_id(p)]) for p in pairs]
    loading = np.array([pp.market_loading for pp in profiles])
    z_own = np.stack([_student_t(rng, n) for rng in rngs], axis=1)
    w = loading * z_market[:, None] + np.sqrt(1.0 - loading**2) * z_own
    h = _garch_variance(np.ascontiguousarray(w), *_garch_params(bar_s))
    # Jumps add variance (much more per bar at 1d than at 1h); shrink the diffusion to keep
    # the annual volatility the same across timeframes. E[U(3, 6)^2] = 21.
    jump_var = (_JUMPS_PER_YEAR[0] * loading**2 + _JUMPS_PER_YEAR[1]) * dt * 21.0
    level = _REGIME_VOL[regimes] * _seasonality(time, bar_s)
    candles: dict[str, pd.DataFrame] = {}
    for j, (pair, prof, rng) in enumerate(zip(pairs, profiles, rngs, strict=True)):
        sigma = prof.annual_vol * level * np.sqrt(dt * h[:, j] / (1 + jump_var[j]))
        jump = loading[j] * market_jump + _jumps(rng, _JUMPS_PER_YEAR[1], dt, n)
        drift = _REGIME_DRIFT[regimes] * (prof.annual_vol / _VOL_REF) * dt
        r = drift + sigma * (w[:, j] + jump)
        up, down = _bar_extremes(rng, r, sigma)
        activity = 0.3 * (np.abs(w[:, j]) - 0.8) + 0.5 * np.log(h[:, j])
        noise = 0.35 * rng.standard_normal(n)
        volume_quote = prof.quote_volume_per_hour * (bar_s / 3600.0) * np.exp(activity + noise)
        ohlcv = _assemble(float(np.log(prof.start_price)), r, up, down, volume_quote)
        candles[pair] = candle_frame(time, ohlcv)
    return SyntheticMarket(candles, regimes)


def generate_synthetic_candles(
    pairs: Sequence[str],
    timeframe: str = "1h",
    n_bars: int = 17520,
    seed: int = 0,
    start: str = "2022-01-01",
) -> dict[str, pd.DataFrame]:
    """Seeded synthetic candle frames by pair: regimes, correlation, GARCH volatility, fat tails,
    jumps and path-consistent OHLC (see the module docstring). Same seed, same candles."""
    return simulate_synthetic_market(pairs, timeframe, n_bars, seed, start).candles


def synthetic_trend_candles(
    pairs: Sequence[str],
    timeframe: str = "1h",
    n_bars: int = 2000,
    drift_per_bar: float = 0.001,
    seed: int = 0,
    noise: float = 0.002,
    start: str = "2022-01-01",
) -> dict[str, pd.DataFrame]:
    """Probe market with a known best policy: a steady trend of ``drift_per_bar`` log return per
    bar (negative for a downtrend) plus Gaussian noise of std ``noise``; valid OHLC."""
    _check_args(pairs, n_bars, seed)
    if not (np.isfinite(drift_per_bar) and abs(drift_per_bar) < 0.5):
        raise ConfigError(f"drift_per_bar: {drift_per_bar!r} is invalid (|drift| < 0.5)")
    if not (np.isfinite(noise) and 0.0 <= noise < 0.5):
        raise ConfigError(f"noise: {noise!r} is invalid (a std in [0, 0.5))")
    bar_s = timeframe_seconds(timeframe)
    n = int(n_bars)
    time = _bar_times(start, bar_s, n)
    candles: dict[str, pd.DataFrame] = {}
    for pair in pairs:
        prof = pair_profile(pair)
        rng = np.random.default_rng([int(seed), _stable_id(pair)])
        r = drift_per_bar + noise * rng.standard_normal(n)
        wick = 0.5 * noise * np.abs(rng.standard_normal((n, 2)))
        volume_quote = prof.quote_volume_per_hour * (bar_s / 3600.0) * rng.lognormal(0, 0.2, n)
        up, down = np.maximum(r, 0.0) + wick[:, 0], np.minimum(r, 0.0) - wick[:, 1]
        ohlcv = _assemble(float(np.log(prof.start_price)), r, up, down, volume_quote)
        candles[pair] = candle_frame(time, ohlcv)
    return candles
