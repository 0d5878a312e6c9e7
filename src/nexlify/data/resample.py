"""Coarser candles built from finer files: 4h or 1d bars from 1h candles, as freqtrade does.

A coarse bar covers one bucket of the UTC grid of its timeframe (a day starts at 00:00 UTC):
open of the first fine bar, highest high, lowest low, close of the last, summed volume. A
bucket whose fine bars are not all there is *partial*: at either end of the data it is
dropped (the first and last coarse bars are always whole), inside it is built from the bars
there (an exchange outage) and counted in the note, which says the candles were resampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.config import TIMEFRAMES, timeframe_seconds
from nexlify.data.candles import candle_files, find_candle_file
from nexlify.errors import DataError

_SUMMED = ("volume", "quote_volume")


def finer_timeframes(timeframe: str) -> list[str]:
    """Timeframes whose bars tile ``timeframe``'s exactly, coarsest first (the cheapest source)."""
    target = timeframe_seconds(timeframe)
    finer = [tf for tf, s in TIMEFRAMES.items() if s < target and target % s == 0]
    return sorted(finer, key=TIMEFRAMES.__getitem__, reverse=True)


def find_candle_source(data_dir: str | Path, pair: str, timeframe: str) -> tuple[Path, str]:
    """(file, its timeframe): the pair's ``timeframe`` file, else the coarsest finer file to
    resample from (only when no ``timeframe`` file exists: several of them stay an error); the
    DataError for the missing ``timeframe`` file when there is neither."""
    source_tf = next(
        (
            tf
            for tf in (timeframe, *finer_timeframes(timeframe))
            if candle_files(data_dir, pair, tf)
        ),
        timeframe,
    )
    return find_candle_file(data_dir, pair, source_tf), source_tf


def resample_candles(
    frame: pd.DataFrame, source_tf: str, target_tf: str, source: str = "candles"
) -> tuple[pd.DataFrame, str]:
    """``frame`` (candles of ``source_tf``, time index in UTC) as ``target_tf`` candles, and a
    note on what was done. Raises DataError when no whole bucket remains."""
    step = timeframe_seconds(source_tf)
    bucket_s = timeframe_seconds(target_tf)
    if bucket_s % step or bucket_s <= step:
        raise DataError(f"{source}: cannot build {target_tf} candles from {source_tf} candles")
    per_bucket = bucket_s // step
    seconds = pd.DatetimeIndex(frame.index).as_unit("ns").asi8 // 1_000_000_000
    bucket = seconds // bucket_s
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    counts = np.diff(np.r_[starts, bucket.size])
    whole = counts == per_bucket
    keep = np.ones(starts.size, dtype=bool)
    first_whole, last_whole = np.flatnonzero(whole)[[0, -1]] if whole.any() else (0, -1)
    keep[:first_whole] = False
    keep[last_whole + 1 :] = False
    if not keep.any():
        raise DataError(
            f"{source}: no whole {target_tf} bar in {len(frame)} {source_tf} candles "
            f"(a {target_tf} bar needs {per_bucket})"
        )
    ends = np.r_[starts[1:], bucket.size] - 1
    out = pd.DataFrame(
        {
            "open": frame["open"].to_numpy()[starts],
            "high": np.maximum.reduceat(frame["high"].to_numpy(), starts),
            "low": np.minimum.reduceat(frame["low"].to_numpy(), starts),
            "close": frame["close"].to_numpy()[ends],
            **{
                c: np.add.reduceat(frame[c].to_numpy(dtype=np.float64), starts)
                for c in _SUMMED
                if c in frame.columns
            },
        },
        index=pd.DatetimeIndex(
            pd.to_datetime(bucket[starts] * bucket_s, unit="s", utc=True), name=frame.index.name
        ),
    )[keep]
    partial = int((~whole & keep).sum())
    dropped = int((~keep).sum())
    note = (
        f"{source}: {target_tf} candles resampled from {source_tf} ({len(out)} bars; "
        f"{partial} partial inside the data, built from the {source_tf} bars present; "
        f"{dropped} partial at the ends dropped)"
    )
    return out, note


def read_pair_candles(data_dir: str | Path, pair: str, timeframe: str) -> pd.DataFrame:
    """The pair's ``timeframe`` candles from ``data_dir``: its file, else resampled from the
    coarsest finer file there (validated as :func:`nexlify.data.candles.read_candles` does)."""
    from nexlify.data.candles import read_candles

    path, source_tf = find_candle_source(data_dir, pair, timeframe)
    frame = read_candles(path, source_tf)
    if source_tf == timeframe:
        return frame
    return resample_candles(frame, source_tf, timeframe, str(path))[0]
