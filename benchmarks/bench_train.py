"""Training throughput of the Trainer against Stable-Baselines3's DQN on the same market.

    .venv/bin/python benchmarks/bench_train.py [--transitions 50000] [--quick] [--threads 2]

One process, one torch thread setting, the same synthetic market (BTC, ETH, SOL, 1h; the last 90
days held out), the same MLP (obs -> 256 -> 256 -> actions), batch 256, 8 envs and the same replay
ratio (one gradient step per 4 transitions: ``train_freq=4`` for us, ``gradient_steps=2`` per
vector step of 8 envs for SB3), the same learning start, buffer size, target-update period and
epsilon schedule. Measures:

* training throughput: env-steps per second *including learning* over a fixed number of
  transitions. Ours is ``Trainer.train`` minus its one validation pass at the end (timed
  separately and subtracted); SB3's is ``DQN.learn`` on a ``DummyVecEnv`` of eight
  ``nexlify/Trading-v0`` envs (the Gymnasium API, each wrapped in ``Monitor`` as
  ``make_vec_env`` does). Both learners are subclassed only to add up the time of their gradient
  steps, which splits each run into learner time and the rest (acting, env, replay, loop). The
  learners take turns run by run (``--repeats``) and the fastest run of each is the estimate;
* time per gradient step on a filled buffer: ``DQNAgent.update_no_sync(buffer.sample(256))``,
  SB3's ``DQN.train(gradient_steps=K)`` (sampling included in both) and a bare PyTorch loop
  (online forward, Huber loss against a target copy under no_grad, backward, torch's default
  Adam step) on a fixed batch already in tensors. They take turns in short rounds so that they
  meet the same background load; the 10th percentile of the rounds is the headline, the median
  and the median of paired (same-round) ratios are reported beside it.

Background load only ever slows a measurement down, hence the fastest run / low percentile; on a
shared 2-core machine another busy process can still slow 2-thread torch several-fold, so compare
figures from the same run only. Everything is warmed up first (numba JIT, first torch calls,
SB3's first train call). Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import DQN
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

import nexlify
from nexlify.agent.config import PLAIN_DQN, AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import ReplayBatch, ReplayBuffer
from nexlify.config import MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.data.sources import synthetic_market
from nexlify.market.env import VecMarketEnv
from nexlify.train.trainer import Trainer, validate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_throughput.json"
PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
NUM_ENVS = 8
HIDDEN = (256, 256)
BATCH = 256
TRAIN_FREQ = 4
"""Transitions per gradient step (both learners)."""
LEARNING_STARTS = 2_000
BUFFER_SIZE = 200_000
TARGET_UPDATE_STEPS = 1_000
"""Gradient steps between hard target copies (SB3 counts transitions: 4x this)."""
LEARNING_RATE = 2.5e-4
ADAM_EPS = 1e-5
EPS_DECAY_FRACTION = 0.5
EPS_END = 0.05
VALIDATION_DAYS = 90


def agent_config() -> AgentConfig:
    """AgentConfig defaults, with the settings SB3 must match spelled out."""
    return AgentConfig(
        hidden_sizes=HIDDEN,
        batch_size=BATCH,
        learning_starts=LEARNING_STARTS,
        train_freq=TRAIN_FREQ,
        buffer_size=BUFFER_SIZE,
        target_update_interval=TARGET_UPDATE_STEPS,
        learning_rate=LEARNING_RATE,
        adam_eps=ADAM_EPS,
        eps_decay_fraction=EPS_DECAY_FRACTION,
        eps_end=EPS_END,
        **PLAIN_DQN,  # SB3's DQN is plain DQN: compare like with like
    )


# ------------------------------------------------------------------ nexlify


def nexlify_episodes(market: MarketConfig, transitions: int) -> int:
    """Episodes (a multiple of the env count) that make about ``transitions`` transitions."""
    per_round = market.env.episode_length * NUM_ENVS
    return max(1, round(transitions / per_round)) * NUM_ENVS


def warm_up_nexlify(train: MarketData, val: MarketData, market: MarketConfig) -> None:
    """Numba JIT of the env (training and recording paths), first torch calls, Adam's state."""
    short = replace(market, env=replace(market.env, episode_length=32))
    config = replace(agent_config(), learning_starts=0)
    Trainer(train, val, short, config, num_envs=NUM_ENVS, eval_every=10**9, seed=1).train(NUM_ENVS)


class TimedAgent(DQNAgent):
    """A DQNAgent that adds up the wall time of its gradient steps (sampling not included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.update_seconds = 0.0

    def update_no_sync(self, batch: ReplayBatch) -> torch.Tensor:
        start = time.perf_counter()
        stats = super().update_no_sync(batch)
        self.update_seconds += time.perf_counter() - start  # the CPU update is synchronous
        return stats


class TimedTrainer(Trainer):
    """The Trainer, unchanged, training a :class:`TimedAgent`."""

    def make_agent(self, obs_dim: int, n_actions: int) -> DQNAgent:
        return TimedAgent(obs_dim, n_actions, self.agent_config, self.device, seed=self.seed)


def time_nexlify_training(
    train: MarketData, val: MarketData, market: MarketConfig, episodes: int
) -> dict[str, Any]:
    """One Trainer.train run; its validation pass (at the end) is timed apart and subtracted."""
    trainer = TimedTrainer(
        train, val, market, agent_config(), num_envs=NUM_ENVS, eval_every=10**9, seed=0
    )
    result = trainer.train(episodes)
    assert isinstance(result.agent, TimedAgent)
    val_seconds = []
    for _ in range(3):  # the same call the run made at its end; best of 3
        start = time.perf_counter()
        validate(result.agent, val, market)
        val_seconds.append(time.perf_counter() - start)
    validation = min(val_seconds)
    learning = result.seconds - validation
    update = result.agent.update_seconds
    return {
        "episodes": result.episodes,
        "transitions": result.transitions,
        "gradient_steps": result.gradient_steps,
        "seconds_total": round(result.seconds, 3),
        "seconds_validation": round(validation, 3),
        "seconds_training": round(learning, 3),
        "seconds_learner": round(update, 3),
        "learner": "DQNAgent.update_no_sync (replay sampling counts as collection)",
        "learner_share": round(update / learning, 3),
        "ms_per_gradient_step_in_run": round(update * 1000 / max(result.gradient_steps, 1), 4),
        "us_per_transition_outside_learner": round(
            (learning - update) * 1e6 / result.transitions, 2
        ),
        "env_steps_per_s": round(result.transitions / learning, 1),
        "gradient_steps_per_s": round(result.gradient_steps / learning, 1),
    }


def filled_nexlify_buffer(
    train: MarketData, market: MarketConfig, transitions: int
) -> ReplayBuffer:
    """Our replay buffer holding ``transitions`` env transitions with random actions."""
    env = VecMarketEnv(train, market, NUM_ENVS, seed=2, copy_obs=True)
    buffer = ReplayBuffer.from_config(agent_config(), NUM_ENVS, env.obs_size)
    rng = np.random.default_rng(2)
    obs, _ = env.reset()
    for _ in range(transitions // NUM_ENVS):
        actions = rng.integers(0, env.n_actions, NUM_ENVS, dtype=np.int64)
        new_obs, rewards, terminated, truncated, info = env.step(actions)
        next_obs = new_obs.copy()
        if "final_obs" in info:
            rows = info["_final_obs"]
            next_obs[rows] = info["final_obs"][rows]
        buffer.add(obs, actions, rewards, next_obs, terminated, truncated)
        obs = new_obs
    return buffer


# ---------------------------------------------------------------------- SB3


class TimedDQN(DQN):
    """SB3's DQN, unchanged, adding up the wall time of its ``train`` calls (sample + update)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_seconds = 0.0

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        start = time.perf_counter()
        super().train(gradient_steps, batch_size)
        self.train_seconds += time.perf_counter() - start


def make_sb3(train: MarketData, market: MarketConfig, learning_starts: int) -> TimedDQN:
    """SB3 DQN on a DummyVecEnv of 8 Gymnasium ``nexlify/Trading-v0`` envs, settings matched."""

    def make_env() -> gym.Env[Any, Any]:
        return Monitor(gym.make("nexlify/Trading-v0", data=train, pairs=list(PAIRS), config=market))

    vec_env = DummyVecEnv([make_env] * NUM_ENVS)
    return TimedDQN(
        "MlpPolicy",
        vec_env,
        policy_kwargs={"net_arch": list(HIDDEN), "optimizer_kwargs": {"eps": ADAM_EPS}},
        learning_rate=LEARNING_RATE,
        batch_size=BATCH,
        learning_starts=learning_starts,
        buffer_size=BUFFER_SIZE,
        train_freq=(1, "step"),
        gradient_steps=NUM_ENVS // TRAIN_FREQ,
        target_update_interval=TARGET_UPDATE_STEPS * TRAIN_FREQ,  # counted in transitions
        exploration_fraction=EPS_DECAY_FRACTION,
        exploration_final_eps=EPS_END,
        device="cpu",
        seed=0,
    )


def warm_up_sb3(train: MarketData, market: MarketConfig, threads: int) -> None:
    """SB3's first collection and train calls, on a throwaway model."""
    model = make_sb3(train, market, learning_starts=0)
    torch.set_num_threads(threads)
    model.learn(total_timesteps=64 * NUM_ENVS)


def time_sb3_training(
    train: MarketData, market: MarketConfig, transitions: int, threads: int
) -> tuple[dict[str, Any], TimedDQN]:
    """One DQN.learn run over ``transitions`` transitions; the figures and the trained model."""
    model = make_sb3(train, market, learning_starts=LEARNING_STARTS)
    torch.set_num_threads(threads)  # in case SB3 ever changes it
    start = time.perf_counter()
    model.learn(total_timesteps=transitions)
    seconds = time.perf_counter() - start
    steps = int(model.num_timesteps)
    updates = int(model._n_updates)
    learner = model.train_seconds
    return {
        "transitions": steps,
        "gradient_steps": updates,
        "seconds_training": round(seconds, 3),
        "seconds_learner": round(learner, 3),
        "learner": "DQN.train (replay sampling included)",
        "learner_share": round(learner / seconds, 3),
        "ms_per_gradient_step_in_run": round(learner * 1000 / max(updates, 1), 4),
        "us_per_transition_outside_learner": round((seconds - learner) * 1e6 / steps, 2),
        "env_steps_per_s": round(steps / seconds, 1),
        "gradient_steps_per_s": round(updates / seconds, 1),
        "torch_threads_after": torch.get_num_threads(),
    }, model


def sb3_n_actions(model: TimedDQN) -> int:
    """Number of discrete actions of the SB3 model's env (the same as ours)."""
    space = model.action_space
    assert isinstance(space, gym.spaces.Discrete)
    return int(space.n)


# --------------------------------------------------------- gradient steps


def bare_step(obs_dim: int, n_actions: int, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """Hand-written DQN step (CleanRL style) on the same MLP and a fixed batch."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(0)
        q_net = nn.Sequential(
            nn.Linear(obs_dim, HIDDEN[0]),
            nn.ReLU(),
            nn.Linear(HIDDEN[0], HIDDEN[1]),
            nn.ReLU(),
            nn.Linear(HIDDEN[1], n_actions),
        )
    target_net = copy.deepcopy(q_net)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=LEARNING_RATE, eps=ADAM_EPS)
    gamma = 0.99

    def step() -> None:
        with torch.no_grad():
            next_q = target_net(batch["next_obs"]).max(dim=1).values
            td_target = batch["rewards"] + gamma * next_q * (1.0 - batch["terminated"])
        q = q_net(batch["obs"]).gather(1, batch["actions"].unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, td_target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def time_gradient_steps(
    buffer: ReplayBuffer, model: TimedDQN, steps: int, rounds: int
) -> dict[str, Any]:
    """ms per gradient step of ours, SB3 and the bare loop, taking turns ``rounds`` times.

    Background load only slows a round down, so the 10th percentile of the rounds estimates the
    undisturbed cost (the headline); the median and the paired ratios are reported beside it.
    """
    n_actions = sb3_n_actions(model)
    agent = DQNAgent(buffer.obs_dim, n_actions, agent_config(), "cpu", seed=0)
    rng = np.random.default_rng(3)
    fixed = buffer.sample(BATCH, rng)
    batch = {
        "obs": fixed.obs_BD,
        "next_obs": fixed.next_obs_BD,
        "actions": fixed.actions_B,
        "rewards": fixed.rewards_B,
        "terminated": fixed.terminated_B,
    }
    bare = bare_step(buffer.obs_dim, n_actions, batch)

    def ours(n: int) -> None:
        stats = None
        for _ in range(n):
            stats = agent.update_no_sync(buffer.sample(BATCH, rng))
        assert stats is not None
        float(stats[0])  # a no-op on the CPU, a device sync elsewhere

    def ours_fixed_batch(n: int) -> None:
        for _ in range(n):
            agent.update_no_sync(fixed)

    def sb3(n: int) -> None:
        model.train(gradient_steps=n, batch_size=BATCH)

    def bare_loop(n: int) -> None:
        for _ in range(n):
            bare()

    runs: dict[str, Callable[[int], None]] = {
        "nexlify": ours,
        "sb3": sb3,
        "bare_pytorch": bare_loop,
        "nexlify_fixed_batch": ours_fixed_batch,
    }
    for run in runs.values():  # warm-up: Adam state, allocator, SB3's logger
        run(20)
    ms: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(steps)
            ms[name].append((time.perf_counter() - start) * 1000 / steps)
    arrays = {name: np.asarray(v) for name, v in ms.items()}
    out: dict[str, Any] = {
        name: {
            "ms_p10": round(float(np.percentile(v, 10)), 4),
            "ms_median": round(float(np.median(v)), 4),
            "ms_max": round(float(np.max(v)), 4),
        }
        for name, v in arrays.items()
    }
    # Rounds of the same cycle meet the same load: their ratios are a second, paired estimate.
    out["paired_median_ratio_bare_over_nexlify"] = round(
        float(np.median(arrays["bare_pytorch"] / arrays["nexlify"])), 3
    )
    out["paired_median_ratio_sb3_over_nexlify"] = round(
        float(np.median(arrays["sb3"] / arrays["nexlify"])), 3
    )
    return out


# --------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=50_000, help="per training run")
    parser.add_argument(
        "--quick", action="store_true", help="8000 transitions, one run each, fewer rounds"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=2, help="training runs of each learner")
    parser.add_argument("--steps", type=int, default=50, help="gradient steps per timed round")
    parser.add_argument("--rounds", type=int, default=40, help="rounds of the gradient-step timing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.repeats < 1 or args.rounds < 1 or args.steps < 1 or args.threads < 1:
        parser.error("--repeats, --rounds, --steps and --threads must be >= 1")
    transitions, rounds, steps, repeats = args.transitions, args.rounds, args.steps, args.repeats
    if args.quick:
        transitions, rounds, steps, repeats = 8_000, 10, 50, 1

    torch.set_num_threads(args.threads)
    market = MarketConfig()
    train, val = synthetic_market(PAIRS, "1h", seed=0).split_last_days(VALIDATION_DAYS)
    warm_up_nexlify(train, val, market)
    warm_up_sb3(train, market, args.threads)

    # Background load only ever slows a run down: the fastest run of each learner is the
    # estimate; every run is kept in the JSON.
    episodes = nexlify_episodes(market, transitions)
    ours_runs: list[dict[str, Any]] = []
    sb3_runs: list[dict[str, Any]] = []
    for _ in range(repeats):
        ours_runs.append(time_nexlify_training(train, val, market, episodes))
        print(f"nexlify  {ours_runs[-1]['env_steps_per_s']:>10,.0f} env-steps/s incl. learning")
        run, model = time_sb3_training(train, market, ours_runs[0]["transitions"], args.threads)
        sb3_runs.append(run)
        print(f"SB3 DQN  {run['env_steps_per_s']:>10,.0f} env-steps/s incl. learning")
    ours = max(ours_runs, key=lambda r: r["env_steps_per_s"])
    sb3 = max(sb3_runs, key=lambda r: r["env_steps_per_s"])

    torch.set_num_threads(args.threads)
    buffer = filled_nexlify_buffer(train, market, ours["transitions"])
    grad = time_gradient_steps(buffer, model, steps, rounds)
    ours_ms = grad["nexlify"]["ms_p10"]
    bare_ms = grad["bare_pytorch"]["ms_p10"]
    sb3_ms = grad["sb3"]["ms_p10"]
    results: dict[str, Any] = {
        "settings": {
            "market": f"synthetic seed 0, {', '.join(PAIRS)}, 1h, last {VALIDATION_DAYS} days "
            "held out for validation",
            "train_bars": train.n_bars,
            "obs_dim": buffer.obs_dim,
            "n_actions": sb3_n_actions(model),
            "network": [buffer.obs_dim, *HIDDEN, sb3_n_actions(model)],
            "batch_size": BATCH,
            "num_envs": NUM_ENVS,
            "replay_ratio": f"1 gradient step per {TRAIN_FREQ} transitions "
            f"({NUM_ENVS // TRAIN_FREQ} per vector step of {NUM_ENVS} envs)",
            "learning_starts": LEARNING_STARTS,
            "buffer_size": BUFFER_SIZE,
            "target_update": f"hard copy every {TARGET_UPDATE_STEPS} gradient steps",
            "epsilon": f"1.0 -> {EPS_END} over the first {EPS_DECAY_FRACTION:.0%} of the run",
            "episode_length": market.env.episode_length,
            "transitions": ours["transitions"],
            "training_repeats": repeats,
            "gradient_step_rounds": rounds,
            "gradient_steps_per_round": steps,
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "nexlify": nexlify.__version__,
            "stable_baselines3": _version("stable_baselines3"),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "training": {
            "nexlify": ours,
            "sb3": sb3,
            "nexlify_runs": ours_runs,
            "sb3_runs": sb3_runs,
            "statistic": f"fastest of {repeats} run(s) per learner, runs taking turns",
            "speedup_vs_sb3": round(ours["env_steps_per_s"] / sb3["env_steps_per_s"], 2),
        },
        "gradient_step": {
            **grad,
            "statistic": f"10th percentile of {rounds} rounds of {steps} steps, runs taking turns",
            "update_rate_ratio_vs_bare": round(bare_ms / ours_ms, 3),
            "target_ratio_vs_bare": 0.8,
            "meets_target": bare_ms / ours_ms >= 0.8,
            "speedup_vs_sb3": round(sb3_ms / ours_ms, 2),
        },
    }
    _print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def _version(module: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _print_table(results: dict[str, Any]) -> None:
    s, t, g = results["settings"], results["training"], results["gradient_step"]
    print(
        f"\nnet {s['network']}, batch {s['batch_size']}, {s['num_envs']} envs, "
        f"{s['replay_ratio']}, {s['transitions']:,} transitions, {s['torch_threads']} threads"
    )
    print(
        f"{'':22s}{'env-steps/s':>12s}{'grad steps':>11s}{'seconds':>9s}{'learner':>9s}"
        f"{'us/tr other':>12s}{'ms/grad step':>14s}"
    )
    for name, key in (("nexlify Trainer", "nexlify"), ("SB3 DQN", "sb3")):
        row = t[key]
        print(
            f"{name:22s}{row['env_steps_per_s']:>12,.0f}{row['gradient_steps']:>11,}"
            f"{row['seconds_training']:>9.1f}{row['learner_share']:>9.0%}"
            f"{row['us_per_transition_outside_learner']:>12.1f}{g[key]['ms_p10']:>14.3f}"
        )
    for name, key in (
        ("bare PyTorch loop", "bare_pytorch"),
        ("nexlify, fixed batch", "nexlify_fixed_batch"),
    ):
        print(f"{name:22s}{'':>63s}{g[key]['ms_p10']:>14.3f}")
    print(
        "learner = share of the run's time in gradient steps (ours: update only; SB3: "
        "DQN.train incl. sampling); us/tr other = the rest per transition"
    )
    print(f"training speed-up vs SB3: {t['speedup_vs_sb3']}x")
    print(
        f"update rate vs bare loop: {g['update_rate_ratio_vs_bare']:.3f} (target >= 0.8, "
        f"{'met' if g['meets_target'] else 'NOT met'}); per-step speed-up vs SB3: "
        f"{g['speedup_vs_sb3']}x"
    )


if __name__ == "__main__":
    main()
