"""Learner steps per second with the CPU fast path on and off (``agent.cpu_kernels``).

The learner loop of bench_rainbow (sample from a full 200k-transition buffer, update, write
back priorities; network 128-128, batch 128, 1 torch thread) for plain DQN and PER + 3-step +
C51, each with ``cpu_kernels`` auto and off, the runs taking turns in bursts of 10 steps. Reports
the 90th percentile of the burst rates and the median of the per-cycle cost against plain DQN
with auto. On a shared machine the figures move with the load; the paired medians less so.

    .venv/bin/python benchmarks/bench_cpu_kernels.py [--seconds 20] [--out FILE]

Prints JSON; writes it only with ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench_rainbow import N_ENVS, VARIANTS, _learner_step  # type: ignore[import-not-found]
from nexlify.agent.config import AgentConfig
from nexlify.config import MarketConfig
from nexlify.data.sources import synthetic_market
from nexlify.market.env import VecMarketEnv

BURST = 10


def _runs(obs_dim: int, n_actions: int) -> dict[str, Callable[[], None]]:
    """One learner step per (variant, cpu_kernels) pair; ``off`` only where the field exists."""
    modes = ["auto", "off"] if "cpu_kernels" in AgentConfig.__dataclass_fields__ else ["auto"]
    runs: dict[str, Callable[[], None]] = {}
    for variant in ("plain_dqn", "per_nstep_c51"):
        for mode in modes:
            config = VARIANTS[variant]
            if mode == "off":
                config = dataclasses.replace(config, cpu_kernels="off")
            runs[f"{variant}/{mode}"] = _learner_step(config, obs_dim, n_actions)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds in all")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    market = synthetic_market(["BTC/USDT", "ETH/USDT", "SOL/USDT"], "1h", seed=0, days=60)
    env = VecMarketEnv(market, MarketConfig(), 1)
    runs = _runs(env.obs_size, env.n_actions)
    for step in runs.values():  # warm-up: compiled kernels, allocator
        for _ in range(BURST):
            step()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        for name, step in runs.items():
            t0 = time.perf_counter()
            for _ in range(BURST):
                step()
            rates[name].append(BURST / (time.perf_counter() - t0))
    plain = np.array(rates["plain_dqn/auto"])
    result = {
        "what": "learner steps/s, bench_rainbow's loop, cpu_kernels auto vs off",
        "statistic": f"90th percentile of {BURST}-step bursts, runs taking turns, {args.seconds}s",
        "runs": {
            name: {
                "steps_per_s_p90": round(float(np.percentile(r, 90)), 1),
                "cost_vs_plain_auto_median": round(float(np.median(plain / np.array(r))), 3),
                "bursts": len(r),
            }
            for name, r in rates.items()
        },
        "setup": {
            "obs_dim": env.obs_size,
            "n_actions": env.n_actions,
            "n_envs": N_ENVS,
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
