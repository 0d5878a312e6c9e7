"""The local candle store: Parquet files, one folder per exchange.

Layout (``root`` is ``$NEXLIFY_DATA_DIR`` or ``~/.nexlify/data`` unless given)::

    <root>/<exchange>/<BASE>_<QUOTE>-<tf>.parquet     candles: date, open, high, low, close, volume
    <root>/<exchange>/<BASE>_<QUOTE>-funding.parquet  funding rates: date, funding_rate
    <root>/external/<name>.csv                        daily external series (data.external)

Every write is atomic (temp file, fsync, rename): a crash leaves the old file or the new one.
Stored candles are never overwritten by :meth:`CandleStore.merge`: new rows only fill times the
file does not have yet, so a download or import can be re-run safely.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from nexlify.config import TIMEFRAMES, timeframe_seconds
from nexlify.data.candles import OHLCV_COLUMNS, pair_to_stem, read_candles
from nexlify.errors import DataError
from nexlify.io import atomic_write

EXTERNAL_FOLDER = "external"
"""Folder of the store that holds daily external series (not an exchange)."""
FUNDING_SUFFIX = "funding"
"""File stem suffix of funding-rate files: ``BTC_USDT-funding.parquet``."""


def default_store_dir() -> Path:
    """The local store: $NEXLIFY_DATA_DIR, else ~/.nexlify/data."""
    return Path(os.environ.get("NEXLIFY_DATA_DIR") or Path.home() / ".nexlify" / "data")


@dataclass(frozen=True)
class StoreEntry:
    """One candle file of the store, as ``nexlify data list`` shows it."""

    exchange: str
    pair: str
    timeframe: str
    start: pd.Timestamp
    end: pd.Timestamp
    rows: int
    gaps: int
    """Bars missing between start and end (on the timeframe grid)."""
    path: Path


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=True)
    data = buffer.getvalue()

    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    atomic_write(path, write)


def missing_bar_count(index: pd.DatetimeIndex, timeframe: str) -> int:
    """Bars missing on the grid between the first and the last bar of ``index``."""
    if len(index) < 2:
        return 0
    step = timeframe_seconds(timeframe)
    span = int((index[-1] - index[0]).total_seconds()) // step + 1
    return span - len(index)


def parse_stem(stem: str) -> tuple[str, str] | None:
    """``BTC_USDT-1h`` -> ``("BTC/USDT", "1h")``; None for other names."""
    name, _, timeframe = stem.rpartition("-")
    base, _, quote = name.partition("_")
    if not base or not quote or timeframe not in TIMEFRAMES:
        return None
    return f"{base}/{quote}", timeframe


class CandleStore:
    """Read, merge and list the Parquet candle files of a store folder."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_store_dir()

    def candle_path(self, exchange: str, pair: str, timeframe: str) -> Path:
        """``<root>/<exchange>/<BASE>_<QUOTE>-<tf>.parquet``."""
        return self.root / exchange / f"{pair_to_stem(pair, timeframe)}.parquet"

    def funding_path(self, exchange: str, pair: str) -> Path:
        """``<root>/<exchange>/<BASE>_<QUOTE>-funding.parquet``, beside the candles."""
        stem = pair_to_stem(pair, "1h").rsplit("-", 1)[0]
        return self.root / exchange / f"{stem}-{FUNDING_SUFFIX}.parquet"

    def external_dir(self) -> Path:
        """Folder of cached daily external series."""
        return self.root / EXTERNAL_FOLDER

    def read(self, exchange: str, pair: str, timeframe: str) -> pd.DataFrame | None:
        """The stored candle frame (validated), or None when the store has none."""
        path = self.candle_path(exchange, pair, timeframe)
        return read_candles(path, timeframe) if path.is_file() else None

    def write(self, exchange: str, pair: str, timeframe: str, frame: pd.DataFrame) -> Path:
        """Replace the stored candles with ``frame`` (a candle frame), atomically."""
        path = self.candle_path(exchange, pair, timeframe)
        out = frame[list(OHLCV_COLUMNS)].astype(np.float64)
        out.index = out.index.rename("date")
        _write_parquet(path, out)
        return path

    def merge(self, exchange: str, pair: str, timeframe: str, new: pd.DataFrame) -> int:
        """Add the rows of ``new`` whose times the store lacks; returns how many were added.

        Rows already stored are kept as they are (never overwritten).
        """
        stored = self.read(exchange, pair, timeframe)
        fresh = new if stored is None else new[~new.index.isin(stored.index)]
        if len(fresh) == 0:
            return 0
        merged = fresh if stored is None else pd.concat([stored, fresh]).sort_index()
        self.write(exchange, pair, timeframe, merged)
        return len(fresh)

    def read_funding(self, exchange: str, pair: str) -> pd.DataFrame | None:
        """Stored funding rates (index ``date`` UTC, column ``funding_rate``) or None."""
        path = self.funding_path(exchange, pair)
        if not path.is_file():
            return None
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot be read as a funding-rate file: {exc}") from exc

    def merge_funding(self, exchange: str, pair: str, new: pd.DataFrame) -> int:
        """Add funding events whose times the store lacks; returns how many were added."""
        stored = self.read_funding(exchange, pair)
        fresh = new if stored is None else new[~new.index.isin(stored.index)]
        if len(fresh) == 0:
            return 0
        merged = fresh if stored is None else pd.concat([stored, fresh]).sort_index()
        _write_parquet(self.funding_path(exchange, pair), merged)
        return len(fresh)

    def exchanges(self) -> list[str]:
        """Exchange folders of the store, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and p.name != EXTERNAL_FOLDER
        )

    def candle_files(self) -> Iterator[tuple[str, str, str, Path]]:
        """(exchange, pair, timeframe, path) of every candle file, sorted."""
        for exchange in self.exchanges():
            for path in sorted((self.root / exchange).glob("*.parquet")):
                parsed = parse_stem(path.stem)
                if parsed is not None:
                    yield exchange, parsed[0], parsed[1], path

    def entries(self) -> list[StoreEntry]:
        """A summary of every candle file (reads each file once)."""
        out = []
        for exchange, pair, timeframe, path in self.candle_files():
            frame = read_candles(path, timeframe)
            out.append(
                StoreEntry(
                    exchange=exchange,
                    pair=pair,
                    timeframe=timeframe,
                    start=frame.index[0],
                    end=frame.index[-1],
                    rows=len(frame),
                    gaps=missing_bar_count(pd.DatetimeIndex(frame.index), timeframe),
                    path=path,
                )
            )
        return out

    def folder_with(self, pairs: tuple[str, ...] | list[str], timeframe: str) -> Path | None:
        """The first exchange folder (sorted) holding a candle file for every pair, or None.

        Files of any supported type count (``.parquet``, ``.feather``, ``.csv``), so a folder of
        freqtrade downloads copied into the store works too.
        """
        stems = [pair_to_stem(p, timeframe) for p in pairs]
        for exchange in self.exchanges():
            folder = self.root / exchange
            names = {f.name.split(".")[0] for f in folder.iterdir() if f.is_file()}
            if all(stem in names for stem in stems):
                return folder
        return None
