"""Shared pieces of the paper-trading tests: small synthetic candles, a saved model, policies.

(No tests here; the paper and live test modules import from it.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.config import EnvConfig, MarketConfig, RiskConfig
from nexlify.data.candles import pair_to_stem
from nexlify.data.features import FEATURE_WARMUP
from nexlify.data.market_data import build_market_data
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.market.env import VecMarketEnv

PAIRS = ("BTC/USDT", "ETH/USDT")
N_BARS = FEATURE_WARMUP + 160
"""Warm-up plus 160 traded bars: enough trades, a fast replay."""
MARKET = MarketConfig(
    risk=RiskConfig(stop_loss=0.01, take_profit=0.02, trailing_stop=0.015),
    env=EnvConfig(episode_length=50, obs_window=2),
)


def candles(n_bars: int = N_BARS, seed: int = 3) -> dict[str, pd.DataFrame]:
    return generate_synthetic_candles(PAIRS, "1h", n_bars, seed=seed)


def write_candles(folder: Path, frames: dict[str, pd.DataFrame]) -> list[str]:
    """CSV files named like the data store's, one per pair."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for pair, frame in frames.items():
        path = folder / f"{pair_to_stem(pair, '1h')}.csv"
        frame.reset_index().to_csv(path, index=False)
        paths.append(str(path))
    return paths


class HashPolicy:
    """Deterministic policy that trades often: the action follows the observation's digits."""

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray:
        return (np.abs(obs_ND[:, :8].sum(axis=1) * 1000).astype(np.int64) % 5).astype(np.int64)


def save_model(path: Path, seed: int = 1, market_config: MarketConfig = MARKET) -> Path:
    """A small untrained DQN saved with the market description the pipeline writes."""
    market = build_market_data(candles(), "1h", "synthetic")
    env = VecMarketEnv(market, market_config)
    # pinned (not the library defaults): an untrained net of this shape trades often enough
    config = AgentConfig(hidden_sizes=(16,), noisy=True, distributional="c51")
    agent = DQNAgent(env.obs_size, env.n_actions, config, seed=seed)
    extra = {
        "market_config": dataclasses.asdict(market_config),
        "pairs": list(PAIRS),
        "timeframe": "1h",
        "feature_names": list(market.feature_names),
    }
    agent.save(path, extra=extra)
    return path
