"""The kernels' shared pieces: one loop compiled serial and threaded, the grouped arguments'
writes reaching the env's arrays on both, and the strategies' allocation check by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numba import njit, prange

from nexlify.market import kernel_state
from nexlify.market import kernels as K
from nexlify.market.columns import CASH, EQUITY, N_ACCT
from nexlify.market.kernel_state import (
    B_ACCT,
    B_CURSOR,
    B_EQUITY_CURVE,
    B_KELLY_HIST,
    B_PARAMS,
    B_POS,
    B_TRADE_COUNT,
    B_TRADE_LOG,
    M_DAY,
    M_FEATURES,
    M_PRICES,
    M_WINDOW,
    O_OBS,
    O_REWARDS,
    O_TERMINATED,
    O_TRUNCATED,
    SB_ARB_BAR,
    SB_ETA,
    SB_HELD,
    SB_INV,
    SB_OFFSET,
    SB_PREM,
    SB_RAND,
    SB_SER,
    SB_SP,
    SB_SS,
    MarketTables,
    SpotBooks,
    StepOutputs,
    StrategyBooks,
    serial_and_parallel,
)
from nexlify.market.strategies import kernel as SK
from nexlify.market.strategies.columns import N_SP, N_SS, S_LENDING, S_STAKING, SP_TOTAL_CAP, VALUE
from nexlify.market.strategies.kernel_book import allocation


@pytest.mark.parametrize(
    "pair", [(K.step_envs, K.step_envs_serial), (SK.step_all, SK.step_all_serial)]
)
def test_serial_and_threaded_kernels_are_one_loop(pair: tuple[object, object]) -> None:
    threaded, serial = pair
    assert threaded.py_func.__code__ is serial.py_func.__code__  # type: ignore[attr-defined]
    assert threaded.targetoptions["parallel"] is True  # type: ignore[attr-defined]
    assert serial.targetoptions["parallel"] is False  # type: ignore[attr-defined]
    # numba names its cache files after the function: the two must not share them
    names = {threaded.py_func.__qualname__, serial.py_func.__qualname__}  # type: ignore[attr-defined]
    assert len(names) == 2


@njit(cache=False, inline="always")
def _add_step(n: int, books: tuple[np.ndarray, float]) -> None:
    books[0][n] += books[1] * (n + 1)


def _add_steps(count: int, books: tuple[np.ndarray, float]) -> None:
    for n in prange(count):
        _add_step(n, books)


def test_factory_loops_write_through_grouped_arguments() -> None:
    """Both builds of a factory loop write into the arrays of a grouped (tuple) argument from
    an inlined helper, inside the prange body."""
    threaded, serial = serial_and_parallel(_add_steps, "add_steps_test", "Test loop.")
    for kernel in (threaded, serial):
        books = (np.zeros(5), 0.5)
        kernel(5, books)
        np.testing.assert_array_equal(books[0], [0.5, 1.0, 1.5, 2.0, 2.5])


@pytest.mark.parametrize(
    ("structure", "positions"),
    [
        (MarketTables, (M_DAY, M_FEATURES, M_PRICES, M_WINDOW)),
        (SpotBooks, (B_CURSOR, B_ACCT, B_POS, B_KELLY_HIST, B_TRADE_LOG, B_TRADE_COUNT,
                     B_EQUITY_CURVE, B_PARAMS)),
        (StepOutputs, (O_OBS, O_REWARDS, O_TERMINATED, O_TRUNCATED)),
        (StrategyBooks, (SB_SP, SB_SS, SB_INV, SB_HELD, SB_ETA, SB_SER, SB_PREM, SB_ARB_BAR,
                         SB_RAND, SB_OFFSET)),
    ],
)  # fmt: skip
def test_field_positions_match_the_structures(structure: Any, positions: tuple[int, ...]) -> None:
    """The kernels read the structures by position: each constant names its field."""
    assert positions == tuple(range(len(structure._fields)))
    module = kernel_state.__dict__
    for field, position in zip(structure._fields, positions, strict=True):
        prefix = {"MarketTables": "M_", "SpotBooks": "B_", "StepOutputs": "O_"}.get(
            structure.__name__, "SB_"
        )
        assert module[prefix + field.upper()] == position


def _books(equity: float, cash: float, total_cap: float) -> tuple[np.ndarray, ...]:
    acct = np.zeros((1, N_ACCT))
    acct[0, EQUITY], acct[0, CASH] = equity, cash
    sp = np.zeros(N_SP)
    sp[SP_TOTAL_CAP] = total_cap
    return acct, sp, np.zeros((1, N_SS))


def test_allocation_takes_size_within_caps_cash_and_fee() -> None:
    acct, sp, ss = _books(1000.0, 500.0, 0.5)
    # size 20% of 1000 = 200 is within the 30% cap, the 50% total cap and the cash: 200
    assert allocation(0, S_STAKING, 0.2, 0.3, 0.001, 0.0, False, sp, ss, acct) == (True, 200.0)
    # staking already holds 250: its cap leaves 50, bought with a 0.1% fee: 50 / 1.001
    ss[0, VALUE + S_STAKING] = 250.0
    ok, amount = allocation(0, S_STAKING, 0.2, 0.3, 0.001, 0.0, False, sp, ss, acct)
    assert ok and amount == pytest.approx(50.0 / 1.001, rel=1e-15)
    # lending under the total cap: 500 - 250 - 200 = 50 left, no fee (quote supplied as is)
    ss[0, VALUE + S_LENDING] = 200.0
    assert allocation(0, S_LENDING, 0.2, 0.9, 0.0, 0.0, False, sp, ss, acct) == (True, 50.0)


def test_allocation_refuses_locks_dust_and_amounts_below_gas() -> None:
    acct, sp, ss = _books(1000.0, 500.0, 0.5)
    assert allocation(0, S_STAKING, 0.2, 0.3, 0.0, 0.0, True, sp, ss, acct) == (False, 0.0)
    assert allocation(0, S_STAKING, 0.2, 0.3, 0.0, 200.0, False, sp, ss, acct) == (False, 0.0)
    assert allocation(0, S_STAKING, 0.2, 0.3, 0.0, 199.0, False, sp, ss, acct) == (True, 200.0)
    acct[0, CASH] = 1e-7  # below dust (1e-9 of equity = 1e-6)
    assert allocation(0, S_STAKING, 0.2, 0.3, 0.0, 0.0, False, sp, ss, acct) == (False, 0.0)
