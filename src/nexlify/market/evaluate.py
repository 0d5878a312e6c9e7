"""Run a policy through the simulator over fixed windows and collect honest metrics.

Used for validation during training, for baselines and for backtests: the same env, costs and
risk rules as training, with recording on and no random starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from nexlify.config import MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.errors import DataError
from nexlify.market.env import VecMarketEnv
from nexlify.market.metrics import (
    EpisodeMetrics,
    average_metrics,
    average_strategy_breakdown,
    validation_score,
)

Policy = Callable[[np.ndarray, VecMarketEnv], np.ndarray]
"""A policy maps a batch of observations [N, D] (and the env, for rule-based baselines) to
actions [N]."""


class GreedyActor(Protocol):
    """Anything with a greedy policy: a DQNAgent or an EnsembleAgent."""

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray: ...


def greedy_policy(agent: GreedyActor) -> Policy:
    """The agent's greedy policy in the form ``evaluate_policy`` takes."""
    return lambda obs, env: agent.greedy(obs)


@dataclass
class EvaluationResult:
    """Per-window metrics, equity curves and trades of one policy."""

    metrics: list[EpisodeMetrics]
    equity_curves: list[np.ndarray]
    trades: list[list[dict[str, Any]]]
    risk: list[dict[str, int]]
    starts: list[int] = field(default_factory=list)
    strategies: list[dict[str, float]] = field(default_factory=list)
    """Per window, PnL by strategy and strategy details (empty when only spot is on)."""

    def average(self) -> dict[str, float]:
        """Averages over windows (``avg_return``, ``avg_sharpe``, ...; with strategies beyond
        spot also ``avg_pnl_<strategy>`` and the strategies' details)."""
        return {**average_metrics(self.metrics), **average_strategy_breakdown(self.strategies)}

    def score(self) -> float:
        """The original tool's validation score over the windows."""
        return validation_score(self.metrics)


def greedy_run(agent: GreedyActor, data: MarketData, config: MarketConfig) -> EvaluationResult:
    """``agent``'s greedy policy over all of ``data`` as one continuous window (a backtest)."""
    return evaluate_policy(greedy_policy(agent), data, config, episode_length=0)


def window_starts(data: MarketData, config: MarketConfig, episode_length: int) -> list[int]:
    """First decision bars of consecutive non-overlapping windows covering ``data``."""
    first = config.env.obs_window - 1
    usable = data.n_bars - 1 - first
    if episode_length <= 0 or episode_length >= usable:
        return [first]
    count = usable // episode_length
    return [first + k * episode_length for k in range(count)]


def evaluate_policy(
    policy: Policy,
    data: MarketData,
    config: MarketConfig,
    *,
    episode_length: int | None = None,
) -> EvaluationResult:
    """Run ``policy`` once over each window of ``data`` (all windows as one batch of envs).

    ``episode_length`` defaults to the config's; 0 means one window over the whole span. The
    windows are consecutive and do not overlap, so every bar is traded at most once.
    """
    length = config.env.episode_length if episode_length is None else episode_length
    starts = window_starts(data, config, length)
    span = data.n_bars - config.env.obs_window
    eval_len = min(length, span) if length > 0 else span
    if eval_len < 1:
        raise DataError(f"evaluation data ({data.n_bars} bars) is too short for one step")
    cfg = replace(config, env=replace(config.env, episode_length=eval_len, random_start=False))
    env = VecMarketEnv(
        data, cfg, num_envs=len(starts), autoreset=False, record=True, copy_obs=False
    )
    obs, _ = env.reset(options={"starts": starts})
    done = np.zeros(len(starts), dtype=np.bool_)
    hold = np.zeros(len(starts), dtype=np.int64)
    while not done.all():
        actions = np.asarray(policy(obs, env), dtype=np.int64)
        # A window that ended early (ruin) stays frozen in the env; its actions are ignored.
        obs, _, term, trunc, _ = env.step(np.where(done, hold, actions))
        done |= term | trunc
    return EvaluationResult(
        metrics=[env.episode_metrics(i) for i in range(len(starts))],
        equity_curves=[env.equity_curve(i) for i in range(len(starts))],
        trades=[env.trades(i) for i in range(len(starts))],
        risk=[env.risk_counters(i) for i in range(len(starts))],
        starts=starts,
        strategies=[env.strategy_breakdown(i) for i in range(len(starts))]
        if env.strategies is not None
        else [],
    )
