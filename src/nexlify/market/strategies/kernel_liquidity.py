"""Uniswap V3 liquidity book of one env (compiled): provide, rebalance, remove; fees; IL.

A position is centred on the pair's price with ``[P / (1 + w), P (1 + w)]`` widened to the
pool's tick grid as its range (lower tick floored, upper ceiled to the fee tier's spacing) and
holds the token mix the range needs (only the difference is swapped, with fee and slippage).
Every transaction pays gas. Over a bar it earns the pool volume x fee tier x its share of in-range
liquidity x the share of the bar's high-low range inside its range. The math is in
:mod:`nexlify.market.strategies.uniswap_v3`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nexlify.market.columns import CASH, FEES
from nexlify.market.kernels import NO_REFCOUNT
from nexlify.market.strategies.columns import (
    FLOW_IN,
    LP_BARS,
    LP_FEES,
    LP_FEES_OPEN,
    LP_GAS,
    LP_IL,
    LP_IN_RANGE_BARS,
    LP_L,
    LP_PA,
    LP_PB,
    LP_REBALANCES,
    LP_X0,
    LP_Y0,
    OBS_CLIP,
    S_LIQUIDITY,
    SER_POOL_L,
    SER_POOL_VOLUME,
    SP_LP_CAP,
    SP_LP_FEE_TIER,
    SP_LP_GAS,
    SP_LP_SIZE,
    SP_LP_WIDTH,
    VALUE,
)
from nexlify.market.strategies.kernel_book import allocation, blocked, collect_cash, sell_asset
from nexlify.market.strategies.uniswap_v3 import (
    amounts_for_liquidity,
    fee_share,
    in_range_fraction,
    price_at_tick,
    range_ticks,
    tick_spacing,
    unit_amounts,
)


@njit(cache=True, **NO_REFCOUNT)
def _lp_mint(
    n: int,
    price: float,
    base: float,
    quote: float,
    fee: float,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Open a position centred on ``price`` (bounds on the tick grid) from ``base`` and
    ``quote`` (after gas), swapping only the difference to the token mix the range needs (taker
    fee and slippage on the swap)."""
    lower, upper = range_ticks(price, sp[SP_LP_WIDTH], tick_spacing(sp[SP_LP_FEE_TIER]))
    pa, pb = price_at_tick(lower), price_at_tick(upper)
    ux, uy = unit_amounts(price, pa, pb)
    buy_cost = price * (1.0 + slip) * (1.0 + fee)
    liquidity = (quote + base * buy_cost) / (uy + ux * buy_cost)
    if liquidity * ux >= base:  # buy the missing base
        bought = liquidity * ux - base
        acct[n, FEES] += bought * price * (1.0 + slip) * fee
    else:  # sell the surplus base
        sell_value = price * (1.0 - slip) * (1.0 - fee)
        liquidity = (quote + base * sell_value) / (uy + ux * sell_value)
        acct[n, FEES] += (base - liquidity * ux) * price * (1.0 - slip) * fee
    ss[n, LP_L] = liquidity
    ss[n, LP_PA] = pa
    ss[n, LP_PB] = pb
    ss[n, LP_X0] = liquidity * ux
    ss[n, LP_Y0] = liquidity * uy


@njit(cache=True, inline="always")
def _lp_burn(n: int, price: float, ss: np.ndarray) -> tuple[float, float]:
    """Remove the position: (base, quote incl. uncollected fees) it returns at ``price``."""
    x, y = amounts_for_liquidity(ss[n, LP_L], price, ss[n, LP_PA], ss[n, LP_PB])
    y += ss[n, LP_FEES_OPEN]
    ss[n, LP_FEES_OPEN] = 0.0
    ss[n, LP_L] = 0.0
    return x, y


@njit(cache=True, inline="always")
def _pay_gas(n: int, count: float, sp: np.ndarray, ss: np.ndarray, acct: np.ndarray) -> float:
    gas = sp[SP_LP_GAS] * count
    ss[n, LP_GAS] += gas
    acct[n, FEES] += gas
    return gas


@njit(cache=True, **NO_REFCOUNT)
def liquidity_action(
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
    """``k`` 0: provide, 1: rebalance (burn and mint around ``price``), 2: remove."""
    s = S_LIQUIDITY
    if k == 0:
        refused = locked or ss[n, LP_L] > 0.0  # one position at a time
        ok, amount = allocation(n, s, sp[SP_LP_SIZE], sp[SP_LP_CAP], 0.0, sp[SP_LP_GAS], refused,
                                sp, ss, acct)  # fmt: skip
        if not ok:
            blocked(n, acct)
            return
        acct[n, CASH] -= amount
        ss[n, FLOW_IN + s] += amount
        gas = _pay_gas(n, 1.0, sp, ss, acct)
        _lp_mint(n, price, 0.0, amount - gas, fee, slip, sp, ss, acct)
        ss[n, VALUE + s] += amount - gas
    elif ss[n, LP_L] <= 0.0:
        return
    elif k == 1:  # rebalance: two transactions
        x, y = _lp_burn(n, price, ss)
        gas = _pay_gas(n, 2.0, sp, ss, acct)
        ss[n, LP_REBALANCES] += 1.0
        if y - gas + x * price * (1.0 - slip) * (1.0 - fee) <= 0.0:  # gas ate the position
            sell_asset(n, s, x, price, fee, slip, acct, ss)
            collect_cash(n, s, y - gas, acct, ss)
            return
        if y < gas:  # pay the gas shortfall by selling base first
            need = (gas - y) / (price * (1.0 - slip) * (1.0 - fee))
            acct[n, FEES] += need * price * (1.0 - slip) * fee
            x -= need
            y = gas
        _lp_mint(n, price, x, y - gas, fee, slip, sp, ss, acct)
    else:
        liquidity_liquidate(n, price, fee, slip, sp, ss, acct)


@njit(cache=True, **NO_REFCOUNT)
def liquidity_liquidate(
    n: int, price: float, fee: float, slip: float, sp: np.ndarray, ss: np.ndarray, acct: np.ndarray
) -> None:
    """Remove the position at ``price``: base sold back to cash, quote and fees collected."""
    x, y = _lp_burn(n, price, ss)
    gas = _pay_gas(n, 1.0, sp, ss, acct)
    sell_asset(n, S_LIQUIDITY, x, price, fee, slip, acct, ss)
    collect_cash(n, S_LIQUIDITY, y - gas, acct, ss)


@njit(cache=True, inline="always")
def liquidity_accrue(
    n: int, t1: int, low: float, high: float, fee_tier: float, ser: np.ndarray, ss: np.ndarray
) -> None:
    """Fees of bar ``t1`` (range ``low``..``high``) for an open position."""
    ss[n, LP_BARS] += 1.0
    share_of_bar = in_range_fraction(low, high, ss[n, LP_PA], ss[n, LP_PB])
    if share_of_bar > 0.0:
        ss[n, LP_IN_RANGE_BARS] += share_of_bar
        share = fee_share(ss[n, LP_L], ser[t1, SER_POOL_L])
        earned = ser[t1, SER_POOL_VOLUME] * fee_tier * share * share_of_bar
        ss[n, LP_FEES_OPEN] += earned
        ss[n, LP_FEES] += earned


@njit(cache=True, inline="always")
def liquidity_mark(n: int, close: float, ss: np.ndarray) -> float:
    """Value of the position and its uncollected fees at ``close``; updates the IL."""
    value = 0.0
    if ss[n, LP_L] > 0.0:
        x, y = amounts_for_liquidity(ss[n, LP_L], close, ss[n, LP_PA], ss[n, LP_PB])
        value = x * close + y + ss[n, LP_FEES_OPEN]
        ss[n, LP_IL] = x * close + y - (ss[n, LP_X0] * close + ss[n, LP_Y0])
    ss[n, VALUE + S_LIQUIDITY] = value
    return value


@njit(cache=True, inline="always")
def liquidity_obs(
    n: int, close: float, equity: float, ss: np.ndarray, obs: np.ndarray, k: int
) -> None:
    """``[position share, in range, place in range (-1 low .. 1 high), IL as % of equity]``."""
    obs[n, k] = ss[n, VALUE + S_LIQUIDITY] / equity
    if ss[n, LP_L] > 0.0:
        pa, pb = ss[n, LP_PA], ss[n, LP_PB]
        obs[n, k + 1] = 1.0 if pa < close < pb else 0.0
        where = 2.0 * math.log(close / pa) / math.log(pb / pa) - 1.0
        obs[n, k + 2] = min(max(where, -OBS_CLIP), OBS_CLIP)
        obs[n, k + 3] = min(max(ss[n, LP_IL] / equity * 100.0, -OBS_CLIP), OBS_CLIP)
    else:
        obs[n, k + 1] = 0.0
        obs[n, k + 2] = 0.0
        obs[n, k + 3] = 0.0
