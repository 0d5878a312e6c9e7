"""Cost of the Rainbow parts: PER + n-step + C51 (and full Rainbow) against plain DQN.

Same network (obs -> 128 -> 128 -> actions) and batch (128) for every variant, 1 torch thread.
Two measurements:

- learner: gradient steps per second of what training does per step (sample from a full
  200k-transition buffer, update, write back priorities), variants taking turns in short bursts;
  the median of the per-cycle ratios is reported;
- training: time of ``Trainer.train`` for the same episodes on the synthetic 3-pair market
  (env stepping, acting, learning and validation; SWA/augmentation/curriculum off, so only the
  agent differs), after a short warm-up run of each variant. Each repeat runs every variant
  once, in alternating order; the cost is the median over repeats of the variant's time over
  plain DQN's in the same repeat, measured in process CPU time (the runs are single-threaded;
  on a shared machine wall time also counts the waits for a core). The median of the wall-time
  ratios is reported beside it, and a 95% bootstrap interval of the CPU median (one repeat's
  ratio moves by 10-20% on a shared VM). (Until this was changed the cost was a ratio of
  minimum wall times taken at different moments, which load changes on a shared machine can
  move either way by 20-30%.)

The budget of issue 4: PER + n-step + distributional at most 1.5x plain DQN's training time.

    .venv/bin/python benchmarks/bench_rainbow.py [--seconds 30] [--episodes 48] [--repeats 3]

Writes benchmarks/results/rainbow.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexlify.agent.config import PLAIN_DQN, AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import ReplayBuffer
from nexlify.config import MarketConfig
from nexlify.data.sources import synthetic_market
from nexlify.evaluation.stats import bootstrap_ci
from nexlify.train.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "rainbow.json"
PLAIN = AgentConfig(**PLAIN_DQN)  # type: ignore[arg-type]
VARIANTS: dict[str, AgentConfig] = {
    "plain_dqn": PLAIN,
    "per_nstep_c51": dataclasses.replace(
        PLAIN, prioritized_replay=True, n_step=3, distributional="c51", reward_scale=100.0
    ),
    "defaults": AgentConfig(),  # double, dueling, PER, 3-step; no noisy nets, no C51
    "full_rainbow": AgentConfig(noisy=True, distributional="c51"),
}
N_ENVS, BURST = 8, 10


def _learner_step(cfg: AgentConfig, obs_dim: int, n_actions: int) -> Any:
    agent = DQNAgent(obs_dim, n_actions, cfg, seed=0)
    buf = ReplayBuffer.from_config(cfg, N_ENVS, obs_dim)
    rng = np.random.default_rng(0)
    for _ in range(buf.capacity_per_env):
        buf.add(
            rng.standard_normal((N_ENVS, obs_dim), dtype=np.float32),
            rng.integers(0, n_actions, N_ENVS),
            (rng.standard_normal(N_ENVS) * 1e-3).astype(np.float32),
            rng.standard_normal((N_ENVS, obs_dim), dtype=np.float32),
            rng.random(N_ENVS) < 0.001,
            rng.random(N_ENVS) < 0.001,
        )

    def step() -> None:
        batch = buf.sample(cfg.batch_size, rng)
        agent.update_no_sync(batch)
        if cfg.prioritized_replay and agent.last_td_error_B is not None:
            buf.update_priorities(batch.indices, agent.last_td_error_B.numpy())

    return step


def bench_learner(seconds: float, obs_dim: int, n_actions: int) -> dict[str, Any]:
    steps = {name: _learner_step(cfg, obs_dim, n_actions) for name, cfg in VARIANTS.items()}
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        for _ in range(BURST):
            step()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(BURST):
                step()
            rates[name].append(BURST / (time.perf_counter() - t0))
    plain = np.array(rates["plain_dqn"])
    return {
        name: {
            "steps_per_s_p90": float(np.percentile(r, 90)),
            "cost_vs_plain_median": float(np.median(plain / np.array(r))),
        }
        for name, r in rates.items()
    }


def bench_training(episodes: int, repeats: int) -> dict[str, Any]:
    data = synthetic_market(["BTC/USDT", "ETH/USDT", "SOL/USDT"], "1h", seed=0, days=500)
    train, val = data.split_last_days(60)
    market = MarketConfig()

    def run(cfg: AgentConfig, n_episodes: int) -> tuple[float, float]:
        trainer = Trainer(train, val, market, cfg, num_envs=N_ENVS, eval_every=n_episodes,
                          seed=0)  # fmt: skip
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = trainer.train(n_episodes)
        assert result.gradient_steps > 0
        return time.perf_counter() - wall0, time.process_time() - cpu0

    for cfg in VARIANTS.values():  # warm-up (imports, compiled kernels), past learning_starts
        run(cfg, N_ENVS)
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for rep in range(repeats):
        # Alternate the order so that a drift in machine load does not favour one side.
        for name in list(VARIANTS)[:: 1 if rep % 2 == 0 else -1]:
            w, c = run(VARIANTS[name], episodes)
            wall[name].append(w)
            cpu[name].append(c)
    result: dict[str, Any] = {}
    for name in VARIANTS:
        ratios = np.array(cpu[name]) / np.array(cpu["plain_dqn"])
        result[name] = {
            "seconds_min": min(wall[name]),
            "seconds_all": wall[name],
            "cpu_seconds_all": cpu[name],
            "cost_vs_plain": float(np.median(ratios)),
            "cost_vs_plain_ci95": list(bootstrap_ci(ratios, np.median, n_resamples=10_000)),
            "cost_vs_plain_all": ratios.tolist(),
            "cost_vs_plain_wall": float(
                np.median(np.array(wall[name]) / np.array(wall["plain_dqn"]))
            ),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="learner benchmark length")
    parser.add_argument("--episodes", type=int, default=48, help="episodes per training run")
    parser.add_argument("--repeats", type=int, default=3, help="training runs per variant")
    args = parser.parse_args()
    torch.set_num_threads(1)
    market = synthetic_market(["BTC/USDT", "ETH/USDT", "SOL/USDT"], "1h", seed=0, days=60)
    from nexlify.market.env import VecMarketEnv

    env = VecMarketEnv(market, MarketConfig(), 1)
    learner = bench_learner(args.seconds, env.obs_size, env.n_actions)
    training = bench_training(args.episodes, args.repeats)
    result = {
        "what": "PER + n-step + C51 and full Rainbow vs plain DQN, same net (128, 128), batch 128",
        "budget": "per_nstep_c51 training cost <= 1.5x plain_dqn",
        "training_cost": "median over repeats of (variant / plain_dqn) process CPU seconds in the"
        " same repeat; variant order alternates between repeats; one warm-up run each first",
        "obs_dim": env.obs_size,
        "n_actions": env.n_actions,
        "learner": learner,
        "training": {"episodes": args.episodes, "envs": N_ENVS, **training},
        "within_budget": training["per_nstep_c51"]["cost_vs_plain"] <= 1.5,
        "within_budget_whole_ci95": training["per_nstep_c51"]["cost_vs_plain_ci95"][1] <= 1.5,
        "machine": {
            "cpus": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for name in VARIANTS:
        print(f"{name:>14}: learner x{learner[name]['cost_vs_plain_median']:.2f}, "
              f"training {training[name]['seconds_min']:.1f}s "
              f"(x{training[name]['cost_vs_plain']:.2f} CPU, 95% CI "
              f"{training[name]['cost_vs_plain_ci95'][0]:.2f}-"
              f"{training[name]['cost_vs_plain_ci95'][1]:.2f}, "
              f"x{training[name]['cost_vs_plain_wall']:.2f} wall)")  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
