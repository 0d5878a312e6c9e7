"""Candle feeds: where a paper session's closed candles come from.

A feed hands the trader *closed* bars in time order: ``Bar(time, {pair: (o, h, l, c, v)})``.
``next_bars(after)`` blocks until at least one bar later than ``after`` (unix seconds of a bar
open, ``None`` = from the start) is available and returns them, or returns ``None`` when the feed
has ended (a replay ran out). ``initial_bars()`` is the history a new session starts from.

- :class:`ReplayFeed`: stored candles, ``speed`` bars per second (0 = as fast as possible).
- :class:`nexlify.live.polling.PollingFeed`: an exchange through ccxt (public endpoints).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from nexlify.config import timeframe_seconds
from nexlify.data.candles import OHLCV_COLUMNS
from nexlify.errors import ConfigError, DataError


@dataclass(frozen=True)
class Bar:
    """One closed bar of every pair that has it: open time (unix s, UTC) and OHLCV per pair."""

    time: int
    candles: dict[str, tuple[float, float, float, float, float]]


class Feed(Protocol):
    """What the paper trader reads candles from."""

    name: str

    def initial_bars(self) -> list[Bar]:
        """History for a new session (bars before its first decision); may be empty."""
        ...

    def next_bars(self, after: int | None) -> list[Bar] | None:
        """Closed bars later than ``after``, in order (blocks until one exists); None = ended."""
        ...


def bars_from_frames(frames: Mapping[str, pd.DataFrame]) -> list[Bar]:
    """Candle frames by pair -> bars in time order (a pair missing a bar is left out of it)."""
    by_time: dict[int, dict[str, tuple[float, float, float, float, float]]] = {}
    for pair, frame in frames.items():
        seconds = pd.DatetimeIndex(frame.index).as_unit("ns").asi8 // 1_000_000_000
        values = frame[list(OHLCV_COLUMNS)].to_numpy(dtype=np.float64)
        for t, row in zip(seconds.tolist(), values.tolist(), strict=True):
            o, h, lo, c, v = row
            by_time.setdefault(int(t), {})[pair] = (o, h, lo, c, v)
    return [Bar(t, by_time[t]) for t in sorted(by_time)]


class ReplayFeed:
    """Replays stored candles as if they were arriving live, ``speed`` bars per second."""

    name = "replay"

    def __init__(
        self,
        frames: Mapping[str, pd.DataFrame],
        timeframe: str,
        speed: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        stop_after: int | None = None,
    ) -> None:
        if not (speed >= 0):
            raise ConfigError(f"--speed: {speed!r} is invalid (bars per second >= 0; 0 = max)")
        if not frames:
            raise DataError("replay feed: no candles given")
        self.timeframe = timeframe
        self.step = timeframe_seconds(timeframe)
        self.bars = bars_from_frames(frames)
        self.times = np.asarray([b.time for b in self.bars], dtype=np.int64)
        self.speed = speed
        self.sleep = sleep
        self.stop_after = stop_after
        """Stop after delivering this many bars in this process (tests, demos)."""
        self.delivered = 0

    def initial_bars(self) -> list[Bar]:
        return []  # the whole replay streams through the trader; warm-up bars included

    def next_bars(self, after: int | None) -> list[Bar] | None:
        if self.stop_after is not None and self.delivered >= self.stop_after:
            return None
        i = 0 if after is None else int(np.searchsorted(self.times, after, side="right"))
        if i >= len(self.bars):
            return None
        if self.speed > 0:
            self.sleep(1.0 / self.speed)
        self.delivered += 1
        return [self.bars[i]]
