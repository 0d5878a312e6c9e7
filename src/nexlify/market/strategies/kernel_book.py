"""Money moving between an env's cash and a strategy book (compiled, inlined into the kernels).

Every conversion between cash and an asset pays the taker fee and adverse slippage; per strategy
the book keeps money in (``FLOW_IN``), money out (``FLOW_OUT``) and value (``VALUE``).

Compiled strategy code that takes arrays is built with ``NO_REFCOUNT``: numba otherwise adds an
atomic increment and decrement of every array argument's reference count at each call, and its
pruning misses most of them in inlined helpers (numba issue #2345), which made the strategy step
cost more than the spot step itself. The step kernels allocate nothing and only index arrays the
env owns, so they need no reference counting (numba compiles its own non-allocating helpers the
same way). A function built with it must not create arrays. The spot step kernels
(``nexlify.market.kernels``, where ``NO_REFCOUNT`` is defined) are built the same way.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nexlify.market.columns import CASH, EQUITY, FEES, N_BLOCKED
from nexlify.market.strategies.columns import (
    DUST,
    FLOW_IN,
    FLOW_OUT,
    N_STRATEGIES,
    SP_TOTAL_CAP,
    VALUE,
)


@njit(cache=True, inline="always")
def room(n: int, s: int, cap: float, sp: np.ndarray, ss: np.ndarray, acct: np.ndarray) -> float:
    """Quote amount strategy ``s`` may still take: its cap, the total cap and the cash."""
    equity = acct[n, EQUITY]
    total = 0.0
    for k in range(N_STRATEGIES):
        total += ss[n, VALUE + k]
    left = min(cap * equity - ss[n, VALUE + s], sp[SP_TOTAL_CAP] * equity - total)
    return min(left, acct[n, CASH])


@njit(cache=True, inline="always")
def allocation(
    n: int, s: int, size: float, cap: float, fee: float, floor: float, refused: bool,
    sp: np.ndarray, ss: np.ndarray, acct: np.ndarray,
) -> tuple[bool, float]:  # fmt: skip
    """Whether strategy ``s`` may open a new allocation, and its quote amount: ``size`` of
    equity within the ``room`` left, net of the ``fee`` the purchase will pay (0 when nothing
    is bought). Refused when the caller says so (``refused``: the daily-loss lock, a book
    already open) or when the amount does not beat ``floor`` (gas) plus dust."""
    equity = acct[n, EQUITY]
    amount = min(size * equity, room(n, s, cap, sp, ss, acct) / (1.0 + fee))
    if refused or amount <= floor + DUST * equity:
        return False, 0.0
    return True, amount


@njit(cache=True, inline="always")
def buy_asset(
    n: int,
    s: int,
    notional: float,
    price: float,
    fee: float,
    slip: float,
    acct: np.ndarray,
    ss: np.ndarray,
) -> float:
    """Spend ``notional`` + fee of cash on an asset at ``price``; returns the quantity bought."""
    fee_paid = notional * fee
    acct[n, CASH] -= notional + fee_paid
    acct[n, FEES] += fee_paid
    ss[n, FLOW_IN + s] += notional + fee_paid
    ss[n, VALUE + s] += notional
    return notional / (price * (1.0 + slip))


@njit(cache=True, inline="always")
def sell_asset(
    n: int,
    s: int,
    qty: float,
    price: float,
    fee: float,
    slip: float,
    acct: np.ndarray,
    ss: np.ndarray,
) -> None:
    """Sell ``qty`` of an asset at ``price`` into cash (fee and slippage)."""
    value = qty * price * (1.0 - slip)
    fee_paid = value * fee
    acct[n, CASH] += value - fee_paid
    acct[n, FEES] += fee_paid
    ss[n, FLOW_OUT + s] += value - fee_paid


@njit(cache=True, inline="always")
def collect_cash(n: int, s: int, amount: float, acct: np.ndarray, ss: np.ndarray) -> None:
    """Quote ``amount`` leaves book ``s`` for the cash (no conversion)."""
    acct[n, CASH] += amount
    ss[n, FLOW_OUT + s] += amount


@njit(cache=True, inline="always")
def blocked(n: int, acct: np.ndarray) -> None:
    """Count a refused allocation (risk limits, caps or no cash)."""
    acct[n, N_BLOCKED] += 1.0
