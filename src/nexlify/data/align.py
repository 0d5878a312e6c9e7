"""Put several candle frames on one UTC time grid: pairs for the simulator, venues for checks.

``align_candles`` (several pairs) and ``align_venues`` (one pair on several exchanges) trim to
the common span, fill a bar missing from a frame flat at the previous close (volume 0, marked in
``filled``) and say what they did in ``notes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexlify.config import timeframe_seconds
from nexlify.data.candles import NS_PER_SECOND, OHLCV_COLUMNS, count_noun, format_time_ns
from nexlify.errors import DataError


@dataclass(frozen=True, eq=False)
class AlignedCandles:
    """Several pairs' candles on one common time grid, as arrays for the simulator."""

    pairs: tuple[str, ...]
    """Pair names, in the order of the P axis."""
    time: np.ndarray
    """int64 [T]: bar open times in unix seconds (UTC), one timeframe apart."""
    ohlcv: np.ndarray
    """float64 [T, P, 5]: open, high, low, close, volume."""
    filled: np.ndarray
    """bool [T, P]: True where the bar was missing and was filled flat at the previous close."""
    notes: tuple[str, ...]
    """Human-readable notes on what the alignment did (span, trimming, filled gaps)."""

    @property
    def n_bars(self) -> int:
        """Number of bars T on the grid."""
        return int(self.time.shape[0])


def _at(seconds: int) -> str:
    """A bar time in unix seconds as messages show it."""
    return format_time_ns(seconds * NS_PER_SECOND)


def _frame_seconds(pair: str, frame: pd.DataFrame, step: int, timeframe: str) -> np.ndarray:
    """Bar open times of a candle frame in unix seconds, checking the frame is usable."""
    hint = "build candle frames with read_candles or candles_from_dataframe"
    idx = frame.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise DataError(f"{pair}: candle frame needs a time-zone-aware DatetimeIndex; {hint}")
    missing = [c for c in OHLCV_COLUMNS if c not in frame.columns]
    if missing or len(frame) == 0:
        what = f"missing columns {', '.join(missing)}" if missing else "no bars"
        raise DataError(f"{pair}: candle frame has {what}; {hint}")
    ns = idx.tz_convert("UTC").as_unit("ns").asi8
    if (np.diff(ns) <= 0).any():
        raise DataError(f"{pair}: candle times are not strictly increasing; {hint}")
    off = ns % (step * NS_PER_SECOND) != 0
    if off.any():
        first = int(np.argmax(off))
        raise DataError(
            f"{pair}: {int(off.sum())} bars are not on the {timeframe} grid, first at "
            f"{format_time_ns(ns[first])} (bar open times must be multiples of {step} s since "
            f"1970-01-01 UTC); resample the candles to {timeframe} or use their own timeframe"
        )
    return ns // NS_PER_SECOND


def _gap_note(pair: str, missing: np.ndarray, grid: np.ndarray) -> str:
    edges = np.diff(np.concatenate(([0], missing.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    k = int(np.argmax(lengths))
    n, g = int(missing.sum()), len(starts)
    return (
        f"{pair}: {count_noun(n, 'missing bar')} filled flat at the previous close, in "
        f"{count_noun(g, 'gap')} (longest gap {count_noun(lengths[k], 'bar')} at "
        f"{_at(grid[starts[k]])})"
    )


def _align_one(
    frame: pd.DataFrame, t: np.ndarray, grid: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """One pair on the grid: (ohlcv [T, 5], missing [T]); missing bars flat at the last close."""
    values = frame[list(OHLCV_COLUMNS)].to_numpy(dtype=np.float64)
    start, end = grid[0], grid[-1]
    inside = (t >= start) & (t <= end)
    pos = (t[inside] - start) // step
    n = grid.size
    block = np.full((n, 5), np.nan)
    block[pos] = values[inside]
    present = np.zeros(n, dtype=bool)
    present[pos] = True
    missing = ~present
    if missing.any():
        last = np.where(present, np.arange(n), -1)
        np.maximum.accumulate(last, out=last)
        # A leading gap means the pair started before the span: carry its last earlier close.
        before = values[t < start]
        carried = before[-1, 3] if len(before) else np.nan
        prev_close = np.where(last >= 0, block[np.maximum(last, 0), 3], carried)
        block[missing, :4] = prev_close[missing, None]
        block[missing, 4] = 0.0
    return block, missing


def align_candles(frames: Mapping[str, pd.DataFrame], timeframe: str) -> AlignedCandles:
    """Put several pairs' candle frames on one grid over their common span.

    The span is [latest first bar, earliest last bar]; the grid has a bar every timeframe step.
    A bar a pair lacks on the grid is filled flat (open = high = low = close = previous close,
    volume 0) and flagged in ``filled``. Bars off the grid or disjoint spans raise DataError.
    """
    step = timeframe_seconds(timeframe)
    if not frames:
        raise DataError("align_candles: no candle frames given")
    pairs = tuple(frames)
    times = {p: _frame_seconds(p, frames[p], step, timeframe) for p in pairs}
    start = max(int(t[0]) for t in times.values())
    end = min(int(t[-1]) for t in times.values())
    if start > end:
        spans = "; ".join(f"{p} {_at(t[0])} .. {_at(t[-1])}" for p, t in times.items())
        raise DataError(
            f"the candles of {', '.join(pairs)} have no common period ({spans}); "
            "pick pairs whose histories overlap"
        )
    grid = np.arange(start, end + step, step, dtype=np.int64)
    ohlcv = np.empty((grid.size, len(pairs), 5), dtype=np.float64)
    filled = np.zeros((grid.size, len(pairs)), dtype=bool)
    notes = [
        f"common span {_at(start)} .. {_at(end)}: {grid.size} bars of "
        f"{timeframe} for {count_noun(len(pairs), 'pair')}"
    ]
    for j, pair in enumerate(pairs):
        t = times[pair]
        ohlcv[:, j], filled[:, j] = _align_one(frames[pair], t, grid, step)
        cut_before, cut_after = int((t < start).sum()), int((t > end).sum())
        if cut_before or cut_after:
            notes.append(
                f"{pair}: trimmed {cut_before} bars before and {cut_after} bars after the "
                "common span"
            )
        if filled[:, j].any():
            notes.append(_gap_note(pair, filled[:, j], grid))
    shared = int(filled.all(axis=1).sum())
    if shared and len(pairs) > 1:
        notes.append(f"{shared} filled bars are missing for every pair (exchange downtime?)")
    return AlignedCandles(pairs, grid, ohlcv, filled, tuple(notes))


@dataclass(frozen=True, eq=False)
class VenueAlignment:
    """One pair's candles on several exchanges, on one common time grid (arbitrage, checks)."""

    venues: tuple[str, ...]
    """Exchange names, in the order of the V axis."""
    time: np.ndarray
    """int64 [T]: bar open times in unix seconds (UTC), one timeframe apart."""
    ohlcv: np.ndarray
    """float64 [T, V, 5]: open, high, low, close, volume on each venue."""
    filled: np.ndarray
    """bool [T, V]: True where the venue lacked the bar and it was filled flat."""
    notes: tuple[str, ...]
    """What the alignment did (common span, trimming, filled bars per venue)."""

    @property
    def n_bars(self) -> int:
        """Number of bars T on the grid."""
        return int(self.time.shape[0])

    def shared(self) -> np.ndarray:
        """bool [T]: bars that every venue really has (none filled), for comparisons."""
        return np.asarray(~self.filled.any(axis=1))


def align_venues(frames_by_exchange: Mapping[str, pd.DataFrame], timeframe: str) -> VenueAlignment:
    """Put one pair's candle frames from several exchanges on one grid over their common span.

    Same rules as :func:`align_candles`: the span is [latest first bar, earliest last bar]; a
    bar a venue lacks is filled flat at its previous close with volume 0 and flagged in
    ``filled``; off-grid bars or disjoint spans raise DataError naming the venues.
    """
    step = timeframe_seconds(timeframe)
    if not frames_by_exchange:
        raise DataError("align_venues: no candle frames given")
    venues = tuple(frames_by_exchange)
    times = {v: _frame_seconds(v, frames_by_exchange[v], step, timeframe) for v in venues}
    start = max(int(t[0]) for t in times.values())
    end = min(int(t[-1]) for t in times.values())
    if start > end:
        spans = "; ".join(f"{v} {_at(t[0])} .. {_at(t[-1])}" for v, t in times.items())
        raise DataError(f"the venues {', '.join(venues)} have no common period ({spans})")
    grid = np.arange(start, end + step, step, dtype=np.int64)
    ohlcv = np.empty((grid.size, len(venues), 5), dtype=np.float64)
    filled = np.zeros((grid.size, len(venues)), dtype=bool)
    notes = [
        f"common span {_at(start)} .. {_at(end)}: {grid.size} bars of "
        f"{timeframe} on {count_noun(len(venues), 'venue')}"
    ]
    for j, venue in enumerate(venues):
        t = times[venue]
        ohlcv[:, j], filled[:, j] = _align_one(frames_by_exchange[venue], t, grid, step)
        cut_before, cut_after = int((t < start).sum()), int((t > end).sum())
        if cut_before or cut_after:
            notes.append(f"{venue}: trimmed {cut_before} bars before and {cut_after} after")
        if filled[:, j].any():
            notes.append(_gap_note(venue, filled[:, j], grid))
    everywhere = int(filled.all(axis=1).sum())
    if everywhere and len(venues) > 1:
        notes.append(f"{everywhere} filled bars are missing on every venue")
    return VenueAlignment(venues, grid, ohlcv, filled, tuple(notes))
