"""Baselines every results table shows beside the model.

Without risk rules (:mod:`nexlify.market.rules_off`: whole account, equal sleeve per pair, same
fees and slippage, computed from the prices):

- ``cash``: never trades (equity flat, Sharpe 0): what "no edge" has to beat.
- ``buy_and_hold``: the equal-weight basket bought once at the first fill, sold at the end.
- ``trend``: daily time-series momentum: a pair's sleeve is long while its daily close is above
  the mean of its last 50 daily closes, decided once a day after the UTC day's last bar.

Through the same env, costs and risk rules as the agent:

- ``always_long``: be long every pair whenever the risk rules allow (re-enters after a stop).
- ``sma_crossover``: long a pair while its fast SMA of closes is above its slow SMA.
- ``random``: uniform random actions from a seeded generator, over the model's actions.

The first two trade spot; in a market of strategy books without spot they run with spot added.

The simulator takes one order per env per step, so a baseline that wants several changes works
through them one pair at a time, lowest pair index first.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from nexlify.config import MarketConfig
from nexlify.data.market_data import CLOSE, MarketData
from nexlify.errors import ConfigError
from nexlify.market.env import VecMarketEnv
from nexlify.market.evaluate import EvaluationResult, Policy, evaluate_policy
from nexlify.market.obs_layout import spot_action
from nexlify.market.rules_off import (
    buy_and_hold_target,
    cash_target,
    evaluate_target,
    trend_target,
)

BASELINES = ("cash", "buy_and_hold", "trend", "always_long", "sma_crossover", "random")
RULES_OFF = ("cash", "buy_and_hold", "trend")
"""Baselines computed without the risk rules (not through the env)."""
TREND_LOOKBACK_DAYS = 50


def _orders_towards(target_long: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Action per env that moves one pair towards ``target_long`` [N, P] (hold if none)."""
    n_envs = held.shape[0]
    want_buy = target_long & ~held
    want_sell = held & ~target_long
    actions = np.zeros(n_envs, dtype=np.int64)
    sell_any = want_sell.any(axis=1)
    buy_any = want_buy.any(axis=1)
    sell_pair = np.argmax(want_sell, axis=1)
    buy_pair = np.argmax(want_buy, axis=1)
    actions[buy_any] = spot_action(buy_pair[buy_any], buy=True)
    actions[sell_any] = spot_action(sell_pair[sell_any], buy=False)  # exits first
    return actions


def always_long_policy() -> Policy:
    """Long every pair whenever the risk rules allow."""

    def policy(obs: np.ndarray, env: VecMarketEnv) -> np.ndarray:
        held = env.position_mask()
        return _orders_towards(np.ones_like(held), held)

    return policy


def sma_signal(data: MarketData, fast: int = 20, slow: int = 50) -> np.ndarray:
    """bool [T, P]: fast SMA above slow SMA of closes, using bars up to t only."""
    if not 1 <= fast < slow:
        raise ConfigError(f"sma_crossover: need 1 <= fast < slow, got fast={fast}, slow={slow}")
    close = data.prices[:, :, CLOSE].astype(np.float64)
    csum = np.vstack([np.zeros((1, close.shape[1])), np.cumsum(close, axis=0)])

    def sma(n: int) -> np.ndarray:
        out = np.full_like(close, np.nan)
        out[n - 1 :] = (csum[n:] - csum[:-n]) / n
        return out

    with np.errstate(invalid="ignore"):
        return np.asarray(sma(fast) > sma(slow))


def sma_crossover_policy(data: MarketData, fast: int = 20, slow: int = 50) -> Policy:
    """Long while the fast SMA is above the slow SMA (signals precomputed once)."""
    signal = sma_signal(data, fast, slow)

    def policy(obs: np.ndarray, env: VecMarketEnv) -> np.ndarray:
        return _orders_towards(signal[env.current_bars()], env.position_mask())

    return policy


def random_policy(seed: int = 0) -> Policy:
    """Uniform random actions from its own generator."""
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray, env: VecMarketEnv) -> np.ndarray:
        return rng.integers(0, env.n_actions, size=env.num_envs, dtype=np.int64)

    return policy


def baseline_policy(name: str, data: MarketData, seed: int = 0) -> Policy:
    """An env baseline by name (``always_long``, ``sma_crossover``, ``random``)."""
    if name == "always_long":
        return always_long_policy()
    if name == "sma_crossover":
        return sma_crossover_policy(data)
    if name == "random":
        return random_policy(seed)
    raise ConfigError(f"baseline: unknown name {name!r}; choose one of {', '.join(BASELINES)}")


def rules_off_target(name: str, data: MarketData, history: MarketData | None = None) -> np.ndarray:
    """bool [T, P] target position of a rules-off baseline (see ``RULES_OFF``)."""
    if name == "cash":
        return cash_target(data)
    if name == "buy_and_hold":
        return buy_and_hold_target(data)
    if name == "trend":
        return trend_target(data, TREND_LOOKBACK_DAYS, history)
    raise ConfigError(f"baseline: {name!r} is not one of {', '.join(RULES_OFF)}")


def run_baseline(
    name: str,
    data: MarketData,
    config: MarketConfig,
    *,
    episode_length: int | None = None,
    seed: int = 0,
    history: MarketData | None = None,
) -> EvaluationResult:
    """One baseline over the same windows as ``evaluate_policy`` would use.

    ``history`` is the market ``data`` was cut from: bars before ``data`` are known at its
    first decision, and the trend's 50-day mean uses them.
    """
    if name in RULES_OFF:
        target = rules_off_target(name, data, history)
        return evaluate_target(target, data, config, episode_length=episode_length)
    policy = baseline_policy(name, data, seed)
    if name != "random":
        config = with_spot(config)
    return evaluate_policy(policy, data, config, episode_length=episode_length)


def with_spot(config: MarketConfig) -> MarketConfig:
    """``config`` with the spot actions on: ``always_long`` and ``sma_crossover`` buy and sell
    pairs, so in a market of strategy books alone they run with spot added (the books' own
    actions unused; their rules, such as rule-mode arbitrage, act as in the model's market)."""
    books = config.strategies
    if books.uses("spot"):
        return config
    return replace(config, strategies=replace(books, enabled=("spot", *books.enabled)))


def run_baselines(
    data: MarketData,
    config: MarketConfig,
    *,
    episode_length: int | None = None,
    seed: int = 0,
    names: tuple[str, ...] = BASELINES,
    history: MarketData | None = None,
) -> dict[str, EvaluationResult]:
    """Every baseline over the same windows as ``evaluate_policy`` would use (``history``: see
    :func:`run_baseline`)."""
    return {
        name: run_baseline(
            name, data, config, episode_length=episode_length, seed=seed, history=history
        )
        for name in names
    }
