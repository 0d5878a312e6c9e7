"""Gymnasium registration of ``nexlify/Trading-v0`` (single env and native vector env)."""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "nexlify/Trading-v0"


def register_envs() -> None:
    """Register the trading env once; safe to call repeatedly."""
    if ENV_ID in gym.registry:
        return
    gym.register(
        id=ENV_ID,
        entry_point="nexlify.market.gym_env:TradingEnv",
        vector_entry_point="nexlify.market.gym_env:make_vector_env",
    )
