"""Compiled per-env strategy step: staking, lending, Uniswap V3 liquidity, arbitrage inventory.

``step_all`` runs each env's strategy step just before its spot step
(``nexlify.market.kernels.spot_step_one``) in one pass over the envs, only when a strategy beyond
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
``kernel_liquidity``, ``kernel_arbitrage``; shared money moves and the allocation check in
``kernel_book``); this one holds the three phases every book goes through, each in one place:
``strategies_act`` (the open), ``strategies_accrue`` (the bar), ``strategies_mark`` (the close).
The kernels take their arrays grouped (:mod:`nexlify.market.kernel_state`); ``step_all`` and
``step_all_serial`` are one loop compiled with and without numba's threads.

Speed: a step without an event (no action, trade, transfer or episode end) runs inlined code
only; everything is compiled without reference counting (``kernel_book``), the table rows of
the env a few places ahead are prefetched (``nexlify.market.prefetch``), and bar-level inputs
that are the same for every env (the arbitrage edge, spread and venue prices) are read from
``arb_bar``, computed once per market; the arbitrage mark reads the book's holdings from
``held``, kept up to date at events, rather than the whole inventory. The column constants live
in ``columns`` (``kernel.ST_QTY`` etc. still resolve, for older callers).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from nexlify.data.market_data import CLOSE, HIGH, LOW, OPEN
from nexlify.market.columns import LOCKED, START_EQ, STRATEGY_VALUE
from nexlify.market.kernel_state import (
    B_ACCT,
    B_CURSOR,
    B_PARAMS,
    M_DAY,
    M_PRICES,
    O_OBS,
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
    MarketArg,
    OutputsArg,
    SpotArg,
    StrategyArg,
    serial_and_parallel,
)
from nexlify.market.kernels import (
    NO_REFCOUNT,
    P_CLOSE_AT_END,
    P_FEE,
    P_SLIPPAGE,
    T_END,
    T_NOW,
    prefetch_next_bar,
    spot_step_one,
)
from nexlify.market.prefetch import prefetch_rows
from nexlify.market.strategies import columns
from nexlify.market.strategies.columns import (
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
from nexlify.market.strategies.kernel_arbitrage import (
    arb_close,
    arbitrage_action,
    arbitrage_at_open,
    arbitrage_mark,
    arbitrage_obs,
)
from nexlify.market.strategies.kernel_lending import (
    lending_accrue,
    lending_action,
    lending_liquidate,
    lending_mark,
    lending_obs,
)
from nexlify.market.strategies.kernel_liquidity import (
    liquidity_accrue,
    liquidity_action,
    liquidity_liquidate,
    liquidity_mark,
    liquidity_obs,
)
from nexlify.market.strategies.kernel_staking import (
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
def _pair_price(prices: np.ndarray, t1: int, sp: np.ndarray, pair: int, column: int) -> float:
    """Price ``column`` at bar ``t1`` of the pair in ``sp[pair]`` (the first pair when it is
    -1: lending the quote currency, whose price nobody reads)."""
    return prices[t1, max(int(sp[pair]), 0), column]


@njit(cache=True, inline="always")
def strategies_mark(n: int, t1: int, prices: np.ndarray, books: StrategyArg) -> float:
    """Step 3: value of every book at bar ``t1``'s close (stored per strategy); their sum."""
    sp, ss = books[SB_SP], books[SB_SS]
    total = 0.0
    if sp[SP_ST_ON] != 0.0:
        total += staking_mark(n, _pair_price(prices, t1, sp, SP_ST_PAIR, CLOSE), ss)
    if sp[SP_LD_ON] != 0.0:
        quote = int(sp[SP_LD_PAIR]) < 0
        total += lending_mark(n, _pair_price(prices, t1, sp, SP_LD_PAIR, CLOSE), quote, ss)
    if sp[SP_LP_ON] != 0.0:
        total += liquidity_mark(n, _pair_price(prices, t1, sp, SP_LP_PAIR, CLOSE), ss)
    if sp[SP_AR_ON] != 0.0:
        total += arbitrage_mark(n, t1, books[SB_ARB_BAR], sp, ss, books[SB_HELD])
    return total


@njit(cache=True, **NO_REFCOUNT)
def strategies_liquidate(
    n: int, t1: int, prices: np.ndarray, fee: float, slip: float, books: StrategyArg,
    acct: np.ndarray,
) -> None:  # fmt: skip
    """Episode end: every book to cash at bar ``t1``'s close (staked and unbonding funds are
    sold at the close as if through a liquid-staking token; LP removal pays gas)."""
    sp, ss = books[SB_SP], books[SB_SS]
    if sp[SP_ST_ON] != 0.0:
        staking_liquidate(n, _pair_price(prices, t1, sp, SP_ST_PAIR, CLOSE), fee, slip, ss, acct)
    if sp[SP_LD_ON] != 0.0 and ss[n, LD_BAL] > 0.0:
        price = _pair_price(prices, t1, sp, SP_LD_PAIR, CLOSE)
        lending_liquidate(n, price, fee, slip, sp, ss, acct)
    if sp[SP_LP_ON] != 0.0 and ss[n, LP_L] > 0.0:
        price = _pair_price(prices, t1, sp, SP_LP_PAIR, CLOSE)
        liquidity_liquidate(n, price, fee, slip, sp, ss, acct)
    if sp[SP_AR_ON] != 0.0:
        arb_close(n, t1, CLOSE, prices, books[SB_PREM], slip, sp, ss, books[SB_INV], books[SB_HELD],
                  books[SB_ETA], acct)  # fmt: skip
    for s in range(N_STRATEGIES):
        ss[n, VALUE + s] = 0.0


@njit(cache=True, **NO_REFCOUNT)
def strategies_reset(n: int, books: StrategyArg) -> None:
    """Empty every book of env ``n`` (a new episode)."""
    books[SB_SS][n, :] = 0.0
    books[SB_INV][n, :, :, :] = 0.0
    books[SB_HELD][n, :, :, :] = 0.0
    books[SB_ETA][n, :] = -1.0


@njit(cache=True, inline="always")
def write_strategy_obs(
    n: int, t: int, prices: np.ndarray, books: StrategyArg, acct: np.ndarray, obs: np.ndarray
) -> None:
    """Strategy part of env ``n``'s observation at bar ``t``'s close, from ``obs[n, offset]``
    on. Values of books are shares of the starting equity (the equity at this close is only
    known after the spot kernel)."""
    sp, ss, k = books[SB_SP], books[SB_SS], books[SB_OFFSET]
    equity = acct[n, START_EQ]
    if sp[SP_ST_ON] != 0.0:
        close = _pair_price(prices, t, sp, SP_ST_PAIR, CLOSE)
        staking_obs(n, t, close, equity, sp, ss, obs, k)
        k += OBS_STAKING
    if sp[SP_LD_ON] != 0.0:
        lending_obs(n, t, equity, books[SB_SER], ss, obs, k)
        k += OBS_LENDING
    if sp[SP_LP_ON] != 0.0:
        liquidity_obs(n, _pair_price(prices, t, sp, SP_LP_PAIR, CLOSE), equity, ss, obs, k)
        k += OBS_LIQUIDITY
    if sp[SP_AR_ON] != 0.0:
        arbitrage_obs(n, t, equity, books[SB_ARB_BAR], ss, books[SB_ETA], obs, k)


@njit(cache=True, inline="always")
def _own_action(action: int, sp: np.ndarray, on: int, first: int, count: float) -> int:
    """Index of ``action`` among a strategy's ``count`` actions (the first at ``sp[first]``);
    -1 when the strategy is off or the action is not one of its."""
    if sp[on] == 0.0:
        return -1
    k = action - sp[first]
    return int(k) if 0 <= k < count else -1


@njit(cache=True, inline="always")
def _strategy_action(
    n: int, action: int, t1: int, locked: bool, prices: np.ndarray, fee: float, slip: float,
    books: StrategyArg, acct: np.ndarray,
) -> None:  # fmt: skip
    """Fill a strategy action at bar ``t1``'s open (one compiled call, on the steps that have
    one): the first strategy whose actions include it takes it."""
    sp, ss = books[SB_SP], books[SB_SS]
    k = _own_action(action, sp, SP_ST_ON, SP_ST_ACT, 2)
    if k >= 0:
        price = _pair_price(prices, t1, sp, SP_ST_PAIR, OPEN)
        staking_action(n, k, t1, locked, price, fee, slip, sp, ss, acct)
        return
    k = _own_action(action, sp, SP_LD_ON, SP_LD_ACT, 2)
    if k >= 0:
        price = _pair_price(prices, t1, sp, SP_LD_PAIR, OPEN)
        lending_action(n, k, locked, price, fee, slip, sp, ss, acct)
        return
    k = _own_action(action, sp, SP_LP_ON, SP_LP_ACT, 3)
    if k >= 0:
        price = _pair_price(prices, t1, sp, SP_LP_PAIR, OPEN)
        liquidity_action(n, k, locked, price, fee, slip, sp, ss, acct)
        return
    k = _own_action(action, sp, SP_AR_ON, SP_AR_ACT, math.inf)
    if k >= 0 and sp[SP_AR_RULE] == 0.0:
        arbitrage_action(n, k, t1, locked, prices, books[SB_PREM], slip, sp, ss, books[SB_INV],
                         books[SB_HELD], books[SB_ETA], acct)  # fmt: skip


@njit(cache=True, inline="always")
def strategies_act(
    n: int, action: int, t1: int, locked: bool, prices: np.ndarray, fee: float, slip: float,
    books: StrategyArg, acct: np.ndarray,
) -> None:  # fmt: skip
    """Step 1, at bar ``t1``'s open: finished unbonding back to cash, the agent's strategy
    action, then the arbitrage book's arrivals, rule-mode trades and rebalancing."""
    sp, ss = books[SB_SP], books[SB_SS]
    if sp[SP_ST_ON] != 0.0 and ss[n, ST_UNBOND_QTY] > 0.0 and t1 >= ss[n, ST_UNBOND_AT]:
        price = _pair_price(prices, t1, sp, SP_ST_PAIR, OPEN)
        staking_release(n, price, fee, slip, ss, acct)
    if action > sp[SP_N_SPOT]:
        _strategy_action(n, action, t1, locked, prices, fee, slip, books, acct)
    if sp[SP_AR_ON] != 0.0:
        arbitrage_at_open(n, t1, locked, prices, books[SB_PREM], books[SB_ARB_BAR], slip, sp, ss,
                          books[SB_INV], books[SB_HELD], books[SB_ETA], acct)  # fmt: skip


@njit(cache=True, inline="always")
def strategies_accrue(n: int, t1: int, prices: np.ndarray, books: StrategyArg) -> None:
    """Step 2, over bar ``t1``: staking rewards (and slashing), lending interest, LP fees, for
    the books that hold something."""
    sp, ss = books[SB_SP], books[SB_SS]
    if sp[SP_ST_ON] != 0.0 and (ss[n, ST_QTY] > 0.0 or sp[SP_ST_SLASH_P] > 0.0):
        staking_accrue(n, sp, ss, books[SB_RAND])
    if sp[SP_LD_ON] != 0.0 and ss[n, LD_BAL] > 0.0:
        lending_accrue(n, t1, sp[SP_BAR_YEARS], books[SB_SER], ss)
    if sp[SP_LP_ON] != 0.0 and ss[n, LP_L] > 0.0:
        p = int(sp[SP_LP_PAIR])
        low, high = prices[t1, p, LOW], prices[t1, p, HIGH]
        liquidity_accrue(n, t1, low, high, sp[SP_LP_FEE_TIER], books[SB_SER], ss)


@njit(cache=True, inline="always")
def _strategy_step_one(
    n: int, active: np.ndarray, actions: np.ndarray, market: MarketArg, spot: SpotArg,
    books: StrategyArg, obs: np.ndarray,
) -> None:  # fmt: skip
    """One env's strategy step (module docstring)."""
    if not active[n]:
        return
    prices, acct, params, day = market[M_PRICES], spot[B_ACCT], spot[B_PARAMS], market[M_DAY]
    t = spot[B_CURSOR][n, T_NOW]
    t1 = t + 1
    fee, slip = params[P_FEE], params[P_SLIPPAGE]
    locked = acct[n, LOCKED] != 0.0 and day[t1] == day[t]  # a new UTC day lifts the lock
    strategies_act(n, actions[n], t1, locked, prices, fee, slip, books, acct)
    strategies_accrue(n, t1, prices, books)
    value = strategies_mark(n, t1, prices, books)
    if t1 >= spot[B_CURSOR][n, T_END] and params[P_CLOSE_AT_END] != 0.0 and value != 0.0:
        strategies_liquidate(n, t1, prices, fee, slip, books, acct)
        value = 0.0
    acct[n, STRATEGY_VALUE] = value
    write_strategy_obs(n, t1, prices, books, acct, obs)


@njit(cache=True, inline="always")
def _prefetch_bar(n: int, cursor: np.ndarray, market: MarketArg, books: StrategyArg) -> None:
    """The spot and strategy tables' rows env ``n + PREFETCH_DISTANCE`` reads at its next bar.
    Not the venue premiums (``prem``): only events (funding, closing, a trade) read them, and a
    prefetch of their row for every env cost memory traffic at large N (``arb_bar`` holds what
    the step reads of them every bar)."""
    t1 = prefetch_next_bar(n, cursor, market)
    if t1 >= 0:
        prefetch_rows(books[SB_SER], t1, 1)
        prefetch_rows(books[SB_ARB_BAR], t1, 1)


def _step_all(
    active: np.ndarray, actions: np.ndarray, market: MarketArg, spot: SpotArg,
    out: OutputsArg, books: StrategyArg,
) -> None:  # fmt: skip
    for n in prange(actions.shape[0]):
        _prefetch_bar(n, spot[B_CURSOR], market, books)
        _strategy_step_one(n, active, actions, market, spot, books, out[O_OBS])
        spot_step_one(n, active, actions, market, spot, out)


step_all, step_all_serial = serial_and_parallel(
    _step_all,
    "step_all",
    """Advance every active env one bar: for each env its strategy books (this module), then
its spot step (``nexlify.market.kernels.spot_step_one``), in one pass so both read the env's bar
while it is in cache; the table rows of the env ``PREFETCH_DISTANCE`` ahead are prefetched
(:mod:`nexlify.market.prefetch`).""",
    **NO_REFCOUNT,
)


@njit(cache=True, **NO_REFCOUNT)
def reset_strategies(
    mask: np.ndarray, market: MarketArg, spot: SpotArg, books: StrategyArg, obs: np.ndarray
) -> None:
    """Empty the books of every env in ``mask`` (after the spot reset) and write their
    observation at the env's first bar."""
    for n in range(mask.shape[0]):
        if mask[n]:
            strategies_reset(n, books)
            spot[B_ACCT][n, STRATEGY_VALUE] = 0.0
            t = spot[B_CURSOR][n, T_NOW]
            write_strategy_obs(n, t, market[M_PRICES], books, spot[B_ACCT], obs)


@njit(cache=True, **NO_REFCOUNT)
def write_all_strategy_obs(
    market: MarketArg, spot: SpotArg, books: StrategyArg, obs: np.ndarray
) -> None:
    """Rewrite every env's strategy observation at its current bar (after new data)."""
    for n in range(obs.shape[0]):
        write_strategy_obs(n, spot[B_CURSOR][n, T_NOW], market[M_PRICES], books, spot[B_ACCT], obs)
