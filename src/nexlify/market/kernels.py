"""Compiled step and reset kernels of the vectorized market (numba, one loop over envs).

Market semantics (``DESIGN.md``), per env, for one decision taken after bar ``t`` closes:

1. If bar ``t+1`` starts a new UTC day, the day's opening equity is the equity at ``t``'s close
   and the daily-loss lock is lifted.
2. At bar ``t+1``'s open: a sell closes that pair's position once it has been held
   ``min_hold_bars`` bars (0 by default: at once; the risk rules of 3 close it at any age); then
   a buy opens one if the pair is flat, the daily-loss lock is off and fewer than
   ``max_concurrent_trades`` positions are open.
   Size = ``max_position`` x equity at ``t``'s close, or the capped half-Kelly fraction of the
   episode's recent closed trades. Every fill pays the taker fee and adverse slippage.
3. Inside bar ``t+1``, every open position is checked against the bar's low and high: the stop
   level is the higher of the stop-loss (entry x (1 - stop_loss)) and the trailing stop (highest
   high *before* this bar x (1 - trailing_stop)); if the low touches it the position exits there,
   or at the open when the bar gapped through it. Otherwise, if the high reaches the take-profit
   it exits there (or at a better open). Both touched in one bar: the stop wins (we cannot know
   the order inside a bar, so we assume the worse one). The highest high is updated afterwards.
4. Equity is marked at bar ``t+1``'s close. Reward = log(equity_t+1 / equity_t). Equity below
   ``daily_loss_limit`` under the day's opening equity locks new entries for the rest of the day.
5. Equity below ``ruin_equity`` x starting equity: ``terminated``. Reaching the window's last bar:
   ``truncated``. Either way, open positions are liquidated at that close when ``close_at_end``.

Strategies beyond spot (staking, lending, liquidity, arbitrage) run in their own kernel just
before this one in the same step (:mod:`nexlify.market.strategies.kernel`): it fills their
actions at bar ``t+1``'s open, accrues over the bar and leaves the books' value at the close in
``acct[STRATEGY_VALUE]``, which step 4 adds to equity (0 with spot only). Actions past the
``params[P_SPOT_ACTIONS]`` spot ones belong to the strategies and are ignored here.

Arrays use named columns (the constants below) so the kernel reads like the rules above; they
reach the kernel grouped (:mod:`nexlify.market.kernel_state`): the market's tables, the spot books
and the step's outputs. ``step_envs`` and ``step_envs_serial`` are one loop compiled with and
without numba's threads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

from nexlify.data.market_data import CLOSE, HIGH, LOW, OPEN
from nexlify.market.columns import (  # per-env account columns: acct[N, N_ACCT] (float64)
    CASH,
    DAY_START_EQ,
    DOWN_SQ,
    EQUITY,
    EXPOSED_STEPS,
    FEES,
    GROSS_LOSS,
    GROSS_PROFIT,
    LOCKED,
    LOG_RETURN,
    MAX_DD,
    N_BLOCKED,
    N_LIMIT_HITS,
    N_OPEN,
    N_TRADES,
    N_WINS,
    PEAK_EQ,
    RET_SQ,
    RET_SUM,
    START_EQ,
    STEPS,
    STRATEGY_VALUE,
)
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
    MarketArg,
    OutputsArg,
    SpotArg,
    serial_and_parallel,
)
from nexlify.market.obs_layout import PAIR_STATE
from nexlify.market.prefetch import PREFETCH_DISTANCE, prefetch_rows

# --- per-position columns: pos[N, P, N_POS] (float64) -----------------------------------------
QTY, ENTRY_PRICE, ENTRY_COST, ENTRY_BAR, HIGH_WATER = 0, 1, 2, 3, 4
N_POS = 5

# --- cursor columns: cursor[N, 3] (int64) -----------------------------------------------------
T_NOW, T_END, T_START = 0, 1, 2

# --- trade log columns: trade_log[N, M, N_TRADE] (float64) ------------------------------------
TL_PAIR, TL_ENTRY_BAR, TL_EXIT_BAR, TL_ENTRY_PRICE, TL_EXIT_PRICE = 0, 1, 2, 3, 4
TL_QTY, TL_PNL, TL_RETURN, TL_REASON, TL_FEES = 5, 6, 7, 8, 9
N_TRADE = 10

# --- exit reasons ------------------------------------------------------------------------------
REASON_SIGNAL, REASON_STOP, REASON_TAKE, REASON_TRAIL, REASON_LIMIT, REASON_END = 0, 1, 2, 3, 4, 5
REASON_NAMES = ("signal", "stop", "take", "trail", "limit", "end")

# --- parameter vector: params[N_PARAMS] (float64) ---------------------------------------------
P_STOP_LOSS, P_TAKE_PROFIT, P_TRAILING, P_MAX_POSITION, P_MAX_CONCURRENT = 0, 1, 2, 3, 4
P_DAILY_LIMIT, P_CLOSE_ON_LIMIT, P_USE_KELLY, P_KELLY_FRACTION, P_KELLY_MIN_TRADES = 5, 6, 7, 8, 9
P_KELLY_MIN_FRACTION, P_FEE, P_SLIPPAGE, P_INITIAL, P_RUIN, P_CLOSE_AT_END = 10, 11, 12, 13, 14, 15
P_RECORD, P_SPOT_ACTIONS, P_TURNOVER_PENALTY, P_MIN_HOLD = 16, 17, 18, 19
N_PARAMS = 20

# --- observation layout -----------------------------------------------------------------------
OBS_CLIP = 5.0


NO_REFCOUNT: dict[str, Any] = {"_nrt": False}
"""numba option: compile without reference counting. numba otherwise adds an atomic increment
and decrement of every array argument's reference count at each call (numba issue #2345), about
a third of the spot step at N = 256. The step kernels allocate nothing and only index arrays
the env owns, so they need none; a function built with it must not create arrays (numba refuses
to compile one that does)."""


@njit(cache=True, inline="always")
def _kelly_size(hist: np.ndarray, n_closed: float, params: np.ndarray) -> float:
    """Position fraction of equity for the next entry (see RiskConfig for the fields)."""
    cap = params[P_MAX_POSITION]
    if params[P_USE_KELLY] == 0.0 or n_closed < params[P_KELLY_MIN_TRADES]:
        return cap
    k = hist.shape[0]
    count = int(min(n_closed, k))
    wins = 0
    win_sum = 0.0
    loss_sum = 0.0
    for i in range(count):
        r = hist[i]
        if r > 0.0:
            wins += 1
            win_sum += r
        else:
            loss_sum -= r
    if wins == 0:
        frac = 0.0
    elif wins == count or loss_sum == 0.0:
        frac = 1.0
    else:
        win_rate = wins / count
        payoff = (win_sum / wins) / (loss_sum / (count - wins))
        frac = win_rate - (1.0 - win_rate) / payoff
    frac *= params[P_KELLY_FRACTION]
    return min(max(frac, params[P_KELLY_MIN_FRACTION]), cap)


@njit(cache=True, inline="always")
def _close_position(n: int, p: int, price: float, bar: int, reason: int, books: SpotArg) -> None:
    """Sell the whole position of pair ``p`` at ``price`` (before slippage) and book the trade."""
    acct, pos, params = books[B_ACCT], books[B_POS], books[B_PARAMS]
    fill = price * (1.0 - params[P_SLIPPAGE])
    qty = pos[n, p, QTY]
    value = qty * fill
    fee = value * params[P_FEE]
    acct[n, CASH] += value - fee
    acct[n, FEES] += fee
    entry_cost = pos[n, p, ENTRY_COST]
    pnl = value - fee - entry_cost
    ret = pnl / entry_cost
    kelly_hist = books[B_KELLY_HIST]
    k = kelly_hist.shape[1]
    kelly_hist[n, int(acct[n, N_TRADES]) % k] = ret
    acct[n, N_TRADES] += 1.0
    if pnl > 0.0:
        acct[n, N_WINS] += 1.0
        acct[n, GROSS_PROFIT] += pnl
    else:
        acct[n, GROSS_LOSS] -= pnl
    if params[P_RECORD] != 0.0:
        _log_trade(n, p, fill, bar, reason, pnl, ret, fee, books)
    pos[n, p, QTY] = 0.0
    acct[n, N_OPEN] -= 1.0


@njit(cache=True, inline="always")
def _log_trade(
    n: int, p: int, fill: float, bar: int, reason: int, pnl: float, ret: float, fee: float,
    books: SpotArg,
) -> None:  # fmt: skip
    """Write the trade that closes pair ``p``'s position into the log (record mode)."""
    pos, trade_log, trade_count = books[B_POS], books[B_TRADE_LOG], books[B_TRADE_COUNT]
    m = trade_count[n]
    if m < trade_log.shape[1]:
        qty = pos[n, p, QTY]
        row = trade_log[n, m]
        row[TL_PAIR] = p
        row[TL_ENTRY_BAR] = pos[n, p, ENTRY_BAR]
        row[TL_EXIT_BAR] = bar
        row[TL_ENTRY_PRICE] = pos[n, p, ENTRY_PRICE]
        row[TL_EXIT_PRICE] = fill
        row[TL_QTY] = qty
        row[TL_PNL] = pnl
        row[TL_RETURN] = ret
        row[TL_REASON] = reason
        row[TL_FEES] = fee + pos[n, p, ENTRY_COST] - qty * pos[n, p, ENTRY_PRICE]
    trade_count[n] = m + 1


@njit(cache=True, inline="always")
def _open_position(n: int, p: int, price: float, bar: int, fraction: float, books: SpotArg) -> bool:
    """Buy ``fraction`` of current equity of pair ``p`` at ``price`` (before slippage)."""
    acct, pos, params = books[B_ACCT], books[B_POS], books[B_PARAMS]
    fee_rate = params[P_FEE]
    notional = min(fraction * acct[n, EQUITY], acct[n, CASH] / (1.0 + fee_rate))
    if notional <= 0.0:
        return False
    fill = price * (1.0 + params[P_SLIPPAGE])
    fee = notional * fee_rate
    acct[n, CASH] -= notional + fee
    acct[n, FEES] += fee
    pos[n, p, QTY] = notional / fill
    pos[n, p, ENTRY_PRICE] = fill
    pos[n, p, ENTRY_COST] = notional + fee
    pos[n, p, ENTRY_BAR] = bar
    pos[n, p, HIGH_WATER] = fill
    acct[n, N_OPEN] += 1.0
    return True


@njit(cache=True, inline="always")
def _write_obs(n: int, market: MarketArg, books: SpotArg, out: np.ndarray) -> None:
    """Observation of env ``n`` at its current bar: market features, then pair and account state."""
    t = books[B_CURSOR][n, T_NOW]
    _write_obs_row(n, t, market[M_WINDOW], market[M_FEATURES], market[M_PRICES], books[B_ACCT],
                   books[B_POS], books[B_PARAMS], out)  # fmt: skip


@njit(cache=True)
def _write_obs_row(
    n: int, t: int, window: int, features: np.ndarray, prices: np.ndarray, acct: np.ndarray,
    pos: np.ndarray, params: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """``_write_obs`` at bar ``t``: a compiled call of its own (the step's cold part) that is
    passed only the arrays it reads, not whole structures (every array passed costs the call)."""
    n_pairs = features.shape[1]
    n_feat = features.shape[2]
    k = 0
    for w in range(t - window + 1, t + 1):
        for p in range(n_pairs):
            for f in range(n_feat):
                out[k] = features[w, p, f]
                k += 1
    for p in range(n_pairs):
        if pos[n, p, QTY] > 0.0:
            upnl = (prices[t, p, CLOSE] / pos[n, p, ENTRY_PRICE] - 1.0) * 10.0
            held = (t - pos[n, p, ENTRY_BAR]) / 168.0
            out[k] = 1.0
            out[k + 1] = min(max(upnl, -OBS_CLIP), OBS_CLIP)
            out[k + 2] = min(held, OBS_CLIP)
        else:
            out[k] = 0.0
            out[k + 1] = 0.0
            out[k + 2] = 0.0
        k += PAIR_STATE
    equity = acct[n, EQUITY]
    out[k] = acct[n, CASH] / equity
    out[k + 1] = min(max(acct[n, LOG_RETURN] * 10.0, -OBS_CLIP), OBS_CLIP)
    out[k + 2] = acct[n, LOCKED]
    out[k + 3] = acct[n, N_OPEN] / params[P_MAX_CONCURRENT]


@njit(cache=True)
def reset_envs(
    mask: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    market: MarketArg,
    books: SpotArg,
    obs: np.ndarray,
) -> None:
    """Start a new episode at bar ``starts[n]`` in every env ``n`` where ``mask`` is set (one
    thread: resets are rare)."""
    cursor, acct, params = books[B_CURSOR], books[B_ACCT], books[B_PARAMS]
    initial = params[P_INITIAL]
    for n in range(mask.shape[0]):
        if not mask[n]:
            continue
        cursor[n, T_NOW] = starts[n]
        cursor[n, T_START] = starts[n]
        cursor[n, T_END] = ends[n]
        acct[n, :] = 0.0
        acct[n, CASH] = initial
        acct[n, EQUITY] = initial
        acct[n, DAY_START_EQ] = initial
        acct[n, START_EQ] = initial
        acct[n, PEAK_EQ] = initial
        books[B_POS][n, :, :] = 0.0
        books[B_KELLY_HIST][n, :] = 0.0
        books[B_TRADE_COUNT][n] = 0
        if params[P_RECORD] != 0.0:
            books[B_EQUITY_CURVE][n, :] = np.nan
            books[B_EQUITY_CURVE][n, 0] = initial
        _write_obs(n, market, books, obs[n])


# --- the step of one env, in the order of the module docstring --------------------------------


@njit(cache=True, inline="always")
def _start_day(n: int, t: int, t1: int, market: MarketArg, books: SpotArg) -> None:
    """Rule 1: a new UTC day resets the daily-loss reference and lifts the lock."""
    day, acct = market[M_DAY], books[B_ACCT]
    if day[t1] != day[t]:
        acct[n, DAY_START_EQ] = acct[n, EQUITY]
        acct[n, LOCKED] = 0.0


@njit(cache=True, inline="always")
def _close_all(
    n: int, t1: int, column: int, reason: int, prices: np.ndarray, books: SpotArg
) -> None:
    """Close every open position of env ``n`` at bar ``t1``'s price ``column``."""
    pos = books[B_POS]
    for p in range(prices.shape[1]):
        if pos[n, p, QTY] > 0.0:
            _close_position(n, p, prices[t1, p, column], t1, reason, books)


@njit(cache=True, inline="always")
def _buy(n: int, p: int, t1: int, prices: np.ndarray, books: SpotArg) -> None:
    """Open a position in pair ``p`` unless it is held, the daily-loss lock is on or the
    concurrency cap is reached (a blocked entry); sized by ``_kelly_size``."""
    acct, params = books[B_ACCT], books[B_PARAMS]
    if books[B_POS][n, p, QTY] != 0.0:
        return
    if acct[n, LOCKED] != 0.0 or acct[n, N_OPEN] >= params[P_MAX_CONCURRENT]:
        acct[n, N_BLOCKED] += 1.0
    else:
        fraction = _kelly_size(books[B_KELLY_HIST][n], acct[n, N_TRADES], params)
        _open_position(n, p, prices[t1, p, OPEN], t1, fraction, books)


@njit(cache=True, inline="always")
def _fill_orders(n: int, a: int, t1: int, prices: np.ndarray, books: SpotArg) -> None:
    """Rule 2: at bar ``t1``'s open, liquidation on the daily-loss lock (when configured) and
    the sell (of a position held ``min_hold_bars`` or more), then the buy; actions past the
    spot ones belong to the strategy kernel."""
    acct, params = books[B_ACCT], books[B_PARAMS]
    if acct[n, LOCKED] != 0.0 and params[P_CLOSE_ON_LIMIT] != 0.0:
        _close_all(n, t1, OPEN, REASON_LIMIT, prices, books)
    if a > params[P_SPOT_ACTIONS]:
        pass  # a strategy action, filled by the strategy kernel
    elif a > 0 and a % 2 == 0:
        p = (a - 2) // 2
        pos = books[B_POS]
        if pos[n, p, QTY] > 0.0 and t1 - pos[n, p, ENTRY_BAR] >= params[P_MIN_HOLD]:
            _close_position(n, p, prices[t1, p, OPEN], t1, REASON_SIGNAL, books)
    elif a % 2 == 1:
        _buy(n, (a - 1) // 2, t1, prices, books)
    if acct[n, N_OPEN] > 0.0:
        acct[n, EXPOSED_STEPS] += 1.0


@njit(cache=True, inline="always")
def _check_stops(n: int, t1: int, prices: np.ndarray, books: SpotArg) -> None:
    """Rule 3: stop-loss / trailing stop, then take-profit, of every position inside bar ``t1``;
    the highest high moves up on the positions that stay open."""
    pos, params = books[B_POS], books[B_PARAMS]
    for p in range(prices.shape[1]):
        if pos[n, p, QTY] == 0.0:
            continue
        bar_open = prices[t1, p, OPEN]
        entry = pos[n, p, ENTRY_PRICE]
        stop_level = -1.0
        reason = REASON_STOP
        if params[P_STOP_LOSS] > 0.0:
            stop_level = entry * (1.0 - params[P_STOP_LOSS])
        if params[P_TRAILING] > 0.0:
            trail_level = pos[n, p, HIGH_WATER] * (1.0 - params[P_TRAILING])
            if trail_level > stop_level:
                stop_level = trail_level
                reason = REASON_TRAIL
        take_level = entry * (1.0 + params[P_TAKE_PROFIT])
        if stop_level > 0.0 and prices[t1, p, LOW] <= stop_level:
            _close_position(n, p, min(bar_open, stop_level), t1, reason, books)
        elif params[P_TAKE_PROFIT] > 0.0 and prices[t1, p, HIGH] >= take_level:
            _close_position(n, p, max(bar_open, take_level), t1, REASON_TAKE, books)
        else:
            pos[n, p, HIGH_WATER] = max(pos[n, p, HIGH_WATER], prices[t1, p, HIGH])


@njit(cache=True, inline="always")
def _marked_equity(n: int, t1: int, prices: np.ndarray, books: SpotArg) -> float:
    """Cash, strategy books (marked by their kernel) and positions at bar ``t1``'s close."""
    pos = books[B_POS]
    equity = books[B_ACCT][n, CASH] + books[B_ACCT][n, STRATEGY_VALUE]
    for p in range(prices.shape[1]):
        equity += pos[n, p, QTY] * prices[t1, p, CLOSE]
    return equity


@njit(cache=True, inline="always")
def _settle_close(
    n: int, t1: int, equity: float, ruined: bool, at_end: bool, prices: np.ndarray,
    books: SpotArg,
) -> float:  # fmt: skip
    """Rule 4 after the mark (``equity``): at an episode's end positions are liquidated at the
    close when configured; equity under the daily-loss limit locks new entries. Returns the
    equity at bar ``t1``'s close."""
    acct, params = books[B_ACCT], books[B_PARAMS]
    if (ruined or at_end) and params[P_CLOSE_AT_END] != 0.0 and acct[n, N_OPEN] > 0.0:
        _close_all(n, t1, CLOSE, REASON_END, prices, books)
        equity = _marked_equity(n, t1, prices, books)
    acct[n, EQUITY] = equity
    if acct[n, LOCKED] == 0.0 and equity < acct[n, DAY_START_EQ] * (1.0 - params[P_DAILY_LIMIT]):
        acct[n, LOCKED] = 1.0
        acct[n, N_LIMIT_HITS] += 1.0
    return equity


@njit(cache=True, inline="always")
def _record_step(n: int, t1: int, equity: float, equity_before: float, books: SpotArg) -> float:
    """Rule 5's statistics: the reward (change of log equity), running return moments,
    drawdown and the equity curve (record mode). Returns the reward."""
    acct = books[B_ACCT]
    reward = math.log(equity / equity_before)
    acct[n, LOG_RETURN] += reward
    ret = equity / equity_before - 1.0
    acct[n, RET_SUM] += ret
    acct[n, RET_SQ] += ret * ret
    if ret < 0.0:
        acct[n, DOWN_SQ] += ret * ret
    acct[n, STEPS] += 1.0
    if equity > acct[n, PEAK_EQ]:
        acct[n, PEAK_EQ] = equity
    drawdown = 1.0 - equity / acct[n, PEAK_EQ]
    if drawdown > acct[n, MAX_DD]:
        acct[n, MAX_DD] = drawdown
    step = t1 - books[B_CURSOR][n, T_START]
    curve = books[B_EQUITY_CURVE]
    if books[B_PARAMS][P_RECORD] != 0.0 and step < curve.shape[1]:  # open-ended runs outgrow it
        curve[n, step] = equity
    return reward


@njit(cache=True, inline="always")
def spot_step_one(
    n: int, active: np.ndarray, actions: np.ndarray, market: MarketArg, books: SpotArg,
    out: OutputsArg,
) -> None:  # fmt: skip
    """Advance env ``n`` by one bar (see the module docstring for the rules, in order)."""
    if not active[n]:
        out[O_REWARDS][n] = 0.0
        out[O_TERMINATED][n] = False
        out[O_TRUNCATED][n] = False
        return
    prices, acct, cursor = market[M_PRICES], books[B_ACCT], books[B_CURSOR]
    t = cursor[n, T_NOW]
    t1 = t + 1
    equity_before = acct[n, EQUITY]
    fees_before = acct[n, FEES]
    _start_day(n, t, t1, market, books)
    _fill_orders(n, actions[n], t1, prices, books)
    _check_stops(n, t1, prices, books)
    equity = _marked_equity(n, t1, prices, books)  # rule 4; ruin is judged on it
    ruined = equity < books[B_PARAMS][P_RUIN] * acct[n, START_EQ]
    at_end = t1 >= cursor[n, T_END]
    equity = _settle_close(n, t1, equity, ruined, at_end, prices, books)
    reward = _record_step(n, t1, equity, equity_before, books)
    penalty = books[B_PARAMS][P_TURNOVER_PENALTY]
    if penalty != 0.0:  # a cost in the reward only: equity and every statistic are unaffected
        reward -= penalty * (acct[n, FEES] - fees_before) / equity_before
    out[O_REWARDS][n] = reward
    out[O_TERMINATED][n] = ruined
    out[O_TRUNCATED][n] = at_end and not ruined
    cursor[n, T_NOW] = t1
    _write_obs(n, market, books, out[O_OBS][n])


@njit(cache=True, inline="always")
def prefetch_next_bar(n: int, cursor: np.ndarray, market: MarketArg) -> int:
    """Ask for the table rows env ``n + PREFETCH_DISTANCE`` reads at its next bar
    (:mod:`nexlify.market.prefetch`); returns that bar (-1 past the last env), for the callers
    that prefetch more tables at it."""
    m = n + PREFETCH_DISTANCE
    if m >= cursor.shape[0]:
        return -1
    t1 = cursor[m, T_NOW] + 1
    window = market[M_WINDOW]
    prefetch_rows(market[M_FEATURES], t1 - window + 1, window)
    prefetch_rows(market[M_PRICES], t1, 1)
    prefetch_rows(market[M_DAY], t1, 1)
    return t1


def _step_envs(
    active: np.ndarray, actions: np.ndarray, market: MarketArg, books: SpotArg,
    out: OutputsArg,
) -> None:  # fmt: skip
    for n in prange(actions.shape[0]):
        prefetch_next_bar(n, books[B_CURSOR], market)
        spot_step_one(n, active, actions, market, books, out)


step_envs, step_envs_serial = serial_and_parallel(
    _step_envs,
    "step_envs",
    "Advance every active env (``active``) by one bar on ``actions``, writing ``out``.",
    **NO_REFCOUNT,
)
