"""Join daily external series to the bars without look-ahead.

A bar with open time t is decided on at its close, ``t + bar``. The value of day D of a series
is visible to that bar only when ``t + bar >= D + 1 day + lag_hours`` (see
:mod:`nexlify.data.external` for each provider's lag). Missing days: the last visible value is
carried forward while it is at most ``max_age_days`` old (age = decision time minus the moment
it became known); beyond that, or before the first value, the feature is 0 (the neutral value
of every transform) and the series' ``<name>_missing`` indicator is 1.

Features per series: ``ext_<name>`` (transformed, clipped to [-5, 5]) and ``ext_<name>_missing``
(0 or 1). They are market-wide: the same value for every pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.data.external import load_series, provider, transform_values
from nexlify.data.market_data import MarketData, append_market_features

DAY = 86_400
CLIP = 5.0


def known_from(days: pd.DatetimeIndex, lag_hours: float) -> np.ndarray:
    """Unix seconds at which each day's value becomes known: end of day + lag."""
    start = days.as_unit("s").asi8
    return start + DAY + round(lag_hours * 3600)


def join_daily(
    decision_s: np.ndarray,
    known_s: np.ndarray,
    values: np.ndarray,
    max_age_days: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(value [T], missing [T]) at each decision time from a series known at ``known_s``.

    ``known_s`` is increasing; NaN values are skipped (the earlier value carries on).
    """
    ok = np.isfinite(values)
    known_s, values = known_s[ok], values[ok]
    idx = np.searchsorted(known_s, decision_s, side="right") - 1
    has = idx >= 0
    safe = np.maximum(idx, 0)
    age = decision_s - known_s[safe] if known_s.size else np.zeros_like(decision_s)
    visible = has & (age <= max_age_days * DAY) if known_s.size else np.zeros_like(has)
    out = np.where(visible, values[safe] if values.size else 0.0, 0.0)
    return out.astype(np.float64), ~visible


def external_features(
    time: np.ndarray,
    bar_seconds: int,
    names: Sequence[str],
    folder: str | Path,
    max_age_days: float = 3.0,
) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(features float32 [T, 2E], feature names, notes) for the bars opening at ``time``."""
    decision = np.asarray(time, dtype=np.int64) + bar_seconds
    columns: list[np.ndarray] = []
    feature_names: list[str] = []
    notes: list[str] = []
    for name in names:
        p = provider(name)
        series = load_series(name, folder)
        raw = series[p.column].to_numpy(dtype=np.float64)
        known = known_from(pd.DatetimeIndex(series.index), p.lag_hours)
        value, missing = join_daily(
            decision, known, transform_values(p.transform, raw), max_age_days
        )
        columns += [np.clip(value, -CLIP, CLIP), missing.astype(np.float64)]
        feature_names += [f"ext_{name}", f"ext_{name}_missing"]
        notes.append(
            f"external {name}: {len(series)} days ({series.index[0].date()} .. "
            f"{series.index[-1].date()}), known {p.lag_hours:g} h after the day ends; "
            f"{int(missing.sum())} of {len(missing)} bars without a value at most "
            f"{max_age_days:g} days old (filled 0, flagged)"
        )
    values = np.stack(columns, axis=1).astype(np.float32) if columns else np.empty((len(time), 0))
    return values.astype(np.float32), tuple(feature_names), tuple(notes)


def with_external_features(
    market: MarketData, names: Sequence[str], folder: str | Path, max_age_days: float = 3.0
) -> MarketData:
    """``market`` with the external series' features appended to every pair's features."""
    if not names:
        return market
    values, feature_names, notes = external_features(
        market.time, market.bar_seconds, names, folder, max_age_days
    )
    return append_market_features(market, values, feature_names, notes)
