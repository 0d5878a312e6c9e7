"""Staking book of one env (compiled): stake / unstake, unbonding, rewards per epoch, slashing.

Staked funds earn rewards every bar, compounded once per epoch (or every bar when epochs are
shorter than a bar); unstaking starts the unbonding of everything, which is sold back to cash at
the first open after ``unbonding`` bars. Slashing, when configured, takes a fraction of staked,
accrued and unbonding funds on a bar with probability ``SP_ST_SLASH_P`` (one uniform draw per env
and step, made by the env).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nexlify.market.kernels import NO_REFCOUNT
from nexlify.market.strategies.columns import (
    OBS_CLIP,
    S_STAKING,
    SP_ST_APY,
    SP_ST_BAR_GROWTH,
    SP_ST_CAP,
    SP_ST_EPOCH_BARS,
    SP_ST_GROWTH,
    SP_ST_SIZE,
    SP_ST_SLASH_FRAC,
    SP_ST_SLASH_P,
    SP_ST_UNBOND_BARS,
    ST_ACCRUED,
    ST_CLOCK,
    ST_EVENTS,
    ST_QTY,
    ST_REWARDS,
    ST_SLASHED,
    ST_UNBOND_AT,
    ST_UNBOND_QTY,
    VALUE,
)
from nexlify.market.strategies.kernel_book import allocation, blocked, buy_asset, sell_asset


@njit(cache=True, **NO_REFCOUNT)
def staking_action(
    n: int,
    k: int,
    t1: int,
    locked: bool,
    price: float,
    fee: float,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    acct: np.ndarray,
) -> None:
    """``k`` 0: stake at ``price`` (bar ``t1``'s open); 1: unstake (everything unbonds)."""
    if k == 0:
        ok, amount = allocation(n, S_STAKING, sp[SP_ST_SIZE], sp[SP_ST_CAP], fee, 0.0, locked,
                                sp, ss, acct)  # fmt: skip
        if not ok:
            blocked(n, acct)
            return
        ss[n, ST_QTY] += buy_asset(n, S_STAKING, amount, price, fee, slip, acct, ss)
    elif ss[n, ST_QTY] + ss[n, ST_ACCRUED] > 0.0:
        ss[n, ST_UNBOND_QTY] += ss[n, ST_QTY] + ss[n, ST_ACCRUED]
        ss[n, ST_UNBOND_AT] = t1 + sp[SP_ST_UNBOND_BARS]
        ss[n, ST_QTY] = 0.0
        ss[n, ST_ACCRUED] = 0.0
        ss[n, ST_CLOCK] = 0.0


@njit(cache=True, **NO_REFCOUNT)
def staking_release(
    n: int, price: float, fee: float, slip: float, ss: np.ndarray, acct: np.ndarray
) -> None:
    """Unbonded funds are sold back to cash at ``price`` (the caller checked they are due)."""
    sell_asset(n, S_STAKING, ss[n, ST_UNBOND_QTY], price, fee, slip, acct, ss)
    ss[n, ST_UNBOND_QTY] = 0.0


@njit(cache=True, inline="always")
def staking_accrue(n: int, sp: np.ndarray, ss: np.ndarray, rand: np.ndarray) -> None:
    """One bar of rewards on the staked principal, compounded once per epoch; slashing first."""
    slash_p = sp[SP_ST_SLASH_P]
    if slash_p > 0.0 and rand[n] < slash_p:
        keep = 1.0 - sp[SP_ST_SLASH_FRAC]
        lost = (ss[n, ST_QTY] + ss[n, ST_ACCRUED] + ss[n, ST_UNBOND_QTY]) * (1.0 - keep)
        if lost > 0.0:
            ss[n, ST_QTY] *= keep
            ss[n, ST_ACCRUED] *= keep
            ss[n, ST_UNBOND_QTY] *= keep
            ss[n, ST_SLASHED] += lost
            ss[n, ST_EVENTS] += 1.0
    qty = ss[n, ST_QTY]
    if qty <= 0.0:
        return
    epoch_bars = sp[SP_ST_EPOCH_BARS]
    if epoch_bars <= 1.0:  # several epochs per bar: compound each one (factor precomputed)
        earned = qty * sp[SP_ST_BAR_GROWTH]
        ss[n, ST_QTY] = qty + earned
        ss[n, ST_REWARDS] += earned
        return
    earned = qty * sp[SP_ST_GROWTH] / epoch_bars  # accrues linearly, credited at the epoch's end
    ss[n, ST_ACCRUED] += earned
    ss[n, ST_REWARDS] += earned
    ss[n, ST_CLOCK] += 1.0
    if ss[n, ST_CLOCK] >= epoch_bars - 1e-9:
        ss[n, ST_QTY] += ss[n, ST_ACCRUED]
        ss[n, ST_ACCRUED] = 0.0
        ss[n, ST_CLOCK] -= epoch_bars


@njit(cache=True, inline="always")
def staking_mark(n: int, close: float, ss: np.ndarray) -> float:
    """Value of the book at ``close`` (staked, accrued and unbonding), stored and returned."""
    qty = ss[n, ST_QTY] + ss[n, ST_ACCRUED] + ss[n, ST_UNBOND_QTY]
    ss[n, VALUE + S_STAKING] = qty * close
    return ss[n, VALUE + S_STAKING]


@njit(cache=True, **NO_REFCOUNT)
def staking_liquidate(
    n: int, close: float, fee: float, slip: float, ss: np.ndarray, acct: np.ndarray
) -> None:
    """Episode end: staked and unbonding funds sold at ``close`` (as a liquid-staking token)."""
    qty = ss[n, ST_QTY] + ss[n, ST_ACCRUED] + ss[n, ST_UNBOND_QTY]
    if qty > 0.0:
        sell_asset(n, S_STAKING, qty, close, fee, slip, acct, ss)
    ss[n, ST_QTY] = 0.0
    ss[n, ST_ACCRUED] = 0.0
    ss[n, ST_UNBOND_QTY] = 0.0


@njit(cache=True, inline="always")
def staking_obs(
    n: int, t: int, close: float, equity: float, sp: np.ndarray, ss: np.ndarray,
    obs: np.ndarray, k: int,
) -> None:  # fmt: skip
    """``[staked share, unbonding share, APY x10, unbonding bars left / unbonding bars]`` at
    ``obs[n, k:]`` (shares of ``equity``)."""
    obs[n, k] = (ss[n, ST_QTY] + ss[n, ST_ACCRUED]) * close / equity
    obs[n, k + 1] = ss[n, ST_UNBOND_QTY] * close / equity
    obs[n, k + 2] = sp[SP_ST_APY] * 10.0
    left = ss[n, ST_UNBOND_AT] - t if ss[n, ST_UNBOND_QTY] > 0.0 else 0.0
    obs[n, k + 3] = min(left / max(sp[SP_ST_UNBOND_BARS], 1.0), OBS_CLIP)
