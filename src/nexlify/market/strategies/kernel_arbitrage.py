"""Cross-exchange arbitrage book of one env (compiled): inventory on every venue, trades,
transfers.

The book is funded with an even split over pairs and venues, half quote and half base. A trade
buys a pair on its cheapest venue and sells it on its dearest at bar ``t+1``'s open when the
spread beats both venues' fees, slippage on both legs and ``min_edge`` (every bar in rule mode,
on the agent's ``arbitrage PAIR`` action otherwise), sized by the inventory there. Inventory
drifting below ``rebalance_threshold`` of its even split is sent from the richest venue
(withdrawal fee, arrives ``transfer`` bars later).

What every env reads at a bar (the open's best edge, the close's spread, the venues' close
prices) depends only on the bar: ``arbitrage_bar_table`` works it out once per market, so an
env without a trade reads one row per pair instead of scanning the venues. Its own inventory
changes only at events (funding, trades, transfers, arrivals, closing), so the mark at each
close reads ``held`` (base and quote per pair and venue, in transit included; half of ``inv``),
which ``arb_refresh_held`` brings up to date after every event: at N = 4096 the step is bound by
memory traffic, and ``inv``'s 24 values per env were read every bar for the 12 sums of ``held``.
The mark adds exactly the same numbers in the same order as summing ``inv`` did.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nexlify.data.market_data import CLOSE, OPEN
from nexlify.market.columns import CASH, FEES
from nexlify.market.kernels import NO_REFCOUNT
from nexlify.market.strategies.columns import (
    AB_CLOSE,
    AB_EDGE,
    AB_SPREAD_OBS,
    AR_FUNDED,
    AR_PROFIT,
    AR_TRADES,
    AR_TRANSFERS,
    AR_WFEES,
    FLOW_IN,
    HELD_BASE,
    HELD_QUOTE,
    INV_BASE,
    INV_BASE_TRANSIT,
    INV_QUOTE,
    INV_QUOTE_TRANSIT,
    N_AB,
    N_INV,
    OBS_CLIP,
    PREM_CLOSE,
    PREM_OPEN,
    S_ARBITRAGE,
    SP_AR_CAP,
    SP_AR_DELAY,
    SP_AR_MAX_TRADE,
    SP_AR_MIN_EDGE,
    SP_AR_N_VENUES,
    SP_AR_REBAL,
    SP_AR_RULE,
    SP_AR_SIZE,
    SP_AR_VFEE,
    SP_AR_WFEE_B,
    SP_AR_WFEE_Q,
    VALUE,
)
from nexlify.market.strategies.kernel_book import allocation, blocked, collect_cash, sell_asset


@njit(cache=True, inline="always")
def _venue_price(base_price: float, premium: float) -> float:
    return base_price if math.isnan(premium) else base_price * (1.0 + premium)


@njit(cache=True)
def arbitrage_bar_table(
    prices: np.ndarray, prem: np.ndarray, sp: np.ndarray, slip: float
) -> np.ndarray:
    """arb_bar[T, P, N_AB + V]: per bar and pair, the best edge at the open after fees and
    slippage (-1 when fewer than two venues quote), the observed close spread and each venue's
    close price (``columns``)."""
    T, P, V = prem.shape[0], prem.shape[1], prem.shape[2]
    out = np.zeros((T, P, N_AB + V))
    for t in range(T):
        for p in range(P):
            best_buy, best_sell = math.inf, 0.0
            lo, hi = 0.0, 0.0
            for v in range(V):
                premium = prem[t, p, v, PREM_OPEN]
                if not math.isnan(premium):
                    fee = sp[SP_AR_VFEE + v]
                    best_buy = min(best_buy, (1.0 + premium) * (1.0 + slip) * (1.0 + fee))
                    best_sell = max(best_sell, (1.0 + premium) * (1.0 - slip) * (1.0 - fee))
                premium = prem[t, p, v, PREM_CLOSE]
                if not math.isnan(premium):
                    lo = min(lo, premium)
                    hi = max(hi, premium)
                out[t, p, AB_CLOSE + v] = _venue_price(prices[t, p, CLOSE], premium)
            out[t, p, AB_EDGE] = best_sell / best_buy - 1.0 if best_buy < math.inf else -1.0
            out[t, p, AB_SPREAD_OBS] = min((hi - lo) * 1000.0, OBS_CLIP)  # 0.1% reads 1.0
    return out


@njit(cache=True, **NO_REFCOUNT)
def arb_refresh_held(n: int, inv: np.ndarray, held: np.ndarray) -> None:
    """``held`` of env ``n`` from its inventory (after any event that changed ``inv``)."""
    for p in range(inv.shape[1]):
        for v in range(inv.shape[2]):
            held[n, p, v, HELD_BASE] = inv[n, p, v, INV_BASE] + inv[n, p, v, INV_BASE_TRANSIT]
            held[n, p, v, HELD_QUOTE] = inv[n, p, v, INV_QUOTE] + inv[n, p, v, INV_QUOTE_TRANSIT]


@njit(cache=True, **NO_REFCOUNT)
def arb_fund(
    n: int,
    t1: int,
    locked: bool,
    prices: np.ndarray,
    prem: np.ndarray,
    slip: float,
    quiet: bool,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Fund the book: an even split over pairs and venues, half quote and half base.

    A refusal counts as a blocked entry unless ``quiet`` (rule mode retries every bar)."""
    n_pairs, n_venues = inv.shape[1], int(sp[SP_AR_N_VENUES])
    s = S_ARBITRAGE
    refused = locked or ss[n, AR_FUNDED] != 0.0
    ok, amount = allocation(n, s, sp[SP_AR_SIZE], sp[SP_AR_CAP], 0.0, 0.0, refused, sp, ss, acct)
    if not ok:
        if not quiet:
            blocked(n, acct)
        return
    part = amount / (2.0 * n_pairs * n_venues)
    acct[n, CASH] -= amount
    ss[n, FLOW_IN + s] += amount
    for p in range(n_pairs):
        for v in range(n_venues):
            fee = sp[SP_AR_VFEE + v]
            price = _venue_price(prices[t1, p, OPEN], prem[t1, p, v, PREM_OPEN])
            notional = part / (1.0 + fee)
            acct[n, FEES] += notional * fee
            inv[n, p, v, INV_QUOTE] = part
            inv[n, p, v, INV_BASE] = notional / (price * (1.0 + slip))
    ss[n, AR_FUNDED] = 1.0
    ss[n, VALUE + s] += amount


@njit(cache=True, **NO_REFCOUNT)
def arb_close(
    n: int,
    t1: int,
    col: int,
    prices: np.ndarray,
    prem: np.ndarray,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Sell every venue's base at its price of column ``col`` (open or close), collect quote."""
    if ss[n, AR_FUNDED] == 0.0:
        return
    n_pairs, n_venues = inv.shape[1], int(sp[SP_AR_N_VENUES])
    prem_col = PREM_OPEN if col == OPEN else PREM_CLOSE
    for p in range(n_pairs):
        for v in range(n_venues):
            price = _venue_price(prices[t1, p, col], prem[t1, p, v, prem_col])
            base = inv[n, p, v, INV_BASE] + inv[n, p, v, INV_BASE_TRANSIT]
            quote = inv[n, p, v, INV_QUOTE] + inv[n, p, v, INV_QUOTE_TRANSIT]
            sell_asset(n, S_ARBITRAGE, base, price, sp[SP_AR_VFEE + v], slip, acct, ss)
            collect_cash(n, S_ARBITRAGE, quote, acct, ss)
            for c in range(N_INV):
                inv[n, p, v, c] = 0.0
            held[n, p, v, HELD_BASE] = 0.0
            held[n, p, v, HELD_QUOTE] = 0.0
        eta[n, p] = -1.0
    ss[n, AR_FUNDED] = 0.0


@njit(cache=True, **NO_REFCOUNT)
def arb_trade(
    n: int,
    p: int,
    t1: int,
    prices: np.ndarray,
    prem: np.ndarray,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Buy pair ``p`` on its cheapest venue and sell it on its dearest when the spread beats
    both fees, both slippages and ``min_edge``; the size is limited by the inventory there."""
    n_venues = int(sp[SP_AR_N_VENUES])
    base_price = prices[t1, p, OPEN]
    buy_v, sell_v = -1, -1
    best_buy, best_sell = math.inf, 0.0
    for v in range(n_venues):
        premium = prem[t1, p, v, PREM_OPEN]
        if math.isnan(premium):
            continue  # the venue has no bar here: no quote to trade against
        price = base_price * (1.0 + premium)
        fee = sp[SP_AR_VFEE + v]
        cost = price * (1.0 + slip) * (1.0 + fee)
        proceeds = price * (1.0 - slip) * (1.0 - fee)
        if cost < best_buy:
            best_buy, buy_v = cost, v
        if proceeds > best_sell:
            best_sell, sell_v = proceeds, v
    if buy_v < 0 or buy_v == sell_v or best_sell <= best_buy * (1.0 + sp[SP_AR_MIN_EDGE]):
        return
    frac = sp[SP_AR_MAX_TRADE]
    qty = min(inv[n, p, sell_v, INV_BASE] * frac, inv[n, p, buy_v, INV_QUOTE] * frac / best_buy)
    if qty <= 0.0:
        return
    buy_price = base_price * (1.0 + prem[t1, p, buy_v, PREM_OPEN]) * (1.0 + slip)
    sell_price = base_price * (1.0 + prem[t1, p, sell_v, PREM_OPEN]) * (1.0 - slip)
    inv[n, p, buy_v, INV_QUOTE] -= qty * best_buy
    inv[n, p, buy_v, INV_BASE] += qty
    inv[n, p, sell_v, INV_BASE] -= qty
    inv[n, p, sell_v, INV_QUOTE] += qty * best_sell
    acct[n, FEES] += qty * (
        buy_price * sp[SP_AR_VFEE + buy_v] + sell_price * sp[SP_AR_VFEE + sell_v]
    )
    ss[n, AR_PROFIT] += qty * (best_sell - best_buy)
    ss[n, AR_TRADES] += 1.0


@njit(cache=True, **NO_REFCOUNT)
def _arb_rebalance(
    n: int,
    p: int,
    t1: int,
    prices: np.ndarray,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    eta: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Send base and quote from the richest venue to one below ``rebalance_threshold`` of its
    even split (one transfer per asset; withdrawal fees; arrives ``transfer`` bars later)."""
    if eta[n, p] >= 0.0:
        return
    n_venues = int(sp[SP_AR_N_VENUES])
    price = prices[t1, p, OPEN]
    sent = False
    for col in (INV_BASE, INV_QUOTE):
        total, lo, hi = 0.0, 0, 0
        for v in range(n_venues):
            total += inv[n, p, v, col]
            if inv[n, p, v, col] < inv[n, p, lo, col]:
                lo = v
            if inv[n, p, v, col] > inv[n, p, hi, col]:
                hi = v
        target = total / n_venues
        if inv[n, p, lo, col] >= sp[SP_AR_REBAL] * target:
            continue
        amount = min(target - inv[n, p, lo, col], inv[n, p, hi, col] - target)
        fee_qty = sp[SP_AR_WFEE_B] / price if col == INV_BASE else sp[SP_AR_WFEE_Q]
        if amount <= 2.0 * fee_qty:
            continue  # not worth the withdrawal fee
        inv[n, p, hi, col] -= amount
        inv[n, p, lo, col + 2] += amount - fee_qty
        fee_value = fee_qty * price if col == INV_BASE else fee_qty
        ss[n, AR_WFEES] += fee_value
        acct[n, FEES] += fee_value
        ss[n, AR_TRANSFERS] += 1.0
        sent = True
    if sent:
        eta[n, p] = t1 + sp[SP_AR_DELAY]


@njit(cache=True, **NO_REFCOUNT)
def _arb_rebalance_all(
    n: int,
    t1: int,
    prices: np.ndarray,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    eta: np.ndarray,
    acct: np.ndarray,
) -> None:
    for p in range(inv.shape[1]):
        _arb_rebalance(n, p, t1, prices, sp, ss, inv, eta, acct)


@njit(cache=True, **NO_REFCOUNT)
def _arb_arrivals(n: int, t1: int, sp: np.ndarray, inv: np.ndarray, eta: np.ndarray) -> None:
    for p in range(inv.shape[1]):
        if eta[n, p] >= 0.0 and t1 >= eta[n, p]:
            for v in range(int(sp[SP_AR_N_VENUES])):
                inv[n, p, v, INV_BASE] += inv[n, p, v, INV_BASE_TRANSIT]
                inv[n, p, v, INV_QUOTE] += inv[n, p, v, INV_QUOTE_TRANSIT]
                inv[n, p, v, INV_BASE_TRANSIT] = 0.0
                inv[n, p, v, INV_QUOTE_TRANSIT] = 0.0
            eta[n, p] = -1.0


@njit(cache=True, inline="always")
def arbitrage_action(
    n: int,
    k: int,
    t1: int,
    locked: bool,
    prices: np.ndarray,
    prem: np.ndarray,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Agent mode: ``k`` 0 funds the book, 1 closes it, ``2 + p`` arbitrages pair ``p``."""
    if k == 0:
        arb_fund(n, t1, locked, prices, prem, slip, False, sp, ss, inv, acct)
    elif k == 1:
        arb_close(n, t1, OPEN, prices, prem, slip, sp, ss, inv, held, eta, acct)
    elif k - 2 < prices.shape[1] and ss[n, AR_FUNDED] != 0.0:
        arb_trade(n, k - 2, t1, prices, prem, slip, sp, ss, inv, acct)
    arb_refresh_held(n, inv, held)


@njit(cache=True, inline="always")
def arbitrage_at_open(
    n: int,
    t1: int,
    locked: bool,
    prices: np.ndarray,
    prem: np.ndarray,
    arb_bar: np.ndarray,
    slip: float,
    sp: np.ndarray,
    ss: np.ndarray,
    inv: np.ndarray,
    held: np.ndarray,
    eta: np.ndarray,
    acct: np.ndarray,
) -> None:
    """Arrivals, rule-mode trades and rebalancing of the arbitrage book (``held`` refreshed
    when any of them may have moved inventory)."""
    n_pairs = inv.shape[1]
    moved = False
    for p in range(n_pairs):
        if eta[n, p] >= 0.0 and t1 >= eta[n, p]:
            moved = True
    if moved:
        _arb_arrivals(n, t1, sp, inv, eta)
    if sp[SP_AR_RULE] != 0.0:
        if ss[n, AR_FUNDED] == 0.0:
            arb_fund(n, t1, locked, prices, prem, slip, True, sp, ss, inv, acct)
            moved = True
        min_edge = sp[SP_AR_MIN_EDGE]
        for p in range(n_pairs):
            if arb_bar[t1, p, AB_EDGE] > min_edge:
                arb_trade(n, p, t1, prices, prem, slip, sp, ss, inv, acct)
                moved = True
    if moved and ss[n, AR_FUNDED] != 0.0:
        _arb_rebalance_all(n, t1, prices, sp, ss, inv, eta, acct)
    if moved:
        arb_refresh_held(n, inv, held)


@njit(cache=True, inline="always")
def arbitrage_mark(
    n: int, t1: int, arb_bar: np.ndarray, sp: np.ndarray, ss: np.ndarray, held: np.ndarray
) -> float:
    """Value of every venue's inventory (in transit included, ``held``) at bar ``t1``'s close."""
    value = 0.0
    if ss[n, AR_FUNDED] != 0.0:
        n_venues = int(sp[SP_AR_N_VENUES])
        for p in range(held.shape[1]):
            for v in range(n_venues):
                price = arb_bar[t1, p, AB_CLOSE + v]
                value += held[n, p, v, HELD_BASE] * price
                value += held[n, p, v, HELD_QUOTE]
    ss[n, VALUE + S_ARBITRAGE] = value
    return value


@njit(cache=True, inline="always")
def arbitrage_obs(
    n: int,
    t: int,
    equity: float,
    arb_bar: np.ndarray,
    ss: np.ndarray,
    eta: np.ndarray,
    obs: np.ndarray,
    k: int,
) -> None:
    """``[spread of each pair x1000, book share, transfer pending]`` at ``obs[n, k:]``."""
    n_pairs = eta.shape[1]
    pending = 0.0
    for p in range(n_pairs):
        obs[n, k + p] = arb_bar[t, p, AB_SPREAD_OBS]
        if eta[n, p] >= 0.0:
            pending = 1.0
    obs[n, k + n_pairs] = ss[n, VALUE + S_ARBITRAGE] / equity
    obs[n, k + n_pairs + 1] = pending
