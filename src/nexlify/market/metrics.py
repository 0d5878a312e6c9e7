"""Performance metrics of one episode and the validation score of the original tool.

Conventions: returns and drawdowns are in percent (``12.5`` means 12.5%), drawdown is a positive
number, Sharpe and Sortino are annualised with :func:`nexlify.config.bars_per_year`, win rate is
a fraction in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nexlify.config import bars_per_year

__all__ = [
    "EpisodeMetrics",
    "annualised_sharpe",
    "annualised_sortino",
    "average_metrics",
    "average_strategy_breakdown",
    "compute_metrics",
    "max_drawdown_pct",
    "profit_factor",
    "simple_returns",
    "validation_score",
]

_ZERO_SPREAD = 1e-12
"""A return std (or downside deviation) at or below this counts as zero: the ratio is 0.0.

Without it a constant non-zero return, whose std is a few ulps instead of exactly 0, would give a
Sharpe ratio of about 1e16.
"""


@dataclass(frozen=True)
class EpisodeMetrics:
    """Performance of one episode (or one backtest) on one equity curve."""

    total_return_pct: float
    """Final equity over starting equity, minus 1, in percent."""
    sharpe: float
    """Annualised Sharpe ratio of per-bar simple returns (risk-free rate 0)."""
    sortino: float
    """Annualised Sortino ratio of per-bar simple returns (target 0)."""
    max_drawdown_pct: float
    """Largest fall from a running equity peak, in percent, as a positive number."""
    win_rate: float
    """Share of closed trades with pnl > 0, in [0, 1]; 0.0 when there were no trades."""
    profit_factor: float
    """Gross profit / gross loss of closed trades; inf: profit and no loss; 0.0: no profit."""
    n_trades: int
    """Number of closed trades."""
    exposure: float
    """Fraction of bars with at least one open position, in [0, 1]."""
    fees_paid: float
    """Fees paid over the episode, in quote currency."""
    final_equity: float
    """Equity at the end of the episode, in quote currency."""

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-safe dict: non-finite floats (an infinite profit factor) become ``None``."""
        return {
            key: (None if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in asdict(self).items()
        }


def _as_1d(name: str, values: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def simple_returns(equity: np.ndarray | Sequence[float]) -> np.ndarray:
    """Per-bar simple returns ``equity[1:] / equity[:-1] - 1``; 0 after equity reaches 0."""
    eq = _as_1d("equity", equity)
    prev = eq[:-1]
    alive = prev > 0.0
    return np.where(alive, eq[1:] / np.where(alive, prev, 1.0) - 1.0, 0.0)


def annualised_sharpe(returns: np.ndarray | Sequence[float], timeframe: str) -> float:
    """``mean(r) / std(r, ddof=1) * sqrt(bars_per_year(timeframe))``.

    0.0 with fewer than 2 returns or a (numerically) zero std.
    """
    r = _as_1d("returns", returns)
    scale = math.sqrt(bars_per_year(timeframe))
    if r.size < 2:
        return 0.0
    std = float(np.std(r, ddof=1))
    if std <= _ZERO_SPREAD:
        return 0.0
    return float(np.mean(r)) / std * scale


def annualised_sortino(returns: np.ndarray | Sequence[float], timeframe: str) -> float:
    """``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(bars_per_year(timeframe))``.

    The downside deviation averages over *all* returns (target 0). 0.0 with fewer than 2
    returns or a (numerically) zero downside deviation (no losing bar).
    """
    r = _as_1d("returns", returns)
    scale = math.sqrt(bars_per_year(timeframe))
    if r.size < 2:
        return 0.0
    downside_dev = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside_dev <= _ZERO_SPREAD:
        return 0.0
    return float(np.mean(r)) / downside_dev * scale


def max_drawdown_pct(equity: np.ndarray | Sequence[float]) -> float:
    """Largest ``(peak - equity) / peak`` over the curve, in percent (positive; 0 if none)."""
    eq = _as_1d("equity", equity)
    if eq.size == 0:
        return 0.0
    peak = np.maximum.accumulate(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0.0, (peak - eq) / np.where(peak > 0.0, peak, 1.0), 0.0)
    return float(np.max(drawdown)) * 100.0


def profit_factor(trade_pnl: np.ndarray | Sequence[float]) -> float:
    """Gross profit / gross loss of closed trades.

    ``inf`` when there is profit and no loss; 0.0 when there is no profit (including no trades).
    """
    pnl = _as_1d("trade_pnl", trade_pnl)
    gross_profit = float(pnl[pnl > 0.0].sum())
    gross_loss = float(-pnl[pnl < 0.0].sum())
    if gross_profit <= 0.0:
        return 0.0
    if gross_loss <= 0.0:
        return math.inf
    return gross_profit / gross_loss


def compute_metrics(
    equity: np.ndarray | Sequence[float],
    trade_pnl: np.ndarray | Sequence[float],
    fees_paid: float,
    exposure: float,
    timeframe: str,
) -> EpisodeMetrics:
    """Metrics of one episode.

    Args:
        equity: equity curve [L + 1] in quote currency, starting equity first (must be > 0).
        trade_pnl: net pnl of each closed trade, in quote currency.
        fees_paid: total fees over the episode, in quote currency (>= 0).
        exposure: fraction of bars with at least one open position, in [0, 1].
        timeframe: bar length (``"1h"``...), used to annualise Sharpe and Sortino.
    """
    eq = _as_1d("equity", equity)
    pnl = _as_1d("trade_pnl", trade_pnl)
    if eq.size == 0 or eq[0] <= 0.0:
        raise ValueError("equity: must start with a positive starting equity")
    if (eq < 0.0).any():
        raise ValueError("equity: must not be negative")
    if not (math.isfinite(fees_paid) and fees_paid >= 0.0):
        raise ValueError(f"fees_paid: {fees_paid!r} is invalid (a finite number >= 0)")
    if not (math.isfinite(exposure) and 0.0 <= exposure <= 1.0):
        raise ValueError(f"exposure: {exposure!r} is invalid (a fraction in [0, 1])")
    r = simple_returns(eq)
    n_trades = int(pnl.size)
    return EpisodeMetrics(
        total_return_pct=(float(eq[-1]) / float(eq[0]) - 1.0) * 100.0,
        sharpe=annualised_sharpe(r, timeframe),
        sortino=annualised_sortino(r, timeframe),
        max_drawdown_pct=max_drawdown_pct(eq),
        win_rate=float(np.count_nonzero(pnl > 0.0)) / n_trades if n_trades else 0.0,
        profit_factor=profit_factor(pnl),
        n_trades=n_trades,
        exposure=float(exposure),
        fees_paid=float(fees_paid),
        final_equity=float(eq[-1]),
    )


def average_metrics(metrics: Sequence[EpisodeMetrics]) -> dict[str, float]:
    """Means over episodes, under the names the validation score and the summary use.

    Keys: avg_return, avg_sharpe, avg_sortino, avg_win_rate, avg_drawdown, avg_trades,
    avg_profit_factor, avg_exposure, avg_fees, n_episodes. ``avg_profit_factor`` is the mean of
    the finite profit factors only (episodes without a losing trade are left out; 0.0 when no
    episode has a finite one), so every value is finite and JSON-safe.
    """
    if len(metrics) == 0:
        raise ValueError("metrics: need at least one episode to average")

    def mean(values: Sequence[float]) -> float:
        return float(np.mean(np.asarray(values, dtype=np.float64)))

    finite_pf = [m.profit_factor for m in metrics if math.isfinite(m.profit_factor)]
    return {
        "avg_return": mean([m.total_return_pct for m in metrics]),
        "avg_sharpe": mean([m.sharpe for m in metrics]),
        "avg_sortino": mean([m.sortino for m in metrics]),
        "avg_win_rate": mean([m.win_rate for m in metrics]),
        "avg_drawdown": mean([m.max_drawdown_pct for m in metrics]),
        "avg_trades": mean([float(m.n_trades) for m in metrics]),
        "avg_profit_factor": mean(finite_pf) if finite_pf else 0.0,
        "avg_exposure": mean([m.exposure for m in metrics]),
        "avg_fees": mean([m.fees_paid for m in metrics]),
        "n_episodes": float(len(metrics)),
    }


def average_strategy_breakdown(breakdowns: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means over episodes of the per-strategy PnL and details, as ``avg_<key>``.

    Keys come from ``VecMarketEnv.strategy_breakdown``: ``pnl_spot``, ``pnl_staking``,
    ``pnl_lending``, ``pnl_liquidity``, ``pnl_arbitrage`` (quote currency; they add up to the
    change in equity), and details such as ``lp_fees``, ``lp_gas``, ``arb_trades``. Empty input
    (spot only) gives an empty dict, so spot-only summaries are unchanged.
    """
    keys = [k for k in breakdowns[0]] if breakdowns else []
    return {f"avg_{k}": float(np.mean([b.get(k, 0.0) for b in breakdowns])) for k in keys}


def validation_score(metrics: Sequence[EpisodeMetrics]) -> float:
    """The original tool's validation score, kept exact::

        score = avg_return*0.4 + avg_sharpe*10*0.3 + avg_win_rate*100*0.2 - avg_drawdown*0.1

    where ``avg_return``, ``avg_sharpe``, ``avg_win_rate`` and ``avg_drawdown`` are the means over
    the given episodes of ``total_return_pct`` (percent), ``sharpe`` (annualised),
    ``win_rate`` (fraction in [0, 1]) and ``max_drawdown_pct`` (percent, positive). Higher is
    better. Raises ValueError for an empty sequence.
    """
    avg = average_metrics(metrics)
    return (
        avg["avg_return"] * 0.4
        + avg["avg_sharpe"] * 10 * 0.3
        + avg["avg_win_rate"] * 100 * 0.2
        - avg["avg_drawdown"] * 0.1
    )
