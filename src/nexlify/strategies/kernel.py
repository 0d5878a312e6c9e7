"""Compiled per-env strategy step: staking, lending, Uniswap V3 liquidity, arbitrage inventory.

``step_all`` runs each env's strategy step just before its spot step
(``nexlify.market.kernels._step_one``) in one pass over the envs, only when a strategy beyond
spot is enabled (spot-only runs never enter this module). It leaves the books' value at the
close in ``acct[STRATEGY_VALUE]``, which the spot step adds to equity. Order for one env,
after the decision at bar ``t``'s close:

1. at bar ``t+1``'s open: finished unbonding is sold back to cash; arbitrage transfers that have
   arrived join their venue's inventory; the agent's strategy action fills (stake / unstake,
   supply / withdraw, provide / rebalance / remove liquidity, fund / close the arbitrage book or
   arbitrage one pair); in rule mode the book trades every pair whose spread beats the costs;
   inventory drifting below ``rebalance_threshold`` of its even split is sent across venues
   (withdrawal fee, arrives ``transfer`` bars later);
2. during bar ``t+1``: staking rewards (compounded per epoch), optional slashing, lending interest
   at the bar's supply rate, LP fees from the bar's pool volume x fee tier x the position's share
   of in-range liquidity x the share of the bar's range inside the position's range;
3. at bar ``t+1``'s close: every book is marked to market (its value joins equity); at the
   window's last bar (with ``close_at_end``) everything is converted to cash at the close. An
   episode that ends by ruin keeps its books at their marked value (the spot kernel decides ruin
   after this kernel ran); a new episode starts with empty books.

Every conversion between cash and an asset pays the taker fee and slippage (the venue's fee for
arbitrage legs); LP transactions pay gas. New allocations are refused (and counted as blocked)
while the daily-loss lock is on, beyond a strategy's cap, beyond the total cap or without cash.
Per strategy the book keeps money in (``FLOW_IN``), money out (``FLOW_OUT``) and value
(``VALUE``), so its PnL is ``VALUE + FLOW_OUT - FLOW_IN``.

Each strategy's book lives in its own module (``kernel_staking``, ``kernel_lending``,
``kernel_liquidity``, ``kernel_arbitrage``; shared money moves in ``kernel_book``); this one
dispatches. Speed: a step without an event (no action, trade, transfer or episode end) runs
inlined code only; everything is compiled without reference counting (``kernel_book``), the
table rows of the env a few places ahead are prefetched (``nexlify.market.prefetch``), and
bar-level inputs that are the same for every env (the arbitrage edge, spread and venue prices)
are read from ``arb_bar``, computed once per market; the arbitrage mark reads the book's
holdings from ``held``, kept up to date at events, rather than the whole inventory. The column
constants live in ``columns``
(``kernel.ST_QTY`` etc. still resolve, for older callers).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from nexlify.data.market_data import CLOSE, HIGH, LOW, OPEN
from nexlify.market.columns import LOCKED, START_EQ, STRATEGY_VALUE
from nexlify.market.kernels import (
    NO_REFCOUNT,
    P_CLOSE_AT_END,
    P_FEE,
    P_SLIPPAGE,
    T_END,
    T_NOW,
    _step_one,
    prefetch_next_bar,
)
from nexlify.market.prefetch import prefetch_rows
from nexlify.strategies import columns
from nexlify.strategies.columns import (
    LD_BAL,
    LP_L,
    N_STRATEGIES,
    OBS_LENDING,
    OBS_LIQUIDITY,
    OBS_STAKING,
    SP_AR_ACT,
    SP_AR_ON,
    SP_AR_RULE,
    SP_BAR_YEARS,
    SP_LD_ACT,
    SP_LD_ON,
    SP_LD_PAIR,
    SP_LP_ACT,
    SP_LP_FEE_TIER,
    SP_LP_ON,
    SP_LP_PAIR,
    SP_N_SPOT,
    SP_ST_ACT,
    SP_ST_ON,
    SP_ST_PAIR,
    SP_ST_SLASH_P,
    ST_QTY,
    ST_UNBOND_AT,
    ST_UNBOND_QTY,
    VALUE,
)
from nexlify.strategies.kernel_arbitrage import (
    arb_close,
    arbitrage_action,
    arbitrage_at_open,
    arbitrage_mark,
    arbitrage_obs,
)
from nexlify.strategies.kernel_lending import (
    lending_accrue,
    lending_action,
    lending_liquidate,
    lending_mark,
    lending_obs,
)
from nexlify.strategies.kernel_liquidity import (
    liquidity_accrue,
    liquidity_action,
    liquidity_liquidate,
    liquidity_mark,
    liquidity_obs,
)
from nexlify.strategies.kernel_staking import (
    staking_accrue,
    staking_action,
    staking_liquidate,
    staking_mark,
    staking_obs,
    staking_release,
)


def __getattr__(name: str) -> object:
    """``kernel.ST_QTY`` and the other column constants (defined in ``columns``)."""
    try:
        return getattr(columns, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


@njit(cache=True, inline="always")
def strategies_mark(
    n: int, t1: int, prices: np.ndarray, arb_bar: np.ndarray, sp: np.ndarray, ss: np.ndarray,
    held: np.ndarray,
) -> float:  # fmt: skip
    """Step 3: value of every book at bar ``t1``'s close (stored per strategy); their sum."""
    total = 0.0
    if sp[SP_ST_ON] != 0.0:
        total += staking_mark(n, prices[t1, int(sp[SP_ST_PAIR]), CLOSE], ss)
    if sp[SP_LD_ON] != 0.0:
        p = int(sp[SP_LD_PAIR])
        total += lending_mark(n, prices[t1, max(p, 0), CLOSE], p < 0, ss)
    if sp[SP_LP_ON] != 0.0:
        total += liquidity_mark(n, prices[t1, int(sp[SP_LP_PAIR]), CLOSE], ss)
    if sp[SP_AR_ON] != 0.0:
        total += arbitrage_mark(n, t1, arb_bar, sp, ss, held)
    return total


@njit(cache=True, **NO_REFCOUNT)
def strategies_liquidate(
    n: int,
    t1: int,
    prices: np.ndarray,
    prem: np.ndarray,
    fee: float,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Episode end: every book to cash at bar ``t1``'s close (staked and unbonding funds are
    sold at the close as if through a liquid-staking token; LP removal pays gas)."""
    if sp[SP_ST_ON] != 0.0:
        staking_liquidate(n, prices[t1, int(sp[SP_ST_PAIR]), CLOSE], fee, slip, ss, acct)
    if sp[SP_LD_ON] != 0.0 and ss[n, LD_BAL] > 0.0:
        p = int(sp[SP_LD_PAIR])
        lending_liquidate(n, prices[t1, max(p, 0), CLOSE], fee, slip, sp, ss, acct)
    if sp[SP_LP_ON] != 0.0 and ss[n, LP_L] > 0.0:
        price = prices[t1, int(sp[SP_LP_PAIR]), CLOSE]
        liquidity_liquidate(n, price, fee, slip, sp, ss, acct)
    if sp[SP_AR_ON] != 0.0:
        arb_close(n, t1, CLOSE, prices, prem, slip, sp, ss, inv, held, eta, acct)
    for s in range(N_STRATEGIES):
        ss[n, VALUE + s] = 0.0


@njit(cache=True, **NO_REFCOUNT)
def strategies_reset(
    n: int, ss: np.ndarray, inv: np.ndarray, held: np.ndarray, eta: np.ndarray
) -> None:
    """Empty every book of env ``n`` (a new episode)."""
    ss[n, :] = 0.0
    inv[n, :, :, :] = 0.0
    held[n, :, :, :] = 0.0
    eta[n, :] = -1.0


@njit(cache=True, inline="always")
def write_strategy_obs(
    n: int,
    t: int,
    prices: np.ndarray,
    arb_bar: np.ndarray,
    ser: np.ndarray,
    sp: np.ndarray,
    ss: np.ndarray,
    eta: np.ndarray,
    acct: np.ndarray,
    obs: np.ndarray,
    k: int,
) -> None:
    """Strategy part of env ``n``'s observation at bar ``t``'s close, from ``obs[n, k]`` on.
    Values of books are shares of the starting equity (the equity at this close is only known
    after the spot kernel)."""
    equity = acct[n, START_EQ]
    if sp[SP_ST_ON] != 0.0:
        staking_obs(n, t, prices[t, int(sp[SP_ST_PAIR]), CLOSE], equity, sp, ss, obs, k)
        k += OBS_STAKING
    if sp[SP_LD_ON] != 0.0:
        lending_obs(n, t, equity, ser, ss, obs, k)
        k += OBS_LENDING
    if sp[SP_LP_ON] != 0.0:
        liquidity_obs(n, prices[t, int(sp[SP_LP_PAIR]), CLOSE], equity, ss, obs, k)
        k += OBS_LIQUIDITY
    if sp[SP_AR_ON] != 0.0:
        arbitrage_obs(n, t, equity, arb_bar, ss, eta, obs, k)


@njit(cache=True, inline="always")
def _strategy_action(
    n: int,
    action: int,
    t1: int,
    locked: bool,
    prices: np.ndarray,
    prem: np.ndarray,
    fee: float,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Fill a strategy action (one compiled call, on the steps that have one)."""
    if sp[SP_ST_ON] != 0.0 and 0 <= action - sp[SP_ST_ACT] < 2:
        price = prices[t1, int(sp[SP_ST_PAIR]), OPEN]
        k = int(action - sp[SP_ST_ACT])
        staking_action(n, k, t1, locked, price, fee, slip, sp, ss, acct)
    elif sp[SP_LD_ON] != 0.0 and 0 <= action - sp[SP_LD_ACT] < 2:
        price = prices[t1, max(int(sp[SP_LD_PAIR]), 0), OPEN]
        lending_action(n, int(action - sp[SP_LD_ACT]), locked, price, fee, slip, sp, ss, acct)
    elif sp[SP_LP_ON] != 0.0 and 0 <= action - sp[SP_LP_ACT] < 3:
        price = prices[t1, int(sp[SP_LP_PAIR]), OPEN]
        k = int(action - sp[SP_LP_ACT])
        liquidity_action(n, k, locked, price, fee, slip, sp, ss, acct)
    elif sp[SP_AR_ON] != 0.0 and sp[SP_AR_RULE] == 0.0 and action - sp[SP_AR_ACT] >= 0:
        k = int(action - sp[SP_AR_ACT])
        arbitrage_action(n, k, t1, locked, prices, prem, slip, sp, ss, inv, held, eta, acct)


@njit(cache=True, inline="always")
def _strategy_step_one(
    n: int,
    active: np.ndarray,
    actions: np.ndarray,
    day: np.ndarray,
    prices: np.ndarray,
    cursor: np.ndarray,
    acct: np.ndarray,
    params: np.ndarray,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    ser: np.ndarray,
    prem: np.ndarray,
    arb_bar: np.ndarray,
    rand: np.ndarray,
    obs: np.ndarray,
    offset: int,
) -> None:
    """One env's strategy step (module docstring)."""
    if not active[n]:
        return
    t = cursor[n, T_NOW]
    t1 = t + 1
    fee, slip = params[P_FEE], params[P_SLIPPAGE]
    locked = acct[n, LOCKED] != 0.0 and day[t1] == day[t]  # a new UTC day lifts the lock
    # 1. at the open
    if sp[SP_ST_ON] != 0.0 and ss[n, ST_UNBOND_QTY] > 0.0 and t1 >= ss[n, ST_UNBOND_AT]:
        staking_release(n, prices[t1, int(sp[SP_ST_PAIR]), OPEN], fee, slip, ss, acct)
    action = actions[n]
    if action > sp[SP_N_SPOT]:
        _strategy_action(
            n, action, t1, locked, prices, prem, fee, slip, sp, ss, inv, held, eta, acct
        )
    if sp[SP_AR_ON] != 0.0:
        arbitrage_at_open(n, t1, locked, prices, prem, arb_bar, slip, sp, ss, inv, held, eta, acct)
    # 2. over the bar
    if sp[SP_ST_ON] != 0.0 and (ss[n, ST_QTY] > 0.0 or sp[SP_ST_SLASH_P] > 0.0):
        staking_accrue(n, sp, ss, rand)
    if sp[SP_LD_ON] != 0.0 and ss[n, LD_BAL] > 0.0:
        lending_accrue(n, t1, sp[SP_BAR_YEARS], ser, ss)
    if sp[SP_LP_ON] != 0.0 and ss[n, LP_L] > 0.0:
        p = int(sp[SP_LP_PAIR])
        low, high = prices[t1, p, LOW], prices[t1, p, HIGH]
        liquidity_accrue(n, t1, low, high, sp[SP_LP_FEE_TIER], ser, ss)
    # 3. at the close
    value = strategies_mark(n, t1, prices, arb_bar, sp, ss, held)
    if t1 >= cursor[n, T_END] and params[P_CLOSE_AT_END] != 0.0 and value != 0.0:
        strategies_liquidate(n, t1, prices, prem, fee, slip, sp, ss, inv, held, eta, acct)
        value = 0.0
    acct[n, STRATEGY_VALUE] = value
    write_strategy_obs(n, t1, prices, arb_bar, ser, sp, ss, eta, acct, obs, offset)


@njit(cache=True, inline="always")
def _prefetch_bar(
    n: int, cursor: np.ndarray, day: np.ndarray, features: np.ndarray, prices: np.ndarray,
    window: int, ser: np.ndarray, arb_bar: np.ndarray,
) -> None:  # fmt: skip
    """The spot and strategy tables' rows env ``n + PREFETCH_DISTANCE`` reads at its next bar.
    Not the venue premiums (``prem``): only events (funding, closing, a trade) read them, and a
    prefetch of their row for every env cost memory traffic at large N (``arb_bar`` holds what
    the step reads of them every bar)."""
    t1 = prefetch_next_bar(n, cursor, day, features, prices, window)
    if t1 >= 0:
        prefetch_rows(ser, t1, 1)
        prefetch_rows(arb_bar, t1, 1)


_STEP_DOC = """Advance every active env one bar: for each env its strategy books (this module), then
its spot step (``nexlify.market.kernels._step_one``), in one pass so both read the env's bar
while it is in cache; the table rows of the env ``PREFETCH_DISTANCE`` ahead are prefetched
(:mod:`nexlify.market.prefetch`)."""


@njit(cache=True, **NO_REFCOUNT)
def step_all_serial(
    active: np.ndarray,
    actions: np.ndarray,
    day: np.ndarray,
    features: np.ndarray,
    prices: np.ndarray,
    cursor: np.ndarray,
    acct: np.ndarray,
    pos: np.ndarray,
    kelly_hist: np.ndarray,
    trade_log: np.ndarray,
    trade_count: np.ndarray,
    equity_curve: np.ndarray,
    params: np.ndarray,
    window: int,
    obs: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    ser: np.ndarray,
    prem: np.ndarray,
    arb_bar: np.ndarray,
    rand: np.ndarray,
    offset: int,
) -> None:
    for n in range(actions.shape[0]):
        _prefetch_bar(n, cursor, day, features, prices, window, ser, arb_bar)
        _strategy_step_one(n, active, actions, day, prices, cursor, acct, params, sp, ss, inv,
                           held, eta, ser, prem, arb_bar, rand, obs, offset)  # fmt: skip
        _step_one(n, active, actions, day, features, prices, cursor, acct, pos, kelly_hist,
                  trade_log, trade_count, equity_curve, params, window, obs, rewards, terminated,
                  truncated)  # fmt: skip


@njit(cache=True, parallel=True, **NO_REFCOUNT)
def step_all(
    active: np.ndarray,
    actions: np.ndarray,
    day: np.ndarray,
    features: np.ndarray,
    prices: np.ndarray,
    cursor: np.ndarray,
    acct: np.ndarray,
    pos: np.ndarray,
    kelly_hist: np.ndarray,
    trade_log: np.ndarray,
    trade_count: np.ndarray,
    equity_curve: np.ndarray,
    params: np.ndarray,
    window: int,
    obs: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    ser: np.ndarray,
    prem: np.ndarray,
    arb_bar: np.ndarray,
    rand: np.ndarray,
    offset: int,
) -> None:
    for n in prange(actions.shape[0]):
        _prefetch_bar(n, cursor, day, features, prices, window, ser, arb_bar)
        _strategy_step_one(n, active, actions, day, prices, cursor, acct, params, sp, ss, inv,
                           held, eta, ser, prem, arb_bar, rand, obs, offset)  # fmt: skip
        _step_one(n, active, actions, day, features, prices, cursor, acct, pos, kelly_hist,
                  trade_log, trade_count, equity_curve, params, window, obs, rewards, terminated,
                  truncated)  # fmt: skip


step_all_serial.__doc__ = _STEP_DOC
step_all.__doc__ = _STEP_DOC + " Envs spread over numba's threads (large batches)."


@njit(cache=True, **NO_REFCOUNT)
def reset_strategies(
    mask: np.ndarray,
    cursor: np.ndarray,
    prices: np.ndarray,
    acct: np.ndarray,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    ser: np.ndarray,
    arb_bar: np.ndarray,
    obs: np.ndarray,
    offset: int,
) -> None:
    """Empty the books of every env in ``mask`` (after the spot reset) and write their
    observation at the env's first bar."""
    for n in range(mask.shape[0]):
        if mask[n]:
            strategies_reset(n, ss, inv, held, eta)
            acct[n, STRATEGY_VALUE] = 0.0
            write_strategy_obs(
                n, cursor[n, T_NOW], prices, arb_bar, ser, sp, ss, eta, acct, obs, offset
            )


@njit(cache=True, **NO_REFCOUNT)
def write_all_strategy_obs(
    cursor: np.ndarray,
    prices: np.ndarray,
    acct: np.ndarray,
    sp: np.ndarray,
    ss: np.ndarray,
    eta: np.ndarray,
    ser: np.ndarray,
    arb_bar: np.ndarray,
    obs: np.ndarray,
    offset: int,
) -> None:
    """Rewrite every env's strategy observation at its current bar (after new data)."""
    for n in range(obs.shape[0]):
        write_strategy_obs(
            n, cursor[n, T_NOW], prices, arb_bar, ser, sp, ss, eta, acct, obs, offset
        )
