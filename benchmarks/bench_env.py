"""Env throughput: steps per second with random actions and every risk rule on.

    .venv/bin/python benchmarks/bench_env.py [--rounds 5] [--seconds 1] [--out FILE.json]

Measures ``VecMarketEnv`` at N = 1, 256 and 4096 envs on the synthetic market and (when
``../shared/data`` is present) on real Binance candles for BTC, ETH and SOL, and, in the same run,
gym-anytrading's ``stocks-v0`` (installed with the ``bench`` extra), which has no risk rules.
Actions are drawn up front so the timing covers the env alone. An env-step is one env advancing
one bar: N envs stepping once is N env-steps. Configurations are timed in interleaved rounds
(background load on a shared machine then hits all of them alike); medians and bests are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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


class EnvTimer:
    """A warmed-up ``VecMarketEnv`` with pre-drawn random actions, timed in short rounds."""

    def __init__(self, data: MarketData, num_envs: int, copy_obs: bool) -> None:
        self.env = VecMarketEnv(data, MarketConfig(), num_envs=num_envs, seed=0, copy_obs=copy_obs)
        rng = np.random.default_rng(0)
        self.pool = rng.integers(0, self.env.n_actions, size=(64, num_envs), dtype=np.int64)
        self.env.reset()
        for i in range(20):  # warm-up (and JIT, when the numba cache is cold)
            self.env.step(self.pool[i % 64])

    def round(self, seconds: float) -> float:
        """Env-steps per second over about ``seconds``."""
        env, pool = self.env, self.pool
        steps = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for i in range(64):
                env.step(pool[i])
            steps += 64
        return steps * env.num_envs / (time.perf_counter() - start)


class AnytradingTimer:
    """gym-anytrading's stocks-v0 (single env, no risk rules) with pre-drawn random actions."""

    def __init__(self) -> None:
        import gym_anytrading  # noqa: F401  (registers stocks-v0)
        import gymnasium as gym

        self.env = gym.make("stocks-v0").unwrapped
        self.pool = np.random.default_rng(0).integers(0, 2, size=4096).tolist()
        self.env.reset(seed=0)

    def round(self, seconds: float) -> float:
        env, pool = self.env, self.pool
        steps = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for i in range(1000):
                _, _, term, trunc, _ = env.step(pool[(steps + i) & 4095])
                if term or trunc:
                    env.reset()
            steps += 1000
        return steps / (time.perf_counter() - start)


def summarise(rates: list[float]) -> dict[str, Any]:
    return {
        "median_env_steps_per_s": round(statistics.median(rates)),
        "best_env_steps_per_s": round(max(rates)),
        "rounds": [round(r) for r in rates],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/env_throughput.json"))
    args = parser.parse_args()

    markets = {"synthetic": synthetic_market(PAIRS, "1h", seed=0)}
    if SHARED.is_dir():
        markets["binance_real"] = market_from_files(SHARED, PAIRS, "1h")
    timers: dict[str, Any] = {}
    for name, data in markets.items():
        for n in (1, 256, 4096):
            timers[f"{name} N={n}"] = EnvTimer(data, n, copy_obs=False)
        timers[f"{name} N=4096 obs copied"] = EnvTimer(data, 4096, copy_obs=True)
    try:
        timers["gym-anytrading stocks-v0 N=1"] = AnytradingTimer()
    except ImportError:
        print("gym-anytrading is not installed (pip install -e '.[bench]'): no peer figure")
    rates: dict[str, list[float]] = {key: [] for key in timers}
    for _ in range(args.rounds):  # interleaved, so background load hits every configuration
        for key, timer in timers.items():
            rates[key].append(timer.round(args.seconds))
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_env.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "config": "MarketConfig() defaults: stop-loss, take-profit, trailing stop, half-Kelly, "
        "5% cap, 3 concurrent trades, 5% daily loss limit; 3 pairs; episode 720 bars; random "
        f"actions; {args.rounds} interleaved rounds of {args.seconds}s per configuration",
        "markets": {
            name: {"bars": d.n_bars, "pairs": list(d.pairs)} for name, d in markets.items()
        },
        "results": {key: summarise(r) for key, r in rates.items()},
    }
    for key, row in results["results"].items():
        print(f"{key:34s} median {row['median_env_steps_per_s']:>12,}  "
              f"best {row['best_env_steps_per_s']:>12,} env-steps/s")  # fmt: skip
    peer = results["results"].get("gym-anytrading stocks-v0 N=1")
    if peer:
        for name in markets:
            ours = results["results"][f"{name} N=4096"]
            ratio = ours["median_env_steps_per_s"] / peer["median_env_steps_per_s"]
            results[f"speedup_{name}_N4096_vs_gym_anytrading"] = round(ratio, 1)
            print(f"{name}: N=4096 vs gym-anytrading (medians): {ratio:.1f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
