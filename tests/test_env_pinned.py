"""The simulator's outputs, pinned against a run recorded before the kernels were restructured.

Seeded envs (spot only with every risk rule busy, and with every strategy on, in agent and rule
arbitrage mode) step a few hundred times on a seeded random action stream, once through the
threaded kernel and once through the serial one. Every output (observations, rewards, the two
end flags, episode statistics) and every state array at the end (account, positions, Kelly
history, trade log, equity curve, strategy books) is summarised and compared with
``fixtures/pinned_env.json``: exact for integer and boolean arrays, ``rtol=1e-6`` for floats.
A change of the market rules or of the kernels' arithmetic fails here; a deliberate change of
the rules re-records the fixture with ``python -m tests.test_env_pinned --record``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nexlify.config import EnvConfig, MarketConfig, RiskConfig, from_dict, to_dict
from nexlify.data.sources import synthetic_market
from nexlify.market.columns import N_BLOCKED, N_LIMIT_HITS
from nexlify.market.env import VecMarketEnv
from nexlify.market.strategies.columns import FLOW_IN, N_STRATEGIES

FIXTURE = Path(__file__).parent / "fixtures" / "pinned_env.json"
STEPS = 300
N_ENVS = 8
FIRST = 8  # leading values kept per array
ALL = ["spot", "staking", "lending", "liquidity", "arbitrage"]
STATE = ("_acct", "_pos", "_kelly", "_trade_log", "_trade_count", "_equity_curve", "_cursor")
BOOKS = ("_ss", "_inv", "_held", "_eta")


def _busy_risk() -> RiskConfig:
    """Rules tight enough that stops, take-profits, Kelly sizing, the concurrency cap and the
    daily-loss lock (with liquidation) all act within a few hundred hourly bars."""
    return replace(
        RiskConfig(),
        stop_loss=0.01,
        take_profit=0.015,
        trailing_stop=0.012,
        max_position=0.3,
        max_concurrent_trades=2,
        daily_loss_limit=0.004,
        close_on_daily_limit=True,
        kelly_min_trades=3,
    )


def _config(strategies: dict[str, Any] | None) -> MarketConfig:
    base = MarketConfig(
        risk=_busy_risk(), env=replace(EnvConfig(), episode_length=120, obs_window=3)
    )
    if strategies is None:
        return base
    values = to_dict(base)
    values["strategies"].update(strategies)
    return from_dict(MarketConfig, values)


SCENARIOS: dict[str, dict[str, Any] | None] = {
    "spot": None,
    "all_agent": {
        "enabled": ALL,
        "staking": {"slashing_events_per_year": 50.0},
        "lending": {"utilization_source": "simulated"},
    },
    "all_rule": {
        "enabled": ALL,
        "lending": {"utilization_source": "simulated"},
        "arbitrage": {
            "mode": "rule",
            "spread_std": 0.002,
            "transfer_hours": 3.0,
            "rebalance_threshold": 0.9,
        },
    },
}


def _summary(values: np.ndarray) -> dict[str, Any]:
    """Sum, sum of squares, a position-weighted sum (order matters) and the first values."""
    flat = np.ravel(values)
    if flat.dtype.kind in "biu":
        ints = flat.astype(np.int64)
        weights = np.arange(ints.size, dtype=np.int64) % 13 + 1
        return {
            "kind": "int",
            "sum": int(ints.sum()),
            "sumsq": int((ints * ints).sum()),
            "weighted": int((ints * weights).sum()),
            "first": ints[:FIRST].tolist(),
        }
    x = np.nan_to_num(flat.astype(np.float64), nan=-7.0)  # unused equity-curve rows are NaN
    weights = np.arange(x.size, dtype=np.float64) % 13 + 1.0
    return {
        "kind": "float",
        "sum": float(x.sum()),
        "sumsq": float((x * x).sum()),
        "weighted": float((x * weights).sum()),
        "first": x[:FIRST].tolist(),
    }


def run_scenario(name: str, parallel: bool) -> dict[str, dict[str, Any]]:
    """Step scenario ``name`` through the threaded or the serial kernel; its summaries."""
    data = synthetic_market(("BTC/USDT", "ETH/USDT", "SOL/USDT"), "1h", seed=4, days=40)
    env = VecMarketEnv(data, _config(SCENARIOS[name]), N_ENVS, seed=11, record=True)
    env._parallel = parallel
    rng = np.random.default_rng(21)
    outputs: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "rewards", "terminated", "truncated", "episode_r", "final_obs")
    }
    obs, _ = env.reset()
    outputs["obs"].append(obs)
    for _ in range(STEPS):
        obs, rewards, terminated, truncated, infos = env.step(
            rng.integers(0, env.n_actions, N_ENVS)
        )
        outputs["obs"].append(obs)
        outputs["rewards"].append(rewards)
        outputs["terminated"].append(terminated)
        outputs["truncated"].append(truncated)
        if "episode" in infos:
            outputs["episode_r"].append(infos["episode"]["r"])
            outputs["final_obs"].append(infos["final_obs"][infos["_final_obs"]])
    result = {key: _summary(np.concatenate([np.ravel(v) for v in arrays]))
              for key, arrays in outputs.items()}  # fmt: skip
    names = STATE + (BOOKS if env.strategies is not None else ())
    for attr in names:
        result[attr[1:]] = _summary(getattr(env, attr))
    return result


def _compare(name: str, got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys(), f"{name}: arrays differ"
    for key, expected in want.items():
        actual = got[key]
        where = f"{name}.{key}"
        if expected["kind"] == "int":
            assert actual == expected, where
            continue
        for field in ("sum", "sumsq", "weighted", "first"):
            np.testing.assert_allclose(
                actual[field], expected[field], rtol=1e-6, atol=1e-9, err_msg=f"{where}.{field}"
            )


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "threaded"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_env_outputs_match_the_pinned_run(scenario: str, parallel: bool) -> None:
    pinned = json.loads(FIXTURE.read_text())
    _compare(scenario, run_scenario(scenario, parallel), pinned[scenario])


def test_the_pinned_run_exercises_every_rule() -> None:
    """The fixture is only worth pinning if the run reaches the rules: every exit reason a
    running episode can log, blocked entries, the daily-loss lock, episode ends and money
    through each strategy book."""
    data = synthetic_market(("BTC/USDT", "ETH/USDT", "SOL/USDT"), "1h", seed=4, days=40)
    env = VecMarketEnv(data, _config(SCENARIOS["all_agent"]), N_ENVS, seed=11, record=True)
    rng = np.random.default_rng(21)
    env.reset()
    reasons: set[str] = set()
    ends = 0
    flows = np.zeros(N_STRATEGIES)
    for _ in range(STEPS):
        _, _, terminated, truncated, _ = env.step(rng.integers(0, env.n_actions, N_ENVS))
        for n in range(N_ENVS):
            reasons |= {t["reason"] for t in env.trades(n)}
        ends += int((terminated | truncated).sum())
        flows = np.maximum(flows, env._ss[:, FLOW_IN : FLOW_IN + N_STRATEGIES].max(axis=0))
    assert reasons >= {"signal", "stop", "take", "trail", "limit"}, reasons
    assert ends >= N_ENVS
    assert env._acct[:, N_BLOCKED].max() > 0 and env._acct[:, N_LIMIT_HITS].max() > 0
    assert (flows > 0).all(), flows


def record() -> None:
    """Write the fixture from the current code (serial kernel)."""
    pinned = {name: run_scenario(name, parallel=False) for name in SCENARIOS}
    FIXTURE.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python -m tests.test_env_pinned --record")
    record()
