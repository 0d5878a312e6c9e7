"""Walk-forward folds on crafted calendars: exact boundaries worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from nexlify.data.splits import walk_forward_days, walk_forward_folds
from nexlify.errors import ConfigError


def bounds(folds: list) -> list[tuple[int, int, int, int]]:
    return [(f.train_start, f.train_stop, f.test_start, f.test_stop) for f in folds]


def test_rolling_folds_slide_by_the_test_window() -> None:
    # 20 bars, train 8, test 4: [0,8)+[8,12), [4,12)+[12,16), [8,16)+[16,20); a 4th would end at 24
    folds = walk_forward_folds(20, 8, 4)
    assert bounds(folds) == [(0, 8, 8, 12), (4, 12, 12, 16), (8, 16, 16, 20)]
    assert [f.index for f in folds] == [0, 1, 2]


def test_anchored_folds_grow_from_the_start() -> None:
    folds = walk_forward_folds(20, 8, 4, mode="anchored")
    assert bounds(folds) == [(0, 8, 8, 12), (0, 12, 12, 16), (0, 16, 16, 20)]


def test_embargo_leaves_bars_unused_between_train_and_test() -> None:
    # train 8, embargo 2, test 4: test of fold 0 is [10,14); fold 2 would end at 22 > 21
    folds = walk_forward_folds(21, 8, 4, embargo_bars=2)
    assert bounds(folds) == [(0, 8, 10, 14), (4, 12, 14, 18)]
    for f in folds:
        assert f.test_start - f.train_stop == 2


def test_custom_step_and_max_folds() -> None:
    folds = walk_forward_folds(100, 10, 5, step=20, max_folds=2)
    assert bounds(folds) == [(0, 10, 10, 15), (20, 30, 30, 35)]


def test_too_short_data_gives_no_fold_and_bad_sizes_are_refused() -> None:
    assert walk_forward_folds(11, 8, 4) == []
    with pytest.raises(ConfigError, match="test_bars"):
        walk_forward_folds(20, 8, 0)
    with pytest.raises(ConfigError, match="mode"):
        walk_forward_folds(20, 8, 4, mode="expanding")


def test_day_lengths_on_an_hourly_calendar() -> None:
    # 10 days of 1h bars; train 4 days (96 bars), embargo 1 day (24), test 2 days (48)
    time = 1_704_067_200 + 3600 * np.arange(240, dtype=np.int64)
    folds = walk_forward_days(time, "1h", 4, 2, embargo_days=1)
    assert bounds(folds) == [(0, 96, 120, 168), (48, 144, 168, 216)]
    assert time[folds[1].test][0] == 1_704_067_200 + 168 * 3600  # 2024-01-08 00:00 UTC
