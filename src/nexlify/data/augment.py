"""Trading-specific augmentation of *training* candles (never validation or test data).

Each transform takes a :class:`MarketData` and a ``np.random.Generator`` and returns a new
MarketData whose features are recomputed from the transformed candles (features never go out of
step with prices; the feature warm-up is dropped again):

- price jitter: every bar's OHLC multiplied by one factor ``exp(N(0, sigma))`` (the bar stays
  consistent: high >= open, close >= low), which perturbs returns by about ``sigma * sqrt(2)``;
- time shift: drop a random number of leading bars, so windows and UTC days fall differently;
- volume scaling: each pair's volume multiplied by ``exp(N(0, sigma))``;
- regime mixing: cut the series into segments, label each bull (close up) or bear, and splice a
  new history from alternating randomly drawn bull and bear segments, each rescaled so that its
  first open continues the previous close (all pairs move together, so correlations survive).

:func:`splice_segments` (used by regime mixing) is also how the curriculum builds calm-only or
stress-only markets.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from nexlify.config.augment import AugmentConfig
from nexlify.data.features import compute_market_features
from nexlify.data.market_data import CLOSE, OPEN, MarketData
from nexlify.errors import DataError


def with_candles(data: MarketData, prices: np.ndarray, volume: np.ndarray) -> MarketData:
    """``data`` with new candles [T, P, 4] / [T, P] and features recomputed with the data's own
    feature set (warm-up dropped). Market-wide columns that do not come from the candles
    (external series, ``ext_*``, appended after the candle features) are kept as they are: they
    depend on the bar's time only."""
    ohlcv = np.concatenate([prices, volume[:, :, None]], axis=2).astype(np.float64)
    features, names = compute_market_features(ohlcv, config=data.feature_config)
    kept = data.feature_names[len(names) :]
    if data.feature_names[: len(names)] != names:
        raise DataError(
            f"augmentation: the data's features {list(data.feature_names)} do not start with the "
            f"candle features {list(names)}"
        )
    if kept:
        features = np.concatenate([features, data.features[:, :, len(names) :]], axis=2)
        names = (*names, *kept)
    valid = ~np.isnan(features).any(axis=(1, 2))
    if not valid.any():
        raise DataError(f"augmentation: {prices.shape[0]} bars are too few for the feature warm-up")
    first = int(np.argmax(valid))
    return replace(
        data,
        time=data.time[first:].copy(),
        prices=np.ascontiguousarray(prices[first:], dtype=np.float32),
        volume=np.ascontiguousarray(volume[first:], dtype=np.float32),
        features=np.ascontiguousarray(features[first:], dtype=np.float32),
        feature_names=tuple(names),
        filled=np.ascontiguousarray(data.filled[first:]),
    )


def jitter_prices(prices: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """OHLC [T, P, 4] times one lognormal factor per bar and pair."""
    factor = np.exp(rng.normal(0.0, sigma, size=prices.shape[:2]))
    return prices * factor[:, :, None]


def scale_volume(volume: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Volume [T, P] times one lognormal factor per pair."""
    return volume * np.exp(rng.normal(0.0, sigma, size=(1, volume.shape[1])))


def splice_segments(
    prices: np.ndarray, volume: np.ndarray, segments: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate bar ranges ``[start, stop)`` into one continuous history.

    Each segment is rescaled (per pair) so that its first open equals the previous segment's last
    close: returns inside segments are kept, the price level is continuous.
    """
    out_p, out_v = [], []
    last_close: np.ndarray | None = None
    for start, stop in segments:
        seg = prices[start:stop].astype(np.float64)
        if last_close is not None:
            seg = seg * (last_close / seg[0, :, OPEN])[None, :, None]
        out_p.append(seg)
        out_v.append(volume[start:stop])
        last_close = seg[-1, :, CLOSE]
    return np.concatenate(out_p), np.concatenate(out_v)


def regime_mix(
    prices: np.ndarray, volume: np.ndarray, segment_bars: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A history of the same length spliced from alternating bull and bear segments."""
    T = prices.shape[0]
    starts = np.arange(0, T - segment_bars + 1, segment_bars)
    if starts.size < 2:
        return prices, volume
    change = prices[starts + segment_bars - 1, :, CLOSE] / prices[starts, :, OPEN]
    bull = np.log(change).mean(axis=1) > 0
    pools = [starts[~bull], starts[bull]]
    if min(p.size for p in pools) == 0:
        return prices, volume
    side = int(rng.integers(0, 2))
    segments = []
    for _ in range(starts.size):
        pool = pools[side]
        s = int(pool[rng.integers(0, pool.size)])
        segments.append((s, s + segment_bars))
        side = 1 - side
    new_p, new_v = splice_segments(prices, volume, segments)
    # Keep the full length (the tail that did not fill a segment comes from the original).
    if new_p.shape[0] < T:
        tail = [(new_p.shape[0], T)]
        extra_p, extra_v = splice_segments(prices, volume, tail)
        extra_p = extra_p * (new_p[-1, :, CLOSE] / extra_p[0, :, OPEN])[None, :, None]
        new_p, new_v = np.concatenate([new_p, extra_p]), np.concatenate([new_v, extra_v])
    return new_p, new_v


def augment_market(data: MarketData, config: AugmentConfig, rng: np.random.Generator) -> MarketData:
    """One augmented copy of training data (all draws from ``rng``: same seed, same copy)."""
    prices = data.prices.astype(np.float64)
    volume = data.volume.astype(np.float64)
    if config.regime_mix_prob > 0 and rng.random() < config.regime_mix_prob:
        prices, volume = regime_mix(prices, volume, config.segment_bars, rng)
    if config.price_jitter > 0:
        prices = jitter_prices(prices, config.price_jitter, rng)
    if config.volume_scale > 0:
        volume = scale_volume(volume, config.volume_scale, rng)
    shift = int(rng.integers(0, config.time_shift_bars + 1)) if config.time_shift_bars > 0 else 0
    shift = min(shift, max(0, prices.shape[0] // 4))
    shifted = data.slice(shift, data.n_bars) if shift else data
    return with_candles(shifted, prices[shift:], volume[shift:])
