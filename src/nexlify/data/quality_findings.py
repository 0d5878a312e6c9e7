"""Findings of :mod:`nexlify.data.quality`: the report types and the vectorised detectors.

Each detector takes plain arrays of one source in time order (except the epoch reader, which
takes the file's raw numbers in file order) and says where a finding occurs; the policies and
the repairs live in :mod:`nexlify.data.quality`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nexlify.data.candles import EARLIEST_CANDLE, EPOCH_UNITS, NS_PER_SECOND, format_time_ns

EPOCH_UNIT_NAMES: tuple[str, ...] = tuple(name for _, name, _ in EPOCH_UNITS)
"""Units an epoch number can be in, smallest magnitude first: seconds, milliseconds, ..."""
_LATEST_S = 7_258_118_400  # 2200-01-01 UTC, the upper bound candles.py uses too
SHOWN = 5
"""Times (or spans) listed per finding in reports."""


@dataclass
class Finding:
    """One type of problem found in one source."""

    kind: str
    count: int
    action: str
    """warn, repair, drop or fail: what was done."""
    where: list[str]
    """Up to five times (or spans) where it occurs."""
    detail: str = ""
    places: int = 0
    """Distinct places (gaps count runs); 0 = ``count``."""

    @property
    def failed(self) -> bool:
        return self.action == "fail"

    def describe(self) -> str:
        more = (self.places or self.count) > len(self.where)
        at = ", ".join(self.where) + (" ..." if more else "")
        extra = f"; {self.detail}" if self.detail else ""
        return f"{self.kind}: {self.count} ({self.action}) at {at}{extra}"


@dataclass
class SourceReport:
    """The findings of one source (a file, or a pair of exchanges for cross checks)."""

    source: str
    rows: int
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was done to the source besides the findings (e.g. resampled to a coarser timeframe)."""

    @property
    def failed(self) -> bool:
        return any(f.failed for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "status": "fail" if self.failed else "pass",
            "findings": [
                {"kind": f.kind, "count": f.count, "action": f.action, "where": f.where,
                 "detail": f.detail}
                for f in self.findings
            ],
            "notes": list(self.notes),
        }  # fmt: skip

    def failure_reason(self) -> str:
        bad = "; ".join(f.describe() for f in self.findings if f.failed)
        return f"{self.source}: data quality check failed: {bad}"


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start index, length) of every run of consecutive True values of a bool [n] mask."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts


def span_labels(ns: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[str]:
    """``"first .. last"`` (or one time) of the first SHOWN runs of rows with times ``ns``."""
    out = []
    for s, n in zip(starts[:SHOWN].tolist(), lengths[:SHOWN].tolist(), strict=True):
        last = f" .. {format_time_ns(int(ns[s + n - 1]))}" if n > 1 else ""
        out.append(format_time_ns(int(ns[s])) + last)
    return out


def gap_runs(ns: np.ndarray, step_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(first missing ns, number of missing bars) of every gap of sorted unique times ``ns``."""
    jumps = np.diff(ns) // step_ns - 1
    at = np.flatnonzero(jumps > 0)
    return ns[at] + step_ns, jumps[at]


def robust_outliers(close: np.ndarray, n_sigma: float, min_return: float) -> np.ndarray:
    """Bars whose |close-to-close log return| exceeds ``n_sigma`` robust sigmas and min_return.

    The robust sigma is 1.4826 x the median absolute deviation of the 1-bar log returns.
    """
    r = np.zeros_like(close)
    r[1:] = np.log(close[1:] / close[:-1])
    sigma = 1.4826 * float(np.median(np.abs(r[1:] - np.median(r[1:])))) if r.size > 2 else 0.0
    return (np.abs(r) > min_return) & (np.abs(r) > n_sigma * sigma)


def stale_bars(ohlc: np.ndarray, min_bars: int) -> np.ndarray:
    """bool [n]: bars in runs of >= ``min_bars`` consecutive rows whose O, H, L and C all equal
    the previous row's close (a price feed that stopped updating, whatever the volume)."""
    same = np.zeros(ohlc.shape[0], dtype=bool)
    same[1:] = (ohlc[1:] == ohlc[:-1, 3:4]).all(axis=1)
    starts, lengths = runs(same)
    long = lengths >= min_bars
    out = np.zeros_like(same)
    if long.any():
        idx = np.repeat(starts[long], lengths[long]) + _ranges(lengths[long])
        out[idx] = True
    return out


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for each n of ``lengths``, concatenated (vectorised ``np.arange`` per run)."""
    ends = np.cumsum(lengths)
    return np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)


def epoch_units(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read each epoch number in the unit its magnitude implies (seconds below 1e11, then ms
    below 1e14, microseconds below 1e17, else nanoseconds: 1e11 s is the year 5138 and 1e11 ms
    is 1973, so crypto-era times cannot be mistaken).

    Returns (ns int64 [n], valid bool [n], unit index [n] into EPOCH_UNIT_NAMES, -1 when not
    finite). Integers are converted exactly, so millisecond times keep their precision.
    """
    finite = np.isfinite(values)
    magnitude = np.abs(np.where(finite, values, 0.0))
    bounds = np.array([b for b, _, _ in EPOCH_UNITS])
    unit = np.where(finite, np.searchsorted(bounds, magnitude, side="right"), -1)
    per = np.array([p for _, _, p in EPOCH_UNITS], dtype=np.int64)[np.maximum(unit, 0)]
    seconds = np.where(finite, values, 0.0) * (per / NS_PER_SECOND)
    valid = finite & (seconds >= EARLIEST_CANDLE.timestamp()) & (seconds < _LATEST_S)
    safe = np.where(valid, values, 0.0)
    whole = safe == np.round(safe)
    ns = np.where(whole, safe.astype(np.int64) * per, np.round(safe * per).astype(np.int64)).astype(
        np.int64
    )
    return ns, valid, unit


def volume_unit_swaps(
    ohlcv: np.ndarray, quote_volume: np.ndarray, tolerance: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows whose ``volume`` holds quote units, found by comparing it with the quote volume.

    A consistent row's quote volume / volume is its VWAP, inside [low, high] (widened by
    ``tolerance`` for rounding). A row is a swap when it is not consistent but one of two swaps
    is: ``volume`` holds the quote volume and the quote column the base volume (columns
    swapped: volume / quote in [low, high]), or both hold the quote volume (volume ~ quote).
    Rows without a positive volume and quote volume cannot be judged and are never flagged.

    Returns bool [n] masks (columns swapped, both in quote units, fitting no reading) and the
    base volume float64 [n]: the quote column on column swaps, quote / close on quote-unit
    rows, else the volume as given.
    """
    high, low, close, volume = ohlcv[:, 1], ohlcv[:, 2], ohlcv[:, 3], ohlcv[:, 4]
    with np.errstate(divide="ignore", invalid="ignore"):
        usable = np.isfinite(ohlcv).all(axis=1) & np.isfinite(quote_volume)
        usable &= (volume > 0) & (quote_volume > 0) & (low > 0)
        band_lo, band_hi = low / (1 + tolerance), high * (1 + tolerance)
        vwap = quote_volume / volume
        consistent = usable & (vwap >= band_lo) & (vwap <= band_hi)
        columns_swapped = usable & ~consistent & (1 / vwap >= band_lo) & (1 / vwap <= band_hi)
        both_quote = (
            usable & ~consistent & ~columns_swapped & (np.abs(np.log(vwap)) <= np.log1p(tolerance))
        )
        base = np.where(columns_swapped, quote_volume, volume)
        base = np.where(both_quote, quote_volume / close, base)
    mismatched = usable & ~consistent & ~columns_swapped & ~both_quote
    return columns_swapped, both_quote, mismatched, base
