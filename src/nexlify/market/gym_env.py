"""Gymnasium front-ends: ``TradingEnv`` (one env) and ``make_vector_env`` (the native batch).

    import gymnasium as gym, nexlify
    env = gym.make("nexlify/Trading-v0", data="BTC_USDT-1h.csv", pairs=["BTC/USDT"])
    vec = gym.make_vec("nexlify/Trading-v0", num_envs=256, vectorization_mode="vector_entry_point")

``data`` may be a candle file, a directory of candle files, a pandas DataFrame, a ``MarketData``
or ``None`` (the built-in synthetic market). Risk, execution and env settings come as a
``MarketConfig`` (``config=``) or as dicts (``risk={"stop_loss": 0.03}``, ``execution=...``,
``env=...``, ``strategies={"enabled": ["spot", "staking"], "staking": {"apy": 0.04}}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from nexlify.config import (
    EnvConfig,
    ExecutionConfig,
    MarketConfig,
    RiskConfig,
    from_dict,
    to_dict,
)
from nexlify.data.market_data import MarketData
from nexlify.data.sources import resolve_market
from nexlify.errors import ConfigError
from nexlify.market.env import VecMarketEnv, action_names

DataArg = MarketData | pd.DataFrame | str | Path | None


def _market_config(
    config: MarketConfig | None,
    risk: dict[str, Any] | None,
    execution: dict[str, Any] | None,
    env: dict[str, Any] | None,
    strategies: dict[str, Any] | None = None,
) -> MarketConfig:
    cfg = config or MarketConfig()
    if risk:
        cfg = replace(cfg, risk=from_dict(RiskConfig, {**_fields(cfg.risk), **risk}, "risk"))
    if execution:
        merged = {**_fields(cfg.execution), **execution}
        cfg = replace(cfg, execution=from_dict(ExecutionConfig, merged, "execution"))
    if env:
        cfg = replace(cfg, env=from_dict(EnvConfig, {**_fields(cfg.env), **env}, "env"))
    if strategies:
        merged = to_dict(cfg)
        merged["strategies"] = _merged(merged["strategies"], strategies)
        cfg = from_dict(MarketConfig, merged)
    return cfg


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if nested else value
    return out


def _fields(obj: object) -> dict[str, Any]:
    return dict(vars(obj))


class TradingEnv(gym.Env[np.ndarray, np.int64]):
    """One trading env with the full simulator underneath (a ``VecMarketEnv`` of size 1)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012 (gymnasium's class-level convention)

    def __init__(
        self,
        data: DataArg = None,
        pairs: Sequence[str] | None = None,
        timeframe: str = "1h",
        config: MarketConfig | None = None,
        risk: dict[str, Any] | None = None,
        execution: dict[str, Any] | None = None,
        env: dict[str, Any] | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
        strategies: dict[str, Any] | None = None,
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"render_mode: {render_mode!r} is invalid (None or 'ansi')")
        self.market = resolve_market(data, pairs, timeframe, seed or 0)
        self.market_config = _market_config(config, risk, execution, env, strategies)
        self.render_mode = render_mode
        self._vec = VecMarketEnv(
            self.market, self.market_config, num_envs=1, seed=seed, autoreset=False, record=True
        )
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self.action_names = action_names(self.market.pairs, self.market_config.strategies)
        self._last_reward = 0.0

    @property
    def simulator(self) -> VecMarketEnv:
        """The underlying batched simulator (trades, equity curve, metrics)."""
        return self._vec

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, _ = self._vec.reset(seed=seed, options=options)
        return obs[0], self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, term, trunc, _ = self._vec.step(np.array([int(action)], dtype=np.int64))
        info = self._info()
        if term[0] or trunc[0]:
            info["episode_metrics"] = self._vec.episode_metrics(0).to_dict()
            if self._vec.strategies is not None:
                info["strategy_breakdown"] = self._vec.strategy_breakdown(0)
        self._last_reward = float(reward[0])
        return obs[0], float(reward[0]), bool(term[0]), bool(trunc[0]), info

    def _info(self) -> dict[str, Any]:
        account = self._vec.account(0)
        return {
            "equity": account["equity"],
            "cash": account["cash"],
            "bar": self._vec.current_bar(0),
            "positions": len(self._vec.positions(0)),
        }

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        account = self._vec.account(0)
        held = ", ".join(self._vec.positions(0)) or "flat"
        return (
            f"bar {self._vec.current_bar(0)} equity {account['equity']:.2f} "
            f"cash {account['cash']:.2f} reward {self._last_reward:+.6f} holding {held}"
        )


def make_vector_env(
    num_envs: int = 1,
    data: DataArg = None,
    pairs: Sequence[str] | None = None,
    timeframe: str = "1h",
    config: MarketConfig | None = None,
    risk: dict[str, Any] | None = None,
    execution: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
    seed: int | None = None,
    copy_obs: bool = True,
    strategies: dict[str, Any] | None = None,
    **unused: Any,
) -> VecMarketEnv:
    """Native batched env for ``gym.make_vec(..., vectorization_mode="vector_entry_point")``.

    Returned observations are copies unless ``copy_obs=False`` (see ``VecMarketEnv``).
    """
    unknown = set(unused) - {"max_episode_steps", "render_mode"}
    if unknown:
        raise ConfigError(f"nexlify/Trading-v0: unknown arguments {sorted(unknown)}")
    market = resolve_market(data, pairs, timeframe, seed or 0)
    cfg = _market_config(config, risk, execution, env, strategies)
    return VecMarketEnv(market, cfg, num_envs=num_envs, seed=seed, copy_obs=copy_obs)
