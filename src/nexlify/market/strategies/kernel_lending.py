"""Lending book of one env (compiled): supply / withdraw, interest at the bar's supply rate.

The supplied asset is the quote currency (no conversion) or one of the market's base assets
(bought and sold at the pair's price with fee and slippage). Interest accrues every bar at the
per-bar series' supply rate (``ser[t, SER_SUPPLY_RATE]``, a yearly fraction).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nexlify.market.columns import CASH
from nexlify.market.kernels import NO_REFCOUNT
from nexlify.market.strategies.columns import (
    FLOW_IN,
    LD_BAL,
    LD_INTEREST,
    OBS_CLIP,
    S_LENDING,
    SER_SUPPLY_RATE,
    SER_UTIL,
    SP_LD_CAP,
    SP_LD_PAIR,
    SP_LD_SIZE,
    VALUE,
)
from nexlify.market.strategies.kernel_book import (
    allocation,
    blocked,
    buy_asset,
    collect_cash,
    sell_asset,
)


@njit(cache=True, **NO_REFCOUNT)
def lending_action(
    n: int,
    k: int,
    locked: bool,
    price: float,
    fee: float,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    acct: np.ndarray,
) -> None:
    """``k`` 0: supply (a base asset bought at ``price``, bar ``t1``'s open); 1: withdraw all."""
    p = int(sp[SP_LD_PAIR])
    if k == 0:
        buy_fee = fee if p >= 0 else 0.0  # the quote currency is supplied as it is
        ok, amount = allocation(n, S_LENDING, sp[SP_LD_SIZE], sp[SP_LD_CAP], buy_fee, 0.0, locked,
                                sp, ss, acct)  # fmt: skip
        if not ok:
            blocked(n, acct)
            return
        if p < 0:
            acct[n, CASH] -= amount
            ss[n, FLOW_IN + S_LENDING] += amount
            ss[n, VALUE + S_LENDING] += amount
            ss[n, LD_BAL] += amount
        else:
            ss[n, LD_BAL] += buy_asset(n, S_LENDING, amount, price, fee, slip, acct, ss)
    elif ss[n, LD_BAL] > 0.0:
        lending_liquidate(n, price, fee, slip, sp, ss, acct)


@njit(cache=True, inline="always")
def lending_liquidate(
    n: int, price: float, fee: float, slip: float, sp: np.ndarray, ss: np.ndarray, acct: np.ndarray
) -> None:
    """Withdraw the whole balance to cash (a base asset sold at ``price``)."""
    if int(sp[SP_LD_PAIR]) < 0:
        collect_cash(n, S_LENDING, ss[n, LD_BAL], acct, ss)
    else:
        sell_asset(n, S_LENDING, ss[n, LD_BAL], price, fee, slip, acct, ss)
    ss[n, LD_BAL] = 0.0


@njit(cache=True, inline="always")
def lending_accrue(n: int, t1: int, bar_years: float, ser: np.ndarray, ss: np.ndarray) -> None:
    """One bar of interest at bar ``t1``'s supply rate."""
    interest = ss[n, LD_BAL] * ser[t1, SER_SUPPLY_RATE] * bar_years
    ss[n, LD_BAL] += interest
    ss[n, LD_INTEREST] += interest


@njit(cache=True, inline="always")
def lending_mark(n: int, close: float, quote: bool, ss: np.ndarray) -> float:
    """Value of the balance (``close`` of its asset unless it is the ``quote`` currency)."""
    bal = ss[n, LD_BAL]
    ss[n, VALUE + S_LENDING] = bal if quote else bal * close
    return ss[n, VALUE + S_LENDING]


@njit(cache=True, inline="always")
def lending_obs(
    n: int, t: int, equity: float, ser: np.ndarray, ss: np.ndarray, obs: np.ndarray, k: int
) -> None:
    """``[supplied share, supply rate x10, utilisation]`` at ``obs[n, k:]``."""
    obs[n, k] = ss[n, VALUE + S_LENDING] / equity
    obs[n, k + 1] = min(ser[t, SER_SUPPLY_RATE] * 10.0, OBS_CLIP)
    obs[n, k + 2] = ser[t, SER_UTIL]
