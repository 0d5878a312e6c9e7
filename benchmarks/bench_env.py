"""Env throughput: steps per second with random actions and every risk rule on.

    .venv/bin/python benchmarks/bench_env.py [--seconds 3] [--out FILE.json]

Measures ``VecMarketEnv`` at N = 1, 256 and 4096 envs on the synthetic market and (when
``../shared/data`` is present) on real Binance candles for BTC, ETH and SOL, and, in the same run,
gym-anytrading's ``stocks-v0`` (installed with the ``bench`` extra), which has no risk rules.
Actions are drawn up front so the timing covers the env alone. An env-step is one env advancing
one bar: N envs stepping once is N env-steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.config import MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.data.sources import market_from_files, synthetic_market
from nexlify.market.env import VecMarketEnv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "market" / "binance"
PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def time_env(data: MarketData, num_envs: int, seconds: float, copy_obs: bool) -> dict[str, Any]:
    env = VecMarketEnv(data, MarketConfig(), num_envs=num_envs, seed=0, copy_obs=copy_obs)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, env.n_actions, size=(64, num_envs), dtype=np.int64)
    env.reset()
    for i in range(20):  # warm-up (and JIT, when the numba cache is cold)
        env.step(pool[i % 64])
    steps = 0
    episodes = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(64):
            _, _, term, trunc, _ = env.step(pool[i])
            episodes += int(term.sum() + trunc.sum())
        steps += 64
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    return {
        "num_envs": num_envs,
        "copy_obs": copy_obs,
        "obs_size": env.obs_size,
        "vector_steps": steps,
        "episodes_finished": episodes,
        "seconds": round(elapsed, 3),
        "env_steps_per_s": round(steps * num_envs / elapsed),
    }


def time_gym_anytrading(seconds: float) -> dict[str, Any] | None:
    try:
        import gym_anytrading  # noqa: F401
        import gymnasium as gym
    except ImportError:
        return None
    env = gym.make("stocks-v0").unwrapped
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 2, size=4096)
    env.reset(seed=0)
    steps = 0
    start = time.perf_counter()
    deadline = start + seconds
    i = 0
    while time.perf_counter() < deadline:
        for _ in range(1000):
            _, _, term, trunc, _ = env.step(int(pool[i & 4095]))
            i += 1
            if term or trunc:
                env.reset()
        steps += 1000
    elapsed = time.perf_counter() - start
    return {
        "env": "gym-anytrading stocks-v0 (no risk rules)",
        "num_envs": 1,
        "env_steps_per_s": round(steps / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per configuration")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/env_throughput.json"))
    args = parser.parse_args()

    markets = {"synthetic": synthetic_market(PAIRS, "1h", seed=0)}
    if SHARED.is_dir():
        markets["binance_real"] = market_from_files(SHARED, PAIRS, "1h")
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "config": "MarketConfig() defaults: stop-loss, take-profit, trailing stop, half-Kelly, "
        "5% cap, 3 concurrent trades, 5% daily loss limit; 3 pairs; episode 720 bars",
        "nexlify": {},
    }
    for name, data in markets.items():
        rows = []
        for n in (1, 256, 4096):
            row = time_env(data, n, args.seconds, copy_obs=False)
            rows.append(row)
            print(f"{name:13s} N={n:5d}  {row['env_steps_per_s']:>12,} env-steps/s")
        row = time_env(data, 4096, args.seconds, copy_obs=True)
        rows.append(row)
        print(f"{name:13s} N= 4096  {row['env_steps_per_s']:>12,} env-steps/s (obs copied)")
        results["nexlify"][name] = {"bars": data.n_bars, "pairs": list(data.pairs), "runs": rows}
    peer = time_gym_anytrading(args.seconds)
    results["gym_anytrading"] = peer
    if peer:
        print(f"gym-anytrading stocks-v0 N=1 {peer['env_steps_per_s']:>12,} env-steps/s")
        best = max(r["env_steps_per_s"] for r in results["nexlify"]["synthetic"]["runs"])
        results["speedup_vs_gym_anytrading"] = round(best / peer["env_steps_per_s"], 1)
        print(f"speed-up at N=4096 vs gym-anytrading: {results['speedup_vs_gym_anytrading']}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
