"""Baselines that trade without the risk rules: computed from the prices, not through the env.

The env caps every position at ``max_position`` of equity (5% by default), so "buy the basket
with the whole account" cannot go through it. These baselines split the account into one equal
sleeve per pair; each sleeve is either all cash or all in its pair, following a target position
decided after bar t closes and filled at bar t+1's open (as the simulator fills), paying the
taker fee and slippage of ``MarketConfig.execution`` on every fill. A sleeve still long at the
end of a window is sold at the window's last close (fee and slippage paid), as the env's
``close_at_end`` does. There is no position cap, stop, daily loss limit or ruin rule.

The per-bar equity comes from the growth factor of each sleeve (vectorised over bars and
pairs); the result is an :class:`~nexlify.market.evaluate.EvaluationResult` over the same windows
:func:`~nexlify.market.evaluate.evaluate_policy` uses, so every table treats them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nexlify.config import ExecutionConfig, MarketConfig
from nexlify.data.market_data import CLOSE, OPEN, MarketData
from nexlify.errors import ConfigError, DataError
from nexlify.market.evaluate import EvaluationResult, window_starts
from nexlify.market.metrics import EpisodeMetrics, compute_metrics

_SECONDS_PER_DAY = 86_400


def daily_close_bars(data: MarketData) -> np.ndarray:
    """bool [T]: bar t is the last bar of its UTC day (its close time reaches the next day).

    Decided from bar t's own open time and length only, so it never depends on later bars.
    """
    return _day_ends(data.time, data.bar_seconds)


def _day_ends(time: np.ndarray, bar_seconds: int) -> np.ndarray:
    return np.asarray((time + bar_seconds) // _SECONDS_PER_DAY != time // _SECONDS_PER_DAY)


def trend_target(
    data: MarketData, lookback_days: int = 50, history: MarketData | None = None
) -> np.ndarray:
    """bool [T, P]: daily time-series momentum, the position wanted after bar t closes.

    After each UTC day's last bar closes, a pair is wanted long while that daily close is above
    the mean of the last ``lookback_days`` daily closes (today's included); the decision stands
    until the next day's close. Flat until ``lookback_days`` daily closes exist. ``history``
    (the same market, e.g. the whole loaded span) supplies the daily closes before ``data``
    starts, so a short period need not wait 50 days for its first decision.
    """
    if lookback_days < 1:
        raise ConfigError(f"trend: lookback_days {lookback_days} is invalid (an integer >= 1)")
    time, close_TP = data.time, data.prices[:, :, CLOSE]
    if history is not None:
        if history.pairs != data.pairs or history.timeframe != data.timeframe:
            raise DataError(
                f"trend: the history ({list(history.pairs)}, {history.timeframe}) is not the "
                f"market of the data ({list(data.pairs)}, {data.timeframe})"
            )
        earlier = history.time < data.time[0]
        time = np.concatenate([history.time[earlier], time])
        close_TP = np.concatenate([history.prices[earlier, :, CLOSE], close_TP])
    target = _trend_on(time, close_TP.astype(np.float64), data.bar_seconds, lookback_days)
    return target[target.shape[0] - data.n_bars :]


def _trend_on(
    time: np.ndarray, close_TP: np.ndarray, bar_seconds: int, lookback_days: int
) -> np.ndarray:
    day_end_T = _day_ends(time, bar_seconds)
    day_end_bars = np.flatnonzero(day_end_T)
    target = np.zeros(close_TP.shape, dtype=np.bool_)
    if day_end_bars.size < lookback_days:
        return target
    daily_close_DP = close_TP[day_end_bars]
    n_pairs = close_TP.shape[1]
    csum = np.vstack([np.zeros((1, n_pairs)), np.cumsum(daily_close_DP, axis=0)])
    mean_DP = np.full_like(daily_close_DP, np.nan)
    mean_DP[lookback_days - 1 :] = (csum[lookback_days:] - csum[:-lookback_days]) / lookback_days
    with np.errstate(invalid="ignore"):
        long_DP = daily_close_DP > mean_DP  # NaN (too little history) compares False
    # Each bar follows the latest daily decision made at or before it.
    latest_day = np.cumsum(day_end_T) - 1
    known = latest_day >= 0
    target[known] = long_DP[latest_day[known]]
    return target


@dataclass(frozen=True)
class SleeveRun:
    """One window of equal sleeves following a target: equity, trades and fees."""

    equity: np.ndarray
    """float64 [L + 1]: account equity at the start, then after each bar's close."""
    trades: list[dict[str, Any]]
    """Closed trades, in the env's trade-record format."""
    fees_paid: float
    """Fees of every fill, in quote currency."""
    exposure: float
    """Fraction of bars with at least one sleeve long."""


def _growth(
    held_LP: np.ndarray, open_LP: np.ndarray, close_LP: np.ndarray, prev_close_LP: np.ndarray,
    cost_in: float, cost_out: float,
) -> np.ndarray:  # fmt: skip
    """Per bar and sleeve, the factor its value grows by from the previous close to this one."""
    prev_LP = np.vstack([np.zeros((1, held_LP.shape[1]), dtype=np.bool_), held_LP[:-1]])
    growth_LP = np.ones(held_LP.shape, dtype=np.float64)
    hold = held_LP & prev_LP
    entry = held_LP & ~prev_LP
    exit_ = ~held_LP & prev_LP
    growth_LP[hold] = close_LP[hold] / prev_close_LP[hold]
    growth_LP[entry] = close_LP[entry] / (open_LP[entry] * cost_in)
    growth_LP[exit_] = open_LP[exit_] * cost_out / prev_close_LP[exit_]
    return growth_LP


def run_sleeves(
    data: MarketData,
    target_TP: np.ndarray,
    start: int,
    length: int,
    execution: ExecutionConfig,
) -> SleeveRun:
    """Sleeves following ``target_TP`` from decision bar ``start`` for ``length`` bars.

    The sleeve of pair p is held over bar ``start + 1 + i`` when ``target_TP[start + i, p]``;
    every window starts all cash, so a target already long enters at the first fill.
    """
    if length < 1 or start < 0 or start + length >= data.n_bars:
        raise DataError(
            f"rules-off baseline: window of {length} bars from bar {start} does not fit "
            f"{data.n_bars} bars"
        )
    fee, slip = execution.fee_rate, execution.slippage_bps / 10_000.0
    bars = slice(start + 1, start + length + 1)
    prices = data.prices.astype(np.float64)
    open_LP, close_LP = prices[bars, :, OPEN], prices[bars, :, CLOSE]
    prev_close_LP = prices[start : start + length, :, CLOSE]
    held_LP = np.asarray(target_TP[start : start + length], dtype=np.bool_)
    growth_LP = _growth(held_LP, open_LP, close_LP, prev_close_LP,
                        (1.0 + slip) * (1.0 + fee), (1.0 - slip) * (1.0 - fee))  # fmt: skip
    # A sleeve long at the end is sold at the last close, as the env's close_at_end does.
    growth_LP[-1, held_LP[-1]] *= (1.0 - slip) * (1.0 - fee)
    sleeve0 = execution.initial_balance / data.n_pairs
    value_LP = sleeve0 * np.cumprod(growth_LP, axis=0)
    before_LP = np.vstack([np.full((1, data.n_pairs), sleeve0), value_LP[:-1]])
    equity = np.concatenate([[execution.initial_balance], value_LP.sum(axis=1)])
    trades, fees = _sleeve_trades(data, start, held_LP, open_LP, close_LP, value_LP, before_LP,
                                  fee, slip)  # fmt: skip
    exposure = float(held_LP.any(axis=1).mean())
    return SleeveRun(equity=equity, trades=trades, fees_paid=fees, exposure=exposure)


def _sleeve_trades(
    data: MarketData, start: int, held_LP: np.ndarray, open_LP: np.ndarray,
    close_LP: np.ndarray, value_LP: np.ndarray, before_LP: np.ndarray, fee: float, slip: float,
) -> tuple[list[dict[str, Any]], float]:  # fmt: skip
    """Each round trip of each sleeve (entry fill to exit fill) and the fees of all fills."""
    trades: list[dict[str, Any]] = []
    total_fees = 0.0
    last = held_LP.shape[0] - 1
    for p, pair in enumerate(data.pairs):
        held = np.concatenate([[False], held_LP[:, p], [False]])
        entries = np.flatnonzero(held[1:-1] & ~held[:-2])
        exits = np.flatnonzero(~held[1:-1] & held[:-2])
        if held_LP[last, p]:
            exits = np.append(exits, last + 1)  # sold at the last close
        for e, x in zip(entries, exits, strict=True):
            cost = float(before_LP[e, p])  # the whole sleeve, fee included
            entry_price = float(open_LP[e, p]) * (1.0 + slip)
            quantity = cost / (1.0 + fee) / entry_price
            at_end = x > last
            exit_bar = last if at_end else int(x)
            proceeds = float(value_LP[exit_bar, p])  # after the exit fee
            exit_price = float(close_LP[last, p] if at_end else open_LP[exit_bar, p]) * (1 - slip)
            fees = cost * fee / (1.0 + fee) + proceeds * fee / (1.0 - fee)
            total_fees += fees
            trades.append({
                "pair": pair,
                "entry_time": int(data.time[start + 1 + e]),
                "exit_time": int(data.time[start + 1 + exit_bar]),
                "entry_bar": start + 1 + int(e),
                "exit_bar": start + 1 + exit_bar,
                "entry_price": entry_price,
                "exit_price": exit_price,
                "quantity": quantity,
                "pnl": proceeds - cost,
                "return": proceeds / cost - 1.0,
                "fees": fees,
                "reason": "end" if at_end else "signal",
            })  # fmt: skip
    trades.sort(key=lambda t: (t["exit_bar"], t["entry_bar"]))
    return trades, total_fees


def evaluation_length(data: MarketData, config: MarketConfig, episode_length: int | None) -> int:
    """Bars per window, as :func:`~nexlify.market.evaluate.evaluate_policy` chooses them."""
    length = config.env.episode_length if episode_length is None else episode_length
    span = data.n_bars - config.env.obs_window
    eval_len = min(length, span) if length > 0 else span
    if eval_len < 1:
        raise DataError(f"evaluation data ({data.n_bars} bars) is too short for one step")
    return eval_len


def evaluate_target(
    target_TP: np.ndarray,
    data: MarketData,
    config: MarketConfig,
    *,
    episode_length: int | None = None,
) -> EvaluationResult:
    """Sleeves following ``target_TP`` over each window ``evaluate_policy`` would use."""
    length = config.env.episode_length if episode_length is None else episode_length
    starts = window_starts(data, config, length)
    eval_len = evaluation_length(data, config, episode_length)
    runs = [run_sleeves(data, target_TP, s, eval_len, config.execution) for s in starts]
    return EvaluationResult(
        metrics=[_metrics(run, data.timeframe) for run in runs],
        equity_curves=[run.equity for run in runs],
        trades=[run.trades for run in runs],
        risk=[{"blocked_entries": 0, "daily_limit_hits": 0} for _ in runs],
        starts=starts,
    )


def _metrics(run: SleeveRun, timeframe: str) -> EpisodeMetrics:
    pnl = [trade["pnl"] for trade in run.trades]
    return compute_metrics(run.equity, pnl, run.fees_paid, run.exposure, timeframe)


def cash_target(data: MarketData) -> np.ndarray:
    """Never in the market."""
    return np.zeros((data.n_bars, data.n_pairs), dtype=np.bool_)


def buy_and_hold_target(data: MarketData) -> np.ndarray:
    """Always long: each window buys the equal-weight basket at its first fill and holds it."""
    return np.ones((data.n_bars, data.n_pairs), dtype=np.bool_)
