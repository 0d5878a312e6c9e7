"""``MarketData``: candles and features as float32 arrays, built once and read by the simulator.

Shapes (T bars, P pairs, F features):
    time      int64   [T]        bar open time, unix seconds, UTC
    prices    float32 [T, P, 4]  open, high, low, close
    volume    float32 [T, P]     base-currency volume
    features  float32 [T, P, F]  market features known at the bar's close (no look-ahead)
    filled    bool    [T, P]     bars that were missing in the source and filled flat
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from nexlify.config import timeframe_seconds
from nexlify.data.features import FeatureConfig, feature_warmup
from nexlify.errors import DataError

OPEN, HIGH, LOW, CLOSE = 0, 1, 2, 3


@dataclass(frozen=True, eq=False)
class MarketData:
    """Aligned candles and features for several pairs, as float32 arrays."""

    pairs: tuple[str, ...]
    """Pair names in ccxt form (``BTC/USDT``), in array order."""
    timeframe: str
    """Bar length, e.g. ``1h``."""
    time: np.ndarray
    """int64 [T] bar open times in unix seconds (UTC)."""
    prices: np.ndarray
    """float32 [T, P, 4] open, high, low, close."""
    volume: np.ndarray
    """float32 [T, P] volume in base currency."""
    features: np.ndarray
    """float32 [T, P, F] market features known when bar t closes."""
    feature_names: tuple[str, ...]
    """Names of the F features."""
    filled: np.ndarray
    """bool [T, P] bars that were missing in the source and filled flat at the previous close."""
    source: str = "unknown"
    """Where the candles came from (``synthetic``, ``files:<dir>``, ...)."""
    notes: tuple[str, ...] = field(default=())
    """What loading and alignment did to the data (filled gaps, trimmed spans)."""
    feature_config: FeatureConfig = field(default_factory=FeatureConfig)
    """How the candle features were computed (augmentation recomputes them with it; the
    pipeline's checkpoints record it so backtests and paper trading build the same ones)."""

    def __post_init__(self) -> None:
        T = self.time.shape[0]
        P = len(self.pairs)
        checks = [
            (self.time.dtype == np.int64 and self.time.shape == (T,), "time must be int64 [T]"),
            (self.prices.dtype == np.float32 and self.prices.shape == (T, P, 4), "prices [T,P,4]"),
            (self.volume.dtype == np.float32 and self.volume.shape == (T, P), "volume [T,P]"),
            (
                self.features.dtype == np.float32
                and self.features.shape == (T, P, len(self.feature_names)),
                "features float32 [T,P,F] with F = len(feature_names)",
            ),
            (self.filled.dtype == np.bool_ and self.filled.shape == (T, P), "filled bool [T,P]"),
        ]
        for ok, what in checks:
            if not ok:
                raise DataError(f"MarketData: {what} (pairs={P}, bars={T})")
        if T < 2:
            raise DataError(f"MarketData: need at least 2 bars, got {T}")
        if np.any(np.diff(self.time) <= 0):
            raise DataError("MarketData: time must be strictly increasing")

    @property
    def n_bars(self) -> int:
        return int(self.time.shape[0])

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def bar_seconds(self) -> int:
        return timeframe_seconds(self.timeframe)

    def span(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last bar open time."""
        return (
            pd.Timestamp(int(self.time[0]), unit="s", tz="UTC"),
            pd.Timestamp(int(self.time[-1]), unit="s", tz="UTC"),
        )

    def open_time_iso(self, bar: int) -> str:
        """Open time of ``bar`` as ``YYYY-MM-DDTHH:MM:SSZ``; ``bar == n_bars`` is the bar right
        after the data (bars are contiguous), the first a decision at the last close trades."""
        if bar < self.n_bars:
            seconds = int(self.time[bar])
        else:
            seconds = int(self.time[-1]) + (bar - self.n_bars + 1) * self.bar_seconds
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

    def describe(self) -> dict[str, object]:
        """A JSON-friendly description (for run summaries)."""
        start, end = self.span()
        return {
            "source": self.source,
            "pairs": list(self.pairs),
            "timeframe": self.timeframe,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "bars": self.n_bars,
            "filled_bars": int(self.filled.sum()),
            "features": list(self.feature_names),
            "notes": list(self.notes),
        }

    def slice(self, start: int, stop: int) -> MarketData:
        """Bars [start, stop) as a new MarketData (views, no copy)."""
        if not 0 <= start < stop <= self.n_bars:
            raise DataError(f"MarketData.slice: bad range [{start}, {stop}) for {self.n_bars} bars")
        return replace(
            self,
            time=self.time[start:stop],
            prices=self.prices[start:stop],
            volume=self.volume[start:stop],
            features=self.features[start:stop],
            filled=self.filled[start:stop],
        )

    def index_at(self, when: pd.Timestamp | str) -> int:
        """Index of the first bar whose open time is at or after ``when``."""
        ts = pd.Timestamp(when)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return int(np.searchsorted(self.time, int(ts.timestamp()), side="left"))

    def split_last_days(self, days: float) -> tuple[MarketData, MarketData]:
        """(earlier part, last ``days`` days): the held-out validation split of the pipeline."""
        n_last = round(days * 86400 / self.bar_seconds)
        if n_last < 2 or self.n_bars - n_last < 2:
            raise DataError(
                f"cannot hold out the last {days:g} days ({n_last} bars of {self.timeframe}): "
                f"the data has only {self.n_bars} bars; provide a longer history"
            )
        cut = self.n_bars - n_last
        return self.slice(0, cut), self.slice(cut, self.n_bars)


def holdout_split(
    market: MarketData, validation_days: float, test_days: float = 0.0
) -> tuple[MarketData, MarketData, MarketData | None]:
    """(train, validation, test or None): test = the last ``test_days``, validation = the
    ``validation_days`` before them, train = everything earlier."""
    rest, test = market.split_last_days(test_days) if test_days > 0 else (market, None)
    train, validation = rest.split_last_days(validation_days)
    return train, validation, test


def build_market_data(
    frames: Mapping[str, pd.DataFrame],
    timeframe: str,
    source: str,
    extra_notes: tuple[str, ...] = (),
    *,
    features: FeatureConfig | None = None,
) -> MarketData:
    """Align candle frames, compute features once (``features``: the run's feature set, default
    :class:`FeatureConfig()`), drop the feature warm-up bars.

    Raises:
        DataError: fewer bars than the warm-up needs (the message names the source and both
            counts), or features that are not finite after the warm-up.
    """
    from nexlify.data.align import align_candles
    from nexlify.data.features import compute_market_features

    config = features or FeatureConfig()
    aligned = align_candles(frames, timeframe)
    check_warmup_history(aligned.time.shape[0], config, timeframe, source)
    values, names = compute_market_features(aligned.ohlcv, config=config)
    valid = ~np.isnan(values).any(axis=(1, 2))
    first = int(np.argmax(valid))
    if not valid[first:].all():
        bad = first + int(np.argmin(valid[first:]))
        raise DataError(f"{source}: features are not finite at bar {bad} after the warm-up")
    notes = (*extra_notes, *aligned.notes)
    if first:
        notes = (*notes, f"dropped the first {first} bars (feature warm-up)")
    ohlcv = aligned.ohlcv[first:]
    return MarketData(
        pairs=aligned.pairs,
        timeframe=timeframe,
        time=np.ascontiguousarray(aligned.time[first:], dtype=np.int64),
        prices=np.ascontiguousarray(ohlcv[:, :, :4], dtype=np.float32),
        volume=np.ascontiguousarray(ohlcv[:, :, 4], dtype=np.float32),
        features=np.ascontiguousarray(values[first:], dtype=np.float32),
        feature_names=tuple(names),
        filled=np.ascontiguousarray(aligned.filled[first:]),
        source=source,
        notes=notes,
        feature_config=config,
    )


def check_warmup_history(n_bars: int, config: FeatureConfig, timeframe: str, source: str) -> None:
    """DataError unless ``n_bars`` cover the feature warm-up and the two bars MarketData needs."""
    need = feature_warmup(config) + 2
    if n_bars < need:
        days = need * timeframe_seconds(timeframe) / 86400
        long = " (long-memory features look back 200 days)" if config.ma_windows else ""
        raise DataError(
            f"{source}: {n_bars} bars of {timeframe} are too few: the features need {need} "
            f"bars ({days:.1f} days: {need - 2} of warm-up{long} and 2 to trade); give a "
            "longer history"
        )


def append_market_features(
    market: MarketData,
    values: np.ndarray,
    names: tuple[str, ...],
    notes: tuple[str, ...] = (),
) -> MarketData:
    """``market`` with market-wide features ``values`` [T, E] appended to every pair's features.

    Used for external series (Fear & Greed, on-chain, ...), which are the same for every pair.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape != (market.n_bars, len(names)):
        raise DataError(
            f"append_market_features: values {values.shape} do not match "
            f"({market.n_bars} bars, {len(names)} names)"
        )
    clash = sorted(set(names) & set(market.feature_names))
    if clash:
        raise DataError(f"append_market_features: features already present: {', '.join(clash)}")
    extra = np.broadcast_to(values[:, None, :], (market.n_bars, market.n_pairs, len(names)))
    return replace(
        market,
        features=np.ascontiguousarray(np.concatenate([market.features, extra], axis=2)),
        feature_names=(*market.feature_names, *names),
        notes=(*market.notes, *notes),
    )
