"""Walk-forward folds: train on the past, test on the bars that follow, move forward, repeat.

Bar indices are half-open ``[start, stop)``. Fold k (0-based) of ``n_bars`` bars:

- rolling:  train ``[k*step, k*step + train_bars)``
- anchored: train ``[0, k*step + train_bars)`` (the training window grows from the start)
- both:     test ``[train_stop + embargo, train_stop + embargo + test_bars)``

``step`` defaults to ``test_bars`` (test windows tile the data without overlap). The embargo
leaves ``embargo_bars`` unused between train and test, so features and labels that look back
(or rewards that look ahead) over that many bars cannot leak across. Folds whose test window
would run past the data are not made; a fold never contains a bar twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nexlify.config import timeframe_seconds
from nexlify.errors import ConfigError

MODES = ("rolling", "anchored")


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold, as half-open bar index ranges."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int

    @property
    def train(self) -> slice:
        return slice(self.train_start, self.train_stop)

    @property
    def test(self) -> slice:
        return slice(self.test_start, self.test_stop)


def _check(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"walk-forward {name}: {value!r} is invalid (an integer >= {minimum})")


def walk_forward_folds(
    n_bars: int,
    train_bars: int,
    test_bars: int,
    *,
    step: int | None = None,
    embargo_bars: int = 0,
    mode: str = "rolling",
    max_folds: int | None = None,
) -> list[Fold]:
    """Every fold that fits in ``n_bars`` (see the module docstring for the boundaries)."""
    step = test_bars if step is None else step
    for name, value, minimum in (
        ("n_bars", n_bars, 0), ("train_bars", train_bars, 1), ("test_bars", test_bars, 1),
        ("step", step, 1), ("embargo_bars", embargo_bars, 0),
    ):  # fmt: skip
        _check(name, value, minimum)
    if mode not in MODES:
        raise ConfigError(f"walk-forward mode: {mode!r} is invalid (one of {', '.join(MODES)})")
    folds: list[Fold] = []
    k = 0
    while max_folds is None or k < max_folds:
        train_stop = k * step + train_bars
        test_start = train_stop + embargo_bars
        test_stop = test_start + test_bars
        if test_stop > n_bars:
            break
        train_start = 0 if mode == "anchored" else k * step
        folds.append(Fold(k, train_start, train_stop, test_start, test_stop))
        k += 1
    return folds


def walk_forward_days(
    time: np.ndarray,
    timeframe: str,
    train_days: float,
    test_days: float,
    *,
    step_days: float | None = None,
    embargo_days: float = 0.0,
    mode: str = "rolling",
) -> list[Fold]:
    """Folds with lengths in days, for bars at ``time`` (unix seconds, one timeframe apart)."""
    per_day = 86_400 / timeframe_seconds(timeframe)

    def bars(days: float) -> int:
        return round(days * per_day)

    return walk_forward_folds(
        len(time),
        bars(train_days),
        bars(test_days),
        step=None if step_days is None else bars(step_days),
        embargo_bars=bars(embargo_days),
        mode=mode,
    )
