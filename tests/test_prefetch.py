"""Software prefetch in the step kernels: a hint that must never fault or change a value."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import pytest
from numba import njit

from nexlify.config import MarketConfig, from_dict, to_dict
from nexlify.data.sources import synthetic_market
from nexlify.market import kernels as K
from nexlify.market.env import VecMarketEnv
from nexlify.market.prefetch import prefetch_rows
from nexlify.market.strategies import kernel as SK


@njit(cache=False)
def _prefetch_each(table: np.ndarray, firsts: np.ndarray, count: int) -> None:
    for first in firsts:
        prefetch_rows(table, first, count)


@pytest.mark.parametrize(
    "table",
    [
        np.arange(10, dtype=np.int64),
        np.random.default_rng(0).random((7, 3, 4)),
        np.random.default_rng(1).random((5, 3, 2, 2)).astype(np.float32),
        np.random.default_rng(2).random((9, 4))[::-1],  # negative row stride: skipped
        np.random.default_rng(3).random((4, 6)).T,  # not C-contiguous
        np.zeros((0, 3)),  # no rows
    ],
    ids=["1d-int", "3d-float64", "4d-float32", "reversed", "transposed", "empty"],
)
def test_prefetch_accepts_any_row_and_changes_nothing(table: np.ndarray) -> None:
    before = table.copy()
    rows = np.array([-(10**9), -1, 0, 1, table.shape[0] - 1, table.shape[0], 10**9], np.int64)
    for count in (1, 2, 50):
        _prefetch_each(table, rows, count)
    np.testing.assert_array_equal(table, before)


def _fresh_assembly(dispatcher: Any) -> str:
    """Assembly of a compiled kernel, compiled again without numba's cache (a kernel loaded from
    the cache has no assembly to show) for the argument types it was first called with."""
    signature = dispatcher.signatures[0]
    fresh = njit(dispatcher.py_func, cache=False, **K.NO_REFCOUNT)
    fresh.compile(signature)
    return str(fresh.inspect_asm(signature))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.parametrize("strategies", [["spot"], ["spot", "staking", "lending", "liquidity"]])
def test_the_step_kernels_issue_prefetch_instructions(strategies: list[str]) -> None:
    data = synthetic_market(["BTC/USDT", "ETH/USDT"], "1h", seed=0, days=60)
    values = to_dict(MarketConfig())
    values["strategies"]["enabled"] = strategies
    values["strategies"]["lending"]["utilization_source"] = "simulated"
    env = VecMarketEnv(data, from_dict(MarketConfig, values), num_envs=4, seed=0)
    env.reset()
    env.step(np.zeros(4, dtype=np.int64))  # the serial kernels at N = 4
    kernel = K.step_envs_serial if strategies == ["spot"] else SK.step_all_serial
    assert "prefetcht0" in _fresh_assembly(kernel)
