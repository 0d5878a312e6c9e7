"""Shared test helpers: tiny hand-made markets and the path to the shared real data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nexlify.config import EnvConfig, ExecutionConfig, MarketConfig, RiskConfig
from nexlify.data.market_data import MarketData

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data_or_skip(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


def bars_market(
    bars: list[list[tuple[float, float, float, float]]] | list[tuple[float, float, float, float]],
    start: str = "2024-01-01 00:00",
    timeframe: str = "1h",
    n_features: int = 2,
) -> MarketData:
    """MarketData from explicit (open, high, low, close) bars; one pair or a list per pair."""
    arr = np.asarray(bars, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    T, P = arr.shape[0], arr.shape[1]
    t0 = int(pd.Timestamp(start, tz="UTC").timestamp())
    step = {"1h": 3600, "1d": 86400}[timeframe]
    feats = np.zeros((T, P, n_features), dtype=np.float32)
    feats[:, :, 0] = np.arange(T, dtype=np.float32)[:, None] / 100.0  # bar index: visible in obs
    return MarketData(
        pairs=tuple(f"C{i}/USDT" for i in range(P)),
        timeframe=timeframe,
        time=t0 + step * np.arange(T, dtype=np.int64),
        prices=np.ascontiguousarray(arr),
        volume=np.ones((T, P), dtype=np.float32),
        features=feats,
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        filled=np.zeros((T, P), dtype=np.bool_),
        source="hand-made",
    )


def market_config(
    *,
    fee: float = 0.001,
    slippage_bps: float = 0.0,
    episode_length: int = 0,
    **risk: object,
) -> MarketConfig:
    """Config for hand-computed tests: Kelly off unless asked, whole data span, no random start."""
    risk.setdefault("use_kelly", False)
    return MarketConfig(
        risk=replace(RiskConfig(), **risk),  # type: ignore[arg-type]
        execution=ExecutionConfig(fee_rate=fee, slippage_bps=slippage_bps),
        env=EnvConfig(episode_length=episode_length, random_start=False),
    )


FLAT = (100.0, 100.5, 99.5, 100.0)


def assert_threaded_matches_serial(make_env: Any, steps: int = 250) -> tuple[Any, Any]:
    """Step two identically seeded envs from ``make_env()``, one through the threaded kernel and
    one through the serial kernel, with the same random actions; every observation, reward and
    end flag must be equal bit for bit. Returns both envs for further checks."""
    a, b = make_env(), make_env()
    b._parallel = not a._parallel
    rng = np.random.default_rng(1)
    a.reset()
    b.reset()
    for _ in range(steps):  # long enough to cross episode ends: autoreset included
        act = rng.integers(0, a.n_actions, a.num_envs)
        for x, y in zip(a.step(act)[:4], b.step(act)[:4], strict=True):
            np.testing.assert_array_equal(x, y)
    return a, b
